"""Harness for the broker-edge suite (issue 3): TLS, WebSocket, PROXY protocol, users and ACL files
with live reload, limits with their metrics, and the admin API — always against the real
``tern-broker`` binary, with independent clients (paho-mqtt, Debian's mosquitto clients, Python's
``ssl`` module, and hand-built MQTT, WebSocket and PROXY bytes).

The conformance suite's helpers are reused, not copied: ``e2e/conformance`` is put on ``sys.path``
for ``clients`` (paho wrappers), ``rawmqtt`` (MQTT bytes and a raw socket client) and ``expect``;
its ``conftest.py`` is loaded under another module name for ``Broker`` (process, log, start-up
wait), ``free_port`` and ``tern_binary``.

The fixtures in ``conftest.py``: ``edge_broker`` (start a broker of this test's own with any
listeners, files and config; every broker gets an HTTP endpoint with an admin token unless the test
says otherwise) and ``pki`` (a test CA that issues server and client certificates with the
``cryptography`` package).

The suite only runs against Tern: its subject is Tern's configuration and admin API, which the
reference broker does not have.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import importlib.util
import ipaddress
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

HERE = Path(__file__).resolve().parent
CONFORMANCE = HERE.parent / "conformance"
if str(CONFORMANCE) not in sys.path:
    sys.path.insert(0, str(CONFORMANCE))

import clients  # noqa: E402  (conformance helper)
import rawmqtt as r  # noqa: E402  (conformance helper)
from expect import IS_MOSQUITTO  # noqa: E402  (conformance helper)


def _load_conformance_conftest():
    """The conformance suite's conftest as a plain module (its Broker class and helpers); pytest
    does not register it as a plugin here, so its fixtures and hooks stay in its own directory."""
    name = "tern_conformance_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CONFORMANCE / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


conformance = _load_conformance_conftest()
free_port = conformance.free_port

WAIT = 10.0  # guard for things that must happen
HOST = "127.0.0.1"


def wait_for(predicate, timeout: float = WAIT, message: str = "condition", interval: float = 0.02):
    return clients.wait_for(predicate, timeout=timeout, interval=interval, message=message)


# --------------------------------------------------------------------------
# Broker
# --------------------------------------------------------------------------

class EdgeBroker(conformance.Broker):
    """A Tern broker with a plain TCP listener named ``mqtt`` (``self.port``, also used to tell
    that the process is up), any extra listeners, and an HTTP endpoint.

    ``listeners``: extra listener entries without ``bind``; each gets a free loopback port, found
    afterwards in ``self.ports[name]``. ``config``: merged over the defaults (anonymous access on,
    file polling off, ``$SYS`` statistics off, client notices on). ``admin_token``: the token
    written to the admin token file, or ``None`` for no admin API. ``open_files``: the process's
    limit on open file descriptors (RLIMIT_NOFILE), or ``None`` to inherit the test's."""

    def __init__(self, workdir: Path, name: str, listeners=(), config: Optional[dict] = None,
                 admin_token: Optional[str] = "edge-token-0", http: bool = True,
                 open_files: Optional[int] = None):
        super().__init__(workdir, name, config)
        if open_files is not None:
            import resource

            def limit_open_files():
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

            self.preexec = limit_open_files
        self.extra_listeners = [dict(entry) for entry in listeners]
        self.ports = {"mqtt": self.port}
        for entry in self.extra_listeners:
            self.ports[entry["name"]] = free_port()
            entry["bind"] = f"{HOST}:{self.ports[entry['name']]}"
        self.http_port = free_port() if http else None
        self.token_path = workdir / f"{name}.token"
        self.admin_token = admin_token
        if admin_token is not None:
            self.token_path.write_text(admin_token + "\n")

    def _tern_command(self) -> list:
        binary = conformance.tern_binary()
        base = {
            "listeners": [{"name": "mqtt", "protocol": "tcp", "bind": f"{HOST}:{self.port}"}]
            + self.extra_listeners,
            "auth": {"allow_anonymous": True, "reload_poll_secs": 0},
            "log": {"level": "debug"},
            "sys": {"interval_secs": 0, "client_notices": True},
        }
        if self.http_port is not None:
            base["http"] = {"bind": f"{HOST}:{self.http_port}"}
            if self.admin_token is not None:
                base["http"]["admin_token_file"] = str(self.token_path)
        config = conformance.deep_merge(base, self.extra)
        path = self.workdir / f"{self.name}.yaml"
        conformance.write_yaml(path, config)
        self.config_path = path
        return [str(binary), "--config", str(path)]

    def start(self, timeout: float = 15.0) -> "EdgeBroker":
        if IS_MOSQUITTO:
            pytest.skip("the edge suite tests Tern's own configuration and admin API")
        super().start(timeout)
        # The process binds its sockets one after another (listeners, then HTTP): the first
        # accepting does not mean the others do yet.
        for port in list(self.ports.values()) + [self.http_port]:
            if port is None:
                continue
            wait_for(lambda: _accepts(port), timeout=timeout,
                     message=f"port {port} of {self.name} to accept")
        return self

    # -- HTTP ----------------------------------------------------------------
    def admin(self, token: Optional[str] = None) -> "Admin":
        return Admin(self.http_port, self.admin_token if token is None else token)

    def metrics(self) -> "Metrics":
        return Metrics.scrape(self.http_port)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _accepts(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1.0).close()
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# HTTP: admin API and metrics
# --------------------------------------------------------------------------

