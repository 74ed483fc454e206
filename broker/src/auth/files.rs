//! The built-in file-based authentication and authorization: a users file and an ACL file, loaded at
//! start and reloaded without a restart, exposed to the broker as a [`Hook`] and a [`Reload`]. The
//! admin API can also push new content for either file ([`FileAuth::push`]), which is applied the same
//! way a reload applies the file.
//!
//! A reload or push parses all the new text before swapping any of it in, so a broken file leaves the
//! previous state in force. After a users change the hook remembers which usernames lost their old
//! credentials (removed, or a new hash), so the broker can disconnect exactly those clients.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::{debug, info};

use super::guard::{LoginGuard, LoginRefusal};
use super::{AclFile, AuthFileError, AuthPart, Decision, PushError, Subject, UsersFile};
use crate::codec::{QoS, ReasonCode};
use crate::config::{AuthConfig, CertificateIdentities};
use crate::hook::{Access, AuthDecision, BoxFuture, ClientInfo, ConnectRequest, Hook};
use crate::reload::{Reload, ReloadError};
use crate::stats::{LimitKind, Stats};

/// Users and ACL from files, or pushed in their place.
#[derive(Debug)]
pub struct FileAuth {
    users_path: Option<PathBuf>,
    acl_path: Option<PathBuf>,
    users: ArcSwapOption<UsersFile>,
    acl: ArcSwapOption<AclFile>,
    /// Usernames whose credentials changed in the last change of the users (reload or push).
    revoked: RwLock<HashSet<String>>,
    /// What each file held on disk when content was last pushed over it (see [`FileAuth::push`]).
    /// Held through a whole reload or push, so the two cannot interleave and undo each other.
    pushed_over: Mutex<PushedOver>,
    /// Password verification is CPU-heavy by design; at most this many run at once so a burst of
    /// connections cannot starve the message path.
    verifications: Arc<Semaphore>,
    /// Refuses, without hashing, verifications beyond the bounds and the failure budget of their
    /// address, so that a burst of guesses cannot queue in front of correct passwords.
    guard: LoginGuard,
    /// Where the guard's refusals are counted.
    stats: Arc<Stats>,
    /// Whether a certificate identity must be a listed user (`auth.certificate_identities`).
    certificate_identities: CertificateIdentities,
}

/// New content for the users file, the ACL file or both, given as the files' text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthPush {
    pub users: Option<String>,
    pub acl: Option<String>,
}

/// What a reload or push left in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Whether connected clients' rights may have changed (a user added or revoked, or new ACL
    /// rules), so that they must be re-checked.
    pub changed: bool,
    /// Users now in force; `None` without a users file.
    pub users: Option<usize>,
    /// ACL rules now in force; `None` without an ACL file.
    pub acl_rules: Option<usize>,
    /// Users whose credentials this change revoked (removed, or a new hash).
    pub revoked_users: usize,
}

/// For each file, the digest of its text on disk at the last push over it; `None` when the file
/// holds what is in force (nothing pushed since it was last applied).
#[derive(Debug, Default)]
struct PushedOver {
    users: Option<DiskText>,
    acl: Option<DiskText>,
}

/// A file's text as a SHA-256 digest: enough to tell whether it is still the same bytes.
/// `Unreadable` when the file could not be read at push time; any text read later differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiskText {
    Digest([u8; 32]),
    Unreadable,
}

impl DiskText {
    fn of(text: &str) -> Self {
        Self::Digest(Sha256::digest(text.as_bytes()).into())
    }

    fn read(path: &Path) -> Self {
        std::fs::read_to_string(path).map_or(Self::Unreadable, |text| Self::of(&text))
    }
}

