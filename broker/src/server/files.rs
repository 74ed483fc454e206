//! Every file the configuration names, loaded before any socket is bound: each TLS listener's
//! certificate, key and client CA, the users and ACL files, the admin token. A start and
//! `--check-config` ([`super::Server::check`]) both load them here, so the check finds whatever
//! would stop a start, and an error names the setting as well as the file.

use std::sync::Arc;

use thiserror::Error;

use super::ServerError;
use crate::auth::{AuthFileError, FileAuth};
use crate::config::{AuthConfig, Config, ListenerConfig};
use crate::http::{AdminToken, HttpError};
use crate::listener::transport::TlsError;
use crate::listener::transport::tls::TlsTerminator;
use crate::stats::Stats;

/// What was wrong with one file; the message names the file and the cause.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("{0}")]
    Tls(TlsError),
    #[error("{0}")]
    Auth(AuthFileError),
    #[error("{0}")]
    AdminToken(HttpError),
}

/// The loaded files, handed to the listeners, the auth hook and the HTTP endpoint.
pub(super) struct StartFiles {
    /// By listener, in the configuration's order; `None` for a listener without TLS.
    pub tls: Vec<Option<Arc<TlsTerminator>>>,
    pub auth: Option<Arc<FileAuth>>,
    pub admin_token: Option<Arc<AdminToken>>,
}

impl StartFiles {
    pub fn load(config: &Config, stats: &Arc<Stats>) -> Result<Self, ServerError> {
        let tls = config
            .listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| load_tls(index, listener))
            .collect::<Result<_, _>>()?;
        let auth = load_auth(&config.auth, stats)?;
        let admin_token = match config
            .http
            .as_ref()
            .and_then(|h| h.admin_token_file.as_ref())
        {
            Some(path) => Some(Arc::new(AdminToken::load(path).map_err(|error| {
                file_error("http.admin_token_file", FileError::AdminToken(error))
            })?)),
            None => None,
        };
        Ok(Self {
            tls,
            auth,
            admin_token,
        })
    }
}

fn file_error(key: impl Into<String>, error: FileError) -> ServerError {
    ServerError::File {
        key: key.into(),
        error,
    }
}

fn load_tls(
    index: usize,
    listener: &ListenerConfig,
) -> Result<Option<Arc<TlsTerminator>>, ServerError> {
    let Some(settings) = listener
        .tls
        .as_ref()
        .filter(|_| listener.protocol.uses_tls())
    else {
        return Ok(None);
    };
    match TlsTerminator::load(settings) {
        Ok(terminator) => Ok(Some(Arc::new(terminator))),
        Err(error) => {
            let key = match error.setting(settings) {
                Some(setting) => format!("listeners[{index}].tls.{setting}"),
                None => format!("listeners[{index}].tls"),
            };
            Err(file_error(key, FileError::Tls(error)))
        }
    }
}

fn load_auth(auth: &AuthConfig, stats: &Arc<Stats>) -> Result<Option<Arc<FileAuth>>, ServerError> {
    let (users, acl) = (auth.users_file.as_deref(), auth.acl_file.as_deref());
    if users.is_none() && acl.is_none() {
        return Ok(None);
    }
    match FileAuth::load(users, acl) {
        Ok(loaded) => Ok(Some(Arc::new(
            loaded.with_config(auth).reporting_to(Arc::clone(stats)),
        ))),
        Err(error) => {
            // A read error does not say which of the two files it was; the path does.
            let key = match &error {
                AuthFileError::Users { .. } => "auth.users_file",
                AuthFileError::Acl { .. } => "auth.acl_file",
                AuthFileError::Read { path, .. } if users == Some(path.as_path()) => {
                    "auth.users_file"
                }
                AuthFileError::Read { .. } => "auth.acl_file",
            };
            Err(file_error(key, FileError::Auth(error)))
        }
    }
}
