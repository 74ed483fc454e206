//! A cluster of real broker processes (three nodes on their own loopback addresses): they find
//! each other by gossip, become ready only once they hold each other's routes, and behave to
//! clients as one broker — a message published on any node reaches matching subscribers on every
//! node, once, in the publisher's order, and a shared group spread over the nodes gets each message
//! once. A killed node's routes are dropped while the others keep serving, and the node rejoins as
//! a new generation when it comes back.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, MqttOptions};
use support::cluster::{FAILURE_WINDOW, TestCluster};
use support::v5::{self, Inbox};
use support::{QUIET, WAIT};

/// A connected v5 client of node `i`.
async fn client(cluster: &TestCluster, i: usize, id: &str) -> (AsyncClient, Inbox) {
    let (host, port) = cluster.mqtt(i);
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(std::time::Duration::from_secs(30));
    let (client, inbox, _) = v5::start(options).await;
    (client, inbox)
}

/// Subscribes and waits until every other node holds the new route, so that a publish anywhere
/// finds it. (A route reaches the other nodes in milliseconds; a test does not race it.)
async fn subscribe_everywhere(
    cluster: &TestCluster,
    node: usize,
    client: &AsyncClient,
    inbox: &mut Inbox,
    filter: &str,
    qos: QoS,
    routes_on_node: u64,
) {
    v5::subscribe(client, inbox, filter, qos).await;
    for other in (0..cluster.size()).filter(|&o| o != node) {
        cluster.wait_peer_routes(other, node, routes_on_node).await;
    }
}

#[tokio::test]
async fn three_nodes_find_each_other_and_become_ready() {
    let cluster = TestCluster::start(3).await;
    for i in 0..3 {
        let members = cluster.members(i).await;
        let states: Vec<&str> = members.iter().map(|(_, s)| s.as_str()).collect();
        let ids: Vec<String> = members.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids, (0..3).map(|n| cluster.node_id(n)).collect::<Vec<_>>());
        assert_eq!(states.iter().filter(|s| **s == "self").count(), 1);
        assert_eq!(
            states.iter().filter(|s| **s == "joined").count(),
            2,
            "{members:?}"
        );
    }
}

/// Every subscriber, whichever node it is on, receives each message once and in the order its
/// publisher sent it, at min(publish QoS, granted QoS) [MQTT-3.3.4-2], [MQTT-4.6.0-5].
#[tokio::test]
async fn messages_published_on_one_node_reach_subscribers_on_every_node_in_order() {
    let cluster = TestCluster::start(3).await;
    let mut subscribers = Vec::new();
    for node in 0..3 {
        let (client, mut inbox) = client(&cluster, node, &format!("sub-{node}")).await;
        subscribe_everywhere(
            &cluster,
            node,
            &client,
            &mut inbox,
            "orders/#",
            QoS::ExactlyOnce,
            1,
        )
        .await;
        subscribers.push((client, inbox));
    }
    let (publisher, mut publisher_inbox) = client(&cluster, 1, "publisher").await;
    const COUNT: usize = 60;
    for n in 0..COUNT {
        let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][n % 3];
        let topic = format!("orders/{n}");
        v5::publish(
            &publisher,
            &mut publisher_inbox,
            &topic,
            qos,
            false,
            n.to_string(),
        )
        .await;
    }
    for (node, (_, inbox)) in subscribers.iter_mut().enumerate() {
        let received = v5::expect_publishes(inbox, COUNT, WAIT).await;
        let payloads: Vec<String> = received.iter().map(|p| v5::payload(p).to_owned()).collect();
        let expected: Vec<String> = (0..COUNT).map(|n| n.to_string()).collect();
        assert_eq!(payloads, expected, "node {node}: each once, in order");
        for (n, publish) in received.iter().enumerate() {
            let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][n % 3];
            assert_eq!(publish.qos, qos, "node {node}, message {n}");
        }
        v5::expect_no_publish(inbox, QUIET).await;
    }
}

