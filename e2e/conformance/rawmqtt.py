"""Hand-built MQTT bytes and a raw-socket client for conformance tests.

This module owns the byte level: a tiny encoder for the packets the tests send,
a decoder for what a server sends back, and `RawClient`, which reads whole
packets with a deadline and tells "the server closed the connection" apart
from "a packet arrived".  It deliberately uses no MQTT library, so that the
tests can send exactly the malformed input a real client library refuses to.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

import clients

# Control packet types (MQTT 5.0 §2.1.2, same numbers in 3.1.1).
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15

PACKET_NAMES = {
    CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK",
    PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK", UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ", PINGRESP: "PINGRESP", DISCONNECT: "DISCONNECT", AUTH: "AUTH",
}

# Property identifiers (MQTT 5.0 §2.2.2.2) and their wire types.
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
PROPERTY_TYPES = {
    PAYLOAD_FORMAT_INDICATOR: _BYTE, MESSAGE_EXPIRY_INTERVAL: _U32, CONTENT_TYPE: _STR,
    RESPONSE_TOPIC: _STR, CORRELATION_DATA: _BIN, SUBSCRIPTION_IDENTIFIER: _VARINT,
    SESSION_EXPIRY_INTERVAL: _U32, ASSIGNED_CLIENT_IDENTIFIER: _STR, SERVER_KEEP_ALIVE: _U16,
    AUTHENTICATION_METHOD: _STR, AUTHENTICATION_DATA: _BIN, REQUEST_PROBLEM_INFORMATION: _BYTE,
    WILL_DELAY_INTERVAL: _U32, REQUEST_RESPONSE_INFORMATION: _BYTE, RESPONSE_INFORMATION: _STR,
    SERVER_REFERENCE: _STR, REASON_STRING: _STR, RECEIVE_MAXIMUM: _U16,
    TOPIC_ALIAS_MAXIMUM: _U16, TOPIC_ALIAS: _U16, MAXIMUM_QOS: _BYTE, RETAIN_AVAILABLE: _BYTE,
    USER_PROPERTY: _PAIR, MAXIMUM_PACKET_SIZE: _U32, WILDCARD_SUBSCRIPTION_AVAILABLE: _BYTE,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE: _BYTE, SHARED_SUBSCRIPTION_AVAILABLE: _BYTE,
}

# A property list is a sequence of (identifier, value) pairs, in wire order;
# duplicates are allowed on purpose so tests can send illegal packets.
Props = Sequence[tuple]
Text = Union[str, bytes]


# --------------------------------------------------------------------------
# Encoding primitives
# --------------------------------------------------------------------------

def varint(n: int) -> bytes:
    """Variable Byte Integer (§1.5.5), minimal encoding."""
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def u16(n: int) -> bytes:
    return struct.pack("!H", n)


def u32(n: int) -> bytes:
    return struct.pack("!I", n)


def utf8(s: Text) -> bytes:
    """A length-prefixed string; bytes are sent as given (for invalid UTF-8)."""
    raw = s if isinstance(s, bytes) else s.encode("utf-8")
    return u16(len(raw)) + raw


binary = utf8  # Binary Data has the same two-byte-length framing.


def encode_property(pid: int, value) -> bytes:
    kind = PROPERTY_TYPES[pid]
    out = varint(pid)
    if kind == _BYTE:
        return out + bytes([value])
    if kind == _U16:
        return out + u16(value)
    if kind == _U32:
        return out + u32(value)
    if kind == _VARINT:
        return out + varint(value)
    if kind in (_STR, _BIN):
        return out + utf8(value)
    key, val = value
    return out + utf8(key) + utf8(val)


def properties(props: Optional[Props]) -> bytes:
    """Property Length + properties; an empty list encodes as a zero length."""
    body = b"".join(encode_property(pid, v) for pid, v in (props or ()))
    return varint(len(body)) + body


def fixed(packet_type: int, flags: int, body: bytes) -> bytes:
    return bytes([(packet_type << 4) | (flags & 0x0F)]) + varint(len(body)) + body


# --------------------------------------------------------------------------
# Packet builders (client → server)
# --------------------------------------------------------------------------

@dataclass
class Will:
    topic: Text
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    props: Props = ()


def connect(client_id: Text = "raw", version: int = 5, clean: bool = True,
            keepalive: int = 60, props: Optional[Props] = None, will: Optional[Will] = None,
            username: Optional[Text] = None, password: Optional[bytes] = None,
            protocol_name: Optional[Text] = None, reserved_flag: bool = False,
            flags: Optional[int] = None) -> bytes:
    """CONNECT for version 3 (MQIsdp), 4 (3.1.1) or 5; `flags` overrides the flag byte."""
    if protocol_name is None:
        protocol_name = "MQIsdp" if version == 3 else "MQTT"
    f = 0
    if clean:
        f |= 0x02
    if will is not None:
        f |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if password is not None:
        f |= 0x40
    if username is not None:
        f |= 0x80
    if reserved_flag:
        f |= 0x01
    if flags is not None:
        f = flags
    body = utf8(protocol_name) + bytes([version, f]) + u16(keepalive)
    if version == 5:
        body += properties(props)
    body += utf8(client_id)
    if will is not None:
        if version == 5:
            body += properties(will.props)
        body += utf8(will.topic) + binary(will.payload)
    if username is not None:
        body += utf8(username)
    if password is not None:
        body += binary(password)
    return fixed(CONNECT, 0, body)


def publish(topic: Text, payload: bytes = b"", qos: int = 0, retain: bool = False,
            dup: bool = False, packet_id: Optional[int] = None, props: Optional[Props] = None,
            version: int = 5, flags: Optional[int] = None) -> bytes:
    f = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    if flags is not None:
        f = flags
    body = utf8(topic)
    if qos > 0 or packet_id is not None:
        body += u16(packet_id if packet_id is not None else 1)
    if version == 5:
        body += properties(props)
    return fixed(PUBLISH, f, body + payload)


def ack(packet_type: int, packet_id: int, reason: Optional[int] = None,
        props: Optional[Props] = None, version: int = 5) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP; reason code only sent for v5 when given."""
    flags = 0x02 if packet_type == PUBREL else 0
    body = u16(packet_id)
    if version == 5 and (reason is not None or props):
        body += bytes([reason or 0])
        if props:
            body += properties(props)
    return fixed(packet_type, flags, body)


