"""Publish/subscribe through paho-mqtt (v5, v3.1.1, v3.1): QoS, matching, options, properties.

Tests share one broker per module and keep apart by using topics and client
ids built from the `uid` fixture. "Nothing else arrived" is checked with
`sync`: a marker published after the event on a topic the subscriber has,
so that once the marker is in, the earlier message would have been too.
"""

import pytest

import rawmqtt as r
from clients import app_messages, connect_v5, connect_v31, connect_v311, sync, wait_for
from expect import xfail_on_mosquitto

CONNECT = {5: connect_v5, 4: connect_v311, 3: connect_v31}
VERSION_IDS = {5: "v5", 4: "v311", 3: "v31"}


def client(version, port, cid, **kw):
    return CONNECT[version](port, cid[-23:], **kw)


# -- QoS ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sub_qos", [0, 1, 2], ids=lambda q: f"subq{q}")
@pytest.mark.parametrize("pub_qos", [0, 1, 2], ids=lambda q: f"pubq{q}")
@pytest.mark.parametrize("sub_version", [5, 4, 3], ids=lambda v: f"sub{VERSION_IDS[v]}")
@pytest.mark.parametrize("pub_version", [5, 4, 3], ids=lambda v: f"pub{VERSION_IDS[v]}")
def test_pubsub_qos_delivered_at_minimum(broker, uid, pub_version, sub_version, pub_qos,
                                         sub_qos):
    """v5 [MQTT-3.8.4-8] [MQTT-3.8.4-7] [MQTT-3.3.4-1] [MQTT-3.3.2-3],
    v3.1.1 [MQTT-3.8.4-6] [MQTT-3.3.4-1] [MQTT-3.3.2-3]: the subscription is granted the
    requested QoS and a message arrives, on the subscribed topic, at the minimum of the
    published QoS and the granted QoS — across all protocol versions."""
    topic = f"qos/{uid}"
    sub = client(sub_version, broker.port, uid + "s")
    assert sub.subscribe(topic, qos=sub_qos) == [sub_qos]
    pub = client(pub_version, broker.port, uid + "p")
    pub.publish(topic, b"payload", qos=pub_qos)
    msg = sub.wait_message(topic)
    assert msg.payload == b"payload"
    assert msg.qos == min(pub_qos, sub_qos), f"delivered at QoS {msg.qos}"
    assert msg.retain is False and msg.dup is False


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_pubsub_messages_in_order_per_topic(broker, uid, version):
    """v5 [MQTT-4.6.0-5] [MQTT-4.6.0-6], v3.1.1 [MQTT-4.6.0-5] [MQTT-4.6.0-6]: messages from
    one publisher on one topic reach a subscriber in the order they were sent, for each
    QoS (100 pipelined messages per QoS)."""
    sub = client(version, broker.port, uid + "s")
    pub = client(version, broker.port, uid + "p")
    for qos in (0, 1, 2):
        topic = f"order/{uid}/{qos}"
        sub.subscribe(topic, qos=qos)
        infos = [pub.publish(topic, str(i).encode(), qos=qos, wait=False) for i in range(100)]
        for info in infos:
            info.wait_for_publish(10)
        got = [int(m.payload) for m in sub.wait_messages(100, topic, timeout=15)]
        assert got == list(range(100)), f"QoS {qos} order broken: {got}"


def test_pubsub_qos1_and_qos2_each_delivered_once(broker, uid):
    """v5 [MQTT-4.3.3-10] [MQTT-4.3.2-5] [MQTT-3.3.1-1]: with no reconnect, every QoS 1/2
    message arrives once and never with DUP set."""
    topic = f"once/{uid}"
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=2)
    pub = connect_v5(broker.port, uid + "p")
    for i in range(30):
        pub.publish(topic, f"{i}".encode(), qos=1 + i % 2)
    sub.wait_messages(30, topic)
    sync(pub, sub, topic, qos=2)
    got = app_messages(sub, topic)
    # paho reports a QoS 2 message only after PUBREL, so order across QoS levels is not
    # what this test checks ([MQTT-4.6.0-5] orders per topic *and* QoS).
    assert sorted(int(m.payload) for m in got) == list(range(30))
    assert not any(m.dup for m in got)


