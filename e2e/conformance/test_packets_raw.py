"""Packets after CONNECT, from raw bytes: malformed input, protocol errors and limits.

Each test connects a raw client, sends one bad (or borderline) packet and
checks the server's answer: for MQTT 5 a DISCONNECT (or ack) with the reason
code the specification gives, then a close; for MQTT 3.1.1 a close.
"""

import pytest

import expect
import rawmqtt as r
from clients import connect_v5, sync
from expect import xfail_on_mosquitto

BOTH = [pytest.param(5, id="v5"), pytest.param(4, id="v311")]


def connected(port: int, client_id: str, version: int = 5, **kw) -> r.RawClient:
    c = r.RawClient(port, version=version)
    c.connack = c.handshake(client_id, **kw)
    return c


# -- PUBLISH --------------------------------------------------------------------------

@pytest.mark.parametrize("version", BOTH)
def test_publish_qos3_is_malformed(broker, uid, version):
    """v5 [MQTT-3.3.1-4], v3.1.1 [MQTT-3.3.1-4]: a PUBLISH with both QoS bits set is
    malformed: v5 DISCONNECT 0x81, v3.1.1 close."""
    with connected(broker.port, uid, version) as c:
        c.send(r.publish("q/3", b"x", packet_id=1, flags=0x06, version=version))
        expect.refused(c, version, 0x81)


@xfail_on_mosquitto("[MQTT-3.3.1-2] with [MQTT-4.13.1-1] / 3.1.1 [MQTT-4.8.0-1]",
                    "it accepts a QoS 0 PUBLISH with DUP 1 and keeps the connection")
@pytest.mark.parametrize("version", BOTH)
def test_publish_dup_on_qos0_is_malformed(broker, uid, version):
    """v5 [MQTT-3.3.1-2], v3.1.1 [MQTT-3.3.1-2]: DUP must be 0 on QoS 0; a QoS 0 PUBLISH with
    DUP 1 is a malformed packet (v5 DISCONNECT 0x81)."""
    with connected(broker.port, uid, version) as c:
        c.send(r.publish("dup/0", b"x", qos=0, dup=True, version=version))
        expect.refused(c, version, 0x81, 0x82)


@pytest.mark.parametrize("topic", ["a/+", "a/#", "#", "+", "a/b+"])
def test_publish_wildcard_topic_v5_refused(broker, uid, topic):
    """v5 [MQTT-3.3.2-2] [MQTT-4.7.0-1]: a Topic Name must not contain wildcards:
    DISCONNECT 0x90 (Topic Name invalid), or 0x82 (Protocol Error) — the specification
    assigns no single code to this fault."""
    with connected(broker.port, uid) as c:
        c.send(r.publish(topic, b"x"))
        expect.disconnected(c, 0x90, 0x82)


@pytest.mark.parametrize("topic", ["a/+", "a/#", "#"])
def test_publish_wildcard_topic_v311_closes(broker, uid, topic):
    """v3.1.1 [MQTT-3.3.2-2] [MQTT-4.7.1-1] [MQTT-4.8.0-1]: a wildcard in a PUBLISH Topic Name
    closes the connection."""
    with connected(broker.port, uid, 4) as c:
        c.send(r.publish(topic, b"x", version=4))
        expect.refused(c, 4)


def test_publish_wildcard_topic_not_delivered(broker, uid):
    """v5 [MQTT-3.3.2-2]: a PUBLISH to a wildcard name reaches no subscriber of "#"."""
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(f"wc{uid}/#")
    with connected(broker.port, uid) as c:
        c.send(r.publish(f"wc{uid}/+", b"bad"))
        c.read_until_closed(expect.CLOSE_TIMEOUT)
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(f"wc{uid}/ok", b"good")
    assert sub.wait_message().payload == b"good"


def test_publish_empty_topic_without_alias_v5_is_protocol_error(broker, uid):
    """v5 §3.3.2.3.4 [MQTT-4.7.3-1]: a zero-length Topic Name with no Topic Alias is a
    Protocol Error (DISCONNECT 0x82)."""
    with connected(broker.port, uid) as c:
        c.send(r.publish("", b"x"))
        expect.disconnected(c, 0x82, 0x81, 0x90)


def test_publish_empty_topic_v311_closes(broker, uid):
    """v3.1.1 [MQTT-4.7.3-1]: Topic Names must be at least one character long."""
    with connected(broker.port, uid, 4) as c:
        c.send(r.publish("", b"x", version=4))
        expect.refused(c, 4)


