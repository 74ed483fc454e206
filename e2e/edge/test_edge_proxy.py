"""PROXY protocol v1 and v2 on listeners with `proxy_protocol: true`: the address a load balancer
reports reaches the admin API (`remote_addr`) and the `$SYS/broker/clients/<id>/connected` notice,
on plain TCP and under TLS; a connection without a valid header is closed. Headers are built by
hand from the PROXY protocol specification (haproxy's proxy-protocol.txt)."""

from __future__ import annotations

import ipaddress
import json
import socket
import struct

import pytest

from .helpers import (HOST, WAIT, ProxiedRawClient, TlsRawClient, client_context, clients, r,
                      tls_listener)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1_header(src: str, dst: str, sport: int, dport: int) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2_header(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"",
              command: int = 0x1) -> bytes:
    """A v2 header: version 2, `command` (1 PROXY, 0 LOCAL), TCP over IPv4 or IPv6, then TLVs."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x1 if s.version == 4 else 0x2
    body = s.packed + d.packed + struct.pack("!HH", sport, dport) + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, (family << 4) | 0x1]) + struct.pack(
        "!H", len(body)) + body


def _proxy_broker(edge_broker, pki=None):
    listeners = [{"name": "lb", "protocol": "tcp", "proxy_protocol": True}]
    ca = None
    if pki is not None:
        ca = pki()
        entry = tls_listener("lb-tls", "tls", ca.server())
        entry["proxy_protocol"] = True
        listeners.append(entry)
    return edge_broker(listeners), ca


def _observer(port: int) -> clients.Client:
    """A plain-TCP client subscribed to the connected notices."""
    watcher = clients.connect_v5(port, "notice-watcher")
    assert watcher.subscribe("$SYS/broker/clients/+/connected") == [0]
    return watcher


def _notice(watcher: clients.Client, client_id: str) -> dict:
    topic = f"$SYS/broker/clients/{client_id}/connected"
    return json.loads(watcher.wait_message(topic).payload)


def _listed(broker, client_id: str) -> dict:
    body = broker.admin().ok("GET", "/clients")
    items = [item for item in body["items"] if item["client_id"] == client_id]
    assert items, body
    return items[0]


# An NLB-style TLV (type 0xEA, AWS VPC endpoint id) and a NOOP TLV after the addresses; they
# are part of the announced length and must be skipped.
_TLVS = b"\xea\x00\x05\x01vpce" + b"\x04\x00\x02\x00\x00"

CASES = {
    "v1-tcp4": (v1_header("203.0.113.7", "198.51.100.1", 56324, 1883), "203.0.113.7:56324"),
    "v1-tcp6": (v1_header("2001:db8::7", "2001:db8::1", 40001, 1883), "[2001:db8::7]:40001"),
    "v2-ipv4": (v2_header("203.0.113.9", "198.51.100.1", 61000, 1883), "203.0.113.9:61000"),
    "v2-ipv4-tlvs": (v2_header("192.0.2.44", "198.51.100.1", 1234, 1883, _TLVS),
                     "192.0.2.44:1234"),
    "v2-ipv6": (v2_header("2001:db8::9", "2001:db8::1", 443, 1883), "[2001:db8::9]:443"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_balancers_client_address_is_the_clients_address(edge_broker, case):
    """`proxy_protocol: true` on a TCP listener: after a PROXY header ({case}), CONNECT gets
    CONNACK 0, and the address the header names is the client's `remote_addr` in
    `GET /api/v1/clients` and in its `$SYS/broker/clients/<id>/connected` notice (with the
    listener's name); the MQTT session works (SUBSCRIBE, PUBLISH to self)."""
    header, expected = CASES[case]
    b, _ = _proxy_broker(edge_broker)
    watcher = _observer(b.port)
    client_id = f"proxied-{case}"
    with ProxiedRawClient(b.ports["lb"], header) as c:
        c.handshake(client_id)
        notice = _notice(watcher, client_id)
        assert notice["remote_addr"] == expected, notice
        assert notice["listener"] == "lb" and notice["event"] == "connected", notice
        assert _listed(b, client_id)["remote_addr"] == expected
        assert c.subscribe("px/t", r.sub_options(qos=1)).codes == [1]
        c.send(r.publish("px/t", b"through the balancer", qos=1, packet_id=5))
        got = [c.recv(WAIT), c.recv(WAIT)]
        assert sorted(p.type for p in got) == [r.PUBLISH, r.PUBACK], got


def test_v2_local_command_keeps_the_real_peer_address(edge_broker):
    """A v2 header with the LOCAL command (a balancer's own health check) carries no client
    address: the connection is served, and its `remote_addr` is the real TCP peer (127.0.0.1)."""
    b, _ = _proxy_broker(edge_broker)
    header = v2_header("203.0.113.50", "198.51.100.1", 9, 1883, command=0x0)
    with ProxiedRawClient(b.ports["lb"], header) as c:
        c.handshake("proxied-local")
        local_port = c.sock.getsockname()[1]
        assert _listed(b, "proxied-local")["remote_addr"] == f"{HOST}:{local_port}"


def test_proxy_header_before_tls(edge_broker, pki):
    """PROXY protocol on a `tls` listener: the header comes in clear before the ClientHello (as
    a TCP-mode balancer sends it); the TLS handshake then succeeds with the test CA, and the
    header's address is the client's `remote_addr` (admin API and `$SYS` notice)."""
    b, ca = _proxy_broker(edge_broker, pki)
    watcher = _observer(b.port)
    header = v2_header("198.18.0.77", "198.51.100.1", 50123, 8883)
    with TlsRawClient(b.ports["lb-tls"], client_context(ca), prefix=header) as c:
        c.handshake("proxied-tls")
        assert _notice(watcher, "proxied-tls")["remote_addr"] == "198.18.0.77:50123"
        listed = _listed(b, "proxied-tls")
        assert listed["remote_addr"] == "198.18.0.77:50123" and listed["listener"] == "lb-tls"


@pytest.mark.parametrize("prefix", [b"", b"PROXY FOO 1.2.3.4\r\n", b"GET / HTTP/1.1\r\n\r\n",
                                    V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12)],
                         ids=["no-header", "bad-v1", "http", "bad-v2-version"])
