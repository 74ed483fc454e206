//! Topic names, topic filters and shared-subscription names (MQTT 5.0 and 3.1.1 §4.7, 5.0 §4.8.2), and
//! the two routing structures built on them: the subscription [`FilterTrie`] that matches every PUBLISH
//! and the retained-message [`TopicTree`] that a new subscription is matched against.
//!
//! Pure data structures: no locks, no I/O, no sessions. The codec has already checked UTF-8, U+0000 and
//! the 65,535-byte length of every string that arrives here; this module checks what the codec cannot
//! (wildcard placement, share names) and leaves policy limits to [`check_limits`].

mod tree;
mod trie;

#[cfg(test)]
mod tests;

use std::fmt;

use bytestring::ByteString;

pub use tree::TopicTree;
pub use trie::FilterTrie;

/// The topic level separator (§4.7.1.1).
const SEPARATOR: char = '/';
/// The multi-level wildcard (§4.7.1.2).
const MULTI_LEVEL: &str = "#";
/// The single-level wildcard (§4.7.1.3).
const SINGLE_LEVEL: &str = "+";
/// What a shared subscription's filter starts with (5.0 §4.8.2).
const SHARE_PREFIX: &str = "$share/";

/// Why a topic name, topic filter or shared-subscription filter was refused.
///
/// Statement ids are MQTT 5.0's; where MQTT 3.1.1 numbers the same rule differently, both are given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The name or filter is the empty string [MQTT-4.7.3-1].
    #[error("a topic name or topic filter must be at least one character long")]
    Empty,
    /// A topic name contains `+` or `#` [MQTT-3.3.2-2], [MQTT-4.7.0-1] (3.1.1: [MQTT-4.7.1-1]).
    #[error("a topic name must not contain the wildcard characters `+` or `#`")]
    WildcardInName,
    /// `#` is not the whole last level of a filter [MQTT-4.7.1-1] (3.1.1: [MQTT-4.7.1-2]).
    #[error("the multi-level wildcard `#` must be the whole last level of a topic filter")]
    MisplacedMultiLevel,
    /// `+` does not occupy a whole level of a filter [MQTT-4.7.1-2] (3.1.1: [MQTT-4.7.1-3]).
    #[error("the single-level wildcard `+` must occupy a whole level of a topic filter")]
    MisplacedSingleLevel,
    /// Nothing between `$share/` and the next `/` [MQTT-4.8.2-1].
    #[error("a shared subscription needs a ShareName of at least one character after `$share/`")]
    EmptyShareName,
    /// The ShareName contains `/`, `+` or `#` [MQTT-4.8.2-2].
    #[error("a ShareName must not contain `/`, `+` or `#`")]
    InvalidShareName,
    /// The ShareName is not followed by `/` and a non-empty topic filter [MQTT-4.8.2-2].
    #[error("a ShareName must be followed by `/` and a topic filter")]
    EmptySharedFilter,
    /// Longer than the configured limit (the protocol's own limit, 65,535 bytes [MQTT-4.7.3-3], is the
    /// codec's to enforce).
    #[error("the topic is {len} bytes long, more than the limit of {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// More levels than the configured limit.
    #[error("the topic has {levels} levels, more than the limit of {max}")]
    TooManyLevels {
        /// Its number of levels (separators plus one).
        levels: usize,
        /// The configured limit.
        max: usize,
    },
}

impl TopicError {
    /// A short, fixed name for the variant, fit for a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::WildcardInName => "wildcard_in_name",
            Self::MisplacedMultiLevel => "misplaced_multi_level",
            Self::MisplacedSingleLevel => "misplaced_single_level",
            Self::EmptyShareName => "empty_share_name",
            Self::InvalidShareName => "invalid_share_name",
            Self::EmptySharedFilter => "empty_shared_filter",
            Self::TooLong { .. } => "too_long",
            Self::TooManyLevels { .. } => "too_many_levels",
        }
    }
}

