"""Sessions: Clean Start / Clean Session, Session Present, expiry, takeover, redelivery,
queued messages and their expiry."""

import time

import pytest

import expect
import rawmqtt as r
from clients import app_messages, connect_v5, connect_v311, sync
from expect import xfail_on_mosquitto


def persistent_v5(port, cid, expiry=60, clean_start=False, **kw):
    return connect_v5(port, cid, clean_start=clean_start, SessionExpiryInterval=expiry, **kw)


# -- Session Present, resumption --------------------------------------------------------------

def test_session_v5_resumed_with_queued_messages(broker, uid):
    """v5 [MQTT-3.1.2-5] [MQTT-3.1.2-23] [MQTT-3.2.2-2] [MQTT-3.2.2-3] [MQTT-4.5.0-1]: with
    Session Expiry > 0 the session outlives the connection: QoS 1/2 messages published while
    the client is away are queued and delivered on reconnect with Clean Start 0 and
    Session Present 1; the subscription is still in place."""
    topic = f"sess/{uid}"
    sub = persistent_v5(broker.port, uid + "s", clean_start=True)
    assert sub.session_present is False
    sub.subscribe(topic, qos=2)
    sub.disconnect()
    pub = connect_v5(broker.port, uid + "p")
    for i, qos in enumerate((1, 2, 1)):
        pub.publish(topic, f"q{i}".encode(), qos=qos)
    sub = persistent_v5(broker.port, uid + "s")
    assert sub.session_present is True
    # sorted: paho hands a QoS 2 message to the application only after PUBREL
    assert sorted(m.payload for m in sub.wait_messages(3, topic)) == [b"q0", b"q1", b"q2"]
    pub.publish(topic, b"after", qos=1)
    assert sub.wait_messages(4, topic)[3].payload == b"after"


def test_session_v5_clean_start_0_without_session_is_new(broker, uid):
    """v5 [MQTT-3.1.2-6] [MQTT-3.2.2-3]: Clean Start 0 with no existing session creates a
    new one and CONNACK says Session Present 0."""
    assert persistent_v5(broker.port, uid).session_present is False


def test_session_v5_clean_start_1_discards_session(broker, uid):
    """v5 [MQTT-3.1.2-4] [MQTT-3.2.2-2]: Clean Start 1 discards the existing session: Session
    Present 0, its queued messages and subscriptions are gone."""
    topic = f"clean/{uid}"
    sub = persistent_v5(broker.port, uid + "s", clean_start=True)
    sub.subscribe(topic, qos=1)
    sub.disconnect()
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(topic, b"queued", qos=1)
    sub = persistent_v5(broker.port, uid + "s", clean_start=True)
    assert sub.session_present is False
    sub.subscribe(f"{topic}/sync", qos=1)
    pub.publish(topic, b"live", qos=1)
    sync(pub, sub, f"{topic}/sync", qos=1)
    assert app_messages(sub, topic) == [], "old session's messages or subscription survived"


def test_session_v5_expiry_zero_ends_with_connection(broker, uid):
    """v5 [MQTT-3.1.2-23] §3.1.2.11.2: Session Expiry 0 (absent) ends the session when the
    connection closes: a later Clean Start 0 gets Session Present 0."""
    sub = connect_v5(broker.port, uid, clean_start=False)
    sub.subscribe(f"e0/{uid}", qos=1)
    sub.disconnect()
    assert connect_v5(broker.port, uid, clean_start=False).session_present is False


@pytest.mark.slow_timer
def test_session_v5_expires_after_interval(broker, uid):
    """v5 [MQTT-4.1.0-2]: the server discards the session once the Session Expiry Interval
    (1 s) has passed after the connection closed; before that, it is still there."""
    keep = persistent_v5(broker.port, uid + "k", expiry=30, clean_start=True)
    keep.subscribe(f"exp/{uid}", qos=1)
    keep.disconnect()
    gone = persistent_v5(broker.port, uid + "g", expiry=1, clean_start=True)
    gone.subscribe(f"exp/{uid}", qos=1)
    gone.disconnect()
    time.sleep(2.5)
    assert persistent_v5(broker.port, uid + "g", expiry=1).session_present is False
    assert persistent_v5(broker.port, uid + "k", expiry=30).session_present is True


def test_session_v5_disconnect_can_set_expiry_to_zero(broker, uid):
    """v5 §3.14.2.2.2 [MQTT-4.1.0-2]: Session Expiry 0 sent on DISCONNECT ends the session at
    once even though CONNECT asked for 60 s."""
    c = persistent_v5(broker.port, uid, clean_start=True)
    c.subscribe(f"dz/{uid}", qos=1)
    c.disconnect(props={"SessionExpiryInterval": 0})
    assert persistent_v5(broker.port, uid).session_present is False


def test_session_v5_abnormal_close_keeps_session(broker, uid):
    """v5 [MQTT-3.1.2-23] [MQTT-4.1.0-1]: a session with expiry survives a dropped connection."""
    topic = f"drop/{uid}"
    c = persistent_v5(broker.port, uid + "s", clean_start=True)
    c.subscribe(topic, qos=1)
    c.drop()
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(topic, b"q", qos=1)
    c = persistent_v5(broker.port, uid + "s")
    assert c.session_present is True
    assert c.wait_message(topic).payload == b"q"


