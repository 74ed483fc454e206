"""CONNECT handling from raw bytes: the first packet, flags, versions, identifiers, keep-alive.

MQTT 5 errors are answered with a CONNACK (in CONNECT) or DISCONNECT (after it)
carrying the reason code, then a close; MQTT 3.1.1 and 3.1 errors with a close,
except where the 3.1.1 specification names a CONNACK return code.
"""

import time

import pytest

import expect
import rawmqtt as r
from clients import connect_v5
from expect import xfail_on_mosquitto

BOTH = [pytest.param(5, id="v5"), pytest.param(4, id="v311")]
ALL = [pytest.param(5, id="v5"), pytest.param(4, id="v311"), pytest.param(3, id="v31")]


def raw(broker, version=5, **kw) -> r.RawClient:
    return r.RawClient(broker.port, version=version, **kw)


# -- the first and the second CONNECT ----------------------------------------------

@pytest.mark.parametrize("version", ALL)
def test_connect_first_packet_not_connect_closes(broker, version):
    """v5 [MQTT-3.1.0-1] [MQTT-3.14.0-1], v3.1.1 [MQTT-3.1.0-1]: a first packet other
    than CONNECT closes the connection, with no DISCONNECT (no CONNACK was sent)."""
    with raw(broker, version) as c:
        c.send(r.publish("t/first", b"x", version=version))
        expect.closed_silently(c)


@pytest.mark.parametrize("version", ALL)
def test_connect_pingreq_before_connect_closes(broker, version):
    """v5 [MQTT-3.1.0-1], v3.1.1 [MQTT-3.1.0-1]: PINGREQ as first packet is not answered."""
    with raw(broker, version) as c:
        c.send(r.pingreq())
        expect.closed_silently(c)


@pytest.mark.parametrize("version", ALL)
def test_connect_second_connect_is_protocol_error(broker, uid, version):
    """v5 [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error (DISCONNECT 0x82);
    v3.1.1 [MQTT-3.1.0-2]: it is a protocol violation and the server disconnects."""
    with raw(broker, version) as c:
        c.handshake(uid[:20], clean=True)
        c.send(r.connect(uid[:20], version=version))
        expect.refused(c, version, 0x82)


# -- flags -------------------------------------------------------------------------

def test_connect_reserved_flag_v5_is_malformed(broker, uid):
    """v5 [MQTT-3.1.2-3]: the reserved CONNECT flag must be 0; otherwise Malformed Packet (0x81)."""
    with raw(broker) as c:
        c.send(r.connect(uid, reserved_flag=True))
        expect.connect_refused(c, 0x81)


def test_connect_reserved_flag_v311_closes(broker, uid):
    """v3.1.1 [MQTT-3.1.2-3]: a non-zero reserved flag closes the connection without CONNACK.
    (MQTT 3.1 calls the bit unused and sets no rule, so 3.1 is not tested.)"""
    with raw(broker, 4) as c:
        c.send(r.connect(uid[:20], version=4, reserved_flag=True))
        expect.closed_silently(c)


@pytest.mark.parametrize("flags,case", [
    (0x02 | 0x04 | 0x18, "will-qos-3"),
    (0x02 | 0x08, "will-qos-without-will"),
    (0x02 | 0x20, "will-retain-without-will"),
])
def test_connect_invalid_will_flags_v5_is_malformed(broker, uid, flags, case):
    """v5 [MQTT-3.1.2-11] [MQTT-3.1.2-12] [MQTT-3.1.2-13]: Will QoS 3, or Will QoS/Retain
    set without the Will Flag, is a Malformed Packet (CONNACK 0x81)."""
    body_will = flags & 0x04
    packet = r.connect(uid, flags=flags, will=r.Will("w/t", b"x") if body_will else None)
    with raw(broker) as c:
        c.send(packet)
        expect.connect_refused(c, 0x81)


