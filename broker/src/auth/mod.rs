//! Built-in authentication and authorization data: the users file (username → password hash) and the
//! ACL file (ordered allow/deny rules over topics), parsed from text and evaluated.
//!
//! Pure logic: callers read the files, hand over their text, and decide what to do with the answer
//! (the broker's hook, its reload path and the `passwd` command). Nothing here does I/O, logs, or holds
//! state beyond the parsed file, except [`FileAuth`], the broker's live copy of both files. The formats
//! are documented in `docs/acl.md` and in each module.

pub mod acl;
mod files;
mod guard;
pub mod password;
pub mod users;

pub use acl::{AclFile, Decision, Subject};
pub use files::{Applied, AuthPush, FileAuth};
pub use guard::{LoginGuard, LoginRefusal, LoginTicket};
pub use password::{PasswordHash, hash_new};
pub use users::UsersFile;

/// Why a password hash could not be read or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Not `$argon2id$…`, `$6$…` or `$7$…`.
    #[error("unknown hash format (expected `$argon2id$`, `$6$` or `$7$`)")]
    UnknownScheme,
    /// A PHC string for Argon2i or Argon2d.
    #[error("only the argon2id variant of Argon2 is accepted")]
    UnsupportedAlgorithm,
    /// The fields are not where the format puts them.
    #[error("malformed hash: {0}")]
    Malformed(&'static str),
    /// A salt or hash field is not base64.
    #[error("the {0} is not valid base64")]
    Base64(&'static str),
    /// A decoded salt or hash has the wrong length.
    #[error("the {field} is {len} bytes long, which this format does not allow")]
    Length {
        /// `salt` or `hash`.
        field: &'static str,
        /// Its decoded length.
        len: usize,
    },
    /// Cost parameters above the broker's limits (see [`password::MAX_M_COST_KIB`] and its siblings).
    #[error("the hash's cost parameters exceed the broker's limits")]
    CostTooHigh,
    /// The argon2 crate refused the PHC string or its parameters.
    #[error("argon2: {0}")]
    Argon2(String),
    /// The operating system's random number generator failed while making a salt.
    #[error("the system random number generator failed")]
    Rng,
}

impl PasswordError {
    /// A short, fixed name for the variant, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownScheme => "unknown_scheme",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::Malformed(_) => "malformed",
            Self::Base64(_) => "base64",
            Self::Length { .. } => "length",
            Self::CostTooHigh => "cost_too_high",
            Self::Argon2(_) => "argon2",
            Self::Rng => "rng",
        }
    }
}

/// Why a users file could not be read, or a change to it could not be made. Line numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsersError {
    /// A line without `:` between username and hash.
    #[error("users file line {line}: expected `username:hash`")]
    MissingSeparator {
        /// The line.
        line: usize,
    },
    /// An empty username, or one with whitespace, control characters or `:`.
    #[error("users file line {line}: invalid username {username:?}")]
    InvalidUsername {
        /// The line (0 for a username given to a writer).
        line: usize,
        /// The username as written.
        username: String,
    },
    /// The same username on two lines.
    #[error("users file line {line}: user {username:?} already defined on line {first}")]
    DuplicateUser {
        /// The second line.
        line: usize,
        /// The username.
        username: String,
        /// The line that defined it first.
        first: usize,
    },
    /// The hash after `:` is not one this broker reads.
    #[error("users file line {line}: {source}")]
    Hash {
        /// The line (0 for a hash given to a writer).
        line: usize,
        /// What is wrong with the hash.
        source: PasswordError,
    },
    /// [`users::remove_user`] was asked for a user the file does not have.
    #[error("no user {0:?} in the users file")]
    NoSuchUser(String),
}

impl UsersError {
    /// A short, fixed name for the variant, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingSeparator { .. } => "missing_separator",
            Self::InvalidUsername { .. } => "invalid_username",
            Self::DuplicateUser { .. } => "duplicate_user",
            Self::Hash { .. } => "hash",
            Self::NoSuchUser(_) => "no_such_user",
        }
    }

    /// The line the error is on, counted from 1; `None` when it is about no line of a file.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::MissingSeparator { line }
            | Self::InvalidUsername { line, .. }
            | Self::DuplicateUser { line, .. }
            | Self::Hash { line, .. } => Some(*line).filter(|&line| line > 0),
            Self::NoSuchUser(_) => None,
        }
    }
}

