"""Harness for the MQTT conformance suite: start a broker, hand tests its port.

Which broker runs is chosen by the environment:

* ``TERN_TEST_BROKER=tern`` (default): ``TERN_BROKER_BIN`` or
  ``<repo>/target/debug/tern-broker``, run as ``tern-broker --config FILE``.
* ``TERN_TEST_BROKER=mosquitto``: Debian's ``mosquitto`` with a generated
  mosquitto.conf. Mosquitto is a reference used to validate the tests, not the
  source of truth: tests where it deviates from the specification are marked
  with ``xfail_on_mosquitto`` and name the statement it breaks.

Fixtures: ``broker`` (one per module), ``fresh_broker`` (one per test) and
``broker_factory`` (per test, with extra config such as ``limits``). Each
broker's stdout and stderr go to a log file; when a test fails, the tail of
every running broker's log is attached to the report.

``TERN_TEST_CLUSTER=N`` (Tern only) runs every broker as a cluster of N nodes on their own
loopback addresses (127.B.C.1 … N, one port for all), and spreads each test's connections over the
nodes in turn: the suite then checks that the cluster behaves to clients as one broker.
``TERN_TEST_CLUSTER_ACKNOWLEDGE=cluster`` runs those nodes with ``cluster.acknowledge: cluster``.

``--covered-out FILE`` writes ``statement-id<TAB>test-node-id`` lines, taken
from the ``[MQTT-x.y.z-n]`` citations in test docstrings (see ``citations``).
"""

from __future__ import annotations

import atexit
import copy
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

import pytest
import yaml

import clients

from expect import BROKER_KIND, IS_TERN

REPO = Path(__file__).resolve().parents[2]

# Tern config keys (section, key) that mosquitto.conf can express, as
# (mosquitto option, smallest value mosquitto accepts or None). A test that sets a
# key missing here is skipped on mosquitto: it has no equivalent setting.
MOSQUITTO_OPTIONS = {
    ("limits", "max_packet_size"): ("max_packet_size", 20),
    ("limits", "max_queued_messages"): ("max_queued_messages", 0),
    ("limits", "receive_maximum"): ("max_inflight_messages", 0),
    ("limits", "topic_alias_maximum"): ("max_topic_alias", 0),
    ("limits", "server_keep_alive"): ("max_keepalive", 10),
    ("features", "maximum_qos"): ("max_qos", 0),
    ("features", "retain_available"): ("retain_available", None),
}

LOG_TAIL_LINES = 60

# Cluster mode: the number of nodes per broker (0: a single broker).
CLUSTER_SIZE = int(os.environ.get("TERN_TEST_CLUSTER", "0") or 0)
# `cluster.acknowledge` of the nodes in cluster mode: `local` (the default) or `cluster`.
CLUSTER_ACKNOWLEDGE = os.environ.get("TERN_TEST_CLUSTER_ACKNOWLEDGE", "local")
_next_block = [150 * 256]


def _cluster_block() -> str:
    """The first three octets of a fresh loopback block for one test cluster."""
    block = _next_block[0]
    _next_block[0] += 1
    return f"127.{block // 256}.{block % 256}"

