//! MQTT 5 subscription options and shared subscriptions with `rumqttc::v5`: No Local, Retain As
//! Published, Retain Handling and `$share/{group}/{filter}`.

mod support;

use std::collections::BTreeSet;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, RetainForwardRule};
use support::v5::*;
use support::{QUIET, TestBroker, WAIT};

fn filter(path: &str, edit: impl FnOnce(&mut Filter)) -> Filter {
    let mut filter = Filter::new(path, QoS::AtLeastOnce);
    edit(&mut filter);
    filter
}

/// [MQTT-3.8.3-3] With No Local set, messages are not forwarded to the connection whose client
/// id published them; other subscribers, and other publishers' messages, are unaffected.
#[tokio::test]
async fn no_local_subscription_does_not_receive_own_messages() {
    let broker = TestBroker::start().await;
    let (me, mut my_inbox) = connect(broker.port(), "me").await;
    subscribe_with(
        &me,
        &mut my_inbox,
        filter("chat", |f| f.nolocal = true),
        None,
    )
    .await;
    let (other, mut other_inbox) = connect(broker.port(), "other").await;
    subscribe(&other, &mut other_inbox, "chat", QoS::AtLeastOnce).await;

    publish(
        &me,
        &mut my_inbox,
        "chat",
        QoS::AtLeastOnce,
        false,
        "from me",
    )
    .await;
    assert_eq!(
        payload(&expect_publish(&mut other_inbox, WAIT).await),
        "from me"
    );
    publish(
        &other,
        &mut other_inbox,
        "chat",
        QoS::AtLeastOnce,
        false,
        "from other",
    )
    .await;

    assert_eq!(
        payload(&expect_publish(&mut my_inbox, WAIT).await),
        "from other"
    );
    expect_no_publish(&mut my_inbox, QUIET).await;
}

/// [MQTT-3.3.1-13] With Retain As Published the forwarded RETAIN flag equals the published one;
/// [MQTT-3.3.1-12] without it the flag is 0 on live delivery.
#[tokio::test]
async fn retain_as_published_keeps_the_retain_flag_on_live_delivery() {
    let broker = TestBroker::start().await;
    let (keeper, mut keeper_inbox) = connect(broker.port(), "keeper").await;
    subscribe_with(
        &keeper,
        &mut keeper_inbox,
        filter("status", |f| f.preserve_retain = true),
        None,
    )
    .await;
    let (plain, mut plain_inbox) = connect(broker.port(), "plain").await;
    subscribe(&plain, &mut plain_inbox, "status", QoS::AtLeastOnce).await;

    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    publish(
        &publisher,
        &mut pub_inbox,
        "status",
        QoS::AtLeastOnce,
        true,
        "retained",
    )
    .await;
    publish(
        &publisher,
        &mut pub_inbox,
        "status",
        QoS::AtLeastOnce,
        false,
        "plain",
    )
    .await;

    let kept: Vec<_> = expect_publishes(&mut keeper_inbox, 2, WAIT)
        .await
        .iter()
        .map(|p| (payload(p).to_owned(), p.retain))
        .collect();
    assert_eq!(
        kept,
        [("retained".to_owned(), true), ("plain".to_owned(), false)]
    );
    let cleared: Vec<_> = expect_publishes(&mut plain_inbox, 2, WAIT)
        .await
        .iter()
        .map(|p| (payload(p).to_owned(), p.retain))
        .collect();
    assert_eq!(
        cleared,
        [("retained".to_owned(), false), ("plain".to_owned(), false)]
    );
}