def test_pubsub_large_payload_roundtrip(broker, uid):
    """v5 §3.3.3: the payload is opaque bytes and is delivered unchanged (256 KiB, all values)."""
    topic = f"big/{uid}"
    payload = bytes(range(256)) * 1024
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    connect_v5(broker.port, uid + "p").publish(topic, payload, qos=1)
    assert sub.wait_message(topic, timeout=10).payload == payload


# -- topic matching ------------------------------------------------------------------------

MATCHES = [
    ("sport/tennis/player1/#", ["sport/tennis/player1", "sport/tennis/player1/ranking",
                                "sport/tennis/player1/score/wimbledon"],
     ["sport/tennis/player2", "sport/tennis"]),
    ("sport/+", ["sport/", "sport/x"], ["sport", "sport/x/y"]),
    ("+/+", ["/finance", "a/b"], ["a", "a/b/c"]),
    ("/+", ["/finance"], ["finance", "a/b"]),
    ("a/+/c", ["a/b/c", "a//c"], ["a/b/c/d", "a/c"]),
    ("Case/x", ["Case/x"], ["case/x", "CASE/x"]),
    ("sp ace/ü", ["sp ace/ü"], ["space/ü", "sp ace/u"]),
]


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
@pytest.mark.parametrize("topic_filter,hits,misses", MATCHES, ids=[m[0] for m in MATCHES])
def test_topic_filter_matching(broker, uid, version, topic_filter, hits, misses):
    """v5 [MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-4.7.3-4] [MQTT-3.3.2-3], v3.1.1 [MQTT-4.7.1-2]
    [MQTT-4.7.1-3] [MQTT-4.7.3-4]: "#" matches the parent level and any number of levels,
    "+" exactly one (possibly empty) level; matching is exact, case-sensitive, with no
    normalisation."""
    prefix = f"m{uid}/"
    sub = client(version, broker.port, uid + "s")
    sub.subscribe(prefix + topic_filter, qos=1)
    sub.subscribe(prefix + "sync", qos=1)
    pub = client(version, broker.port, uid + "p")
    for topic in misses + hits:
        pub.publish(prefix + topic, topic.encode(), qos=1)
    sync(pub, sub, prefix + "sync", qos=1)
    got = sorted(m.topic[len(prefix):] for m in app_messages(sub) if m.topic != prefix + "sync")
    assert got == sorted(hits), f"{topic_filter!r} matched {got}, expected {sorted(hits)}"


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_topic_bom_not_stripped(broker, uid, version):
    """v5 [MQTT-1.5.4-3], v3.1.1 [MQTT-1.5.3-3]: 0xEF 0xBB 0xBF is U+FEFF wherever it appears
    and is not skipped or stripped: "\ufeffx" and "x" are different topics."""
    base = f"bom/{uid}"
    sub = client(version, broker.port, uid + "s")
    sub.subscribe(f"{base}/\ufeffx", qos=1)
    sub.subscribe(f"{base}/sync", qos=1)
    pub = client(version, broker.port, uid + "p")
    pub.publish(f"{base}/x", b"plain", qos=1)
    pub.publish(f"{base}/\ufeffx", b"bom", qos=1)
    sync(pub, sub, f"{base}/sync", qos=1)
    got = [(m.topic, m.payload) for m in app_messages(sub) if m.topic != f"{base}/sync"]
    assert got == [(f"{base}/\ufeffx", b"bom")], got


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_topic_dollar_not_matched_by_leading_wildcards(fresh_broker, uid, version):
    """v5 [MQTT-4.7.2-1], v3.1.1 [MQTT-4.7.2-1]: filters starting with "#" or "+" do not match
    topic names starting with "$" (here the broker's own $SYS topics), while "$SYS/#" does."""
    wild = client(version, fresh_broker.port, uid + "w")
    wild.subscribe("#", qos=0)
    wild.subscribe("+/broker/#", qos=0)
    sys_sub = client(version, fresh_broker.port, uid + "y")
    sys_sub.subscribe("$SYS/#", qos=0)
    wait_for(lambda: len(sys_sub.received()) >= 3, timeout=5, message="$SYS messages")
    pub = client(version, fresh_broker.port, uid + "p")
    sync(pub, wild, f"d/{uid}")
    leaked = [m.topic for m in wild.received() if m.topic.startswith("$")]
    assert leaked == [], f"'#' or '+/…' matched $-topics: {leaked[:5]}"


