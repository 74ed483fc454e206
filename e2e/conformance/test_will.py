"""Will messages: when they are published, when not, delay, retain, QoS and properties.

"The will was not published" is checked after the server has certainly
finished with the old connection: a new connection with the same ClientID is
accepted (the will decision is made before), then a sync marker is sent on
the will topic.
"""

import time

import pytest

import expect
import rawmqtt as r
from clients import WillSpec, app_messages, connect_v5, connect_v31, connect_v311, sync

CONNECT = {5: connect_v5, 4: connect_v311, 3: connect_v31}
VERSIONS = [pytest.param(5, id="v5"), pytest.param(4, id="v311"), pytest.param(3, id="v31")]


def client(version, port, cid, **kw):
    return CONNECT[version](port, cid[-23:], **kw)


def watcher(port, uid, topic, qos=1):
    w = connect_v5(port, uid + "w")
    w.subscribe(topic, qos=qos)
    return w


def assert_no_will(port, uid, will_topic, w):
    """After the will owner (ClientID uid+"o") is gone, prove no will was published."""
    connect_v5(port, (uid + "o")[-23:]).disconnect()
    sync(connect_v5(port, uid + "p"), w, will_topic, qos=1)
    assert app_messages(w, will_topic) == [], "will message published"


@pytest.mark.parametrize("version", VERSIONS)
def test_will_published_on_abnormal_close(broker, uid, version):
    """v5 [MQTT-3.1.2-7] [MQTT-3.1.2-8], v3.1.1 [MQTT-3.1.2-8]: when the network connection
    closes without DISCONNECT, the will message is published."""
    topic = f"will/{uid}"
    w = watcher(broker.port, uid, topic)
    owner = client(version, broker.port, uid + "o", will=WillSpec(topic, b"gone", qos=1))
    owner.drop()
    msg = w.wait_message(topic)
    assert (msg.payload, msg.qos, msg.retain) == (b"gone", 1, False)


@pytest.mark.parametrize("version", VERSIONS)
def test_will_not_published_on_normal_disconnect(broker, uid, version):
    """v5 [MQTT-3.1.2-10] [MQTT-3.14.4-3], v3.1.1 [MQTT-3.1.2-10] [MQTT-3.14.4-3]: a normal
    DISCONNECT (v5 reason 0x00) removes the will without publishing it."""
    topic = f"nowill/{uid}"
    w = watcher(broker.port, uid, topic)
    owner = client(version, broker.port, uid + "o", will=WillSpec(topic, b"gone", qos=1))
    owner.disconnect()
    assert_no_will(broker.port, uid, topic, w)


def test_will_published_on_disconnect_with_will_message(broker, uid):
    """v5 §3.14.2.1 (reason 0x04 Disconnect with Will Message) [MQTT-3.1.2-8]: the client
    disconnects normally but asks for its will to be published."""
    topic = f"w04/{uid}"
    w = watcher(broker.port, uid, topic)
    owner = connect_v5(broker.port, uid + "o", will=WillSpec(topic, b"asked", qos=1))
    owner.disconnect(reason_code=0x04)
    assert w.wait_message(topic).payload == b"asked"


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_will_published_after_protocol_error(broker, uid, version):
    """v5 §3.1.2.5 [MQTT-3.1.2-8], v3.1.1 [MQTT-3.1.2-8]: a connection the server closes
    because of a protocol error publishes the will."""
    topic = f"wpe/{uid}"
    w = watcher(broker.port, uid, topic)
    with r.RawClient(broker.port, version=version) as c:
        c.handshake(uid + "o", will=r.Will(topic, b"broken", qos=1))
        c.send(r.publish("a/+", b"x", version=version))
        c.read_until_closed(expect.CLOSE_TIMEOUT)
    assert w.wait_message(topic).payload == b"broken"


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_will_retained(broker, uid, version):
    """v5 [MQTT-3.1.2-15], v3.1.1 [MQTT-3.1.2-17]: Will Retain 1 publishes the will as a
    retained message: a later subscriber gets it with RETAIN 1."""
    topic = f"wr/{uid}"
    owner = client(version, broker.port, uid + "o",
                   will=WillSpec(topic, b"last", qos=1, retain=True))
    w = watcher(broker.port, uid, topic)
    owner.drop()
    assert w.wait_message(topic).payload == b"last"
    late = connect_v5(broker.port, uid + "l")
    late.subscribe(topic, qos=1)
    msg = late.wait_message(topic)
    assert (msg.payload, msg.retain) == (b"last", True)


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_will_not_retained(broker, uid, version):
    """v5 [MQTT-3.1.2-14], v3.1.1 [MQTT-3.1.2-16]: Will Retain 0 publishes a non-retained
    message: nothing is stored for later subscribers."""
    topic = f"wnr/{uid}"
    owner = client(version, broker.port, uid + "o", will=WillSpec(topic, b"once", qos=1))
    w = watcher(broker.port, uid, topic)
    owner.drop()
    assert w.wait_message(topic).payload == b"once"
    late = connect_v5(broker.port, uid + "l")
    late.subscribe(topic, qos=1)
    sync(connect_v5(broker.port, uid + "p"), late, topic, qos=1)
    assert app_messages(late, topic) == []


