"""WebSocket listeners (`ws`, `wss`): paho-mqtt's websockets transport, the HTTP upgrade (path,
subprotocol), and MQTT carried in WebSocket frames cut independently of MQTT packets — with a
hand-built WebSocket client (RFC 6455 frames) so each test controls exactly what is on the wire."""

from __future__ import annotations

import socket

import pytest

from .helpers import (HOST, OP_BINARY, OP_CONT, OP_TEXT, WAIT, WsRawClient, client_context,
                      clients, paho_client, r, read_http_response, tls_listener, wait_for,
                      ws_frame, ws_upgrade_request)


def _ws_broker(edge_broker, pki=None, path=None):
    listeners = [{"name": "ws", "protocol": "ws"}]
    if path is not None:
        listeners[0]["websocket"] = {"path": path}
    if pki is not None:
        ca = pki()
        listeners.append(tls_listener("wss", "wss", ca.server()))
        if path is not None:
            listeners[1]["websocket"] = {"path": path}
        return edge_broker(listeners), ca
    return edge_broker(listeners), None


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_paho_over_websockets(edge_broker, pki, scheme, version):
    """paho-mqtt's `transport="websockets"` connects to a `ws` listener, and to a `wss` listener
    with TLS trusting the test CA, on the configured path (`/mqtt`); it subscribes, and gets its
    own QoS 1 message and one published by a plain-TCP client."""
    b, ca = _ws_broker(edge_broker, pki)
    c = paho_client(f"paho-{scheme}-{version}", version, transport="websockets",
                    ca=ca if scheme == "wss" else None).start(b.ports[scheme])
    assert c.subscribe("web/#", qos=1) == [1]
    c.publish("web/self", b"from websocket", qos=1)
    assert c.wait_message("web/self").payload == b"from websocket"
    tcp = clients.connect_v5(b.port, f"tcp-{scheme}-{version}")
    tcp.publish("web/tcp", b"from tcp", qos=1)
    assert c.wait_message("web/tcp").payload == b"from tcp"
    info = b.admin().client(f"paho-{scheme}-{version}")["client"]
    assert info["listener"] == scheme and info["protocol_level"] == version, info


def test_a_configured_path_is_the_only_one_served(edge_broker):
    """`websocket.path: /custom/mqtt`: paho connects on that path; an upgrade request for any
    other path (including the default `/mqtt`) is answered `404` and no WebSocket is opened."""
    b, _ = _ws_broker(edge_broker, path="/custom/mqtt")
    port = b.ports["ws"]
    c = paho_client("custom-path", transport="websockets", ws_path="/custom/mqtt").start(port)
    assert c.subscribe("p/#") == [0]
    for wrong in ("/mqtt", "/", "/custom/mqtt/extra"):
        raw = WsRawClient(port, path=wrong)
        try:
            assert raw.status == 404, (wrong, raw.status, raw.headers)
            assert "sec-websocket-accept" not in raw.headers
        finally:
            raw.close()
    refused = paho_client("wrong-path", transport="websockets", ws_path="/nope")
    with pytest.raises(Exception):
        refused.start(port, timeout=3)
        raise AssertionError("paho connected on a path the listener does not serve")


@pytest.mark.parametrize("offered,chosen", [("mqtt", "mqtt"), ("foo, mqtt", "mqtt"),
                                            ("mqttv3.1", "mqttv3.1")])
def test_subprotocol_mqtt_is_negotiated(edge_broker, offered, chosen):
    """A raw HTTP upgrade offering `Sec-WebSocket-Protocol: {offered}` is answered
    `101 Switching Protocols` with `Sec-WebSocket-Protocol: {chosen}` (the MQTT subprotocol of
    MQTT 5 §6.0), and MQTT then works on it (CONNECT → CONNACK)."""
    b, _ = _ws_broker(edge_broker)
    with WsRawClient(b.ports["ws"], protocols=offered) as c:
        assert c.status == 101, (c.status, c.headers)
        assert c.headers.get("sec-websocket-protocol") == chosen, c.headers
        assert c.headers.get("upgrade", "").lower() == "websocket"
        c.handshake("subprotocol")