impl FileAuth {
    /// Loads the files; an error names the file and the line.
    pub fn load(users_path: Option<&Path>, acl_path: Option<&Path>) -> Result<Self, AuthFileError> {
        let users = users_path.map(read_users).transpose()?;
        let acl = acl_path.map(read_acl).transpose()?;
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            users_path: users_path.map(Path::to_path_buf),
            acl_path: acl_path.map(Path::to_path_buf),
            users: ArcSwapOption::from(users.map(Arc::new)),
            acl: ArcSwapOption::from(acl.map(Arc::new)),
            revoked: RwLock::new(HashSet::new()),
            pushed_over: Mutex::new(PushedOver::default()),
            verifications: Arc::new(Semaphore::new(workers)),
            guard: LoginGuard::new(&AuthConfig::default()),
            stats: Arc::new(Stats::default()),
            certificate_identities: CertificateIdentities::Any,
        })
    }

    /// Applies the `auth` section: which certificate identities log in, and the bounds on
    /// password verification.
    #[must_use]
    pub fn with_config(mut self, auth: &AuthConfig) -> Self {
        self.certificate_identities = auth.certificate_identities;
        self.guard = LoginGuard::new(auth);
        self
    }

    /// Counts the logins the guard refuses in `stats` (the broker's).
    #[must_use]
    pub fn reporting_to(mut self, stats: Arc<Stats>) -> Self {
        self.stats = stats;
        self
    }

    /// Sets which certificate identities log in (`auth.certificate_identities`).
    #[must_use]
    pub fn with_certificate_identities(mut self, identities: CertificateIdentities) -> Self {
        self.certificate_identities = identities;
        self
    }

    /// Whether `username` is a user of the users file now.
    fn is_listed(&self, username: &str) -> bool {
        self.users
            .load()
            .as_deref()
            .is_some_and(|users| users.contains(username))
    }

    /// Puts pushed content in force in place of the files' text, exactly as a reload of files with
    /// that text would (same revoked-user bookkeeping; the caller re-checks connected clients when
    /// [`Applied::changed`]). Both texts are parsed before either is applied; on error nothing changes.
    ///
    /// The files on disk still hold the old text until whoever owns them catches up (in Kubernetes,
    /// kubelet refreshes a Secret volume up to a minute or two later). So that a reload in between
    /// does not roll the pushed content back, the rule is: each file's on-disk text at the moment of
    /// the push is remembered; a later reload that finds that same text keeps the pushed content; once
    /// the file's text differs (new content was delivered), the file wins again and the memory goes.
    pub fn push(&self, push: &AuthPush) -> Result<Applied, PushError> {
        let users_path = match (&push.users, &self.users_path) {
            (Some(_), None) => return Err(PushError::NotConfigured(AuthPart::Users)),
            (Some(_), Some(path)) => Some(path),
            (None, _) => None,
        };
        let acl_path = match (&push.acl, &self.acl_path) {
            (Some(_), None) => return Err(PushError::NotConfigured(AuthPart::Acl)),
            (Some(_), Some(path)) => Some(path),
            (None, _) => None,
        };
        let users = push.users.as_deref().map(UsersFile::parse).transpose();
        let users = users.map_err(PushError::Users)?;
        let acl = push.acl.as_deref().map(AclFile::parse).transpose();
        let acl = acl.map_err(PushError::Acl)?;
        let mut pushed_over = self.pushed_over.lock();
        if let Some(path) = users_path {
            pushed_over.users = Some(DiskText::read(path));
        }
        if let Some(path) = acl_path {
            pushed_over.acl = Some(DiskText::read(path));
        }
        Ok(self.apply(users, acl, "push"))
    }

    /// Swaps in what was parsed and works out whose credentials changed.
    fn apply(&self, users: Option<UsersFile>, acl: Option<AclFile>, from: &'static str) -> Applied {
        let mut changed = false;
        // Only this change's revocations count: a user revoked by an earlier change who has since
        // logged in with new credentials must not be disconnected again.
        let mut revoked = HashSet::new();
        if let Some(users) = users {
            let old = self.users.load_full();
            revoked = old
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
                from,
                users = users.len(),
                revoked = revoked.len(),
                added,
                "users applied"
            );
            self.users.store(Some(Arc::new(users)));
        }
        let revoked_users = revoked.len();
        *self.revoked.write() = revoked;
        if let Some(acl) = acl {
            info!(from, rules = acl.len(), "ACL applied");
            self.acl.store(Some(Arc::new(acl)));
            changed = true;
        }
        Applied {
            changed,
            users: self.users.load().as_deref().map(UsersFile::len),
            acl_rules: self.acl.load().as_deref().map(AclFile::len),
            revoked_users,
        }
    }

    /// Answers a login the guard refused, without hashing: an address in its backoff gets *Not
    /// authorized* (as a wrong password would, so a guesser learns nothing), a full queue *Server
    /// busy*, which tells a client with the right password to come back.
    fn refuse(&self, refusal: LoginRefusal, client: &ClientInfo) -> AuthDecision {
        let (limit, reason) = match refusal {
            LoginRefusal::Backoff => (LimitKind::LoginBackoff, ReasonCode::NOT_AUTHORIZED),
            LoginRefusal::Busy => (LimitKind::PendingLogins, ReasonCode::SERVER_BUSY),
        };
        self.stats.limit_hit(limit);
        debug!(client_id = %client.client_id, remote = %client.remote_addr, ?refusal, "login refused without a password check");
        AuthDecision::Deny(reason)
    }

    fn subject<'a>(client: &'a ClientInfo) -> Subject<'a> {
        Subject {
            username: client.username.as_deref(),
            client_id: client.client_id.as_str(),
        }
    }
}

