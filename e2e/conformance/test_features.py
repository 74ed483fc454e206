"""Optional features switched off or limited by configuration, as a v5 client sees them.

Every test here sets Tern config keys (`features:` / `limits:`), marked with
`tern_config`; against mosquitto the keys with an equivalent option are mapped
(max_qos, retain_available) and the others are skipped.
"""

import time

import pytest

import expect
import rawmqtt as r


def start(broker_factory, section: str, **values):
    return broker_factory({section: values})


def connected(port, cid, version=5, **kw) -> r.RawClient:
    c = r.RawClient(port, version=version)
    c.connack = c.handshake(cid, **kw)
    return c


# -- Maximum QoS ---------------------------------------------------------------------------

@pytest.mark.tern_config("features.maximum_qos")
@pytest.mark.parametrize("max_qos", [0, 1])
def test_maximum_qos_announced_and_subscriptions_downgraded(broker_factory, uid, max_qos):
    """v5 [MQTT-3.2.2-9] [MQTT-3.2.2-10] [MQTT-3.8.4-7]: a server supporting QoS up to N says
    Maximum QoS N in CONNACK, still accepts SUBSCRIBE at QoS 0/1/2, and grants at most N."""
    b = start(broker_factory, "features", maximum_qos=max_qos)
    with connected(b.port, uid) as c:
        assert c.connack.prop(r.MAXIMUM_QOS) == max_qos, c.connack
        c.send(r.subscribe(1, [(f"mq/{uid}/0", 0), (f"mq/{uid}/1", 1), (f"mq/{uid}/2", 2)]))
        suback = c.expect(r.SUBACK)
        assert suback.codes == [min(q, max_qos) for q in (0, 1, 2)], suback


@pytest.mark.tern_config("features.maximum_qos")
def test_maximum_qos_v311_subscription_downgraded(broker_factory, uid):
    """v3.1.1 [MQTT-3.8.4-6] §3.9.3: the server may grant a lower QoS than requested; with
    maximum QoS 1 a QoS 2 request is granted 1."""
    b = start(broker_factory, "features", maximum_qos=1)
    with connected(b.port, uid, 4) as c:
        c.send(r.subscribe(1, [(f"mq/{uid}", 2)], version=4))
        assert c.expect(r.SUBACK).codes == [1]


@pytest.mark.tern_config("features.maximum_qos")
def test_maximum_qos_exceeded_publish_disconnect_0x9b(broker_factory, uid):
    """v5 [MQTT-3.2.2-11] §3.2.2.3.4: a PUBLISH above the announced Maximum QoS (1) is
    answered with DISCONNECT 0x9B (QoS not supported)."""
    b = start(broker_factory, "features", maximum_qos=1)
    with connected(b.port, uid) as c:
        c.send(r.publish(f"mq/{uid}", b"x", qos=2, packet_id=1))
        expect.disconnected(c, 0x9B)


@pytest.mark.tern_config("features.maximum_qos")
def test_maximum_qos_will_qos_exceeded_connack_0x9b(broker_factory, uid):
    """v5 [MQTT-3.2.2-12]: a CONNECT whose Will QoS exceeds the server's maximum is refused,
    with CONNACK 0x9B (QoS not supported), and closed."""
    b = start(broker_factory, "features", maximum_qos=1)
    with r.RawClient(b.port) as c:
        c.send(r.connect(uid, will=r.Will(f"w/{uid}", b"x", qos=2)))
        expect.connect_refused(c, 0x9B)


@pytest.mark.tern_config("features.maximum_qos")
def test_maximum_qos_delivery_capped(broker_factory, uid):
    """v5 [MQTT-3.8.4-8] [MQTT-4.8.2-3]: a QoS 1 message to a subscription granted QoS 0 is
    delivered at QoS 0."""
    b = start(broker_factory, "features", maximum_qos=0)
    topic = f"cap/{uid}"
    with connected(b.port, uid + "s") as sub, connected(b.port, uid + "p") as pub:
        assert sub.subscribe(topic, 2).codes == [0]
        pub.send(r.publish(topic, b"x", qos=0))
        assert sub.expect(r.PUBLISH).qos == 0


# -- Retain Available ------------------------------------------------------------------------

@pytest.mark.tern_config("features.retain_available")
def test_retain_unavailable_announced_and_retained_publish_refused(broker_factory, uid):
    """v5 [MQTT-3.2.2-14] §3.2.2.3.5: with retain off, CONNACK says Retain Available 0 and a
    PUBLISH with RETAIN 1 gets DISCONNECT 0x9A (Retain not supported)."""
    b = start(broker_factory, "features", retain_available=False)
    with connected(b.port, uid) as c:
        assert c.connack.prop(r.RETAIN_AVAILABLE) == 0, c.connack
        c.send(r.publish(f"ra/{uid}", b"x", retain=True))
        expect.disconnected(c, 0x9A)