@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_qos_respected(broker, uid, will_qos):
    """v5 [MQTT-3.1.2-12] [MQTT-3.8.4-8]: the will is published at its Will QoS (the
    subscriber, at QoS 2, receives it at that QoS)."""
    topic = f"wq/{uid}"
    w = watcher(broker.port, uid, topic, qos=2)
    connect_v5(broker.port, uid + "o", will=WillSpec(topic, b"q", qos=will_qos)).drop()
    assert w.wait_message(topic).qos == will_qos


def test_will_properties_forwarded(broker, uid):
    """v5 [MQTT-3.1.3-10] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20]: will properties
    (Content Type, Response Topic, Correlation Data, User Properties in order) are carried
    to the subscriber."""
    topic = f"wp/{uid}"
    w = watcher(broker.port, uid, topic)
    user = [("z", "1"), ("a", "2"), ("z", "3")]
    connect_v5(broker.port, uid + "o", will=WillSpec(topic, b"p", qos=1, props={
        "ContentType": "application/x-will", "ResponseTopic": f"r/{uid}",
        "CorrelationData": b"\x01\x02", "UserProperty": user, "PayloadFormatIndicator": 1,
    })).drop()
    props = w.wait_message(topic).props
    assert props.get("ContentType") == "application/x-will"
    assert props.get("ResponseTopic") == f"r/{uid}"
    assert props.get("CorrelationData") == b"\x01\x02"
    assert props.get("UserProperty") == user
    assert props.get("PayloadFormatIndicator") == 1


@pytest.mark.slow_timer
def test_will_delay_interval_respected(broker, uid):
    """v5 [MQTT-3.1.2-8] §3.1.3.2.2: with Will Delay Interval 2 s (and a session that lasts
    longer) the will is published only after the delay has passed."""
    topic = f"wd/{uid}"
    w = watcher(broker.port, uid, topic)
    owner = connect_v5(broker.port, uid + "o", clean_start=True, SessionExpiryInterval=30,
                       will=WillSpec(topic, b"late", qos=1, props={"WillDelayInterval": 2}))
    owner.drop()
    dropped = time.monotonic()
    msg = w.wait_message(topic, timeout=8)
    waited = time.monotonic() - dropped
    assert msg.payload == b"late"
    assert waited >= 1.8, f"will published after {waited:.2f}s, before its 2 s delay"


