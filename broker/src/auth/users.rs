//! The users file: one `username:hash` per line, `#` comments and blank lines ignored. Read by the
//! broker at start and on reload; written by the `tern-broker passwd` command through
//! [`set_password`] and [`remove_user`], which edit the text and keep everything else as it was.
//!
//! Usernames are unique, non-empty, and hold no `:`, no control characters and no whitespace at
//! either end; a username cannot start with `#` (the line would be a comment). Whitespace around a
//! whole line is ignored, so files with CRLF endings read the same. The hash formats are
//! [`PasswordHash`]'s. Pure: the caller reads and writes the file.

use std::collections::HashMap;
use std::hash::BuildHasher;

use super::{PasswordHash, UsersError};

/// A parsed users file.
#[derive(Debug, Clone)]
pub struct UsersFile {
    users: HashMap<Box<str>, Entry, foldhash::fast::RandomState>,
    /// Verified against when the username is unknown, so that a miss costs what a hit does and the
    /// response time does not tell which usernames exist. The first user's hash: in a file that mixes
    /// schemes, timing can still tell a user's scheme apart from the first one's.
    dummy: Option<PasswordHash>,
}

#[derive(Debug, Clone)]
struct Entry {
    hash: PasswordHash,
    fingerprint: u64,
    line: usize,
}

impl UsersFile {
    /// Parses a users file's text. Errors name the line.
    pub fn parse(text: &str) -> Result<Self, UsersError> {
        let mut users: HashMap<Box<str>, Entry, _> = HashMap::default();
        let mut dummy = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let Some((username, hash_text)) = split_entry(raw) else {
                continue;
            };
            let Some(hash_text) = hash_text else {
                return Err(UsersError::MissingSeparator { line });
            };
            check_username(username, line)?;
            let hash = PasswordHash::parse(hash_text)
                .map_err(|source| UsersError::Hash { line, source })?;
            if let Some(first) = users.get(username) {
                return Err(UsersError::DuplicateUser {
                    line,
                    username: username.to_owned(),
                    first: first.line,
                });
            }
            dummy.get_or_insert_with(|| hash.clone());
            let entry = Entry {
                hash,
                fingerprint: fingerprint_of(hash_text),
                line,
            };
            users.insert(username.into(), entry);
        }
        Ok(Self { users, dummy })
    }

    /// Whether `username` exists and `password` matches its hash. An unknown username still costs one
    /// verification. Slow by design (see [`PasswordHash`]): call it off the async executor.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        match self.users.get(username) {
            Some(entry) => entry.hash.verify(password),
            None => {
                if let Some(dummy) = &self.dummy {
                    std::hint::black_box(dummy.verify(password));
                }
                false
            }
        }
    }

    /// Whether the file defines `username`.
    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// A value that changes whenever `username`'s hash text changes (and is the same in every process
    /// for the same text), so a reload can tell whose credentials changed. `None` for an unknown user.
    pub fn fingerprint(&self, username: &str) -> Option<u64> {
        self.users.get(username).map(|entry| entry.fingerprint)
    }

    /// `username`'s parsed hash, for example to warn about legacy schemes.
    pub fn hash(&self, username: &str) -> Option<&PasswordHash> {
        self.users.get(username).map(|entry| &entry.hash)
    }

    /// Every username, in no particular order.
    pub fn usernames(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(|name| &**name)
    }

    /// How many users the file defines.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file defines no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Returns `text` with `username`'s hash set to `new_hash`: its line is rewritten in place (and any
/// later duplicate dropped), or, for a new user, a line is appended. Comments, blank lines, order and
/// line endings are kept. Both arguments are checked, so the result parses if the rest of `text` did.
pub fn set_password(text: &str, username: &str, new_hash: &str) -> Result<String, UsersError> {
    check_username(username, 0)?;
    PasswordHash::parse(new_hash).map_err(|source| UsersError::Hash { line: 0, source })?;
    let mut out = String::with_capacity(text.len() + username.len() + new_hash.len() + 2);
    let mut replaced = false;
    for raw in text.split_inclusive('\n') {
        if !is_entry_for(raw, username) {
            out.push_str(raw);
        } else if !replaced {
            out.push_str(username);
            out.push(':');
            out.push_str(new_hash);
            out.push_str(line_ending(raw));
            replaced = true;
        }
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(username);
        out.push(':');
        out.push_str(new_hash);
        out.push('\n');
    }
    Ok(out)
}