/// Validates a PUBLISH topic name: at least one character [MQTT-4.7.3-1] and no wildcard characters
/// [MQTT-3.3.2-2], [MQTT-4.7.0-1] (3.1.1: [MQTT-4.7.1-1]).
///
/// UTF-8, U+0000 [MQTT-4.7.3-2] and the 65,535-byte limit [MQTT-4.7.3-3] are the codec's checks. A name
/// beginning with `$` is valid here; whether a client may publish to it is the authorizer's call.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// An arena of at least this many nodes is compacted once more than half of it is vacant.
const COMPACT_FROM: usize = 1024;

/// The new index of each node of an arena of `len` nodes once the vacant ones (`free`) are dropped
/// and the others keep their order (`usize::MAX` for a vacant one), and how many are left; `None`
/// while compacting is not worth it. The arenas ([`FilterTrie`], [`TopicTree`]) reuse vacant
/// nodes but never give them back on their own, so after a burst of subscriptions or retained
/// messages has gone the memory would stay with the broker for good.
fn compaction(len: usize, free: &[usize]) -> Option<(Vec<usize>, usize)> {
    if len < COMPACT_FROM || free.len() * 2 <= len {
        return None;
    }
    let mut renumbered = vec![0; len];
    for &id in free {
        renumbered[id] = usize::MAX;
    }
    let mut live = 0;
    for slot in &mut renumbered {
        if *slot == 0 {
            *slot = live;
            live += 1;
        }
    }
    Some((renumbered, live))
}

/// Whether a topic name is under `$SYS`, where only the broker itself publishes.
pub fn is_sys(name: &str) -> bool {
    name == "$SYS" || name.starts_with("$SYS/")
}

/// Validates a topic filter without a share prefix: at least one character [MQTT-4.7.3-1], `#` only as
/// the whole last level [MQTT-4.7.1-1] and `+` only as a whole level [MQTT-4.7.1-2]
/// (3.1.1: [MQTT-4.7.1-2] and [MQTT-4.7.1-3]).
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let bytes = filter.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'#' && b != b'+' {
            continue;
        }
        let starts_level = i == 0 || bytes.get(i - 1) == Some(&b'/');
        let next = bytes.get(i + 1);
        if b == b'#' {
            if !starts_level || next.is_some() {
                return Err(TopicError::MisplacedMultiLevel);
            }
        } else if !starts_level || next.is_some_and(|&n| n != b'/') {
            return Err(TopicError::MisplacedSingleLevel);
        }
    }
    Ok(())
}

/// Checks a topic name or filter against configured limits: at most `max_len` bytes and at most
/// `max_levels` levels (an empty level counts: `a//b` has three). Pass `usize::MAX` for "no limit".
///
/// Apply it to every name and filter before it reaches a [`FilterTrie`] or [`TopicTree`]: their
/// operations are iterative, but memory and matching time grow with depth.
pub fn check_limits(s: &str, max_len: usize, max_levels: usize) -> Result<(), TopicError> {
    if s.len() > max_len {
        return Err(TopicError::TooLong {
            len: s.len(),
            max: max_len,
        });
    }
    let levels = s.bytes().filter(|&b| b == b'/').count() + 1;
    if levels > max_levels {
        return Err(TopicError::TooManyLevels {
            levels,
            max: max_levels,
        });
    }
    Ok(())
}

/// A validated topic filter, without any `$share/{ShareName}/` prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter(ByteString);

impl TopicFilter {
    /// Validates `s` as a topic filter (see [`validate_topic_filter`]).
    pub fn parse(s: ByteString) -> Result<Self, TopicError> {
        validate_topic_filter(&s)?;
        Ok(Self(s))
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the filter contains `+` or `#`, that is, may match more than one topic name.
    pub fn has_wildcards(&self) -> bool {
        self.0.bytes().any(|b| b == b'+' || b == b'#')
    }

    /// The filter's levels, in order; empty levels included.
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split(SEPARATOR)
    }

