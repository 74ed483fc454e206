"""QoS flows from raw clients, with the server as sender and as receiver: packet identifiers,
the DUP flag, the send quota, acknowledgements with error codes, reason codes of the acks,
and message expiry against a flow that has already started."""

import time

import pytest

import rawmqtt as r
from clients import connect_v5, connect_v311, sync
from expect import IS_TERN, xfail_on_mosquitto
from support_extra import (ACK_CODES, BOTH, PUBACK_CODES, PUBCOMP_CODES, PUBREC_CODES,
                           PUBREL_CODES, UNSUBACK_CODES, check_v5_layout, connected,
                           ping_barrier, publish_and_complete, publish_body, read_publishes)


def _finish(c: r.RawClient, pub: r.Packet) -> None:
    """Acknowledge a server PUBLISH completely (PUBACK, or PUBREC/PUBREL/PUBCOMP)."""
    if pub.qos == 1:
        c.send(r.ack(r.PUBACK, pub.packet_id, version=c.version))
    elif pub.qos == 2:
        c.send(r.ack(r.PUBREC, pub.packet_id, version=c.version))
        assert c.expect(r.PUBREL).packet_id == pub.packet_id
        c.send(r.ack(r.PUBCOMP, pub.packet_id, version=c.version))


# -- the server as sender: identifiers and DUP -----------------------------------------------

@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize("version", BOTH)
def test_server_packet_ids_unused_nonzero_first_dup_0(broker, uid, version, qos):
    """v5 [MQTT-2.2.1-4] [MQTT-4.3.2-1] [MQTT-4.3.2-2] [MQTT-4.3.3-1] [MQTT-4.3.3-2],
    v3.1.1 [MQTT-2.3.1-4] [MQTT-4.3.2-1] [MQTT-4.3.3-1]: with ten QoS 1/2 messages to one
    client unacknowledged, each PUBLISH the server sends has a non-zero Packet Identifier of
    its own and DUP 0; after half of them are acknowledged (QoS 2: PUBREC'd, so still in
    use until PUBCOMP), five new messages get identifiers not in use at that moment."""
    topic = f"ids/{uid}"
    with connected(broker.port, uid + "s", version) as sub, \
            connected(broker.port, uid + "p", version) as pub:
        sub.subscribe(topic, qos)
        for i in range(10):
            publish_and_complete(pub, topic, f"m{i}".encode(), qos, packet_id=i + 1)
        first = read_publishes(sub, 10)
        assert [p.payload for p in first] == [f"m{i}".encode() for i in range(10)]
        ids = [p.packet_id for p in first]
        assert all(ids) and len(set(ids)) == 10, f"identifiers not unique or zero: {ids}"
        assert all(p.qos == qos and not p.dup for p in first), first
        for p in first[:5]:
            if qos == 1:
                sub.send(r.ack(r.PUBACK, p.packet_id, version=version))
            else:
                sub.send(r.ack(r.PUBREC, p.packet_id, version=version))
                rel = sub.expect(r.PUBREL)
                assert rel.packet_id == p.packet_id and rel.flags == 0x02, rel
        in_use = set(ids[5:]) if qos == 1 else set(ids)
        for i in range(10, 15):
            publish_and_complete(pub, topic, f"m{i}".encode(), qos, packet_id=i + 1)
        second = read_publishes(sub, 5)
        new_ids = [p.packet_id for p in second]
        assert all(new_ids) and len(set(new_ids)) == 5, new_ids
        assert not set(new_ids) & in_use, f"identifier reused while in use: {new_ids} / {in_use}"
        assert all(p.qos == qos and not p.dup for p in second), second
        for p in first[:5]:
            if qos == 2:
                sub.send(r.ack(r.PUBCOMP, p.packet_id, version=version))
        for p in first[5:] + second:
            _finish(sub, p)
        assert ping_barrier(sub) == [], "server sent more than the fifteen messages"