def test_topic_dollar_sys_publish_from_client_not_routed_to_wildcard(broker, uid):
    """v5 [MQTT-4.7.2-1]: a "$"-topic published by a client is not delivered to "#"."""
    wild = connect_v5(broker.port, uid + "w")
    wild.subscribe(f"#", qos=0)
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(f"${uid}/x", b"dollar", qos=0)
    sync(pub, wild, f"d/{uid}")
    assert [m.topic for m in wild.received() if m.topic.startswith("$")] == []


# -- overlapping subscriptions, subscription identifiers --------------------------------------

@pytest.mark.parametrize("version", [
    pytest.param(5, id="v5"),
    pytest.param(4, id="v311", marks=xfail_on_mosquitto(
        "v3.1.1 [MQTT-3.3.5-1]", "for a 3.1.1 client it sends one copy at the QoS of the first "
        "matching subscription (0), not the maximum (2)")),
])
def test_overlapping_subscriptions_respect_maximum_qos(broker, uid, version):
    """v5 [MQTT-3.3.4-2], v3.1.1 [MQTT-3.3.5-1]: a message matching several subscriptions of one
    client is delivered respecting the maximum QoS of them (at least one copy at QoS 2; extra
    copies, if any, at the other subscriptions' QoS)."""
    base = f"ov/{uid}"
    sub = client(version, broker.port, uid + "s")
    sub.subscribe(f"{base}/+", qos=0)
    sub.subscribe(f"{base}/#", qos=2)
    pub = client(version, broker.port, uid + "p")
    pub.publish(f"{base}/x", b"m", qos=2)
    wait_for(lambda: any(m.qos == 2 for m in sub.received(f"{base}/x")),
             message="a copy at QoS 2")
    pub.publish(f"{base}/x", b"sync-end", qos=2)
    wait_for(lambda: any(m.qos == 2 and m.payload == b"sync-end" for m in sub.received()),
             message="the second message at QoS 2")
    copies = [m for m in sub.received(f"{base}/x") if m.payload == b"m"]
    assert len(copies) <= 2 and sorted(m.qos for m in copies)[-1] == 2, copies


def test_subscription_identifiers_delivered(broker, uid):
    """v5 [MQTT-3.3.4-3] [MQTT-3.3.4-4] [MQTT-3.3.4-5]: the Subscription Identifiers of the
    matching subscriptions come with the message — all of them on a single copy, or each on
    its own copy — and a subscription without one adds none."""
    base = f"sid/{uid}"
    sub = connect_v5(broker.port, uid + "s")
    assert sub.connack_props.get("SubscriptionIdentifierAvailable", 1) == 1
    sub.subscribe(f"{base}/#", qos=1, sub_id=7)
    sub.subscribe(f"{base}/+/c", qos=1, sub_id=268435455)
    sub.subscribe(f"{base}/b/+", qos=1)
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(f"{base}/b/c", b"x", qos=1)
    sync(pub, sub, f"{base}/sync", qos=1)
    copies = app_messages(sub, f"{base}/b/c")
    ids = [sorted(m.props.get("SubscriptionIdentifier", [])) for m in copies]
    if len(copies) == 1:
        assert ids == [[7, 268435455]], ids
    else:
        assert sorted(map(tuple, ids)) == sorted([(7,), (268435455,), ()]), ids
    only_hash = [m for m in sub.received(f"{base}/sync")]
    assert all(m.props.get("SubscriptionIdentifier") == [7] for m in only_hash), only_hash