# -- v3.1.1 Clean Session -------------------------------------------------------------------

def test_session_v311_clean_session_0_persists(broker, uid):
    """v3.1.1 [MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-3.2.2-2] [MQTT-3.1.3-2]: CleanSession 0
    resumes the session (Session Present 1) with its subscriptions, and QoS 1/2 messages
    published while away are delivered."""
    topic = f"cs0/{uid}"
    sub = connect_v311(broker.port, uid + "s", clean_session=False)
    sub.subscribe(topic, qos=2)
    sub.disconnect()
    pub = connect_v311(broker.port, uid + "p")
    pub.publish(topic, b"one", qos=1)
    pub.publish(topic, b"two", qos=2)
    sub = connect_v311(broker.port, uid + "s", clean_session=False)
    assert sub.session_present is True
    assert [m.payload for m in sub.wait_messages(2, topic)] == [b"one", b"two"]


def test_session_v311_clean_session_1_discards(broker, uid):
    """v3.1.1 [MQTT-3.1.2-6] [MQTT-3.2.2-1]: CleanSession 1 discards any previous session and
    CONNACK says Session Present 0; the old subscription is gone."""
    topic = f"cs1/{uid}"
    sub = connect_v311(broker.port, uid + "s", clean_session=False)
    sub.subscribe(topic, qos=1)
    sub.disconnect()
    sub = connect_v311(broker.port, uid + "s", clean_session=True)
    assert sub.session_present is False
    sub.subscribe(f"{topic}/sync", qos=1)
    pub = connect_v311(broker.port, uid + "p")
    pub.publish(topic, b"x", qos=1)
    sync(pub, sub, f"{topic}/sync", qos=1)
    assert app_messages(sub, topic) == []
    sub.disconnect()
    assert connect_v311(broker.port, uid + "s", clean_session=False).session_present is False


def test_session_v311_clean_session_0_without_session(broker, uid):
    """v3.1.1 [MQTT-3.2.2-3]: CleanSession 0 and no stored session: Session Present 0."""
    assert connect_v311(broker.port, uid, clean_session=False).session_present is False


# -- redelivery ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_session_unacknowledged_qos1_resent_with_dup(broker, uid, version):
    """v5 [MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.3.2-3], v3.1.1 [MQTT-4.4.0-1] [MQTT-3.3.1-1]:
    a QoS 1 PUBLISH the client never acknowledged is sent again on reconnect (Clean
    Start/Session 0) with the same Packet Identifier and DUP 1."""
    topic = f"redo/{uid}"
    props = [(r.SESSION_EXPIRY_INTERVAL, 60)] if version == 5 else None
    with r.RawClient(broker.port, version=version) as c:
        c.handshake(uid, clean=version == 5, props=props)
        c.subscribe(topic, 1)
        connect_v5(broker.port, uid + "p").publish(topic, b"ack me", qos=1)
        first = c.expect(r.PUBLISH)
        assert first.dup is False and first.qos == 1
    with r.RawClient(broker.port, version=version) as c:
        connack = c.handshake(uid, clean=False, props=props)
        assert connack.session_present
        again = c.expect(r.PUBLISH)
        assert (again.packet_id, again.payload, again.dup) == (first.packet_id, b"ack me", True)
        c.send(r.ack(r.PUBACK, again.packet_id, version=version))
        expect.still_open(c)


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_session_unacknowledged_pubrel_resent(broker, uid, version):
    """v5 [MQTT-4.4.0-1] [MQTT-4.3.3-5] [MQTT-4.3.3-6], v3.1.1 [MQTT-4.4.0-1]: after PUBREC,
    an unacknowledged PUBREL is sent again on reconnect with the same id, and the PUBLISH
    is not re-sent."""
    topic = f"rel/{uid}"
    props = [(r.SESSION_EXPIRY_INTERVAL, 60)] if version == 5 else None
    with r.RawClient(broker.port, version=version) as c:
        c.handshake(uid, clean=version == 5, props=props)
        c.subscribe(topic, 2)
        connect_v5(broker.port, uid + "p").publish(topic, b"two", qos=2)
        pub = c.expect(r.PUBLISH)
        c.send(r.ack(r.PUBREC, pub.packet_id, version=version))
        pubrel = c.expect(r.PUBREL)
        assert pubrel.packet_id == pub.packet_id and pubrel.flags == 0x02
    with r.RawClient(broker.port, version=version) as c:
        assert c.handshake(uid, clean=False, props=props).session_present
        again = c.expect(r.PUBREL)
        assert again.packet_id == pub.packet_id
        c.send(r.ack(r.PUBCOMP, again.packet_id, version=version))
        assert c.quiet_for(0.3) == [], "PUBLISH re-sent after PUBREL [MQTT-4.3.3-6]"