/// One member of a shared group gets each message [MQTT-4.8.2-3]; spread over three nodes, the
/// group still gets each message once in total, and every node's member takes a share.
#[tokio::test]
async fn a_shared_group_spread_over_the_nodes_gets_each_message_once() {
    let cluster = TestCluster::start(3).await;
    let mut members = Vec::new();
    for node in 0..3 {
        let (client, mut inbox) = client(&cluster, node, &format!("worker-{node}")).await;
        subscribe_everywhere(
            &cluster,
            node,
            &client,
            &mut inbox,
            "$share/workers/jobs",
            QoS::AtLeastOnce,
            1,
        )
        .await;
        members.push((client, inbox));
    }
    let (publisher, mut publisher_inbox) = client(&cluster, 0, "producer").await;
    const COUNT: usize = 30;
    for n in 0..COUNT {
        v5::publish(
            &publisher,
            &mut publisher_inbox,
            "jobs",
            QoS::AtLeastOnce,
            false,
            n.to_string(),
        )
        .await;
    }
    let mut all = Vec::new();
    for (node, (_, inbox)) in members.iter_mut().enumerate() {
        let mut got = Vec::new();
        while let Some(publish) = v5::next_publish_within(inbox, QUIET).await {
            got.push(v5::payload(&publish).to_owned());
        }
        assert!(!got.is_empty(), "node {node}'s member took no share");
        all.extend(got);
    }
    all.sort_by_key(|p| p.parse::<usize>().unwrap());
    let expected: Vec<String> = (0..COUNT).map(|n| n.to_string()).collect();
    assert_eq!(all, expected, "each message once across the group");
}

/// A node killed without warning is dropped from the others' membership, with its routes, within
/// the failure detector's window, while they keep serving each other; restarted, it rejoins as a
/// new generation and its subscribers receive again.
#[tokio::test]
async fn a_killed_node_is_dropped_and_rejoins_as_a_new_generation() {
    let mut cluster = TestCluster::start(3).await;
    let generation_before = cluster.view(0).await["members"][2]["generation"].as_u64();
    let (sub_client, mut sub_inbox) = client(&cluster, 1, "survivor").await;
    subscribe_everywhere(
        &cluster,
        1,
        &sub_client,
        &mut sub_inbox,
        "t",
        QoS::AtLeastOnce,
        1,
    )
    .await;

    cluster.kill(2);
    let survivors = vec![cluster.node_id(0), cluster.node_id(1)];
    let window = cluster.wait_members(0, &survivors, FAILURE_WINDOW).await;
    eprintln!("a killed node was dropped after {window:?}");
    let (publisher, mut publisher_inbox) = client(&cluster, 0, "pub").await;
    v5::publish(
        &publisher,
        &mut publisher_inbox,
        "t",
        QoS::AtLeastOnce,
        false,
        "still served",
    )
    .await;
    let publish = v5::expect_publish(&mut sub_inbox, WAIT).await;
    assert_eq!(v5::payload(&publish), "still served");

    cluster.restart(2).await;
    let everyone: Vec<String> = (0..3).map(|n| cluster.node_id(n)).collect();
    cluster.wait_members(0, &everyone, WAIT).await;
    let generation_after = cluster.view(0).await["members"][2]["generation"].as_u64();
    assert_ne!(
        generation_before, generation_after,
        "a restarted node is a new member"
    );
    let (late, mut late_inbox) = client(&cluster, 2, "late").await;
    subscribe_everywhere(
        &cluster,
        2,
        &late,
        &mut late_inbox,
        "t",
        QoS::AtLeastOnce,
        1,
    )
    .await;
    v5::publish(
        &publisher,
        &mut publisher_inbox,
        "t",
        QoS::AtLeastOnce,
        false,
        "to the new generation",
    )
    .await;
    let publish = v5::expect_publish(&mut late_inbox, WAIT).await;
    assert_eq!(v5::payload(&publish), "to the new generation");
}

/// Nodes that gossip another cluster name are not members: a node of another cluster seeded with
/// this cluster's addresses gossips with it and is ignored, and ignores it.
#[tokio::test]
async fn a_node_of_another_cluster_is_ignored() {
    let ours = TestCluster::start(2).await;
    let theirs =
        TestCluster::start_seeded(1, "other", "", vec![ours.gossip(0), ours.gossip(1)]).await;
    // Gossip goes round several times while the two see each other's packets.
    tokio::time::sleep(QUIET * 4).await;
    let members: Vec<String> = ours.members(0).await.into_iter().map(|m| m.0).collect();
    assert_eq!(members, [ours.node_id(0), ours.node_id(1)]);
    let members: Vec<String> = theirs.members(0).await.into_iter().map(|m| m.0).collect();
    assert_eq!(members, [theirs.node_id(0)]);
}

