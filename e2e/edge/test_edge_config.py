"""The edge's configuration keys as `tern-broker --config FILE --check-config` and a start see them
(docs/configuration.md: a bad key or value is refused with its path and the broker exits with
status 2; `--check-config` only checks). TLS, WebSocket and PROXY listener settings, and files
that cannot be read."""

from __future__ import annotations

import subprocess

import pytest

from .helpers import conformance, free_port, write_text


def _run(tmp_path, config: dict, check: bool = True) -> subprocess.CompletedProcess:
    path = tmp_path / "tern.yaml"
    conformance.write_yaml(path, config)
    args = [str(conformance.tern_binary()), "--config", str(path)]
    if check:
        args.append("--check-config")
    env = {"PATH": "/usr/bin:/bin", "RUST_BACKTRACE": "0"}
    return subprocess.run(args, capture_output=True, text=True, timeout=20, env=env,
                          cwd=tmp_path)


def _pem_pair(tmp_path, pki):
    leaf = pki().server()
    return str(leaf.cert_path), str(leaf.key_path)


def _listener(**fields) -> dict:
    return {"listeners": [{"name": "edge", "bind": f"127.0.0.1:{free_port()}", **fields}]}


@pytest.mark.parametrize("fields,key", [
    ({"protocol": "tls"}, "listeners[0].tls"),
    ({"protocol": "wss"}, "listeners[0].tls"),
    ({"protocol": "tcp", "tls": {"cert_file": "c", "key_file": "k"}}, "listeners[0].tls"),
    ({"protocol": "tcp", "websocket": {"path": "/mqtt"}}, "listeners[0].websocket"),
    ({"protocol": "ws", "websocket": {"path": "/mqtt", "colour": "red"}}, "colour"),
    ({"protocol": "tcp", "proxy_protocol": "yes"}, "proxy_protocol"),
    ({"protocol": "quic"}, "protocol"),
])
def test_listener_settings_are_checked(tmp_path, fields, key):
    """Listener settings that cannot work are refused by `--check-config` with exit status 2 and
    the offending key in the message: `tls`/`wss` without a `tls` section, a `tls` or `websocket`
    section on a listener that does not use it, unknown keys, wrong types, unknown protocols."""
    done = _run(tmp_path, _listener(**fields))
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert key in done.stderr, done.stderr


@pytest.mark.parametrize("option", ["require_client_certificate", "use_identity_as_username"])
def test_client_certificate_options_without_a_client_ca_are_refused_by_check_config(
        tmp_path, pki, option):
    """docs/configuration.md: `require_client_certificate` and `use_identity_as_username` "Need
    `client_ca_file`". A file that sets one without `client_ca_file` cannot start a broker, so
    `--check-config` must refuse it (exit status 2, naming `listeners[0].tls`), not report it
    valid; and starting the broker with it fails with the same status and explanation."""
    cert, key = _pem_pair(tmp_path, pki)
    config = _listener(protocol="tls", tls={"cert_file": cert, "key_file": key, option: True})
    checked = _run(tmp_path, config)
    assert checked.returncode == 2, (checked.returncode, checked.stdout, checked.stderr)
    assert "listeners[0].tls" in checked.stderr and "client_ca_file" in checked.stderr
    started = _run(tmp_path, config, check=False)
    assert started.returncode == 2, (started.returncode, started.stderr)
    assert "client_ca_file" in started.stderr


@pytest.mark.parametrize("what", ["cert_file", "users_file", "acl_file", "admin_token_file"])
def test_an_unreadable_file_stops_the_start_and_names_the_file(tmp_path, pki, what):
    """A certificate, users, ACL or admin token file that does not exist stops the broker at
    start: it exits with a non-zero status and the message names the missing file; nothing is
    left listening."""
    cert, key = _pem_pair(tmp_path, pki)
    missing = str(tmp_path / f"missing-{what}")
    port = free_port()
    config = {"listeners": [{"name": "mqtt", "bind": f"127.0.0.1:{port}"}]}
    if what == "cert_file":
        config["listeners"][0].update(protocol="tls", tls={"cert_file": missing, "key_file": key})
    elif what == "admin_token_file":
        config["http"] = {"bind": f"127.0.0.1:{free_port()}", "admin_token_file": missing}
    else:
        config["auth"] = {what: missing}
    done = _run(tmp_path, config, check=False)
    assert done.returncode != 0, done.stderr
    assert missing in done.stderr, done.stderr


def test_a_broken_acl_file_stops_the_start_with_its_line(tmp_path):
    """An ACL file with an error at start is refused like on reload: the broker exits non-zero and
    the message names the file and the line."""
    acl = tmp_path / "acl.txt"
    write_text(acl, "allow all subscribe a/#\nallow user\n")
    done = _run(tmp_path, {"listeners": [{"name": "mqtt", "bind": f"127.0.0.1:{free_port()}"}],
                           "auth": {"acl_file": str(acl)}}, check=False)
    assert done.returncode != 0
    assert str(acl) in done.stderr and "line 2" in done.stderr, done.stderr
