#!/usr/bin/env python3
"""Route replication at scale: memory per route, and how long a node joining a cluster that holds
N distinct filters takes to become ready.

Starts two nodes of a cluster (release build) on 127.0.0.2 and 127.0.0.3, subscribes N distinct
filters on the first through one raw MQTT 5 client (SUBSCRIBE packets of 1,000 filters), waits until
the second holds all of them as the first node's routes, reads both nodes' RSS, then starts a third
node on 127.0.0.4 and times it from start to /readyz 200 (joined, holding every peer's routes).

Usage: e2e/bench/cluster_routes.py [--filters 1000000] [--binary target/release/tern-broker]
Prints one line per measurement; nothing is asserted (this is a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

TOKEN = "routes-bench"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def read_packet(sock: socket.socket) -> tuple:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data
    first = exactly(1)[0]
    length, shift = 0, 0
    while True:
        byte = exactly(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first >> 4, exactly(length)


def get_json(host: str, path: str) -> dict:
    request = urllib.request.Request(f"http://{host}:9090{path}",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def ready(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:9090/readyz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_node(binary: str, workdir: str, index: int) -> subprocess.Popen:
    ip = f"127.0.0.{index + 2}"
    config = f"""listeners:
  - name: mqtt
    bind: {ip}:1883
auth:
  allow_anonymous: true
log:
  level: warn
limits:
  max_subscriptions_per_client: null
http:
  bind: {ip}:9090
  admin_token_file: {workdir}/token
cluster:
  name: routes-bench
  node_id: node-{index}
  bind: {ip}:4370
  seeds: [127.0.0.2:4370]
"""
    path = os.path.join(workdir, f"node-{index}.yaml")
    with open(path, "w") as f:
        f.write(config)
    log = open(os.path.join(workdir, f"node-{index}.log"), "w")
    return subprocess.Popen([binary, "--config", path], stdout=log, stderr=log)


def wait_ready(host: str, timeout: float = 60) -> float:
    started = time.monotonic()
    while not ready(host):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{host} not ready in {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - started


def subscribe_many(host: str, count: int, per_packet: int = 1000) -> float:
    sock = socket.create_connection((host, 1883))
    connect = mqtt_string("MQTT") + bytes([5, 0x02, 0, 0]) + b"\x00" + mqtt_string("route-filler")
    sock.sendall(packet(0x10, connect))
    kind, _ = read_packet(sock)
    assert kind == 2, "CONNACK"
    started = time.monotonic()
    packet_id = 1
    for first in range(0, count, per_packet):
        body = struct.pack(">H", packet_id) + b"\x00"
        for n in range(first, min(count, first + per_packet)):
            body += mqtt_string(f"fleet/{n // 1000}/device/{n}/+/state") + b"\x00"
        sock.sendall(packet(0x82, body))
        kind, ack = read_packet(sock)
        assert kind == 9, f"SUBACK, got {kind}"
        assert all(code < 0x80 for code in ack[3:]), "every filter granted"
        packet_id = packet_id % 65535 + 1
    elapsed = time.monotonic() - started
    sock.setblocking(False)
    return elapsed, sock


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--filters", type=int, default=1_000_000)
    parser.add_argument("--binary", default="target/release/tern-broker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tern-routes-") as workdir:
        with open(os.path.join(workdir, "token"), "w") as f:
            f.write(TOKEN)
        nodes = [start_node(args.binary, workdir, 0), start_node(args.binary, workdir, 1)]
        try:
            for i in range(2):
                wait_ready(f"127.0.0.{i + 2}")
            base = [rss_kib(n.pid) for n in nodes]
            took, filler = subscribe_many("127.0.0.2", args.filters)
            print(f"subscribed {args.filters:,} distinct filters on node-0 in {took:.1f} s "
                  f"({args.filters / took:,.0f}/s, each SUBACK after node-1 acknowledged the routes)")
            while True:
                members = get_json("127.0.0.3", "/api/v1/cluster")["members"]
                held = next(m["routes"] for m in members if m["node_id"] == "node-0")
                if held == args.filters:
                    break
                time.sleep(0.1)
            after = [rss_kib(n.pid) for n in nodes]
            local = (after[0] - base[0]) * 1024 / args.filters
            remote = (after[1] - base[1]) * 1024 / args.filters
            print(f"node-0 (holds the subscriptions): RSS {base[0] / 1024:.0f} -> {after[0] / 1024:.0f} MiB, "
                  f"{local:.0f} B per subscription (session record, router, route table, own route set)")
            print(f"node-1 (holds them as node-0's routes): RSS {base[1] / 1024:.0f} -> {after[1] / 1024:.0f} MiB, "
                  f"{remote:.0f} B per remote route")
            started = time.monotonic()
            nodes.append(start_node(args.binary, workdir, 2))
            wait_ready("127.0.0.4", timeout=600)
            joined = time.monotonic() - started
            print(f"node-2 joined a cluster holding {args.filters:,} distinct filters and was ready "
                  f"{joined:.2f} s after it was started; RSS {rss_kib(nodes[2].pid) / 1024:.0f} MiB")
            filler.close()
        finally:
            for node in nodes:
                node.terminate()
            for node in nodes:
                node.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
