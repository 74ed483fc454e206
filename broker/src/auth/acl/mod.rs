//! The ACL file: group definitions and an ordered list of allow/deny rules, and the per-PUBLISH and
//! per-SUBSCRIBE decisions taken from them. Read at start and on reload; consulted by the broker's
//! authorization hook. Pure: no I/O, and evaluation does not allocate.
//!
//! ```text
//! # A comment: the whole line, after optional leading whitespace. No trailing comments
//! # (a topic filter may itself be `#`).
//! group ops = alice bob
//! allow user alice publish sensors/%u/# qos<=1 retain=false
//! deny  client test-* subscribe admin/#
//! allow group ops both ops/#
//! allow all subscribe public/#
//! ```
//!
//! - `group NAME = MEMBER …` names a set of usernames; groups may be defined anywhere in the file,
//!   each once, and may be empty.
//! - `allow|deny WHO ACTION FILTER [OPTION …]`, where WHO is `user NAME`, `group NAME`,
//!   `client PATTERN` (a glob on the client id: `*` any run of characters, `?` one character) or
//!   `all`; ACTION is `publish`, `subscribe` or `both`; FILTER is an MQTT topic filter in which `%u`
//!   and `%c` stand for the client's username and client id; OPTIONs, on allow rules only, are
//!   `qos<=N` (N = 0, 1, 2) and, on rules that cover publishing, `retain=true|false`.
//!
//! Evaluation: rules are tried in file order and the first that applies decides; if none does, the
//! answer is deny. A rule applies when its ACTION covers the request, its WHO matches the client
//! (clients without a username never match `user` or `group`), its placeholders can be substituted
//! (see below), and its FILTER
//!
//! - for a PUBLISH: matches the topic name;
//! - for a SUBSCRIBE and an allow rule: *covers* the requested filter, that is, matches every topic
//!   name the requested filter matches (`a/#` covers `a/b/#` and `a/+`, but `a/+` does not cover
//!   `a/#`);
//! - for a SUBSCRIBE and a deny rule: *overlaps* the requested filter, that is, matches at least one
//!   topic name it matches. So `deny all subscribe a/secret/#` before `allow all subscribe a/#`
//!   refuses a subscription to `a/#` rather than letting it receive `a/secret/…`.
//!
//! An allow rule with options still decides: a PUBLISH above its `qos<=N`, or whose retain flag
//! differs from `retain=`, is denied; a SUBSCRIBE is granted at most QoS N ([`Decision::Allow`]'s
//! `max_qos`).
//!
//! Placeholders: a rule with `%u` does not apply to a client without a username; and a rule does not
//! apply when the value to substitute is empty or contains `/`, `+` or `#` (it would add levels or
//! wildcards to the rule), or when the filter starts with the placeholder and the value starts with
//! `$` (it would reach `$SYS/…`). A `%` followed by anything else is a literal `%`.
//!
//! Subscription filters are checked without their `$share/{ShareName}/` prefix. Topic filters, group
//! names, usernames and patterns cannot contain whitespace.

mod filter;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use crate::codec::QoS;

use self::filter::{RuleFilter, glob_matches};
use super::AclError;

/// The client an ACL question is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The authenticated username, if the client has one.
    pub username: Option<&'a str>,
    /// The client identifier (after the broker assigned one, for clients that sent none).
    pub client_id: &'a str,
}

/// The ACL's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead. For a PUBLISH `max_qos` is the message's QoS; for a SUBSCRIBE it is the QoS to grant:
    /// the requested one, capped by the rule's `qos<=N`.
    Allow {
        /// The highest QoS allowed.
        max_qos: QoS,
    },
    /// Refuse.
    Deny,
}

impl Decision {
    /// Whether this is an [`Decision::Allow`].
    pub fn is_allow(self) -> bool {
        matches!(self, Self::Allow { .. })
    }
}

/// A parsed ACL file.
#[derive(Debug, Clone)]
pub struct AclFile {
    rules: Vec<Rule>,
    groups: Vec<Group>,
}

#[derive(Debug, Clone)]
struct Group {
    name: Box<str>,
    members: HashSet<Box<str>, foldhash::fast::RandomState>,
}