@pytest.mark.slow_timer
def test_will_delay_cancelled_by_reconnect(broker, uid):
    """v5 [MQTT-3.1.3-9]: if the client reconnects to its session before the Will Delay
    Interval (2 s) has passed, the will is not published."""
    topic = f"wdc/{uid}"
    w = watcher(broker.port, uid, topic)
    cid = (uid + "o")[-23:]
    owner = connect_v5(broker.port, cid, clean_start=True, SessionExpiryInterval=30,
                       will=WillSpec(topic, b"late", qos=1, props={"WillDelayInterval": 2}))
    owner.drop()
    back = connect_v5(broker.port, cid, clean_start=False, SessionExpiryInterval=30)
    assert back.session_present is True
    time.sleep(3.0)
    sync(connect_v5(broker.port, uid + "p"), w, topic, qos=1)
    assert app_messages(w, topic) == [], "will published despite reconnect within delay"


@pytest.mark.slow_timer
def test_will_published_when_session_ends_before_delay(broker, uid):
    """v5 [MQTT-3.1.2-8]: the will is published when the session ends, if that comes before
    the Will Delay Interval (session expiry 1 s, will delay 60 s)."""
    topic = f"wse/{uid}"
    w = watcher(broker.port, uid, topic)
    connect_v5(broker.port, uid + "o", clean_start=True, SessionExpiryInterval=1,
               will=WillSpec(topic, b"ended", qos=1, props={"WillDelayInterval": 60})).drop()
    assert w.wait_message(topic, timeout=6).payload == b"ended"


def test_will_not_published_while_connected(broker, uid):
    """v5 [MQTT-3.1.2-8]: the will belongs to the closed connection only; nothing is sent
    while the client is connected and active."""
    topic = f"wc/{uid}"
    w = watcher(broker.port, uid, topic)
    owner = connect_v5(broker.port, uid + "o", will=WillSpec(topic, b"no", qos=1))
    owner.publish(f"{topic}/x", b"hello", qos=1)
    sync(connect_v5(broker.port, uid + "p"), w, topic, qos=1)
    assert app_messages(w, topic) == []
    owner.disconnect()


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_will_published_when_taken_over(broker, uid, version):
    """v5 [MQTT-3.1.4-3] [MQTT-3.1.2-8], v3.1.1 [MQTT-3.1.4-2] [MQTT-3.1.2-8]: the server
    closes the taken-over connection without a DISCONNECT from that client, so its will (no
    delay) is published."""
    topic = f"wto/{uid}"
    w = watcher(broker.port, uid, topic)
    client(version, broker.port, uid + "o", will=WillSpec(topic, b"old", qos=1))
    client(version, broker.port, uid + "o")
    assert w.wait_message(topic).payload == b"old"


@pytest.mark.slow_timer
def test_will_not_published_on_takeover_within_delay(broker, uid):
    """v5 [MQTT-3.1.3-9]: a takeover (Clean Start 0) before the Will Delay Interval (5 s) has
    passed is a new connection to the session: the old will is not published."""
    topic = f"wtd/{uid}"
    w = watcher(broker.port, uid, topic)
    cid = (uid + "o")[-23:]
    connect_v5(broker.port, cid, clean_start=True, SessionExpiryInterval=30,
               will=WillSpec(topic, b"old", qos=1, props={"WillDelayInterval": 5}))
    new = connect_v5(broker.port, cid, clean_start=False, SessionExpiryInterval=30)
    assert new.session_present
    time.sleep(0.5)
    sync(connect_v5(broker.port, uid + "p"), w, topic, qos=1)
    assert app_messages(w, topic) == []
    new.disconnect()


@pytest.mark.slow_timer
def test_will_published_on_keepalive_timeout(broker, uid):
    """v5 [MQTT-3.1.2-22] [MQTT-3.1.2-8]: a client silent for 1.5 x Keep Alive (1 s) is cut
    off as if the network failed, and its will is published."""
    topic = f"wka/{uid}"
    w = watcher(broker.port, uid, topic)
    with r.RawClient(broker.port) as c:
        c.handshake(uid + "o", keepalive=1, will=r.Will(topic, b"timeout", qos=1))
        assert w.wait_message(topic, timeout=8).payload == b"timeout"
