"""Shared subscriptions at QoS 2 when the chosen member goes away in the middle of a delivery."""

import rawmqtt as r
from clients import app_messages, connect_v5, sync
from support_extra import complete_qos2_as_receiver, connected

KEEP = [(r.SESSION_EXPIRY_INTERVAL, 60)]


def _deliver_to_raw_member(raw_member: r.RawClient, pub, topic: str, tries: int = 10):
    """Publish QoS 2 messages until the raw member is chosen for one; return that PUBLISH.
    (The other member, a paho client, completes the ones it gets.)"""
    for i in range(tries):
        pub.publish(topic, f"m{i}".encode(), qos=2)
        try:
            return raw_member.recv(0.3)
        except r.NoPacket:
            continue
    raise AssertionError(f"the raw member got none of {tries} messages")


def test_shared_qos2_delivery_completed_with_same_member(broker, uid):
    """v5 [MQTT-4.8.2-4] [MQTT-4.8.2-3] [MQTT-4.4.0-1]: a QoS 2 message of a shared
    subscription whose delivery to the chosen member is cut off (connection dropped before
    PUBREC) is completed with that same member when it resumes its session (the PUBLISH
    again, DUP 1, same Packet Identifier); the other member never gets it."""
    topic = f"sh2/{uid}"
    shared = f"$share/g{uid[-6:]}/{topic}"
    other = connect_v5(broker.port, uid + "o")
    other.subscribe(shared, qos=2)
    other.subscribe(f"{topic}/sync", qos=2)
    pub = connect_v5(broker.port, uid + "p")
    with connected(broker.port, uid + "m", props=KEEP) as member:
        assert member.subscribe(shared, 2).codes == [2]
        cut = _deliver_to_raw_member(member, pub, topic)
        assert cut.type == r.PUBLISH and cut.qos == 2, cut
    with connected(broker.port, uid + "m", clean=False, props=KEEP) as member:
        assert member.connack.session_present
        again = member.expect(r.PUBLISH)
        assert (again.payload, again.packet_id, again.dup) == (cut.payload, cut.packet_id, True)
        complete_qos2_as_receiver(member, again)
        sync(pub, other, f"{topic}/sync", qos=2)
        assert cut.payload not in [m.payload for m in app_messages(other, topic)], (
            "the message cut off from its member was given to another member")
        member.send(r.unsubscribe(9, [shared]))
        member.expect(r.UNSUBACK)
    connected(broker.port, uid + "m").close()  # Clean Start 1, no expiry: the session ends


def test_shared_qos2_not_redirected_when_member_session_ends(broker, uid):
    """v5 [MQTT-4.8.2-5]: if the member chosen for a QoS 2 shared delivery loses its
    connection before completing it and its session ends (Session Expiry 0; the client then
    comes back with Clean Start 1), the message is not sent to another member of the group."""
    topic = f"sh2e/{uid}"
    shared = f"$share/g{uid[-6:]}/{topic}"
    other = connect_v5(broker.port, uid + "o")
    other.subscribe(shared, qos=2)
    other.subscribe(f"{topic}/sync", qos=2)
    pub = connect_v5(broker.port, uid + "p")
    with connected(broker.port, uid + "m") as member:
        assert member.subscribe(shared, 2).codes == [2]
        cut = _deliver_to_raw_member(member, pub, topic)
        assert cut.type == r.PUBLISH and cut.qos == 2, cut
    # Coming back with Clean Start 1: whether or not the server had seen the drop yet, the old
    # session has ended by the time this CONNACK arrives.
    with connected(broker.port, uid + "m", clean=True) as member:
        assert not member.connack.session_present
    sync(pub, other, f"{topic}/sync", qos=2)
    assert cut.payload not in [m.payload for m in app_messages(other, topic)], (
        "the QoS 2 message of an ended session was sent to another member")
