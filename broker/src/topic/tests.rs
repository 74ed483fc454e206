//! Tests for topic validation, shared-subscription parsing, the reference matcher, the subscription
//! trie and the retained tree. Statement ids are MQTT 5.0's unless marked 3.1.1.

#![allow(
    clippy::expect_used,
    reason = "a test should stop at the first broken assumption"
)]

use std::collections::{BTreeMap, BTreeSet};

use bytestring::ByteString;
use proptest::prelude::*;

use super::*;

fn filter(s: &str) -> TopicFilter {
    TopicFilter::parse(ByteString::from(s)).expect("test filter is valid")
}

fn subscription(s: &str, allow_shared: bool) -> Result<SubscriptionFilter, TopicError> {
    SubscriptionFilter::parse(&ByteString::from(s), allow_shared)
}

/// A trie holding each filter's own text as its data.
fn trie_of(filters: &[&str]) -> FilterTrie<String> {
    let mut trie = FilterTrie::new();
    for f in filters {
        *trie.entry_or_default(&filter(f)) = (*f).to_owned();
    }
    trie
}

fn trie_matches(trie: &FilterTrie<String>, topic: &str) -> Vec<String> {
    let mut found = Vec::new();
    trie.for_each_match(topic, |f| found.push(f.clone()));
    found.sort();
    found
}

/// A tree holding each topic's own text as its value.
fn tree_of(topics: &[&str]) -> TopicTree<String> {
    let mut tree = TopicTree::new();
    for t in topics {
        tree.insert(t, (*t).to_owned());
    }
    tree
}

fn tree_matches(tree: &TopicTree<String>, f: &str) -> Vec<String> {
    let mut found = Vec::new();
    tree.for_each_match(&filter(f), |topic, value| {
        assert_eq!(topic, value, "reported topic is the stored one");
        found.push(topic.to_owned());
    });
    found.sort();
    found
}

/// Checks `matches`, the trie and the tree against each other for one pair.
fn assert_match(f: &str, topic: &str, expected: bool) {
    assert_eq!(matches(f, topic), expected, "matches({f:?}, {topic:?})");
    let in_trie = !trie_matches(&trie_of(&[f]), topic).is_empty();
    assert_eq!(in_trie, expected, "trie: {f:?} against {topic:?}");
    let in_tree = !tree_matches(&tree_of(&[topic]), f).is_empty();
    assert_eq!(in_tree, expected, "tree: {f:?} against {topic:?}");
}

// ---- topic names -------------------------------------------------------------------------------

#[test]
fn mqtt_4_7_3_1_topic_name_must_not_be_empty() {
    assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
}

#[test]
fn mqtt_3_3_2_2_and_4_7_0_1_topic_name_must_not_contain_wildcards() {
    // 3.1.1 numbers the §4.7 statement [MQTT-4.7.1-1].
    for name in [
        "#",
        "+",
        "a/#",
        "a/+",
        "a/+/b",
        "a+",
        "a#b",
        "sport/tennis#",
    ] {
        assert_eq!(
            validate_topic_name(name),
            Err(TopicError::WildcardInName),
            "{name}"
        );
    }
}

#[test]
fn topic_names_may_have_empty_levels_spaces_and_a_leading_dollar() {
    // §4.7.3: "/" alone, leading and trailing "/" and spaces are all valid.
    for name in [
        "/",
        "//",
        "/finance",
        "finance/",
        "a//b",
        " ",
        "a b/c",
        "$SYS/broker",
        "$",
        "ü/€",
    ] {
        assert_eq!(validate_topic_name(name), Ok(()), "{name:?}");
    }
}

// ---- topic filters -----------------------------------------------------------------------------

#[test]
fn mqtt_4_7_3_1_topic_filter_must_not_be_empty() {
    assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
    assert_eq!(
        TopicFilter::parse(ByteString::new()),
        Err(TopicError::Empty)
    );
}

#[test]
fn mqtt_4_7_1_1_multi_level_wildcard_is_the_whole_last_level() {
    // 3.1.1: [MQTT-4.7.1-2].
    for ok in [
        "#",
        "sport/#",
        "sport/tennis/player1/#",
        "/#",
        "+/#",
        "//#",
        "$SYS/#",
    ] {
        assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
    }
    for bad in [
        "sport/tennis#",
        "sport/tennis/#/ranking",
        "#/",
        "##",
        "a/#/",
        "#a",
        "a/b#",
    ] {
        assert_eq!(
            validate_topic_filter(bad),
            Err(TopicError::MisplacedMultiLevel),
            "{bad}"
        );
    }
}