BAD_TOPICS = [
    pytest.param(b"t/\xff", id="invalid-utf8"),
    pytest.param(b"t/\x00x", id="nul"),
    pytest.param(b"t/\xed\xbf\xbf", id="surrogate"),
]


@pytest.mark.parametrize("topic", BAD_TOPICS)
@pytest.mark.parametrize("version", BOTH)
def test_publish_topic_bad_utf8_is_malformed(broker, uid, version, topic):
    """v5 [MQTT-1.5.4-1] [MQTT-1.5.4-2] [MQTT-3.3.2-1] [MQTT-4.7.3-2], v3.1.1 [MQTT-1.5.3-1]
    [MQTT-1.5.3-2] [MQTT-4.7.3-2]: ill-formed UTF-8 or U+0000 in a Topic Name is malformed:
    v5 DISCONNECT 0x81, v3.1.1 close."""
    with connected(broker.port, uid, version) as c:
        c.send(r.publish(topic, b"x", version=version))
        expect.refused(c, version, 0x81)


@pytest.mark.parametrize("version", BOTH)
def test_publish_qos1_packet_id_zero_is_refused(broker, uid, version):
    """v5 [MQTT-2.2.1-3], v3.1.1 [MQTT-2.3.1-1]: a QoS 1 PUBLISH needs a non-zero Packet
    Identifier; id 0 is a malformed packet / protocol error and closes the connection."""
    with connected(broker.port, uid, version) as c:
        c.send(r.publish("pid/0", b"x", qos=1, packet_id=0, version=version))
        expect.refused(c, version, 0x81, 0x82)


@xfail_on_mosquitto("[MQTT-3.3.4-6] with [MQTT-4.13.1-1]",
                    "it accepts a client PUBLISH carrying a Subscription Identifier")
def test_publish_with_subscription_identifier_is_protocol_error(broker, uid):
    """v5 [MQTT-3.3.4-6]: a PUBLISH from a client must not contain a Subscription Identifier
    (Protocol Error, DISCONNECT 0x82)."""
    with connected(broker.port, uid) as c:
        c.send(r.publish("sid/x", b"x", props=[(r.SUBSCRIPTION_IDENTIFIER, 3)]))
        expect.disconnected(c, 0x82)


@pytest.mark.parametrize("props", [
    pytest.param([(r.MESSAGE_EXPIRY_INTERVAL, 5), (r.MESSAGE_EXPIRY_INTERVAL, 6)], id="expiry"),
    pytest.param([(r.PAYLOAD_FORMAT_INDICATOR, 0), (r.PAYLOAD_FORMAT_INDICATOR, 0)], id="pfi"),
    pytest.param([(r.CONTENT_TYPE, "a"), (r.CONTENT_TYPE, "b")], id="content-type"),
    pytest.param([(r.RESPONSE_TOPIC, "a"), (r.RESPONSE_TOPIC, "b")], id="response-topic"),
    pytest.param([(r.CORRELATION_DATA, b"a"), (r.CORRELATION_DATA, b"b")], id="correlation"),
    pytest.param([(r.TOPIC_ALIAS, 1), (r.TOPIC_ALIAS, 1)], id="topic-alias"),
])
def test_publish_duplicate_property_is_protocol_error(broker, uid, props):
    """v5 §3.3.2.3: repeating a PUBLISH property that may appear once is a Protocol Error:
    DISCONNECT 0x82 [MQTT-4.13.1-1]."""
    with connected(broker.port, uid) as c:
        c.send(r.publish("dupprop/x", b"x", props=props))
        expect.disconnected(c, 0x82)


def test_publish_unknown_property_is_malformed(broker, uid):
    """v5 §2.2.2.2: a property identifier PUBLISH may not carry (Session Expiry Interval)
    makes the packet malformed (DISCONNECT 0x81; 0x82 also seen)."""
    with connected(broker.port, uid) as c:
        c.send(r.publish("badprop/x", b"x", props=[(r.SESSION_EXPIRY_INTERVAL, 5)]))
        expect.disconnected(c, 0x81, 0x82)


@pytest.mark.parametrize("value", [0, 1])
def test_publish_payload_format_utf8_invalid_payload(broker, uid, value):
    """v5 §3.3.2.3.2: Payload Format Indicator 1 with a non-UTF-8 payload may be refused with
    PUBACK 0x99 (Payload format invalid) or DISCONNECT 0x99; indicator 0 is delivered as is."""
    topic = f"pfi{uid}"
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    with connected(broker.port, uid) as c:
        c.send(r.publish(topic, b"\xff\xfe", qos=1, packet_id=7,
                         props=[(r.PAYLOAD_FORMAT_INDICATOR, value)]))
        p = c.recv()
        if value == 0:
            assert p.type == r.PUBACK and p.reason == 0, p
            assert sub.wait_message(topic).payload == b"\xff\xfe"
        else:
            assert (p.type == r.PUBACK and p.reason in (0x00, 0x10, 0x99)) or (
                p.type == r.DISCONNECT and p.reason == 0x99), p