@pytest.mark.parametrize("version", BOTH)
def test_qos0_delivery_has_no_packet_id_and_dup_0(broker, uid, version):
    """v5 [MQTT-2.2.1-2] [MQTT-4.3.1-1] [MQTT-2.2.2-1], v3.1.1 [MQTT-2.3.1-5] [MQTT-4.3.1-1]:
    a message delivered at QoS 0 (published at QoS 1 to a QoS 0 subscription) goes out as a
    PUBLISH with QoS 0 and DUP 0 whose variable header holds the Topic Name and no Packet
    Identifier (v5: then a Property Length of 0, as there are no properties)."""
    topic = f"q0/{uid}"
    with connected(broker.port, uid + "s", version) as sub, \
            connected(broker.port, uid + "p", version) as pub:
        sub.subscribe(topic, 0)
        publish_and_complete(pub, topic, b"zero", 1, packet_id=3)
        got = sub.expect(r.PUBLISH)
        assert got.flags == 0, f"QoS 0 PUBLISH with flags {got.flags:#x}"
        assert got.body == publish_body(topic, b"zero", version), got.body


@pytest.mark.parametrize("version", BOTH)
def test_forwarded_dup_not_copied_from_publisher(broker, uid, version):
    """v5 [MQTT-3.3.1-3], v3.1.1 [MQTT-3.3.1-3]: the DUP flag of the PUBLISH a subscriber gets
    says whether that packet is a re-delivery; a publisher's DUP 1 (on a first delivery of
    QoS 1 and QoS 2 messages) does not make the forwarded first delivery DUP 1."""
    topic = f"dup/{uid}"
    with connected(broker.port, uid + "s", version) as sub, \
            connected(broker.port, uid + "p", version) as pub:
        sub.subscribe(topic, 2)
        publish_and_complete(pub, topic, b"one", 1, packet_id=7, dup=True)
        publish_and_complete(pub, topic, b"two", 2, packet_id=8, dup=True)
        got = read_publishes(sub, 2)
        assert [(p.payload, p.qos, p.dup) for p in got] == [(b"one", 1, False),
                                                            (b"two", 2, False)], got
        for p in got:
            _finish(sub, p)


@xfail_on_mosquitto("[MQTT-3.3.4-9]", "after one PUBACK it sends two more messages, so three "
                    "are unacknowledged against a Receive Maximum of 2")
def test_initial_send_quota_nonzero_and_within_receive_maximum(broker, uid):
    """v5 [MQTT-4.9.0-1] [MQTT-3.3.4-9]: with the client's Receive Maximum 2 the server's
    send quota starts non-zero and no larger than 2: of five QoS 1 messages it sends two,
    and one more for each PUBACK."""
    topic = f"quota/{uid}"
    with connected(broker.port, uid + "s", props=[(r.RECEIVE_MAXIMUM, 2)]) as sub, \
            connected(broker.port, uid + "p") as pub:
        sub.subscribe(topic, 1)
        for i in range(5):
            publish_and_complete(pub, topic, str(i).encode(), 1, packet_id=i + 1)
        got = read_publishes(sub, 2)
        assert sub.quiet_for(0.3) == [], "more than Receive Maximum in flight"
        sub.send(r.ack(r.PUBACK, got[0].packet_id))
        got += read_publishes(sub, 1)
        assert sub.quiet_for(0.2) == [], "more than Receive Maximum in flight"
        for p in got[1:]:
            sub.send(r.ack(r.PUBACK, p.packet_id))
        got += read_publishes(sub, 2)
        assert [p.payload for p in got] == [b"0", b"1", b"2", b"3", b"4"]
        for p in got[3:]:
            sub.send(r.ack(r.PUBACK, p.packet_id))


# -- expiry against flows that have started --------------------------------------------------