#[test]
fn mqtt_4_7_1_2_single_level_wildcard_occupies_a_whole_level() {
    // 3.1.1: [MQTT-4.7.1-3].
    for ok in [
        "+",
        "+/tennis/#",
        "sport/+/player1",
        "+/+",
        "/+",
        "+/",
        "a/+/+/b",
    ] {
        assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
    }
    for bad in [
        "sport+",
        "+sport",
        "sport/+tennis",
        "sport/te+nnis",
        "++",
        "a/++/b",
        "+a/b",
        "+#",
    ] {
        assert_eq!(
            validate_topic_filter(bad),
            Err(TopicError::MisplacedSingleLevel),
            "{bad}"
        );
    }
}

#[test]
fn topic_filter_accessors() {
    let f = filter("sport/+/player1");
    assert_eq!(f.as_str(), "sport/+/player1");
    assert_eq!(f.to_string(), "sport/+/player1");
    assert!(f.has_wildcards());
    assert!(filter("a/#").has_wildcards());
    assert!(!filter("a//b").has_wildcards());
    assert_eq!(
        filter("/a//").levels().collect::<Vec<_>>(),
        ["", "a", "", ""]
    );
    assert_eq!(f.clone().into_inner(), "sport/+/player1");
}

#[test]
fn check_limits_counts_bytes_and_levels_including_empty_ones() {
    assert_eq!(check_limits("a/b/c", 5, 3), Ok(()));
    assert_eq!(
        check_limits("a/b/c", 4, 3),
        Err(TopicError::TooLong { len: 5, max: 4 })
    );
    assert_eq!(
        check_limits("a//b", 10, 2),
        Err(TopicError::TooManyLevels { levels: 3, max: 2 })
    );
    assert_eq!(
        check_limits("/", 10, 1),
        Err(TopicError::TooManyLevels { levels: 2, max: 1 })
    );
    assert_eq!(check_limits("€", 3, 1), Ok(()));
    assert_eq!(
        check_limits("€", 2, 1),
        Err(TopicError::TooLong { len: 3, max: 2 })
    );
}

#[test]
fn error_kinds_are_distinct_labels() {
    let all = [
        TopicError::Empty,
        TopicError::WildcardInName,
        TopicError::MisplacedMultiLevel,
        TopicError::MisplacedSingleLevel,
        TopicError::EmptyShareName,
        TopicError::InvalidShareName,
        TopicError::EmptySharedFilter,
        TopicError::TooLong { len: 2, max: 1 },
        TopicError::TooManyLevels { levels: 2, max: 1 },
    ];
    let kinds: BTreeSet<_> = all.iter().map(TopicError::kind).collect();
    assert_eq!(kinds.len(), all.len());
    assert_eq!(
        TopicError::TooLong { len: 70, max: 64 }.to_string(),
        "the topic is 70 bytes long, more than the limit of 64"
    );
}

// ---- shared subscriptions (MQTT 5.0 §4.8.2) -----------------------------------------------------

#[test]
fn shared_subscription_splits_share_name_and_filter() {
    let sub = subscription("$share/consumer1/sport/tennis/+", true).expect("valid");
    assert_eq!(sub.share.as_ref().map(ShareName::as_str), Some("consumer1"));
    assert_eq!(sub.filter.as_str(), "sport/tennis/+");
    assert!(sub.is_shared());
    assert_eq!(sub.to_string(), "$share/consumer1/sport/tennis/+");

    let sub = subscription("$share/consumer2//finance", true).expect("valid");
    assert_eq!(
        sub.filter.as_str(),
        "/finance",
        "the filter keeps its empty first level"
    );
    let sub = subscription("$share/g/#", true).expect("valid");
    assert_eq!(sub.filter.as_str(), "#");
}