def test_subscription_replaced_by_identical_filter(broker, uid):
    """v5 [MQTT-3.8.4-3], v3.1.1 [MQTT-3.8.4-3]: subscribing again to an identical filter
    replaces the subscription (new QoS and identifier; one copy per message)."""
    topic = f"rep/{uid}"
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=0, sub_id=1)
    assert sub.subscribe(topic, qos=2, sub_id=2) == [2]
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(topic, b"x", qos=2)
    # A QoS 2 marker: paho hands a QoS 2 message to the application only at PUBREL, so a QoS 0
    # marker could overtake it inside the client.
    sync(pub, sub, topic, qos=2)
    copies = app_messages(sub, topic)
    assert len(copies) == 1, copies
    assert copies[0].qos == 2 and copies[0].props.get("SubscriptionIdentifier") == [2]


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_unsubscribe_stops_delivery(broker, uid, version):
    """v5 [MQTT-3.10.4-1] [MQTT-3.10.4-2] [MQTT-3.10.4-4], v3.1.1 [MQTT-3.10.4-1]
    [MQTT-3.10.4-2] [MQTT-3.10.4-4]: after UNSUBACK, messages on the removed filter stop;
    other subscriptions go on."""
    base = f"uns/{uid}"
    sub = client(version, broker.port, uid + "s")
    sub.subscribe(f"{base}/a", qos=1)
    sub.subscribe(f"{base}/keep", qos=1)
    pub = client(version, broker.port, uid + "p")
    pub.publish(f"{base}/a", b"before", qos=1)
    sub.wait_message(f"{base}/a")
    sub.unsubscribe(f"{base}/a")
    pub.publish(f"{base}/a", b"after", qos=1)
    sync(pub, sub, f"{base}/keep", qos=1)
    assert [m.payload for m in sub.received(f"{base}/a")] == [b"before"]


def test_unsubscribe_compares_filters_literally(broker, uid):
    """v5 [MQTT-3.10.4-1]: UNSUBSCRIBE removes only a filter identical character by
    character; unsubscribing "x/+" leaves "x/#" in place."""
    base = f"unl/{uid}"
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(f"{base}/#", qos=0)
    sub.unsubscribe(f"{base}/+")
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(f"{base}/x", b"still", qos=0)
    assert sub.wait_message(f"{base}/x").payload == b"still"


# -- subscription options ---------------------------------------------------------------------

def test_no_local_suppresses_own_messages(broker, uid):
    """v5 [MQTT-3.8.3-3]: with No Local, the client's own publications are not sent back to
    it; publications from other clients are."""
    topic = f"nl/{uid}"
    me = connect_v5(broker.port, uid + "me")
    me.subscribe(topic, qos=1, no_local=True)
    other = connect_v5(broker.port, uid + "ot")
    me.publish(topic, b"mine", qos=1)
    other.publish(topic, b"theirs", qos=1)
    me.wait_message(topic)
    sync(other, me, topic, qos=1)
    assert [m.payload for m in app_messages(me, topic)] == [b"theirs"]


def test_no_local_off_delivers_own_messages(broker, uid):
    """v5 §3.8.3.1: without No Local a client receives its own publications."""
    topic = f"nlo/{uid}"
    me = connect_v5(broker.port, uid + "me")
    me.subscribe(topic, qos=1)
    me.publish(topic, b"mine", qos=1)
    assert me.wait_message(topic).payload == b"mine"


# -- properties pass through ---------------------------------------------------------------------

def test_publish_properties_forwarded_unaltered(broker, uid):
    """v5 [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18]
    [MQTT-3.3.2-20]: Payload Format Indicator, Response Topic, Correlation Data, Content
    Type and User Properties (order and duplicate keys kept) reach the subscriber unaltered."""
    topic = f"props/{uid}"
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    user = [("k", "v1"), ("a", "b"), ("k", "v2"), ("ü", "ß")]
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(topic, "héllo".encode(), qos=1, PayloadFormatIndicator=1,
                ResponseTopic=f"reply/{uid}", CorrelationData=b"\x00\x01corr\xff",
                ContentType="text/plain; charset=utf-8", UserProperty=user)
    props = sub.wait_message(topic).props
    assert props.get("PayloadFormatIndicator") == 1
    assert props.get("ResponseTopic") == f"reply/{uid}"
    assert props.get("CorrelationData") == b"\x00\x01corr\xff"
    assert props.get("ContentType") == "text/plain; charset=utf-8"
    assert props.get("UserProperty") == user


