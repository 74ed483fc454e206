"""CONNECT payload rules and what CONNACK (and a server DISCONNECT) must say, from raw bytes.

Covers the CONNECT flag/payload agreement (user name, password, will), UTF-8 in the payload,
accepted and refused CONNACKs (reason codes, Session Present), refusal by authentication,
Clean Start processing, keep alive without Server Keep Alive, Topic Alias Maximum 0, and
that the side which sends DISCONNECT closes the connection.
"""

import time

import pytest

import expect
import rawmqtt as r
from clients import connect_v5, connect_v311, sync
from expect import IS_TERN, xfail_on_mosquitto
from support_extra import BOTH, CONNACK_CODES, SERVER_DISCONNECT_CODES, check_v5_layout, connected
from support_extra import auth_broker_factory  # noqa: F401 - a fixture, used by name


def raw(broker, version=5) -> r.RawClient:
    return r.RawClient(broker.port, version=version)


# -- the CONNECT flags say which payload fields are there --------------------------------------

# (case, flags byte, connect() keywords). Each one's payload disagrees with its flags.
FLAG_PAYLOAD_MISMATCHES = [
    ("will_flag_1_no_will_fields", 0x02 | 0x04, {}),
    ("user_name_flag_0_user_name_present", 0x02, {"username": "user"}),
    ("user_name_flag_1_no_user_name", 0x02 | 0x80, {}),
    ("password_flag_0_password_present", 0x02 | 0x80, {"username": "user", "password": b"pw"}),
    ("password_flag_1_no_password", 0x02 | 0x80 | 0x40, {"username": "user"}),
]
V311_ONLY_MISMATCHES = [
    ("will_flag_0_will_fields_present", 0x02, {"will": r.Will("w/t", b"x")}),
]


@pytest.mark.parametrize("case,flags,fields", [pytest.param(*c, id=c[0])
                                               for c in FLAG_PAYLOAD_MISMATCHES])
def test_connect_flags_disagree_with_payload_v5_refused(broker, uid, case, flags, fields):
    """v5 [MQTT-3.1.2-9] [MQTT-3.1.2-16] [MQTT-3.1.2-17] [MQTT-3.1.2-18] [MQTT-3.1.2-19]
    [MQTT-3.1.4-1] [MQTT-3.2.2-8]: the Will, User Name and Password flags say exactly which
    fields the payload holds; a payload with a field missing or one too many is a malformed
    CONNECT, so the server refuses it (CONNACK 0x81, or 0x82) and closes."""
    with raw(broker) as c:
        c.send(r.connect(uid, flags=flags, **fields))
        expect.connect_refused(c, 0x81, 0x82)


@pytest.mark.parametrize("case,flags,fields", [pytest.param(*c, id=c[0]) for c in
                                               FLAG_PAYLOAD_MISMATCHES + V311_ONLY_MISMATCHES])
def test_connect_flags_disagree_with_payload_v311_closes(broker, uid, case, flags, fields):
    """v3.1.1 [MQTT-3.1.2-9] [MQTT-3.1.2-11] [MQTT-3.1.2-18] [MQTT-3.1.2-19] [MQTT-3.1.2-20]
    [MQTT-3.1.2-21] [MQTT-3.1.4-1] [MQTT-3.2.2-6]: the same disagreements in a 3.1.1 CONNECT
    (including Will Flag 0 with a Will Topic and Message present): no CONNACK return code
    fits a malformed CONNECT, so the server closes without sending one."""
    with raw(broker, 4) as c:
        c.send(r.connect(uid, version=4, flags=flags, **fields))
        expect.closed_silently(c)


