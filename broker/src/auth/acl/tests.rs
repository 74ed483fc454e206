//! Tests of the ACL file: parsing, each rule kind, substitution, options, and property tests of the
//! filter relations against brute force over a small universe of topic names.

use proptest::prelude::*;

use super::filter::RuleFilter;
use super::*;
use crate::topic;

fn acl(text: &str) -> AclFile {
    match AclFile::parse(text) {
        Ok(acl) => acl,
        Err(e) => panic!("did not parse: {e}"),
    }
}

fn client<'a>(username: Option<&'a str>, client_id: &'a str) -> Subject<'a> {
    Subject {
        username,
        client_id,
    }
}

fn alice() -> Subject<'static> {
    client(Some("alice"), "alice-laptop")
}

fn anonymous() -> Subject<'static> {
    client(None, "anon-1")
}

const Q0: QoS = QoS::AtMostOnce;
const Q1: QoS = QoS::AtLeastOnce;
const Q2: QoS = QoS::ExactlyOnce;

fn allowed(max_qos: QoS) -> Decision {
    Decision::Allow { max_qos }
}

fn can_publish(acl: &AclFile, who: Subject<'_>, topic: &str) -> bool {
    acl.check_publish(&who, topic, Q0, false).is_allow()
}

fn can_subscribe(acl: &AclFile, who: Subject<'_>, filter: &str) -> bool {
    acl.check_subscribe(&who, filter, Q0).is_allow()
}

fn parse_error(text: &str) -> AclError {
    match AclFile::parse(text) {
        Ok(_) => panic!("{text:?} parsed"),
        Err(e) => e,
    }
}

#[test]
fn deny_by_default_when_no_rule_matches() {
    let acl = acl("allow user bob both bob/#\n");
    assert_eq!(
        acl.check_publish(&alice(), "bob/x", Q0, false),
        Decision::Deny
    );
    assert_eq!(acl.check_subscribe(&alice(), "bob/#", Q0), Decision::Deny);
    assert_eq!(AclFile::parse("").map(|a| a.is_empty()), Ok(true));
    assert!(!can_publish(
        &AclFile::parse("# nothing\n").unwrap_or_else(|e| panic!("{e}")),
        alice(),
        "a"
    ));
}

#[test]
fn the_first_applicable_rule_decides() {
    let deny_first = acl("deny all publish a/secret\nallow all publish a/#\n");
    assert!(!can_publish(&deny_first, alice(), "a/secret"));
    assert!(can_publish(&deny_first, alice(), "a/public"));
    let allow_first = acl("allow all publish a/#\ndeny all publish a/secret\n");
    assert!(can_publish(&allow_first, alice(), "a/secret"));
}

#[test]
fn comments_blank_lines_and_indentation_are_ignored() {
    let acl = acl("# header\n\n   # indented comment\n\t allow all publish x \r\n");
    assert_eq!(acl.len(), 1);
    assert!(can_publish(&acl, alice(), "x"));
}

#[test]
fn rules_apply_only_to_their_action() {
    let acl = acl("allow all publish p/#\nallow all subscribe s/#\nallow all both b/#\n");
    assert!(can_publish(&acl, alice(), "p/1"));
    assert!(!can_subscribe(&acl, alice(), "p/1"));
    assert!(can_subscribe(&acl, alice(), "s/1"));
    assert!(!can_publish(&acl, alice(), "s/1"));
    assert!(can_publish(&acl, alice(), "b/1") && can_subscribe(&acl, alice(), "b/1"));
}

#[test]
fn user_rules_match_only_that_username() {
    let acl = acl("allow user alice publish a\n");
    assert!(can_publish(&acl, alice(), "a"));
    assert!(!can_publish(
        &acl,
        client(Some("Alice"), "alice-laptop"),
        "a"
    ));
    assert!(!can_publish(&acl, client(None, "alice"), "a"));
}

#[test]
fn group_rules_match_members_even_when_the_group_is_defined_later() {
    let acl = acl("allow group ops both ops/#\ngroup ops = alice bob\ngroup nobody =\n");
    assert!(can_publish(&acl, alice(), "ops/deploy"));
    assert!(can_subscribe(&acl, client(Some("bob"), "c"), "ops/#"));
    assert!(!can_publish(&acl, client(Some("carol"), "c"), "ops/deploy"));
}

