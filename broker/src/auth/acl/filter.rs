//! An ACL rule's topic filter, split into levels when the file is read, and the three questions the
//! ACL asks of it: does it match a topic name (PUBLISH), does it cover a whole subscription filter
//! (an allow rule for SUBSCRIBE), and could it match any topic a subscription filter matches (a deny
//! rule for SUBSCRIBE). None of them allocates.
//!
//! Matching follows `crate::topic::matches` (§4.7): `+` is one level, `#` the parent level and any
//! below it, and a filter whose first level is a wildcard does not match a topic starting with `$`.
//! `%u` and `%c` inside a level stand for the client's username and client id; [`RuleFilter::values`]
//! refuses values that would let a substitution widen the rule.

use crate::topic::{TopicError, validate_topic_filter};

use super::Subject;

const USERNAME: &str = "%u";
const CLIENT_ID: &str = "%c";

/// A rule's topic filter, as written and split into levels.
#[derive(Debug, Clone)]
pub(super) struct RuleFilter {
    levels: Box<[Level]>,
    uses_username: bool,
    uses_client_id: bool,
    /// The filter starts with a placeholder, so a value starting with `$` would move the rule into
    /// the `$`-topics (`$SYS/…`) that a leading wildcard cannot reach.
    leading_placeholder: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// `#`
    Multi,
    /// `+`
    Single,
    /// A level without wildcards or placeholders.
    Exact(Box<str>),
    /// A level with `%u` or `%c` in it: its pieces, in order.
    Template(Box<[Piece]>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Box<str>),
    Username,
    ClientId,
}

/// The substitution values for one evaluation, already checked (see [`RuleFilter::values`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Values<'a> {
    username: &'a str,
    client_id: &'a str,
}

impl RuleFilter {
    /// Parses a rule filter. It must be a valid topic filter once each placeholder is read as a plain
    /// character; any `%` not followed by `u` or `c` is a literal `%`.
    pub(super) fn parse(text: &str) -> Result<Self, TopicError> {
        validate_topic_filter(&text.replace(USERNAME, "u").replace(CLIENT_ID, "c"))?;
        let levels: Box<[Level]> = text.split('/').map(parse_level).collect();
        Ok(Self {
            uses_username: text.contains(USERNAME),
            uses_client_id: text.contains(CLIENT_ID),
            leading_placeholder: text.starts_with(USERNAME) || text.starts_with(CLIENT_ID),
            levels,
        })
    }

    /// The values to substitute for this subject, or `None` when the rule cannot apply to it: it uses
    /// `%u` and the client has no username, or a value is empty or contains `/`, `+` or `#` (which
    /// would add levels or wildcards to the rule), or the filter starts with a placeholder and the
    /// value starts with `$`.
    pub(super) fn values<'a>(&self, who: &Subject<'a>) -> Option<Values<'a>> {
        let username = if self.uses_username {
            let name = who.username?;
            self.acceptable(name).then_some(name)?
        } else {
            ""
        };
        let client_id = if self.uses_client_id {
            self.acceptable(who.client_id).then_some(who.client_id)?
        } else {
            ""
        };
        Some(Values {
            username,
            client_id,
        })
    }

    fn acceptable(&self, value: &str) -> bool {
        let widens = value.is_empty()
            || value.contains(['/', '+', '#'])
            || (self.leading_placeholder && value.starts_with('$'));
        !widens
    }

    /// Whether the filter matches topic name `topic` (assumed valid).
    pub(super) fn matches_topic(&self, topic: &str, values: Values<'_>) -> bool {
        let mut topic_levels = topic.split('/');
        for (i, level) in self.levels.iter().enumerate() {
            if *level == Level::Multi {
                return !(i == 0 && topic.starts_with('$'));
            }
            let Some(t) = topic_levels.next() else {
                return false;
            };
            let fits = match level {
                Level::Single => !(i == 0 && t.starts_with('$')),
                Level::Multi => true,
                Level::Exact(s) => **s == *t,
                Level::Template(pieces) => template_matches(pieces, t, values),
            };
            if !fits {
                return false;
            }
        }
        topic_levels.next().is_none()
    }

    /// Whether every topic name that subscription filter `filter` (assumed valid, without any
    /// `$share/` prefix) matches is also matched by this filter.
    pub(super) fn covers(&self, filter: &str, values: Values<'_>) -> bool {
        let mut sub_levels = filter.split('/').peekable();
        for (i, rule) in self.levels.iter().enumerate() {
            if *rule == Level::Multi {
                // `#` takes whatever the subscription has left, except `$`-topics at the first level.
                return !(i == 0 && sub_levels.peek().is_some_and(|f| f.starts_with('$')));
            }
            let Some(sub) = sub_levels.next() else {
                // The subscription matches a topic that ends here; the rule needs more levels.
                return false;
            };
            let covered = match (sub, rule) {
                // `…/#` also matches its parent, which only a rule `#` here matches; the one other
                // exception is a whole-filter `#`, whose topics have at least one level and so are
                // matched by `+/#` too.
                ("#", _) => return i == 0 && matches!(*self.levels, [Level::Single, Level::Multi]),
                ("+", Level::Single) => true,
                ("+", _) => false,
                (sub, Level::Single) => !(i == 0 && sub.starts_with('$')),
                (sub, Level::Exact(s)) => **s == *sub,
                (sub, Level::Template(pieces)) => template_matches(pieces, sub, values),
                (_, Level::Multi) => true,
            };
            if !covered {
                return false;
            }
        }
        sub_levels.next().is_none()
    }

    /// Whether some topic name is matched both by this filter and by subscription filter `filter`
    /// (assumed valid, without any `$share/` prefix).
    pub(super) fn overlaps(&self, filter: &str, values: Values<'_>) -> bool {
        let mut sub_levels = filter.split('/');
        let mut rule_levels = self.levels.iter();
        let mut i = 0;
        loop {
            let (sub, rule) = match (sub_levels.next(), rule_levels.next()) {
                (None, None) => return true,
                // One side ends where the other has only `#` left, which also matches the parent.
                (None, Some(rule)) => return *rule == Level::Multi,
                (Some(sub), None) => return sub == "#",
                (Some(sub), Some(rule)) => (sub, rule),
            };
            let sub_wild = sub == "#" || sub == "+";
            let rule_wild = matches!(rule, Level::Multi | Level::Single);
            // At the first level a wildcard never meets a `$` topic.
            if i == 0
                && (sub_wild && rule_starts_with_dollar(rule) || rule_wild && sub.starts_with('$'))
            {
                return false;
            }
            if sub == "#" || *rule == Level::Multi {
                return true;
            }
            let compatible = match rule {
                _ if sub == "+" => true,
                Level::Single | Level::Multi => true,
                Level::Exact(s) => **s == *sub,
                Level::Template(pieces) => template_matches(pieces, sub, values),
            };
            if !compatible {
                return false;
            }
            i += 1;
        }
    }
}