    /// The underlying string, sharing its buffer.
    pub fn into_inner(self) -> ByteString {
        self.0
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `{ShareName}` of a shared subscription `$share/{ShareName}/{filter}`: non-empty [MQTT-4.8.2-1],
/// without `/`, `+` or `#` [MQTT-4.8.2-2].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShareName(ByteString);

impl ShareName {
    /// Validates `s` as a ShareName.
    pub fn parse(s: ByteString) -> Result<Self, TopicError> {
        if s.is_empty() {
            return Err(TopicError::EmptyShareName);
        }
        if s.bytes().any(|b| matches!(b, b'/' | b'+' | b'#')) {
            return Err(TopicError::InvalidShareName);
        }
        Ok(Self(s))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ShareName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShareName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A topic filter from a SUBSCRIBE or UNSUBSCRIBE, with its share group if it named one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriptionFilter {
    /// `Some` for a shared subscription `$share/{ShareName}/{filter}` (MQTT 5.0 §4.8.2).
    pub share: Option<ShareName>,
    /// The filter messages are matched against (without the share prefix).
    pub filter: TopicFilter,
}

impl SubscriptionFilter {
    /// Parses a filter as a client sent it. With `allow_shared`, a filter starting with `$share/` is
    /// a shared subscription: it must carry a ShareName [MQTT-4.8.2-1] followed by `/` and a valid
    /// topic filter [MQTT-4.8.2-2]. Without it, `$share/...` is an ordinary filter. The broker allows
    /// shared subscriptions at every protocol level, as Mosquitto and EMQX do (`docs/behaviour.md`).
    ///
    /// The parts share `s`'s buffer; nothing is copied.
    pub fn parse(s: &ByteString, allow_shared: bool) -> Result<Self, TopicError> {
        let rest = match s.strip_prefix(SHARE_PREFIX) {
            Some(rest) if allow_shared => rest,
            _ => {
                return Ok(Self {
                    share: None,
                    filter: TopicFilter::parse(s.clone())?,
                });
            }
        };
        let Some((name, filter)) = rest.split_once(SEPARATOR) else {
            // `$share/` or `$share/{name}`: a bad or missing name is the first fault to report.
            ShareName::parse(s.slice_ref(rest))?;
            return Err(TopicError::EmptySharedFilter);
        };
        let share = ShareName::parse(s.slice_ref(name))?;
        if filter.is_empty() {
            return Err(TopicError::EmptySharedFilter);
        }
        Ok(Self {
            share: Some(share),
            filter: TopicFilter::parse(s.slice_ref(filter))?,
        })
    }

    /// Whether this is a shared subscription.
    pub fn is_shared(&self) -> bool {
        self.share.is_some()
    }
}

impl fmt::Display for SubscriptionFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.share {
            Some(share) => write!(f, "{SHARE_PREFIX}{share}/{}", self.filter),
            None => f.write_str(self.filter.as_str()),
        }
    }
}

/// Whether `filter` matches `topic` (§4.7): a reference implementation that walks both level by level,
/// for tests and one-off checks; routing uses [`FilterTrie`]. Both arguments are assumed valid.
///
/// `#` matches its parent level and any number of child levels, `+` exactly one level (an empty one
/// too), and a filter whose first level is a wildcard does not match a topic name beginning with `$`
/// [MQTT-4.7.2-1].
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut filter_levels = filter.split(SEPARATOR);
    let mut topic_levels = topic.split(SEPARATOR);
    let mut first = true;
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some(f), Some(t)) if first && t.starts_with('$') && is_wildcard(f) => return false,
            (Some(MULTI_LEVEL), _) => return true,
            (Some(SINGLE_LEVEL), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// Whether a filter level is one of the two wildcards.
fn is_wildcard(level: &str) -> bool {
    level == MULTI_LEVEL || level == SINGLE_LEVEL
}

/// Splits the first level off `s`: `("a", Some("b/c"))` for `"a/b/c"`, `("a", None)` for `"a"`.
fn split_first_level(s: &str) -> (&str, Option<&str>) {
    match s.split_once(SEPARATOR) {
        Some((level, rest)) => (level, Some(rest)),
        None => (s, None),
    }
}