#[test]
fn mqtt_4_8_2_1_share_name_must_be_at_least_one_character() {
    assert_eq!(
        subscription("$share/", true),
        Err(TopicError::EmptyShareName)
    );
    assert_eq!(
        subscription("$share//a", true),
        Err(TopicError::EmptyShareName)
    );
    assert_eq!(
        subscription("$share//", true),
        Err(TopicError::EmptyShareName)
    );
}

#[test]
fn mqtt_4_8_2_2_share_name_must_not_contain_wildcards_or_separator() {
    for bad in [
        "$share/+/a",
        "$share/#/a",
        "$share/g+/a",
        "$share/g#/a",
        "$share/+",
        "$share/#",
    ] {
        assert_eq!(
            subscription(bad, true),
            Err(TopicError::InvalidShareName),
            "{bad}"
        );
    }
    assert_eq!(
        ShareName::parse(ByteString::from("a/b")),
        Err(TopicError::InvalidShareName)
    );
    assert_eq!(
        ShareName::parse(ByteString::new()),
        Err(TopicError::EmptyShareName)
    );
}

#[test]
fn mqtt_4_8_2_2_share_name_must_be_followed_by_slash_and_a_filter() {
    assert_eq!(
        subscription("$share/g", true),
        Err(TopicError::EmptySharedFilter)
    );
    assert_eq!(
        subscription("$share/g/", true),
        Err(TopicError::EmptySharedFilter)
    );
}

#[test]
fn shared_subscription_filter_must_itself_be_valid() {
    assert_eq!(
        subscription("$share/g/a+", true),
        Err(TopicError::MisplacedSingleLevel)
    );
    assert_eq!(
        subscription("$share/g/#/a", true),
        Err(TopicError::MisplacedMultiLevel)
    );
}

#[test]
fn without_shared_subscriptions_share_prefix_is_an_ordinary_filter() {
    // MQTT 3.x has no shared subscriptions: "$share/..." is a filter like any other.
    let sub = subscription("$share/g/a", false).expect("valid");
    assert_eq!(sub.share, None);
    assert_eq!(sub.filter.as_str(), "$share/g/a");
    assert_eq!(
        subscription("$share/", false).map(|s| s.filter),
        Ok(filter("$share/"))
    );
    assert_eq!(subscription("$share/+/a", false).map(|s| s.share), Ok(None));
    assert_eq!(
        subscription("$share/g/a+", false),
        Err(TopicError::MisplacedSingleLevel)
    );
}

#[test]
fn prefix_must_be_exactly_share_slash() {
    for s in ["$share", "$Share/g/a", "$sharex/g/a", "share/g/a"] {
        assert_eq!(subscription(s, true).map(|s| s.share), Ok(None), "{s}");
    }
    assert_eq!(subscription("", true), Err(TopicError::Empty));
}

// ---- matching: the specification's examples, through all three matchers ------------------------

#[test]
fn spec_4_7_1_2_multi_level_wildcard_examples() {
    for topic in [
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
    ] {
        assert_match("sport/tennis/player1/#", topic, true);
    }
    // "sport/#" also matches the singular "sport", since # includes the parent level.
    assert_match("sport/#", "sport", true);
    assert_match("sport/#", "sport/", true);
    assert_match("sport/#", "sports", false);
    assert_match("sport/tennis/player1/#", "sport/tennis/player2", false);
    // "#" matches every topic name (that does not begin with '$').
    assert_match("#", "sport/tennis", true);
    assert_match("#", "/", true);
}

#[test]
fn spec_4_7_1_3_single_level_wildcard_examples() {
    assert_match("sport/tennis/+", "sport/tennis/player1", true);
    assert_match("sport/tennis/+", "sport/tennis/player2", true);
    assert_match("sport/tennis/+", "sport/tennis/player1/ranking", false);
    // "sport/+" does not match "sport" but it does match "sport/".
    assert_match("sport/+", "sport", false);
    assert_match("sport/+", "sport/", true);
    // "+/+" and "/+" match "/finance"; "+" does not.
    assert_match("+/+", "/finance", true);
    assert_match("/+", "/finance", true);
    assert_match("+", "/finance", false);
    assert_match("+/tennis/#", "sport/tennis/player1", true);
    assert_match("sport/+/player1", "sport/tennis/player1", true);
}