@pytest.mark.parametrize("flags,case", [
    (0x02 | 0x04 | 0x18, "will-qos-3"),
    (0x02 | 0x08, "will-qos-without-will"),
    (0x02 | 0x20, "will-retain-without-will"),
])
def test_connect_invalid_will_flags_v311_closes(broker, uid, flags, case):
    """v3.1.1 [MQTT-3.1.2-13] [MQTT-3.1.2-14] [MQTT-3.1.2-15] [MQTT-3.1.4-1]: invalid Will
    QoS/Retain flags close the connection without CONNACK."""
    packet = r.connect(uid, version=4, flags=flags,
                       will=r.Will("w/t", b"x") if flags & 0x04 else None)
    with raw(broker, 4) as c:
        c.send(packet)
        expect.closed_silently(c)


def test_connect_password_without_username_v311_closes(broker, uid):
    """v3.1.1 [MQTT-3.1.2-22]: the Password Flag must be 0 when the User Name Flag is 0."""
    with raw(broker, 4) as c:
        c.send(r.connect(uid, version=4, password=b"secret"))
        packets, closed = c.read_until_closed(expect.CLOSE_TIMEOUT)
        assert closed, f"server kept a CONNECT with password and no user name: {packets}"
        assert all(p.type == r.CONNACK and p.reason != 0 for p in packets), packets


# -- protocol name and level ---------------------------------------------------------

@pytest.mark.parametrize("level", [0, 2, 6, 7, 255])
def test_connect_unsupported_protocol_level_refused(broker, uid, level):
    """v3.1.1 [MQTT-3.1.2-2]: an unsupported Protocol Level gets CONNACK 0x01 and a close;
    v5 [MQTT-3.1.2-2]: a server may instead answer 0x84 (Unsupported Protocol Version)."""
    with raw(broker, 4) as c:
        c.send(_connect_with_level(uid, level))
        packets, closed = c.read_until_closed(expect.CLOSE_TIMEOUT)
        assert closed, f"connection left open after protocol level {level}: {packets}"
        assert len(packets) == 1 and packets[0].type == r.CONNACK, (
            f"expected one CONNACK before the close, got {packets}")
        body = packets[0].body
        if len(body) == 2:  # 3.1.1 framing
            assert body[1] == 0x01, f"v3 CONNACK return code {body[1]:#x}, expected 0x01"
        else:  # 5.0 framing
            assert body[1] == 0x84, f"v5 CONNACK reason {body[1]:#x}, expected 0x84"
        assert body[0] == 0, "Session Present must be 0 on a refusal"


def _connect_with_level(client_id: str, level: int) -> bytes:
    body = r.utf8("MQTT") + bytes([level, 0x02]) + r.u16(60) + r.utf8(client_id)
    return r.fixed(r.CONNECT, 0, body)


def test_connect_bad_protocol_name_v5_refused(broker, uid):
    """v5 [MQTT-3.1.2-1]: a protocol name other than "MQTT" is refused: the server MUST close
    the connection, and MAY first send CONNACK 0x84 if it wishes to reveal it is an MQTT
    server (so a silent close is right too)."""
    with raw(broker) as c:
        c.send(r.connect(uid, protocol_name="MQTX"))
        packets, closed = c.read_until_closed(expect.CLOSE_TIMEOUT)
        assert closed, f"server accepted protocol name 'MQTX': {packets}"
        assert all(p.type == r.CONNACK and p.reason == 0x84 for p in packets), packets


@pytest.mark.parametrize("name,level", [("MQTX", 4), ("MQIsdp", 4), ("MQTT", 3)],
                         ids=["MQTX-4", "MQIsdp-4", "MQTT-3"])
def test_connect_bad_protocol_name_v3_closes(broker, uid, name, level):
    """v3.1.1 [MQTT-3.1.2-1] [MQTT-3.1.4-1]: with a wrong protocol name for its level the
    server must not accept the connection (it closes; a CONNACK, if any, refuses)."""
    with raw(broker, 4) as c:
        body = r.utf8(name) + bytes([level, 0x02]) + r.u16(60) + r.utf8(uid[:20])
        c.send(r.fixed(r.CONNECT, 0, body))
        packets, closed = c.read_until_closed(expect.CLOSE_TIMEOUT)
        assert closed, f"server accepted protocol name {name!r} level {level}: {packets}"
        assert all(p.type == r.CONNACK and p.body[1] != 0 for p in packets), packets


