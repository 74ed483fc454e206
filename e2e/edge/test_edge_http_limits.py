"""The HTTP endpoint's bounds (docs/configuration.md, `http`): a cap on connections open at once,
a header read timeout and an idle timeout, each counted in
`tern_http_connections_closed_total{reason}` — and MQTT clients still connect while the endpoint
is flooded with idle sockets, even when those outnumber the process's file descriptors."""

from __future__ import annotations

import errno
import socket

from .helpers import HOST, http_request, r, raw_connect, wait_for

CAP = 16
FLOOD = 300  # more sockets than the broker below may hold descriptors for
OPEN_FILES = 256


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has let go of the connection: its end of stream or a reset has arrived
    (after an answer, such as `503`, which is read and dropped). False while it stays open."""
    try:
        while True:
            if not sock.recv(65536, socket.MSG_DONTWAIT):
                return True
    except BlockingIOError:
        return False
    except OSError as exc:
        assert exc.errno in (errno.ECONNRESET, errno.EPIPE), exc
        return True


def _healthz_status():
    try:
        return http_request(_healthz_status.port, "GET", "/healthz", timeout=5).status
    except OSError:
        return None


def test_idle_http_sockets_past_the_cap_leave_mqtt_and_health_working(edge_broker):
    """300 idle sockets on the HTTP port of a broker allowed 256 open files and 16 HTTP
    connections: each one past the cap closes the oldest, so the broker keeps exactly the 16
    newest open and a new MQTT client still gets CONNACK 0 (before the cap, such a flood took every
    descriptor and MQTT accepts failed). `/healthz` answers 200 while the idle sockets are held (it
    pushes the oldest out in turn) and after they go; every socket closed to make room is counted
    as `max_connections`."""
    b = edge_broker(config={"http": {"max_connections": CAP, "header_read_timeout_secs": 3600,
                                     "idle_timeout_secs": 86400}},
                    open_files=OPEN_FILES)
    flood = [socket.create_connection((HOST, b.http_port)) for _ in range(FLOOD)]
    try:
        wait_for(lambda: sum(not _closed_by_server(s) for s in flood) == CAP,
                 message=f"the broker to keep {CAP} of the {FLOOD} HTTP sockets and let go of "
                         f"the rest")
        assert [s for s in flood if not _closed_by_server(s)] == flood[-CAP:], (
            "the newest sockets stay, the oldest make room")

        c, connack = raw_connect(b.port, "under-http-pressure", 5)
        with c:
            assert connack is not None and connack.type == r.CONNACK and connack.reason == 0, (
                connack)
        _healthz_status.port = b.http_port
        assert _healthz_status() == 200, "a new request gets through while sockets are held"
    finally:
        for s in flood:
            s.close()
    wait_for(lambda: _healthz_status() == 200, message="/healthz to answer once the sockets go")
    m = b.metrics()
    assert m.get("tern_http_connections_closed_total", reason="max_connections") >= FLOOD - CAP + 1
    wait_for(lambda: b.metrics().get("tern_http_connections") == 1,  # the scrape itself
             message="the held connections to be let go")


def _wait_closed(sock: socket.socket, what: str) -> None:
    wait_for(lambda: _closed_by_server(sock), message=f"the broker to close {what}")


def test_slow_or_silent_http_clients_are_closed_by_the_header_timeout(edge_broker):
    """With `header_read_timeout_secs: 1`: a connection that sends nothing, and one that sends
    half a request header, are closed (`header_read_timeout`); a kept-alive connection that got
    its answer and sends no next request is closed too (`keep_alive_timeout`)."""
    b = edge_broker(config={"http": {"header_read_timeout_secs": 1}})
    silent = socket.create_connection((HOST, b.http_port))
    partial = socket.create_connection((HOST, b.http_port))
    partial.sendall(b"GET /metrics HTTP/1.1\r\nHost: tern\r\n")
    kept = socket.create_connection((HOST, b.http_port))
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: tern\r\n\r\n")
    kept.settimeout(10)
    answer = kept.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    for sock, what in ((silent, "a silent connection"), (partial, "a half-sent header"),
                       (kept, "an idle kept-alive connection")):
        with sock:
            _wait_closed(sock, what)
    m = b.metrics()
    assert m.get("tern_http_connections_closed_total", reason="header_read_timeout") == 2
    assert m.get("tern_http_connections_closed_total", reason="keep_alive_timeout") == 1


def test_a_stalled_request_body_is_closed_by_the_idle_timeout(edge_broker):
    """With `idle_timeout_secs: 1` (and a long header timeout): an authenticated `PUT /auth`
    whose body stops after a few bytes of the announced 1000 is closed (`idle_timeout`), and the
    users and ACL in force are untouched."""
    b = edge_broker(config={"http": {"idle_timeout_secs": 1, "header_read_timeout_secs": 3600}})
    with socket.create_connection((HOST, b.http_port)) as sock:
        sock.sendall(("PUT /api/v1/auth HTTP/1.1\r\nHost: tern\r\n"
                      f"Authorization: Bearer {b.admin_token}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                      '{"users": "').encode())
        _wait_closed(sock, "a stalled request body")
    m = b.metrics()
    assert m.get("tern_http_connections_closed_total", reason="idle_timeout") == 1