/// A file's text for a reload, or `None` when content pushed over the file stays in force because
/// the file still holds the text it held at the push (see [`FileAuth::push`]).
fn text_for_reload(
    path: Option<&Path>,
    pushed_over: Option<DiskText>,
    part: AuthPart,
) -> Result<Option<String>, AuthFileError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = read_text(path)?;
    if pushed_over == Some(DiskText::of(&text)) {
        debug!(
            part = part.name(),
            "file unchanged since content was pushed over it; the pushed content stays"
        );
        return Ok(None);
    }
    Ok(Some(text))
}

fn read_text(path: &Path) -> Result<String, AuthFileError> {
    std::fs::read_to_string(path).map_err(|error| AuthFileError::Read {
        path: path.to_path_buf(),
        error,
    })
}

fn read_users(path: &Path) -> Result<UsersFile, AuthFileError> {
    parse_users(path, &read_text(path)?)
}

fn read_acl(path: &Path) -> Result<AclFile, AuthFileError> {
    parse_acl(path, &read_text(path)?)
}

fn parse_users(path: &Path, text: &str) -> Result<UsersFile, AuthFileError> {
    UsersFile::parse(text).map_err(|error| AuthFileError::Users {
        path: path.to_path_buf(),
        error,
    })
}

fn parse_acl(path: &Path, text: &str) -> Result<AclFile, AuthFileError> {
    AclFile::parse(text).map_err(|error| AuthFileError::Acl {
        path: path.to_path_buf(),
        error,
    })
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
                // The TLS layer verified the certificate; `listed` also wants its identity to be
                // a user, so that removing the user revokes the certificate.
                if self.certificate_identities == CertificateIdentities::Listed
                    && !users.contains(username)
                {
                    return AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED);
                }
                return AuthDecision::Continue;
            }
            let address = request.client.remote_addr.ip();
            let ticket = match self.guard.begin(address, Instant::now()) {
                Ok(ticket) => ticket,
                Err(refusal) => return self.refuse(refusal, request.client),
            };
            let username = username.to_string();
            let password = request.password.unwrap_or_default().to_vec();
            let Ok(_permit) = self.verifications.acquire().await else {
                return AuthDecision::Deny(ReasonCode::SERVER_UNAVAILABLE);
            };
            let verified = tokio::task::spawn_blocking(move || users.verify(&username, &password))
                .await
                .unwrap_or(false);
            ticket.finish(verified, Instant::now());
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
        let Some(username) = client.username.as_deref() else {
            return false;
        };
        if client.certificate_identity {
            // No password was involved, so a password change revokes nothing; only a removed
            // user does, and only when certificates must belong to listed users.
            return self.certificate_identities == CertificateIdentities::Listed
                && !self.is_listed(username);
        }
        self.revoked.read().contains(username)
    }
}