#[test]
fn mqtt_4_7_2_1_first_level_wildcards_do_not_match_dollar_topics() {
    // "#" does not receive "$SYS/..."; "+/monitor/Clients" does not receive "$SYS/monitor/Clients".
    assert_match("#", "$SYS/monitor/Clients", false);
    assert_match("+/monitor/Clients", "$SYS/monitor/Clients", false);
    assert_match("+", "$SYS", false);
    assert_match("+/#", "$SYS/a", false);
    // "$SYS/#" and "$SYS/monitor/+" do.
    assert_match("$SYS/#", "$SYS/monitor/Clients", true);
    assert_match("$SYS/#", "$SYS", true);
    assert_match("$SYS/monitor/+", "$SYS/monitor/Clients", true);
    // The rule is about the first level only.
    assert_match("a/+", "a/$b", true);
    assert_match("a/#", "a/$b/c", true);
    assert_match("+/$b", "a/$b", true);
}

#[test]
fn mqtt_4_7_3_4_levels_compare_exactly_without_normalisation() {
    assert_match("Sport", "sport", false);
    assert_match("a/b", "a/b/", false);
    assert_match("a/b", "/a/b", false);
    assert_match("a//b", "a//b", true);
    assert_match("a/+/b", "a//b", true);
    assert_match("a/b ", "a/b", false);
    assert_match("caf\u{e9}", "cafe\u{301}", false);
}

// ---- FilterTrie --------------------------------------------------------------------------------

#[test]
fn trie_reports_every_matching_filter_once() {
    let trie = trie_of(&[
        "#",
        "sport/#",
        "sport/+",
        "sport/tennis",
        "sport/tennis/#",
        "+/tennis",
        "+/+",
        "sport/tennis/+",
        "$SYS/#",
    ]);
    assert_eq!(trie.len(), 9);
    assert_eq!(
        trie_matches(&trie, "sport/tennis"),
        [
            "#",
            "+/+",
            "+/tennis",
            "sport/#",
            "sport/+",
            "sport/tennis",
            "sport/tennis/#"
        ]
    );
    assert_eq!(trie_matches(&trie, "sport"), ["#", "sport/#"]);
    assert_eq!(trie_matches(&trie, "$SYS/load"), ["$SYS/#"]);
    assert_eq!(trie_matches(&trie, "news"), ["#"]);
}

#[test]
fn trie_get_entry_and_remove_if() {
    let mut trie: FilterTrie<Vec<u32>> = FilterTrie::new();
    assert!(trie.is_empty());
    trie.entry_or_default(&filter("a/+/c")).push(1);
    trie.entry_or_default(&filter("a/+/c")).push(2);
    trie.entry_or_default(&filter("a/#")).push(3);
    assert_eq!(trie.len(), 2);
    assert_eq!(trie.get(&filter("a/+/c")), Some(&vec![1, 2]));
    assert_eq!(
        trie.get(&filter("a/b/c")),
        None,
        "get is exact, not a match"
    );
    assert_eq!(trie.get(&filter("a/+")), None, "a path node without data");
    if let Some(v) = trie.get_mut(&filter("a/#")) {
        v.clear();
    }
    assert!(
        !trie.remove_if(&filter("a/+/c"), Vec::is_empty),
        "still holds data"
    );
    assert!(
        !trie.remove_if(&filter("x/y"), Vec::is_empty),
        "never stored"
    );
    assert!(trie.remove_if(&filter("a/#"), Vec::is_empty));
    assert!(!trie.remove_if(&filter("a/#"), |_| true), "already gone");
    assert_eq!(trie.len(), 1);
    assert_eq!(trie.live_nodes(), 4, "root, a, +, c");
    assert!(trie.remove_if(&filter("a/+/c"), |_| true));
    assert!(trie.is_empty());
    assert_eq!(trie.live_nodes(), 1, "pruned back to the root");
}

