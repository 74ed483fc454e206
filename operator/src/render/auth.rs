//! The users file and the ACL file, rendered from `MqttUser`s and `MqttAcl`s in the broker's
//! formats (`docs/acl.md`) and checked with the broker's own parsers before they are shipped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use tern_broker::auth::{AclError, AclFile, UsersError, UsersFile};

use crate::crd::{Access, AclRule, Action, MqttAcl};

/// A rendered file the broker's parser refuses: the operator ships neither file then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFileError {
    #[error("the rendered users file does not load: {0}")]
    UsersFile(#[source] UsersError),
    #[error("the rendered ACL file does not load: {0}")]
    AclFile(#[source] AclError),
}

impl AuthFileError {
    /// A bounded label for the reconcile error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UsersFile(_) => "render_users_file",
            Self::AclFile(_) => "render_acl_file",
        }
    }
}

/// A rule of one `MqttAcl` the broker's parser refuses, with the broker's error as its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRule {
    /// The index in `spec.rules`, when the error is on a rule's line.
    pub rule: Option<usize>,
    pub source: AclError,
}

impl fmt::Display for InvalidRule {
    /// `spec.rules[N]: what is wrong`, or the broker's own message when no rule is to blame.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.source.to_string();
        match self.rule {
            Some(rule) => {
                // The broker's message starts with "acl file line N: "; the rule index replaces it.
                let detail = message
                    .split_once(": ")
                    .map_or(message.as_str(), |(_, d)| d);
                write!(f, "spec.rules[{rule}]: {detail}")
            }
            None => f.write_str(&message),
        }
    }
}

impl std::error::Error for InvalidRule {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// One line of the users file, with the groups that user is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub username: String,
    /// A password hash in a format the broker reads (argon2id from the operator).
    pub hash: String,
    pub groups: Vec<String>,
}

/// The users file: one `username:hash` line per user, sorted so the text is stable.
pub fn users_file(users: &[UserEntry]) -> Result<String, AuthFileError> {
    let mut sorted: Vec<&UserEntry> = users.iter().collect();
    sorted.sort_by(|a, b| a.username.cmp(&b.username));
    let mut text =
        String::from("# Rendered by tern-operator from the MqttUsers; edits are overwritten.\n");
    for user in sorted {
        text.push_str(&format!("{}:{}\n", user.username, user.hash));
    }
    UsersFile::parse(&text).map_err(AuthFileError::UsersFile)?;
    Ok(text)
}

/// The ACL lines one `MqttAcl` contributes, in rule order. A rule with several subjects becomes
/// one line per subject, which keeps "first match wins" for each of them.
pub fn acl_lines(acl: &MqttAcl) -> Vec<String> {
    acl.spec.rules.iter().flat_map(rule_lines).collect()
}

fn rule_lines(rule: &AclRule) -> Vec<String> {
    let access = match rule.access {
        Access::Allow => "allow",
        Access::Deny => "deny",
    };
    let action = match rule.action {
        Action::Publish => "publish",
        Action::Subscribe => "subscribe",
        Action::Both => "both",
    };
    let mut options = String::new();
    if let Some(qos) = rule.max_qos {
        options.push_str(&format!(" qos<={qos}"));
    }
    if let Some(retain) = rule.retain {
        options.push_str(&format!(" retain={retain}"));
    }
    let subjects: Vec<String> = if rule.everyone {
        vec!["all".to_owned()]
    } else {
        rule.users
            .iter()
            .map(|u| format!("user {}", u.0))
            .chain(rule.groups.iter().map(|g| format!("group {}", g.0)))
            .chain(rule.client_ids.iter().map(|c| format!("client {}", c.0)))
            .collect()
    };
    subjects
        .into_iter()
        .map(|who| format!("{access} {who} {action} {}{options}", rule.topic))
        .collect()
}

/// The groups an ACL's rules name.
pub fn referenced_groups(acl: &MqttAcl) -> BTreeSet<String> {
    acl.spec
        .rules
        .iter()
        .flat_map(|r| r.groups.iter().map(|g| g.0.clone()))
        .collect()
}

/// Checks one `MqttAcl` on its own with the broker's parser; returns its line count, or the
/// broker's error with the rule it came from.
pub fn validate_acl(acl: &MqttAcl) -> Result<usize, InvalidRule> {
    let mut text = String::new();
    for group in referenced_groups(acl) {
        text.push_str(&format!("group {group} =\n"));
    }
    let declared = text.lines().count();
    let mut origin = Vec::new();
    for (index, rule) in acl.spec.rules.iter().enumerate() {
        for line in rule_lines(rule) {
            text.push_str(&line);
            text.push('\n');
            origin.push(index);
        }
    }
    AclFile::parse(&text)
        .map(|_| origin.len())
        .map_err(|source| InvalidRule {
            rule: source
                .line()
                .checked_sub(declared + 1)
                .and_then(|i| origin.get(i))
                .copied(),
            source,
        })
}

