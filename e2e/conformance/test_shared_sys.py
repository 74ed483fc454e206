"""Shared subscriptions ($share/group/filter) and the broker's $SYS topics."""

import pytest

import expect
import rawmqtt as r
from clients import connect_v5, connect_v311, wait_for
from expect import xfail_on_mosquitto


def test_shared_subscription_each_message_to_one_member(broker, uid):
    """v5 §4.8.2 [MQTT-4.8.2-1] [MQTT-4.8.2-3]: each message on a shared subscription goes to
    exactly one member of the group, at the member's granted QoS."""
    topic = f"sh/{uid}"
    members = [connect_v5(broker.port, f"{uid}m{i}") for i in range(3)]
    for m in members:
        assert m.subscribe(f"$share/g/{topic}", qos=1) == [1]
    pub = connect_v5(broker.port, uid + "p")
    for i in range(30):
        pub.publish(topic, str(i).encode(), qos=1)
    wait_for(lambda: sum(len(m.received(topic)) for m in members) >= 30,
             message="30 messages across the group")
    got = sorted(int(msg.payload) for m in members for msg in m.received(topic))
    assert got == list(range(30)), f"lost or duplicated in the group: {got}"
    assert all(msg.qos == 1 for m in members for msg in m.received(topic))


def test_shared_subscription_two_groups_each_get_every_message(broker, uid):
    """v5 §4.8.2: every group with a matching shared subscription receives each message once,
    and a non-shared subscriber receives it as well."""
    topic = f"sh2/{uid}"
    g1 = [connect_v5(broker.port, f"{uid}a{i}") for i in range(2)]
    g2 = [connect_v5(broker.port, f"{uid}b{i}") for i in range(2)]
    for m in g1:
        m.subscribe(f"$share/one/{topic}", qos=1)
    for m in g2:
        m.subscribe(f"$share/two/{topic}", qos=1)
    plain = connect_v5(broker.port, uid + "n")
    plain.subscribe(topic, qos=1)
    pub = connect_v5(broker.port, uid + "p")
    for i in range(10):
        pub.publish(topic, str(i).encode(), qos=1)
    plain.wait_messages(10, topic)
    for group in (g1, g2):
        wait_for(lambda: sum(len(m.received(topic)) for m in group) >= 10, message="group")
        assert sorted(int(x.payload) for m in group for x in m.received(topic)) == list(range(10))


def test_shared_subscription_with_wildcard_filter(broker, uid):
    """v5 [MQTT-4.8.2-2]: the part after "$share/<name>/" is an ordinary topic filter, wildcards
    included; messages carry their real topic name."""
    base = f"shw/{uid}"
    m = connect_v5(broker.port, uid + "m")
    m.subscribe(f"$share/grp/{base}/+/x", qos=0)
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(f"{base}/a/x", b"1", qos=1)
    assert m.wait_message().topic == f"{base}/a/x"


def test_shared_subscription_unsubscribe_leaves_group(broker, uid):
    """v5 [MQTT-3.10.4-1]: UNSUBSCRIBE with the full "$share/…" filter removes the member; the
    rest of the group then gets every message."""
    topic = f"shu/{uid}"
    a = connect_v5(broker.port, uid + "a")
    b = connect_v5(broker.port, uid + "b")
    a.subscribe(f"$share/g/{topic}", qos=1)
    b.subscribe(f"$share/g/{topic}", qos=1)
    a.unsubscribe(f"$share/g/{topic}")
    pub = connect_v5(broker.port, uid + "p")
    for i in range(6):
        pub.publish(topic, str(i).encode(), qos=1)
    assert [int(m.payload) for m in b.wait_messages(6, topic)] == list(range(6))
    assert a.received(topic) == []


_LAX_SHARE = xfail_on_mosquitto("[MQTT-4.8.2-1] [MQTT-4.8.2-2]",
                                "it grants this filter (as a plain subscription)")