#[test]
fn trie_prunes_only_what_leads_nowhere() {
    let mut trie = trie_of(&["a/b/c", "a/b", "a/+/#", "#", "+"]);
    let before = trie.live_nodes();
    assert!(trie.remove_if(&filter("a/b/c"), |_| true));
    assert_eq!(
        trie.live_nodes(),
        before - 1,
        "only c goes; a/b still holds data"
    );
    assert!(trie.remove_if(&filter("a/b"), |_| true));
    assert!(trie.remove_if(&filter("#"), |_| true));
    assert_eq!(trie_matches(&trie, "a/x/y"), ["a/+/#"]);
    assert_eq!(trie_matches(&trie, "a"), ["+"]);
    assert!(trie.remove_if(&filter("a/+/#"), |_| true));
    assert!(trie.remove_if(&filter("+"), |_| true));
    assert_eq!(trie.live_nodes(), 1);
    // Freed nodes are reused.
    *trie.entry_or_default(&filter("x/y/z")) = "x/y/z".to_owned();
    assert_eq!(trie.live_nodes(), 4);
    assert_eq!(trie_matches(&trie, "x/y/z"), ["x/y/z"]);
}

/// After a burst of subscriptions has gone, the arena gives its nodes back rather than keeping
/// them for reuse, and the filters left (literal, `+` and `#` ones) match as before.
#[test]
fn trie_gives_back_the_nodes_of_removed_filters() {
    let many: Vec<String> = (0..5_000).map(|n| format!("s/{}/{n}", n % 50)).collect();
    let kept = ["s/+/7", "s/7/#", "t/u"];
    let mut trie = trie_of(&kept);
    for f in &many {
        *trie.entry_or_default(&filter(f)) = f.clone();
    }
    assert!(trie.arena_nodes() > 5_000);
    for f in &many {
        assert!(trie.remove_if(&filter(f), |_| true), "{f}");
    }
    assert_eq!(trie.len(), kept.len());
    assert!(
        trie.arena_nodes() < COMPACT_FROM,
        "{} nodes",
        trie.arena_nodes()
    );
    assert_eq!(trie_matches(&trie, "s/7/7"), ["s/+/7", "s/7/#"]);
    assert_eq!(trie_matches(&trie, "s/8/7"), ["s/+/7"]);
    assert_eq!(trie_matches(&trie, "t/u"), ["t/u"]);
    for f in kept {
        assert!(trie.remove_if(&filter(f), |_| true), "{f}");
    }
    assert_eq!(trie.live_nodes(), 1);
}

#[test]
fn trie_lists_filters_with_their_text() {
    let filters = [
        "#", "+", "/", "/#", "a//+/#", "+/+", "$SYS/#", "a/b", "a/b/#",
    ];
    let trie = trie_of(&filters);
    let mut listed = Vec::new();
    trie.for_each(|f, data| {
        assert_eq!(f, data);
        listed.push(f.to_owned());
    });
    listed.sort();
    let mut expected: Vec<_> = filters.iter().map(|f| (*f).to_owned()).collect();
    expected.sort();
    assert_eq!(listed, expected);
}

#[test]
fn trie_match_with_many_plus_levels_spills_and_stays_correct() {
    // 40 `+` levels give more pending branches than fit inline.
    let deep: Vec<&str> = vec!["+"; 40];
    let plus_filter = deep.join("/");
    let literal: Vec<&str> = vec!["x"; 40];
    let topic = literal.join("/");
    let mixed = format!("{}/#", vec!["x"; 20].join("/"));
    let trie = trie_of(&[&plus_filter, &topic, &mixed]);
    let mut expected = vec![plus_filter.clone(), topic.clone(), mixed];
    expected.sort();
    assert_eq!(trie_matches(&trie, &topic), expected);
}

#[test]
fn trie_and_tree_handle_very_deep_topics_without_recursion() {
    let levels = 100_000;
    let topic = vec!["a"; levels].join("/");
    let mut wild = vec!["+"; levels - 1].join("/");
    wild.push_str("/#");
    let trie = trie_of(&[&topic, &wild]);
    assert_eq!(trie_matches(&trie, &topic).len(), 2);
    let tree = tree_of(&[&topic]);
    assert_eq!(tree_matches(&tree, &wild), std::slice::from_ref(&topic));
    assert_eq!(tree_matches(&tree, "#"), [topic]);
}

#[test]
fn pending_is_last_in_first_out_across_the_spill() {
    let mut pending = trie::Pending::<u32, 2>::new(0);
    for i in 1..=5 {
        pending.push(i);
    }
    assert_eq!(pending.pop(), Some(5));
    pending.push(6);
    let rest: Vec<_> = std::iter::from_fn(|| pending.pop()).collect();
    assert_eq!(rest, [6, 4, 3, 2, 1]);
}