# -- client identifiers ----------------------------------------------------------------

BAD_IDS = [
    pytest.param(b"bad\xff\xfeid", id="invalid-utf8"),
    pytest.param(b"nul\x00id", id="nul"),
    pytest.param(b"sur\xed\xa0\x80id", id="surrogate"),
    pytest.param(b"over\xc0\xafid", id="overlong"),
]


@pytest.mark.parametrize("client_id", BAD_IDS)
def test_connect_client_id_bad_utf8_v5_refused(broker, client_id):
    """v5 [MQTT-1.5.4-1] [MQTT-1.5.4-2] [MQTT-3.1.3-4]: an ill-formed UTF-8 Client Identifier
    (or one containing U+0000) is a Malformed Packet: CONNACK 0x81 (or 0x85), then close."""
    with raw(broker) as c:
        c.send(r.connect(client_id))
        expect.connect_refused(c, 0x81, 0x85)


@pytest.mark.parametrize("client_id", BAD_IDS)
def test_connect_client_id_bad_utf8_v311_closes(broker, client_id):
    """v3.1.1 [MQTT-1.5.3-1] [MQTT-1.5.3-2] [MQTT-3.1.3-4]: ill-formed UTF-8 or U+0000 in
    the Client Identifier closes the connection (a CONNACK, if any, is 0x02)."""
    with raw(broker, 4) as c:
        c.send(r.connect(client_id, version=4))
        packets, closed = c.read_until_closed(expect.CLOSE_TIMEOUT)
        assert closed, f"server accepted a bad client id: {packets}"
        assert all(p.type == r.CONNACK and p.reason == 0x02 for p in packets), packets


def test_connect_bad_utf8_will_topic_v5_refused(broker, uid):
    """v5 [MQTT-3.1.3-11] [MQTT-1.5.4-1]: the Will Topic must be well-formed UTF-8."""
    with raw(broker) as c:
        c.send(r.connect(uid, will=r.Will(b"w/\xff", b"x")))
        expect.connect_refused(c, 0x81, 0x90)


@pytest.mark.parametrize("will_topic", ["w/+", "w/#"])
def test_connect_will_topic_with_wildcard_v5_refused(broker, uid, will_topic):
    """v5 [MQTT-3.3.2-2] [MQTT-4.7.0-1]: the Will Topic is a topic name, so wildcards are not
    allowed: CONNACK 0x90 (Topic Name invalid), or 0x82/0x81, then close."""
    with raw(broker) as c:
        c.send(r.connect(uid, will=r.Will(will_topic, b"x")))
        expect.connect_refused(c, 0x90, 0x82, 0x81)


@pytest.mark.parametrize("will_topic", ["w/+", "w/#"])
def test_connect_will_topic_with_wildcard_v311_closes(broker, uid, will_topic):
    """v3.1.1 [MQTT-4.7.1-1] [MQTT-3.1.4-1]: a Will Topic is a topic name, so a wildcard in
    it makes the CONNECT invalid: the connection is closed (a CONNACK, if any, refuses)."""
    with raw(broker, 4) as c:
        c.send(r.connect(uid, version=4, will=r.Will(will_topic, b"x")))
        packets, closed = c.read_until_closed(expect.CLOSE_TIMEOUT)
        assert closed, f"wildcard will topic accepted: {packets}"
        assert all(p.type == r.CONNACK and p.reason != 0 for p in packets), packets


def test_connect_empty_client_id_clean_session_0_v311_refused(broker):
    """v3.1.1 [MQTT-3.1.3-8]: a zero-byte ClientId with CleanSession 0 gets CONNACK 0x02
    (identifier rejected) and the connection is closed [MQTT-3.2.2-4] [MQTT-3.2.2-5]."""
    with raw(broker, 4) as c:
        c.send(r.connect("", version=4, clean=False))
        expect.v3_connack_refused(c, 0x02)


