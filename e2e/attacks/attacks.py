#!/usr/bin/env python3
"""Adversarial probes of a Tern broker binary, for docs/security.md's "Limits under attack" table.

Each scenario starts the broker binary given with `--broker` on free loopback ports (with the
HTTP endpoint on, for /metrics), runs one attack, and prints one line per scenario: the attack,
the limit counters that moved, the broker's peak RSS during the attack and its RSS a while
after, and whether a bystander client (a subscriber and a publisher of its own, exchanging a
QoS 1 message every 100 ms throughout) was affected: disconnected, or a round trip over 1 s.

    python3 e2e/attacks/attacks.py --broker target/release/tern-broker [SCENARIO ...]

Scenarios: will, long-id, passwords, passwords-spread, retained, queue, subscriptions, partial,
retained-cut (default: all). Only loopback addresses are used; every loop is bounded in count and time.
Needs only Python 3.9+; the MQTT bytes come from e2e/conformance/rawmqtt.py.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "conformance"))
import rawmqtt as mq  # noqa: E402

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


class Broker:
    """One broker process with a config of our own and the HTTP endpoint on."""

    def __init__(self, binary: str, extra_yaml: str = "", users: dict | None = None):
        self.dir = tempfile.TemporaryDirectory(prefix="tern-attack-")
        self.port, self.http = free_port(), free_port()
        auth = "auth:\n  allow_anonymous: true\n"
        if users:
            path = Path(self.dir.name) / "users"
            for name, password in users.items():
                subprocess.run([binary, "passwd", str(path), name, "--password-stdin"],
                               input=password + "\n", text=True, check=True,
                               stdout=subprocess.DEVNULL)
            auth = f"auth:\n  allow_anonymous: false\n  users_file: {path}\n"
        config = Path(self.dir.name) / "tern.yaml"
        config.write_text(
            f"listeners:\n  - name: mqtt\n    bind: 127.0.0.1:{self.port}\n"
            f"http:\n  bind: 127.0.0.1:{self.http}\n{auth}"
            f"log:\n  level: warn\n{extra_yaml}")
        self.log = open(Path(self.dir.name) / "broker.log", "w")
        self.process = subprocess.Popen([binary, "--config", str(config)],
                                        stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                socket.create_connection(("127.0.0.1", self.http), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("broker did not start")

    @property
    def pid(self) -> int:
        return self.process.pid

    def metrics(self) -> dict:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=5).read()
        samples = {}
        for line in text.decode().splitlines():
            if line.startswith("tern_") and " " in line:
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        self.dir.cleanup()


class Conn:
    """A raw MQTT 5 connection over asyncio streams."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                       local_addr=(source, 0), limit=16 * MIB)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def packet(self, timeout: float = 10.0):
        """(type, flags, body), or None once the broker has closed the connection; raises
        asyncio.TimeoutError when nothing came within `timeout`."""
        async def read():
            first = await self.reader.readexactly(1)
            length, shift = 0, 0
            while True:
                byte = (await self.reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            return first[0] >> 4, first[0] & 0x0F, await self.reader.readexactly(length)
        try:
            return await asyncio.wait_for(read(), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def connect(self, client_id: str, **kwargs) -> int:
        """Sends CONNECT; returns the CONNACK reason code (-1 if the connection closed)."""
        await self.send(mq.connect(client_id, **kwargs))
        try:
            reply = await self.packet()
        except asyncio.TimeoutError:
            return -3
        return -1 if reply is None else reply[2][1]

    def close(self) -> None:
        self.writer.close()


class Bystander:
    """A subscriber and a publisher of their own, round-tripping a QoS 1 message every 100 ms, in a
    process of their own so that the attack's own loop cannot slow them down."""

    def __init__(self, port: int):
        self.port = port
        self.results = multiprocessing.Queue()
        self.stop_flag = multiprocessing.Event()
        self.process = multiprocessing.Process(target=_bystander_main,
                                               args=(port, self.stop_flag, self.results))

    async def start(self):
        self.process.start()
        ready = await asyncio.get_running_loop().run_in_executor(None, self.results.get, True, 10)
        if ready != "ready":
            raise RuntimeError(f"bystander: {ready}")

    async def stop(self) -> str:
        self.stop_flag.set()
        verdict = await asyncio.get_running_loop().run_in_executor(None, self.results.get, True, 40)
        self.process.join(5)
        return verdict


def _bystander_main(port: int, stop_flag, results) -> None:
    asyncio.run(_bystander(port, stop_flag, results))


async def _bystander(port: int, stop_flag, results) -> None:
    subscriber = await Conn.open(port)
    publisher = await Conn.open(port)
    if await subscriber.connect("bystander-sub") != 0 or await publisher.connect("bystander-pub") != 0:
        results.put("could not connect")
        return
    await subscriber.send(mq.subscribe(1, [("bystander/t", 1)]))
    await subscriber.packet()
    results.put("ready")
    worst, sent, broken = 0.0, 0, ""
    while not stop_flag.is_set() and not broken:
        started = time.monotonic()
        sent += 1
        await publisher.send(mq.publish("bystander/t", b"ping", qos=1, packet_id=sent % 65535 + 1))
        while True:
            try:
                got = await subscriber.packet(timeout=30)
            except asyncio.TimeoutError:
                broken = "no message for 30 s"
                break
            if got is None:
                broken = "subscriber disconnected"
                break
            if got[0] == mq.PUBLISH:
                topic_len = struct.unpack(">H", got[2][:2])[0]
                packet_id = struct.unpack(">H", got[2][2 + topic_len:4 + topic_len])[0]
                await subscriber.send(mq.ack(mq.PUBACK, packet_id))
                break
        worst = max(worst, time.monotonic() - started)
        await asyncio.sleep(0.1)
    if broken:
        results.put(broken)
    elif worst < 1.0:
        results.put(f"no (worst round trip {worst * 1000:.0f} ms)")
    else:
        results.put(f"slowed: worst round trip {worst:.1f} s")


@dataclass
class Result:
    attack: str
    limits: str = ""
    peak_mib: float = 0.0
    after_mib: float = 0.0
    bystander: str = ""
    notes: list = field(default_factory=list)


class Sampler:
    """Samples the broker's RSS every 50 ms for the peak."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, 0
        self.task = asyncio.create_task(self.run())

    async def run(self):
        while True:
            self.peak = max(self.peak, rss_kib(self.pid))
            await asyncio.sleep(0.05)

    def stop(self) -> float:
        self.task.cancel()
        self.peak = max(self.peak, rss_kib(self.pid))
        return self.peak / 1024


def moved(before: dict, after: dict) -> str:
    """The limit and drop counters that moved, as `name{label}: +n`."""
    parts = []
    for name, value in sorted(after.items()):
        if re.match(r"tern_(limit_hits|messages_dropped|auth_failures)_total", name):
            delta = value - before.get(name, 0)
            if delta:
                label = re.sub(r'^tern_|_total|"', "", name)
                parts.append(f"{label} +{delta:.0f}")
    return ", ".join(parts) or "none"


async def scenario(binary: str, name: str, attack, extra_yaml: str = "",
                   users: dict | None = None, settle: float = 12.0) -> Result:
    broker = Broker(binary, extra_yaml, users)
    result = Result(name)
    try:
        bystander = Bystander(broker.port)
        if not users:
            await bystander.start()
        before = broker.metrics()
        sampler = Sampler(broker.pid)
        await attack(broker, result)
        result.peak_mib = sampler.stop()
        # Give the allocator its time to hand freed memory back.
        await asyncio.sleep(settle)
        result.after_mib = rss_kib(broker.pid) / 1024
        result.bystander = (await bystander.stop()) if not users else result.bystander
        result.limits = moved(before, broker.metrics())
    finally:
        broker.stop()
    return result


# ---------------------------------------------------------------- the attacks

async def will_attack(broker: Broker, result: Result):
    """An anonymous client's retained will on $SYS/broker/version."""
    conn = await Conn.open(broker.port)
    will = mq.Will("$SYS/broker/version", b"owned", qos=1, retain=True)
    code = await conn.connect("forger", will=will)
    result.notes.append(f"CONNACK {code:#04x}")
    conn.close()


async def long_id_attack(broker: Broker, result: Result):
    """A 65,535-byte client id while a watcher subscribes to the connect notices."""
    watcher = await Conn.open(broker.port)
    await watcher.connect("watcher", props=[(mq.MAXIMUM_PACKET_SIZE, 1 << 20)])
    await watcher.send(mq.subscribe(1, [("$SYS/broker/clients/+/connected", 0)]))
    await watcher.packet()
    attacker = await Conn.open(broker.port)
    result.notes.append(f"CONNACK {await attacker.connect('x' * 65535):#04x}")
    notice = await watcher.packet()
    if notice is None:
        result.notes.append("watcher disconnected")
    else:
        topic_len = struct.unpack(">H", notice[2][:2])[0]
        result.notes.append(f"watcher got a notice, topic {topic_len} bytes")
    attacker.close()
    watcher.close()


async def password_attack(broker: Broker, result: Result, sources: int = 1):
    """1,000 concurrent wrong passwords from `sources` addresses from 127.0.1.1 on, then a correct
    login from 127.0.0.2."""
    async def guess(n):
        try:
            conn = await Conn.open(broker.port, source=f"127.0.1.{n % sources + 1}")
            code = await conn.connect(f"guess-{n}", username="alice", password=b"wrong")
            conn.close()
            return code
        except OSError:
            return -2
    guesses = [asyncio.create_task(guess(n)) for n in range(1000)]
    await asyncio.sleep(0.2)
    started = time.monotonic()
    good = await Conn.open(broker.port, source="127.0.0.2")
    code = await good.connect("alice-1", username="alice", password=b"right")
    login_ms = (time.monotonic() - started) * 1000
    good.close()
    codes = await asyncio.gather(*guesses)
    counts = {c: codes.count(c) for c in sorted(set(codes))}
    result.notes.append(f"correct login from another address: CONNACK {code:#04x} in {login_ms:.0f} ms")
    result.notes.append("guesses answered " + ", ".join(f"{c:#04x}: {n}" for c, n in counts.items()))
    result.bystander = f"correct login {login_ms:.0f} ms"


async def retained_attack(broker: Broker, result: Result):
    """One client stores 600,000 retained messages of 1 KiB on distinct topics (QoS 0)."""
    conn = await Conn.open(broker.port)
    await conn.connect("hoarder")
    payload = b"r" * 1024
    started = time.monotonic()
    for n in range(600_000):
        conn.writer.write(mq.publish(f"hoard/{n}", payload, retain=True))
        if n % 1000 == 0:
            await conn.writer.drain()
    await conn.writer.drain()
    # One QoS 1 publish on a new topic shows what a publisher is told now.
    await conn.send(mq.publish("hoard/last", payload, qos=1, retain=True, packet_id=7))
    reply = await conn.packet()
    if reply is not None and reply[0] == mq.PUBACK:
        reason = reply[2][2] if len(reply[2]) > 2 else 0
        result.notes.append(f"QoS 1 retained PUBACK {reason:#04x}")
    result.notes.append(f"sent in {time.monotonic() - started:.1f} s; "
                        f"stored {broker.metrics().get('tern_retained_messages', 0):.0f}")
    conn.close()


async def queue_attack(broker: Broker, result: Result):
    """A subscriber that never reads, and a publisher of 300 KB QoS 1 messages, for 15 s."""
    sleeper = await Conn.open(broker.port)
    await sleeper.connect("sleeper")
    await sleeper.send(mq.subscribe(1, [("flood", 1)]))
    await sleeper.packet()
    sleeper.writer.transport.pause_reading()
    publisher = await Conn.open(broker.port)
    await publisher.connect("flooder")
    payload = b"q" * 300_000

    async def read_acks():
        while await publisher.packet(timeout=60) is not None:
            pass
    acks = asyncio.create_task(read_acks())
    deadline = time.monotonic() + 15
    sent = 0
    while time.monotonic() < deadline:
        publisher.writer.write(mq.publish("flood", payload, qos=1, packet_id=sent % 65535 + 1))
        sent += 1
        await publisher.writer.drain()
    acks.cancel()
    result.notes.append(f"{sent} messages published; queued bytes "
                        f"{broker.metrics().get('tern_queued_bytes', 0) / MIB:.0f} MiB")
    sleeper.close()
    publisher.close()


async def subscriptions_attack(broker: Broker, result: Result):
    """2,000,000 subscriptions: 2,000 clients with 1,000 distinct filters each; then all leave."""
    conns = []
    for c in range(2000):
        conn = await Conn.open(broker.port)
        await conn.connect(f"subscriber-{c}")
        for batch in range(10):
            filters = [(f"s/{c}/{batch}/{n}", 0) for n in range(100)]
            await conn.send(mq.subscribe(batch + 1, filters))
            await conn.packet()
        conns.append(conn)
    held = broker.metrics().get("tern_subscriptions", 0)
    result.notes.append(f"{held:.0f} subscriptions held; RSS {rss_kib(broker.pid) / 1024:.0f} MiB")
    for conn in conns:
        conn.close()
    await asyncio.sleep(2)
    left = broker.metrics().get("tern_subscriptions", 0)
    result.notes.append(f"{left:.0f} left 2 s after the clients closed")


async def partial_attack(broker: Broker, result: Result):
    """300 connections each send all but the last byte of a 1 MiB PUBLISH, and hold it."""
    conns = []
    body_len = MIB - 16
    head = mq.utf8("p") + b"\x00\x01\x00"
    packet = bytes([0x32]) + mq.varint(len(head) + body_len) + head + b"x" * body_len
    for c in range(300):
        conn = await Conn.open(broker.port)
        await conn.connect(f"partial-{c}")
        try:
            await conn.send(packet[:-1])
        except ConnectionError:
            pass
        conns.append(conn)
    await asyncio.sleep(2)
    closed = 0
    for conn in conns:
        try:
            await conn.packet(timeout=0.05)  # a DISCONNECT, or None once closed
            closed += 1
        except asyncio.TimeoutError:
            pass
    result.notes.append(f"{closed} of 300 closed by the broker")
    for conn in conns:
        conn.close()


async def retained_cut_attack(broker: Broker, result: Result):
    """20,000 retained messages, then a subscriber to `#` with the default queue (10,000)."""
    conn = await Conn.open(broker.port)
    await conn.connect("retainer")
    for n in range(20_000):
        conn.writer.write(mq.publish(f"cut/{n}", b"c", retain=True))
    await conn.writer.drain()
    await asyncio.sleep(1)
    late = await Conn.open(broker.port)
    await late.connect("late")
    await late.send(mq.subscribe(1, [("cut/#", 0)]))
    received = 0
    while True:
        try:
            reply = await late.packet(timeout=2)
        except asyncio.TimeoutError:
            break
        if reply is None:
            break
        received += reply[0] == mq.PUBLISH
    result.notes.append(f"subscriber to cut/# received {received} of 20000")
    conn.close()
    late.close()


SCENARIOS = {
    "will": (will_attack, "", None),
    "long-id": (long_id_attack, "", None),
    "passwords": (password_attack, "", {"alice": "right"}),
    # The same guesses from 250 addresses, 4 each: within the per-address bounds, so each is
    # hashed unless the broker-wide bound refuses it; shows whether argon2's memory comes back.
    "passwords-spread": (lambda broker, result: password_attack(broker, result, 250), "",
                         {"alice": "right"}),
    "retained": (retained_attack, "", None),
    "queue": (queue_attack, "", None),
    "subscriptions": (subscriptions_attack, "", None),
    "partial": (partial_attack, "", None),
    "retained-cut": (retained_cut_attack, "", None),
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", required=True, help="the tern-broker binary")
    parser.add_argument("--settle", type=float, default=12.0,
                        help="seconds after the attack before RSS is read again")
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    for name in args.scenarios:
        attack, extra, users = SCENARIOS[name]
        result = await scenario(args.broker, name, attack, extra, users, args.settle)
        print(f"| {result.attack} | {result.limits} | {result.peak_mib:.0f} MiB | "
              f"{result.after_mib:.0f} MiB | {result.bystander} | {'; '.join(result.notes)} |",
              flush=True)


if __name__ == "__main__":
    asyncio.run(main())
