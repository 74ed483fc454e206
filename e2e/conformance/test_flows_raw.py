"""QoS flows seen from a raw subscriber: acknowledgements, flow control, aliases towards the
client, and what the server must (not) resend."""

import time

import pytest

import expect
import rawmqtt as r
from clients import app_messages, connect_v5, sync
from expect import xfail_on_mosquitto


def connected(port, cid, version=5, **kw) -> r.RawClient:
    c = r.RawClient(port, version=version)
    c.connack = c.handshake(cid, **kw)
    return c


def test_qos1_same_id_after_puback_is_new_message(broker, uid):
    """v5 [MQTT-4.3.2-5]: after sending PUBACK, the server treats a PUBLISH with the same
    Packet Identifier as a new message, whatever its DUP flag."""
    topic = f"new1/{uid}"
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    with connected(broker.port, uid) as c:
        for dup, payload in ((False, b"a"), (True, b"b"), (False, b"c")):
            c.send(r.publish(topic, payload, qos=1, packet_id=9, dup=dup))
            assert c.expect(r.PUBACK).packet_id == 9
    assert [m.payload for m in sub.wait_messages(3, topic)] == [b"a", b"b", b"c"]


def test_server_qos2_flow_to_subscriber(broker, uid):
    """v5 [MQTT-4.3.3-1] [MQTT-4.3.3-2] [MQTT-4.3.3-3] [MQTT-4.3.3-4] [MQTT-2.2.1-4]: the server
    sends a QoS 2 PUBLISH with a non-zero id and DUP 0, answers PUBREC with PUBREL (same id,
    flags 0010), and the flow ends with our PUBCOMP."""
    topic = f"fl2/{uid}"
    with connected(broker.port, uid) as c:
        c.subscribe(topic, 2)
        connect_v5(broker.port, uid + "p").publish(topic, b"x", qos=2)
        pub = c.expect(r.PUBLISH)
        assert pub.qos == 2 and pub.packet_id and not pub.dup
        c.send(r.ack(r.PUBREC, pub.packet_id))
        rel = c.expect(r.PUBREL)
        assert rel.packet_id == pub.packet_id and rel.flags == 0x02 and rel.reason == 0
        c.send(r.ack(r.PUBCOMP, pub.packet_id))
        expect.still_open(c)


def test_pubrec_error_ends_qos2_flow(broker, uid):
    """v5 [MQTT-4.3.3-4] [MQTT-4.4.0-2]: a PUBREC with a Reason Code of 0x80 or more ends the
    flow: the server sends no PUBREL and does not re-send the PUBLISH."""
    topic = f"recerr/{uid}"
    with connected(broker.port, uid) as c:
        c.subscribe(topic, 2)
        connect_v5(broker.port, uid + "p").publish(topic, b"x", qos=2)
        pub = c.expect(r.PUBLISH)
        c.send(r.ack(r.PUBREC, pub.packet_id, reason=0x80))
        c.send(r.pingreq())
        assert [p.type for p in c.quiet_for(0.5)] == [r.PINGRESP]


def test_puback_error_not_resent_on_reconnect(broker, uid):
    """v5 [MQTT-4.4.0-2]: a PUBLISH acknowledged with PUBACK 0x80 counts as acknowledged and
    is not sent again when the session resumes."""
    topic = f"ackerr/{uid}"
    props = [(r.SESSION_EXPIRY_INTERVAL, 60)]
    with connected(broker.port, uid, props=props) as c:
        c.subscribe(topic, 1)
        connect_v5(broker.port, uid + "p").publish(topic, b"x", qos=1)
        pub = c.expect(r.PUBLISH)
        c.send(r.ack(r.PUBACK, pub.packet_id, reason=0x80))
        expect.still_open(c)
    with connected(broker.port, uid, clean=False, props=props) as c:
        assert c.connack.session_present
        c.send(r.pingreq())
        assert [p.type for p in c.quiet_for(0.5)] == [r.PINGRESP], "PUBLISH re-sent"