def test_connect_empty_client_id_clean_session_1_v311_accepted(broker):
    """v3.1.1 [MQTT-3.1.3-6]: a zero-byte ClientId with CleanSession 1 is accepted; the
    server assigns an identifier of its own [MQTT-3.2.2-1]."""
    with raw(broker, 4) as c:
        connack = c.handshake("", clean=True)
        assert connack.session_present is False
        expect.still_open(c)


def test_connect_empty_client_id_v5_assigned_identifier(broker):
    """v5 [MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.2.2-16]: an empty ClientID is accepted and the
    CONNACK carries a new Assigned Client Identifier, unique among sessions."""
    with raw(broker) as a, raw(broker) as b:
        ids = []
        for c in (a, b):
            connack = c.handshake("")
            assigned = connack.prop(r.ASSIGNED_CLIENT_IDENTIFIER)
            assert assigned, f"no Assigned Client Identifier in {connack!r}"
            ids.append(assigned)
        assert ids[0] != ids[1], f"two clients were assigned the same id {ids[0]!r}"
        expect.still_open(a)
        expect.still_open(b)


def test_connect_client_id_23_alphanumeric_accepted(broker):
    """v5 [MQTT-3.1.3-5], v3.1.1 [MQTT-3.1.3-5]: ClientIDs of 1 to 23 characters from
    [0-9a-zA-Z] must be allowed."""
    for version, cid in ((5, "aZ0123456789abcdefghXYZ"), (4, "Zz9876543210ABCDEFGHxyz"), (5, "q")):
        with raw(broker, version) as c:
            c.handshake(cid)


@pytest.mark.parametrize("client_id", [
    pytest.param("", id="empty"),
    pytest.param("x" * 24, id="24-chars", marks=xfail_on_mosquitto(
        "MQTT 3.1 §3.1 (Client Identifier)", "it accepts a 24-character 3.1 client id")),
])
def test_connect_v31_client_id_outside_1_to_23_refused(broker, client_id):
    """MQTT 3.1 (MQIsdp, §3.1 Client Identifier): the identifier must be 1 to 23 characters;
    otherwise the server answers CONNACK return code 2 (identifier rejected)."""
    with raw(broker, 3) as c:
        c.send(r.connect(client_id, version=3))
        expect.v3_connack_refused(c, 0x02)


def test_connect_v31_accepted(broker, uid):
    """MQTT 3.1: protocol name MQIsdp, level 3 connects and gets CONNACK 0 first (as in
    v3.1.1 [MQTT-3.2.0-1])."""
    with raw(broker, 3) as c:
        connack = c.handshake(uid[:20])
        assert connack.session_present is False
        expect.still_open(c)


# -- CONNECT properties ----------------------------------------------------------------

@pytest.mark.parametrize("props", [
    pytest.param([(r.SESSION_EXPIRY_INTERVAL, 10), (r.SESSION_EXPIRY_INTERVAL, 20)],
                 id="duplicate-session-expiry"),
    pytest.param([(r.RECEIVE_MAXIMUM, 10), (r.RECEIVE_MAXIMUM, 10)], id="duplicate-receive-max"),
    pytest.param([(r.RECEIVE_MAXIMUM, 0)], id="receive-max-0"),
    pytest.param([(r.MAXIMUM_PACKET_SIZE, 0)], id="max-packet-size-0"),
    pytest.param([(r.REQUEST_PROBLEM_INFORMATION, 2)], id="request-problem-info-2"),
    pytest.param([(r.REQUEST_RESPONSE_INFORMATION, 2)], id="request-response-info-2"),
])
def test_connect_invalid_properties_protocol_error(broker, uid, props):
    """v5 (§3.1.2.11): a repeated CONNECT property, Receive Maximum 0, Maximum Packet Size 0,
    or a Request Problem/Response Information other than 0/1 is a Protocol Error:
    CONNACK 0x82 and close [MQTT-3.2.2-7]."""
    with raw(broker) as c:
        c.send(r.connect(uid, props=props))
        expect.connect_refused(c, 0x82, 0x81)