// ---- TopicTree ---------------------------------------------------------------------------------

#[test]
fn tree_insert_get_replace_remove() {
    let mut tree = TopicTree::new();
    assert_eq!(tree.insert("a/b", 1), None);
    assert_eq!(tree.insert("a/b", 2), Some(1));
    assert_eq!(tree.insert("a", 3), None);
    assert_eq!(tree.len(), 2);
    assert_eq!(tree.get("a/b"), Some(&2));
    assert_eq!(tree.get("a/b/c"), None);
    assert_eq!(tree.get("a/"), None);
    assert_eq!(tree.remove("a"), Some(3));
    assert_eq!(tree.remove("a"), None);
    assert_eq!(tree.live_nodes(), 3, "a still leads to a/b");
    assert_eq!(tree.remove("a/b"), Some(2));
    assert!(tree.is_empty());
    assert_eq!(tree.live_nodes(), 1);
}

/// Retained messages that have gone give their nodes back too, by deletion and by expiry.
#[test]
fn tree_gives_back_the_nodes_of_removed_topics() {
    let many: Vec<String> = (0..5_000).map(|n| format!("r/{}/{n}", n % 50)).collect();
    let mut tree = tree_of(&["r/7/keep", "other"]);
    for t in &many {
        tree.insert(t, t.clone());
    }
    for t in &many[..2_500] {
        assert_eq!(tree.remove(t).as_ref(), Some(t));
    }
    tree.retain(|topic, _| !topic.starts_with("r/") || topic.ends_with("keep"));
    assert_eq!(tree.len(), 2);
    assert!(
        tree.arena_nodes() < COMPACT_FROM,
        "{} nodes",
        tree.arena_nodes()
    );
    assert_eq!(tree_matches(&tree, "r/+/+"), ["r/7/keep"]);
    assert_eq!(tree_matches(&tree, "#"), ["other", "r/7/keep"]);
}

#[test]
fn tree_matches_filters_against_stored_topics() {
    let tree = tree_of(&[
        "sport",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player2",
        "/finance",
        "$SYS/broker/load",
        "a//b",
    ]);
    assert_eq!(
        tree_matches(&tree, "sport/#"),
        [
            "sport",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player2"
        ]
    );
    assert_eq!(
        tree_matches(&tree, "sport/tennis/+"),
        ["sport/tennis/player1", "sport/tennis/player2"]
    );
    assert_eq!(tree_matches(&tree, "+/+"), ["/finance"]);
    assert_eq!(tree_matches(&tree, "+"), ["sport"]);
    assert_eq!(tree_matches(&tree, "a/+/b"), ["a//b"]);
    assert_eq!(tree_matches(&tree, "#").len(), 6, "everything but $SYS");
    assert_eq!(tree_matches(&tree, "$SYS/#"), ["$SYS/broker/load"]);
    assert_eq!(tree_matches(&tree, "+/broker/load"), Vec::<String>::new());
}

#[test]
fn tree_retain_drops_and_prunes() {
    let mut tree = tree_of(&["a", "a/b", "a/b/c", "x/y", "x/z"]);
    tree.retain(|topic, value| {
        value.push('!');
        topic.starts_with("x/y")
    });
    assert_eq!(tree.len(), 1);
    assert_eq!(tree.get("x/y").map(String::as_str), Some("x/y!"));
    assert_eq!(tree.live_nodes(), 3, "root, x, y");
    let mut all = Vec::new();
    tree.for_each(|topic, _| all.push(topic.to_owned()));
    assert_eq!(all, ["x/y"]);
    tree.retain(|_, _| false);
    assert!(tree.is_empty());
    assert_eq!(tree.live_nodes(), 1);
}

// ---- properties --------------------------------------------------------------------------------