@xfail_on_mosquitto("[MQTT-3.3.2-14] with [MQTT-4.13.1-1]",
                    "it accepts a Response Topic containing '#'")
def test_publish_response_topic_with_wildcard_is_refused(broker, uid):
    """v5 [MQTT-3.3.2-14]: the Response Topic must not contain wildcards; a server that
    detects it treats the PUBLISH as a protocol error (DISCONNECT 0x82/0x81/0x90)."""
    with connected(broker.port, uid) as c:
        c.send(r.publish("resp/x", b"x", props=[(r.RESPONSE_TOPIC, "reply/#")]))
        expect.disconnected(c, 0x82, 0x81, 0x90)


# -- reserved fixed-header flags --------------------------------------------------------

def _with_flags(case: str, version: int) -> bytes:
    props = b"\x00" if version == 5 else b""
    return {
        "subscribe-0000": r.fixed(r.SUBSCRIBE, 0x00, r.u16(1) + props + r.utf8("a") + b"\x00"),
        "subscribe-1111": r.fixed(r.SUBSCRIBE, 0x0F, r.u16(1) + props + r.utf8("a") + b"\x00"),
        "unsubscribe-0000": r.fixed(r.UNSUBSCRIBE, 0x00, r.u16(1) + props + r.utf8("a")),
        "pubrel-0000": r.fixed(r.PUBREL, 0x00, r.u16(1)),
        "pingreq-0001": r.fixed(r.PINGREQ, 0x01, b""),
        "puback-0010": r.fixed(r.PUBACK, 0x02, r.u16(1)),
        "disconnect-0001": r.fixed(r.DISCONNECT, 0x01, b""),
    }[case]


_LAX_FLAGS = xfail_on_mosquitto("v5 [MQTT-2.1.3-1] / v3.1.1 [MQTT-2.2.2-2]",
                                "it ignores reserved fixed-header flags of this packet type")


@pytest.mark.parametrize("version", BOTH)
@pytest.mark.parametrize("case", [
    "subscribe-0000", "subscribe-1111", "unsubscribe-0000", "pubrel-0000",
    pytest.param("pingreq-0001", marks=_LAX_FLAGS),
    pytest.param("puback-0010", marks=_LAX_FLAGS),
    "disconnect-0001",
])
def test_fixed_header_reserved_flags_are_malformed(broker, uid, version, case):
    """v5 [MQTT-2.1.3-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1] [MQTT-3.6.1-1] [MQTT-3.14.1-1],
    v3.1.1 [MQTT-2.2.2-1] [MQTT-2.2.2-2] [MQTT-3.8.1-1] [MQTT-3.10.1-1] [MQTT-3.6.1-1]:
    wrong reserved fixed-header flags make the packet malformed; the server closes the
    connection (v5 with DISCONNECT 0x81)."""
    with connected(broker.port, uid, version) as c:
        c.send(_with_flags(case, version))
        expect.refused(c, version, 0x81)


@pytest.mark.parametrize("version", BOTH)
def test_reserved_packet_type_0_is_malformed(broker, uid, version):
    """v5 §2.1.2, v3.1.1 [MQTT-4.8.0-1]: packet type 0 is reserved; receiving it closes the
    connection (v5 DISCONNECT 0x81)."""
    with connected(broker.port, uid, version) as c:
        c.send(b"\x00\x00")
        expect.refused(c, version, 0x81, 0x82)


@pytest.mark.parametrize("version", BOTH)
def test_remaining_length_over_four_bytes_is_malformed(broker, uid, version):
    """v5 §1.5.5 [MQTT-4.13.1-1], v3.1.1 §2.2.3 [MQTT-4.8.0-1]: a Remaining Length needs at
    most four bytes; a fifth continuation byte is malformed and closes the connection."""
    with connected(broker.port, uid, version) as c:
        c.send(b"\x30\xff\xff\xff\xff\x01")
        expect.refused(c, version, 0x81, 0x95)