def test_connect_property_not_allowed_in_connect_is_malformed(broker, uid):
    """v5 (§2.2.2.2): a property that CONNECT may not carry (Topic Alias) makes the packet
    malformed: CONNACK 0x81 (0x82 also seen) and close."""
    with raw(broker) as c:
        c.send(r.connect(uid, props=[(r.TOPIC_ALIAS, 1)]))
        expect.connect_refused(c, 0x81, 0x82)


def test_connect_auth_method_not_configured_refused(broker, uid):
    """v5 [MQTT-4.12.0-1]: an Authentication Method the server does not support gets CONNACK
    0x8C (Bad authentication method) or 0x87 (Not authorized), then close."""
    with raw(broker) as c:
        c.send(r.connect(uid, props=[(r.AUTHENTICATION_METHOD, "SCRAM-SHA-1"),
                                     (r.AUTHENTICATION_DATA, b"client-first")]))
        expect.connect_refused(c, 0x8C, 0x87)


def test_connect_auth_without_method_is_protocol_error(broker, uid):
    """v5 [MQTT-4.12.0-7]: a client that gave no Authentication Method in CONNECT must not
    send AUTH; doing so is a Protocol Error (DISCONNECT 0x82) and closes the connection."""
    with raw(broker) as c:
        c.handshake(uid)
        c.send(r.auth(0x19, [(r.AUTHENTICATION_METHOD, "SCRAM-SHA-1")]))
        expect.disconnected(c, 0x82)


def test_connect_auth_reserved_flags_is_malformed(broker, uid):
    """v5 [MQTT-3.15.1-1]: AUTH fixed-header flags must be 0; AUTH with flags 0001 is malformed
    (here it is also unexpected, so 0x82 is accepted too) and closes the connection."""
    with raw(broker) as c:
        c.handshake(uid)
        c.send(r.fixed(r.AUTH, 0x01, b"\x19\x00"))
        expect.disconnected(c, 0x81, 0x82)


# -- keep alive ---------------------------------------------------------------------

def _silent_until_closed(c: r.RawClient, limit: float) -> float:
    started = time.monotonic()
    packets, closed = c.read_until_closed(limit)
    elapsed = time.monotonic() - started
    assert closed, f"connection still open after {limit}s of client silence"
    for p in packets:
        assert p.type == r.DISCONNECT and p.reason == 0x8D, (
            f"only DISCONNECT 0x8D (Keep Alive timeout) may precede the close: {p!r}")
    return elapsed


@pytest.mark.slow_timer
@xfail_on_mosquitto("v5 [MQTT-3.1.2-22] / v3.1.1 [MQTT-3.1.2-24]", "it checks keep-alive expiry "
                    "only every few seconds, so "
                    "a 2 s keep alive is enforced after ~5 s instead of 3 s", strict=False)
@pytest.mark.parametrize("version", BOTH)
def test_keepalive_silent_client_is_closed(broker, uid, version):
    """v5 [MQTT-3.1.2-22], v3.1.1 [MQTT-3.1.2-24]: no packet within 1.5 x Keep Alive (2 s)
    closes the connection; not before the Keep Alive itself has passed."""
    with raw(broker, version) as c:
        c.handshake(uid, keepalive=2)
        elapsed = _silent_until_closed(c, limit=3.0 + 1.5)
        assert elapsed >= 1.9, f"closed after {elapsed:.2f}s, before the 2 s keep alive ran out"


@pytest.mark.slow_timer
def test_keepalive_any_packet_keeps_connection_open(broker, uid):
    """v5 [MQTT-3.1.2-22] [MQTT-3.12.4-1]: any control packet within the Keep Alive (2 s)
    keeps the connection: PINGREQ (answered by PINGRESP) or a PUBLISH, for 4 s in all."""
    with raw(broker) as c:
        c.handshake(uid, keepalive=2)
        for i in range(4):
            time.sleep(1.0)
            if i % 2:
                c.send(r.publish(f"ka/{uid}", b"x"))
            else:
                c.send(r.pingreq())
                c.expect(r.PINGRESP, timeout=2)
        expect.still_open(c)


