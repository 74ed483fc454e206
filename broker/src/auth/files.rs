//! The built-in file-based authentication and authorization: a users file and an ACL file, loaded at
//! start and reloaded without a restart, exposed to the broker as a [`Hook`] and a [`Reload`].
//!
//! A reload parses the new file completely before swapping it in, so a broken file leaves the previous
//! state in force. After a users-file reload the hook remembers which usernames lost their old
//! credentials (removed, or a new hash), so the broker can disconnect exactly those clients.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use parking_lot::RwLock;
use tokio::sync::Semaphore;
use tracing::info;

use super::{AclFile, Decision, Subject, UsersFile};
use crate::broker::Reload;
use crate::codec::{QoS, ReasonCode};
use crate::hook::{Access, AuthDecision, BoxFuture, ClientInfo, ConnectRequest, Hook};

/// Users and ACL from files.
#[derive(Debug)]
pub struct FileAuth {
    users_path: Option<PathBuf>,
    acl_path: Option<PathBuf>,
    users: ArcSwapOption<UsersFile>,
    acl: ArcSwapOption<AclFile>,
    /// Usernames whose credentials changed in the last users-file reload.
    revoked: RwLock<HashSet<String>>,
    /// Password verification is CPU-heavy by design; at most this many run at once so a burst of
    /// connections cannot starve the message path.
    verifications: Arc<Semaphore>,
}

impl FileAuth {
    /// Loads the files; an error names the file and the line.
    pub fn load(users_path: Option<&Path>, acl_path: Option<&Path>) -> Result<Self, String> {
        let users = users_path.map(read_users).transpose()?;
        let acl = acl_path.map(read_acl).transpose()?;
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            users_path: users_path.map(Path::to_path_buf),
            acl_path: acl_path.map(Path::to_path_buf),
            users: ArcSwapOption::from(users.map(Arc::new)),
            acl: ArcSwapOption::from(acl.map(Arc::new)),
            revoked: RwLock::new(HashSet::new()),
            verifications: Arc::new(Semaphore::new(workers)),
        })
    }

    fn subject<'a>(client: &'a ClientInfo) -> Subject<'a> {
        Subject {
            username: client.username.as_deref(),
            client_id: client.client_id.as_str(),
        }
    }
}

fn read_users(path: &Path) -> Result<UsersFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    UsersFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_acl(path: &Path) -> Result<AclFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    AclFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

impl Hook for FileAuth {
    fn name(&self) -> &'static str {
        "file-auth"
    }

    /// With a users file, a client that gives a username must give that user's password. A client
    /// without a username is left to the anonymous switch; one whose identity came from a verified
    /// client certificate needs no password.
    fn authenticate<'a>(&'a self, request: &'a ConnectRequest<'a>) -> BoxFuture<'a, AuthDecision> {
        Box::pin(async move {
            let Some(users) = self.users.load_full() else {
                return AuthDecision::Continue;
            };
            let Some(username) = request.client.username.as_deref() else {
                return AuthDecision::Continue;
            };
            if request.client.certificate_identity {
                return AuthDecision::Continue;
            }
            let username = username.to_string();
            let password = request.password.unwrap_or_default().to_vec();
            let Ok(_permit) = self.verifications.acquire().await else {
                return AuthDecision::Deny(ReasonCode::SERVER_UNAVAILABLE);
            };
            let verified = tokio::task::spawn_blocking(move || users.verify(&username, &password))
                .await
                .unwrap_or(false);
            if verified {
                AuthDecision::Allow
            } else {
                AuthDecision::Deny(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
            }
        })
    }

    fn authorize_publish(
        &self,
        client: &ClientInfo,
        topic: &str,
        qos: QoS,
        retain: bool,
    ) -> Access {
        match self.acl.load().as_deref() {
            None => Access::Continue,
            Some(acl) => match acl.check_publish(&Self::subject(client), topic, qos, retain) {
                Decision::Allow { .. } => Access::Allow,
                Decision::Deny => Access::Deny,
            },
        }
    }

    fn authorize_subscribe(&self, client: &ClientInfo, filter: &str, qos: QoS) -> Access {
        match self.acl.load().as_deref() {
            None => Access::Continue,
            Some(acl) => match acl.check_subscribe(&Self::subject(client), filter, qos) {
                Decision::Allow { max_qos } => Access::AllowUpTo(max_qos),
                Decision::Deny => Access::Deny,
            },
        }
    }

    fn revoked(&self, client: &ClientInfo) -> bool {
        client
            .username
            .as_deref()
            .is_some_and(|u| !client.certificate_identity && self.revoked.read().contains(u))
    }
}

impl Reload for FileAuth {
    fn name(&self) -> &'static str {
        "users_and_acl"
    }

    fn reload(&self) -> Result<bool, String> {
        // Parse both before swapping either, so a broken ACL does not leave half a reload applied.
        let users = self.users_path.as_deref().map(read_users).transpose()?;
        let acl = self.acl_path.as_deref().map(read_acl).transpose()?;
        let mut changed = false;
        if let Some(users) = users {
            let old = self.users.load_full();
            let revoked: HashSet<String> = old
                .iter()
                .flat_map(|old| old.usernames().map(move |u| (old, u)))
                .filter(|(old, u)| users.fingerprint(u) != old.fingerprint(u))
                .map(|(_, u)| u.to_string())
                .collect();
            let added = old.as_ref().map_or(users.len(), |old| {
                users.usernames().filter(|u| !old.contains(u)).count()
            });
            changed |= !revoked.is_empty() || added > 0;
            info!(
                users = users.len(),
                revoked = revoked.len(),
                added,
                "users file reloaded"
            );
            *self.revoked.write() = revoked;
            self.users.store(Some(Arc::new(users)));
        }
        if let Some(acl) = acl {
            info!(rules = acl.len(), "ACL file reloaded");
            self.acl.store(Some(Arc::new(acl)));
            changed = true;
        }
        Ok(changed)
    }

    fn affects_client_rights(&self) -> bool {
        true
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        self.users_path
            .iter()
            .chain(self.acl_path.iter())
            .cloned()
            .collect()
    }
}
