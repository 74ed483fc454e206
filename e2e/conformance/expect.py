"""Which broker is under test, and what a test expects when the server refuses input.

MQTT 5 (§4.13) says a server that detects a Malformed Packet or Protocol Error
MUST close the connection [MQTT-4.13.1-1]; it MAY send a CONNACK (for an error
in CONNECT) and SHOULD send a DISCONNECT (otherwise) with the reason code
first. Tern promises that reason code every time (DESIGN.md §2), so against
Tern the packet is required; against the reference broker only the close is,
and a reason code, if one is sent, must still be the right one.
"""

from __future__ import annotations

import os

import pytest

import rawmqtt as r

BROKER_KIND = os.environ.get("TERN_TEST_BROKER", "tern").strip().lower()
if BROKER_KIND not in ("tern", "mosquitto"):
    raise pytest.UsageError(f"TERN_TEST_BROKER must be 'tern' or 'mosquitto', not {BROKER_KIND!r}")
IS_MOSQUITTO = BROKER_KIND == "mosquitto"
IS_TERN = BROKER_KIND == "tern"
STRICT_REASON_CODES = IS_TERN

CLOSE_TIMEOUT = 2.0


def xfail_on_mosquitto(statement: str, why: str, strict: bool = True):
    """Mark a test whose failure on mosquitto is mosquitto's deviation from `statement`.

    `strict=False` only where mosquitto's behaviour is timing-dependent, so that the
    test sometimes passes against it."""
    return pytest.mark.xfail(IS_MOSQUITTO, strict=strict,
                             reason=f"mosquitto 2.0.11 deviates from {statement}: {why}")


def beyond_spec_on_mosquitto(why: str):
    """Skip on mosquitto a check of something Tern promises but the specification leaves
    optional (so the reference broker's different choice is not a deviation)."""
    return pytest.mark.skipif(IS_MOSQUITTO, reason=f"optional in the specification; Tern "
                                                   f"promises it, mosquitto does not: {why}")


def _read_close(raw: r.RawClient, timeout: float) -> list:
    packets, closed = raw.read_until_closed(timeout)
    assert closed, f"server did not close the connection within {timeout}s; it sent {packets}"
    return packets


def closed_silently(raw: r.RawClient, timeout: float = CLOSE_TIMEOUT) -> None:
    """The server closes the connection without sending anything (v3 errors; errors before
    any CONNACK, when a v5 server may not send DISCONNECT [MQTT-3.14.0-1])."""
    packets = _read_close(raw, timeout)
    assert packets == [], f"expected a silent close, got {packets}"


def _codes(codes) -> str:
    return " or ".join(f"0x{c:02x}" for c in codes)


def connect_refused(raw: r.RawClient, *codes: int, timeout: float = CLOSE_TIMEOUT) -> None:
    """CONNECT refused: a CONNACK with one of `codes` (required against Tern), then close.

    `codes` are the reason codes the specification allows for the fault, the
    most specific first."""
    packets = _read_close(raw, timeout)
    assert all(p.type == r.CONNACK for p in packets), f"only a CONNACK may precede the close: {packets}"
    if not packets:
        assert not STRICT_REASON_CODES, f"closed without CONNACK {_codes(codes)}"
        return
    assert len(packets) == 1, f"more than one CONNACK [MQTT-3.2.0-2]: {packets}"
    assert packets[0].reason in codes, (
        f"CONNACK reason 0x{packets[0].reason:02x}, expected {_codes(codes)}")
    assert not packets[0].session_present, "a refusing CONNACK must have Session Present 0"


def v3_connack_refused(raw: r.RawClient, return_code: int, timeout: float = CLOSE_TIMEOUT) -> None:
    """v3.x: CONNACK with `return_code` and Session Present 0, then close."""
    packets = _read_close(raw, timeout)
    assert [p.type for p in packets] == [r.CONNACK], f"expected one CONNACK, got {packets}"
    assert packets[0].reason == return_code, f"CONNACK {packets[0]!r}, expected rc {return_code}"
    assert not packets[0].session_present


def disconnected(raw: r.RawClient, *codes: int, timeout: float = CLOSE_TIMEOUT) -> list:
    """v5 after CONNACK: DISCONNECT with one of `codes` (required against Tern), then close.

    Returns the packets that arrived before the DISCONNECT."""
    packets = _read_close(raw, timeout)
    disconnects = [p for p in packets if p.type == r.DISCONNECT]
    if not disconnects:
        assert not STRICT_REASON_CODES, f"closed without DISCONNECT {_codes(codes)}; got {packets}"
        return packets
    assert packets[-1].type == r.DISCONNECT, f"packets after DISCONNECT [MQTT-3.14.4-1]: {packets}"
    got = disconnects[0].reason
    assert got in codes, f"DISCONNECT reason 0x{got:02x}, expected {_codes(codes)}"
    return packets[:-1]


def refused(raw: r.RawClient, version: int, *codes: int) -> None:
    """After CONNACK, a fault in a client packet: v5 DISCONNECT with one of `codes`
    then close; v3.x a close with nothing sent [MQTT-4.8.0-1 of 3.1.1]."""
    if version == 5:
        disconnected(raw, *codes)
    else:
        _read_close_v3(raw)


def _read_close_v3(raw: r.RawClient, timeout: float = CLOSE_TIMEOUT) -> None:
    packets = _read_close(raw, timeout)
    assert all(p.type == r.PUBLISH for p in packets), f"v3 close must send nothing: {packets}"


def still_open(raw: r.RawClient) -> None:
    """The connection is alive: a PINGREQ gets its PINGRESP [MQTT-3.12.4-1]."""
    raw.send(r.pingreq())
    raw.expect(r.PINGRESP, skip=(r.PUBLISH,))


def subscribe_refused(raw: r.RawClient, topic_filter, version: int = 5,
                      disconnect_codes: tuple = (0x81, 0x82, 0x8F)) -> None:
    """A SUBSCRIBE the server must not grant: a SUBACK failure code (0x80 and up), or a close
    (v5: DISCONNECT with one of `disconnect_codes` first, if any is sent)."""
    raw.send(r.subscribe(11, [(topic_filter, 0)], version=version))
    try:
        first = raw.recv(CLOSE_TIMEOUT)
    except r.Closed:
        assert not (STRICT_REASON_CODES and version == 5), (
            f"closed without DISCONNECT after SUBSCRIBE {topic_filter!r}")
        return
    except r.NoPacket:
        raise AssertionError(f"no answer to SUBSCRIBE {topic_filter!r}")
    if first.type == r.SUBACK:
        assert first.codes and first.codes[0] >= 0x80, f"{topic_filter!r} was granted: {first!r}"
        return
    assert first.type == r.DISCONNECT and first.reason in disconnect_codes, first
    _read_close(raw, CLOSE_TIMEOUT)
