"""paho-mqtt clients wrapped so a test reads like the scenario it checks.

`connect_v5`, `connect_v311` and `connect_v31` return a connected `Client`
whose network loop runs in paho's own thread (with automatic reconnect turned
off, so a server-side close stays closed).  Every received message is recorded
as a plain `Received`; waiting is always on a condition with a deadline.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 5.0

# Where new connections go. Against a single broker, always HOST; against a cluster
# (TERN_TEST_CLUSTER), the harness lists every node's address under the cluster's port, and each
# new connection to that port goes to the next node, so that a test's clients are spread over the
# nodes.
_hosts: dict = {}
_turns: dict = {}
_hosts_lock = threading.Lock()


def set_hosts(port: int, hosts: Optional[list]) -> None:
    """The addresses new connections to `port` go to, in turn (None: HOST again)."""
    with _hosts_lock:
        if hosts:
            _hosts[port] = list(hosts)
            _turns[port] = 0
        else:
            _hosts.pop(port, None)
            _turns.pop(port, None)


def next_host(port: int) -> str:
    """The address the next new connection to `port` goes to."""
    with _hosts_lock:
        hosts = _hosts.get(port)
        if not hosts:
            return HOST
        turn = _turns[port]
        _turns[port] = turn + 1
        return hosts[turn % len(hosts)]


def wait_for(predicate: Callable[[], object], timeout: float = DEFAULT_TIMEOUT,
             interval: float = 0.01, message: str = "condition") -> object:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@dataclass
class Received:
    """One application message as the subscriber saw it."""
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    props: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")


@dataclass
class WillSpec:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    props: Optional[dict] = None  # v5 will properties by paho name, e.g. WillDelayInterval


def make_props(packet_type: int, values: dict) -> Optional[Properties]:
    """paho Properties from {PahoName: value}; None when there is nothing to send."""
    if not values:
        return None
    props = Properties(packet_type)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def props_to_dict(props: Optional[Properties]) -> dict:
    if props is None:
        return {}
    out = {}
    for name in props.names:
        key = name.replace(" ", "")
        if hasattr(props, key):
            out[key] = getattr(props, key)
    return out


class Client:
    """A paho client with recorded messages, SUBACKs, CONNACK and DISCONNECT."""

    def __init__(self, client_id: str, protocol: int, clean_session: Optional[bool] = None):
        kwargs = dict(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                      client_id=client_id, protocol=protocol, reconnect_on_failure=False)
        if protocol != mqtt.MQTTv5:
            kwargs["clean_session"] = clean_session
        self.client_id = client_id
        self.protocol = protocol
        self.mqtt = mqtt.Client(**kwargs)
        self.lock = threading.Lock()
        self.messages: list[Received] = []
        self.subacks: dict[int, list] = {}
        self.unsubacks: dict[int, list] = {}
        self.connack: Optional[tuple] = None  # (session_present, reason_code, props dict)
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.disconnect_reason = None
        self.disconnect_from_server = None
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_message = self._on_message
        self.mqtt.on_subscribe = self._on_subscribe
        self.mqtt.on_unsubscribe = self._on_unsubscribe
        self.mqtt.on_disconnect = self._on_disconnect

    # -- callbacks (paho's network thread) --------------------------------
    def _on_connect(self, _client, _userdata, flags, reason_code, properties):
        self.connack = (flags.session_present, reason_code, props_to_dict(properties))
        if not reason_code.is_failure:
            self.connected.set()

    def _on_message(self, _client, _userdata, msg):
        received = Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                            bool(msg.dup), props_to_dict(getattr(msg, "properties", None)))
        with self.lock:
            self.messages.append(received)

    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _properties):
        with self.lock:
            self.subacks[mid] = [int(getattr(rc, "value", rc)) for rc in reason_codes]

    def _on_unsubscribe(self, _client, _userdata, mid, reason_codes, _properties):
        with self.lock:
            self.unsubacks[mid] = [int(getattr(rc, "value", rc)) for rc in reason_codes]

    def _on_disconnect(self, _client, _userdata, flags, reason_code, _properties):
        self.disconnect_reason = int(getattr(reason_code, "value", reason_code))
        self.disconnect_from_server = flags.is_disconnect_packet_from_server
        self.disconnected.set()

    # -- connecting --------------------------------------------------------
    def start(self, port: int, keepalive: int = 60, clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY,
              will: Optional[WillSpec] = None, props: Optional[dict] = None,
              expect_success: bool = True, timeout: float = DEFAULT_TIMEOUT) -> "Client":
        if will is not None:
            self.mqtt.will_set(will.topic, will.payload, will.qos, will.retain,
                               properties=make_props(PacketTypes.WILLMESSAGE, will.props or {}))
        kwargs = {}
        if self.protocol == mqtt.MQTTv5:
            kwargs["clean_start"] = clean_start
            kwargs["properties"] = make_props(PacketTypes.CONNECT, props or {})
        self.mqtt.connect(next_host(port), port, keepalive, **kwargs)
        self.mqtt.loop_start()
        if expect_success:
            if not self.connected.wait(timeout):
                raise AssertionError(f"{self.client_id}: no successful CONNACK: {self.connack}")
        else:
            wait_for(lambda: self.connack is not None or self.disconnected.is_set(), timeout,
                     message=f"{self.client_id}: CONNACK")
        return self

    @property
    def session_present(self) -> bool:
        return bool(self.connack[0])

    @property
    def connack_props(self) -> dict:
        return self.connack[2]

    # -- pub/sub -------------------------------------------------------------
    def subscribe(self, topic_filter: str, qos: int = 0, no_local: bool = False,
                  retain_as_published: bool = False, retain_handling: int = 0,
                  sub_id: Optional[int] = None, timeout: float = DEFAULT_TIMEOUT) -> list:
        """Subscribe and wait for the SUBACK; returns its reason codes (granted QoS)."""
        if self.protocol == mqtt.MQTTv5:
            options = SubscribeOptions(qos=qos, noLocal=no_local,
                                       retainAsPublished=retain_as_published,
                                       retainHandling=retain_handling)
            props = make_props(PacketTypes.SUBSCRIBE,
                               {"SubscriptionIdentifier": sub_id} if sub_id else {})
            rc, mid = self.mqtt.subscribe(topic_filter, options=options, properties=props)
        else:
            rc, mid = self.mqtt.subscribe(topic_filter, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        return wait_for(lambda: self.subacks.get(mid), timeout,
                        message=f"SUBACK for {topic_filter}")

    def unsubscribe(self, topic_filter: str, timeout: float = DEFAULT_TIMEOUT) -> list:
        rc, mid = self.mqtt.unsubscribe(topic_filter)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        return wait_for(lambda: mid in self.unsubacks and (self.unsubacks[mid] or [0]),
                        timeout, message=f"UNSUBACK for {topic_filter}")

    def publish(self, topic: str, payload=b"", qos: int = 0, retain: bool = False,
                wait: bool = True, timeout: float = DEFAULT_TIMEOUT, **props):
        """Publish; with `wait`, block until paho has finished the QoS flow."""
        if isinstance(payload, str):
            payload = payload.encode()
        info = self.mqtt.publish(topic, payload, qos, retain,
                                 properties=make_props(PacketTypes.PUBLISH, props))
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        if wait:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"publish to {topic} (QoS {qos}) not completed"
        return info

    # -- reading ---------------------------------------------------------------
    def received(self, topic: Optional[str] = None) -> list:
        with self.lock:
            return [m for m in self.messages if topic is None or m.topic == topic]

    def wait_messages(self, count: int, topic: Optional[str] = None,
                      timeout: float = DEFAULT_TIMEOUT) -> list:
        """The first `count` messages (on `topic`, if given) once they have all arrived."""
        wait_for(lambda: len(self.received(topic)) >= count, timeout,
                 message=f"{self.client_id}: {count} message(s) on {topic or 'any topic'} "
                         f"(have {self.received(topic)})")
        return self.received(topic)[:count]

    def wait_message(self, topic: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT):
        return self.wait_messages(1, topic, timeout)[0]

    # -- leaving ---------------------------------------------------------------
    def disconnect(self, reason_code: Optional[int] = None, props: Optional[dict] = None,
                   timeout: float = DEFAULT_TIMEOUT) -> None:
        """A normal DISCONNECT (v5: with `reason_code`, e.g. 0x04 to send the will)."""
        kwargs = {}
        if self.protocol == mqtt.MQTTv5:
            if reason_code is not None:
                kwargs["reasoncode"] = ReasonCode(PacketTypes.DISCONNECT, identifier=reason_code)
            kwargs["properties"] = make_props(PacketTypes.DISCONNECT, props or {})
        self.mqtt.disconnect(**kwargs)
        self.disconnected.wait(timeout)
        self.mqtt.loop_stop()

    def drop(self) -> None:
        """Close the TCP connection without DISCONNECT (an abnormal close for the server)."""
        sock = self.mqtt.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.disconnected.wait(DEFAULT_TIMEOUT)
        self.mqtt.loop_stop()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def stop(self) -> None:
        """Best-effort cleanup at the end of a test."""
        try:
            if not self.disconnected.is_set() and self.connected.is_set():
                self.mqtt.disconnect()
                self.disconnected.wait(1.0)
        except Exception:  # noqa: BLE001 - cleanup must not mask the test's own failure
            pass
        try:
            self.mqtt.loop_stop()
        except Exception:  # noqa: BLE001
            pass


# Every client made through these helpers is stopped by the `clients` fixture.
_OPEN: list = []


def _new(client_id: str, protocol: int, clean_session: Optional[bool] = None) -> Client:
    client = Client(client_id, protocol, clean_session)
    _OPEN.append(client)
    return client


def connect_v5(port: int, client_id: str, *, clean_start: bool = True, keepalive: int = 60,
               will: Optional[WillSpec] = None, expect_success: bool = True,
               **props) -> Client:
    """An MQTT 5 client; extra keywords are CONNECT properties by paho name
    (SessionExpiryInterval=60, ReceiveMaximum=..., TopicAliasMaximum=...)."""
    return _new(client_id, mqtt.MQTTv5).start(
        port, keepalive=keepalive, clean_start=clean_start, will=will, props=props,
        expect_success=expect_success)


def connect_v311(port: int, client_id: str, *, clean_session: bool = True,
                 keepalive: int = 60, will: Optional[WillSpec] = None,
                 expect_success: bool = True) -> Client:
    return _new(client_id, mqtt.MQTTv311, clean_session).start(
        port, keepalive=keepalive, will=will, expect_success=expect_success)


def connect_v31(port: int, client_id: str, *, clean_session: bool = True,
                keepalive: int = 60, will: Optional[WillSpec] = None) -> Client:
    return _new(client_id, mqtt.MQTTv31, clean_session).start(port, keepalive=keepalive,
                                                              will=will)


def close_all() -> None:
    while _OPEN:
        _OPEN.pop().stop()


def sync(publisher: Client, subscriber: Client, topic: str, qos: int = 0) -> None:
    """Publish a marker on `topic` and wait until `subscriber` has it.

    Messages from one publisher on one topic arrive in order, so once the marker
    is in, anything sent before it that was going to arrive has arrived: a test
    can then assert that something did *not* arrive without sleeping. Use the QoS of the
    messages sent before it: paho passes a QoS 2 message to the application only when PUBREL
    arrives, so a lower-QoS marker can overtake it inside the client."""
    marker = f"sync-{time.monotonic_ns()}".encode()
    publisher.publish(topic, marker, qos=qos)
    wait_for(lambda: any(m.payload == marker for m in subscriber.received(topic)),
             message=f"sync marker on {topic} at {subscriber.client_id}")


def app_messages(client: Client, topic: Optional[str] = None) -> list:
    """Received messages without the `sync` markers."""
    return [m for m in client.received(topic) if not m.payload.startswith(b"sync-")]