def test_client_receive_maximum_counts_qos2_until_pubcomp(broker, uid):
    """v5 [MQTT-4.9.0-2] [MQTT-3.3.4-9]: a QoS 2 PUBLISH uses the client's send quota
    (Receive Maximum 1) until PUBCOMP — not just until PUBREC."""
    topic = f"q2q/{uid}"
    with connected(broker.port, uid, props=[(r.RECEIVE_MAXIMUM, 1)]) as c:
        c.subscribe(topic, 2)
        pub = connect_v5(broker.port, uid + "p")
        pub.publish(topic, b"1", qos=2)
        pub.publish(topic, b"2", qos=2)
        first = c.expect(r.PUBLISH)
        c.send(r.ack(r.PUBREC, first.packet_id))
        assert c.expect(r.PUBREL).packet_id == first.packet_id
        assert c.quiet_for(0.4) == [], "second PUBLISH sent before PUBCOMP"
        c.send(r.ack(r.PUBCOMP, first.packet_id))
        second = c.expect(r.PUBLISH)
        assert (first.payload, second.payload) == (b"1", b"2")


def test_unsubscribe_completes_inflight_delivery(broker, uid):
    """v5 [MQTT-3.10.4-3]: after UNSUBSCRIBE the server completes the
    QoS 2 delivery it had started (PUBREC is still answered with PUBREL)."""
    topic = f"unin/{uid}"
    with connected(broker.port, uid) as c:
        c.subscribe(topic, 2)
        connect_v5(broker.port, uid + "p").publish(topic, b"x", qos=2)
        pub = c.expect(r.PUBLISH)
        c.send(r.unsubscribe(5, [topic]))
        assert c.expect(r.UNSUBACK).packet_id == 5
        c.send(r.ack(r.PUBREC, pub.packet_id))
        assert c.expect(r.PUBREL).packet_id == pub.packet_id
        c.send(r.ack(r.PUBCOMP, pub.packet_id))
        expect.still_open(c)


def test_server_topic_aliases_within_client_maximum(broker, uid):
    """v5 [MQTT-3.1.2-26] [MQTT-3.3.2-11] [MQTT-3.3.2-7]: a server that sends Topic Aliases
    uses values from 1 to the client's Topic Alias Maximum (2), and a PUBLISH with an empty
    topic name only uses an alias it defined earlier on this connection."""
    base = f"sal/{uid}"
    with connected(broker.port, uid, props=[(r.TOPIC_ALIAS_MAXIMUM, 2)]) as c:
        c.subscribe(f"{base}/#", 0)
        pub = connect_v5(broker.port, uid + "p")
        sent = [f"{base}/{name}" for name in "abcabcaab"]
        for topic in sent:
            pub.publish(topic, topic.encode(), qos=0)
        aliases, got = {}, []
        for _ in sent:
            p = c.expect(r.PUBLISH)
            alias = p.prop(r.TOPIC_ALIAS)
            if alias is not None:
                assert 1 <= alias <= 2, f"alias {alias} above client maximum 2"
                if p.topic:
                    aliases[alias] = p.topic
                else:
                    assert alias in aliases, f"alias {alias} used before it was defined"
            else:
                assert p.topic, "empty topic name without alias"
            got.append(p.topic or aliases[alias])
        assert got == sent


def test_server_sends_no_topic_alias_when_client_allows_none(broker, uid):
    """v5 [MQTT-3.1.2-27]: without a Topic Alias Maximum from the client (or with 0), the
    server sends no Topic Alias."""
    base = f"nal/{uid}"
    with connected(broker.port, uid, props=[(r.TOPIC_ALIAS_MAXIMUM, 0)]) as c:
        c.subscribe(f"{base}/#", 0)
        pub = connect_v5(broker.port, uid + "p")
        for _ in range(5):
            pub.publish(f"{base}/same", b"x", qos=0)
        for _ in range(5):
            p = c.expect(r.PUBLISH)
            assert p.topic == f"{base}/same" and p.prop(r.TOPIC_ALIAS) is None, p


def test_fan_out_order_and_completeness(broker, uid):
    """v5 [MQTT-4.6.0-5] [MQTT-4.5.0-1]: 8 subscribers each receive all 200 pipelined QoS 1
    messages of one publisher, in order."""
    topic = f"fan/{uid}"
    subs = [connect_v5(broker.port, f"{uid}s{i}") for i in range(8)]
    for s in subs:
        s.subscribe(topic, qos=1)
    pub = connect_v5(broker.port, uid + "p")
    infos = [pub.publish(topic, str(i).encode(), qos=1, wait=False) for i in range(200)]
    for info in infos:
        info.wait_for_publish(15)
    for s in subs:
        assert [int(m.payload) for m in s.wait_messages(200, topic, timeout=15)] == list(range(200))