@pytest.mark.parametrize("version", BOTH)
def test_remaining_length_shorter_than_content_is_malformed(broker, uid, version):
    """v5 [MQTT-4.13.1-1], v3.1.1 [MQTT-4.8.0-1]: a SUBSCRIBE whose Remaining Length ends
    inside its topic filter is malformed and closes the connection."""
    body = r.u16(1) + (b"\x00" if version == 5 else b"") + r.u16(10) + b"abc"
    with connected(broker.port, uid, version) as c:
        c.send(r.fixed(r.SUBSCRIBE, 0x02, body))
        expect.refused(c, version, 0x81)


# -- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------

def test_subscribe_no_filters_v5_is_protocol_error(broker, uid):
    """v5 [MQTT-3.8.3-2]: a SUBSCRIBE must carry at least one filter; none is a Protocol
    Error (DISCONNECT 0x82)."""
    with connected(broker.port, uid) as c:
        c.send(r.subscribe(1, []))
        expect.disconnected(c, 0x82, 0x81)


def test_subscribe_no_filters_v311_closes(broker, uid):
    """v3.1.1 [MQTT-3.8.3-3]: the SUBSCRIBE payload must contain at least one Topic Filter /
    QoS pair; without one the server closes the connection [MQTT-4.8.0-1]."""
    with connected(broker.port, uid, 4) as c:
        c.send(r.subscribe(1, [], version=4))
        expect.refused(c, 4)


@pytest.mark.parametrize("version", BOTH)
def test_unsubscribe_no_filters_is_protocol_error(broker, uid, version):
    """v5 [MQTT-3.10.3-2], v3.1.1 [MQTT-3.10.3-2]: an UNSUBSCRIBE without a Topic Filter is a
    protocol error and closes the connection (v5 DISCONNECT 0x82)."""
    with connected(broker.port, uid, version) as c:
        c.send(r.unsubscribe(1, [], version=version))
        expect.refused(c, version, 0x82, 0x81)


@pytest.mark.parametrize("options,codes,case", [
    (0x40, (0x81,), "reserved-bit-6"),
    (0x80, (0x81,), "reserved-bit-7"),
    (0x03, (0x81, 0x82), "qos-3"),
    (0x30, (0x82, 0x81), "retain-handling-3"),
])
def test_subscribe_bad_options_v5_refused(broker, uid, options, codes, case):
    """v5 [MQTT-3.8.3-5]: non-zero reserved Subscription Options bits are malformed (0x81);
    QoS 3 is malformed, and Retain Handling 3 a Protocol Error (§3.8.3.1)."""
    with connected(broker.port, uid) as c:
        c.send(r.subscribe(1, [("opt/x", options)]))
        expect.disconnected(c, *codes)


@pytest.mark.parametrize("qos_byte", [0x03, 0x04, 0x80], ids=["qos-3", "bit-2", "bit-7"])
def test_subscribe_bad_requested_qos_v311_closes(broker, uid, qos_byte):
    """v3.1.1 [MQTT-3.8.3-4]: reserved bits in the requested-QoS byte non-zero, or QoS 3, is
    malformed: the server closes the connection."""
    with connected(broker.port, uid, 4) as c:
        c.send(r.subscribe(1, [("opt/x", qos_byte)], version=4))
        expect.refused(c, 4)


@pytest.mark.parametrize("version", BOTH)
def test_subscribe_filter_bad_utf8_is_malformed(broker, uid, version):
    """v5 [MQTT-3.8.3-1] [MQTT-1.5.4-1], v3.1.1 [MQTT-3.8.3-1] [MQTT-1.5.3-1]: the Topic
    Filter must be well-formed UTF-8; otherwise the connection is closed (v5 0x81)."""
    with connected(broker.port, uid, version) as c:
        c.send(r.subscribe(1, [(b"f/\xc3\x28", 0)], version=version))
        expect.refused(c, version, 0x81)


@xfail_on_mosquitto("[MQTT-3.8.3-4]", "it grants a shared subscription with No Local set")
def test_subscribe_no_local_on_shared_subscription_is_protocol_error(broker, uid):
    """v5 [MQTT-3.8.3-4]: No Local set on a Shared Subscription is a Protocol Error."""
    with connected(broker.port, uid) as c:
        c.send(r.subscribe(1, [(f"$share/g/{uid}", r.sub_options(no_local=True))]))
        packets, closed = c.read_until_closed(2.0)
        if closed:
            disconnects = [p for p in packets if p.type == r.DISCONNECT]
            assert not expect.STRICT_REASON_CODES or disconnects, packets
            assert all(p.reason == 0x82 for p in disconnects), packets
        else:
            raise AssertionError(f"No Local on a shared subscription was accepted: {packets}")