#[derive(Debug, Clone)]
struct Rule {
    line: usize,
    allow: bool,
    who: Who,
    publish: bool,
    subscribe: bool,
    filter: RuleFilter,
    /// `qos<=N`; `ExactlyOnce` when absent.
    max_qos: QoS,
    /// `retain=…`; any when absent.
    retain: Option<bool>,
}

#[derive(Debug, Clone)]
enum Who {
    All,
    User(Box<str>),
    /// An index into [`AclFile::groups`].
    Group(usize),
    Client(Box<str>),
}

impl AclFile {
    /// Parses an ACL file's text. Errors name the line and the offending token.
    pub fn parse(text: &str) -> Result<Self, AclError> {
        let groups = parse_groups(text)?;
        let mut rules = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let mut tokens = raw.split_whitespace();
            let Some(first) = tokens.next().filter(|t| !t.starts_with('#')) else {
                continue;
            };
            let allow = match first {
                "allow" => true,
                "deny" => false,
                "group" => continue,
                _ => {
                    return Err(AclError::UnknownDirective {
                        line: index + 1,
                        token: first.to_owned(),
                    });
                }
            };
            rules.push(parse_rule(index + 1, allow, first, tokens, &groups)?);
        }
        Ok(Self { rules, groups })
    }

    /// Whether `who` may publish to topic name `topic` (assumed valid) at `qos` with `retain`.
    pub fn check_publish(
        &self,
        who: &Subject<'_>,
        topic: &str,
        qos: QoS,
        retain: bool,
    ) -> Decision {
        for rule in self.rules.iter().filter(|r| r.publish) {
            if !self.who_matches(&rule.who, who) {
                continue;
            }
            let Some(values) = rule.filter.values(who) else {
                continue;
            };
            if !rule.filter.matches_topic(topic, values) {
                continue;
            }
            let within = qos <= rule.max_qos && rule.retain.is_none_or(|r| r == retain);
            return if rule.allow && within {
                Decision::Allow { max_qos: qos }
            } else {
                Decision::Deny
            };
        }
        Decision::Deny
    }

    /// Whether `who` may subscribe to topic filter `filter` (assumed valid, without any
    /// `$share/{ShareName}/` prefix) and at what QoS at most, given the requested `qos`.
    pub fn check_subscribe(&self, who: &Subject<'_>, filter: &str, qos: QoS) -> Decision {
        for rule in self.rules.iter().filter(|r| r.subscribe) {
            if !self.who_matches(&rule.who, who) {
                continue;
            }
            let Some(values) = rule.filter.values(who) else {
                continue;
            };
            if !rule.allow {
                if rule.filter.overlaps(filter, values) {
                    return Decision::Deny;
                }
            } else if rule.filter.covers(filter, values) {
                return Decision::Allow {
                    max_qos: qos.min(rule.max_qos),
                };
            }
        }
        Decision::Deny
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the file has no rule (and so denies everything).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn who_matches(&self, rule: &Who, who: &Subject<'_>) -> bool {
        match rule {
            Who::All => true,
            Who::User(name) => who.username == Some(&**name),
            Who::Group(index) => match (who.username, self.groups.get(*index)) {
                (Some(name), Some(group)) => group.members.contains(name),
                _ => false,
            },
            Who::Client(pattern) => glob_matches(pattern, who.client_id),
        }
    }
}

/// First pass: every `group` line, so rules may name groups defined further down.
fn parse_groups(text: &str) -> Result<Vec<Group>, AclError> {
    let mut groups: Vec<Group> = Vec::new();
    let mut first_lines: HashMap<&str, usize, foldhash::fast::RandomState> = HashMap::default();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let mut tokens = raw.split_whitespace();
        if tokens.next() != Some("group") {
            continue;
        }
        let name = tokens.next().ok_or_else(|| AclError::Missing {
            line,
            token: "group".into(),
            expected: "a group name",
        })?;
        if name.contains('=') {
            return Err(AclError::BadGroupLine {
                line,
                token: name.to_owned(),
            });
        }
        match tokens.next() {
            Some("=") => {}
            Some(other) => {
                return Err(AclError::BadGroupLine {
                    line,
                    token: other.to_owned(),
                });
            }
            None => {
                return Err(AclError::Missing {
                    line,
                    token: name.to_owned(),
                    expected: "`=` and the members",
                });
            }
        }
        if let Some(&first) = first_lines.get(name) {
            return Err(AclError::DuplicateGroup {
                line,
                token: name.to_owned(),
                first,
            });
        }
        first_lines.insert(name, line);
        groups.push(Group {
            name: name.into(),
            members: tokens.map(Into::into).collect(),
        });
    }
    Ok(groups)
}

