"""Every configured limit biting, and counted: each test provokes one limit with raw MQTT clients,
checks what the client is told (reason codes from docs/configuration.md), and then checks
`/metrics`, parsed by prometheus_client's text parser, for exactly the counts the test caused
(`tern_limit_hits_total{limit=...}`, drops, connections, messages)."""

from __future__ import annotations

import time

import pytest

import expect  # conformance helper

from .helpers import WAIT, r, wait_for


def _codes_of(c: r.RawClient, filters, packet_id: int, version: int = 5) -> list:
    c.send(r.subscribe(packet_id, [(f, 1) for f in filters], version=version))
    ack = c.expect(r.SUBACK)
    assert ack.packet_id == packet_id
    return ack.codes


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_max_packet_size(edge_broker, version):
    """`limits.max_packet_size: 128` is announced in the MQTT 5 CONNACK (Maximum Packet Size 128);
    a 200-byte PUBLISH ends the connection with DISCONNECT 0x95 *Packet too large* (3.1.1: a close
    with nothing sent), while a packet within the limit is accepted. Counted once in
    `tern_limit_hits_total{limit="max_packet_size"}` and `tern_protocol_errors_total`."""
    b = edge_broker(config={"limits": {"max_packet_size": 128}})
    with r.RawClient(b.port, version=version) as c:
        connack = c.handshake("big-packet")
        if version == 5:
            assert connack.prop(r.MAXIMUM_PACKET_SIZE) == 128, connack
        c.send(r.publish("size/ok", b"x" * 50, qos=1, packet_id=1, version=version))
        assert c.expect(r.PUBACK).packet_id == 1
        c.send_quietly(r.publish("size/big", b"x" * 200, qos=1, packet_id=2, version=version))
        expect.refused(c, version, 0x95)
    m = b.metrics()
    assert m.limit("max_packet_size") == 1
    assert m.get("tern_protocol_errors_total") == 1
    assert m.get("tern_messages_received_total", qos=1) == 1


def test_max_connections_broker_wide(edge_broker):
    """`limits.max_connections: 2`: with two clients connected, a third MQTT 5 client gets CONNACK
    0x89 *Server busy* and a 3.1.1 client return code 3; once one client leaves, a new one gets
    in. Counted: `tern_limit_hits_total{limit="max_connections"}` = 2,
    `tern_connections_total` = 3, `tern_connections` = 2."""
    b = edge_broker(config={"limits": {"max_connections": 2}})
    first = r.RawClient(b.port)
    first.handshake("c1")
    with r.RawClient(b.port) as second:
        second.handshake("c2")
        with r.RawClient(b.port) as third:
            third.send(r.connect("c3"))
            expect.connect_refused(third, 0x89)
        with r.RawClient(b.port, version=4) as fourth:
            fourth.send(r.connect("c4", version=4))
            expect.v3_connack_refused(fourth, 3)
        first.send(r.disconnect())
        first.read_until_closed(WAIT)
        first.close()
        wait_for(lambda: b.metrics().get("tern_connections") == 1,
                 message="the first connection's slot to be released")
        with r.RawClient(b.port) as again:
            again.handshake("c5")
            m = b.metrics()
            assert m.limit("max_connections") == 2
            assert m.get("tern_connections_total") == 3
            assert m.get("tern_connections") == 2


def test_max_connections_per_listener(edge_broker):
    """`max_connections: 1` on listener `small`: its second client gets CONNACK 0x89 while the
    other listener (no limit of its own) still takes two more. Counted once in
    `tern_limit_hits_total{limit="max_connections"}`."""
    b = edge_broker([{"name": "small", "protocol": "tcp", "max_connections": 1}])
    with r.RawClient(b.ports["small"]) as one:
        one.handshake("small-1")
        with r.RawClient(b.ports["small"]) as two:
            two.send(r.connect("small-2"))
            expect.connect_refused(two, 0x89)
        with r.RawClient(b.port) as a, r.RawClient(b.port) as bb:
            a.handshake("main-1")
            bb.handshake("main-2")
            m = b.metrics()
            assert m.limit("max_connections") == 1
            assert m.get("tern_connections") == 3