@pytest.mark.parametrize("topic_filter", ["a/#/b", "a/b#", "a+/b", "#/a", "a/+b"])
@pytest.mark.parametrize("version", BOTH)
def test_subscribe_invalid_wildcard_filter_refused(broker, uid, version, topic_filter):
    """v5 [MQTT-4.7.1-1] [MQTT-4.7.1-2], v3.1.1 [MQTT-4.7.1-2] [MQTT-4.7.1-3]: "#" must be
    last and alone in its level, "+" must fill a level; an invalid filter is refused with a
    SUBACK failure code (0x80 / 0x8F) or by closing the connection (v5 0x81/0x82/0x8F)."""
    with connected(broker.port, uid, version) as c:
        expect.subscribe_refused(c, topic_filter, version)


@pytest.mark.parametrize("version", BOTH)
def test_suback_matches_subscribe(broker, uid, version):
    """v5 [MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-3.8.4-5] [MQTT-3.8.4-6] [MQTT-3.9.3-1],
    v3.1.1 [MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-3.8.4-4] [MQTT-3.8.4-5] [MQTT-3.9.3-1]:
    a SUBSCRIBE with three filters gets one SUBACK with its Packet Identifier and one
    code per filter, in order (here the requested QoS, all granted)."""
    filters = [(f"s/{uid}/2", 2), (f"s/{uid}/0", 0), (f"s/{uid}/+/1", 1)]
    with connected(broker.port, uid, version) as c:
        c.send(r.subscribe(0x1234, filters, version=version))
        suback = c.expect(r.SUBACK)
        assert suback.packet_id == 0x1234
        assert suback.codes == [2, 0, 1], suback


@pytest.mark.parametrize("version", BOTH)
def test_unsuback_matches_unsubscribe(broker, uid, version):
    """v5 [MQTT-3.10.4-4] [MQTT-3.10.4-5] [MQTT-3.11.3-1], v3.1.1 [MQTT-3.10.4-4]
    [MQTT-3.10.4-5]: UNSUBSCRIBE gets an UNSUBACK with its Packet Identifier, even when no
    subscription matched; v5 gives 0x00 / 0x11 (no subscription existed) per filter."""
    with connected(broker.port, uid, version) as c:
        c.subscribe(f"u/{uid}/a", 0)
        c.send(r.unsubscribe(0x0A0B, [f"u/{uid}/a", f"u/{uid}/none"], version=version))
        unsuback = c.expect(r.UNSUBACK)
        assert unsuback.packet_id == 0x0A0B
        if version == 5:
            assert unsuback.codes == [0x00, 0x11], unsuback


# -- acknowledgements ----------------------------------------------------------------------

@pytest.mark.parametrize("version", BOTH)
def test_qos1_publish_gets_puback_with_same_id(broker, uid, version):
    """v5 [MQTT-3.3.4-1] [MQTT-2.2.1-5] [MQTT-4.3.2-4], v3.1.1 [MQTT-3.3.4-1] [MQTT-2.3.1-6]:
    a QoS 1 PUBLISH is answered by a PUBACK with the same Packet Identifier."""
    with connected(broker.port, uid, version) as c:
        c.send(r.publish(f"ack/{uid}", b"x", qos=1, packet_id=0x7FFF, version=version))
        puback = c.expect(r.PUBACK)
        assert puback.packet_id == 0x7FFF and puback.reason in (0x00, 0x10), puback


@pytest.mark.parametrize("version", BOTH)
def test_qos2_publish_gets_pubrec_then_pubcomp(broker, uid, version):
    """v5 [MQTT-4.3.3-8] [MQTT-4.3.3-11] [MQTT-2.2.1-5], v3.1.1 [MQTT-3.3.4-1] [MQTT-2.3.1-6]:
    QoS 2: PUBLISH → PUBREC (same id); PUBREL → PUBCOMP (same id)."""
    with connected(broker.port, uid, version) as c:
        c.send(r.publish(f"ack2/{uid}", b"x", qos=2, packet_id=4242, version=version))
        pubrec = c.expect(r.PUBREC)
        assert pubrec.packet_id == 4242 and pubrec.reason in (0x00, 0x10), pubrec
        assert pubrec.flags == 0
        c.send(r.ack(r.PUBREL, 4242, version=version))
        pubcomp = c.expect(r.PUBCOMP)
        assert pubcomp.packet_id == 4242 and pubcomp.reason == 0, pubcomp


@xfail_on_mosquitto("§3.7.2.1 (PUBCOMP 0x92 Packet Identifier not found)",
                    "it answers 0x00 (Success: Packet Identifier released) for an id it never had")
