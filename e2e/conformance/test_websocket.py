"""MQTT over WebSocket (chapter 6 of both specifications), against a `ws` listener, with a WebSocket
client written from RFC 6455 here so that frame boundaries are under the test's control."""

import base64
import os
import socket
import struct
import time

import pytest

import clients

import rawmqtt as r
from conftest import BROKER_KIND, Broker, free_port

OP_TEXT, OP_BINARY, OP_CLOSE = 0x1, 0x2, 0x8

pytestmark = pytest.mark.skipif(
    BROKER_KIND != "tern", reason="the reference broker is run without a WebSocket listener")


@pytest.fixture
def ws_broker(tmp_path):
    """A broker with a TCP listener (for start-up) and a WebSocket listener on `ws_port`."""
    b = Broker(tmp_path, "ws")
    b.ws_port = free_port()
    b.extra = {"listeners": [
        {"name": "mqtt", "protocol": "tcp", "bind": f"127.0.0.1:{b.port}"},
        {"name": "ws", "protocol": "ws", "bind": f"127.0.0.1:{b.ws_port}"},
    ]}
    b.start()
    yield b
    b.stop()


class WsClient:
    """A minimal RFC 6455 client: masked frames out, unmasked frames in."""

    def __init__(self, port: int, protocols: str = "mqtt", path: str = "/mqtt"):
        self.sock = socket.create_connection((clients.next_host(port), port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n")
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                break
            head += chunk
        self.status_line, *header_lines = head.decode().split("\r\n")
        self.headers = {k.strip().lower(): v.strip()
                        for k, v in (line.split(":", 1) for line in header_lines if ":" in line)}
        self.buffer = b""

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        mask = os.urandom(4)
        first = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", first, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise r.Closed()
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv_frame(self) -> tuple:
        first, second = self._read(2)
        n = second & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        return first & 0x0F, self._read(n)

    def mqtt_packets(self, count: int, version: int = 5, timeout: float = 5.0) -> list:
        """The next `count` MQTT packets, however the server split them into binary frames."""
        stream, packets = b"", []
        deadline = time.monotonic() + timeout
        while len(packets) < count and time.monotonic() < deadline:
            opcode, payload = self.recv_frame()
            assert opcode == OP_BINARY, f"server sent opcode {opcode:#x}, not a binary frame"
            stream += payload
            while len(stream) >= 2:
                length, used, shift = 0, 1, 0
                while True:
                    byte = stream[used]
                    length |= (byte & 0x7F) << shift
                    used += 1
                    shift += 7
                    if not byte & 0x80 or used >= len(stream):
                        break
                if len(stream) < used + length:
                    break
                packets.append(r.decode(stream[0] >> 4, stream[0] & 0x0F, stream[used:used + length],
                                        version))
                stream = stream[used + length:]
        return packets

    def closed(self, timeout: float = 3.0) -> bool:
        """Whether the server closes the connection (a close frame, or the TCP stream ends)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                opcode, _ = self.recv_frame()
                if opcode == OP_CLOSE:
                    return True
        except (r.Closed, ConnectionError):
            return True
        except socket.timeout:
            return False


def test_websocket_subprotocol_mqtt_is_selected(ws_broker):
    """v5 [MQTT-6.0.0-4], v3.1.1 [MQTT-6.0.0-4]: the server selects and returns the WebSocket
    subprotocol "mqtt" in its handshake response."""
    c = WsClient(ws_broker.ws_port, protocols="mqtt")
    assert " 101 " in c.status_line, c.status_line
    assert c.headers.get("sec-websocket-protocol") == "mqtt", c.headers


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_websocket_packets_split_and_joined_across_frames(ws_broker, uid, version):
    """v5 [MQTT-6.0.0-2], v3.1.1 [MQTT-6.0.0-2]: a WebSocket frame may hold part of an MQTT
    packet or several; the server does not rely on frame boundaries. CONNECT arrives split over
    two binary frames; SUBSCRIBE and PUBLISH share one; every packet is answered and the message
    comes back."""
    c = WsClient(ws_broker.ws_port)
    connect = r.connect(uid, version=version)
    c.send_frame(OP_BINARY, connect[:5])
    c.send_frame(OP_BINARY, connect[5:])
    topic = f"ws/{uid}"
    both = r.subscribe(1, [(topic, r.sub_options(qos=1))], version=version) + \
        r.publish(topic, b"over websocket", qos=1, packet_id=2, version=version)
    c.send_frame(OP_BINARY, both)
    packets = c.mqtt_packets(4, version)
    kinds = [p.type for p in packets]
    assert kinds[:2] == [r.CONNACK, r.SUBACK], packets
    assert sorted(kinds[2:]) == sorted([r.PUBACK, r.PUBLISH]), packets
    delivery = next(p for p in packets if p.type == r.PUBLISH)
    assert delivery.payload == b"over websocket"


def test_websocket_text_frame_closes_the_connection(ws_broker, uid):
    """v5 [MQTT-6.0.0-1], v3.1.1 [MQTT-6.0.0-1]: MQTT control packets travel in binary data
    frames; a data frame of another type (text) makes the server close the connection."""
    c = WsClient(ws_broker.ws_port)
    c.send_frame(OP_BINARY, r.connect(uid))
    assert c.mqtt_packets(1)[0].type == r.CONNACK
    c.send_frame(OP_TEXT, r.pingreq())
    assert c.closed(), "the server kept the connection after a text frame"