def test_max_connection_rate(edge_broker):
    """`limits.max_connection_rate: 1` (a bucket of one, refilled once a second): of CONNECTs sent
    back to back, the first is accepted and the next are refused — MQTT 5 CONNACK 0x9F
    *Connection rate exceeded*, 3.1.1 return code 3. `tern_limit_hits_total{limit=
    "connection_rate"}` equals the refusals and `tern_connections_total` the acceptances."""
    b = edge_broker(config={"limits": {"max_connection_rate": 1}})
    codes = []
    held = []
    try:
        for i, version in enumerate([5, 4, 5, 5, 4]):
            c = r.RawClient(b.port, version=version)
            held.append(c)
            c.send(r.connect(f"rate-{i}", version=version))
            codes.append((version, c.expect(r.CONNACK).reason))
    finally:
        for c in held:
            c.close()
    accepted = [code for _, code in codes if code == 0]
    refused = [(v, code) for v, code in codes if code != 0]
    assert codes[0] == (5, 0) and codes[1] == (4, 3), codes
    assert all(code == (0x9F if v == 5 else 3) for v, code in refused), codes
    m = b.metrics()
    assert m.limit("connection_rate") == len(refused)
    assert m.get("tern_connections_total") == len(accepted)


def test_max_publish_rate_slows_the_client_down(edge_broker):
    """`limits.max_publish_rate: 10`: 30 QoS 1 PUBLISH packets written at once are all accepted
    and delivered (nothing dropped), but the broker reads them no faster than the rate allows
    after the first burst of 10, so the last PUBACK cannot come before (30 - 10 - 1) / 10 = 1.9 s.
    Only this lower bound is checked, with a wide margin (1.5 s); no upper bound. Counted:
    `tern_limit_hits_total{limit="publish_rate"}` > 0 and `tern_messages_received_total{qos="1"}`
    = 30."""
    b = edge_broker(config={"limits": {"max_publish_rate": 10}})
    n = 30
    with r.RawClient(b.port) as sub, r.RawClient(b.port) as pub:
        sub.handshake("rate-sub")
        sub.subscribe("rate/t", r.sub_options(qos=1))
        pub.handshake("rate-pub")
        data = b"".join(r.publish("rate/t", str(i).encode(), qos=1, packet_id=i + 1)
                        for i in range(n))
        start = time.monotonic()
        pub.send(data)
        acked = [pub.expect(r.PUBACK, timeout=WAIT).packet_id for _ in range(n)]
        elapsed = time.monotonic() - start
        assert acked == list(range(1, n + 1))
        got = []
        for _ in range(n):
            p = sub.expect(r.PUBLISH)
            got.append(p.payload)
            sub.send(r.ack(r.PUBACK, p.packet_id))
        assert got == [str(i).encode() for i in range(n)]
    assert elapsed >= 1.5, f"{n} publishes at 10/s were all acknowledged in {elapsed:.2f}s"
    m = b.metrics()
    assert m.limit("publish_rate") > 0
    assert m.get("tern_messages_received_total", qos=1) == n
    assert m.dropped("queue_full") == 0 and m.dropped("queue_full_oldest") == 0


@pytest.mark.parametrize("policy,kept,reason", [
    ("drop_oldest", list(range(5, 10)), "queue_full_oldest"),
    ("drop_newest", list(range(0, 5)), "queue_full"),
])
def test_max_queued_messages_with_the_overflow_policy(edge_broker, policy, kept, reason):
    """`max_queued_messages: 5`, `queue_overflow: {policy}`: 10 QoS 1 messages published while a
    persistent MQTT 5 subscriber is away; when it comes back it gets the 5 messages the policy
    keeps, in order ({kept}). Counted: `tern_messages_dropped_total{reason="{reason}"}` = 5,
    `tern_limit_hits_total{limit="max_queued_messages"}` = 5, and `tern_queued_messages` was 5
    while the subscriber was away."""
    b = edge_broker(config={"limits": {"max_queued_messages": 5, "queue_overflow": policy}})
    admin = b.admin()
    with r.RawClient(b.port) as sub:
        sub.handshake("slow", props=[(r.SESSION_EXPIRY_INTERVAL, 300)])
        sub.subscribe("q/t", r.sub_options(qos=1))
        sub.send(r.disconnect())
        sub.read_until_closed(WAIT)
    wait_for(lambda: not admin.client("slow")["client"]["connected"],
             message="the subscriber's session to go offline")
    with r.RawClient(b.port) as pub:
        pub.handshake("fast")
        for i in range(10):
            pub.send(r.publish("q/t", f"m{i}".encode(), qos=1, packet_id=i + 1))
            assert pub.expect(r.PUBACK).packet_id == i + 1
    m = b.metrics()
    assert m.dropped(reason) == 5
    assert m.limit("max_queued_messages") == 5
    assert m.get("tern_queued_messages") == 5
    assert admin.client("slow")["client"]["queued"] == 5
    with r.RawClient(b.port) as sub:
        connack = sub.handshake("slow", clean=False, props=[(r.SESSION_EXPIRY_INTERVAL, 300)])
        assert connack.session_present
        got = []
        for _ in kept:
            p = sub.expect(r.PUBLISH)
            got.append(p.payload)
            sub.send(r.ack(r.PUBACK, p.packet_id))
        assert got == [f"m{i}".encode() for i in kept]
        expect.still_open(sub)