@pytest.mark.parametrize("bad_filter", [
    pytest.param("$share/g", marks=_LAX_SHARE), pytest.param("$share//t", marks=_LAX_SHARE),
    "$share/g+/t", "$share/g#/t", pytest.param("$share/g/", marks=_LAX_SHARE)])
def test_shared_subscription_invalid_share_name_refused(broker, uid, bad_filter):
    """v5 [MQTT-4.8.2-1] [MQTT-4.8.2-2]: a ShareName must be non-empty, without "/", "+" or
    "#", and be followed by "/" and a topic filter; otherwise the subscription is refused
    (SUBACK code >= 0x80, or DISCONNECT 0x81/0x82/0x8F/0x9E and close)."""
    with r.RawClient(broker.port) as c:
        c.handshake(uid)
        expect.subscribe_refused(c, bad_filter, disconnect_codes=(0x81, 0x82, 0x8F, 0x9E))


def test_shared_subscription_available_in_connack(broker, uid):
    """v5 §3.2.2.3.15: Shared Subscription Available is absent or 1 (Tern supports them)."""
    with r.RawClient(broker.port) as c:
        assert c.handshake(uid).prop(r.SHARED_SUBSCRIPTION_AVAILABLE, 1) == 1


# -- $SYS -------------------------------------------------------------------------------------

SYS_TOPICS = ["$SYS/broker/version", "$SYS/broker/uptime", "$SYS/broker/clients/connected"]


@pytest.mark.tern_config("sys.interval_secs; topic names as mosquitto's")
@pytest.mark.parametrize("topic", SYS_TOPICS)
def test_sys_topic_published(fresh_broker, uid, topic):
    """v5 §4.7.2 (topics beginning with "$" are for server use): the broker publishes its
    version, uptime and connected-client count under $SYS/broker/ (every 1 s here)."""
    sub = connect_v5(fresh_broker.port, uid)
    sub.subscribe(topic, qos=0)
    msg = sub.wait_message(topic, timeout=4)
    assert msg.payload, f"{topic} is empty"


@pytest.mark.tern_config("sys.interval_secs; topic names as mosquitto's")
def test_sys_clients_connected_counts(fresh_broker, uid):
    """$SYS/broker/clients/connected follows the number of connected clients."""
    sub = connect_v5(fresh_broker.port, uid + "s")
    sub.subscribe("$SYS/broker/clients/connected", qos=0)
    extra = [connect_v311(fresh_broker.port, f"{uid}x{i}") for i in range(3)]
    wait_for(lambda: any(m.payload == b"4" for m in sub.received()), timeout=5,
             message=f"clients/connected = 4 (got {[m.payload for m in sub.received()]})")
    for c in extra:
        c.disconnect()
    wait_for(lambda: sub.received()[-1].payload == b"1", timeout=5,
             message=f"clients/connected = 1 (got {[m.payload for m in sub.received()]})")


@pytest.mark.tern_config("sys.interval_secs")
def test_sys_uptime_increases(fresh_broker, uid):
    """$SYS/broker/uptime is republished on the interval and does not go backwards."""
    sub = connect_v5(fresh_broker.port, uid)
    sub.subscribe("$SYS/broker/uptime", qos=0)
    msgs = sub.wait_messages(3, timeout=6)
    numbers = [int("".join(ch for ch in m.text if ch.isdigit()) or 0) for m in msgs]
    assert numbers == sorted(numbers) and numbers[-1] > numbers[0], [m.text for m in msgs]


def test_sys_publish_from_client_not_accepted_as_broker_data(fresh_broker, uid):
    """v5 §4.7.2: $SYS is the server's; a client's PUBLISH to $SYS/broker/version must not
    replace what the broker reports (the broker may drop or refuse it)."""
    pub = connect_v5(fresh_broker.port, uid + "p")
    pub.publish("$SYS/broker/version", b"forged", qos=1, retain=True)
    sub = connect_v5(fresh_broker.port, uid + "s")
    sub.subscribe("$SYS/broker/version", qos=0)
    assert sub.wait_message(timeout=4).payload != b"forged"
