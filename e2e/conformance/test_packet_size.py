"""The client's Maximum Packet Size against the server's diagnostics.

A v5 client that says Maximum Packet Size 20 can take a CONNACK and short PUBLISH packets,
but not an acknowledgement that carries a Reason String (Tern's "not authorized" PUBACK is
23 bytes, its "packet identifier not found" PUBCOMP 36). The server must then leave the
Reason String and User Properties out and still send the packet. The topics here are short
on purpose (so that a PUBLISH fits); the module's broker is used by this module only.
"""

import pytest

import rawmqtt as r
from clients import connect_v5
from expect import IS_TERN
from support_extra import (CONNACK_CODES, PUBACK_CODES, PUBCOMP_CODES, PUBREC_CODES,
                           PUBREL_CODES, SERVER_DISCONNECT_CODES, connected, ping_barrier,
                           wire_size)

CLIENT_MAX = 20
SMALL = [(r.MAXIMUM_PACKET_SIZE, CLIENT_MAX)]


def fits(pkt: r.Packet) -> r.Packet:
    size = wire_size(pkt)
    assert size <= CLIENT_MAX, f"{size}-byte packet to a client whose Maximum Packet Size is " \
                               f"{CLIENT_MAX}: {pkt!r}"
    return pkt


def test_acks_fit_client_maximum_packet_size(broker, uid):
    """v5 [MQTT-3.1.2-24] [MQTT-3.1.2-25] [MQTT-3.4.2-2] [MQTT-3.4.2-3] [MQTT-3.5.2-2]
    [MQTT-3.5.2-3] [MQTT-3.6.2-2] [MQTT-3.6.2-3] [MQTT-3.7.2-2] [MQTT-3.7.2-3] [MQTT-3.9.2-1]
    [MQTT-3.9.2-2] [MQTT-3.11.2-1] [MQTT-3.11.2-2]: to a client with Maximum Packet Size 20,
    the server still sends every acknowledgement (refused PUBACK and PUBREC, PUBCOMP and
    PUBREL for unknown identifiers, PUBREL of a delivery, SUBACK, UNSUBACK), each with its
    reason code but without a Reason String or User Property that would make it larger than
    20 bytes."""
    with connected(broker.port, uid, props=SMALL) as c:
        fits(c.connack)
        suback = fits(c.subscribe("ps/1", 2))
        assert suback.codes == [2], suback
        c.send(r.publish("$SYS/ps", b"x", qos=1, packet_id=1))
        puback = fits(c.expect(r.PUBACK))
        assert puback.packet_id == 1 and puback.reason in PUBACK_CODES, puback
        if IS_TERN:
            assert puback.reason == 0x87, puback
        c.send(r.publish("ps/2", b"\xff", qos=1, packet_id=2,
                         props=[(r.PAYLOAD_FORMAT_INDICATOR, 1)]))
        puback = fits(c.expect(r.PUBACK))
        assert puback.packet_id == 2 and puback.reason in PUBACK_CODES, puback
        c.send(r.publish("$SYS/ps", b"x", qos=2, packet_id=3))
        pubrec = fits(c.expect(r.PUBREC))
        assert pubrec.packet_id == 3 and pubrec.reason in PUBREC_CODES, pubrec
        if pubrec.reason < 0x80:
            c.send(r.ack(r.PUBREL, 3))
            fits(c.expect(r.PUBCOMP))
        c.send(r.ack(r.PUBREL, 999))
        pubcomp = fits(c.expect(r.PUBCOMP))
        assert pubcomp.packet_id == 999 and pubcomp.reason in PUBCOMP_CODES, pubcomp
        c.send(r.unsubscribe(4, ["ps/none"]))
        unsuback = fits(c.expect(r.UNSUBACK))
        assert unsuback.packet_id == 4 and len(unsuback.codes) == 1, unsuback
        connect_v5(broker.port, uid + "p").publish("ps/1", b"", qos=2)
        delivery = fits(c.expect(r.PUBLISH))
        c.send(r.ack(r.PUBREC, delivery.packet_id))
        pubrel = fits(c.expect(r.PUBREL))
        assert pubrel.packet_id == delivery.packet_id and pubrel.reason in PUBREL_CODES
        c.send(r.ack(r.PUBCOMP, delivery.packet_id))
        c.send(r.ack(r.PUBREC, 4242))  # nothing was sent with this identifier
        for pkt in ping_barrier(c):
            fits(pkt)
            assert pkt.type == r.PUBREL and pkt.reason in PUBREL_CODES, pkt


def test_disconnect_fits_client_maximum_packet_size(broker, uid):
    """v5 [MQTT-3.14.2-3] [MQTT-3.14.2-4] [MQTT-3.1.2-24]: a DISCONNECT the server sends for a
    protocol error (Topic Alias 0) to a client with Maximum Packet Size 20 leaves out any
    Reason String or User Property that would make it larger, keeps its reason code, and the
    connection is closed."""
    with connected(broker.port, uid, props=SMALL) as c:
        c.send(r.publish("ps/3", b"x", props=[(r.TOPIC_ALIAS, 0)]))
        packets, closed = c.read_until_closed(2.0)
        assert closed, packets
        for pkt in packets:
            fits(pkt)
        disconnects = [p for p in packets if p.type == r.DISCONNECT]
        if IS_TERN:
            assert [p.reason for p in disconnects] == [0x94], packets
        assert all(p.reason in SERVER_DISCONNECT_CODES for p in disconnects), packets


def test_refused_connack_fits_client_maximum_packet_size(broker, uid):
    """v5 [MQTT-3.2.2-19] [MQTT-3.2.2-20] [MQTT-3.1.2-24]: a CONNACK that refuses the
    connection (an Authentication Method the server does not support: 0x8C) to a client whose
    Maximum Packet Size is 20 carries no Reason String or User Property that would make it
    larger than 20 bytes; the refusal itself is still sent, then the connection closes."""
    with r.RawClient(broker.port) as c:
        c.send(r.connect(uid, props=SMALL + [(r.AUTHENTICATION_METHOD, "no-such-method")]))
        packets, closed = c.read_until_closed(2.0)
        assert closed and [p.type for p in packets] == [r.CONNACK], packets
        connack = fits(packets[0])
        assert connack.reason >= 0x80 and connack.reason in CONNACK_CODES, connack
        if IS_TERN:
            assert connack.reason == 0x8C, connack


@pytest.mark.parametrize("reason_string", [True, False], ids=["problem_info_1", "problem_info_0"])
def test_connack_with_small_maximum_still_accepts(broker, uid, reason_string):
    """v5 [MQTT-3.2.2-19] [MQTT-3.2.2-20] [MQTT-3.1.4-5]: an accepted CONNECT from a client with
    Maximum Packet Size 20 gets a CONNACK 0x00 of at most 20 bytes, whatever Request Problem
    Information says."""
    props = SMALL + [(r.REQUEST_PROBLEM_INFORMATION, int(reason_string))]
    with connected(broker.port, uid, props=props) as c:
        assert c.connack.reason == 0
        fits(c.connack)