/// [MQTT-3.3.1-11] With Retain Handling 2 no retained message is sent on subscribing; the
/// subscription still receives new messages.
#[tokio::test]
async fn retain_handling_2_sends_no_retained_messages() {
    let broker = TestBroker::start().await;
    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    publish(
        &publisher,
        &mut pub_inbox,
        "door",
        QoS::AtLeastOnce,
        true,
        "open",
    )
    .await;

    let (sub, mut sub_inbox) = connect(broker.port(), "subscriber").await;
    let never = filter("door", |f| f.retain_forward_rule = RetainForwardRule::Never);
    subscribe_with(&sub, &mut sub_inbox, never, None).await;
    publish(
        &publisher,
        &mut pub_inbox,
        "door",
        QoS::AtLeastOnce,
        false,
        "closed",
    )
    .await;

    let first = expect_publish(&mut sub_inbox, WAIT).await;
    assert_eq!(payload(&first), "closed");
    expect_no_publish(&mut sub_inbox, QUIET).await;
}

/// [MQTT-3.3.1-10] With Retain Handling 1 retained messages are sent only when the subscription
/// is new; [MQTT-3.3.1-9] [MQTT-3.8.4-4] re-subscribing with Retain Handling 0 sends them again.
#[tokio::test]
async fn retain_handling_1_sends_retained_messages_only_for_a_new_subscription() {
    let broker = TestBroker::start().await;
    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    publish(
        &publisher,
        &mut pub_inbox,
        "light",
        QoS::AtLeastOnce,
        true,
        "on",
    )
    .await;

    let (sub, mut sub_inbox) = connect(broker.port(), "subscriber").await;
    let if_new = || {
        filter("light", |f| {
            f.retain_forward_rule = RetainForwardRule::OnNewSubscribe
        })
    };
    subscribe_with(&sub, &mut sub_inbox, if_new(), None).await;
    let retained = expect_publish(&mut sub_inbox, WAIT).await;
    assert_eq!((payload(&retained), retained.retain), ("on", true));

    subscribe_with(&sub, &mut sub_inbox, if_new(), None).await;
    expect_no_publish(&mut sub_inbox, QUIET).await;

    subscribe(&sub, &mut sub_inbox, "light", QoS::AtLeastOnce).await;
    let again = expect_publish(&mut sub_inbox, WAIT).await;
    assert_eq!((payload(&again), again.retain), ("on", true));
}

/// A shared subscription delivers each message to exactly one of the sessions in the group
/// (§4.8.2), [MQTT-4.8.2-3] at the QoS granted to that member; a non-shared subscription on the
/// same filter still gets every message.
#[tokio::test]
async fn shared_subscription_delivers_each_message_to_exactly_one_member() {
    const COUNT: usize = 40;
    let broker = TestBroker::start().await;
    let mut members = Vec::new();
    for name in ["worker-a", "worker-b"] {
        let (client, mut inbox) = connect(broker.port(), name).await;
        subscribe(
            &client,
            &mut inbox,
            "$share/workers/jobs/+",
            QoS::AtLeastOnce,
        )
        .await;
        members.push((client, inbox));
    }
    let (auditor, mut audit_inbox) = connect(broker.port(), "auditor").await;
    subscribe(&auditor, &mut audit_inbox, "jobs/+", QoS::AtLeastOnce).await;

    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    for i in 0..COUNT {
        publish(
            &publisher,
            &mut pub_inbox,
            "jobs/new",
            QoS::AtLeastOnce,
            false,
            format!("{i}"),
        )
        .await;
    }
    assert_eq!(
        expect_publishes(&mut audit_inbox, COUNT, WAIT).await.len(),
        COUNT
    );

    let [(_, a), (_, b)] = &mut members[..] else {
        unreachable!("two members")
    };
    let mut delivered = Vec::new();
    while delivered.len() < COUNT {
        let message = tokio::select! {
            m = expect_publish(a, WAIT) => m,
            m = expect_publish(b, WAIT) => m,
        };
        assert_eq!(message.qos, QoS::AtLeastOnce);
        delivered.push(payload(&message).parse::<usize>().expect("a number"));
    }
    let distinct: BTreeSet<usize> = delivered.iter().copied().collect();
    assert_eq!(
        distinct,
        (0..COUNT).collect(),
        "every message went to a member"
    );
    assert_eq!(
        delivered.len(),
        distinct.len(),
        "no message went to both: {delivered:?}"
    );
    expect_no_publish(a, QUIET).await;
    expect_no_publish(b, QUIET).await;
}
