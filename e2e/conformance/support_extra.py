"""Helpers shared by the second wave of conformance tests (test_connack_rules.py,
test_flow_control.py, test_packet_size.py, …): reason-code tables, wire sizes, strict
layout checks of what the server sends, raw-client conveniences, and a broker factory
that also maps ``auth.allow_anonymous`` onto mosquitto.conf.

Nothing here cites a statement: citations live in the tests (scripts/conformance.py reads
only test functions).
"""

from __future__ import annotations

import time
from typing import Optional

import pytest

import conftest
import rawmqtt as r
from expect import IS_MOSQUITTO

# -- MQTT 5 reason codes each packet may carry (tables of §3.2.2.2, §3.4.2.1, …) --------------

CONNACK_CODES = frozenset({0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
                           0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F})
PUBACK_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
PUBREC_CODES = PUBACK_CODES
PUBREL_CODES = frozenset({0x00, 0x92})
PUBCOMP_CODES = PUBREL_CODES
SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1,
                          0xA2})
UNSUBACK_CODES = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
SERVER_DISCONNECT_CODES = frozenset({0x00, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D,
                                     0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98,
                                     0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
                                     0xA2})
V311_SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80})
ACK_CODES = {r.PUBACK: PUBACK_CODES, r.PUBREC: PUBREC_CODES, r.PUBREL: PUBREL_CODES,
             r.PUBCOMP: PUBCOMP_CODES}

BOTH = [pytest.param(5, id="v5"), pytest.param(4, id="v311")]


# -- sizes and layouts ------------------------------------------------------------------------

def wire_size(pkt: r.Packet) -> int:
    """Bytes the packet took on the wire: fixed header byte, Remaining Length, body."""
    return 1 + len(r.varint(len(pkt.body))) + len(pkt.body)


def _props_end(reader) -> None:
    """Read a Property Length and the properties it announces (raises Malformed otherwise)."""
    reader.props()


def check_v5_layout(pkt: r.Packet, filters: Optional[int] = None) -> None:
    """Assert the v5 packet has every field its type requires, the Property Length included
    where it may not be left out [MQTT-2.2.2-1 is cited by the callers]."""
    rd = r._Reader(pkt.body)
    if pkt.type == r.CONNACK:
        rd.take(2)
        assert rd.remaining(), f"CONNACK without Property Length: {pkt.body!r}"
        _props_end(rd)
        assert rd.remaining() == 0, f"bytes after CONNACK properties: {pkt.body!r}"
    elif pkt.type in (r.SUBACK, r.UNSUBACK):
        rd.take(2)
        _props_end(rd)
        if filters is not None:
            assert rd.remaining() == filters, (
                f"{pkt.name} payload has {rd.remaining()} codes, expected {filters}: {pkt.body!r}")
    elif pkt.type in (r.PUBACK, r.PUBREC, r.PUBREL, r.PUBCOMP):
        # §3.4.2.1: Reason Code and Property Length may be omitted (Remaining Length 2 or 3).
        assert len(pkt.body) >= 2, pkt
        if len(pkt.body) >= 4:
            rd.take(3)
            _props_end(rd)
            assert rd.remaining() == 0, f"bytes after {pkt.name} properties: {pkt.body!r}"
    elif pkt.type == r.DISCONNECT:
        if len(pkt.body) >= 2:
            rd.take(1)
            _props_end(rd)
            assert rd.remaining() == 0, f"bytes after DISCONNECT properties: {pkt.body!r}"


def publish_body(topic: str, payload: bytes, version: int, packet_id: Optional[int] = None,
                 props: bytes = b"\x00") -> bytes:
    """The exact body of a PUBLISH that carries no properties (v5: Property Length 0)."""
    body = r.utf8(topic)
    if packet_id is not None:
        body += r.u16(packet_id)
    if version == 5:
        body += props
    return body + payload


# -- raw-client conveniences -------------------------------------------------------------------

