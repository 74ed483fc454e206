//! The one place this stand-in differs from a kubelet on purpose. A container here has no mount
//! namespace and no network namespace, so "mounting" and "the pod's address" are text rewrites:
//!
//! - every `volumeMounts[].mountPath` that starts a path token is replaced by the directory the volume
//!   was materialized in (`/etc/tern/config/broker.yaml` → `<root>/ns/pod/uid/volumes/config/broker.yaml`);
//! - the addresses `0.0.0.0` (bind to every interface of the pod) and `127.0.0.1` (the pod's own
//!   loopback) are replaced by the pod's address.
//!
//! The rewrite is applied to container args and env values (after `$(VAR)` expansion), to exec hooks
//! and probes, and to the text files of ConfigMap volumes (never to Secrets or `binaryData`). It is one
//! left-to-right pass: a replacement is never rewritten again, which matters when the root directory
//! itself lies under a mount path such as `/tmp`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Addresses that mean "this pod" inside a pod's network namespace.
const POD_ADDRESSES: [&str; 2] = ["0.0.0.0", "127.0.0.1"];

/// Mount paths and the pod address, applied to text.
#[derive(Debug, Clone)]
pub struct PodRewriter {
    /// `(mountPath, host directory)`, longest mount path first so nested mounts win.
    mounts: Vec<(String, String)>,
    pod_ip: String,
}

impl PodRewriter {
    /// `mounts` maps mount paths to host directories; for one mount path the first entry wins.
    pub fn new(mounts: impl IntoIterator<Item = (String, PathBuf)>, pod_ip: Ipv4Addr) -> Self {
        let mut table: Vec<(String, String)> = Vec::new();
        for (mount_path, dir) in mounts {
            let mount_path = normalize(&mount_path);
            if mount_path.len() > 1 && !table.iter().any(|(known, _)| *known == mount_path) {
                table.push((mount_path, dir.to_string_lossy().into_owned()));
            }
        }
        table.sort_by_key(|(mount_path, _)| std::cmp::Reverse(mount_path.len()));
        Self {
            mounts: table,
            pod_ip: pod_ip.to_string(),
        }
    }

    /// `text` with mount paths and pod addresses replaced, in one pass.
    pub fn rewrite(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut previous: Option<char> = None;
        let mut at = 0;
        while let Some(ch) = text[at..].chars().next() {
            let rest = &text[at..];
            if let Some((matched, replacement)) = self.match_at(previous, rest) {
                out.push_str(&text[copied..at]);
                out.push_str(replacement);
                previous = rest[..matched].chars().last();
                at += matched;
                copied = at;
            } else {
                previous = Some(ch);
                at += ch.len_utf8();
            }
        }
        out.push_str(&text[copied..]);
        out
    }

    /// The length of the match at the start of `rest` and its replacement, if one starts here.
    fn match_at(&self, previous: Option<char>, rest: &str) -> Option<(usize, &str)> {
        if !previous.is_some_and(is_path_char) && rest.starts_with('/') {
            for (mount_path, dir) in &self.mounts {
                if let Some(after) = rest.strip_prefix(mount_path.as_str())
                    && ends_path_name(after)
                {
                    return Some((mount_path.len(), dir));
                }
            }
        }
        if !previous.is_some_and(is_address_char) {
            for address in POD_ADDRESSES {
                if let Some(after) = rest.strip_prefix(address)
                    && !after.starts_with(is_address_char)
                {
                    return Some((address.len(), &self.pod_ip));
                }
            }
        }
        None
    }
}

/// `/etc/tern/` → `/etc/tern`.
fn normalize(mount_path: &str) -> String {
    let trimmed = mount_path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Characters of a file name or path; a mount path preceded by one is not at the start of a path.
fn is_path_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-' | '/' | '~')
}

/// After a mount path comes `/`, or something that cannot continue the last file name.
fn ends_path_name(after: &str) -> bool {
    match after.chars().next() {
        None | Some('/') => true,
        Some(ch) => !is_path_char(ch),
    }
}

fn is_address_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || ch == '.'
}