/// Why an ACL file could not be read. Every variant names the line (from 1) and the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// The first word is not `allow`, `deny` or `group`.
    #[error("acl file line {line}: unknown directive {token:?} (expected allow, deny or group)")]
    UnknownDirective {
        /// The line.
        line: usize,
        /// The word.
        token: String,
    },
    /// The line ends before a required part.
    #[error("acl file line {line}: missing {expected} after {token:?}")]
    Missing {
        /// The line.
        line: usize,
        /// The last token present.
        token: String,
        /// What should have followed.
        expected: &'static str,
    },
    /// The subject is not `user NAME`, `group NAME`, `client PATTERN` or `all`.
    #[error(
        "acl file line {line}: unknown subject {token:?} (expected user, group, client or all)"
    )]
    UnknownSubject {
        /// The line.
        line: usize,
        /// The word.
        token: String,
    },
    /// The action is not `publish`, `subscribe` or `both`.
    #[error("acl file line {line}: unknown action {token:?} (expected publish, subscribe or both)")]
    UnknownAction {
        /// The line.
        line: usize,
        /// The word.
        token: String,
    },
    /// The topic filter is not valid once `%u` and `%c` are set aside.
    #[error("acl file line {line}: invalid topic filter {token:?}: {source}")]
    InvalidFilter {
        /// The line.
        line: usize,
        /// The filter as written.
        token: String,
        /// What is wrong with it.
        source: crate::topic::TopicError,
    },
    /// A trailing word that is not `qos<=N` or `retain=true|false`, or one that does not apply here.
    #[error("acl file line {line}: invalid option {token:?}: {reason}")]
    InvalidOption {
        /// The line.
        line: usize,
        /// The word.
        token: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A rule names a group that no `group` line defines.
    #[error("acl file line {line}: unknown group {token:?}")]
    UnknownGroup {
        /// The line.
        line: usize,
        /// The group name.
        token: String,
    },
    /// Two `group` lines with the same name.
    #[error("acl file line {line}: group {token:?} already defined on line {first}")]
    DuplicateGroup {
        /// The second line.
        line: usize,
        /// The group name.
        token: String,
        /// The line that defined it first.
        first: usize,
    },
    /// A `group` line without `=` after the name, or a name containing `=`.
    #[error("acl file line {line}: expected `group NAME = member ...`, found {token:?}")]
    BadGroupLine {
        /// The line.
        line: usize,
        /// The token where `=` was expected.
        token: String,
    },
}

impl AclError {
    /// A short, fixed name for the variant, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownDirective { .. } => "unknown_directive",
            Self::Missing { .. } => "missing",
            Self::UnknownSubject { .. } => "unknown_subject",
            Self::UnknownAction { .. } => "unknown_action",
            Self::InvalidFilter { .. } => "invalid_filter",
            Self::InvalidOption { .. } => "invalid_option",
            Self::UnknownGroup { .. } => "unknown_group",
            Self::DuplicateGroup { .. } => "duplicate_group",
            Self::BadGroupLine { .. } => "bad_group_line",
        }
    }

    /// The line the error is on, counted from 1.
    pub fn line(&self) -> usize {
        match self {
            Self::UnknownDirective { line, .. }
            | Self::Missing { line, .. }
            | Self::UnknownSubject { line, .. }
            | Self::UnknownAction { line, .. }
            | Self::InvalidFilter { line, .. }
            | Self::InvalidOption { line, .. }
            | Self::UnknownGroup { line, .. }
            | Self::DuplicateGroup { line, .. }
            | Self::BadGroupLine { line, .. } => *line,
        }
    }
}

/// One of the two files [`FileAuth`] serves: the users file or the ACL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPart {
    /// `auth.users_file`.
    Users,
    /// `auth.acl_file`.
    Acl,
}

impl AuthPart {
    /// `users` or `acl`, as the admin API names the part.
    pub fn name(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Acl => "acl",
        }
    }

    /// The configuration key that names the file.
    pub fn config_key(self) -> &'static str {
        match self {
            Self::Users => "auth.users_file",
            Self::Acl => "auth.acl_file",
        }
    }
}

/// Why the users or ACL file could not be loaded, at start or on reload; on reload the previous
/// content stays in force. The cause is part of the message rather than a `source`, so that a
/// report that prints the chain names it once.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("{}: {error}", path.display())]
    Read {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {error}", path.display())]
    Users {
        path: std::path::PathBuf,
        error: UsersError,
    },
    #[error("{}: {error}", path.display())]
    Acl {
        path: std::path::PathBuf,
        error: AclError,
    },
}

/// Why content pushed in place of the users or ACL file was refused. Nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Content for a file the configuration does not name: without the file there is no such policy
    /// to replace, and turning one on is a configuration change.
    #[error("{}: the configuration has no {}, so there is no {} content to replace", .0.name(), .0.config_key(), .0.name())]
    NotConfigured(AuthPart),
    /// The pushed users text does not parse.
    #[error("users: {0}")]
    Users(UsersError),
    /// The pushed ACL text does not parse.
    #[error("acl: {0}")]
    Acl(AclError),
}

impl PushError {
    /// A short, fixed name for the variant, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotConfigured(_) => "not_configured",
            Self::Users(_) => "users",
            Self::Acl(_) => "acl",
        }
    }

    /// Which part was refused.
    pub fn part(&self) -> AuthPart {
        match self {
            Self::NotConfigured(part) => *part,
            Self::Users(_) => AuthPart::Users,
            Self::Acl(_) => AuthPart::Acl,
        }
    }

    /// The line of the pushed text the error is on, counted from 1.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::NotConfigured(_) => None,
            Self::Users(e) => e.line(),
            Self::Acl(e) => Some(e.line()),
        }
    }
}