/// The retained messages a new subscriber to `state/#` on node `node` is sent, as `topic=payload`.
async fn retained_on(cluster: &TestCluster, node: usize, reader: &str) -> Vec<String> {
    let (client, mut inbox) = client(cluster, node, reader).await;
    v5::subscribe(&client, &mut inbox, "state/#", QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    while let Some(publish) = v5::next_publish_within(&mut inbox, QUIET).await {
        assert!(publish.retain, "sent because retained [MQTT-3.3.1-8]");
        got.push(format!("{}={}", v5::topic(&publish), v5::payload(&publish)));
    }
    got.sort();
    got
}

/// Waits (bounded) until a new subscriber on node `node` is sent exactly `expected`: retained
/// writes reach the other nodes in milliseconds, after the publisher's acknowledgement.
async fn wait_retained(cluster: &TestCluster, node: usize, expected: &[&str]) {
    let deadline = std::time::Instant::now() + WAIT;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let got = retained_on(cluster, node, &format!("reader-{node}-{attempt}")).await;
        if got == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {node} retains {got:?}, not {expected:?}"
        );
    }
}

/// Retained messages are kept on every node [MQTT-3.3.1-5]: a subscriber on another node gets the
/// message retained on the first [MQTT-3.3.1-9]; a deletion (empty payload) reaches every node
/// [MQTT-3.3.1-6]; a node that comes back later catches up on what was retained while it was away.
#[tokio::test]
async fn retained_messages_reach_every_node_and_a_late_joiner() {
    let mut cluster = TestCluster::start(3).await;
    let (publisher, mut publisher_inbox) = client(&cluster, 0, "retainer").await;
    v5::publish(
        &publisher,
        &mut publisher_inbox,
        "state/a",
        QoS::AtLeastOnce,
        true,
        "one",
    )
    .await;
    v5::publish(
        &publisher,
        &mut publisher_inbox,
        "state/b",
        QoS::AtLeastOnce,
        true,
        "two",
    )
    .await;
    v5::publish(
        &publisher,
        &mut publisher_inbox,
        "state/b",
        QoS::AtLeastOnce,
        true,
        "",
    )
    .await;
    for node in 1..3 {
        wait_retained(&cluster, node, &["state/a=one"]).await;
    }

    cluster.kill(2);
    v5::publish(
        &publisher,
        &mut publisher_inbox,
        "state/c",
        QoS::AtLeastOnce,
        true,
        "three",
    )
    .await;
    cluster.restart(2).await;
    // Ready means it holds every peer's routes; the retained snapshot follows on the same links.
    wait_retained(&cluster, 2, &["state/a=one", "state/c=three"]).await;
}

/// A v5 client with a persistent session, on node `i`.
async fn persistent(cluster: &TestCluster, i: usize, id: &str) -> (AsyncClient, Inbox, bool) {
    let (host, port) = cluster.mqtt(i);
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(std::time::Duration::from_secs(30));
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(3600));
    let (client, inbox, connack) = v5::start(options).await;
    (client, inbox, connack.session_present)
}