def test_pubrel_for_unknown_id_v5_gets_pubcomp_0x92(broker, uid):
    """v5 [MQTT-4.3.3-11] §3.7.2.1: a PUBREL for a Packet Identifier the server does not
    know is answered by PUBCOMP 0x92 (Packet Identifier not found)."""
    with connected(broker.port, uid) as c:
        c.send(r.ack(r.PUBREL, 999))
        pubcomp = c.expect(r.PUBCOMP)
        assert pubcomp.packet_id == 999 and pubcomp.reason == 0x92, pubcomp
        expect.still_open(c)


def test_pubrel_for_unknown_id_v311_gets_pubcomp(broker, uid):
    """v3.1.1 §4.3.3: a PUBREL is answered by a PUBCOMP with the same id, even if unknown."""
    with connected(broker.port, uid, 4) as c:
        c.send(r.ack(r.PUBREL, 999, version=4))
        pubcomp = c.expect(r.PUBCOMP)
        assert pubcomp.packet_id == 999
        expect.still_open(c)


@pytest.mark.parametrize("resends", [
    1, pytest.param(2, marks=xfail_on_mosquitto(
        "[MQTT-4.3.3-10]", "a second re-send of an unreleased QoS 2 PUBLISH is treated as a "
        "protocol error instead of being acknowledged with PUBREC"))])
def test_qos2_duplicate_publish_before_pubrel_delivered_once(broker, uid, resends):
    """v5 [MQTT-4.3.3-10] [MQTT-4.3.3-12]: until PUBREL, a re-sent QoS 2 PUBLISH
    (DUP 1, same Packet Identifier) is acknowledged with PUBREC but not delivered again;
    after PUBCOMP the same id starts a new message."""
    topic = f"eo/{uid}"
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=2)
    with connected(broker.port, uid) as c:
        for dup in [False] + [True] * resends:
            c.send(r.publish(topic, b"once", qos=2, packet_id=17, dup=dup))
            assert c.expect(r.PUBREC).packet_id == 17
        c.send(r.ack(r.PUBREL, 17))
        assert c.expect(r.PUBCOMP).packet_id == 17
        c.send(r.publish(topic, b"second", qos=2, packet_id=17))
        c.expect(r.PUBREC)
        c.send(r.ack(r.PUBREL, 17))
        c.expect(r.PUBCOMP)
    msgs = sub.wait_messages(2, topic)
    assert [m.payload for m in msgs] == [b"once", b"second"]
    sync(connect_v5(broker.port, uid + "p"), sub, topic)
    assert [m.payload for m in sub.received(topic)][:2] == [b"once", b"second"]
    assert len([m for m in sub.received(topic) if m.payload == b"once"]) == 1


def test_client_disconnect_session_expiry_after_zero_is_protocol_error(broker, uid):
    """v5 §3.14.2.2.2: if CONNECT had Session Expiry 0, a DISCONNECT that sets a non-zero
    Session Expiry Interval is a Protocol Error (server DISCONNECT 0x82, or close)."""
    with connected(broker.port, uid) as c:
        c.send(r.disconnect(0, [(r.SESSION_EXPIRY_INTERVAL, 30)]))
        packets, closed = c.read_until_closed(expect.CLOSE_TIMEOUT)
        assert closed
        for p in packets:
            assert p.type == r.DISCONNECT and p.reason == 0x82, p


def test_server_disconnect_has_no_session_expiry(broker, uid):
    """v5 [MQTT-3.14.2-2]: a DISCONNECT sent by the server never carries Session Expiry."""
    with connected(broker.port, uid) as c:
        c.send(r.publish("a/#", b"x"))
        for p in c.read_until_closed(expect.CLOSE_TIMEOUT)[0]:
            if p.type == r.DISCONNECT:
                assert p.prop(r.SESSION_EXPIRY_INTERVAL) is None, p


# -- limits: maximum packet size ------------------------------------------------------------

@pytest.mark.tern_config("limits.max_packet_size")
def test_packet_over_server_maximum_size_v5_disconnect_0x95(broker_factory, uid):
    """v5 [MQTT-3.2.2-15] §3.2.2.3.6: the server advertises Maximum Packet Size 1000; a larger
    packet is answered with DISCONNECT 0x95 (Packet too large) and a close."""
    b = broker_factory({"limits": {"max_packet_size": 1000}})
    with connected(b.port, uid) as c:
        assert c.connack.prop(r.MAXIMUM_PACKET_SIZE) == 1000, c.connack
        c.send(r.publish("big/x", b"x" * 1200, qos=0))
        expect.disconnected(c, 0x95)