impl FileAuth {
    /// Re-reads both files; see [`Reload::reload`].
    fn reload_files(&self) -> Result<bool, AuthFileError> {
        let mut pushed_over = self.pushed_over.lock();
        let users_path = self.users_path.as_deref();
        let acl_path = self.acl_path.as_deref();
        let users_text = text_for_reload(users_path, pushed_over.users, AuthPart::Users)?;
        let acl_text = text_for_reload(acl_path, pushed_over.acl, AuthPart::Acl)?;
        // Parse both before swapping either, so a broken ACL does not leave half a reload applied.
        let users = users_path
            .zip(users_text)
            .map(|(path, text)| parse_users(path, &text))
            .transpose()?;
        let acl = acl_path
            .zip(acl_text)
            .map(|(path, text)| parse_acl(path, &text))
            .transpose()?;
        // A file applied from disk wins over anything pushed before.
        if users.is_some() {
            pushed_over.users = None;
        }
        if acl.is_some() {
            pushed_over.acl = None;
        }
        Ok(self.apply(users, acl, "file").changed)
    }
}

impl Reload for FileAuth {
    fn name(&self) -> &'static str {
        "users_and_acl"
    }

    fn reload(&self) -> Result<bool, ReloadError> {
        self.reload_files().map_err(ReloadError::new)
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::auth::{AclError, hash_new};
    use crate::codec::ProtocolVersion;
    use crate::identity::ClientId;

    /// A users file and an ACL file on disk, and the `FileAuth` loaded from them.
    struct Files {
        dir: tempfile::TempDir,
        auth: FileAuth,
    }

    const ACL: &str = "allow all subscribe users/%u/#\n";

    fn users_text(entries: &[(&str, &str)]) -> String {
        entries
            .iter()
            .map(|(user, password)| format!("{user}:{}\n", hash_new(password.as_bytes()).unwrap()))
            .collect()
    }

    impl Files {
        fn new(users: &str, acl: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("users"), users).unwrap();
            std::fs::write(dir.path().join("acl"), acl).unwrap();
            let auth = FileAuth::load(
                Some(&dir.path().join("users")),
                Some(&dir.path().join("acl")),
            )
            .unwrap();
            Self { dir, auth }
        }

        /// Replaces a file by renaming over it, as kubelet does.
        fn write(&self, name: &str, text: &str) {
            let temp = self.dir.path().join(format!(".{name}.new"));
            std::fs::write(&temp, text).unwrap();
            std::fs::rename(&temp, self.dir.path().join(name)).unwrap();
        }

        fn has_user(&self, user: &str) -> bool {
            self.auth
                .users
                .load()
                .as_deref()
                .is_some_and(|u| u.contains(user))
        }

        fn revoked(&self, user: &str) -> bool {
            self.auth.revoked.read().contains(user)
        }

        fn may_subscribe(&self, user: &str, filter: &str) -> bool {
            let client = ClientInfo {
                client_id: ClientId::new(user),
                username: Some(user.into()),
                protocol: ProtocolVersion::V5,
                remote_addr: SocketAddr::from(([127, 0, 0, 1], 1)).into(),
                listener: "mqtt".into(),
                certificate_identity: false,
                connected_at: None,
            };
            self.auth
                .authorize_subscribe(&client, filter, QoS::AtLeastOnce)
                != Access::Deny
        }
    }

    fn certificate_client(user: &str) -> ClientInfo {
        ClientInfo {
            client_id: ClientId::new(format!("{user}-cert")),
            username: Some(user.into()),
            protocol: ProtocolVersion::V5,
            remote_addr: SocketAddr::from(([127, 0, 0, 1], 1)).into(),
            listener: "mtls".into(),
            certificate_identity: true,
            connected_at: None,
        }
    }

    fn authenticate(auth: &FileAuth, client: &ClientInfo) -> AuthDecision {
        let request = ConnectRequest {
            client,
            password: None,
        };
        futures_util::FutureExt::now_or_never(auth.authenticate(&request))
            .expect("a certificate login does not wait on a password hash")
    }

    #[test]
    fn listed_certificate_identities_must_be_users_and_are_revoked_with_them() {
        let mut files = Files::new(&users_text(&[("device-1", "x"), ("device-2", "y")]), ACL);
        files.auth = files
            .auth
            .with_certificate_identities(CertificateIdentities::Listed);
        let listed = certificate_client("device-1");
        assert_eq!(authenticate(&files.auth, &listed), AuthDecision::Continue);
        assert_eq!(
            authenticate(&files.auth, &certificate_client("intruder")),
            AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED)
        );
        // A password change is not a revocation of the certificate...
        files.write(
            "users",
            &users_text(&[("device-1", "new"), ("device-2", "y")]),
        );
        assert!(files.auth.reload().unwrap());
        assert!(!files.auth.revoked(&listed));
        // ...removing the user is.
        files.write("users", &users_text(&[("device-2", "y")]));
        assert!(files.auth.reload().unwrap());
        assert!(files.auth.revoked(&listed));
        assert!(!files.auth.revoked(&certificate_client("device-2")));
        assert_eq!(
            authenticate(&files.auth, &listed),
            AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED)
        );
    }

    #[test]
    fn any_certificate_identity_logs_in_by_default() {
        let files = Files::new(&users_text(&[("device-1", "x")]), ACL);
        let unlisted = certificate_client("device-9");
        assert_eq!(authenticate(&files.auth, &unlisted), AuthDecision::Continue);
        files.write("users", "");
        assert!(files.auth.reload().unwrap());
        assert!(!files.auth.revoked(&certificate_client("device-1")));
    }

    fn push(users: Option<&str>, acl: Option<&str>) -> AuthPush {
        AuthPush {
            users: users.map(str::to_owned),
            acl: acl.map(str::to_owned),
        }
    }

    #[test]
    fn a_push_applies_like_a_reload_and_revokes_only_changed_users() {
        let alice_bob = users_text(&[("alice", "a"), ("bob", "b")]);
        let files = Files::new(&alice_bob, ACL);
        let alice_line = alice_bob.lines().next().unwrap();
        let pushed = format!("{alice_line}\n{}", users_text(&[("carol", "c")]));
        let applied = files
            .auth
            .push(&push(Some(&pushed), Some("allow all subscribe news/#\n")))
            .unwrap();
        assert_eq!(
            applied,
            Applied {
                changed: true,
                users: Some(2),
                acl_rules: Some(1),
                revoked_users: 1,
            }
        );
        assert!(files.has_user("carol") && !files.has_user("bob"));
        assert!(files.revoked("bob") && !files.revoked("alice"));
        assert!(files.may_subscribe("alice", "news/today"));
        assert!(!files.may_subscribe("alice", "users/alice/x"));
    }

    #[test]
    fn pushing_the_content_in_force_revokes_nobody() {
        let text = users_text(&[("alice", "a"), ("bob", "b")]);
        let files = Files::new(&text, ACL);
        let applied = files.auth.push(&push(Some(&text), None)).unwrap();
        assert!(!applied.changed, "{applied:?}");
        assert_eq!(applied.revoked_users, 0);
    }

    #[test]
    fn a_reload_keeps_pushed_content_while_the_files_hold_their_old_text() {
        let old_users = users_text(&[("alice", "a"), ("bob", "b")]);
        let files = Files::new(&old_users, ACL);
        let new_users = users_text(&[("alice", "a2")]);
        files
            .auth
            .push(&push(
                Some(&new_users),
                Some("allow all subscribe news/#\n"),
            ))
            .unwrap();
        // The same bytes renamed into place again (kubelet rewrites every key of a Secret).
        files.write("users", &old_users);
        files.write("acl", ACL);
        assert!(!files.auth.reload().unwrap());
        assert!(!files.has_user("bob"));
        assert!(files.may_subscribe("alice", "news/x"));
        assert!(!files.may_subscribe("alice", "users/alice/x"));
        // A kept reload revokes nobody: alice, revoked by the push, may log in again.
        assert!(!files.revoked("alice"));
    }

    #[test]
    fn a_file_with_new_text_wins_over_pushed_content_and_clears_the_memory() {
        let old_users = users_text(&[("alice", "a"), ("bob", "b")]);
        let files = Files::new(&old_users, ACL);
        let pushed_users = users_text(&[("alice", "a")]);
        files.auth.push(&push(Some(&pushed_users), None)).unwrap();
        let delivered = users_text(&[("dave", "d")]);
        files.write("users", &delivered);
        assert!(files.auth.reload().unwrap());
        assert!(files.has_user("dave") && !files.has_user("alice"));
        assert!(files.revoked("alice"));
        // The memory is gone: the old text, written back, is applied like any other.
        files.write("users", &old_users);
        assert!(files.auth.reload().unwrap());
        assert!(files.has_user("bob"));
    }

    #[test]
    fn the_acl_file_wins_on_its_own_while_pushed_users_stay() {
        let old_users = users_text(&[("alice", "a"), ("bob", "b")]);
        let files = Files::new(&old_users, ACL);
        let pushed_users = users_text(&[("alice", "a")]);
        files
            .auth
            .push(&push(
                Some(&pushed_users),
                Some("allow all subscribe news/#\n"),
            ))
            .unwrap();
        files.write("acl", "allow all subscribe sport/#\n");
        assert!(files.auth.reload().unwrap());
        assert!(files.may_subscribe("alice", "sport/x"));
        assert!(!files.may_subscribe("alice", "news/x"));
        assert!(!files.has_user("bob"), "the users file did not change");
    }

    #[test]
    fn a_push_that_does_not_parse_changes_nothing() {
        let users = users_text(&[("alice", "a"), ("bob", "b")]);
        let files = Files::new(&users, ACL);
        let good_users = users_text(&[("carol", "c")]);
        let refused = files
            .auth
            .push(&push(
                Some(&good_users),
                Some("allow all subscribe a/#\nallow all subscrib b/#\n"),
            ))
            .unwrap_err();
        assert!(
            matches!(
                refused,
                PushError::Acl(AclError::UnknownAction { line: 2, .. })
            ),
            "{refused:?}"
        );
        assert_eq!((refused.part(), refused.line()), (AuthPart::Acl, Some(2)));
        assert!(
            refused.to_string().starts_with("acl: acl file line 2:"),
            "{refused}"
        );
        assert!(files.has_user("bob") && !files.has_user("carol"));
        assert!(!files.revoked("alice") && !files.revoked("bob"));
        assert!(files.may_subscribe("alice", "users/alice/x"));
        // Nothing was remembered either: a reload applies the files as before.
        assert!(files.auth.pushed_over.lock().users.is_none());

        let refused = files
            .auth
            .push(&push(Some("alice:$argon2id$nonsense\n"), None))
            .unwrap_err();
        assert_eq!((refused.part(), refused.line()), (AuthPart::Users, Some(1)));
        assert!(files.has_user("bob"));
    }

    #[test]
    fn content_for_a_file_the_configuration_does_not_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, users_text(&[("alice", "a")])).unwrap();
        let auth = FileAuth::load(Some(&users), None).unwrap();
        let refused = auth
            .push(&push(Some(""), Some("allow all both #\n")))
            .unwrap_err();
        assert_eq!(refused, PushError::NotConfigured(AuthPart::Acl));
        assert!(refused.to_string().contains("auth.acl_file"), "{refused}");
        assert!(
            auth.users
                .load()
                .as_deref()
                .is_some_and(|u| u.contains("alice")),
            "the users part was not applied either"
        );
    }
}