#[test]
fn anonymous_clients_never_match_user_or_group_rules() {
    let acl =
        acl("group g = alice\nallow user alice both a\nallow group g both a\nallow all both pub\n");
    assert!(!can_publish(&acl, anonymous(), "a"));
    assert!(!can_subscribe(&acl, anonymous(), "a"));
    assert!(can_publish(&acl, anonymous(), "pub"));
}

#[test]
fn client_rules_match_the_client_id_by_glob() {
    let acl = acl("deny client test-* subscribe admin/#\nallow client dev-?? both #\n");
    assert!(!can_subscribe(&acl, client(None, "test-1"), "admin/#"));
    assert!(can_subscribe(&acl, client(None, "dev-42"), "admin/#"));
    assert!(!can_subscribe(&acl, client(None, "dev-420"), "admin/#"));
}

#[test]
fn a_subscription_must_be_covered_by_an_allow_rule() {
    let acl = acl("allow all subscribe a/#\nallow all subscribe b/+\nallow all subscribe c/b\n");
    for (filter, expected) in [
        ("a/#", true),
        ("a", true),
        ("a/b/+/#", true),
        ("b/x", true),
        ("b/+", true),
        ("b/#", false),
        ("b/x/y", false),
        ("c/b", true),
        ("c/+", false),
        ("c/#", false),
        ("#", false),
    ] {
        assert_eq!(can_subscribe(&acl, alice(), filter), expected, "{filter}");
    }
}

#[test]
fn a_subscription_to_a_slash_hash_is_allowed_by_a_slash_hash_but_not_by_a_slash_b() {
    assert!(can_subscribe(
        &acl("allow all subscribe a/#\n"),
        alice(),
        "a/#"
    ));
    assert!(!can_subscribe(
        &acl("allow all subscribe a/b\n"),
        alice(),
        "a/#"
    ));
}

#[test]
fn plus_hash_and_hash_cover_each_other_but_a_deeper_plus_does_not_cover_a_parent() {
    assert!(can_subscribe(
        &acl("allow all subscribe +/#\n"),
        alice(),
        "#"
    ));
    assert!(can_subscribe(
        &acl("allow all subscribe #\n"),
        alice(),
        "+/#"
    ));
    assert!(!can_subscribe(
        &acl("allow all subscribe a/+/#\n"),
        alice(),
        "a/#"
    ));
}

#[test]
fn a_deny_on_dollar_topics_does_not_refuse_a_subscription_to_hash() {
    let acl = acl("deny all subscribe $SYS/#\nallow all subscribe #\n");
    assert!(can_subscribe(&acl, alice(), "#"));
    assert!(can_subscribe(&acl, alice(), "+/#"));
    assert!(!can_subscribe(&acl, alice(), "$SYS/broker"));
}

#[test]
fn a_deny_rule_refuses_any_subscription_that_overlaps_it() {
    let acl = acl("deny all subscribe a/secret/#\nallow all subscribe a/#\n");
    assert!(!can_subscribe(&acl, alice(), "a/#"));
    assert!(!can_subscribe(&acl, alice(), "a/+/x"));
    assert!(!can_subscribe(&acl, alice(), "a/secret"));
    assert!(can_subscribe(&acl, alice(), "a/public/#"));
    assert!(can_subscribe(&acl, alice(), "a"));
}

#[test]
fn wildcard_rules_do_not_reach_dollar_topics() {
    let acl = acl("allow all both #\nallow user alice subscribe $SYS/#\n");
    assert!(!can_publish(&acl, anonymous(), "$SYS/broker/uptime"));
    assert!(!can_subscribe(&acl, anonymous(), "$SYS/#"));
    assert!(can_subscribe(&acl, anonymous(), "#"));
    assert!(can_subscribe(&acl, alice(), "$SYS/broker/+"));
}

