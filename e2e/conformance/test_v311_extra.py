"""MQTT 3.1.1 statements not covered elsewhere: PINGREQ, DISCONNECT flags, the will when there
is none, session life, re-sent PUBLISH order, refused publishes, SUBACK return codes."""

import pytest

import expect
import rawmqtt as r
from clients import connect_v311, sync, wait_for
from support_extra import V311_SUBACK_CODES, connected, ping_barrier


def test_every_pingreq_answered_v311(broker, uid):
    """v3.1.1 [MQTT-3.12.4-1]: the server answers every PINGREQ with a PINGRESP, also five sent
    in one write."""
    with connected(broker.port, uid, 4) as c:
        c.send(r.pingreq() * 5)
        for _ in range(5):
            pong = c.expect(r.PINGRESP)
            assert pong.flags == 0 and pong.body == b"", pong
        assert c.quiet_for(0.1) == []


def test_disconnect_reserved_flags_closes_and_will_published_v311(broker, uid):
    """v3.1.1 [MQTT-3.14.1-1] [MQTT-3.1.2-8]: the server checks that the DISCONNECT reserved
    bits are 0; one with a flag bit set is not a DISCONNECT that deletes the will: the server
    closes the connection and publishes the will."""
    topic = f"dflag/{uid}"
    watcher = connect_v311(broker.port, uid + "w")
    watcher.subscribe(topic, qos=1)
    with connected(broker.port, uid, 4, will=r.Will(topic, b"will", qos=1)) as c:
        c.send(r.fixed(r.DISCONNECT, 0x01, b""))
        expect.closed_silently(c)
    assert watcher.wait_message(topic).payload == b"will"


def test_no_will_flag_nothing_published_v311(fresh_broker, uid):
    """v3.1.1 [MQTT-3.1.2-12]: a client connected with Will Flag 0 whose connection breaks
    leaves nothing to publish: a subscriber to "#" sees only the client's own message."""
    watcher = connect_v311(fresh_broker.port, uid + "w")
    watcher.subscribe("#", qos=1)
    with connected(fresh_broker.port, uid, 4) as c:
        c.send(r.publish(f"nw/{uid}", b"alive", qos=1, packet_id=1, version=4))
        assert c.expect(r.PUBACK).packet_id == 1
    marker = connect_v311(fresh_broker.port, uid + "m")
    wait_for(lambda: watcher.received(f"nw/{uid}"), message="the client's own message")
    # The broken connection is noticed by the server before it takes a new CONNECT with the
    # same Client Identifier.
    connected(fresh_broker.port, uid, 4).close()
    sync(marker, watcher, f"nw/{uid}/sync", qos=1)
    topics = [m.topic for m in watcher.received() if not m.payload.startswith(b"sync-")]
    assert topics == [f"nw/{uid}"], f"something was published for the will-less client: {topics}"


def test_session_state_kept_for_session_life_v311(broker, uid):
    """v3.1.1 [MQTT-4.1.0-1] [MQTT-4.1.0-2] [MQTT-4.5.0-1]: a CleanSession 0 session keeps its
    subscription and the QoS 1 messages published while the client was away, and hands them
    over when it returns; a CleanSession 1 session lasts as long as its connection, so its
    subscription matches every message meanwhile; each message is added to the state of
    every session with a matching subscription."""
    topic = f"life/{uid}"
    live = connect_v311(broker.port, uid + "l")
    live.subscribe(topic, qos=1)
    with connected(broker.port, uid, 4, clean=False) as c:
        c.subscribe(topic, 1)
    pub = connect_v311(broker.port, uid + "p")
    for i in range(3):
        pub.publish(topic, f"m{i}".encode(), qos=1)
    with connected(broker.port, uid, 4, clean=False) as c:
        assert c.connack.session_present
        got = [c.expect(r.PUBLISH) for _ in range(3)]
        assert [p.payload for p in got] == [b"m0", b"m1", b"m2"], got
        for p in got:
            c.send(r.ack(r.PUBACK, p.packet_id, version=4))
        pub.publish(topic, b"m3", qos=1)
        p = c.expect(r.PUBLISH)
        assert p.payload == b"m3", p
        c.send(r.ack(r.PUBACK, p.packet_id, version=4))
    assert [m.payload for m in live.wait_messages(4, topic)] == [b"m0", b"m1", b"m2", b"m3"]
    connected(broker.port, uid, 4, clean=True).close()