def test_fan_in_keeps_each_publishers_order(broker, uid):
    """v5 [MQTT-4.6.0-5] [MQTT-4.6.0-6]: with 6 publishers on one topic, the
    subscriber sees each publisher's messages in the order that publisher sent them."""
    topic = f"fanin/{uid}"
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    pubs = [connect_v5(broker.port, f"{uid}p{i}") for i in range(6)]
    infos = [p.publish(topic, f"{n}:{i}".encode(), qos=1, wait=False)
             for i in range(50) for n, p in enumerate(pubs)]
    for info in infos:
        info.wait_for_publish(15)
    msgs = sub.wait_messages(300, topic, timeout=15)
    for n in range(6):
        seq = [int(m.text.split(":")[1]) for m in msgs if m.text.startswith(f"{n}:")]
        assert seq == list(range(50)), f"publisher {n} reordered: {seq}"


def test_large_message_near_default_limit(broker, uid):
    """v5 §2.1.4 / §3.3.3: a 900 kB payload (under a 1 MiB maximum packet size) is carried
    intact."""
    topic = f"huge/{uid}"
    payload = bytes(i % 251 for i in range(900_000))
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    connect_v5(broker.port, uid + "p").publish(topic, payload, qos=1, timeout=15)
    assert sub.wait_message(topic, timeout=15).payload == payload


def test_shared_subscription_puback_error_not_redelivered(broker, uid):
    """v5 [MQTT-4.8.2-6]: a member that answers PUBACK 0x80 makes the server discard the
    message; it is not sent to another member of the group."""
    topic = f"shrej/{uid}"
    with connected(broker.port, uid + "r") as rejecting:
        rejecting.subscribe(f"$share/g/{topic}", 1)
        other = connect_v5(broker.port, uid + "o")
        other.subscribe(f"$share/g/{topic}", qos=1)
        other.subscribe(f"{topic}/sync", qos=1)
        plain = connect_v5(broker.port, uid + "n")
        plain.subscribe(topic, qos=1)
        pub = connect_v5(broker.port, uid + "p")
        rejected = None
        for i in range(20):
            pub.publish(topic, f"m{i}".encode(), qos=1)
            plain.wait_messages(i + 1, topic)
            if rejected is None:
                try:
                    p = rejecting.recv(0.2)
                except r.NoPacket:
                    continue
                rejected = p.payload
                rejecting.send(r.ack(r.PUBACK, p.packet_id, reason=0x80))
        assert rejected is not None, "the rejecting member never got a message"
        sync(pub, other, f"{topic}/sync", qos=1)
        assert rejected not in [m.payload for m in app_messages(other, topic)], (
            f"{rejected!r} was given to another member after PUBACK 0x80")


def test_pipelined_packets_in_one_write(broker, uid):
    """v5 [MQTT-3.1.0-1] [MQTT-4.2-1]: CONNECT, SUBSCRIBE, PUBLISH and PINGREQ sent in a single
    write are all processed, in order (the server reads a byte stream, not datagrams)."""
    topic = f"pipe/{uid}"
    with r.RawClient(broker.port) as c:
        c.send(r.connect(uid) + r.subscribe(1, [(topic, 1)]) +
               r.publish(topic, b"self", qos=1, packet_id=2) + r.pingreq())
        assert c.expect(r.CONNACK).reason == 0
        assert c.expect(r.SUBACK).codes == [1]
        seen = {c.recv().type for _ in range(3)}
        assert seen == {r.PUBACK, r.PUBLISH, r.PINGRESP}, seen