def connected(port: int, client_id: str, version: int = 5, **kw) -> r.RawClient:
    """A raw client past a successful handshake; the CONNACK is kept as `.connack`."""
    c = r.RawClient(port, version=version)
    c.connack = c.handshake(client_id, **kw)
    return c


def read_publishes(c: r.RawClient, count: int, timeout: float = 5.0) -> list:
    """The next `count` packets, each asserted to be a PUBLISH."""
    deadline = time.monotonic() + timeout
    out = []
    while len(out) < count:
        out.append(c.expect(r.PUBLISH, timeout=max(0.0, deadline - time.monotonic())))
    return out


def ping_barrier(c: r.RawClient, timeout: float = 5.0) -> list:
    """Send PINGREQ and return every packet that arrived before its PINGRESP: once the server
    has answered, it has handled everything this client sent before the PINGREQ."""
    c.send(r.pingreq())
    deadline = time.monotonic() + timeout
    before = []
    while True:
        try:
            pkt = c.recv(max(0.0, deadline - time.monotonic()))
        except (r.Closed, r.NoPacket) as exc:
            raise AssertionError(f"no PINGRESP (got {before}): {exc!r}") from exc
        if pkt.type == r.PINGRESP:
            return before
        before.append(pkt)


def complete_qos2_as_receiver(c: r.RawClient, pub: r.Packet) -> None:
    """Answer a QoS 2 PUBLISH from the server: PUBREC, expect its PUBREL, PUBCOMP."""
    c.send(r.ack(r.PUBREC, pub.packet_id, version=c.version))
    rel = c.expect(r.PUBREL)
    assert rel.packet_id == pub.packet_id, rel
    c.send(r.ack(r.PUBCOMP, pub.packet_id, version=c.version))


def publish_and_complete(c: r.RawClient, topic: str, payload: bytes, qos: int, packet_id: int,
                         **kw) -> r.Packet:
    """Publish from a raw client and finish the QoS flow; returns the PUBACK or PUBCOMP."""
    c.send(r.publish(topic, payload, qos=qos, packet_id=packet_id if qos else None,
                     version=c.version, **kw))
    if qos == 1:
        ack = c.expect(r.PUBACK)
        assert ack.packet_id == packet_id, ack
        return ack
    if qos == 2:
        rec = c.expect(r.PUBREC)
        assert rec.packet_id == packet_id, rec
        c.send(r.ack(r.PUBREL, packet_id, version=c.version))
        comp = c.expect(r.PUBCOMP)
        assert comp.packet_id == packet_id, comp
        return comp
    return None


# -- a broker factory that also speaks auth.allow_anonymous to mosquitto -----------------------

class Broker(conftest.Broker):
    """The suite's broker, plus `auth.allow_anonymous` for mosquitto (its own option)."""

    def _mosquitto_command(self) -> list:
        auth = dict(self.extra.get("auth") or {})
        allow = auth.pop("allow_anonymous", None)
        if auth:
            pytest.skip(f"mosquitto has no setting equivalent to Tern's auth.{next(iter(auth))}")
        saved = self.extra
        self.extra = {k: v for k, v in saved.items() if k != "auth"}
        try:
            command = super()._mosquitto_command()
        finally:
            self.extra = saved
        if allow is not None:
            path = command[-1]
            with open(path) as f:
                text = f.read()
            with open(path, "w") as f:
                f.write(text.replace("allow_anonymous true",
                                     f"allow_anonymous {str(bool(allow)).lower()}"))
        return command


@pytest.fixture
def auth_broker_factory(tmp_path):
    """Like `broker_factory`, but `auth.allow_anonymous` also works against mosquitto."""
    started = []

    def start(config: Optional[dict] = None) -> Broker:
        b = Broker(tmp_path, f"abroker{len(started)}", config).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def mosquitto_only(reason: str):
    """Skip on mosquitto with a printed reason (no equivalent setting or feature)."""
    return pytest.mark.skipif(IS_MOSQUITTO, reason=reason)