/// The whole ACL file: group definitions from the users, then each `MqttAcl`'s lines in order
/// (`spec.order`, then name). With no `MqttAcl` at all every client may do anything, as a
/// broker without an ACL file does; once one exists, what no rule allows is denied.
pub fn acl_file(users: &[UserEntry], acls: &[&MqttAcl]) -> Result<String, AuthFileError> {
    let mut groups: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for user in users {
        for group in &user.groups {
            groups
                .entry(group.clone())
                .or_default()
                .insert(&user.username);
        }
    }
    for acl in acls {
        for group in referenced_groups(acl) {
            groups.entry(group).or_default();
        }
    }
    let mut text =
        String::from("# Rendered by tern-operator from the MqttAcls; edits are overwritten.\n");
    for (group, members) in &groups {
        let members: Vec<&str> = members.iter().copied().collect();
        text.push_str(format!("group {group} = {}\n", members.join(" ")).trim_end());
        text.push('\n');
    }
    let mut ordered: Vec<&&MqttAcl> = acls.iter().collect();
    ordered.sort_by_key(|a| (a.spec.order, a.metadata.name.clone()));
    if ordered.is_empty() {
        text.push_str("# No MqttAcl for this cluster: everything is allowed.\nallow all both #\n");
    }
    for acl in ordered {
        text.push_str(&format!(
            "# MqttAcl {}\n",
            acl.metadata.name.as_deref().unwrap_or_default()
        ));
        for line in acl_lines(acl) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    AclFile::parse(&text).map_err(AuthFileError::AclFile)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_broker::QoS;
    use tern_broker::auth::{Decision, Subject};

    fn acl(yaml: &str) -> MqttAcl {
        serde_yaml::from_str(yaml).unwrap()
    }

    const SENSORS: &str = r#"
apiVersion: tern.dev/v1alpha1
kind: MqttAcl
metadata: {name: sensors}
spec:
  clusterRef: {name: demo}
  rules:
    - {access: allow, action: publish, topic: "sensors/%u/#", groups: [sensors], maxQos: 1, retain: false}
    - {access: deny, action: subscribe, topic: "admin/#", clientIds: ["test-*"], users: [mallory]}
    - {access: allow, action: subscribe, topic: "public/#", everyone: true}
"#;

    fn user(name: &str, groups: &[&str]) -> UserEntry {
        UserEntry {
            username: name.into(),
            hash: tern_broker::auth::hash_new(b"pw").unwrap(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn rules_render_one_line_per_subject_in_order() {
        assert_eq!(
            acl_lines(&acl(SENSORS)),
            vec![
                "allow group sensors publish sensors/%u/# qos<=1 retain=false",
                "deny user mallory subscribe admin/#",
                "deny client test-* subscribe admin/#",
                "allow all subscribe public/#",
            ]
        );
    }

    #[test]
    fn the_rendered_file_enforces_groups_from_users() {
        let users = [user("alice", &["sensors"]), user("bob", &[])];
        let text = acl_file(&users, &[&acl(SENSORS)]).unwrap();
        let parsed = AclFile::parse(&text).unwrap();
        let alice = Subject {
            username: Some("alice"),
            client_id: "c1",
        };
        let bob = Subject {
            username: Some("bob"),
            client_id: "c2",
        };
        assert!(
            parsed
                .check_publish(&alice, "sensors/alice/t", QoS::AtLeastOnce, false)
                .is_allow()
        );
        assert!(
            !parsed
                .check_publish(&alice, "sensors/alice/t", QoS::ExactlyOnce, false)
                .is_allow()
        );
        assert!(
            !parsed
                .check_publish(&bob, "sensors/bob/t", QoS::AtMostOnce, false)
                .is_allow()
        );
        assert!(matches!(
            parsed.check_subscribe(&bob, "public/news", QoS::AtMostOnce),
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn no_acl_allows_everything_and_a_group_without_members_is_declared() {
        let text = acl_file(&[], &[]).unwrap();
        let parsed = AclFile::parse(&text).unwrap();
        let anyone = Subject {
            username: None,
            client_id: "x",
        };
        assert!(
            parsed
                .check_publish(&anyone, "a/b", QoS::ExactlyOnce, true)
                .is_allow()
        );
        // `sensors` has no members but is referenced: the file still loads.
        acl_file(&[user("bob", &[])], &[&acl(SENSORS)]).unwrap();
    }

    #[test]
    fn acls_are_ordered_by_order_then_name() {
        let mut first = acl(SENSORS);
        first.metadata.name = Some("zz".into());
        first.spec.order = -1;
        let second = acl(SENSORS);
        let text = acl_file(&[], &[&second, &first]).unwrap();
        assert!(text.find("# MqttAcl zz").unwrap() < text.find("# MqttAcl sensors").unwrap());
    }

    #[test]
    fn an_invalid_topic_filter_names_the_rule() {
        let bad = acl(r#"
apiVersion: tern.dev/v1alpha1
kind: MqttAcl
metadata: {name: bad}
spec:
  clusterRef: {name: demo}
  rules:
    - {access: allow, action: subscribe, topic: "ok/#", everyone: true}
    - {access: allow, action: subscribe, topic: "a/#/b", everyone: true}
"#);
        let err = validate_acl(&bad).unwrap_err();
        assert_eq!(err.rule, Some(1));
        let message = err.to_string();
        assert!(message.starts_with("spec.rules[1]: "), "{message}");
        assert!(!message.contains("acl file line"), "{message}");
        assert_eq!(validate_acl(&acl(SENSORS)).unwrap(), 4);
    }

    #[test]
    fn users_are_sorted_and_checked() {
        let text = users_file(&[user("zed", &[]), user("amy", &[])]).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(lines[0].starts_with("amy:") && lines[1].starts_with("zed:"));
        let duplicate = users_file(&[user("amy", &[]), user("amy", &[])]).unwrap_err();
        assert!(matches!(
            duplicate,
            AuthFileError::UsersFile(UsersError::DuplicateUser { .. })
        ));
        assert_eq!(duplicate.kind(), "render_users_file");
    }
}