def test_keepalive_zero_means_no_timeout(broker, uid):
    """v5 §3.1.2.10: Keep Alive 0 turns the mechanism off; the connection stays open."""
    with raw(broker) as c:
        c.handshake(uid, keepalive=0)
        c.quiet_for(1.0)
        expect.still_open(c)


@pytest.mark.tern_config("limits.server_keep_alive")
def test_keepalive_server_keep_alive_in_connack(broker_factory, uid):
    """v5 [MQTT-3.2.2-21] [MQTT-3.1.2-21]: a server that limits keep alive says so with a
    Server Keep Alive in CONNACK, which the client must then use."""
    b = broker_factory({"limits": {"server_keep_alive": 10}})
    with r.RawClient(b.port) as c:
        connack = c.handshake(uid, keepalive=600)
        assert connack.prop(r.SERVER_KEEP_ALIVE) == 10, f"no Server Keep Alive 10 in {connack!r}"


@pytest.mark.slow_timer
@pytest.mark.tern_config("limits.server_keep_alive")
def test_keepalive_server_keep_alive_enforced(broker_factory, uid):
    """v5 [MQTT-3.2.2-21] [MQTT-3.1.2-22]: with Server Keep Alive 2 in CONNACK, the server
    enforces 2 s, not the client's 60: silence for 1.5 x 2 s closes the connection."""
    b = broker_factory({"limits": {"server_keep_alive": 2}})
    with r.RawClient(b.port) as c:
        connack = c.handshake(uid, keepalive=60)
        assert connack.prop(r.SERVER_KEEP_ALIVE) == 2, f"no Server Keep Alive 2 in {connack!r}"
        elapsed = _silent_until_closed(c, limit=3.0 + 1.5)
        assert elapsed >= 1.9


# -- CONNACK basics ------------------------------------------------------------------

@pytest.mark.parametrize("version", ALL)
def test_connack_is_first_and_only_once(broker, uid, version):
    """v5 [MQTT-3.2.0-1] [MQTT-3.2.0-2] [MQTT-3.2.2-1], v3.1.1 [MQTT-3.2.0-1] [MQTT-3.1.4-4]:
    the server's first packet is one CONNACK 0 with reserved flag bits 0."""
    with raw(broker, version) as c:
        c.send(r.connect(uid[:20], version=version))
        connack = c.expect(r.CONNACK)
        assert connack.reason == 0 and connack.body[0] & 0xFE == 0, connack
        expect.still_open(c)
        assert c.quiet_for(0.2) == []


def test_connect_refused_connection_ignores_later_packets(broker, uid):
    """v5 [MQTT-3.1.4-6] [MQTT-3.2.2-7]: after refusing CONNECT, the server processes no
    data the client sent after it (a PUBLISH piggy-backed on a bad CONNECT is dropped)."""
    topic = f"refused/{uid}"
    with raw(broker) as watcher:
        watcher.handshake(uid + "w")
        watcher.subscribe(topic)
        with raw(broker) as bad:
            bad.send(r.connect(uid, protocol_name="MQTX") + r.publish(topic, b"leak"))
            bad.read_until_closed(expect.CLOSE_TIMEOUT)
        with raw(broker) as good:
            good.handshake(uid + "g")
            good.send(r.publish(topic, b"after"))
        pkt = watcher.expect(r.PUBLISH)
        assert pkt.payload == b"after", f"refused connection's PUBLISH was processed: {pkt!r}"


def test_connect_malformed_client_does_not_disturb_others(broker, uid):
    """v5 [MQTT-4.13.1-1]: a malformed packet closes only its own connection; another client
    keeps receiving messages."""
    topic = f"iso/{uid}"
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    pub = connect_v5(broker.port, uid + "p")
    for garbage in (b"\xff\xff\xff\xff\xff\x7f", r.connect(uid, reserved_flag=True),
                    b"\x10\x00", b"\x00\x00"):
        with raw(broker) as bad:
            bad.send_quietly(garbage)
            bad.read_until_closed(expect.CLOSE_TIMEOUT)
    pub.publish(topic, b"still here", qos=1)
    assert sub.wait_message(topic).payload == b"still here"
