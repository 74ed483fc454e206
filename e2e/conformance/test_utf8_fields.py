"""UTF-8 strings outside the topic: String Pairs, Response Topic and Content Type; U+FEFF kept in
properties; topic names and filters of the largest size a string can have (65,535 bytes)."""

import pytest

import expect
import rawmqtt as r
from support_extra import BOTH, connected, publish_body

BAD = {
    "lone_continuation": b"a\x80b",
    "nul": b"a\x00b",
    "surrogate": b"a\xed\xa0\x80b",
    "overlong": b"a\xc0\xafb",
}


@pytest.mark.parametrize("where", ["name", "value"])
@pytest.mark.parametrize("bad", list(BAD), ids=list(BAD))
def test_user_property_bad_utf8_in_publish_is_malformed(broker, uid, where, bad):
    """v5 [MQTT-1.5.7-1] [MQTT-1.5.4-1] [MQTT-1.5.4-2]: both the name and the value of a UTF-8
    String Pair (a User Property) follow the UTF-8 string rules; a PUBLISH whose pair breaks
    them is malformed: DISCONNECT 0x81, then close."""
    pair = (BAD[bad], "v") if where == "name" else ("k", BAD[bad])
    with connected(broker.port, uid) as c:
        c.send(r.publish(f"up/{uid}", b"x", props=[(r.USER_PROPERTY, pair)]))
        expect.disconnected(c, 0x81)


@pytest.mark.parametrize("where", ["name", "value"])
def test_user_property_bad_utf8_in_connect_is_malformed(broker, uid, where):
    """v5 [MQTT-1.5.7-1] [MQTT-1.5.4-1] [MQTT-3.1.4-1]: a CONNECT User Property with an
    ill-formed UTF-8 name or value is malformed: CONNACK 0x81, then close."""
    pair = (BAD["surrogate"], "v") if where == "name" else ("k", BAD["surrogate"])
    with r.RawClient(broker.port) as c:
        c.send(r.connect(uid, props=[(r.USER_PROPERTY, pair)]))
        expect.connect_refused(c, 0x81)


@pytest.mark.parametrize("prop", [r.RESPONSE_TOPIC, r.CONTENT_TYPE],
                         ids=["response_topic", "content_type"])
@pytest.mark.parametrize("bad", ["lone_continuation", "surrogate"])
def test_publish_string_property_bad_utf8_is_malformed(broker, uid, prop, bad):
    """v5 [MQTT-3.3.2-13] [MQTT-3.3.2-19] [MQTT-1.5.4-1]: the Response Topic and the Content
    Type of a PUBLISH are UTF-8 Encoded Strings; ill-formed UTF-8 in either makes the packet
    malformed: DISCONNECT 0x81, then close."""
    with connected(broker.port, uid) as c:
        c.send(r.publish(f"sp/{uid}", b"x", qos=1, packet_id=1, props=[(prop, BAD[bad])]))
        expect.disconnected(c, 0x81)


def test_bom_kept_in_string_properties(broker, uid):
    """v5 [MQTT-1.5.4-3] [MQTT-1.5.7-1] [MQTT-3.3.2-4]: EF BB BF inside a Content Type, a
    Response Topic and both halves of a User Property is U+FEFF and is passed on unchanged,
    neither stripped nor skipped."""
    topic = f"bomp/{uid}"
    bom = "\ufeff"
    props = [(r.CONTENT_TYPE, f"{bom}text/plain"), (r.RESPONSE_TOPIC, f"{bom}reply/{bom}x"),
             (r.USER_PROPERTY, (f"{bom}key", f"value{bom}"))]
    with connected(broker.port, uid + "s") as sub, connected(broker.port, uid + "p") as pub:
        sub.subscribe(topic, 1)
        pub.send(r.publish(topic, b"x", qos=1, packet_id=1, props=props))
        assert pub.expect(r.PUBACK).reason < 0x80
        got = sub.expect(r.PUBLISH)
        sub.send(r.ack(r.PUBACK, got.packet_id))
        assert got.prop(r.CONTENT_TYPE) == f"{bom}text/plain", got
        assert got.prop(r.RESPONSE_TOPIC) == f"{bom}reply/{bom}x", got
        assert got.prop_all(r.USER_PROPERTY) == [(f"{bom}key", f"value{bom}")], got


def _longest(prefix: str) -> str:
    return prefix + "x" * (65535 - len(prefix.encode()))


@pytest.mark.parametrize("version", BOTH)
def test_topic_name_and_filter_of_65535_bytes(broker, uid, version):
    """v5 [MQTT-4.7.3-3] [MQTT-1.5.4-1], v3.1.1 [MQTT-4.7.3-3]: a Topic Name and a Topic
    Filter may be as long as a UTF-8 string can be, 65,535 bytes; with the default
    limits.max_topic_length (65,535) a subscription to such a filter is granted and a message
    on such a topic name is delivered with the name intact."""
    topic = _longest(f"long/{uid}/")
    assert len(topic.encode()) == 65535
    with connected(broker.port, uid + "s", version) as sub, \
            connected(broker.port, uid + "p", version) as pub:
        assert sub.subscribe(topic, 1).codes == [1]
        pub.send(r.publish(topic, b"far", qos=1, packet_id=1, version=version))
        assert pub.expect(r.PUBACK).packet_id == 1
        got = sub.expect(r.PUBLISH)
        assert got.topic == topic and got.payload == b"far", f"{got.topic[:40]}… {got.payload!r}"
        sub.send(r.ack(r.PUBACK, got.packet_id, version=version))


def test_topic_name_is_first_field_multibyte_v311(broker, uid):
    """v3.1.1 [MQTT-3.3.2-1] [MQTT-1.5.3-3]: the Topic Name is the first field of the PUBLISH
    variable header, a UTF-8 encoded string; a name with two-, three- and four-byte
    characters (and U+FEFF) is read and passed on exactly, followed by the Packet
    Identifier and the payload."""
    topic = f"\u00fc/\u20ac/\U0001D11E/\ufeff/{uid}"
    with connected(broker.port, uid + "s", 4) as sub, connected(broker.port, uid + "p", 4) as pub:
        sub.subscribe(topic, 1)
        pub.send(r.publish(topic, b"payload", qos=1, packet_id=77, version=4))
        assert pub.expect(r.PUBACK).packet_id == 77
        got = sub.expect(r.PUBLISH)
        assert got.body == publish_body(topic, b"payload", 4, packet_id=got.packet_id), got.body
        sub.send(r.ack(r.PUBACK, got.packet_id, version=4))