/// Returns `text` without `username`'s line (or lines), everything else kept as it was.
pub fn remove_user(text: &str, username: &str) -> Result<String, UsersError> {
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    for raw in text.split_inclusive('\n') {
        if is_entry_for(raw, username) {
            found = true;
        } else {
            out.push_str(raw);
        }
    }
    if found {
        Ok(out)
    } else {
        Err(UsersError::NoSuchUser(username.to_owned()))
    }
}

/// Splits an entry line into username and hash text (`None` for the hash when there is no `:`);
/// `None` for a blank or comment line.
fn split_entry(raw: &str) -> Option<(&str, Option<&str>)> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some(match line.split_once(':') {
        Some((username, hash)) => (username, Some(hash)),
        None => (line, None),
    })
}

fn is_entry_for(raw: &str, username: &str) -> bool {
    matches!(split_entry(raw), Some((name, Some(_))) if name == username)
}

fn line_ending(raw: &str) -> &'static str {
    if raw.ends_with("\r\n") {
        "\r\n"
    } else if raw.ends_with('\n') {
        "\n"
    } else {
        ""
    }
}

fn check_username(username: &str, line: usize) -> Result<(), UsersError> {
    let valid = !username.is_empty()
        && !username.starts_with('#')
        && username.trim() == username
        && !username.chars().any(|c| c == ':' || c.is_control());
    if valid {
        Ok(())
    } else {
        Err(UsersError::InvalidUsername {
            line,
            username: username.to_owned(),
        })
    }
}