@pytest.mark.parametrize("version", BOTH)
def test_connect_payload_fields_read_in_order(broker, uid, version):
    """v5 [MQTT-3.1.3-1] [MQTT-3.1.3-3] [MQTT-3.1.2-17] [MQTT-3.1.2-19] [MQTT-3.1.4-5],
    v3.1.1 [MQTT-3.1.3-1] [MQTT-3.1.3-3] [MQTT-3.1.2-19] [MQTT-3.1.2-21]: a CONNECT with every
    payload field (Client Identifier, Will Properties, Will Topic, Will Payload, User Name,
    Password, in that order) is accepted with reason 0, and the server read them in that
    order: the will goes out with the topic, payload and properties sent, and the Client
    Identifier names the session (coming back with it finds Session Present 1)."""
    will_topic = f"order/{uid}"
    watcher = connect_v5(broker.port, uid + "w")
    watcher.subscribe(will_topic, qos=1)
    will_props = [(r.CONTENT_TYPE, "text/x-order")] if version == 5 else ()
    keep = [(r.SESSION_EXPIRY_INTERVAL, 60)] if version == 5 else None
    with raw(broker, version) as c:
        c.send(r.connect(uid, version=version, clean=False, props=keep,
                         username="user-" + uid, password=b"secret",
                         will=r.Will(will_topic, b"will-payload", qos=1, props=will_props)))
        connack = c.expect(r.CONNACK)
        assert connack.reason == 0 and not connack.session_present, connack
        if version == 5:
            assert connack.prop(r.ASSIGNED_CLIENT_IDENTIFIER) is None, connack
    msg = watcher.wait_message(will_topic)  # the connection was dropped: the will goes out
    assert msg.payload == b"will-payload"
    if version == 5:
        assert msg.props.get("ContentType") == "text/x-order", msg.props
    end = [(r.SESSION_EXPIRY_INTERVAL, 0)] if version == 5 else None
    with connected(broker.port, uid, version, clean=False, props=end) as c:
        assert c.connack.session_present, "the session was not kept under the Client Identifier"


def test_connect_user_name_bad_utf8_v5_refused(broker, uid):
    """v5 [MQTT-3.1.3-12] [MQTT-1.5.4-1] [MQTT-3.1.4-1]: the User Name is a UTF-8 Encoded
    String; an ill-formed one makes the CONNECT malformed: CONNACK 0x81, then close."""
    with raw(broker) as c:
        c.send(r.connect(uid, username=b"us\xc3\x28er"))
        expect.connect_refused(c, 0x81)


@pytest.mark.parametrize("field", ["user_name", "will_topic"])
def test_connect_payload_string_bad_utf8_v311_closes(broker, uid, field):
    """v3.1.1 [MQTT-3.1.3-10] [MQTT-3.1.3-11] [MQTT-1.5.3-1] [MQTT-3.1.4-1]: the Will Topic and
    the User Name are UTF-8 encoded strings; ill-formed UTF-8 in either closes the connection
    without a CONNACK."""
    fields = ({"username": b"\xed\xa0\x80user"} if field == "user_name"
              else {"will": r.Will(b"w/\xff/t", b"x")})
    with raw(broker, 4) as c:
        c.send(r.connect(uid, version=4, **fields))
        expect.closed_silently(c)


# -- accepted and refused CONNACKs --------------------------------------------------------------

def test_connect_accepted_connack_0x00(broker, uid):
    """v5 [MQTT-3.1.4-5] [MQTT-3.2.2-8] [MQTT-2.2.2-1]: an accepted CONNECT gets a CONNACK with
    reason code 0x00, one of the defined Connect Reason Codes, and a Property Length."""
    with raw(broker) as c:
        c.send(r.connect(uid))
        connack = c.expect(r.CONNACK)
        assert connack.reason == 0x00 and connack.reason in CONNACK_CODES, connack
        check_v5_layout(connack)
        expect.still_open(c)


def test_connack_refused_has_session_present_0(broker, uid):
    """v5 [MQTT-3.2.2-6] [MQTT-3.2.2-8] [MQTT-4.12.0-4] [MQTT-4.13.2-1] [MQTT-3.1.4-2]: a
    client with a stored session (Session Expiry 60) comes back with Clean Start 0 and an
    Authentication Method the server does not support: the CONNACK refuses (0x8C, Bad
    authentication method), has Session Present 0 although a session exists, and the server
    closes the connection."""
    with connected(broker.port, uid, props=[(r.SESSION_EXPIRY_INTERVAL, 60)]) as c:
        c.subscribe(f"sp/{uid}", 1)
        c.send(r.disconnect())
    with raw(broker) as c:
        c.send(r.connect(uid, clean=False, props=[(r.SESSION_EXPIRY_INTERVAL, 60),
                                                  (r.AUTHENTICATION_METHOD, "no-such-method")]))
        packets, closed = c.read_until_closed(expect.CLOSE_TIMEOUT)
        assert closed, f"refused connection left open: {packets}"
        assert [p.type for p in packets] == [r.CONNACK], packets
        connack = packets[0]
        assert connack.reason >= 0x80 and connack.reason in CONNACK_CODES, connack
        if IS_TERN:
            assert connack.reason == 0x8C, connack
        assert not connack.session_present, f"refusing CONNACK with Session Present 1: {connack}"
    with connected(broker.port, uid, clean=False,
                   props=[(r.SESSION_EXPIRY_INTERVAL, 0)]) as c:
        assert c.connack.session_present, "the refused CONNECT must not have touched the session"