def test_a_connection_without_a_valid_header_is_closed(edge_broker, prefix):
    """On a `proxy_protocol: true` listener, a connection that does not start with a valid PROXY
    header ({prefix!r}), followed by CONNECT, is closed without a CONNACK, and no client is
    registered; the plain listener beside it is unaffected."""
    b, _ = _proxy_broker(edge_broker)
    with r.RawClient(b.ports["lb"]) as c:
        c.send_quietly(prefix + r.connect("no-proxy-header"))
        packets, closed = c.read_until_closed(WAIT)
    assert closed and packets == [], packets
    assert b.admin().client("no-proxy-header") is None
    clients.connect_v5(b.port, "plain-still-works")


def test_a_header_split_across_segments_is_read_whole(edge_broker):
    """The PROXY header is read byte-exactly even when it arrives in small pieces, and the CONNECT
    that follows in the same segment as its last byte is not lost."""
    b, _ = _proxy_broker(edge_broker)
    header = v1_header("203.0.113.99", "198.51.100.1", 3333, 1883)
    connect = r.connect("proxied-split")
    with r.RawClient(b.ports["lb"]) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.send(header[:3])
        c.send(header[3:20])
        c.send(header[20:] + connect)
        assert c.expect(r.CONNACK).reason == 0
        assert _listed(b, "proxied-split")["remote_addr"] == "203.0.113.99:3333"


def test_proxy_header_before_a_websocket_upgrade(edge_broker):
    """PROXY protocol on a `ws` listener: the header precedes the HTTP upgrade; the WebSocket
    session then works and the header's address is the client's `remote_addr`."""
    from .helpers import WsRawClient

    b = edge_broker([{"name": "lb-ws", "protocol": "ws", "proxy_protocol": True}])
    sock = socket.create_connection((HOST, b.ports["lb-ws"]), timeout=WAIT)
    sock.sendall(v1_header("203.0.113.21", "198.51.100.1", 4242, 80))
    with WsRawClient(b.ports["lb-ws"], sock=sock) as c:
        assert c.status == 101, c.headers
        c.handshake("proxied-ws")
        assert _listed(b, "proxied-ws")["remote_addr"] == "203.0.113.21:4242"


@pytest.mark.parametrize("kind", ["proxy", "tls"])
def test_a_silent_connection_is_closed_after_the_connect_timeout(edge_broker, pki, kind):
    """docs/configuration.md `connect_timeout_secs`: a connection that never completes the PROXY
    header (or, on a `tls` listener, never sends a ClientHello) is closed once the timeout (1 s
    here) has passed — the transport handshakes run under it."""
    listeners = [{"name": "lb", "protocol": "tcp", "proxy_protocol": True}]
    if kind == "tls":
        listeners = [tls_listener("lb", "tls", pki().server())]
    b = edge_broker(listeners, {"limits": {"connect_timeout_secs": 1}})
    with socket.create_connection((HOST, b.ports["lb"]), timeout=WAIT) as s:
        if kind == "proxy":
            s.sendall(b"PROXY TCP4 203.0.113.7")  # an unfinished header
        s.settimeout(WAIT)
        try:
            assert s.recv(1024) == b""
        except ConnectionResetError:
            pass