#[test]
fn percent_u_and_percent_c_are_replaced_by_username_and_client_id() {
    let acl =
        acl("allow all both users/%u/#\nallow all publish clients/%c\nallow all publish x/%u-%c\n");
    assert!(can_publish(&acl, alice(), "users/alice/inbox"));
    assert!(can_subscribe(&acl, alice(), "users/alice/#"));
    assert!(!can_publish(&acl, alice(), "users/bob/inbox"));
    assert!(!can_subscribe(&acl, alice(), "users/+/#"));
    assert!(can_publish(&acl, alice(), "clients/alice-laptop"));
    assert!(can_publish(&acl, alice(), "x/alice-alice-laptop"));
    assert!(!can_publish(&acl, alice(), "x/alice-"));
}

#[test]
fn percent_u_substitution_cannot_widen_with_wildcards() {
    let acl = acl("allow all both users/%u/#\nallow all publish dev/%c/state\n");
    for name in ["+", "#", "a/b", "a+", ""] {
        let who = client(Some(name), "c");
        assert!(!can_subscribe(&acl, who, "users/#"), "{name:?}");
        assert!(!can_subscribe(&acl, who, "users/+/#"), "{name:?}");
        assert!(!can_publish(&acl, who, "users/a/b/c"), "{name:?}");
        assert!(
            !can_publish(&acl, who, &format!("users/{name}/x")),
            "{name:?}"
        );
    }
    assert!(!can_publish(&acl, client(None, "x/y"), "dev/x/y/state"));
}

#[test]
fn percent_u_rules_do_not_apply_to_anonymous_clients() {
    let acl = acl("allow all both users/%u/#\n");
    assert!(!can_publish(&acl, anonymous(), "users//x"));
    assert!(!can_subscribe(&acl, anonymous(), "users/+/#"));
}

#[test]
fn a_leading_placeholder_cannot_reach_dollar_topics() {
    let acl = acl("allow all both %c/#\nallow all both home/%c\n");
    assert!(can_publish(&acl, client(None, "dev1"), "dev1/x"));
    assert!(!can_publish(&acl, client(None, "$SYS"), "$SYS/broker/load"));
    assert!(!can_subscribe(&acl, client(None, "$SYS"), "$SYS/#"));
    assert!(can_publish(&acl, client(None, "$odd"), "home/$odd"));
}

#[test]
fn a_deny_rule_with_a_placeholder_refuses_overlapping_subscriptions() {
    let acl = acl("deny all subscribe private/%u/#\nallow all subscribe private/#\n");
    assert!(!can_subscribe(&acl, alice(), "private/#"));
    assert!(!can_subscribe(&acl, alice(), "private/alice"));
    assert!(can_subscribe(&acl, alice(), "private/bob/#"));
}

#[test]
fn qos_option_denies_higher_publishes_and_caps_subscriptions() {
    let acl = acl("allow all both t/# qos<=1\n");
    let who = alice();
    assert_eq!(acl.check_publish(&who, "t/x", Q0, false), allowed(Q0));
    assert_eq!(acl.check_publish(&who, "t/x", Q1, false), allowed(Q1));
    assert_eq!(acl.check_publish(&who, "t/x", Q2, false), Decision::Deny);
    assert_eq!(acl.check_subscribe(&who, "t/#", Q2), allowed(Q1));
    assert_eq!(acl.check_subscribe(&who, "t/#", Q0), allowed(Q0));
}

#[test]
fn an_allow_rule_with_options_still_decides() {
    let acl = acl("allow all publish t/# qos<=0\nallow all publish t/#\n");
    assert_eq!(
        acl.check_publish(&alice(), "t/x", Q1, false),
        Decision::Deny
    );
}

#[test]
fn retain_option_restricts_the_retain_flag() {
    let acl = acl("allow all publish live/# retain=false\nallow all publish state/# retain=true\n");
    let who = alice();
    assert!(acl.check_publish(&who, "live/x", Q0, false).is_allow());
    assert!(!acl.check_publish(&who, "live/x", Q0, true).is_allow());
    assert!(acl.check_publish(&who, "state/x", Q0, true).is_allow());
    assert!(!acl.check_publish(&who, "state/x", Q0, false).is_allow());
}