/// Whether a non-wildcard rule level can only match levels starting with `$`.
fn rule_starts_with_dollar(level: &Level) -> bool {
    match level {
        Level::Exact(s) => s.starts_with('$'),
        Level::Template(pieces) => {
            matches!(pieces.first(), Some(Piece::Text(t)) if t.starts_with('$'))
        }
        Level::Single | Level::Multi => false,
    }
}

fn parse_level(level: &str) -> Level {
    match level {
        "#" => Level::Multi,
        "+" => Level::Single,
        _ if !level.contains(USERNAME) && !level.contains(CLIENT_ID) => Level::Exact(level.into()),
        _ => Level::Template(split_template(level).into()),
    }
}

/// Splits `a%ub%c` into `a`, username, `b`, client id.
fn split_template(level: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = level.chars().peekable();
    while let Some(c) = chars.next() {
        let placeholder = match (c, chars.peek()) {
            ('%', Some('u')) => Piece::Username,
            ('%', Some('c')) => Piece::ClientId,
            _ => {
                text.push(c);
                continue;
            }
        };
        chars.next();
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text).into()));
        }
        pieces.push(placeholder);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text.into()));
    }
    pieces
}

/// Whether topic level `level` equals the template with `values` substituted.
fn template_matches(pieces: &[Piece], level: &str, values: Values<'_>) -> bool {
    let mut rest = level;
    for piece in pieces {
        let expected = match piece {
            Piece::Text(t) => t,
            Piece::Username => values.username,
            Piece::ClientId => values.client_id,
        };
        match rest.strip_prefix(expected) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether `text` matches glob `pattern`: `*` any run of characters (an empty one too), `?` exactly
/// one character, anything else itself. No escapes. Linear space, no allocation.
pub(super) fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: the pattern index after it and the text index it reached.
    let mut backtrack: Option<(usize, usize)> = None;
    while let Some(&tb) = t.get(ti) {
        match p.get(pi) {
            Some(b'*') => {
                pi += 1;
                backtrack = Some((pi, ti));
                continue;
            }
            Some(b'?') => {
                pi += 1;
                ti += utf8_len(tb);
                continue;
            }
            Some(&pb) if pb == tb => {
                pi += 1;
                ti += 1;
                continue;
            }
            _ => {}
        }
        let Some((star_p, star_t)) = backtrack else {
            return false;
        };
        let next = star_t + t.get(star_t).map_or(1, |&b| utf8_len(b));
        backtrack = Some((star_p, next));
        pi = star_p;
        ti = next;
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
}

/// The length of the UTF-8 sequence that starts with `lead`.
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_into_text_and_placeholders() {
        assert_eq!(
            split_template("a%ub%c%"),
            vec![
                Piece::Text("a".into()),
                Piece::Username,
                Piece::Text("b".into()),
                Piece::ClientId,
                Piece::Text("%".into()),
            ]
        );
        assert_eq!(
            split_template("%u%c"),
            vec![Piece::Username, Piece::ClientId]
        );
        assert_eq!(parse_level("100%x"), Level::Exact("100%x".into()));
    }

    #[test]
    fn glob_star_and_question_mark() {
        for (pattern, text, expected) in [
            ("test-*", "test-1", true),
            ("test-*", "test-", true),
            ("test-*", "tes", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            ("*-*-x", "a-b-c-x", true),
            ("*-*-x", "a-b-c-y", false),
            ("*é*", "caféine", true),
            ("?", "é", true),
            ("??", "é", false),
            ("a**b", "ab", true),
        ] {
            assert_eq!(
                glob_matches(pattern, text),
                expected,
                "{pattern:?} {text:?}"
            );
        }
    }
}