def test_queue_overflow_disconnect_policy(edge_broker):
    """`queue_overflow: disconnect` with `max_inflight: 1` and `max_queued_messages: 2`: an online
    MQTT 5 subscriber that does not acknowledge holds one message in flight and two queued; the
    next QoS 1 message is dropped and the subscriber is disconnected with 0x97 *Quota exceeded*.
    Counted once in `tern_messages_dropped_total{reason="queue_full"}`."""
    b = edge_broker(config={"limits": {"max_queued_messages": 2, "max_inflight": 1,
                                       "queue_overflow": "disconnect"}})
    with r.RawClient(b.port) as sub, r.RawClient(b.port) as pub:
        sub.handshake("stuck")
        sub.subscribe("d/t", r.sub_options(qos=1))
        pub.handshake("flood")
        pub.send(r.publish("d/t", b"m0", qos=1, packet_id=1))
        assert sub.expect(r.PUBLISH).payload == b"m0"  # in flight, never acknowledged
        for i in (1, 2, 3):
            pub.send(r.publish("d/t", f"m{i}".encode(), qos=1, packet_id=i + 1))
            pub.expect(r.PUBACK)
        before = expect.disconnected(sub, 0x97, timeout=WAIT)
        assert all(p.type == r.PUBLISH for p in before), before
    m = b.metrics()
    assert m.dropped("queue_full") == 1
    assert m.limit("max_queued_messages") == 1


def test_max_inflight_is_never_exceeded(edge_broker):
    """`limits.max_inflight: 3` binds even though the subscriber allows 100 (Receive Maximum):
    of 10 QoS 1 messages, 3 are sent and 7 wait (`tern_inflight_messages` 3,
    `tern_queued_messages` 7, nothing more on the wire); each PUBACK lets exactly one more out,
    and the subscriber never has more than 3 unacknowledged. In the end all 10 arrive in order and
    `tern_messages_sent_total{qos="1"}` = 10."""
    b = edge_broker(config={"limits": {"max_inflight": 3}})

    def gauges():
        m = b.metrics()
        return m.get("tern_inflight_messages"), m.get("tern_queued_messages")

    with r.RawClient(b.port) as sub, r.RawClient(b.port) as pub:
        sub.handshake("window", props=[(r.RECEIVE_MAXIMUM, 100)])
        sub.subscribe("w/t", r.sub_options(qos=1))
        pub.handshake("window-pub")
        for i in range(10):
            pub.send(r.publish("w/t", f"m{i}".encode(), qos=1, packet_id=i + 1))
            pub.expect(r.PUBACK)
        wait_for(lambda: gauges() == (3, 7), message="3 in flight and 7 queued")
        outstanding = [sub.expect(r.PUBLISH) for _ in range(3)]
        with pytest.raises(r.NoPacket):
            sub.recv(0.3)  # a fourth PUBLISH would break the window
        received = list(outstanding)
        for step in range(7):
            first = outstanding.pop(0)
            sub.send(r.ack(r.PUBACK, first.packet_id))
            nxt = sub.expect(r.PUBLISH)
            outstanding.append(nxt)
            received.append(nxt)
            assert len(outstanding) <= 3
            wait_for(lambda: gauges() == (3, 6 - step),
                     message=f"3 in flight and {6 - step} queued")
        for p in outstanding:
            sub.send(r.ack(r.PUBACK, p.packet_id))
        expect.still_open(sub)
        wait_for(lambda: gauges() == (0, 0), message="nothing in flight or queued")
    assert [p.payload for p in received] == [f"m{i}".encode() for i in range(10)]
    assert b.metrics().get("tern_messages_sent_total", qos=1) == 10


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_max_topic_length_and_levels(edge_broker, version):
    """`max_topic_length: 16` and `max_topic_levels: 3`: a filter of 17 bytes, or of 4 levels, is
    refused in SUBACK (MQTT 5 0x8F *Topic filter invalid*, 3.1.1 0x80) while `a/b/c` and a
    16-byte filter are granted; a PUBLISH to a 17-byte topic, and on a second connection to a
    4-level topic, ends the connection (MQTT 5 DISCONNECT 0x90 *Topic name invalid*; 3.1.1 a close).
    Counted: `max_topic_length` 2 and `max_topic_levels` 2 in `tern_limit_hits_total`."""
    b = edge_broker(config={"limits": {"max_topic_length": 16, "max_topic_levels": 3}})
    bad = 0x8F if version == 5 else 0x80
    long16, long17 = "t/" + "x" * 14, "t/" + "x" * 15
    with r.RawClient(b.port, version=version) as c:
        c.handshake("topics")
        assert _codes_of(c, ["a/b/c", long16, long17, "a/b/c/d"], 1, version) == [1, 1, bad, bad]
        c.send(r.publish("a/b/c", b"ok", qos=1, packet_id=2, version=version))
        assert sorted(p.type for p in (c.recv(WAIT), c.recv(WAIT))) == [r.PUBLISH, r.PUBACK]
        c.send_quietly(r.publish(long17, b"too long", qos=1, packet_id=3, version=version))
        expect.refused(c, version, 0x90)
    with r.RawClient(b.port, version=version) as c:
        c.handshake("levels")
        c.send_quietly(r.publish("a/b/c/d", b"too deep", qos=0, version=version))
        expect.refused(c, version, 0x90)
    m = b.metrics()
    assert m.limit("max_topic_length") == 2
    assert m.limit("max_topic_levels") == 2


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_max_subscriptions_per_client(edge_broker, version):
    """`max_subscriptions_per_client: 2`: a third filter is refused in SUBACK (MQTT 5 0x97 *Quota
    exceeded*, 3.1.1 0x80) — also when it comes in the same SUBSCRIBE as an allowed one —
    re-subscribing to a held filter is still granted, and after an UNSUBSCRIBE a new filter fits.
    Counted: `tern_limit_hits_total{limit="max_subscriptions"}` = 2."""
    b = edge_broker(config={"limits": {"max_subscriptions_per_client": 2}})
    quota = 0x97 if version == 5 else 0x80
    with r.RawClient(b.port, version=version) as c:
        c.handshake("subs")
        assert _codes_of(c, ["s/1"], 1, version) == [1]
        assert _codes_of(c, ["s/2", "s/3"], 2, version) == [1, quota]
        assert _codes_of(c, ["s/1"], 3, version) == [1]
        assert _codes_of(c, ["s/4"], 4, version) == [quota]
        c.send(r.unsubscribe(5, ["s/2"], version=version))
        c.expect(r.UNSUBACK)
        assert _codes_of(c, ["s/4"], 6, version) == [1]
    assert b.metrics().limit("max_subscriptions") == 2