#[test]
fn errors_name_the_line_and_the_token() {
    let cases: &[(&str, AclError)] = &[
        (
            "\npermit all publish a\n",
            AclError::UnknownDirective {
                line: 2,
                token: "permit".into(),
            },
        ),
        (
            "allow\n",
            AclError::Missing {
                line: 1,
                token: "allow".into(),
                expected: "who: user, group, client or all",
            },
        ),
        (
            "allow user\n",
            AclError::Missing {
                line: 1,
                token: "user".into(),
                expected: "a name or pattern",
            },
        ),
        (
            "allow everyone x publish a\n",
            AclError::UnknownSubject {
                line: 1,
                token: "everyone".into(),
            },
        ),
        (
            "allow all read a\n",
            AclError::UnknownAction {
                line: 1,
                token: "read".into(),
            },
        ),
        (
            "allow all publish\n",
            AclError::Missing {
                line: 1,
                token: "publish".into(),
                expected: "a topic filter",
            },
        ),
        (
            "# c\nallow group ops both a\n",
            AclError::UnknownGroup {
                line: 2,
                token: "ops".into(),
            },
        ),
        (
            "group g = a\ngroup g = b\n",
            AclError::DuplicateGroup {
                line: 2,
                token: "g".into(),
                first: 1,
            },
        ),
        (
            "group g a b\n",
            AclError::BadGroupLine {
                line: 1,
                token: "a".into(),
            },
        ),
        (
            "group g=a\n",
            AclError::BadGroupLine {
                line: 1,
                token: "g=a".into(),
            },
        ),
        (
            "group g\n",
            AclError::Missing {
                line: 1,
                token: "g".into(),
                expected: "`=` and the members",
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(&parse_error(text), expected, "{text:?}");
    }
    let err = parse_error("allow all publish a/#/b\n");
    assert!(
        matches!(&err, AclError::InvalidFilter { line: 1, token, .. } if token == "a/#/b"),
        "{err:?}"
    );
    assert!(matches!(
        parse_error("allow all publish a/%u+\n"),
        AclError::InvalidFilter { .. }
    ));
    assert_eq!(
        parse_error("\n\nallow all read a\n").to_string(),
        "acl file line 3: unknown action \"read\" (expected publish, subscribe or both)"
    );
}

#[test]
fn options_are_checked() {
    for (text, token) in [
        ("allow all publish a qos<=3\n", "qos<=3"),
        ("allow all publish a qos<=1 qos<=1\n", "qos<=1"),
        ("allow all publish a retain=maybe\n", "retain=maybe"),
        ("allow all subscribe a retain=true\n", "retain=true"),
        ("deny all publish a qos<=1\n", "qos<=1"),
        ("allow all publish a # trailing comment\n", "#"),
        (
            "allow all publish a retain=true retain=false\n",
            "retain=false",
        ),
    ] {
        let err = parse_error(text);
        assert!(
            matches!(&err, AclError::InvalidOption { line: 1, token: t, .. } if t == token),
            "{text:?}: {err:?}"
        );
    }
}

// ---- Properties: the filter relations against brute force over a small universe. ----

/// Levels of generated filters; `z` appears only in topics, so a wildcard always has a level that
/// no literal names.
const FILTER_LEVELS: &[&str] = &["a", "b", "", "$s", "+"];
const TOPIC_LEVELS: &[&str] = &["a", "b", "", "$s", "z"];
/// Long enough to tell `#` from one or more `+` for filters of up to four levels.
const MAX_TOPIC_LEVELS: usize = 5;

fn universe() -> Vec<String> {
    let mut all: Vec<String> = TOPIC_LEVELS.iter().map(|l| (*l).to_owned()).collect();
    let mut frontier = all.clone();
    for _ in 1..MAX_TOPIC_LEVELS {
        frontier = frontier
            .iter()
            .flat_map(|t| TOPIC_LEVELS.iter().map(move |l| format!("{t}/{l}")))
            .collect();
        all.extend(frontier.iter().cloned());
    }
    all
}

fn filter_strategy(levels: &'static [&'static str]) -> BoxedStrategy<String> {
    let general = (
        prop::collection::vec(prop::sample::select(levels), 1..=3),
        any::<bool>(),
    )
        .prop_map(|(levels, hash)| {
            let mut filter = levels.join("/");
            if hash {
                filter.push_str("/#");
            }
            filter
        })
        .prop_filter("a filter is not empty", |f| !f.is_empty());
    // The two filters that match every topic not starting with `$`, rare in the general strategy.
    let everything = prop::sample::select(vec!["#".to_owned(), "+/#".to_owned()]);
    prop_oneof![4 => general, 1 => everything].boxed()
}

/// Rule levels may also hold whole-level placeholders, substituted with levels of the universe.
const RULE_LEVELS: &[&str] = &["a", "b", "", "$s", "+", "%u", "%c"];
const SUBJECT: Subject<'static> = Subject {
    username: Some("a"),
    client_id: "b",
};