fn topic_strategy() -> impl Strategy<Value = String> + Clone {
    let level = prop::sample::select(vec!["", "a", "b", "$s", "$"]);
    prop::collection::vec(level, 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a topic name is not empty", |t| !t.is_empty())
}

fn filter_strategy() -> impl Strategy<Value = String> + Clone {
    let level = prop::sample::select(vec!["", "a", "b", "$s", "+"]);
    (prop::collection::vec(level, 0..5), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
        .prop_filter("a topic filter is not empty", |f| !f.is_empty())
}

#[derive(Debug, Clone)]
enum Op {
    Insert(String),
    Remove(String),
}

fn ops_strategy(item: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![item.clone().prop_map(Op::Insert), item.prop_map(Op::Remove),];
    prop::collection::vec(op, 0..60)
}

proptest! {
    #[test]
    fn generated_strings_are_valid(f in filter_strategy(), t in topic_strategy()) {
        prop_assert_eq!(validate_topic_filter(&f), Ok(()));
        prop_assert_eq!(validate_topic_name(&t), Ok(()));
    }

    #[test]
    fn trie_agrees_with_reference_matcher(
        filters in prop::collection::btree_set(filter_strategy(), 0..30),
        topics in prop::collection::vec(topic_strategy(), 1..20),
    ) {
        let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
        let trie = trie_of(&refs);
        for topic in &topics {
            let found = trie_matches(&trie, topic);
            let unique: BTreeSet<_> = found.iter().cloned().collect();
            prop_assert_eq!(unique.len(), found.len(), "a filter was reported twice");
            let expected: BTreeSet<_> =
                filters.iter().filter(|f| matches(f, topic)).cloned().collect();
            prop_assert_eq!(unique, expected, "topic {:?}", topic);
        }
    }

    #[test]
    fn tree_agrees_with_reference_matcher(
        topics in prop::collection::btree_set(topic_strategy(), 0..30),
        filters in prop::collection::vec(filter_strategy(), 1..20),
    ) {
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        let tree = tree_of(&refs);
        for f in &filters {
            let found = tree_matches(&tree, f);
            let unique: BTreeSet<_> = found.iter().cloned().collect();
            prop_assert_eq!(unique.len(), found.len(), "a topic was reported twice");
            let expected: BTreeSet<_> =
                topics.iter().filter(|t| matches(f, t)).cloned().collect();
            prop_assert_eq!(unique, expected, "filter {:?}", f);
        }
    }

    #[test]
    fn trie_insert_remove_keeps_len_listing_and_pruning(ops in ops_strategy(filter_strategy())) {
        let mut trie: FilterTrie<String> = FilterTrie::new();
        let mut model = BTreeSet::new();
        for op in ops {
            match op {
                Op::Insert(f) => {
                    *trie.entry_or_default(&filter(&f)) = f.clone();
                    model.insert(f);
                }
                Op::Remove(f) => {
                    prop_assert_eq!(trie.remove_if(&filter(&f), |_| true), model.remove(&f));
                    prop_assert_eq!(trie.get(&filter(&f)), None);
                }
            }
            prop_assert_eq!(trie.len(), model.len());
        }
        let mut listed = BTreeSet::new();
        trie.for_each(|f, data| {
            assert_eq!(f, data);
            listed.insert(f.to_owned());
        });
        prop_assert_eq!(&listed, &model);
        for f in &model {
            prop_assert!(trie.remove_if(&filter(f), |_| true));
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.live_nodes(), 1);
    }

    #[test]
    fn tree_insert_remove_retain_keep_len_and_pruning(
        ops in ops_strategy(topic_strategy()),
        drop_level in prop::sample::select(vec!["a", "b", "$s"]),
    ) {
        let mut tree = TopicTree::new();
        let mut model = BTreeMap::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Insert(t) => {
                    prop_assert_eq!(tree.insert(&t, n), model.insert(t, n));
                }
                Op::Remove(t) => {
                    prop_assert_eq!(tree.remove(&t), model.remove(&t));
                }
            }
            prop_assert_eq!(tree.len(), model.len());
        }
        let dropped = |t: &str| t.split('/').any(|l| l == drop_level);
        tree.retain(|t, _| !dropped(t));
        model.retain(|t, _| !dropped(t));
        prop_assert_eq!(tree.len(), model.len());
        let mut listed = BTreeMap::new();
        tree.for_each(|t, &v| {
            listed.insert(t.to_owned(), v);
        });
        prop_assert_eq!(&listed, &model);
        for t in model.keys() {
            prop_assert!(tree.remove(t).is_some());
        }
        prop_assert!(tree.is_empty());
        prop_assert_eq!(tree.live_nodes(), 1);
    }
}