/// A client id is one session in the whole cluster: reconnecting to another node resumes it
/// [MQTT-3.1.2-4], Session Present 1 [MQTT-3.2.2-2], with the QoS 1 and 2 messages queued while it
/// was away [MQTT-3.1.2-5] — none lost, none twice — and its subscriptions, which keep working
/// from the new node.
#[tokio::test]
async fn a_session_follows_its_client_to_another_node() {
    let cluster = TestCluster::start(3).await;
    let (first, mut inbox, present) = persistent(&cluster, 0, "wanderer").await;
    assert!(!present);
    subscribe_everywhere(
        &cluster,
        0,
        &first,
        &mut inbox,
        "mail/#",
        QoS::ExactlyOnce,
        1,
    )
    .await;
    v5::disconnect(&first, &mut inbox).await;

    let (publisher, mut publisher_inbox) = client(&cluster, 1, "sender").await;
    for n in 0..20 {
        let qos = if n % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        v5::publish(
            &publisher,
            &mut publisher_inbox,
            "mail/box",
            qos,
            false,
            n.to_string(),
        )
        .await;
    }

    let (again, mut inbox, present) = persistent(&cluster, 2, "wanderer").await;
    assert!(present, "the session moved from node 0 to node 2");
    let queued = v5::expect_publishes(&mut inbox, 20, WAIT).await;
    let payloads: Vec<String> = queued.iter().map(|p| v5::payload(p).to_owned()).collect();
    assert_eq!(payloads, (0..20).map(|n| n.to_string()).collect::<Vec<_>>());
    v5::expect_no_publish(&mut inbox, QUIET).await;

    // The subscription moved too: a message published anywhere now reaches the client on node 2.
    v5::publish(
        &publisher,
        &mut publisher_inbox,
        "mail/box",
        QoS::ExactlyOnce,
        false,
        "after",
    )
    .await;
    let publish = v5::expect_publish(&mut inbox, WAIT).await;
    assert_eq!(v5::payload(&publish), "after");
    v5::expect_no_publish(&mut inbox, QUIET).await;
    drop(again);
}

/// A CONNECT on any node takes over a client id connected on another: the old connection gets
/// DISCONNECT 0x8E Session taken over [MQTT-3.1.4-3].
#[tokio::test]
async fn connecting_on_another_node_takes_the_client_over() {
    let cluster = TestCluster::start(3).await;
    let (_first, mut first_inbox, _) = persistent(&cluster, 0, "twin").await;
    let (_second, _second_inbox, present) = persistent(&cluster, 1, "twin").await;
    assert!(present, "the session was resumed on node 1");
    let reason = v5::expect_server_disconnect(&mut first_inbox, WAIT).await;
    assert_eq!(
        reason,
        rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::SessionTakenOver
    );
}

/// Three CONNECTs with one client id on three nodes at once end with one live connection and one
/// session in the whole cluster.
#[tokio::test]
async fn concurrent_connects_with_one_id_end_with_one_connection() {
    let cluster = TestCluster::start(3).await;
    for round in 0..5 {
        let id = format!("rush-{round}");
        let mut connecting = Vec::new();
        for node in 0..3 {
            let (host, port) = cluster.mqtt(node);
            let mut options = MqttOptions::new(id.clone(), host, port);
            options.set_clean_start(false);
            options.set_session_expiry_interval(Some(3600));
            connecting.push(tokio::spawn(async move { v5::start(options).await }));
        }
        let mut clients = Vec::new();
        for task in connecting {
            clients.push(task.await.expect("connects"));
        }
        // Every loser is told to go; at most WAIT for the settling.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let mut held = 0;
            for node in 0..3 {
                held += cluster.sessions_with(node, &id).await;
            }
            let mut alive = 0;
            for (_, inbox, _) in clients.iter_mut() {
                alive += usize::from(!inbox.has_ended());
            }
            if held == 1 && alive == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: {held} sessions and {alive} live connections for one client id"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The will of a client whose node dies is published once, by another node, once the failure
/// detector has declared the node dead [MQTT-3.1.2-8].
#[tokio::test]
async fn the_will_of_a_client_of_a_dead_node_is_published_once() {
    let mut cluster = TestCluster::start(3).await;
    let (watcher, mut watcher_inbox) = client(&cluster, 0, "watcher").await;
    subscribe_everywhere(
        &cluster,
        0,
        &watcher,
        &mut watcher_inbox,
        "status/#",
        QoS::AtLeastOnce,
        1,
    )
    .await;
    let (host, port) = cluster.mqtt(2);
    let mut options = MqttOptions::new("device", host, port);
    options.set_keep_alive(std::time::Duration::from_secs(30));
    options.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        "status/device",
        "offline",
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let (_device, _device_inbox, _) = v5::start(options).await;
    cluster.wait_kept_wills(1).await;

    cluster.kill(2);
    let will = v5::expect_publish(&mut watcher_inbox, FAILURE_WINDOW).await;
    assert_eq!(
        (v5::topic(&will), v5::payload(&will)),
        ("status/device", "offline")
    );
    v5::expect_no_publish(&mut watcher_inbox, QUIET * 4).await;
}

/// The admin API of any node finds a client connected to another node and disconnects it there
/// (MQTT 5: DISCONNECT 0x98 Administrative action).
/// Connects `id` to node `i` with a persistent session and a will on `status/{id}` published
/// `delay` seconds after its connection is lost.
async fn device_with_will(
    cluster: &TestCluster,
    i: usize,
    id: &str,
    delay: u32,
) -> (AsyncClient, Inbox) {
    let (host, port) = cluster.mqtt(i);
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(std::time::Duration::from_secs(30));
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(3600));
    let properties = rumqttc::v5::mqttbytes::v5::LastWillProperties {
        delay_interval: Some(delay),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    };
    options.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        format!("status/{id}"),
        "offline",
        QoS::AtLeastOnce,
        false,
        Some(properties),
    ));
    let (client, inbox, _) = v5::start(options).await;
    (client, inbox)
}

