//! Why a reconcile failed. Variant names are the bounded `error` label of the error metric.

use thiserror::Error;

use crate::broker_api::BrokerApiError;
use crate::tls::TlsError;

#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the object has no {0}")]
    MissingField(&'static str),
    #[error("certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("broker admin API: {0}")]
    Broker(#[from] BrokerApiError),
    #[error("password hashing: {0}")]
    Hash(String),
    #[error("rendering: {0}")]
    Render(String),
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::MissingField(_) => "missing_field",
            Self::Tls(_) => "tls",
            Self::Broker(_) => "broker",
            Self::Hash(_) => "hash",
            Self::Render(_) => "render",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