/// A stable 64-bit digest of a hash's text: the same in every process, so it can be compared across
/// reloads and restarts.
fn fingerprint_of(hash_text: &str) -> u64 {
    foldhash::quality::FixedState::with_seed(0x7465_726e_7573_6572).hash_one(hash_text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PasswordError;

    // Made with Debian's mosquitto_passwd 2.0.11 (`-H sha512` for the `$6$` line, the default for `$7$`).
    const ALICE_7: &str = "alice:$7$101$QGQUKL/EJcapr6B3$AsKtK3I/Xwtzv5ILMlSwIlQAH3Fxrs/IkPRB3Dpee3RoUH8cWfUoKYydPCqAs4Cf3gabHaSn+wUAG21Dx5PV4Q==";
    const BOB_6: &str = "bob:$6$ZNUmpdT8tBfsA+Yj$jNrKfnXdarqsAPrXdtt5/URpiFGD/Xgl7u/FGphp+IjpCrVwJLwIaRNqK3S/eOUDINf4qgrlsPoWDp2ZQ5Hx5g==";
    const CAROL_7: &str = "carol:$7$101$vRp95ZtAPt45T1jP$68A/WTWaW738cLPunm5yupYaW4WoJp8Xs/Odpx69De/BM7q5Ks/by2J3KVWAApK4xos12ck6CoOWgyj+JFLdTQ==";

    fn hash_of(line: &str) -> &str {
        line.split_once(':').map_or("", |(_, h)| h)
    }

    fn parsed(text: &str) -> UsersFile {
        match UsersFile::parse(text) {
            Ok(f) => f,
            Err(e) => panic!("did not parse: {e}"),
        }
    }

    fn mosquitto_file() -> String {
        format!(
            "# made by mosquitto_passwd\n{ALICE_7}\n\n{BOB_6}\r\n  # indented comment\n{CAROL_7}"
        )
    }

    #[test]
    fn a_mosquitto_passwd_file_parses_and_verifies() {
        let users = parsed(&mosquitto_file());
        assert_eq!(users.len(), 3);
        assert!(users.verify("alice", b"correct horse"));
        assert!(users.verify("bob", "ünïcødé pässwörd".as_bytes()));
        assert!(users.verify("carol", b"p:a$s#w"));
        assert!(!users.verify("alice", b"p:a$s#w"));
        assert!(users.contains("bob"));
        assert!(!users.contains("Bob"));
    }

    #[test]
    fn unknown_users_are_refused() {
        let users = parsed(&mosquitto_file());
        assert!(!users.verify("mallory", b"correct horse"));
        assert!(!parsed("").verify("anyone", b""));
        assert!(parsed("# only a comment\n\n").is_empty());
    }

    #[test]
    fn a_line_without_a_colon_is_an_error_naming_the_line() {
        let err = UsersFile::parse("# c\nalice:$6$x\n").err();
        assert!(
            matches!(err, Some(UsersError::Hash { line: 2, .. })),
            "{err:?}"
        );
        let err = UsersFile::parse(&format!("{ALICE_7}\n\njust-a-name\n")).err();
        assert_eq!(err, Some(UsersError::MissingSeparator { line: 3 }));
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("users file line 3: expected `username:hash`")
        );
    }

    #[test]
    fn duplicate_usernames_are_an_error_naming_both_lines() {
        let text = format!("{ALICE_7}\n{BOB_6}\nalice:{}\n", hash_of(CAROL_7));
        let err = UsersFile::parse(&text).err();
        assert_eq!(
            err,
            Some(UsersError::DuplicateUser {
                line: 3,
                username: "alice".into(),
                first: 1
            })
        );
    }

    #[test]
    fn invalid_usernames_are_refused() {
        let hash = hash_of(ALICE_7);
        for name in ["", "alice ", "al\u{7}ice", "a\tb"] {
            let err = UsersFile::parse(&format!("{name}:{hash}\n")).err();
            assert!(
                matches!(err, Some(UsersError::InvalidUsername { line: 1, .. })),
                "{name:?}: {err:?}"
            );
        }
        assert!(parsed(&format!("john smith:{hash}\n")).contains("john smith"));
        assert!(parsed(&format!("  indented:{hash}  \n")).contains("indented"));
    }

    #[test]
    fn fingerprint_changes_only_with_that_users_hash() {
        let before = parsed(&mosquitto_file());
        let text = set_password(&mosquitto_file(), "bob", hash_of(CAROL_7));
        let after = parsed(&text.unwrap_or_default());
        assert_ne!(before.fingerprint("bob"), after.fingerprint("bob"));
        assert_eq!(before.fingerprint("alice"), after.fingerprint("alice"));
        assert_eq!(before.fingerprint("carol"), after.fingerprint("carol"));
        assert_eq!(before.fingerprint("mallory"), None);
    }

    #[test]
    fn set_password_rewrites_the_users_line_in_place() {
        let text = set_password(&mosquitto_file(), "bob", hash_of(ALICE_7)).unwrap_or_default();
        let expected = mosquitto_file().replace(hash_of(BOB_6), hash_of(ALICE_7));
        assert_eq!(text, expected);
        assert!(parsed(&text).verify("bob", b"correct horse"));
    }

    #[test]
    fn set_password_appends_a_new_user_after_a_missing_final_newline() {
        let text = set_password(&mosquitto_file(), "dave", hash_of(BOB_6)).unwrap_or_default();
        assert_eq!(
            text,
            format!("{}\ndave:{}\n", mosquitto_file(), hash_of(BOB_6))
        );
        assert_eq!(
            set_password("", "dave", hash_of(BOB_6)).ok(),
            Some(format!("dave:{}\n", hash_of(BOB_6)))
        );
    }

    #[test]
    fn set_password_drops_later_duplicates() {
        let text = format!("{ALICE_7}\n{BOB_6}\n{ALICE_7}\n");
        let out = set_password(&text, "alice", hash_of(CAROL_7)).unwrap_or_default();
        assert_eq!(out, format!("alice:{}\n{BOB_6}\n", hash_of(CAROL_7)));
    }

    #[test]
    fn set_password_refuses_a_bad_username_or_hash() {
        let hash = hash_of(ALICE_7);
        for name in ["", "a:b", "#root", "new\nline"] {
            assert!(
                matches!(
                    set_password("", name, hash),
                    Err(UsersError::InvalidUsername { .. })
                ),
                "{name:?}"
            );
        }
        assert_eq!(
            set_password("", "dave", "plaintext"),
            Err(UsersError::Hash {
                line: 0,
                source: PasswordError::UnknownScheme
            })
        );
    }

    #[test]
    fn remove_user_keeps_everything_else() {
        let text = remove_user(&mosquitto_file(), "bob").unwrap_or_default();
        assert_eq!(text, mosquitto_file().replace(&format!("{BOB_6}\r\n"), ""));
        let users = parsed(&text);
        assert!(!users.contains("bob"));
        assert!(users.contains("alice") && users.contains("carol"));
    }

    #[test]
    fn remove_user_of_an_unknown_user_is_an_error() {
        assert_eq!(
            remove_user(&mosquitto_file(), "# made by mosquitto_passwd"),
            Err(UsersError::NoSuchUser("# made by mosquitto_passwd".into()))
        );
    }
}
