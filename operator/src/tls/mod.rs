//! Certificates: a CA per `MqttCluster` (the operator's own, made with rcgen), the brokers' server
//! certificate and users' client certificates it issues, and the checks that decide when to renew.
//! Pure: callers read and write the Secrets.

mod authority;
mod inspect;

pub use authority::{CertificateAuthority, IssuedCertificate, is_hostname};
pub use inspect::{CertificateInfo, inspect};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot generate a key or certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the CA Secret does not hold a usable certificate and key: {0}")]
    BadAuthority(String),
    #[error("not a PEM certificate: {0}")]
    BadCertificate(String),
    #[error("{0:?} is neither a DNS name nor an IP address")]
    BadName(String),
}