class Response:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<HTTP {self.status} {self.body[:300]!r}>"


def http_request(port: int, method: str, path: str, body=None, headers: Optional[dict] = None,
                 timeout: float = WAIT) -> Response:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        data = None
        hdrs = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


class Admin:
    """The admin API under /api/v1/ with a bearer token."""

    def __init__(self, port: int, token: Optional[str]):
        self.port = port
        self.token = token

    def request(self, method: str, path: str, body=None, token: Optional[str] = "default",
                headers: Optional[dict] = None) -> Response:
        hdrs = dict(headers or {})
        token = self.token if token == "default" else token
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        return http_request(self.port, method, "/api/v1" + path, body, hdrs)

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body=None, **kw) -> Response:
        return self.request("POST", path, body, **kw)

    def delete(self, path: str, **kw) -> Response:
        return self.request("DELETE", path, **kw)

    def ok(self, method: str, path: str, body=None, status: int = 200):
        resp = self.request(method, path, body)
        assert resp.status == status, f"{method} {path}: expected {status}, got {resp!r}"
        return resp.json() if resp.body else None

    def reload(self) -> dict:
        return self.ok("POST", "/reload")

    def subscriptions(self, client_id: str) -> dict:
        """{filter: qos} of one client, from GET /api/v1/subscriptions?client_id=..."""
        body = self.ok("GET", f"/subscriptions?client_id={client_id}")
        return {item["filter"]: item["qos"] for item in body["items"]}

    def client(self, client_id: str) -> Optional[dict]:
        resp = self.get(f"/clients/{client_id}")
        if resp.status == 404:
            return None
        assert resp.status == 200, resp
        return resp.json()


class Metrics:
    """One scrape of /metrics, parsed by prometheus_client's text parser."""

    def __init__(self, samples: dict, families: dict):
        self.samples = samples
        self.families = families

    @classmethod
    def scrape(cls, port: int) -> "Metrics":
        from prometheus_client.parser import text_string_to_metric_families

        resp = http_request(port, "GET", "/metrics")
        assert resp.status == 200, resp
        assert resp.headers.get("content-type", "").startswith("text/plain"), resp.headers
        samples, families = {}, {}
        for family in text_string_to_metric_families(resp.body.decode()):
            families[family.name] = family.type
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                samples[key] = sample.value
        return cls(samples, families)

    def get(self, name: str, **labels) -> float:
        """A sample's value; a sample the page does not have fails the test."""
        key = (name, frozenset((k, str(v)) for k, v in labels.items()))
        assert key in self.samples, (
            f"no sample {name}{labels} in /metrics; have "
            f"{sorted({n for n, _ in self.samples if n.startswith(name.split('{')[0][:12])})}")
        return self.samples[key]

    def limit(self, limit: str) -> float:
        return self.get("tern_limit_hits_total", limit=limit)

    def dropped(self, reason: str) -> float:
        return self.get("tern_messages_dropped_total", reason=reason)