/// Two devices with a delayed will are connected to a node that dies; one connects again, to
/// another node, within its will delay: its will is not published [MQTT-3.1.3-9]. The other's
/// will, with the same delay, is, and tells the test when the first one's would have been.
#[tokio::test]
async fn the_kept_will_of_a_client_that_came_back_elsewhere_is_not_published() {
    let mut cluster = TestCluster::start(3).await;
    let (watcher, mut watcher_inbox) = client(&cluster, 0, "watcher").await;
    subscribe_everywhere(
        &cluster,
        0,
        &watcher,
        &mut watcher_inbox,
        "status/#",
        QoS::AtLeastOnce,
        1,
    )
    .await;
    const DELAY: u32 = 2;
    let _gone = device_with_will(&cluster, 2, "gone", DELAY).await;
    let _back = device_with_will(&cluster, 2, "back", DELAY).await;
    cluster.wait_kept_wills(2).await;

    cluster.kill(2);
    let _back_again = device_with_will(&cluster, 1, "back", DELAY).await;
    let will = v5::expect_publish(&mut watcher_inbox, FAILURE_WINDOW).await;
    assert_eq!(
        (v5::topic(&will), v5::payload(&will)),
        ("status/gone", "offline")
    );
    v5::expect_no_publish(&mut watcher_inbox, QUIET * 4).await;
}

#[tokio::test]
async fn the_admin_api_finds_and_kicks_a_client_on_another_node() {
    let cluster = TestCluster::start(3).await;
    let (_client, mut inbox, _) = persistent(&cluster, 2, "far-away").await;
    let (status, body) = cluster
        .admin(0, reqwest::Method::GET, "clients/far-away")
        .await;
    assert_eq!(
        (status, body["node"].as_str()),
        (200, Some(cluster.node_id(2).as_str()))
    );
    let (status, body) = cluster
        .admin(0, reqwest::Method::POST, "clients/far-away/kick")
        .await;
    assert_eq!(
        (status, body["node"].as_str()),
        (202, Some(cluster.node_id(2).as_str()))
    );
    let reason = v5::expect_server_disconnect(&mut inbox, WAIT).await;
    assert_eq!(
        reason,
        rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::AdministrativeAction
    );
    let (status, _) = cluster
        .admin(1, reqwest::Method::GET, "clients/nobody")
        .await;
    assert_eq!(status, 404);
}

/// Node `i`'s view of `peer`'s link: a field of its entry in `GET /api/v1/cluster`.
/// A QoS 1 subscriber to `filter` on node 1, whose route node 0 holds, and a publisher on node 0:
/// every message crosses the link (or its proxy) from node 0 to node 1.
async fn far_subscriber_and_near_publisher(
    cluster: &TestCluster,
    filter: &str,
) -> (AsyncClient, Inbox, AsyncClient, Inbox) {
    let (subscriber, mut inbox) = client(cluster, 1, "far-subscriber").await;
    subscribe_everywhere(
        cluster,
        1,
        &subscriber,
        &mut inbox,
        filter,
        QoS::AtLeastOnce,
        1,
    )
    .await;
    let (publisher, publisher_inbox) = client(cluster, 0, "near-publisher").await;
    (subscriber, inbox, publisher, publisher_inbox)
}