@pytest.mark.tern_config("features.retain_available")
def test_retain_unavailable_will_retain_refused(broker_factory, uid):
    """v5 [MQTT-3.2.2-13]: a CONNECT whose will has Will Retain 1 is refused by a server
    without retain support: CONNACK 0x9A, then close."""
    b = start(broker_factory, "features", retain_available=False)
    with r.RawClient(b.port) as c:
        c.send(r.connect(uid, will=r.Will(f"w/{uid}", b"x", retain=True)))
        expect.connect_refused(c, 0x9A)


# -- Wildcard / shared subscriptions / subscription identifiers --------------------------------

@pytest.mark.tern_config("features.wildcard_subscriptions")
def test_wildcard_subscriptions_unavailable(broker_factory, uid):
    """v5 §3.2.2.3.12: with wildcards off, CONNACK says Wildcard Subscription Available 0 and a
    wildcard filter is refused with 0xA2 (SUBACK or DISCONNECT); a plain filter works."""
    b = start(broker_factory, "features", wildcard_subscriptions=False)
    with connected(b.port, uid) as c:
        assert c.connack.prop(r.WILDCARD_SUBSCRIPTION_AVAILABLE) == 0, c.connack
        assert c.subscribe(f"plain/{uid}", 0).codes == [0]
        expect.subscribe_refused(c, f"wild/{uid}/#", disconnect_codes=(0xA2,))


@pytest.mark.tern_config("features.shared_subscriptions")
def test_shared_subscriptions_unavailable(broker_factory, uid):
    """v5 §3.2.2.3.14: with shared subscriptions off, CONNACK says Shared Subscription
    Available 0 and a "$share/…" filter is refused with 0x9E (SUBACK or DISCONNECT)."""
    b = start(broker_factory, "features", shared_subscriptions=False)
    with connected(b.port, uid) as c:
        assert c.connack.prop(r.SHARED_SUBSCRIPTION_AVAILABLE) == 0, c.connack
        expect.subscribe_refused(c, f"$share/g/{uid}", disconnect_codes=(0x9E,))


@pytest.mark.tern_config("features.subscription_identifiers")
def test_subscription_identifiers_unavailable(broker_factory, uid):
    """v5 §3.2.2.3.13: with subscription identifiers off, CONNACK says Subscription Identifier
    Available 0 and a SUBSCRIBE carrying one gets DISCONNECT 0xA1."""
    b = start(broker_factory, "features", subscription_identifiers=False)
    with connected(b.port, uid) as c:
        assert c.connack.prop(r.SUBSCRIPTION_IDENTIFIER_AVAILABLE) == 0, c.connack
        c.send(r.subscribe(1, [(f"sid/{uid}", 0)], props=[(r.SUBSCRIPTION_IDENTIFIER, 5)]))
        expect.disconnected(c, 0xA1)


# -- session expiry cap, connect timeout -------------------------------------------------------

@pytest.mark.tern_config("limits.max_session_expiry_secs")
def test_session_expiry_capped_and_announced(broker_factory, uid):
    """v5 §3.2.2.3.2: a server that uses a Session Expiry Interval other than the client's
    says so in CONNACK (3600 asked, 60 allowed)."""
    b = start(broker_factory, "limits", max_session_expiry_secs=60)
    with connected(b.port, uid, props=[(r.SESSION_EXPIRY_INTERVAL, 3600)]) as c:
        assert c.connack.prop(r.SESSION_EXPIRY_INTERVAL) == 60, c.connack
    with connected(b.port, uid + "b", props=[(r.SESSION_EXPIRY_INTERVAL, 30)]) as c:
        assert c.connack.prop(r.SESSION_EXPIRY_INTERVAL) in (None, 30), c.connack


@pytest.mark.slow_timer
@pytest.mark.tern_config("limits.connect_timeout_secs")
def test_connect_timeout_closes_silent_connection(broker_factory, uid):
    """v5 §3.1.4 / §4.8: a network connection that sends no CONNECT is closed after a
    reasonable time (connect_timeout_secs 1), with nothing sent [MQTT-3.14.0-1]."""
    b = start(broker_factory, "limits", connect_timeout_secs=1)
    with r.RawClient(b.port) as c:
        started = time.monotonic()
        packets, closed = c.read_until_closed(4.0)
        assert closed, "silent connection still open after 4 s"
        assert packets == [] and time.monotonic() - started >= 0.9, packets