# --------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------

class Leaf:
    def __init__(self, cert, key, cert_path: Path, key_path: Path):
        self.cert = cert
        self.key = key
        self.cert_path = cert_path
        self.key_path = key_path

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    @property
    def der(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding
        return self.cert.public_bytes(Encoding.DER)


class CertificateAuthority:
    """A test CA (EC P-256) that writes PEM files into ``directory``."""

    def __init__(self, directory: Path, name: str):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = directory / f"{name}.pem"
        self._write_cert(self.cert, self.cert_path)

    @staticmethod
    def _write_cert(cert, path: Path) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding
        _atomic_write(path, cert.public_bytes(Encoding.PEM))

    @staticmethod
    def _write_key(key, path: Path) -> None:
        from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption,
                                                                  PrivateFormat)
        _atomic_write(path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))

    def issue(self, common_name: str, *, server: bool, stem: Optional[str] = None) -> Leaf:
        """A leaf certificate (server: SAN localhost and 127.0.0.1, EKU serverAuth; client: EKU
        clientAuth) with a fresh key and serial, written to ``<stem>.crt``/``<stem>.key``
        (replacing existing files atomically, as a Secret update would)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
                critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        stem = stem or common_name
        cert_path = self.directory / f"{stem}.crt"
        key_path = self.directory / f"{stem}.key"
        # Key first, then certificate: a reader between the two sees a mismatch and keeps the old
        # pair (and is told again when the certificate lands).
        self._write_key(key, key_path)
        self._write_cert(cert, cert_path)
        return Leaf(cert, key, cert_path, key_path)

    def server(self, stem: str = "server") -> Leaf:
        return self.issue("tern-test-server", server=True, stem=stem)

    def client(self, common_name: str, stem: Optional[str] = None) -> Leaf:
        return self.issue(common_name, server=False, stem=stem or f"client-{common_name}")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def tls_listener(name: str, protocol: str, server: Leaf, **tls) -> dict:
    entry = {"name": name, "protocol": protocol,
             "tls": {"cert_file": str(server.cert_path), "key_file": str(server.key_path), **tls}}
    return entry


def client_context(ca: Optional[CertificateAuthority], client: Optional[Leaf] = None,
                   alpn=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.cert_path) if ca else None)
    if client is not None:
        ctx.load_cert_chain(str(client.cert_path), str(client.key_path))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def served_certificate(port: int, ctx: ssl.SSLContext):
    """The certificate a fresh TLS handshake on ``port`` is served (parsed)."""
    from cryptography import x509

    with socket.create_connection((HOST, port), timeout=WAIT) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST) as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


# --------------------------------------------------------------------------
# Raw MQTT over TLS and WebSocket, with the conformance RawClient's reading logic
# --------------------------------------------------------------------------

class TlsRawClient(r.RawClient):
    """``rawmqtt.RawClient`` over TLS; ``prefix`` is written in clear first (a PROXY header)."""

    def __init__(self, port: int, ctx: ssl.SSLContext, version: int = 5, timeout: float = 5.0,
                 prefix: bytes = b""):
        self.version = version
        self.default_timeout = timeout
        self.buf = b""
        self.closed = False
        raw = socket.create_connection((HOST, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if prefix:
            raw.sendall(prefix)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=HOST)
        except BaseException:
            raw.close()
            raise

    def _fill(self, deadline: float) -> None:
        try:
            super()._fill(deadline)
        except ssl.SSLError as exc:  # an alert from the server ends the connection
            self.closed = True
            raise r.Closed(f"TLS: {exc}") from exc


class ProxiedRawClient(r.RawClient):
    """``rawmqtt.RawClient`` that writes ``prefix`` (a PROXY header) before anything else."""

    def __init__(self, port: int, prefix: bytes, version: int = 5, timeout: float = 5.0):
        super().__init__(port, version=version, timeout=timeout)
        if prefix:
            self.sock.sendall(prefix)


# WebSocket frames (RFC 6455), built by hand so a test controls exactly how MQTT bytes are cut.
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame: masked, as RFC 6455 §5.3 requires of clients."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = secrets.token_bytes(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_upgrade_request(path: str = "/mqtt", protocols: Optional[str] = "mqtt",
                       host: str = HOST) -> bytes:
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_http_response(sock: socket.socket, timeout: float = WAIT) -> tuple:
    """(status, {lower-case header: value}, bytes after the header block)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines and lines[0].startswith("HTTP/1.1 "), f"not an HTTP response: {data[:200]!r}"
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