async fn link_field(cluster: &TestCluster, i: usize, peer: usize, field: &str) -> u64 {
    let view = cluster.view(i).await;
    let peer_id = cluster.node_id(peer);
    view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["node_id"] == peer_id.as_str())
        .and_then(|m| m[field].as_u64())
        .unwrap_or_default()
}

/// Waits until node `i` has written `count` QoS 1/2 messages to its link to `peer` that the peer
/// has not acknowledged.
async fn wait_unacked(cluster: &TestCluster, i: usize, peer: usize, count: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let unacked = link_field(cluster, i, peer, "unacked").await;
        if unacked == count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {i} has {unacked} unacknowledged messages for node {peer}, not {count}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A peer link breaks while QoS 1 messages written to it have not reached the other node (the
/// proxy in front of node 1 drops them). The link comes back and those messages go again: the
/// subscriber on node 1 gets every message once, in the publisher's order [MQTT-4.6.0-5], as
/// QoS 1 promises it at least once [MQTT-4.3.2-1] with no broker in between losing it.
#[tokio::test]
async fn qos1_messages_on_a_link_that_breaks_are_sent_again_on_the_next() {
    let (cluster, proxy) = TestCluster::start_proxied(2, "relink", "", 1).await;
    let (_subscriber, mut inbox, publisher, mut publisher_inbox) =
        far_subscriber_and_near_publisher(&cluster, "relink/#").await;
    v5::publish(
        &publisher,
        &mut publisher_inbox,
        "relink/0",
        QoS::AtLeastOnce,
        false,
        "0",
    )
    .await;
    v5::expect_publishes(&mut inbox, 1, WAIT).await;

    proxy.hold();
    const HELD: usize = 20;
    for n in 1..=HELD {
        let topic = format!("relink/{n}");
        v5::publish(
            &publisher,
            &mut publisher_inbox,
            &topic,
            QoS::AtLeastOnce,
            false,
            n.to_string(),
        )
        .await;
    }
    wait_unacked(&cluster, 0, 1, HELD as u64).await;
    v5::expect_no_publish(&mut inbox, QUIET).await;
    proxy.cut();

    let received = v5::expect_publishes(&mut inbox, HELD, WAIT).await;
    let payloads: Vec<String> = received.iter().map(|p| v5::payload(p).to_owned()).collect();
    let expected: Vec<String> = (1..=HELD).map(|n| n.to_string()).collect();
    assert_eq!(payloads, expected, "each once, in order");
    v5::expect_no_publish(&mut inbox, QUIET).await;
    wait_unacked(&cluster, 0, 1, 0).await;
}

/// With `cluster.acknowledge: cluster`, a publisher's PUBACK waits until the node of the
/// subscriber holds the message: not while the link to it holds the message back, and as soon as
/// the message went again on a new link and arrived. PUBACKs keep the order of their PUBLISHes
/// [MQTT-4.6.0-2], so a message for this node alone, published behind, is acknowledged behind it.
#[tokio::test]
async fn with_cluster_acknowledgement_a_puback_waits_until_the_other_node_holds_the_message() {
    let (cluster, proxy) =
        TestCluster::start_proxied(2, "strict", "  acknowledge: cluster\n", 1).await;
    let (_subscriber, mut inbox, publisher, mut publisher_inbox) =
        far_subscriber_and_near_publisher(&cluster, "strict/far").await;
    v5::publish(
        &publisher,
        &mut publisher_inbox,
        "strict/far",
        QoS::AtLeastOnce,
        false,
        "first",
    )
    .await;
    v5::expect_publishes(&mut inbox, 1, WAIT).await;

    proxy.hold();
    publisher
        .publish("strict/far", QoS::AtLeastOnce, false, "held")
        .await
        .unwrap();
    publisher
        .publish("strict/near-only", QoS::AtLeastOnce, false, "behind")
        .await
        .unwrap();
    wait_unacked(&cluster, 0, 1, 1).await;
    publisher_inbox
        .nothing_matching("PUBACK", QUIET, |p| matches!(p, Packet::PubAck(_)))
        .await;
    proxy.cut();

    let received = v5::expect_publishes(&mut inbox, 1, WAIT).await;
    assert_eq!(v5::payload(&received[0]), "held");
    let reasons: Vec<PubAckReason> = [
        publisher_inbox
            .next_matching("PUBACK", WAIT, |p| match p {
                Packet::PubAck(ack) => Some(ack.reason),
                _ => None,
            })
            .await,
        publisher_inbox
            .next_matching("PUBACK", WAIT, |p| match p {
                Packet::PubAck(ack) => Some(ack.reason),
                _ => None,
            })
            .await,
    ]
    .into();
    // The second had no subscriber anywhere; its acknowledgement says so, and comes second.
    assert_eq!(
        reasons,
        [PubAckReason::Success, PubAckReason::NoMatchingSubscribers]
    );
}

/// With the default `cluster.acknowledge: local`, the publisher is acknowledged once its own node
/// has the message, while the link to the subscriber's node still holds it back.
#[tokio::test]
async fn with_local_acknowledgement_a_puback_does_not_wait_for_the_other_node() {
    let (cluster, proxy) = TestCluster::start_proxied(2, "local", "", 1).await;
    let (_subscriber, mut inbox, publisher, mut publisher_inbox) =
        far_subscriber_and_near_publisher(&cluster, "local/far").await;
    proxy.hold();
    v5::publish(
        &publisher,
        &mut publisher_inbox,
        "local/far",
        QoS::AtLeastOnce,
        false,
        "held",
    )
    .await;
    v5::expect_no_publish(&mut inbox, QUIET).await;
    proxy.cut();
    let received = v5::expect_publishes(&mut inbox, 1, WAIT).await;
    assert_eq!(v5::payload(&received[0]), "held");
}

/// A publisher on node 0 faster than its subscriber on node 1 is slowed down as it would be on one
/// node, instead of filling the subscriber's queue on the other node until QoS 1 messages are
/// dropped: node 1 stops reading the link while the subscriber is backlogged, node 0's queue for
/// node 1 fills, and the publisher is not read from until it drains. Every message arrives, once
/// and in order [MQTT-4.6.0-5], with none dropped though the subscriber's queue (2,000 messages)
/// is far smaller than what was published.
#[tokio::test]
async fn a_publisher_faster_than_a_subscriber_on_another_node_is_slowed_not_dropped() {
    const MESSAGES: usize = 6_000;
    let limits = "  peer_queue_messages: 400\n\
                  limits:\n  max_queued_messages: 2000\n  backlog_high_water: 200\n";
    let cluster = TestCluster::start_with(2, "slowed", limits).await;
    let (host, port) = cluster.mqtt(1);
    let mut options = MqttOptions::new("slow-subscriber", host, port);
    options.set_keep_alive(std::time::Duration::from_secs(30));
    options.set_manual_acks(true);
    options.set_receive_maximum(Some(20));
    let (subscriber, mut inbox, _) = v5::start(options).await;
    subscribe_everywhere(
        &cluster,
        1,
        &subscriber,
        &mut inbox,
        "slowed/#",
        QoS::AtLeastOnce,
        1,
    )
    .await;
    let (publisher, _publisher_inbox) = client(&cluster, 0, "fast-publisher").await;
    let publishing = tokio::spawn(async move {
        for n in 0..MESSAGES {
            publisher
                .publish("slowed/x", QoS::AtLeastOnce, false, n.to_string())
                .await
                .expect("publish queued");
        }
    });
    // The subscriber takes about 5,000 messages a second: acknowledging each lets the broker send
    // the next [MQTT-4.9.0-1], and it sleeps a millisecond every fifth.
    let mut payloads = Vec::with_capacity(MESSAGES);
    while payloads.len() < MESSAGES {
        let publish = v5::expect_publish(&mut inbox, WAIT).await;
        subscriber.ack(&publish).await.expect("ack queued");
        payloads.push(v5::payload(&publish).to_owned());
        if payloads.len() % 5 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    let expected: Vec<String> = (0..MESSAGES).map(|n| n.to_string()).collect();
    let first_wrong = payloads.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(
        first_wrong, None,
        "each message once, in order: {first_wrong:?}"
    );
    v5::expect_no_publish(&mut inbox, QUIET).await;
    publishing.await.expect("publisher task");
}