@pytest.mark.tern_config("auth.allow_anonymous")
@pytest.mark.parametrize("with_user", [False, True], ids=["anonymous", "user"])
def test_connect_refused_when_anonymous_off_v5(auth_broker_factory, uid, with_user):
    """v5 [MQTT-3.1.4-2] [MQTT-3.2.2-6] [MQTT-3.2.2-8] [MQTT-4.13.2-1]: with anonymous access
    off and no credentials the server knows, authentication fails: the CONNACK refuses (Tern
    documents 0x87 Not authorized without a user name and 0x86 Bad User Name or Password with
    one; the specification allows either) with Session Present 0, and the connection closes."""
    b = auth_broker_factory({"auth": {"allow_anonymous": False}})
    creds = {"username": "nobody", "password": b"wrong"} if with_user else {}
    with raw(b) as c:
        c.send(r.connect(uid, **creds))
        codes = (0x86, 0x87) if not IS_TERN else ((0x86,) if with_user else (0x87,))
        expect.connect_refused(c, *codes)


@pytest.mark.tern_config("auth.allow_anonymous")
@pytest.mark.parametrize("with_user", [False, True], ids=["anonymous", "user"])
def test_connect_refused_when_anonymous_off_v311(auth_broker_factory, uid, with_user):
    """v3.1.1 [MQTT-3.2.2-4] [MQTT-3.2.2-5]: with anonymous access off, a 3.1.1 client without
    valid credentials gets CONNACK return code 5 (not authorized) or 4 (bad user name or
    password) with Session Present 0, then a close, and nothing else, although it sent a
    PUBLISH right after the CONNECT."""
    b = auth_broker_factory({"auth": {"allow_anonymous": False}})
    creds = {"username": "nobody", "password": b"wrong"} if with_user else {}
    with raw(b, 4) as c:
        c.send(r.connect(uid, version=4, **creds) +
               r.publish(f"anon/{uid}", b"leak", retain=True, version=4))
        packets, closed = c.read_until_closed(expect.CLOSE_TIMEOUT)
        assert closed and [p.type for p in packets] == [r.CONNACK], packets
        codes = (4, 5) if not IS_TERN else ((4,) if with_user else (5,))
        assert packets[0].reason in codes and not packets[0].session_present, packets


def test_connect_refused_client_id_ignores_later_packets_v311(broker, uid):
    """v3.1.1 [MQTT-3.1.3-9] [MQTT-3.1.4-5] [MQTT-3.2.2-4] [MQTT-3.2.2-5]: a ClientId the server
    rejects (empty with CleanSession 0) gets CONNACK 0x02 and a close; the SUBSCRIBE and the
    retained PUBLISH sent behind the CONNECT are not processed."""
    topic = f"rej/{uid}"
    with raw(broker, 4) as c:
        c.send(r.connect("", version=4, clean=False)
               + r.subscribe(1, [(topic, 1)], version=4)
               + r.publish(topic, b"leak", qos=1, packet_id=2, retain=True, version=4))
        expect.v3_connack_refused(c, 0x02)
    checker = connect_v311(broker.port, uid + "c")
    pub = connect_v311(broker.port, uid + "p")
    checker.subscribe(topic, qos=1)
    sync(pub, checker, topic, qos=1)
    assert [m.payload for m in checker.received(topic)][0].startswith(b"sync-"), (
        f"the refused connection's retained PUBLISH was stored: {checker.received(topic)}")


# -- Clean Start --------------------------------------------------------------------------------

@pytest.mark.parametrize("version", BOTH)
def test_clean_start_processing(broker, uid, version):
    """v5 [MQTT-3.1.4-4] [MQTT-3.1.3-2], v3.1.1 [MQTT-3.1.4-3] [MQTT-3.1.3-2]: the server does
    the Clean Start / CleanSession processing for the Client Identifier: 0 resumes that
    client's session (Session Present 1, queued message delivered), another Client
    Identifier gets no session, and 1 throws the session away (Session Present 0, queue gone)."""
    topic = f"cs/{uid}"
    keep = {"props": [(r.SESSION_EXPIRY_INTERVAL, 60)]} if version == 5 else {}
    with connected(broker.port, uid, version, clean=version == 5, **keep) as c:
        c.subscribe(topic, 1)
    pub = connect_v5(broker.port, uid + "p")
    pub.publish(topic, b"one", qos=1)
    with connected(broker.port, uid + "x", version, clean=False, **keep) as other:
        assert not other.connack.session_present, "another Client Identifier found a session"
    with connected(broker.port, uid, version, clean=False, **keep) as c:
        assert c.connack.session_present, c.connack
        got = c.expect(r.PUBLISH)
        assert got.payload == b"one", got
        c.send(r.ack(r.PUBACK, got.packet_id, version=version))
        expect.still_open(c)
    pub.publish(topic, b"two", qos=1)
    with connected(broker.port, uid, version, clean=True, **keep) as c:
        assert not c.connack.session_present, c.connack
        assert c.quiet_for(0.3) == [], "messages of the discarded session were delivered"