def test_packets_split_byte_by_byte(broker, uid):
    """v5 [MQTT-4.2-1]: packets that arrive one byte at a time (here CONNECT and a QoS 1
    PUBLISH with properties) are reassembled and processed normally."""
    topic = f"drip/{uid}"
    sub = connect_v5(broker.port, uid + "s")
    sub.subscribe(topic, qos=1)
    with r.RawClient(broker.port) as c:
        data = r.connect(uid, props=[(r.SESSION_EXPIRY_INTERVAL, 0)]) + r.publish(
            topic, b"drip" * 50, qos=1, packet_id=3, props=[(r.USER_PROPERTY, ("k", "v"))])
        for i in range(len(data)):
            c.send(data[i:i + 1])
            if i % 16 == 0:
                time.sleep(0.002)
        assert c.expect(r.CONNACK).reason == 0
        assert c.expect(r.PUBACK).packet_id == 3
    msg = sub.wait_message(topic)
    assert msg.payload == b"drip" * 50 and msg.props.get("UserProperty") == [("k", "v")]


def test_topic_of_maximum_length_delivered(broker, uid):
    """v5 [MQTT-4.7.3-3] [MQTT-4.7.3-1]: Topic Names may be up to 65,535 bytes; such a topic
    is routed like any other."""
    prefix = f"long/{uid}/"
    topic = prefix + "x" * (65535 - len(prefix))
    assert len(topic.encode()) == 65535
    with connected(broker.port, uid + "s") as sub, connected(broker.port, uid + "p") as pub:
        sub.subscribe(prefix + "#", 1)
        pub.send(r.publish(topic, b"far", qos=1, packet_id=1))
        assert pub.expect(r.PUBACK).reason == 0
        got = sub.expect(r.PUBLISH)
        assert got.topic == topic and got.payload == b"far"


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_takeover_moves_inflight_message(broker, uid, version):
    """v5 [MQTT-4.4.0-1] [MQTT-3.1.4-3], v3.1.1 [MQTT-4.4.0-1] [MQTT-3.1.4-2]: a QoS 1 message
    in flight to a connection that is taken over (Clean Start/Session 0) is re-sent on the
    new connection with the same Packet Identifier and DUP 1."""
    topic = f"tkin/{uid}"
    props = [(r.SESSION_EXPIRY_INTERVAL, 60)] if version == 5 else None
    old = r.RawClient(broker.port, version=version)
    try:
        old.handshake(uid, clean=version == 5, props=props)
        old.subscribe(topic, 1)
        connect_v5(broker.port, uid + "p").publish(topic, b"inflight", qos=1)
        first = old.expect(r.PUBLISH)
        with r.RawClient(broker.port, version=version) as new:
            assert new.handshake(uid, clean=False, props=props).session_present
            again = new.expect(r.PUBLISH)
            assert (again.packet_id, again.payload, again.dup) == (first.packet_id, b"inflight",
                                                                   True)
            new.send(r.ack(r.PUBACK, again.packet_id, version=version))
            expect.still_open(new)
    finally:
        old.close()


def test_unsubscribe_persists_in_session(broker, uid):
    """v5 [MQTT-3.10.4-2] [MQTT-3.1.2-5]: a subscription removed before disconnecting stays
    removed when the session resumes; the others resume."""
    base = f"unp/{uid}"
    props = [(r.SESSION_EXPIRY_INTERVAL, 60)]
    with connected(broker.port, uid, props=props) as c:
        c.subscribe(f"{base}/gone", 1, packet_id=1)
        c.subscribe(f"{base}/kept", 1, packet_id=2)
        c.send(r.unsubscribe(3, [f"{base}/gone"]))
        c.expect(r.UNSUBACK)
        c.send(r.disconnect())
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(f"{base}/gone", b"g", qos=1)
    pub.publish(f"{base}/kept", b"k", qos=1)
    with connected(broker.port, uid, clean=False, props=props) as c:
        assert c.connack.session_present
        got = c.expect(r.PUBLISH)
        assert (got.topic, got.payload) == (f"{base}/kept", b"k"), got
        c.send(r.ack(r.PUBACK, got.packet_id))
        assert c.quiet_for(0.3) == []


