#!/usr/bin/env python3
"""Re-run an attack from docs/security.md against a tern-broker binary and print its table row.

    scripts/attack.py ATTACK [--broker target/release/tern-broker] [--seconds 30] [--http KEYS]

Each attack starts its own broker (an MQTT listener and the HTTP endpoint on free loopback ports,
anonymous clients allowed, at most --open-files descriptors, 1024 by default as on Debian), runs
for --seconds while a bystander checks every 100 ms that a new MQTT client still gets CONNACK and
what `/healthz` answers, then prints the broker's peak resident memory (VmHWM), the counters of
the limit that bit, and what the bystander saw. `--http 'max_connections: 100000'` adds keys to the
`http` section, to see what an attack does without a bound. Standard library only.

To add an attack: write `def attack_NAME(broker, seconds) -> str` (the "limit that bit" cell;
`broker` is the running `Broker`) and list it in ATTACKS.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Broker:
    """A tern-broker process with its log in a file, and what can be read about it."""

    def __init__(self, binary: Path, workdir: Path, open_files: int, http_keys: str = ""):
        self.mqtt_port, self.http_port = free_port(), free_port()
        self.workdir = workdir
        (workdir / "token").write_text("attack-token\n")
        config = workdir / "tern.yaml"
        config.write_text(
            f"listeners: [{{name: mqtt, bind: '{HOST}:{self.mqtt_port}'}}]\n"
            "auth: {allow_anonymous: true, reload_poll_secs: 0}\n"
            "sys: {interval_secs: 0}\n"
            f"http: {{bind: '{HOST}:{self.http_port}', admin_token_file: {workdir / 'token'}"
            + (f", {http_keys}" if http_keys else "") + "}\n")
        self.log_path = workdir / "broker.log"

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(binary), "--config", str(config)], stdout=log,
                                         stderr=log, stdin=subprocess.DEVNULL, preexec_fn=limit,
                                         cwd=workdir, env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
        deadline = time.monotonic() + 15
        while http_status(self.http_port, "/healthz") != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                sys.exit(f"the broker did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def peak_rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))

    def metrics(self) -> dict:
        """{'name{labels}': value} from /metrics (retried: the endpoint may be at its cap)."""
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection(HOST, self.http_port, timeout=5)
                conn.request("GET", "/metrics")
                body = conn.getresponse().read().decode()
                conn.close()
                break
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
        else:
            return {}
        samples = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def http_status(port: int, path: str):
    """The status of one GET, or None if the connection was refused, reset or timed out."""
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except (OSError, http.client.HTTPException):
        return None


def mqtt_connect(port: int, client_id: bytes, timeout: float = 2.0) -> bool:
    """An MQTT 3.1.1 CONNECT; True when CONNACK 0 arrives within `timeout`."""
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(bytes([0x10, len(body)]) + body)
            answer = b""
            while len(answer) < 4:
                chunk = s.recv(4 - len(answer))
                if not chunk:
                    return False
                answer += chunk
            s.sendall(b"\xe0\x00")  # DISCONNECT
            return answer == b"\x20\x02\x00\x00"
    except OSError:
        return False


class Bystander(threading.Thread):
    """Every 100 ms: does a new MQTT client get CONNACK, and what does /healthz answer?"""

    def __init__(self, broker: Broker):
        super().__init__(daemon=True)
        self.broker = broker
        self.stopping = threading.Event()
        self.mqtt = [0, 0]  # ok, failed
        self.health = {}

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            ok = mqtt_connect(self.broker.mqtt_port, b"bystander-%d" % n)
            self.mqtt[0 if ok else 1] += 1
            status = http_status(self.broker.http_port, "/healthz")
            self.health[status] = self.health.get(status, 0) + 1
            self.stopping.wait(0.1)

    def summary(self) -> str:
        ok, failed = self.mqtt
        health = ", ".join(f"{'refused' if k is None else k} ×{v}"
                           for k, v in sorted(self.health.items(), key=lambda kv: str(kv[0])))
        return f"MQTT connects {ok} ok / {failed} failed; /healthz {health}"


# ---------------------------------------------------------------------------------------------
# Attacks
# ---------------------------------------------------------------------------------------------

def attack_http_idle_flood(broker: Broker, seconds: float) -> str:
    """5,000 sockets opened to the HTTP endpoint and left silent; any the broker closes is opened
    again, for `seconds`."""
    _idle_flood(broker.http_port, seconds)
    return _http_closes(broker)


def attack_mqtt_idle_flood(broker: Broker, seconds: float) -> str:
    """5,000 sockets opened to the MQTT listener and left silent (no CONNECT); any the broker
    closes is opened again, for `seconds`."""
    closed = _idle_flood(broker.mqtt_port, seconds)
    return f"`limits.connect_timeout_secs`: {closed:,} silent sockets closed by the broker"


def _idle_flood(port: int, seconds: float, target: int = 5000) -> int:
    """Keeps `target` silent sockets open to `port`; returns how many the broker closed."""
    sockets, closed = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [s for s in sockets if not _closed(s)]
        closed += len(sockets) - len(alive)
        sockets = alive
        while len(sockets) < target and time.monotonic() < deadline:
            try:
                sockets.append(_connect(port))
            except OSError:
                break
        time.sleep(0.5)
    for s in sockets:
        s.close()
    return closed


def attack_http_slowloris(broker: Broker, seconds: float) -> str:
    """500 connections each sending one more header byte every second and never finishing the
    header; any the broker closes is opened again, for `seconds`."""
    target, sockets = 500, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = []
        for s in sockets:
            try:
                s.send(b"X")
                alive.append(s)
            except OSError:
                s.close()
        sockets = alive
        while len(sockets) < target:
            try:
                s = _connect(broker.http_port)
                s.send(b"GET /metrics HTTP/1.1\r\nHost: tern\r\nX-Slow: ")
                sockets.append(s)
            except OSError:
                break
        time.sleep(1)
    for s in sockets:
        s.close()
    return _http_closes(broker)


def attack_log_injection(broker: Broker, seconds: float) -> str:
    """Clients whose ids carry a newline, a forged log line and ANSI escapes connect and leave,
    for `seconds`; then the log is checked for raw control characters and forged lines."""
    forged = "2026-01-01T00:00:00.000000Z  INFO tern_broker::server: forged"
    evil = f"evil\n{forged}\x1b[2J\x1b[31m".encode()
    deadline, sent = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        sent += mqtt_connect(broker.mqtt_port, evil)
    time.sleep(0.5)
    log = broker.log_path.read_text(errors="replace")
    raw = sum(log.count(c) for c in "\x1b\x07")
    forged_lines = sum(line.startswith(forged) for line in log.splitlines())
    connected = sum("client connected client_id=evil\\n" in line for line in log.splitlines())
    return (f"text log escaping: {sent} connects, {connected} one-line `client connected` "
            f"entries, {forged_lines} forged lines, {raw} raw escape characters")


ATTACKS = {
    "http-idle-flood": attack_http_idle_flood,
    "http-slowloris": attack_http_slowloris,
    "mqtt-idle-flood": attack_mqtt_idle_flood,
    "log-injection": attack_log_injection,
}


def _connect(port: int) -> socket.socket:
    """A connected socket that never blocks afterwards (with a timeout, Python would wait on every
    read of a silent socket)."""
    sock = socket.create_connection((HOST, port), timeout=2)
    sock.setblocking(False)
    return sock


def _closed(sock: socket.socket) -> bool:
    """Whether the broker let go of the socket (closing it here too)."""
    try:
        while True:
            if not sock.recv(65536):
                sock.close()
                return True
    except BlockingIOError:
        return False
    except OSError:
        sock.close()
        return True


def _http_closes(broker: Broker) -> str:
    m = broker.metrics()
    counts = {reason: int(m.get(f'tern_http_connections_closed_total{{reason="{reason}"}}', 0))
              for reason in ("max_connections", "header_read_timeout", "keep_alive_timeout",
                             "idle_timeout")}
    return "`http.*`: " + ", ".join(f"{k} {v:,}" for k, v in counts.items() if v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("attack", choices=sorted(ATTACKS))
    parser.add_argument("--broker", type=Path, default=REPO / "target" / "release" / "tern-broker")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--open-files", type=int, default=1024)
    parser.add_argument("--http", default="", metavar="KEYS",
                        help="more keys of the http section, as YAML flow mapping entries")
    args = parser.parse_args()
    # The attacker needs more descriptors than the broker it floods.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="tern-attack-") as workdir:
        broker = Broker(args.broker, Path(workdir), args.open_files, args.http)
        baseline = broker.peak_rss_kib()
        bystander = Bystander(broker)
        bystander.start()
        try:
            bit = ATTACKS[args.attack](broker, args.seconds)
            peak = broker.peak_rss_kib()
        finally:
            bystander.stopping.set()
            bystander.join()
            broker.stop()
        print(json.dumps({"attack": args.attack, "seconds": args.seconds,
                          "open_files": args.open_files, "http": args.http}))
        print(f"| {args.attack} | {bit} | {peak / 1024:.1f} MiB (idle {baseline / 1024:.1f} MiB) "
              f"| {bystander.summary()} |")


if __name__ == "__main__":
    main()