# -- keep alive, topic aliases -------------------------------------------------------------------

@pytest.mark.slow_timer
@xfail_on_mosquitto("[MQTT-3.1.2-22]", "it checks keep-alive expiry only every few seconds, so "
                    "a 1 s keep alive is enforced late", strict=False)
def test_keep_alive_client_value_applies_without_server_keep_alive(broker, uid):
    """v5 [MQTT-3.2.2-22] [MQTT-3.1.2-22]: a CONNACK without Server Keep Alive means the
    client's Keep Alive (1 s) applies: the server closes a silent connection after 1.5 s,
    not before 1 s."""
    with raw(broker) as c:
        c.send(r.connect(uid, keepalive=1))
        connack = c.expect(r.CONNACK)
        assert connack.reason == 0 and connack.prop(r.SERVER_KEEP_ALIVE) is None, connack
        started = time.monotonic()
        packets, closed = c.read_until_closed(3.0)
        elapsed = time.monotonic() - started
        assert closed, f"silent connection with Keep Alive 1 still open after 3 s: {packets}"
        assert elapsed >= 0.95, f"closed after {elapsed:.2f} s, before the Keep Alive ran out"
        assert elapsed <= 2.5, f"closed only after {elapsed:.2f} s"
        assert all(p.type == r.DISCONNECT for p in packets), packets


@pytest.mark.tern_config("limits.topic_alias_maximum")
def test_topic_alias_refused_when_server_maximum_is_0(broker_factory, uid):
    """v5 [MQTT-3.2.2-18] [MQTT-3.3.2-8]: with topic aliases off the CONNACK has no Topic Alias
    Maximum (or 0), so the client may send no Topic Alias; one that arrives is refused with
    DISCONNECT 0x94 (Topic Alias invalid), and the server closes."""
    b = broker_factory({"limits": {"topic_alias_maximum": 0}})
    with connected(b.port, uid) as c:
        assert c.connack.prop(r.TOPIC_ALIAS_MAXIMUM, 0) == 0, c.connack
        c.send(r.publish(f"ta/{uid}", b"x", props=[(r.TOPIC_ALIAS, 1)]))
        expect.disconnected(c, 0x94)


# -- DISCONNECT ends the connection -------------------------------------------------------------

def test_server_disconnect_then_server_closes(broker, uid):
    """v5 [MQTT-3.14.4-2] [MQTT-4.13.2-1] [MQTT-3.14.2-1]: after a Protocol Error (a second
    CONNECT) the server sends DISCONNECT with a reason code of 0x80 or more and then closes
    the connection itself, while the client keeps its side open."""
    with connected(broker.port, uid) as c:
        c.send(r.connect(uid))
        packets, closed = c.read_until_closed(expect.CLOSE_TIMEOUT)
        assert closed, f"server did not close after its DISCONNECT: {packets}"
        disconnects = [p for p in packets if p.type == r.DISCONNECT]
        if IS_TERN or disconnects:
            assert len(disconnects) == 1 and packets[-1] is disconnects[0], packets
            d = disconnects[0]
            assert d.reason >= 0x80 and d.reason in SERVER_DISCONNECT_CODES, d
            check_v5_layout(d)


@xfail_on_mosquitto("[MQTT-3.1.2-8]", "it publishes the will after DISCONNECT 0x04 only, not "
                    "after other non-zero reason codes")
def test_client_disconnect_with_error_code_closes_and_publishes_will(broker, uid):
    """v5 [MQTT-4.13.2-1] [MQTT-3.14.4-2] [MQTT-3.1.2-8]: a client DISCONNECT with reason 0x80
    (Unspecified error) means the connection is closed: the server sends nothing back and
    closes, and, as the reason is not 0x00, publishes the will."""
    topic = f"dcw/{uid}"
    watcher = connect_v5(broker.port, uid + "w")
    watcher.subscribe(topic, qos=1)
    with connected(broker.port, uid, will=r.Will(topic, b"gone", qos=1)) as c:
        c.send(r.disconnect(0x80))
        packets, closed = c.read_until_closed(expect.CLOSE_TIMEOUT)
        assert closed and packets == [], (closed, packets)
    assert watcher.wait_message(topic).payload == b"gone"