def subscribe(packet_id: int, filters: Iterable[tuple], props: Optional[Props] = None,
              version: int = 5, flags: int = 0x02) -> bytes:
    """filters: (topic_filter, options_byte) pairs; options_byte is QoS in v3."""
    body = u16(packet_id)
    if version == 5:
        body += properties(props)
    for topic_filter, options in filters:
        body += utf8(topic_filter) + bytes([options])
    return fixed(SUBSCRIBE, flags, body)


def unsubscribe(packet_id: int, filters: Iterable[Text], props: Optional[Props] = None,
                version: int = 5, flags: int = 0x02) -> bytes:
    body = u16(packet_id)
    if version == 5:
        body += properties(props)
    for topic_filter in filters:
        body += utf8(topic_filter)
    return fixed(UNSUBSCRIBE, flags, body)


def pingreq() -> bytes:
    return fixed(PINGREQ, 0, b"")


def disconnect(reason: Optional[int] = None, props: Optional[Props] = None,
               version: int = 5) -> bytes:
    body = b""
    if version == 5 and (reason is not None or props):
        body = bytes([reason or 0]) + (properties(props) if props else b"")
    return fixed(DISCONNECT, 0, body)


def auth(reason: int = 0x18, props: Optional[Props] = None) -> bytes:
    return fixed(AUTH, 0, bytes([reason]) + properties(props))


def sub_options(qos: int = 0, no_local: bool = False, retain_as_published: bool = False,
                retain_handling: int = 0) -> int:
    """The v5 Subscription Options byte (§3.8.3.1)."""
    return qos | (0x04 if no_local else 0) | (0x08 if retain_as_published else 0) | (
        retain_handling << 4)