/// Kubernetes' `$(VAR)` expansion in command, args and env values: `$(NAME)` becomes the value of
/// `NAME` when `lookup` knows it and stays as written otherwise; `$$` is a literal `$`.
pub fn expand_vars<'a>(text: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
        {
            let name = &inner[..close];
            match lookup(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewriter() -> PodRewriter {
        PodRewriter::new(
            [
                (
                    "/etc/tern/config".to_owned(),
                    PathBuf::from("/r/ns/p/u/volumes/config"),
                ),
                (
                    "/etc/tern/config/tls/".to_owned(),
                    PathBuf::from("/r/ns/p/u/volumes/tls"),
                ),
                (
                    "/tmp".to_owned(),
                    PathBuf::from("/tmp/r/ns/p/u/volumes/tmp"),
                ),
                ("/data".to_owned(), PathBuf::from("/r/pvc/ns/data-p")),
            ],
            Ipv4Addr::new(127, 77, 0, 2),
        )
    }

    #[test]
    fn args_that_start_with_a_mount_path_are_mapped() {
        let r = rewriter();
        assert_eq!(
            r.rewrite("/etc/tern/config/broker.yaml"),
            "/r/ns/p/u/volumes/config/broker.yaml"
        );
        assert_eq!(r.rewrite("/etc/tern/config"), "/r/ns/p/u/volumes/config");
        assert_eq!(
            r.rewrite("--config=/etc/tern/config/b.yaml"),
            "--config=/r/ns/p/u/volumes/config/b.yaml"
        );
        assert_eq!(
            r.rewrite("/etc/tern/config/tls/tls.crt"),
            "/r/ns/p/u/volumes/tls/tls.crt"
        );
    }

    #[test]
    fn lookalike_paths_are_left_alone() {
        let r = rewriter();
        assert_eq!(
            r.rewrite("/etc/tern/configuration"),
            "/etc/tern/configuration"
        );
        assert_eq!(r.rewrite("/data-old/x"), "/data-old/x");
        assert_eq!(r.rewrite("/var/data/x"), "/var/data/x");
        assert_eq!(r.rewrite("data/x"), "data/x");
        assert_eq!(r.rewrite("/datas"), "/datas");
    }

    #[test]
    fn replacements_are_not_rewritten_again() {
        // the host directory of /tmp itself starts with /tmp
        assert_eq!(
            rewriter().rewrite("/tmp/x /tmp"),
            "/tmp/r/ns/p/u/volumes/tmp/x /tmp/r/ns/p/u/volumes/tmp"
        );
    }

    #[test]
    fn config_files_get_paths_and_bind_addresses_rewritten() {
        let yaml = "listeners:\n  - {name: mqtt, bind: \"0.0.0.0:1883\"}\nhttp:\n  bind: 127.0.0.1:9090\n\
                    auth:\n  users_file: /etc/tern/config/users\n  acl_file: '/data'\n# not 10.0.0.0 nor 127.0.0.10\n";
        let expected = "listeners:\n  - {name: mqtt, bind: \"127.77.0.2:1883\"}\nhttp:\n  bind: 127.77.0.2:9090\n\
                        auth:\n  users_file: /r/ns/p/u/volumes/config/users\n  acl_file: '/r/pvc/ns/data-p'\n\
                        # not 10.0.0.0 nor 127.0.0.10\n";
        assert_eq!(rewriter().rewrite(yaml), expected);
    }

    #[test]
    fn non_ascii_text_survives() {
        assert_eq!(
            rewriter().rewrite("é/data ü0.0.0.0"),
            "é/r/pvc/ns/data-p ü127.77.0.2"
        );
    }

    #[test]
    fn vars_expand_like_kubernetes() {
        let lookup = |name: &str| match name {
            "POD_NAME" => Some("tern-0"),
            "EMPTY" => Some(""),
            _ => None,
        };
        assert_eq!(expand_vars("--id=$(POD_NAME)", lookup), "--id=tern-0");
        assert_eq!(expand_vars("$(MISSING)-$(EMPTY)x", lookup), "$(MISSING)-x");
        assert_eq!(
            expand_vars("$$(POD_NAME) $ $(unclosed", lookup),
            "$(POD_NAME) $ $(unclosed"
        );
    }
}