def test_qos0_messages_are_dropped_when_the_queue_is_full(edge_broker):
    """docs/configuration.md: "QoS 0 messages are always dropped when the queue is full", whatever
    the policy. With `max_inflight: 1`, `max_queued_messages: 2` and `drop_oldest`, an online
    subscriber that holds one unacknowledged QoS 1 message and two queued ones gets, after it
    acknowledges, exactly those two — the QoS 0 message published while the queue was full was
    dropped (counted once as `queue_full`) and did not push a QoS 1 message out."""
    b = edge_broker(config={"limits": {"max_queued_messages": 2, "max_inflight": 1,
                                       "queue_overflow": "drop_oldest"}})
    with r.RawClient(b.port) as sub, r.RawClient(b.port) as pub:
        sub.handshake("q0-sub")
        sub.subscribe("z/t", r.sub_options(qos=1))
        pub.handshake("q0-pub")
        pub.send(r.publish("z/t", b"m0", qos=1, packet_id=1))
        first = sub.expect(r.PUBLISH)
        assert first.payload == b"m0"
        for i in (1, 2):
            pub.send(r.publish("z/t", f"m{i}".encode(), qos=1, packet_id=i + 1))
            pub.expect(r.PUBACK)
        pub.send(r.publish("z/t", b"zero", qos=0))
        pub.send(r.pingreq())
        pub.expect(r.PINGRESP, skip=(r.PUBACK,))
        sub.send(r.ack(r.PUBACK, first.packet_id))
        got = []
        for _ in range(2):
            p = sub.expect(r.PUBLISH)
            got.append(p.payload)
            sub.send(r.ack(r.PUBACK, p.packet_id))
        assert got == [b"m1", b"m2"]
        expect.still_open(sub)
    m = b.metrics()
    assert m.dropped("queue_full") == 1 and m.dropped("queue_full_oldest") == 0


def test_receive_maximum(edge_broker):
    """`limits.receive_maximum: 2` is announced in CONNACK (Receive Maximum 2); a client that sends
    a third QoS 2 PUBLISH while two are unreleased is disconnected with 0x93 *Receive Maximum
    exceeded*. Counted once in `tern_limit_hits_total{limit="receive_maximum"}`."""
    b = edge_broker(config={"limits": {"receive_maximum": 2}})
    with r.RawClient(b.port) as c:
        assert c.handshake("greedy").prop(r.RECEIVE_MAXIMUM) == 2
        for pid in (1, 2):
            c.send(r.publish("rm/t", b"x", qos=2, packet_id=pid))
            c.expect(r.PUBREC)
        c.send_quietly(r.publish("rm/t", b"x", qos=2, packet_id=3))
        expect.disconnected(c, 0x93)
    assert b.metrics().limit("receive_maximum") == 1