def test_wss_negotiates_the_subprotocol_over_tls(edge_broker, pki):
    """On a `wss` listener the upgrade happens inside TLS (the test CA's certificate), the answer
    carries `Sec-WebSocket-Protocol: mqtt`, and MQTT works in binary frames."""
    b, ca = _ws_broker(edge_broker, pki)
    raw = socket.create_connection((HOST, b.ports["wss"]), timeout=WAIT)
    tls = client_context(ca).wrap_socket(raw, server_hostname=HOST)
    with WsRawClient(b.ports["wss"], sock=tls) as c:
        assert c.status == 101 and c.headers.get("sec-websocket-protocol") == "mqtt", c.headers
        c.handshake("wss-raw")
        assert c.subscribe("wss/#", r.sub_options(qos=1)).codes == [1]


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_a_text_frame_closes_the_connection(edge_broker, version):
    """MQTT 5 §6.0 [MQTT-6.0.0-1]: MQTT travels in binary frames; after a successful CONNECT, a
    text frame makes the server close the connection (a WebSocket close frame, 1003 *unsupported
    data*, then the TCP connection ends); nothing else is sent."""
    b, _ = _ws_broker(edge_broker)
    with WsRawClient(b.ports["ws"], version=version) as c:
        c.handshake(f"text-frame-{version}")
        c.send_frames([ws_frame(OP_TEXT, b"\x30\x05\x00\x01ahi")])
        packets, closed = c.read_until_closed(WAIT)
        assert closed, "the connection stayed open after a text frame"
        assert packets == [], packets
        assert c.close_frame is not None and c.close_frame[0] == 1003, c.close_frame
        # The TCP connection ends too, and the client is gone from the broker.
        c.sock.settimeout(WAIT)
        try:
            while c.sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
    admin = b.admin()
    wait_for(lambda: admin.client(f"text-frame-{version}") is None,
             message="the session of the closed connection to end")


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_mqtt_packets_split_across_frames_and_coalesced(edge_broker, version):
    """MQTT 5 §6.0 [MQTT-6.0.0-2]: the receiver reassembles MQTT packets however they are cut
    into WebSocket frames. CONNECT split across two binary frames gets its CONNACK; a SUBSCRIBE
    and a QoS 1 PUBLISH split into three frames (the PUBLISH crossing a frame boundary, the
    second part in a continuation frame of a fragmented message) are answered with SUBACK,
    PUBACK and the delivery; two PINGREQs in one frame get two PINGRESPs."""
    b, _ = _ws_broker(edge_broker)
    with WsRawClient(b.ports["ws"], version=version) as c:
        connect = r.connect(f"split-{version}", version=version)
        c.send_frames([ws_frame(OP_BINARY, connect[:7]), ws_frame(OP_BINARY, connect[7:])])
        assert c.expect(r.CONNACK).reason == 0

        data = (r.subscribe(1, [("split/t", 1)], version=version)
                + r.publish("split/t", b"in pieces", qos=1, packet_id=2, version=version))
        cut1, cut2 = 5, len(data) - 6
        c.send_frames([ws_frame(OP_BINARY, data[:cut1]),
                       ws_frame(OP_BINARY, data[cut1:cut2], fin=False),
                       ws_frame(OP_CONT, data[cut2:], fin=True)])
        got = [c.recv(WAIT) for _ in range(3)]
        assert got[0].type == r.SUBACK and got[0].codes == [1], got
        assert sorted(p.type for p in got[1:]) == [r.PUBLISH, r.PUBACK], got
        assert next(p for p in got if p.type == r.PUBLISH).payload == b"in pieces"

        c.send_frames([ws_frame(OP_BINARY, r.pingreq() + r.pingreq())])
        assert [c.recv(WAIT).type, c.recv(WAIT).type] == [r.PINGRESP, r.PINGRESP]


def test_a_plain_http_request_to_a_ws_listener_is_refused(edge_broker):
    """A request that is not a WebSocket upgrade gets no `101` and no MQTT session; the broker
    keeps serving WebSocket clients."""
    b, _ = _ws_broker(edge_broker)
    with socket.create_connection((HOST, b.ports["ws"]), timeout=WAIT) as s:
        s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            status, _headers, _ = read_http_response(s)
        except (AssertionError, ConnectionError):
            status = None  # closed without an answer: also a refusal
        assert status != 101
    with WsRawClient(b.ports["ws"]) as c:
        c.handshake("after-plain-http")


def test_upgrade_request_bytes_are_standard(edge_broker):
    """Sanity check of the hand-built client against the server: the server's
    `Sec-WebSocket-Accept` is the RFC 6455 §4.2.2 digest of our key."""
    import base64
    import hashlib

    b, _ = _ws_broker(edge_broker)
    request = ws_upgrade_request()
    key = [line.split(": ")[1] for line in request.decode().split("\r\n")
           if line.startswith("Sec-WebSocket-Key")][0]
    with socket.create_connection((HOST, b.ports["ws"]), timeout=WAIT) as s:
        s.sendall(request)
        status, headers, _ = read_http_response(s)
    expected = base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    assert status == 101 and headers["sec-websocket-accept"] == expected, headers


def test_large_messages_use_extended_frame_lengths(edge_broker):
    """A 70,000-byte PUBLISH sent in one binary frame (64-bit extended payload length) is accepted
    and delivered back in frames the hand-built reader reassembles into the same bytes; a
    300-byte one uses the 16-bit length form."""
    b, _ = _ws_broker(edge_broker)
    with WsRawClient(b.ports["ws"]) as c:
        c.handshake("big-ws")
        assert c.subscribe("big/#", r.sub_options(qos=1)).codes == [1]
        for i, size in enumerate((300, 70_000)):
            payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            c.send(r.publish("big/t", payload, qos=1, packet_id=i + 1))
            got = [c.recv(WAIT), c.recv(WAIT)]
            delivery = [p for p in got if p.type == r.PUBLISH]
            assert len(delivery) == 1 and delivery[0].payload == payload, got