fn substituted(rule: &str) -> String {
    rule.replace("%u", "a").replace("%c", "b")
}

fn rule_filter(text: &str) -> RuleFilter {
    match RuleFilter::parse(text) {
        Ok(f) => f,
        Err(e) => panic!("{text:?}: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn covers_iff_every_topic_of_the_subscription_matches_the_rule(
        rule in filter_strategy(RULE_LEVELS),
        sub in filter_strategy(FILTER_LEVELS),
    ) {
        let parsed = rule_filter(&rule);
        let values = parsed.values(&SUBJECT);
        prop_assert!(values.is_some());
        let plain = substituted(&rule);
        let brute = universe()
            .iter()
            .all(|t| !topic::matches(&sub, t) || topic::matches(&plain, t));
        prop_assert_eq!(values.is_some_and(|v| parsed.covers(&sub, v)), brute);
    }

    #[test]
    fn overlaps_iff_some_topic_matches_both(
        rule in filter_strategy(RULE_LEVELS),
        sub in filter_strategy(FILTER_LEVELS),
    ) {
        let parsed = rule_filter(&rule);
        let plain = substituted(&rule);
        let brute = universe()
            .iter()
            .any(|t| topic::matches(&sub, t) && topic::matches(&plain, t));
        let values = parsed.values(&SUBJECT);
        prop_assert_eq!(values.is_some_and(|v| parsed.overlaps(&sub, v)), brute);
    }

    #[test]
    fn matches_topic_agrees_with_substitute_then_match(
        rule in filter_strategy(RULE_LEVELS),
        topic_levels in prop::collection::vec(prop::sample::select(TOPIC_LEVELS), 1..=MAX_TOPIC_LEVELS),
    ) {
        let topic = topic_levels.join("/");
        let parsed = rule_filter(&rule);
        let values = parsed.values(&SUBJECT);
        prop_assert_eq!(
            values.is_some_and(|v| parsed.matches_topic(&topic, v)),
            topic::matches(&substituted(&rule), &topic)
        );
    }

    #[test]
    fn a_username_with_wildcards_or_slashes_never_applies(
        prefix in "[a-z]{0,3}",
        bad in prop::sample::select(vec!["+", "#", "/"]),
        suffix in "[a-z]{0,3}",
        topic_levels in prop::collection::vec(prop::sample::select(TOPIC_LEVELS), 1..=4),
    ) {
        let name = format!("{prefix}{bad}{suffix}");
        let acl = acl("allow all both %u/#\nallow all both x/%u\nallow all both y/%c/+\n");
        let who = client(Some(&name), &name);
        let topic = topic_levels.join("/");
        prop_assert!(!acl.check_publish(&who, &topic, Q0, false).is_allow());
        prop_assert!(!acl.check_subscribe(&who, &topic, Q0).is_allow());
        prop_assert!(!acl.check_subscribe(&who, "#", Q0).is_allow());
    }

    #[test]
    fn glob_agrees_with_a_recursive_reference(pattern in "[ab?*é]{0,5}", text in "[abé]{0,6}") {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        prop_assert_eq!(glob_matches(&pattern, &text), glob_reference(&p, &t));
    }
}

/// Globbing by its definition: exponential, but obviously right.
fn glob_reference(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|i| glob_reference(rest, &text[i..])),
        Some(('?', rest)) => !text.is_empty() && glob_reference(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob_reference(rest, &text[1..]),
    }
}