def _http_ok(host: str, port: int, path: str) -> bool:
    """Whether GET `path` on host:port answers 200."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def write_yaml(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


_BINARY_COPY: list = []


def tern_binary() -> Path:
    """The Tern binary, copied once per run so that a rebuild during the run (cargo replaces
    the file) cannot mix two builds or catch a half-written file."""
    if _BINARY_COPY:
        return _BINARY_COPY[0]
    source = Path(os.environ.get("TERN_BROKER_BIN", REPO / "target" / "debug" / "tern-broker"))
    if not source.exists():
        pytest.fail(f"tern broker binary not found at {source} (build it, or set "
                    f"TERN_BROKER_BIN, or run with TERN_TEST_BROKER=mosquitto)", pytrace=False)
    copy = Path(tempfile.mkdtemp(prefix="tern-conformance-")) / "tern-broker"
    shutil.copy2(source, copy)
    atexit.register(shutil.rmtree, copy.parent, True)
    _BINARY_COPY.append(copy)
    return copy


class Broker:
    """One broker process on a free loopback port, with its log in a file."""

    # Run in the child before the broker starts (a resource limit, say); None for nothing.
    preexec = None

    def __init__(self, workdir: Path, name: str, config: Optional[dict] = None):
        self.kind = BROKER_KIND
        self.host = "127.0.0.1"
        self.port = free_port()
        self.workdir = workdir
        self.name = name
        self.extra = config or {}
        self.log_path = workdir / f"{name}.log"
        self.proc: Optional[subprocess.Popen] = None
        # In cluster mode (`TERN_TEST_CLUSTER`): the nodes, each a process on its own address.
        self.nodes: list = []

    # -- configuration -----------------------------------------------------
    def _tern_command(self) -> list:
        binary = tern_binary()
        config = deep_merge({
            "listeners": [{"name": "mqtt", "protocol": "tcp", "bind": f"127.0.0.1:{self.port}"}],
            "auth": {"allow_anonymous": True},
            "log": {"level": "debug"},
            "sys": {"interval_secs": 1},
        }, self.extra)
        path = self.workdir / f"{self.name}.yaml"
        write_yaml(path, config)
        return [str(binary), "--config", str(path)]

    def _mosquitto_command(self) -> list:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "sys_interval 1",
            "persistence false",
            "log_dest stderr",
            "log_type all",
        ]
        for section, values in self.extra.items():
            if not isinstance(values, dict):
                pytest.skip(f"mosquitto has no setting equivalent to Tern's {section}")
            for key, value in values.items():
                if (section, key) not in MOSQUITTO_OPTIONS:
                    pytest.skip(f"mosquitto has no setting equivalent to Tern's {section}.{key}")
                option, minimum = MOSQUITTO_OPTIONS[(section, key)]
                if minimum is not None and value < minimum:
                    pytest.skip(f"mosquitto's {option} cannot be below {minimum} (test uses {value})")
                rendered = str(value).lower() if isinstance(value, bool) else value
                lines.append(f"{option} {rendered}")
        path = self.workdir / f"{self.name}.conf"
        path.write_text("\n".join(lines) + "\n")
        return ["mosquitto", "-c", str(path)]

    def _cluster_node_command(self, block: str, index: int, gossip_port: int) -> list:
        ip = f"{block}.{index + 1}"
        seeds = [f"{block}.{n + 1}:{gossip_port}" for n in range(min(2, CLUSTER_SIZE))]
        config = deep_merge({
            "listeners": [{"name": "mqtt", "protocol": "tcp", "bind": f"{ip}:{self.port}"}],
            "auth": {"allow_anonymous": True},
            "log": {"level": "debug"},
            "sys": {"interval_secs": 1},
            "http": {"bind": f"{ip}:{self.port + 1}"},
            "cluster": {"name": self.name, "node_id": f"{self.name}-{index}",
                        "bind": f"{ip}:{gossip_port}", "seeds": seeds,
                        "gossip_interval_ms": 100, "acknowledge": CLUSTER_ACKNOWLEDGE},
        }, copy.deepcopy(self.extra))
        # Listeners a test adds bind to this node's address (they name 127.0.0.1).
        for listener in config.get("listeners", []):
            listener["bind"] = listener["bind"].replace("127.0.0.1:", f"{ip}:")
        path = self.workdir / f"{self.name}-{index}.yaml"
        write_yaml(path, config)
        return [str(tern_binary()), "--config", str(path)]

    def _start_cluster(self, timeout: float) -> "Broker":
        block = _cluster_block()
        gossip_port = free_port()
        self.host = f"{block}.1"
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")
        log = open(self.log_path, "ab")
        for index in range(CLUSTER_SIZE):
            command = self._cluster_node_command(block, index, gossip_port)
            self.nodes.append(subprocess.Popen(command, stdout=log, stderr=log,
                                               stdin=subprocess.DEVNULL, cwd=self.workdir, env=env))
        log.close()
        self.proc = self.nodes[0]
        _RUNNING.append(self)
        deadline = time.monotonic() + timeout
        for index in range(CLUSTER_SIZE):
            ip = f"{block}.{index + 1}"
            while True:
                if self.nodes[index].poll() is not None:
                    pytest.fail(f"cluster node {index} exited with {self.nodes[index].returncode}:\n"
                                f"{self.tail()}", pytrace=False)
                if _http_ok(ip, self.port + 1, "/readyz"):
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"cluster node {index} not ready within {timeout}s:\n{self.tail()}",
                                pytrace=False)
                time.sleep(0.02)
        hosts = [f"{block}.{n + 1}" for n in range(CLUSTER_SIZE)]
        self.ports = [int(listener["bind"].rsplit(":", 1)[1])
                      for listener in self.extra.get("listeners", [])] or [self.port]
        for port in self.ports:
            clients.set_hosts(port, hosts)
        return self

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout: float = 15.0) -> "Broker":
        if CLUSTER_SIZE and IS_TERN:
            return self._start_cluster(timeout)
        command = self._tern_command() if IS_TERN else self._mosquitto_command()
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")
        self.proc = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     cwd=self.workdir, env=env, preexec_fn=self.preexec)
        log.close()
        _RUNNING.append(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.kind} exited with {self.proc.returncode} before accepting "
                            f"connections:\n{self.tail()}", pytrace=False)
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{self.kind} did not accept on port {self.port} within "
                                f"{timeout}s:\n{self.tail()}", pytrace=False)
                time.sleep(0.02)

    def processes(self) -> list:
        return self.nodes or ([self.proc] if self.proc else [])

    def signal(self, sig: int) -> None:
        for proc in self.processes():
            if proc.poll() is None:
                proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> Optional[int]:
        """Waits for every process; the first one's exit status, or None if one is still running."""
        deadline = time.monotonic() + timeout
        codes = []
        for proc in self.processes():
            try:
                codes.append(proc.wait(max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                return None
        return codes[0] if codes else None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if the broker has not exited within `timeout`."""
        if not self.processes():
            return
        self.signal(signal.SIGTERM)
        if self.wait_exit(timeout) is None:
            for proc in self.processes():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
        for port in getattr(self, "ports", []):
            clients.set_hosts(port, None)
        if self in _RUNNING:
            _RUNNING.remove(self)

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        text = _ANSI.sub("", text)
        return "\n".join(text.splitlines()[-lines:])

    @property
    def address(self) -> tuple:
        return self.host, self.port


_RUNNING: list = []
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def broker(tmp_path_factory, request):
    """One broker shared by the tests of a module (tests use distinct topics and ids)."""
    workdir = tmp_path_factory.mktemp(request.module.__name__)
    b = Broker(workdir, "broker").start()
    yield b
    b.stop()


@pytest.fixture
def fresh_broker(tmp_path):
    """A broker of this test's own, for tests where broker-wide state matters."""
    b = Broker(tmp_path, "broker").start()
    yield b
    b.stop()


@pytest.fixture
def broker_factory(tmp_path):
    """start(config=None) -> Broker with extra config merged into the default."""
    started = []

    def start(config: Optional[dict] = None, name: Optional[str] = None) -> Broker:
        b = Broker(tmp_path, name or f"broker{len(started)}", config).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    clients.close_all()


@pytest.fixture
def uid(request) -> str:
    """A short id unique to this test: for topics and client ids on a shared broker."""
    base = re.sub(r"[^A-Za-z0-9]", "", request.node.name.replace("test_", ""))[-14:]
    return f"{base}{os.getpid() % 1000}{time.monotonic_ns() % 100000}"


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------

def pytest_addoption(parser):
    parser.addoption("--covered-out", default=None,
                     help="write statement-id<TAB>test-node-id lines for the collected tests")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "tern_config(keys): the test sets Tern config keys the lead planned "
                   "(e.g. limits.max_packet_size); adjust here if the names change")
    config.addinivalue_line("markers", "slow_timer: the test waits on a timer the spec defines")


def pytest_report_header(config):
    return f"broker under test: {BROKER_KIND}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for b in _RUNNING:
            report.sections.append((f"{b.kind} log tail ({b.log_path})", b.tail()))


# Citations. The project's scripts/conformance.py (catalogue e2e/conformance/statements.tsv)
# is the authority on reading them; when it is there, --covered-out uses it, so COVERED.txt
# and docs/conformance.md agree. Otherwise a simple reader: "v5" / "v3.1.1" before bracketed
# ids applies to them; an unmarked id belongs to 3.1.1 if the test name says v311/v31, else 5.0.
_CITATION = re.compile(r"(?<![\w.])(v5|v3\.1\.1)(?![\w.])|\[(MQTT-[0-9.]+-[0-9]+)\]")


def citations(doc: str, name: str = "") -> list:
    version = "3.1.1" if re.search(r"(?:^|_)(?:v311|v31)(?:_|$)", name) else "5.0"
    out = []
    for match in _CITATION.finditer(doc or ""):
        if match.group(1):
            version = "5.0" if match.group(1) == "v5" else "3.1.1"
        else:
            out.append(f"{version}:{match.group(2)}")
    return out


def _covered_by_project_script() -> Optional[list]:
    script = REPO / "scripts" / "conformance.py"
    if not script.exists():
        return None
    import importlib.util
    spec = importlib.util.spec_from_file_location("tern_conformance", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    statements = module.read_catalogue(REPO / module.CATALOGUE)
    lines = []
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        for test_id, name, blocks in module.python_tests(path):
            found, _unknown = module.citations(blocks, name, statements)
            for version, sid in sorted(found, key=lambda vs: (vs[0], module.sort_key(vs[1]))):
                lines.append(f"{version}:{sid}\t{test_id}")
    return lines


def pytest_collection_modifyitems(session, config, items):
    """--covered-out FILE: "<version>:<statement id><TAB><test id>" per citation."""
    path = config.getoption("--covered-out")
    if not path:
        return
    lines = _covered_by_project_script()
    if lines is None:
        lines = []
        for item in items:
            doc = getattr(getattr(item, "function", None), "__doc__", "") or ""
            node = f"{Path(item.path).relative_to(REPO)}::{item.originalname}"
            for statement in citations(doc, item.originalname):
                lines.append(f"{statement}\t{node}")
        lines = list(dict.fromkeys(lines))
    Path(path).write_text("\n".join(lines) + "\n")