@pytest.mark.slow_timer
@xfail_on_mosquitto("[MQTT-4.3.3-7]", "it drops an unacknowledged QoS 2 PUBLISH whose expiry "
                    "has passed instead of re-sending it when the session resumes (whole-second "
                    "clock, so only sometimes)", strict=False)
def test_qos2_message_expiry_does_not_stop_started_flows(broker, uid):
    """v5 [MQTT-4.3.3-7] [MQTT-4.3.3-13] [MQTT-3.3.2-5]: once the server has sent a QoS 2
    PUBLISH (Message Expiry Interval 1 s), expiry no longer applies to it: 1.5 s later a
    PUBREC still gets PUBREL, and a subscriber that dropped the connection gets the PUBLISH
    again (DUP 1, same id) when it resumes the session. As receiver, the server finishes an
    inbound QoS 2 exchange whose message has expired: a PUBREL sent 1.5 s after the PUBLISH
    still gets PUBCOMP 0x00."""
    topic = f"exp2/{uid}"
    keep = [(r.SESSION_EXPIRY_INTERVAL, 60)]
    with connected(broker.port, uid + "a") as a, \
            connected(broker.port, uid + "b", props=keep) as b, \
            connected(broker.port, uid + "p") as pub:
        a.subscribe(topic, 2)
        b.subscribe(topic, 2)
        publish_and_complete(pub, topic, b"x", 2, packet_id=1,
                             props=[(r.MESSAGE_EXPIRY_INTERVAL, 1)])
        sent_a = a.expect(r.PUBLISH)
        sent_b = b.expect(r.PUBLISH)
        b.close()  # dropped without any acknowledgement
        pub.send(r.publish(f"{topic}/nobody", b"y", qos=2, packet_id=2,
                           props=[(r.MESSAGE_EXPIRY_INTERVAL, 1)]))
        rec = pub.expect(r.PUBREC)
        assert rec.packet_id == 2 and rec.reason < 0x80, rec
        time.sleep(1.5)  # the Message Expiry Interval runs out
        a.send(r.ack(r.PUBREC, sent_a.packet_id))
        rel = a.expect(r.PUBREL)
        assert rel.packet_id == sent_a.packet_id and rel.reason == 0, rel
        a.send(r.ack(r.PUBCOMP, sent_a.packet_id))
        pub.send(r.ack(r.PUBREL, 2))
        comp = pub.expect(r.PUBCOMP)
        assert comp.packet_id == 2 and comp.reason == 0x00, comp
    with connected(broker.port, uid + "b", clean=False, props=[(r.SESSION_EXPIRY_INTERVAL, 0)]) as b:
        assert b.connack.session_present
        again = b.expect(r.PUBLISH)
        assert (again.payload, again.packet_id, again.dup) == (b"x", sent_b.packet_id, True), again
        _finish(b, again)


# -- the server as receiver: error PUBREC, v3.1.1 flows ----------------------------------------

def test_pubrec_error_then_same_id_is_new_message(broker, uid):
    """v5 [MQTT-4.3.3-9] [MQTT-3.5.2-1] [MQTT-4.4.0-2]: after the server answered a QoS 2
    PUBLISH with a PUBREC of 0x80 or more (Tern: 0x87 for a publish to $SYS), the exchange is
    over: a PUBLISH with the same Packet Identifier is a new message, delivered normally."""
    topic = f"recerr/{uid}"
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=2)
    with connected(broker.port, uid + "p") as pub:
        pub.send(r.publish(f"$SYS/{uid}", b"no", qos=2, packet_id=5))
        rec = pub.expect(r.PUBREC)
        assert rec.packet_id == 5 and rec.reason in PUBREC_CODES, rec
        if rec.reason < 0x80:
            assert not IS_TERN, f"Tern refuses client publishes to $SYS: {rec}"
            pytest.skip("this broker accepts a client's PUBLISH to $SYS, so no error PUBREC")
        pub.send(r.publish(topic, b"fresh", qos=2, packet_id=5))
        rec = pub.expect(r.PUBREC)
        assert rec.packet_id == 5 and rec.reason < 0x80, rec
        pub.send(r.ack(r.PUBREL, 5))
        comp = pub.expect(r.PUBCOMP)
        assert comp.packet_id == 5 and comp.reason == 0x00, comp
    assert sub.wait_message(topic).payload == b"fresh"


