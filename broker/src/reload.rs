//! Files that are re-read while the broker runs (users, ACL, TLS certificates, the admin token):
//! the [`Reload`] trait each owner of such files implements, and what one reload reports.
//!
//! The broker keeps the list and decides when to reload (admin API, file watcher); the owners decide
//! how. Nothing here knows what the files hold.

use std::error::Error as StdError;
use std::path::PathBuf;

/// Something that re-reads its files on demand.
pub trait Reload: Send + Sync + std::fmt::Debug + 'static {
    /// A short name for reports, e.g. `acl`.
    fn name(&self) -> &'static str;
    /// Re-reads; `Ok(true)` if something changed. On error the previous state stays in force.
    fn reload(&self) -> Result<bool, ReloadError>;
    /// Files whose change on disk should trigger a reload.
    fn watched_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// Whether a change can alter what connected clients may do, so that they must be re-checked
    /// (users and ACL: yes; certificates and the admin token: no).
    fn affects_client_rights(&self) -> bool {
        false
    }
}

/// Why a reload failed: the owner's own error, which names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ReloadError(Box<dyn StdError + Send + Sync>);

impl ReloadError {
    pub fn new(error: impl StdError + Send + Sync + 'static) -> Self {
        Self(Box::new(error))
    }
}

/// What one reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadOutcome {
    pub name: &'static str,
    pub changed: bool,
    /// Why it failed, as the owner describes it; the previous state stays in force.
    pub error: Option<String>,
}