@pytest.mark.parametrize("props,case", [
    ([(r.SUBSCRIPTION_IDENTIFIER, 0)], "id-0"),
    ([(r.SUBSCRIPTION_IDENTIFIER, 1), (r.SUBSCRIPTION_IDENTIFIER, 2)], "two-ids"),
])
def test_subscription_identifier_invalid_is_protocol_error(broker, uid, props, case):
    """v5 §3.8.2.1.2: a Subscription Identifier of 0, or more than one in a SUBSCRIBE, is a
    Protocol Error (DISCONNECT 0x82; 0x81 also accepted)."""
    with connected(broker.port, uid) as c:
        c.send(r.subscribe(1, [(f"sid0/{uid}", 0)], props=props))
        expect.disconnected(c, 0x82, 0x81)


def test_retained_over_client_maximum_packet_size_not_sent(broker, uid):
    """v5 [MQTT-3.1.2-24] [MQTT-3.1.2-25]: a retained message larger than the subscriber's
    Maximum Packet Size is not sent on SUBSCRIBE; the connection stays usable."""
    base = f"rmax/{uid}"
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(f"{base}/big", b"B" * 500, qos=1, retain=True)
    pub.publish(f"{base}/small", b"s", qos=1, retain=True)
    with connected(broker.port, uid, props=[(r.MAXIMUM_PACKET_SIZE, 200)]) as c:
        c.send(r.subscribe(1, [(f"{base}/#", 0)]))
        c.expect(r.SUBACK)
        got = c.expect(r.PUBLISH)
        assert got.topic == f"{base}/small", got
        assert c.quiet_for(0.3) == []


@xfail_on_mosquitto("§3.3.1.3", "it sends the retained message when a shared subscription is "
                    "made; the specification sends retained messages for new non-shared ones")
def test_retained_not_sent_to_shared_subscription(broker, uid):
    """v5 §3.3.1.3 ("when a new Non-shared Subscription is made, the last retained message …
    is sent"): subscribing to "$share/g/<topic>" does not deliver the retained message;
    live messages do arrive."""
    topic = f"rshare/{uid}"
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(topic, b"retained", qos=1, retain=True)
    with connected(broker.port, uid) as c:
        c.send(r.subscribe(1, [(f"$share/g/{topic}", 1)]))
        c.expect(r.SUBACK)
        pub.publish(topic, b"live", qos=1)
        got = c.expect(r.PUBLISH)
        assert got.payload == b"live", f"retained message sent to a shared subscription: {got!r}"


@xfail_on_mosquitto("§4.7.3 (no limit on topic levels)", "it refuses a filter of more than 200 "
                    "levels (TOPIC_HIERARCHY_LIMIT) with DISCONNECT 0x81")
def test_topic_with_many_levels_delivered(broker, uid):
    """v5 §4.7.3, v3.1.1 §4.7.3 ("there is no limit to the number of levels in a Topic Name or
    Topic Filter, other than that imposed by the overall length of a UTF-8 Encoded String"):
    a 300-level topic is published and matched, in the default configuration."""
    prefix = f"deep/{uid}/"
    topic = prefix + "/".join(["l"] * 300)
    with connected(broker.port, uid + "s") as sub, connected(broker.port, uid + "p") as pub:
        sub.subscribe(prefix + "#", 1)
        sub.send(r.subscribe(2, [(topic, 1)]))
        assert sub.expect(r.SUBACK).codes == [1], "300-level filter refused"
        pub.send(r.publish(topic, b"deep", qos=1, packet_id=1))
        assert pub.expect(r.PUBACK).reason == 0
        assert sub.expect(r.PUBLISH).topic == topic


def test_queued_message_keeps_subscription_identifier(broker, uid):
    """v5 [MQTT-3.3.4-3]: a message queued for an offline session is delivered on reconnect
    with the Subscription Identifier of the matching subscription."""
    topic = f"qsid/{uid}"
    props = [(r.SESSION_EXPIRY_INTERVAL, 60)]
    with connected(broker.port, uid, props=props) as c:
        c.subscribe(topic, 1, props=[(r.SUBSCRIPTION_IDENTIFIER, 42)])
        c.send(r.disconnect())
    connect_v5(broker.port, uid + "p").publish(topic, b"queued", qos=1)
    with connected(broker.port, uid, clean=False, props=props) as c:
        p = c.expect(r.PUBLISH)
        assert p.payload == b"queued" and p.prop_all(r.SUBSCRIPTION_IDENTIFIER) == [42], p