def test_publish_properties_reach_v311_subscriber_as_plain_message(broker, uid):
    """v3.1.1 [MQTT-3.3.2-3]: a v5 message with properties reaches a 3.1.1 subscriber as a
    plain message with the same topic and payload."""
    topic = f"p311/{uid}"
    sub = connect_v311(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    connect_v5(broker.port, uid + "p").publish(topic, b"plain", qos=1, ContentType="x/y",
                                               UserProperty=[("a", "b")])
    msg = sub.wait_message(topic)
    assert msg.payload == b"plain" and msg.props == {}


def test_topic_alias_from_paho_client(broker, uid):
    """v5 [MQTT-3.3.2-12] [MQTT-3.2.2-17]: paho sets Topic Alias 1 with the topic, then
    publishes with an empty topic and the alias; the subscriber sees the full topic name."""
    topic = f"palias/{uid}"
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    pub = connect_v5(broker.port, uid + "p")
    assert pub.connack_props.get("TopicAliasMaximum", 0) >= 1, pub.connack_props
    pub.publish(topic, b"named", qos=1, TopicAlias=1)
    pub.publish("", b"aliased", qos=1, TopicAlias=1)
    got = [(m.topic, m.payload) for m in sub.wait_messages(2, topic)]
    assert got == [(topic, b"named"), (topic, b"aliased")]


def test_message_expiry_forwarded_to_live_subscriber(broker, uid):
    """v5 [MQTT-3.3.2-6]: the Message Expiry Interval sent on is the received value minus the
    time spent waiting in the server — for immediate delivery, at most the original."""
    topic = f"mei/{uid}"
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    connect_v5(broker.port, uid + "p").publish(topic, b"x", qos=1, MessageExpiryInterval=120)
    value = sub.wait_message(topic).props.get("MessageExpiryInterval")
    assert value is not None and 118 <= value <= 120, value


# -- CONNACK -------------------------------------------------------------------------------------

def test_connack_v5_properties_describe_capabilities(broker, uid):
    """v5 [MQTT-3.2.2-9] [MQTT-3.2.2-16] §3.2.2.3: CONNACK properties are well-formed and say
    the server supports what Tern supports: QoS 2, retain, wildcard, subscription identifier
    and shared subscriptions (absent means available); Receive Maximum and Topic Alias
    Maximum, when present, are in range."""
    with r.RawClient(broker.port) as c:
        connack = c.handshake(uid)
        props = dict(connack.props)
        assert props.get(r.MAXIMUM_QOS, 2) == 2, props
        assert props.get(r.RETAIN_AVAILABLE, 1) == 1, props
        assert props.get(r.WILDCARD_SUBSCRIPTION_AVAILABLE, 1) == 1, props
        assert props.get(r.SUBSCRIPTION_IDENTIFIER_AVAILABLE, 1) == 1, props
        assert props.get(r.SHARED_SUBSCRIPTION_AVAILABLE, 1) == 1, props
        assert props.get(r.RECEIVE_MAXIMUM, 65535) >= 1, props
        assert 0 <= props.get(r.TOPIC_ALIAS_MAXIMUM, 0) <= 65535, props
        assert r.ASSIGNED_CLIENT_IDENTIFIER not in props, "assigned an id to a client that had one"
        assert r.AUTHENTICATION_METHOD not in props, "[MQTT-4.12.0-6] auth method without request"


def test_connack_no_response_information_unless_requested(broker, uid):
    """v5 [MQTT-3.1.2-28]: with Request Response Information 0 (the default) the CONNACK
    carries no Response Information."""
    with r.RawClient(broker.port) as c:
        connack = c.handshake(uid, props=[(r.REQUEST_RESPONSE_INFORMATION, 0)])
        assert connack.prop(r.RESPONSE_INFORMATION) is None, connack


def test_request_problem_information_0_no_reason_strings(broker, uid):
    """v5 [MQTT-3.1.2-29]: with Request Problem Information 0, no Reason String or User
    Property is sent on packets other than PUBLISH, CONNACK and DISCONNECT."""
    with r.RawClient(broker.port) as c:
        c.handshake(uid, props=[(r.REQUEST_PROBLEM_INFORMATION, 0)])
        c.send(r.subscribe(1, [(f"rpi/{uid}", 1)]))
        c.send(r.unsubscribe(2, [f"rpi/{uid}/none"]))
        c.send(r.ack(r.PUBREL, 77))
        c.send(r.publish(f"rpi/{uid}", b"x", qos=2, packet_id=78))
        for t in (r.SUBACK, r.UNSUBACK, r.PUBCOMP, r.PUBREC):
            p = c.expect(t, skip=(r.PUBLISH,))
            assert p.prop(r.REASON_STRING) is None and p.prop(r.USER_PROPERTY) is None, p