class WsRawClient(r.RawClient):
    """``rawmqtt.RawClient`` over a hand-made WebSocket connection: ``send`` puts bytes in one
    binary frame (``send_frames`` gives full control), reads unwrap the server's binary frames.
    A close frame from the server is recorded in ``close_frame`` and ends the stream."""

    def __init__(self, port: int, path: str = "/mqtt", version: int = 5, timeout: float = 5.0,
                 protocols: Optional[str] = "mqtt", sock: Optional[socket.socket] = None):
        self.version = version
        self.default_timeout = timeout
        self.buf = b""
        self.closed = False
        self.close_frame: Optional[tuple] = None
        self.text_frames: list = []
        self.sock = sock or socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(ws_upgrade_request(path, protocols))
        self.status, self.headers, self._wire = read_http_response(self.sock, timeout)

    def send(self, data: bytes) -> None:
        self.send_frames([ws_frame(OP_BINARY, data)])

    def send_frames(self, frames) -> None:
        for frame in frames:
            try:
                self.sock.sendall(frame)
            except OSError as exc:
                raise r.Closed(str(exc)) from exc

    def _frame(self) -> Optional[tuple]:
        """One whole server frame from ``self._wire``: (fin, opcode, payload) or None."""
        w = self._wire
        if len(w) < 2:
            return None
        fin, opcode = bool(w[0] & 0x80), w[0] & 0x0F
        assert not w[1] & 0x80, "server frames must not be masked (RFC 6455 §5.1)"
        n, i = w[1] & 0x7F, 2
        if n == 126:
            if len(w) < 4:
                return None
            n, i = int.from_bytes(w[2:4], "big"), 4
        elif n == 127:
            if len(w) < 10:
                return None
            n, i = int.from_bytes(w[2:10], "big"), 10
        if len(w) < i + n:
            return None
        self._wire = w[i + n:]
        return fin, opcode, w[i:i + n]

    def _fill(self, deadline: float) -> None:
        while True:
            frame = self._frame()
            if frame is None:
                break
            _fin, opcode, payload = frame
            if opcode in (OP_BINARY, OP_CONT):
                self.buf += payload
                return
            if opcode == OP_TEXT:
                self.text_frames.append(payload)
            elif opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.close_frame = (code, payload[2:])
                self.closed = True
                raise r.Closed(f"WebSocket close {code}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise r.NoPacket()
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout as exc:
            raise r.NoPacket() from exc
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
            self.closed = True
            raise r.Closed(str(exc)) from exc
        if not chunk:
            self.closed = True
            raise r.Closed("EOF")
        self._wire += chunk


# --------------------------------------------------------------------------
# paho clients over other transports, with credentials
# --------------------------------------------------------------------------

def paho_client(client_id: str, version: int = 5, *, transport: str = "tcp",
                ws_path: str = "/mqtt", ca: Optional[CertificateAuthority] = None,
                cert: Optional[Leaf] = None, username: Optional[str] = None,
                password: Optional[str] = None, clean_session: Optional[bool] = None):
    """A ``clients.Client`` (conformance helper) not yet started, optionally over WebSocket
    (``transport="websockets"``), TLS (``ca``, ``cert``) and with a username and password.
    Start it with ``.start(port, ...)``; it is closed after the test."""
    import paho.mqtt.client as mqtt

    protocol = {5: mqtt.MQTTv5, 4: mqtt.MQTTv311, 3: mqtt.MQTTv31}[version]
    c = clients.Client(client_id, protocol, clean_session if version != 5 else None)
    if transport != "tcp":
        kwargs = dict(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                      client_id=client_id, protocol=protocol, reconnect_on_failure=False,
                      transport=transport)
        if version != 5:
            kwargs["clean_session"] = clean_session
        old = c.mqtt
        c.mqtt = mqtt.Client(**kwargs)
        for callback in ("on_connect", "on_message", "on_subscribe", "on_unsubscribe",
                         "on_disconnect"):
            setattr(c.mqtt, callback, getattr(old, callback))
        c.mqtt.ws_set_options(path=ws_path)
    if ca is not None:
        c.mqtt.tls_set(ca_certs=str(ca.cert_path),
                       certfile=str(cert.cert_path) if cert else None,
                       keyfile=str(cert.key_path) if cert else None)
    if username is not None:
        c.mqtt.username_pw_set(username, password)
    clients._OPEN.append(c)
    return c


def raw_connect(port: int, client_id: str, version: int = 5, username=None, password=None,
                **kw) -> tuple:
    """Sends CONNECT on a raw socket; returns (client, CONNACK packet or None if closed)."""
    c = r.RawClient(port, version=version)
    c.send(r.connect(client_id, version=version, username=username,
                     password=password.encode() if isinstance(password, str) else password, **kw))
    try:
        return c, c.recv(WAIT)
    except r.Closed:
        return c, None


# --------------------------------------------------------------------------
# Users files
# --------------------------------------------------------------------------

def tern_passwd(path: Path, username: str, password: str) -> None:
    """``tern-broker passwd FILE USER --password-stdin`` (argon2id)."""
    done = subprocess.run([str(conformance.tern_binary()), "passwd", str(path), username,
                           "--password-stdin"], input=password + "\n", text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, f"tern-broker passwd failed: {done.stderr}"


def mosquitto_passwd(path: Path, username: str, password: str, sha512: bool = False) -> None:
    """Debian's ``mosquitto_passwd -b`` (default ``$7$``; ``-H sha512`` for ``$6$``)."""
    binary = "/usr/bin/mosquitto_passwd"
    if not Path(binary).exists():
        pytest.fail("mosquitto_passwd is missing: install Debian's `mosquitto` package",
                    pytrace=False)
    args = [binary, "-b"] + (["-H", "sha512"] if sha512 else []) + [str(path), username, password]
    if not path.exists():
        path.touch()
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"mosquitto_passwd failed: {done.stderr}"


def write_text(path: Path, text: str) -> None:
    """Replaces a file atomically (a rename, as Kubernetes does with a Secret volume)."""
    _atomic_write(path, text.encode())


def wait_log(broker: EdgeBroker, pattern: str, after: int = 0, timeout: float = WAIT) -> str:
    """Waits for a broker log line matching ``pattern`` at or after character ``after``."""
    rx = re.compile(pattern)

    def find():
        text = broker.log_text()[after:]
        m = rx.search(conformance._ANSI.sub("", text))
        return m.group(0) if m else None

    return wait_for(find, timeout, message=f"log line /{pattern}/")