fn parse_rule<'a>(
    line: usize,
    allow: bool,
    effect: &'a str,
    mut tokens: impl Iterator<Item = &'a str>,
    groups: &[Group],
) -> Result<Rule, AclError> {
    let missing = |token: &str, expected| AclError::Missing {
        line,
        token: token.to_owned(),
        expected,
    };
    let kind = tokens
        .next()
        .ok_or_else(|| missing(effect, "who: user, group, client or all"))?;
    let mut last = kind;
    let who = if kind == "all" {
        Who::All
    } else {
        let arg = tokens
            .next()
            .ok_or_else(|| missing(kind, "a name or pattern"))?;
        last = arg;
        match kind {
            "user" => Who::User(arg.into()),
            "client" => Who::Client(arg.into()),
            "group" => {
                Who::Group(groups.iter().position(|g| *g.name == *arg).ok_or_else(|| {
                    AclError::UnknownGroup {
                        line,
                        token: arg.to_owned(),
                    }
                })?)
            }
            _ => {
                return Err(AclError::UnknownSubject {
                    line,
                    token: kind.to_owned(),
                });
            }
        }
    };
    let action = tokens
        .next()
        .ok_or_else(|| missing(last, "publish, subscribe or both"))?;
    let (publish, subscribe) = match action {
        "publish" => (true, false),
        "subscribe" => (false, true),
        "both" => (true, true),
        _ => {
            return Err(AclError::UnknownAction {
                line,
                token: action.to_owned(),
            });
        }
    };
    let filter_text = tokens
        .next()
        .ok_or_else(|| missing(action, "a topic filter"))?;
    let filter = RuleFilter::parse(filter_text).map_err(|source| AclError::InvalidFilter {
        line,
        token: filter_text.to_owned(),
        source,
    })?;
    let mut rule = Rule {
        line,
        allow,
        who,
        publish,
        subscribe,
        filter,
        max_qos: QoS::ExactlyOnce,
        retain: None,
    };
    let mut seen_qos = false;
    for option in tokens {
        parse_option(&mut rule, option, &mut seen_qos)?;
    }
    Ok(rule)
}

fn parse_option(rule: &mut Rule, token: &str, seen_qos: &mut bool) -> Result<(), AclError> {
    let refuse = |reason| AclError::InvalidOption {
        line: rule.line,
        token: token.to_owned(),
        reason,
    };
    if token.starts_with('#') {
        return Err(refuse("a comment must be on a line of its own"));
    }
    if !rule.allow {
        return Err(refuse("options apply only to allow rules"));
    }
    if let Some(n) = token.strip_prefix("qos<=") {
        if std::mem::replace(seen_qos, true) {
            return Err(refuse("qos<= is given twice"));
        }
        rule.max_qos = match n {
            "0" => QoS::AtMostOnce,
            "1" => QoS::AtLeastOnce,
            "2" => QoS::ExactlyOnce,
            _ => return Err(refuse("the QoS must be 0, 1 or 2")),
        };
    } else if let Some(flag) = token.strip_prefix("retain=") {
        if !rule.publish {
            return Err(refuse("retain= applies only to rules that cover publish"));
        }
        if rule.retain.is_some() {
            return Err(refuse("retain= is given twice"));
        }
        rule.retain = Some(match flag {
            "true" => true,
            "false" => false,
            _ => return Err(refuse("retain= must be true or false")),
        });
    } else {
        return Err(refuse("expected qos<=N or retain=true|false"));
    }
    Ok(())
}