def test_qos1_receiver_same_id_after_puback_is_new_v311(broker, uid):
    """v3.1.1 [MQTT-4.3.2-2] [MQTT-2.3.1-6]: the server answers a QoS 1 PUBLISH with a PUBACK
    carrying its Packet Identifier, and treats a later PUBLISH with that identifier as a new
    message (both are delivered)."""
    topic = f"r1/{uid}"
    sub = connect_v311(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    with connected(broker.port, uid + "p", 4) as pub:
        for payload in (b"a", b"b"):
            pub.send(r.publish(topic, payload, qos=1, packet_id=9, version=4))
            ack = pub.expect(r.PUBACK)
            assert ack.packet_id == 9 and ack.body == r.u16(9), ack
    assert [m.payload for m in sub.wait_messages(2, topic)] == [b"a", b"b"]


def test_qos2_receiver_flow_v311(broker, uid):
    """v3.1.1 [MQTT-4.3.3-2] [MQTT-2.3.1-6]: the server answers a QoS 2 PUBLISH with PUBREC,
    does not deliver a re-sent copy (DUP 1, same id) before PUBREL, answers PUBREL with
    PUBCOMP, and then treats the identifier as new: the next PUBLISH with it is another
    message."""
    topic = f"r2/{uid}"
    sub = connect_v311(broker.port, uid + "s")
    sub.subscribe(topic, qos=2)
    marker_pub = connect_v311(broker.port, uid + "m")
    with connected(broker.port, uid + "p", 4) as pub:
        pub.send(r.publish(topic, b"first", qos=2, packet_id=5, version=4))
        assert pub.expect(r.PUBREC).packet_id == 5
        pub.send(r.publish(topic, b"first", qos=2, packet_id=5, dup=True, version=4))
        assert pub.expect(r.PUBREC).packet_id == 5
        pub.send(r.ack(r.PUBREL, 5, version=4))
        comp = pub.expect(r.PUBCOMP)
        assert comp.packet_id == 5 and comp.body == r.u16(5), comp
        sync(marker_pub, sub, topic, qos=2)
        pub.send(r.publish(topic, b"second", qos=2, packet_id=5, version=4))
        assert pub.expect(r.PUBREC).packet_id == 5
        pub.send(r.ack(r.PUBREL, 5, version=4))
        assert pub.expect(r.PUBCOMP).packet_id == 5
        sync(marker_pub, sub, topic, qos=2)
    got = [m.payload for m in sub.received(topic) if not m.payload.startswith(b"sync-")]
    assert got == [b"first", b"second"], got


def test_qos2_sender_flow_v311(broker, uid):
    """v3.1.1 [MQTT-4.3.3-1] [MQTT-2.3.1-4]: as sender the server uses a non-zero identifier
    with DUP 0, answers PUBREC with PUBREL (same id), and once it has sent PUBREL it never
    sends the PUBLISH again: after a reconnect it re-sends the PUBREL only, and PUBCOMP ends
    the flow."""
    topic = f"s2/{uid}"
    with connected(broker.port, uid, 4, clean=False) as sub:
        sub.subscribe(topic, 2)
        connect_v311(broker.port, uid + "p").publish(topic, b"x", qos=2)
        pub = sub.expect(r.PUBLISH)
        assert pub.qos == 2 and pub.packet_id and not pub.dup, pub
        sub.send(r.ack(r.PUBREC, pub.packet_id, version=4))
        rel = sub.expect(r.PUBREL)
        assert rel.packet_id == pub.packet_id and rel.flags == 0x02, rel
    with connected(broker.port, uid, 4, clean=False) as sub:
        assert sub.connack.session_present
        again = sub.expect(r.PUBREL)
        assert again.packet_id == pub.packet_id, again
        sub.send(r.ack(r.PUBCOMP, pub.packet_id, version=4))
        assert ping_barrier(sub) == [], "PUBLISH re-sent after PUBREL"
    connected(broker.port, uid, 4, clean=True).close()


# -- reason codes of the acknowledgements ------------------------------------------------------

def test_ack_reason_codes_are_defined(broker, uid):
    """v5 [MQTT-3.4.2-1] [MQTT-3.5.2-1] [MQTT-3.6.2-1] [MQTT-3.7.2-1] [MQTT-3.11.3-2]
    [MQTT-2.2.2-1]: every PUBACK, PUBREC, PUBREL, PUBCOMP and UNSUBACK the server sends, for
    accepted, unmatched, refused ($SYS) and invalid (Payload Format Indicator 1 with a
    non-UTF-8 payload) publishes, unknown identifiers and unsubscribes, carries a reason
    code from its packet's table, and a Property Length whenever its Remaining Length is 4
    or more."""
    topic = f"codes/{uid}"
    targets = [(topic, b"ok", ()), (f"{topic}/nobody", b"ok", ()), (f"$SYS/{uid}", b"no", ()),
               (topic, b"\xff\xfe", [(r.PAYLOAD_FORMAT_INDICATOR, 1)])]
    seen = []

    def check(pkt: r.Packet, codes) -> r.Packet:
        assert pkt.reason in codes, f"undefined reason code in {pkt!r}"
        check_v5_layout(pkt)
        seen.append(pkt)
        return pkt

    with connected(broker.port, uid + "s") as sub, connected(broker.port, uid + "p") as pub:
        sub.subscribe(topic, 2)
        pid = 10
        for qos in (1, 2):
            for target, payload, props in targets:
                pid += 1
                pub.send(r.publish(target, payload, qos=qos, packet_id=pid, props=props))
                if qos == 1:
                    check(pub.expect(r.PUBACK), PUBACK_CODES)
                    continue
                rec = check(pub.expect(r.PUBREC), PUBREC_CODES)
                if rec.reason < 0x80:
                    pub.send(r.ack(r.PUBREL, pid))
                    check(pub.expect(r.PUBCOMP), PUBCOMP_CODES)
        pub.send(r.ack(r.PUBREL, 999))  # an identifier the server does not know
        check(pub.expect(r.PUBCOMP), PUBCOMP_CODES)
        for pkt in ping_barrier(sub) + sub.quiet_for(0.2):
            assert pkt.type == r.PUBLISH, pkt
            if pkt.qos == 1:
                sub.send(r.ack(r.PUBACK, pkt.packet_id))
            elif pkt.qos == 2:
                sub.send(r.ack(r.PUBREC, pkt.packet_id))
                rel = check(sub.expect(r.PUBREL), PUBREL_CODES)
                sub.send(r.ack(r.PUBCOMP, rel.packet_id))
        sub.send(r.ack(r.PUBREC, 4242))  # a PUBREC for nothing the server sent
        for pkt in ping_barrier(sub):
            check(pkt, ACK_CODES.get(pkt.type, ()))
        sub.send(r.unsubscribe(3, [topic, f"{topic}/never"]))
        unsuback = check_unsuback(sub.expect(r.UNSUBACK), 2)
        assert unsuback.codes[0] == 0x00, unsuback
    assert {p.type for p in seen} >= {r.PUBACK, r.PUBREC, r.PUBREL, r.PUBCOMP}, seen


def check_unsuback(pkt: r.Packet, filters: int) -> r.Packet:
    check_v5_layout(pkt, filters)
    assert len(pkt.codes) == filters and all(c in UNSUBACK_CODES for c in pkt.codes), pkt
    return pkt