@pytest.mark.tern_config("limits.max_packet_size")
def test_packet_over_server_maximum_size_v311_closes(broker_factory, uid):
    """v3.1.1 [MQTT-4.8.0-1]: a packet over the server's size limit closes the connection."""
    b = broker_factory({"limits": {"max_packet_size": 1000}})
    with connected(b.port, uid, 4) as c:
        c.send(r.publish("big/x", b"x" * 1200, qos=0, version=4))
        expect.refused(c, 4)


@pytest.mark.tern_config("limits.max_packet_size")
def test_packet_at_server_maximum_size_accepted(broker_factory, uid):
    """v5 §3.2.2.3.6: a packet of exactly the Maximum Packet Size is accepted."""
    b = broker_factory({"limits": {"max_packet_size": 1000}})
    topic = f"edge/{uid}"
    with connected(b.port, uid + "s") as sub, connected(b.port, uid) as c:
        sub.subscribe(topic, 0)
        size = 1000 - len(r.publish(topic, b"", qos=0)) - 1  # remaining length takes 2 bytes
        packet = r.publish(topic, b"y" * size, qos=0)
        assert len(packet) == 1000
        c.send(packet)
        got = sub.expect(r.PUBLISH)
        assert len(got.payload) == size
        expect.still_open(c)


def test_server_respects_client_maximum_packet_size(broker, uid):
    """v5 [MQTT-3.1.2-24] [MQTT-3.1.2-25]: the server never sends a packet larger than the
    client's Maximum Packet Size; it drops that message for this client and goes on."""
    topic = f"cmax/{uid}"
    with connected(broker.port, uid + "s", props=[(r.MAXIMUM_PACKET_SIZE, 128)]) as sub:
        sub.subscribe(topic, 1)
        pub = connect_v5(broker.port, uid + "p")
        pub.publish(topic, b"L" * 400, qos=1)
        pub.publish(topic, b"small", qos=1)
        got = sub.expect(r.PUBLISH)
        assert got.payload == b"small", f"oversize message sent or order lost: {got!r}"
        sub.send(r.ack(r.PUBACK, got.packet_id))
        expect.still_open(sub)


# -- limits: topic aliases -------------------------------------------------------------------

@pytest.mark.tern_config("limits.topic_alias_maximum")
@pytest.mark.parametrize("alias", [0, 6])
def test_topic_alias_out_of_range_disconnect_0x94(broker_factory, uid, alias):
    """v5 [MQTT-3.3.2-8] [MQTT-3.3.2-9] [MQTT-3.2.2-17]: Topic Alias 0, or one above the Topic
    Alias Maximum (5) in CONNACK, gets DISCONNECT 0x94 (Topic Alias invalid). The reason
    code table names 0x94 only for "greater than the maximum"; for alias 0 the
    specification gives no code, so 0x82 and 0x81 are accepted there too."""
    b = broker_factory({"limits": {"topic_alias_maximum": 5}})
    with connected(b.port, uid) as c:
        assert c.connack.prop(r.TOPIC_ALIAS_MAXIMUM) == 5, c.connack
        c.send(r.publish("alias/x", b"x", props=[(r.TOPIC_ALIAS, alias)]))
        expect.disconnected(c, *((0x94,) if alias else (0x94, 0x82, 0x81)))


def test_topic_alias_unknown_is_protocol_error(broker, uid):
    """v5 §3.3.2.3.4: a zero-length Topic Name with a Topic Alias that has no mapping on this
    connection is a Protocol Error (DISCONNECT 0x82)."""
    with connected(broker.port, uid) as c:
        assert (c.connack.prop(r.TOPIC_ALIAS_MAXIMUM) or 0) >= 1, "server offers no aliases"
        c.send(r.publish("", b"x", props=[(r.TOPIC_ALIAS, 1)]))
        expect.disconnected(c, 0x82, 0x94)


def test_topic_alias_maps_and_remaps(broker, uid):
    """v5 [MQTT-3.3.2-12] §3.3.2.3.4: an alias set with a topic name is used for later
    PUBLISHes with an empty name; sending a new name with the alias replaces the mapping."""
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(f"al/{uid}/#", qos=1)
    with connected(broker.port, uid) as c:
        assert (c.connack.prop(r.TOPIC_ALIAS_MAXIMUM) or 0) >= 1
        steps = [(f"al/{uid}/one", b"1"), ("", b"2"), (f"al/{uid}/two", b"3"), ("", b"4")]
        for i, (topic, payload) in enumerate(steps, start=1):
            c.send(r.publish(topic, payload, qos=1, packet_id=i, props=[(r.TOPIC_ALIAS, 1)]))
            assert c.expect(r.PUBACK).packet_id == i
    got = [(m.topic, m.payload) for m in sub.wait_messages(4)]
    assert got == [(f"al/{uid}/one", b"1"), (f"al/{uid}/one", b"2"),
                   (f"al/{uid}/two", b"3"), (f"al/{uid}/two", b"4")]
    assert all("TopicAlias" not in m.props for m in sub.received()), (
        "subscriber did not allow aliases, but got one [MQTT-3.1.2-27]")