# --------------------------------------------------------------------------
# Decoding (server → client)
# --------------------------------------------------------------------------

class Malformed(Exception):
    """The server sent bytes this decoder cannot read."""


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Malformed(f"need {n} bytes at {self.pos}, have {self.remaining()}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("!H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("!I", self.take(4))[0]

    def varint(self) -> int:
        value, mult = 0, 1
        for _ in range(4):
            b = self.byte()
            value += (b & 0x7F) * mult
            if not b & 0x80:
                return value
            mult *= 128
        raise Malformed("variable byte integer longer than 4 bytes")

    def bin(self) -> bytes:
        return self.take(self.u16())

    def str(self) -> str:
        return self.bin().decode("utf-8")

    def props(self) -> list:
        end = self.varint() + self.pos
        out = []
        while self.pos < end:
            pid = self.varint()
            kind = PROPERTY_TYPES.get(pid)
            if kind is None:
                raise Malformed(f"unknown property 0x{pid:02x}")
            value = {
                _BYTE: self.byte, _U16: self.u16, _U32: self.u32, _VARINT: self.varint,
                _STR: self.str, _BIN: self.bin,
                _PAIR: lambda: (self.str(), self.str()),
            }[kind]()
            out.append((pid, value))
        return out


@dataclass
class Packet:
    """One whole packet read from the server, decoded as far as the version allows."""
    type: int
    flags: int
    body: bytes
    version: int = 5
    reason: Optional[int] = None
    props: list = field(default_factory=list)
    packet_id: Optional[int] = None
    session_present: Optional[bool] = None
    topic: Optional[str] = None
    payload: bytes = b""
    codes: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return PACKET_NAMES.get(self.type, f"type{self.type}")

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 0x03

    @property
    def retain(self) -> bool:
        return bool(self.flags & 0x01)

    @property
    def dup(self) -> bool:
        return bool(self.flags & 0x08)

    def prop(self, pid: int, default=None):
        for key, value in self.props:
            if key == pid:
                return value
        return default

    def prop_all(self, pid: int) -> list:
        return [value for key, value in self.props if key == pid]

    def __repr__(self) -> str:
        parts = [self.name]
        if self.reason is not None:
            parts.append(f"reason=0x{self.reason:02x}")
        if self.packet_id is not None:
            parts.append(f"id={self.packet_id}")
        if self.topic is not None:
            parts.append(f"topic={self.topic!r} qos={self.qos} retain={int(self.retain)}")
            parts.append(f"payload={self.payload[:40]!r}")
        if self.codes:
            parts.append("codes=" + ",".join(f"0x{c:02x}" for c in self.codes))
        if self.props:
            parts.append(f"props={self.props}")
        return "<" + " ".join(parts) + ">"


def decode(packet_type: int, flags: int, body: bytes, version: int = 5) -> Packet:
    pkt = Packet(packet_type, flags, body, version)
    r = _Reader(body)
    v5 = version == 5
    if packet_type == CONNACK:
        pkt.session_present = bool(r.byte() & 0x01)
        pkt.reason = r.byte()
        if v5 and r.remaining():
            pkt.props = r.props()
    elif packet_type == PUBLISH:
        pkt.topic = r.str()
        if pkt.qos:
            pkt.packet_id = r.u16()
        if v5:
            pkt.props = r.props()
        pkt.payload = r.take(r.remaining())
    elif packet_type in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        pkt.packet_id = r.u16()
        pkt.reason = 0
        if v5 and r.remaining():
            pkt.reason = r.byte()
            if r.remaining():
                pkt.props = r.props()
    elif packet_type in (SUBACK, UNSUBACK):
        pkt.packet_id = r.u16()
        if v5:
            pkt.props = r.props()
        pkt.codes = list(r.take(r.remaining()))
    elif packet_type in (DISCONNECT, AUTH):
        pkt.reason = 0
        if r.remaining():
            pkt.reason = r.byte()
            if r.remaining():
                pkt.props = r.props()
    return pkt


# --------------------------------------------------------------------------
# The raw client
# --------------------------------------------------------------------------

class Closed(Exception):
    """The server closed (or reset) the connection."""


class NoPacket(Exception):
    """Nothing arrived before the deadline."""


class RawClient:
    """A TCP connection to the broker that speaks bytes and reads whole packets."""

    def __init__(self, port: int, host: Optional[str] = None, version: int = 5,
                 timeout: float = 5.0):
        self.version = version
        self.default_timeout = timeout
        if host is None:
            host = clients.next_host(port)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = False

    # -- sending ----------------------------------------------------------
    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:  # the peer may already have gone
            raise Closed(str(exc)) from exc

    def send_quietly(self, data: bytes) -> None:
        """Send, ignoring a connection the server has already closed."""
        try:
            self.send(data)
        except Closed:
            pass

    # -- receiving --------------------------------------------------------
    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NoPacket()
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout as exc:
            raise NoPacket() from exc
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
            self.closed = True
            raise Closed(str(exc)) from exc
        if not chunk:
            self.closed = True
            raise Closed("EOF")
        self.buf += chunk

    def _split(self) -> Optional[tuple]:
        """A whole (type, flags, body) from the buffer, or None if more bytes are needed."""
        if len(self.buf) < 2:
            return None
        length, mult, i = 0, 1, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
            if i > 4:
                raise Malformed("server sent a remaining length over 4 bytes")
        if len(self.buf) < i + length:
            return None
        first = self.buf[0]
        body = self.buf[i:i + length]
        self.buf = self.buf[i + length:]
        return first >> 4, first & 0x0F, body

    def recv(self, timeout: Optional[float] = None) -> Packet:
        """The next whole packet; raises Closed or NoPacket."""
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        while True:
            whole = self._split()
            if whole is not None:
                return decode(*whole, version=self.version)
            if self.closed:
                raise Closed("EOF")
            self._fill(deadline)

    def expect(self, packet_type: int, timeout: Optional[float] = None,
               skip: Sequence[int] = ()) -> Packet:
        """The next packet, asserted to be of `packet_type` (types in `skip` are ignored)."""
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        while True:
            try:
                pkt = self.recv(max(0.0, deadline - time.monotonic()))
            except Closed:
                raise AssertionError(
                    f"expected {PACKET_NAMES[packet_type]}, but the server closed the connection")
            except NoPacket:
                raise AssertionError(
                    f"expected {PACKET_NAMES[packet_type]}, but nothing arrived in time")
            if pkt.type in skip:
                continue
            assert pkt.type == packet_type, f"expected {PACKET_NAMES[packet_type]}, got {pkt!r}"
            return pkt

    def read_until_closed(self, timeout: float = 5.0) -> tuple:
        """(packets received, closed?) — reads until EOF or the deadline."""
        deadline = time.monotonic() + timeout
        packets = []
        while True:
            try:
                packets.append(self.recv(max(0.0, deadline - time.monotonic())))
            except Closed:
                return packets, True
            except NoPacket:
                return packets, False

    def quiet_for(self, seconds: float) -> list:
        """Packets received within `seconds` (the connection must stay open)."""
        packets, closed = self.read_until_closed(seconds)
        assert not closed, f"server closed the connection (after {packets})"
        return packets

    # -- conveniences -----------------------------------------------------
    def handshake(self, client_id: Text = "raw", **kwargs) -> Packet:
        """Send CONNECT and return the CONNACK, asserting it is a success."""
        self.send(connect(client_id, version=self.version, **kwargs))
        pkt = self.expect(CONNACK)
        assert pkt.reason == 0, f"CONNECT refused: {pkt!r}"
        return pkt

    def subscribe(self, topic_filter: Text, options: int = 0, packet_id: int = 1,
                  props: Optional[Props] = None) -> Packet:
        self.send(subscribe(packet_id, [(topic_filter, options)], props, version=self.version))
        pkt = self.expect(SUBACK)
        assert pkt.packet_id == packet_id
        return pkt

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