def test_resent_publishes_keep_first_order_v311(broker, uid):
    """v3.1.1 [MQTT-4.6.0-1] [MQTT-4.4.0-1] [MQTT-2.3.1-4]: unacknowledged QoS 1 messages are
    re-sent on reconnect (CleanSession 0) in the order they were first sent, with their
    original Packet Identifiers and DUP 1."""
    topic = f"reord/{uid}"
    with connected(broker.port, uid, 4, clean=False) as c:
        c.subscribe(topic, 1)
        pub = connect_v311(broker.port, uid + "p")
        for i in range(5):
            pub.publish(topic, f"m{i}".encode(), qos=1)
        first = [c.expect(r.PUBLISH) for _ in range(5)]
    with connected(broker.port, uid, 4, clean=False) as c:
        again = [c.expect(r.PUBLISH) for _ in range(5)]
        assert [(p.payload, p.packet_id) for p in again] == [(p.payload, p.packet_id)
                                                             for p in first], again
        assert all(p.dup for p in again), again
        for p in again:
            c.send(r.ack(r.PUBACK, p.packet_id, version=4))
        assert ping_barrier(c) == []
    connected(broker.port, uid, 4, clean=True).close()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_refused_publish_acknowledged_normally_or_closed_v311(broker, uid, qos):
    """v3.1.1 [MQTT-3.3.5-2] [MQTT-2.3.1-6]: a PUBLISH the server does not authorize (Tern:
    any client publish to $SYS) is either acknowledged as its QoS asks (PUBACK, or PUBREC
    then PUBCOMP, with the same identifier) or the connection is closed; nothing else."""
    with connected(broker.port, uid, 4) as c:
        c.send(r.publish(f"$SYS/{uid}", b"no", qos=qos, packet_id=6 if qos else None,
                         version=4))
        if qos == 0:
            c.send_quietly(r.pingreq())
            try:
                pkt = c.recv(2.0)
            except r.Closed:
                return
            assert pkt.type == r.PINGRESP, f"answer to a QoS 0 PUBLISH: {pkt!r}"
            return
        try:
            ack = c.recv(2.0)
        except r.Closed:
            return
        assert ack.type == (r.PUBACK if qos == 1 else r.PUBREC) and ack.packet_id == 6, ack
        assert ack.body == r.u16(6), ack
        if qos == 2:
            c.send(r.ack(r.PUBREL, 6, version=4))
            assert c.expect(r.PUBCOMP).packet_id == 6
        expect.still_open(c)


@pytest.mark.tern_config("features.wildcard_subscriptions, features.shared_subscriptions, "
                         "limits.max_topic_length")
def test_suback_return_codes_v311(broker_factory, uid):
    """v3.1.1 [MQTT-3.8.3-2] [MQTT-3.9.3-2] [MQTT-3.8.4-5]: a server without wildcard
    subscriptions refuses every filter with a wildcard, and a 3.1.1 SUBACK only ever holds
    0x00, 0x01, 0x02 or 0x80 — also for refusals that MQTT 5 gives their own codes (shared
    subscriptions off, a filter over the length limit)."""
    b = broker_factory({"features": {"wildcard_subscriptions": False,
                                     "shared_subscriptions": False},
                        "limits": {"max_topic_length": 64}})
    filters = [(f"p/{uid}", 1), (f"p/{uid}/+", 0), (f"p/{uid}/#", 2), ("#", 0), ("+", 1),
               (f"$share/g/p/{uid}", 1), ("p/" + "x" * 80, 0), (f"q/{uid}", 2)]
    with connected(b.port, uid, 4) as c:
        c.send(r.subscribe(5, filters, version=4))
        suback = c.expect(r.SUBACK)
        assert suback.packet_id == 5 and all(code in V311_SUBACK_CODES for code in suback.codes)
        assert suback.codes == [1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 2], suback