def test_topic_alias_not_carried_to_new_connection(broker, uid):
    """v5 [MQTT-3.3.2-7]: Topic Alias mappings do not survive the connection; using an alias
    set on a previous connection is a Protocol Error on the new one."""
    with connected(broker.port, uid, clean=False,
                   props=[(r.SESSION_EXPIRY_INTERVAL, 30)]) as c:
        c.send(r.publish(f"carry/{uid}", b"x", qos=1, packet_id=1, props=[(r.TOPIC_ALIAS, 2)]))
        c.expect(r.PUBACK)
        c.send(r.disconnect())
    with connected(broker.port, uid, clean=False,
                   props=[(r.SESSION_EXPIRY_INTERVAL, 0)]) as c:
        c.send(r.publish("", b"y", qos=1, packet_id=2, props=[(r.TOPIC_ALIAS, 2)]))
        expect.disconnected(c, 0x82, 0x94)


# -- limits: receive maximum ------------------------------------------------------------------

@pytest.mark.tern_config("limits.receive_maximum")
@xfail_on_mosquitto("§3.3.4 (Receive Maximum exceeded → DISCONNECT 0x93)",
                    "it answers the extra QoS 2 PUBLISH with PUBREC 0x97 (Quota exceeded) "
                    "and keeps the connection")
def test_receive_maximum_exceeded_disconnect_0x93(broker_factory, uid):
    """v5 [MQTT-3.3.4-7] §3.3.4: the server's CONNACK Receive Maximum is 10; an eleventh
    unacknowledged QoS 2 PUBLISH (no PUBREL sent) gets DISCONNECT 0x93."""
    b = broker_factory({"limits": {"receive_maximum": 10}})
    with connected(b.port, uid) as c:
        assert c.connack.prop(r.RECEIVE_MAXIMUM) == 10, c.connack
        for pid in range(1, 11):
            c.send(r.publish(f"rm/{uid}", b"x", qos=2, packet_id=pid))
            assert c.expect(r.PUBREC).packet_id == pid
        c.send(r.publish(f"rm/{uid}", b"x", qos=2, packet_id=11))
        expect.disconnected(c, 0x93)


@pytest.mark.tern_config("limits.receive_maximum")
def test_receive_maximum_not_exceeded_when_acknowledged(broker_factory, uid):
    """v5 §4.9 (PUBCOMP returns send quota): a client that completes each QoS 2 flow may send many more
    than Receive Maximum (10) messages in total."""
    b = broker_factory({"limits": {"receive_maximum": 10}})
    with connected(b.port, uid) as c:
        for pid in range(1, 31):
            c.send(r.publish(f"rm/{uid}", b"x", qos=2, packet_id=pid))
            assert c.expect(r.PUBREC).packet_id == pid
            c.send(r.ack(r.PUBREL, pid))
            assert c.expect(r.PUBCOMP).packet_id == pid
        expect.still_open(c)


def test_server_respects_client_receive_maximum(broker, uid):
    """v5 [MQTT-3.3.4-9] [MQTT-4.9.0-2] [MQTT-3.3.4-10] [MQTT-4.9.0-3]: with the client's
    Receive Maximum 2 the server has at most two unacknowledged QoS 1 PUBLISHes out; it still
    answers PINGREQ; each PUBACK lets one more through, and none is lost."""
    topic = f"crm/{uid}"
    with connected(broker.port, uid + "s", props=[(r.RECEIVE_MAXIMUM, 2)]) as sub:
        sub.subscribe(topic, 1)
        pub = connect_v5(broker.port, uid + "p")
        for i in range(5):
            pub.publish(topic, f"m{i}".encode(), qos=1)
        first = [sub.expect(r.PUBLISH), sub.expect(r.PUBLISH)]
        sub.send(r.pingreq())
        extra = sub.quiet_for(0.5)
        assert [p.type for p in extra] == [r.PINGRESP], f"server exceeded Receive Maximum: {extra}"
        got = list(first)
        for i in range(3):
            sub.send(r.ack(r.PUBACK, got[i].packet_id))
            got.append(sub.expect(r.PUBLISH))
        assert [p.payload for p in got] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
