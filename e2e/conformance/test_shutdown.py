"""Server shutdown on SIGTERM, seen from connected clients."""

import signal

import rawmqtt as r
from clients import connect_v5
from expect import beyond_spec_on_mosquitto


@beyond_spec_on_mosquitto("DISCONNECT 0x8B to v5 clients on SIGTERM (mosquitto just closes)")
def test_shutdown_sigterm_disconnects_v5_clients_with_0x8b(fresh_broker, uid):
    """v5 §3.14.2.1 [MQTT-3.14.2-1] [MQTT-3.14.4-1]: on SIGTERM the server tells each v5
    client DISCONNECT 0x8B (Server shutting down), sends nothing after it and closes; the
    process then exits by itself."""
    raw = r.RawClient(fresh_broker.port)
    raw.handshake(uid + "r")
    paho = connect_v5(fresh_broker.port, uid + "p")
    fresh_broker.signal(signal.SIGTERM)
    packets, closed = raw.read_until_closed(10)
    assert closed, "connection still open 10 s after SIGTERM"
    assert [(p.type, p.reason) for p in packets] == [(r.DISCONNECT, 0x8B)], packets
    assert paho.disconnected.wait(10)
    assert paho.disconnect_from_server and paho.disconnect_reason == 0x8B
    assert fresh_broker.wait_exit(10) is not None, "broker still running 10 s after SIGTERM"
    raw.close()


def test_shutdown_sigterm_closes_v3_clients_and_exits(fresh_broker, uid):
    """v3.1.1 §3.14: the server has no DISCONNECT to send a 3.1.1 client; on SIGTERM it
    closes the connection (nothing sent) and the process exits with status 0."""
    raw = r.RawClient(fresh_broker.port, version=4)
    raw.handshake(uid)
    fresh_broker.signal(signal.SIGTERM)
    packets, closed = raw.read_until_closed(10)
    assert closed and packets == [], packets
    code = fresh_broker.wait_exit(10)
    assert code == 0, f"broker exit status {code} after SIGTERM"
    raw.close()

