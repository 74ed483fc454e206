"""TLS listeners: server certificates trusted through a test CA, ALPN, client certificates (mTLS),
the certificate's common name as the username, and certificate rotation while clients stay
connected — with Debian's mosquitto_sub, paho-mqtt and Python's ssl module as clients."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

import expect  # conformance helper

from .helpers import (HOST, WAIT, TlsRawClient, client_context, clients, paho_client, r,
                      served_certificate, tern_passwd, tls_listener, wait_for, write_text)


def _mosquitto_sub(port: int, cafile, client_id: str, topic: str, host: str = HOST,
                   extra=()) -> subprocess.Popen:
    return subprocess.Popen(
        ["mosquitto_sub", "-h", host, "-p", str(port), "--cafile", str(cafile), "-i", client_id,
         "-t", topic, "-q", "1", "-C", "1", "-W", str(int(WAIT)), "-v", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_mosquitto_sub_trusts_the_test_ca_over_tls(edge_broker, pki):
    """`protocol: tls` serves the configured certificate: `mosquitto_sub --cafile CA` (OpenSSL,
    with host name verification) connects to the TLS listener, subscribes, and gets a message
    published over plain TCP; the admin API shows it on the `tls` listener."""
    ca = pki()
    b = edge_broker([tls_listener("tls", "tls", ca.server())])
    sub = _mosquitto_sub(b.ports["tls"], ca.cert_path, "tls-sub", "secure/#", host="localhost")
    try:
        admin = b.admin()
        wait_for(lambda: "secure/#" in admin.subscriptions("tls-sub"),
                 message="mosquitto_sub's subscription")
        assert admin.client("tls-sub")["client"]["listener"] == "tls"
        pub = clients.connect_v5(b.port, "tls-pub")
        pub.publish("secure/hello", b"over tls", qos=1)
        out, err = sub.communicate(timeout=WAIT)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate()
    assert sub.returncode == 0, err
    assert out.strip() == "secure/hello over tls", out


def test_mosquitto_sub_refuses_a_server_signed_by_another_ca(edge_broker, pki):
    """The listener's certificate chains to the test CA only: `mosquitto_sub` given another CA's
    certificate as `--cafile` fails the handshake and exits with an error."""
    ca, other = pki("test-ca"), pki("other-ca")
    b = edge_broker([tls_listener("tls", "tls", ca.server())])
    sub = _mosquitto_sub(b.ports["tls"], other.cert_path, "tls-untrusted", "x", host="localhost")
    out, err = sub.communicate(timeout=WAIT + 5)
    assert sub.returncode != 0 and out == "", (sub.returncode, out, err)


@pytest.mark.parametrize("alpn", [None, ["mqtt"]], ids=["no-alpn", "alpn-mqtt"])
def test_tls_handshake_with_and_without_alpn(edge_broker, pki, alpn):
    """The TLS listener confirms ALPN `mqtt` to clients that offer it and does not require ALPN
    from clients that offer none; MQTT then works over the TLS stream (CONNECT → CONNACK 0,
    SUBSCRIBE, PUBLISH to self)."""
    ca = pki()
    b = edge_broker([tls_listener("tls", "tls", ca.server())])
    with TlsRawClient(b.ports["tls"], client_context(ca, alpn=alpn)) as c:
        assert c.sock.selected_alpn_protocol() == (alpn[0] if alpn else None)
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        c.handshake("tls-raw")
        c.subscribe("raw/tls", r.sub_options(qos=1))
        c.send(r.publish("raw/tls", b"x", qos=1, packet_id=7))
        got = [c.recv(WAIT), c.recv(WAIT)]
    assert sorted(p.type for p in got) == [r.PUBLISH, r.PUBACK], got


def _mtls_broker(edge_broker, ca, *, use_identity: bool = False, config=None):
    tls = {"client_ca_file": str(ca.cert_path), "require_client_certificate": True}
    if use_identity:
        tls["use_identity_as_username"] = True
    return edge_broker([tls_listener("mtls", "tls", ca.server(), **tls)], config)


def _refused_at_tls(port: int, ctx: ssl.SSLContext) -> str:
    """Connects and sends CONNECT; returns how the server refused. Fails if a CONNACK arrives."""
    try:
        c = TlsRawClient(port, ctx)
    except (ssl.SSLError, ConnectionError) as exc:
        return f"handshake: {exc}"
    with c:
        # TLS 1.3: the client finishes its side before the server has checked the certificate,
        # so the refusal (an alert, or a close) shows on the first read.
        c.send_quietly(r.connect("mtls-refused"))
        packets, closed = c.read_until_closed(WAIT)
        assert closed and not packets, f"the broker answered a client it must refuse: {packets}"
        return "closed after handshake"


def test_mtls_accepts_a_ca_signed_client_and_refuses_others(edge_broker, pki):
    """`require_client_certificate: true` with `client_ca_file`: a client presenting a
    certificate signed by that CA connects (paho-mqtt over TLS, publish and receive), one without
    a certificate and one whose certificate comes from another CA never get a CONNACK — the
    handshake fails or the connection is closed at once."""
    ca, other = pki("test-ca"), pki("other-ca")
    b = _mtls_broker(edge_broker, ca)
    port = b.ports["mtls"]
    good = paho_client("mtls-ok", ca=ca, cert=ca.client("device-1")).start(port)
    assert good.subscribe("m/#", qos=1) == [1]
    good.publish("m/1", b"mutual", qos=1)
    assert good.wait_message("m/1").payload == b"mutual"

    _refused_at_tls(port, client_context(ca))
    _refused_at_tls(port, client_context(ca, other.client("intruder")))
    assert b.admin().client("mtls-refused") is None


def test_certificate_common_name_is_the_username(edge_broker, pki, tmp_path):
    """`use_identity_as_username: true`: the client certificate's CN replaces whatever username
    CONNECT carries. Proven through the ACL: `allow user device-7 publish telemetry/device-7`
    lets the client (CONNECT username `mallory`) publish there (v5 PUBACK success) but not to
    `telemetry/mallory` (PUBACK 0x87); `allow all subscribe users/%u/#` grants `users/device-7/#`
    and refuses `users/mallory/#` (SUBACK 0x87); the admin API reports username `device-7`."""
    ca = pki()
    acl = tmp_path / "acl.txt"
    acl.write_text("allow user device-7 publish telemetry/device-7\n"
                   "allow all subscribe users/%u/#\n")
    b = _mtls_broker(edge_broker, ca, use_identity=True,
                     config={"auth": {"acl_file": str(acl)}})
    leaf = ca.client("device-7")
    with TlsRawClient(b.ports["mtls"], client_context(ca, leaf)) as c:
        c.handshake("cn-client", username="mallory", password=b"irrelevant")
        assert c.subscribe("users/device-7/#", r.sub_options(qos=1)).codes == [1]
        assert c.subscribe("users/mallory/#", r.sub_options(qos=1), packet_id=2).codes == [0x87]
        c.send(r.publish("telemetry/device-7", b"ok", qos=1, packet_id=3))
        assert c.expect(r.PUBACK).reason in (0x00, 0x10)
        c.send(r.publish("telemetry/mallory", b"no", qos=1, packet_id=4))
        assert c.expect(r.PUBACK).reason == 0x87
        info = b.admin().client("cn-client")["client"]
        assert info["username"] == "device-7", info


def test_certificate_identity_needs_no_password_with_anonymous_off(edge_broker, pki, tmp_path):
    """A verified client certificate is the client's credential: with `allow_anonymous: false`
    and a users file that does not list its CN, a client presenting a CA-signed certificate
    (and no username or password in CONNECT) on a `use_identity_as_username` listener is let in
    as user `device-9` (CONNACK 0), like Mosquitto's `use_identity_as_username`; a plain-TCP
    client without credentials is still refused (0x87)."""
    ca = pki()
    users = tmp_path / "users.txt"
    users.write_text("")
    tern_passwd(users, "alice", "alice-pw")
    b = _mtls_broker(edge_broker, ca, use_identity=True,
                     config={"auth": {"allow_anonymous": False, "users_file": str(users)}})
    with r.RawClient(b.port) as anon:
        anon.send(r.connect("anon"))
        assert anon.expect(r.CONNACK).reason == 0x87
    with TlsRawClient(b.ports["mtls"], client_context(ca, ca.client("device-9"))) as c:
        c.send(r.connect("cert-only"))
        connack = c.expect(r.CONNACK)
        assert connack.reason == 0x00, f"certificate client refused: {connack!r}"
        assert b.admin().client("cert-only")["client"]["username"] == "device-9"


@pytest.mark.parametrize("trigger", ["file_watcher", "admin_reload"])
def test_certificate_rotation_while_clients_stay_connected(edge_broker, pki, trigger):
    """Certificate rotation: the cert and key files are replaced (new key, new serial, same CA)
    while a paho client is connected over TLS. Via the file watcher (`reload_poll_secs: 1`) or
    `POST /api/v1/reload` (watcher off; the response reports `tls` changed), new handshakes are
    served the new certificate (serial and DER read with `getpeercert(binary_form=True)`), the
    connected client is not disconnected and keeps receiving, and a new client connects over
    TLS with the new certificate."""
    ca = pki()
    first = ca.server()
    poll = 1 if trigger == "file_watcher" else 0
    b = edge_broker([tls_listener("tls", "tls", first)],
                    {"auth": {"reload_poll_secs": poll}})
    port = b.ports["tls"]
    ctx = client_context(ca)
    assert served_certificate(port, ctx).serial_number == first.serial

    old = paho_client("rot-old", ca=ca).start(port)
    assert old.subscribe("rot/#", qos=1) == [1]
    pub = clients.connect_v5(b.port, "rot-pub")
    pub.publish("rot/before", b"1", qos=1)
    old.wait_message("rot/before")

    second = ca.server()  # same file names, new contents
    assert second.serial != first.serial
    if trigger == "admin_reload":
        body = b.admin().reload()
        assert {"name": "tls", "changed": True, "error": None} in body["reloaded"], body
        served = served_certificate(port, ctx)
    else:
        served = wait_for(
            lambda: (lambda cert: cert if cert.serial_number == second.serial else None)(
                served_certificate(port, ctx)),
            message="the new certificate served by the watcher")
    assert served.serial_number == second.serial
    assert served.public_bytes(Encoding.DER) == second.der

    pub.publish("rot/after", b"2", qos=1)
    assert old.wait_message("rot/after").payload == b"2"
    assert not old.disconnected.is_set(), "rotation disconnected an established client"

    new = paho_client("rot-new", ca=ca).start(port)
    assert new.subscribe("rot/#", qos=1) == [1]
    pub.publish("rot/new", b"3", qos=1)
    assert new.wait_message("rot/new").payload == b"3"
    assert old.wait_message("rot/new").payload == b"3"


def test_a_broken_certificate_file_is_refused_and_the_old_one_kept(edge_broker, pki):
    """Reloading a key file that is not PEM fails: `POST /api/v1/reload` answers 422 with the
    `tls` outcome naming the key file; the listener keeps serving the previous certificate to
    new handshakes."""
    ca = pki()
    leaf = ca.server()
    b = edge_broker([tls_listener("tls", "tls", leaf)])
    write_text(leaf.key_path, "not a key\n")
    resp = b.admin().post("/reload")
    assert resp.status == 422, resp
    tls = [o for o in resp.json()["reloaded"] if o["name"] == "tls"]
    assert tls and str(leaf.key_path) in (tls[0]["error"] or ""), resp.json()
    assert served_certificate(b.ports["tls"], client_context(ca)).serial_number == leaf.serial
    with TlsRawClient(b.ports["tls"], client_context(ca)) as c:
        c.handshake("after-bad-reload")


def test_a_password_change_does_not_disconnect_certificate_clients(edge_broker, pki, tmp_path):
    """A users-file reload disconnects clients whose password changed — but a client that logged
    in as `device-7` with its certificate (no password involved) stays connected when
    `device-7`'s password is changed, while the MQTT 5 client that used the old password gets
    DISCONNECT 0x87."""
    ca = pki()
    users = tmp_path / "users.txt"
    tern_passwd(users, "device-7", "old-pw")
    b = _mtls_broker(edge_broker, ca, use_identity=True,
                     config={"auth": {"allow_anonymous": False, "users_file": str(users)}})
    with TlsRawClient(b.ports["mtls"], client_context(ca, ca.client("device-7"))) as by_cert, \
            r.RawClient(b.port) as by_password:
        by_cert.handshake("by-cert")
        by_password.handshake("by-password", username="device-7", password=b"old-pw")
        tern_passwd(users, "device-7", "new-pw")
        body = b.admin().reload()
        assert {"name": "users_and_acl", "changed": True, "error": None} in body["reloaded"]
        expect.disconnected(by_password, 0x87, timeout=WAIT)
        expect.still_open(by_cert)


def test_listed_certificate_identities_are_revoked_with_their_user(edge_broker, pki, tmp_path):
    """`auth.certificate_identities: listed`: a CA-signed certificate logs in only when its CN is a
    user of the users file — `device-2`, not listed, gets CONNACK 0x87 Not authorized (MQTT 5
    §3.2.2.2) and `device-1` connects. Removing `device-1` from the users file closes its
    connected client with DISCONNECT 0x87 (§3.14.2.1) and refuses it from then on, so a
    certificate is revoked without waiting for it to expire; `device-3` stays connected."""
    ca = pki()
    users = tmp_path / "users.txt"
    for name in ("device-1", "device-3"):
        tern_passwd(users, name, f"{name}-unused-pw")
    b = _mtls_broker(edge_broker, ca, use_identity=True,
                     config={"auth": {"allow_anonymous": False, "users_file": str(users),
                                      "certificate_identities": "listed"}})
    port = b.ports["mtls"]
    with TlsRawClient(port, client_context(ca, ca.client("device-2"))) as unlisted:
        unlisted.send(r.connect("unlisted"))
        assert unlisted.expect(r.CONNACK).reason == 0x87
    with TlsRawClient(port, client_context(ca, ca.client("device-1"))) as removed, \
            TlsRawClient(port, client_context(ca, ca.client("device-3"))) as kept:
        removed.handshake("removed")
        kept.handshake("kept")
        remaining = [line for line in users.read_text().splitlines()
                     if not line.startswith("device-1:")]
        write_text(users, "\n".join(remaining) + "\n")
        body = b.admin().reload()
        assert {"name": "users_and_acl", "changed": True, "error": None} in body["reloaded"]
        expect.disconnected(removed, 0x87, timeout=WAIT)
        expect.still_open(kept)
    with TlsRawClient(port, client_context(ca, ca.client("device-1"))) as again:
        again.send(r.connect("removed-again"))
        assert again.expect(r.CONNACK).reason == 0x87


def test_client_ca_rotation(edge_broker, pki):
    """The client CA file is reloaded too: after `client_ca_file` is replaced by another CA and
    `POST /api/v1/reload`, a client certificate from the new CA is accepted and one from the old CA
    is refused; the client connected with the old CA's certificate before the change stays
    connected."""
    old_ca, new_ca = pki("old-client-ca"), pki("new-client-ca")
    server_ca = pki("server-ca")
    bundle = old_ca.cert_path.with_name("client-ca-bundle.pem")
    shutil.copy(old_ca.cert_path, bundle)
    b = edge_broker([tls_listener("mtls", "tls", server_ca.server(), client_ca_file=str(bundle),
                                  require_client_certificate=True)])
    port = b.ports["mtls"]
    old_leaf, new_leaf = old_ca.client("old-device"), new_ca.client("new-device")
    with TlsRawClient(port, client_context(server_ca, old_leaf)) as before:
        before.handshake("before-rotation")
        write_text(bundle, new_ca.cert_path.read_text())
        body = b.admin().reload()
        assert {"name": "tls", "changed": True, "error": None} in body["reloaded"], body
        with TlsRawClient(port, client_context(server_ca, new_leaf)) as c:
            c.handshake("new-ca-client")
        _refused_at_tls(port, client_context(server_ca, old_leaf))
        expect.still_open(before)


def test_tls_1_2_and_1_3_are_both_served(edge_broker, pki):
    """docs/configuration.md: TLS 1.2 and 1.3. A client limited to TLS 1.2 and one requiring
    TLS 1.3 both complete the handshake and get a CONNACK."""
    ca = pki()
    b = edge_broker([tls_listener("tls", "tls", ca.server())])
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_context(ca)
        ctx.minimum_version = ctx.maximum_version = version
        with TlsRawClient(b.ports["tls"], ctx) as c:
            assert c.sock.version() == version.name.replace("v1_", "v1."), c.sock.version()
            c.handshake(f"tls-{version.name}")