def test_session_no_resend_without_reconnect(broker, uid):
    """v5 [MQTT-4.4.0-1]: a server does not re-send an unacknowledged PUBLISH on the same
    connection (only on reconnect with a session)."""
    topic = f"nore/{uid}"
    with r.RawClient(broker.port) as c:
        c.handshake(uid)
        c.subscribe(topic, 1)
        connect_v5(broker.port, uid + "p").publish(topic, b"x", qos=1)
        c.expect(r.PUBLISH)
        assert c.quiet_for(1.5) == []


# -- takeover ---------------------------------------------------------------------------------

@xfail_on_mosquitto("[MQTT-3.1.4-3]", "it closes the old connection without DISCONNECT 0x8E")
def test_session_takeover_v5_disconnects_old_with_0x8e(broker, uid):
    """v5 [MQTT-3.1.4-3]: a second connection with the same ClientID makes the server send
    DISCONNECT 0x8E (Session taken over) to the first and close it; the second is served."""
    with r.RawClient(broker.port) as old:
        old.handshake(uid)
        new = connect_v5(broker.port, uid)
        packets, closed = old.read_until_closed(expect.CLOSE_TIMEOUT)
        assert closed, "old connection still open after takeover"
        disconnects = [p for p in packets if p.type == r.DISCONNECT]
        assert disconnects and disconnects[0].reason == 0x8E, packets
        new.subscribe(f"to/{uid}", qos=1)
        new.publish(f"to/{uid}", b"mine", qos=1)
        assert new.wait_message().payload == b"mine"


def test_session_takeover_v311_closes_old(broker, uid):
    """v3.1.1 [MQTT-3.1.4-2]: if the ClientID is already connected, the server disconnects
    the existing client."""
    with r.RawClient(broker.port, version=4) as old:
        old.handshake(uid)
        connect_v311(broker.port, uid)
        packets, closed = old.read_until_closed(expect.CLOSE_TIMEOUT)
        assert closed and packets == [], packets


def test_session_takeover_keeps_session_state(broker, uid):
    """v5 [MQTT-3.1.4-3] [MQTT-3.1.2-5]: a takeover with Clean Start 0 continues the session:
    Session Present 1 and the subscription delivers to the new connection."""
    topic = f"tks/{uid}"
    first = persistent_v5(broker.port, uid, clean_start=True)
    first.subscribe(topic, qos=1)
    second = persistent_v5(broker.port, uid)
    assert second.session_present is True
    assert first.disconnected.wait(5), "old connection not closed [MQTT-3.1.4-3]"
    connect_v5(broker.port, uid + "p").publish(topic, b"moved", qos=1)
    assert second.wait_message(topic).payload == b"moved"


# -- queued message expiry -----------------------------------------------------------------

@pytest.mark.slow_timer
def test_message_expiry_queued_message_dropped(broker, uid):
    """v5 [MQTT-3.3.2-5] [MQTT-3.3.2-6]: a queued message whose Message Expiry Interval
    passed before delivery started is not delivered; one still alive is delivered with the
    interval reduced by the time it waited."""
    topic = f"qexp/{uid}"
    sub = persistent_v5(broker.port, uid + "s", clean_start=True)
    sub.subscribe(topic, qos=1)
    sub.disconnect()
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(topic, b"short", qos=1, MessageExpiryInterval=1)
    pub.publish(topic, b"long", qos=1, MessageExpiryInterval=60)
    pub.publish(topic, b"forever", qos=1)
    time.sleep(2.5)
    sub = persistent_v5(broker.port, uid + "s")
    msgs = sub.wait_messages(2, topic)
    sync(pub, sub, topic, qos=1)
    assert [m.payload for m in app_messages(sub, topic)] == [b"long", b"forever"]
    left = msgs[0].props.get("MessageExpiryInterval")
    assert left is not None and 50 <= left <= 58, f"remaining expiry forwarded as {left}"
    assert "MessageExpiryInterval" not in msgs[1].props


# -- limits ----------------------------------------------------------------------------------

@pytest.mark.tern_config("limits.max_queued_messages")
def test_session_queue_limit_bounds_offline_messages(broker_factory, uid):
    """v5 §4.1 (server may bound stored messages): with max_queued_messages 10 an offline
    session keeps at most 10 (+ the in-flight window) of 40 QoS 1 messages; the broker stays
    healthy and delivers what it kept, in order."""
    b = broker_factory({"limits": {"max_queued_messages": 10}})
    topic = f"ql/{uid}"
    sub = persistent_v5(b.port, uid + "s", clean_start=True)
    sub.subscribe(topic, qos=1)
    sub.disconnect()
    pub = connect_v5(b.port, uid + "p")
    for i in range(40):
        pub.publish(topic, str(i).encode(), qos=1)
    sub = persistent_v5(b.port, uid + "s", ReceiveMaximum=5)
    sub.wait_messages(1, topic)
    sync(pub, sub, topic, qos=1)
    got = [int(m.payload) for m in app_messages(sub, topic)]
    assert 1 <= len(got) <= 10 + 20, got
    assert got == sorted(got), f"queued messages out of order: {got}"
