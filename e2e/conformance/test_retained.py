"""Retained messages: store, replace, delete, the RETAIN flag on delivery, Retain Handling.

Each test uses its own topic subtree, so one broker serves the module. A test
that needs "no retained message arrived" subscribes to a subtree that also
holds a sync topic and checks after the sync marker came in.
"""

import time

import pytest

from clients import app_messages, connect_v5, connect_v31, connect_v311, sync, wait_for

CONNECT = {5: connect_v5, 4: connect_v311, 3: connect_v31}
VERSIONS = [pytest.param(5, id="v5"), pytest.param(4, id="v311"), pytest.param(3, id="v31")]


def client(version, port, cid, **kw):
    return CONNECT[version](port, cid[-23:], **kw)


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_delivered_on_subscribe_with_retain_flag(broker, uid, version):
    """v5 [MQTT-3.3.1-5] [MQTT-3.3.1-9], v3.1.1 [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8]:
    a retained message is stored and sent to a new subscription with RETAIN 1, at the
    minimum of its QoS and the subscription's."""
    topic = f"ret/{uid}"
    pub = client(version, broker.port, uid + "p")
    pub.publish(topic, b"kept", qos=1, retain=True)
    for sub_qos in (0, 1, 2):
        sub = client(version, broker.port, f"{uid}s{sub_qos}")
        sub.subscribe(topic, qos=sub_qos)
        msg = sub.wait_message(topic)
        assert (msg.payload, msg.retain, msg.qos) == (b"kept", True, min(1, sub_qos)), msg


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_replaced_by_newer(broker, uid, version):
    """v5 [MQTT-3.3.1-5], v3.1.1 [MQTT-3.3.1-5] [MQTT-3.3.1-7]: a new retained message
    (QoS 0 or not) replaces the one stored for the topic."""
    topic = f"rep/{uid}"
    pub = client(version, broker.port, uid + "p")
    pub.publish(topic, b"first", qos=1, retain=True)
    pub.publish(topic, b"second", qos=0, retain=True)
    sub = client(version, broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    sub.subscribe(f"{topic}/sync", qos=1)
    sync(pub, sub, f"{topic}/sync", qos=1)
    assert [(m.payload, m.retain) for m in app_messages(sub, topic)] == [(b"second", True)]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_deleted_by_empty_payload(broker, uid, version):
    """v5 [MQTT-3.3.1-6] [MQTT-3.3.1-7], v3.1.1 [MQTT-3.3.1-10] [MQTT-3.3.1-11]: a retained
    PUBLISH with an empty payload is delivered normally to current subscribers, removes the
    stored message, and is not itself stored."""
    topic = f"del/{uid}"
    pub = client(version, broker.port, uid + "p")
    pub.publish(topic, b"doomed", qos=1, retain=True)
    live = client(version, broker.port, uid + "l")
    live.subscribe(topic, qos=1)
    assert live.wait_message(topic).payload == b"doomed"
    pub.publish(topic, b"", qos=1, retain=True)
    wait_for(lambda: len(live.received(topic)) == 2, message="the empty message, delivered live")
    assert live.received(topic)[1].payload == b""
    late = client(version, broker.port, uid + "n")
    late.subscribe(topic, qos=1)
    late.subscribe(f"{topic}/sync", qos=1)
    sync(pub, late, f"{topic}/sync", qos=1)
    assert app_messages(late, topic) == [], "retained message survived an empty retained PUBLISH"


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_untouched_by_non_retained_publish(broker, uid, version):
    """v5 [MQTT-3.3.1-8], v3.1.1 [MQTT-3.3.1-12]: a PUBLISH with RETAIN 0 is not stored and
    does not remove or replace the retained message (not even with an empty payload)."""
    topic = f"keep/{uid}"
    pub = client(version, broker.port, uid + "p")
    pub.publish(topic, b"retained", qos=1, retain=True)
    pub.publish(topic, b"transient", qos=1, retain=False)
    pub.publish(topic, b"", qos=1, retain=False)
    sub = client(version, broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    sub.subscribe(f"{topic}/sync", qos=1)
    sync(pub, sub, f"{topic}/sync", qos=1)
    assert [m.payload for m in app_messages(sub, topic)] == [b"retained"]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_live_delivery_has_retain_0(broker, uid, version):
    """v5 [MQTT-3.3.1-12], v3.1.1 [MQTT-3.3.1-9]: a retained PUBLISH forwarded to an existing
    subscription (Retain As Published 0) has RETAIN 0."""
    topic = f"live/{uid}"
    sub = client(version, broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    client(version, broker.port, uid + "p").publish(topic, b"x", qos=1, retain=True)
    assert sub.wait_message(topic).retain is False


def test_retain_as_published_keeps_flag(broker, uid):
    """v5 [MQTT-3.3.1-13] [MQTT-3.3.1-12]: with Retain As Published 1 the RETAIN flag is
    forwarded as received (1 for a retained PUBLISH, 0 otherwise); with 0 it is cleared."""
    topic = f"rap/{uid}"
    rap = connect_v5(broker.port, uid + "r")
    rap.subscribe(topic, qos=1, retain_as_published=True)
    plain = connect_v5(broker.port, uid + "n")
    plain.subscribe(topic, qos=1)
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(topic, b"r", qos=1, retain=True)
    pub.publish(topic, b"n", qos=1, retain=False)
    assert [(m.payload, m.retain) for m in rap.wait_messages(2, topic)] == [(b"r", True),
                                                                           (b"n", False)]
    assert [(m.payload, m.retain) for m in plain.wait_messages(2, topic)] == [(b"r", False),
                                                                             (b"n", False)]


def test_retain_handling_0_sends_on_every_subscribe(broker, uid):
    """v5 [MQTT-3.3.1-9] [MQTT-3.8.4-4]: Retain Handling 0 sends the retained messages on
    every SUBSCRIBE, including one that replaces an existing subscription."""
    topic = f"rh0/{uid}"
    connect_v5(broker.port, uid + "p").publish(topic, b"r", qos=1, retain=True)
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=1, retain_handling=0)
    sub.wait_message(topic)
    sub.subscribe(topic, qos=1, retain_handling=0)
    msgs = sub.wait_messages(2, topic)
    assert all(m.retain and m.payload == b"r" for m in msgs), msgs


def test_retain_handling_1_sends_only_for_new_subscription(broker, uid):
    """v5 [MQTT-3.3.1-10]: Retain Handling 1 sends retained messages only if the subscription
    did not exist; re-subscribing sends none."""
    topic = f"rh1/{uid}"
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(topic, b"r", qos=1, retain=True)
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(f"{topic}/sync", qos=1)
    sub.subscribe(topic, qos=1, retain_handling=1)
    sub.wait_message(topic)
    sub.subscribe(topic, qos=1, retain_handling=1)
    sync(pub, sub, f"{topic}/sync", qos=1)
    assert len(app_messages(sub, topic)) == 1, app_messages(sub, topic)


def test_retain_handling_2_sends_none(broker, uid):
    """v5 [MQTT-3.3.1-11]: Retain Handling 2 sends no retained messages; live ones flow."""
    topic = f"rh2/{uid}"
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(topic, b"r", qos=1, retain=True)
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=1, retain_handling=2)
    pub.publish(topic, b"live", qos=1)
    assert [m.payload for m in sub.wait_messages(1, topic)] == [b"live"]
    sync(pub, sub, topic, qos=1)
    assert [m.payload for m in app_messages(sub, topic)] == [b"live"]


def test_retained_matched_by_wildcard_subscription(broker, uid):
    """v5 [MQTT-3.3.1-9] [MQTT-3.3.2-3]: a wildcard subscription receives every matching
    retained message, each on its own topic, and none outside the filter."""
    base = f"rw/{uid}"
    pub = connect_v5(broker.port, uid + "p")
    topics = [f"{base}/a", f"{base}/b/c", f"{base}/b/d", f"{base}x/no"]
    for t in topics:
        pub.publish(t, t.encode(), qos=1, retain=True)
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(f"{base}/#", qos=1)
    sync(pub, sub, f"{base}/sync", qos=1)
    got = sorted(m.topic for m in app_messages(sub) if m.retain)
    assert got == sorted(topics[:3]), got
    assert all(m.payload == m.topic.encode() for m in app_messages(sub))


def test_retained_survives_publisher_session(broker, uid):
    """v3.1.1 [MQTT-3.1.2-7]: retained messages are not part of the session; they stay when
    the publishing client's session ends."""
    topic = f"rs/{uid}"
    pub = connect_v311(broker.port, uid + "p", clean_session=True)
    pub.publish(topic, b"stay", qos=1, retain=True)
    pub.disconnect()
    sub = connect_v311(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    assert sub.wait_message(topic).payload == b"stay"


@pytest.mark.slow_timer
def test_retained_message_expires(broker, uid):
    """v5 [MQTT-3.3.2-5]: a retained message whose Message Expiry Interval (1 s) has passed is
    no longer sent to new subscribers."""
    topic = f"rexp/{uid}"
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(topic, b"short", qos=1, retain=True, MessageExpiryInterval=1)
    pub.publish(f"{topic}/long", b"long", qos=1, retain=True, MessageExpiryInterval=60)
    time.sleep(2.2)
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(f"{topic}/#", qos=1)
    sub.subscribe(topic, qos=1)
    sync(pub, sub, f"{topic}/sync", qos=1)
    assert [m.payload for m in app_messages(sub)] == [b"long"]


@pytest.mark.slow_timer
def test_retained_message_expiry_counts_down(broker, uid):
    """v5 [MQTT-3.3.2-6]: a retained message is sent with the Message Expiry Interval it has
    left, i.e. less than the original after waiting in the server."""
    topic = f"rcd/{uid}"
    connect_v5(broker.port, uid + "p").publish(topic, b"x", qos=1, retain=True,
                                               MessageExpiryInterval=30)
    time.sleep(2.1)
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    left = sub.wait_message(topic).props.get("MessageExpiryInterval")
    assert left is not None and 20 <= left <= 28, f"expiry forwarded as {left}"
