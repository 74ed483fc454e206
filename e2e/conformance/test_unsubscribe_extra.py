"""UNSUBSCRIBE beyond the basics: several filters in one packet, deliveries already under way,
ill-formed filters; and SUBACK / UNSUBACK identifiers when requests are pipelined."""

import pytest

import expect
import rawmqtt as r
from clients import connect_v311
from support_extra import (BOTH, UNSUBACK_CODES, check_v5_layout, connected, ping_barrier,
                           publish_and_complete)


@pytest.mark.parametrize("version", BOTH)
def test_unsubscribe_several_filters_one_unsuback(broker, uid, version):
    """v5 [MQTT-3.10.4-6] [MQTT-3.11.3-2] [MQTT-3.10.4-1], v3.1.1 [MQTT-3.10.4-6]
    [MQTT-3.10.4-1]: an UNSUBSCRIBE with three filters (two subscribed, one not) is handled as
    three UNSUBSCRIBEs answered by a single UNSUBACK (v5: one defined reason code per filter,
    0x00 for the removed ones); the two filters stop matching, the third subscription stays."""
    base = f"multi/{uid}"
    with connected(broker.port, uid, version) as c:
        c.send(r.subscribe(1, [(f"{base}/a", 1), (f"{base}/b", 1), (f"{base}/c", 1)],
                           version=version))
        assert c.expect(r.SUBACK).codes == [1, 1, 1]
        c.send(r.unsubscribe(0x4242, [f"{base}/a", f"{base}/none", f"{base}/c"],
                             version=version))
        unsuback = c.expect(r.UNSUBACK)
        assert unsuback.packet_id == 0x4242, unsuback
        if version == 5:
            check_v5_layout(unsuback, 3)
            assert all(code in UNSUBACK_CODES for code in unsuback.codes), unsuback
            assert unsuback.codes[0] == 0x00 and unsuback.codes[2] == 0x00, unsuback
        else:
            assert unsuback.body == r.u16(0x4242), unsuback
        assert ping_barrier(c) == [], "a second UNSUBACK or another packet followed"
        with connected(broker.port, uid + "p", version) as pub:
            for i, leaf in enumerate("acb"):
                publish_and_complete(pub, f"{base}/{leaf}", leaf.encode(), 1, packet_id=i + 1)
        got = c.expect(r.PUBLISH)
        assert got.topic == f"{base}/b", f"an unsubscribed filter still matched: {got!r}"
        c.send(r.ack(r.PUBACK, got.packet_id, version=version))
        assert ping_barrier(c) == [], "an unsubscribed filter still matched"


def test_unsubscribe_completes_started_deliveries_v311(broker, uid):
    """v3.1.1 [MQTT-3.10.4-3]: after UNSUBSCRIBE the server still completes the QoS 1 and QoS 2
    deliveries it had started for those filters: PUBACK is accepted and PUBREC is answered
    with PUBREL."""
    base = f"unin/{uid}"
    with connected(broker.port, uid, 4) as c:
        c.send(r.subscribe(1, [(f"{base}/1", 1), (f"{base}/2", 2)], version=4))
        assert c.expect(r.SUBACK).codes == [1, 2]
        pub = connect_v311(broker.port, uid + "p")
        pub.publish(f"{base}/1", b"one", qos=1)
        pub.publish(f"{base}/2", b"two", qos=2)
        first, second = c.expect(r.PUBLISH), c.expect(r.PUBLISH)
        assert (first.qos, second.qos) == (1, 2), (first, second)
        c.send(r.unsubscribe(2, [f"{base}/1", f"{base}/2"], version=4))
        assert c.expect(r.UNSUBACK).packet_id == 2
        c.send(r.ack(r.PUBACK, first.packet_id, version=4))
        c.send(r.ack(r.PUBREC, second.packet_id, version=4))
        rel = c.expect(r.PUBREL)
        assert rel.packet_id == second.packet_id, rel
        c.send(r.ack(r.PUBCOMP, second.packet_id, version=4))
        assert ping_barrier(c) == []


@pytest.mark.parametrize("version", BOTH)
def test_unsubscribe_filter_bad_utf8_is_malformed(broker, uid, version):
    """v5 [MQTT-3.10.3-1] [MQTT-1.5.4-1], v3.1.1 [MQTT-3.10.3-1] [MQTT-1.5.3-1]: the Topic
    Filters of UNSUBSCRIBE are UTF-8 encoded strings; an ill-formed one (a lone continuation
    byte) is a malformed packet: v5 DISCONNECT 0x81 then close, v3.1.1 a close."""
    with connected(broker.port, uid, version) as c:
        c.subscribe(f"u8/{uid}", 0)
        c.send(r.unsubscribe(3, [f"u8/{uid}".encode() + b"\x80"], version=version))
        expect.refused(c, version, 0x81)


@pytest.mark.parametrize("version", BOTH)
def test_suback_unsuback_carry_request_packet_ids(broker, uid, version):
    """v5 [MQTT-2.2.1-6] [MQTT-2.2.2-1], v3.1.1 [MQTT-2.3.1-7]: with five SUBSCRIBE and
    UNSUBSCRIBE packets sent back to back (identifiers 1, 0xFFFF, 0x8000, 0x0100, 0x7FFF),
    each SUBACK and UNSUBACK carries the identifier of the packet it answers (v5: with a
    Property Length and one code per filter)."""
    base = f"pid/{uid}"
    requests = [(r.SUBACK, 1, [(f"{base}/a", 0)]),
                (r.SUBACK, 0xFFFF, [(f"{base}/b", 1), (f"{base}/c", 2)]),
                (r.UNSUBACK, 0x8000, [f"{base}/a"]),
                (r.SUBACK, 0x0100, [(f"{base}/d", 0)]),
                (r.UNSUBACK, 0x7FFF, [f"{base}/b", f"{base}/x", f"{base}/c"])]
    with connected(broker.port, uid, version) as c:
        data = b""
        for kind, pid, filters in requests:
            data += (r.subscribe(pid, filters, version=version) if kind == r.SUBACK
                     else r.unsubscribe(pid, filters, version=version))
        c.send(data)
        answers = {}
        for _ in requests:
            pkt = c.recv()
            assert pkt.type in (r.SUBACK, r.UNSUBACK) and pkt.packet_id not in answers, pkt
            answers[pkt.packet_id] = pkt
        for kind, pid, filters in requests:
            assert pid in answers and answers[pid].type == kind, (pid, answers)
            if version == 5:
                check_v5_layout(answers[pid], len(filters))
            elif kind == r.UNSUBACK:
                assert answers[pid].body == r.u16(pid), answers[pid]
        assert answers[0xFFFF].codes == [1, 2], answers[0xFFFF]
