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


def _files_config(tmp_path, pki, broken: str) -> tuple:
    """A configuration naming a TLS listener's certificate and key, a users file, an ACL file and
    an admin token file, all good except ``broken`` (the setting), which is missing or garbled.
    Returns (config, path of the broken file)."""
    leaf = pki().server()
    files = {
        "cert_file": leaf.cert_path, "key_file": leaf.key_path,
        "users_file": tmp_path / "users.txt", "acl_file": tmp_path / "acl.txt",
        "admin_token_file": tmp_path / "admin-token",
    }
    write_text(files["users_file"], "")
    write_text(files["acl_file"], "allow all subscribe public/#\n")
    write_text(files["admin_token_file"], "token\n")
    what, _, how = broken.partition(":")
    if how == "missing":
        files[what] = tmp_path / f"missing-{what}"
    else:
        files[what] = tmp_path / f"garbled-{what}"
        write_text(files[what], {"users_file": "alice:$argon2id$garbled\n",
                                 "acl_file": "allow all subscribe a/#\nallow user\n"}
                   .get(what, "garbled\n"))
    config = {
        "listeners": [{"name": "mqtts", "protocol": "tls", "bind": f"127.0.0.1:{free_port()}",
                       "tls": {"cert_file": str(files["cert_file"]),
                               "key_file": str(files["key_file"])}}],
        "auth": {"users_file": str(files["users_file"]), "acl_file": str(files["acl_file"])},
        "http": {"bind": f"127.0.0.1:{free_port()}",
                 "admin_token_file": str(files["admin_token_file"])},
    }
    return config, files[what]


@pytest.mark.parametrize("broken,key", [
    ("cert_file:missing", "listeners[0].tls.cert_file"),
    ("cert_file:garbled", "listeners[0].tls.cert_file"),
    ("key_file:missing", "listeners[0].tls.key_file"),
    ("key_file:garbled", "listeners[0].tls.key_file"),
    ("users_file:missing", "auth.users_file"),
    ("users_file:garbled", "auth.users_file"),
    ("acl_file:missing", "auth.acl_file"),
    ("acl_file:garbled", "auth.acl_file"),
    ("admin_token_file:missing", "http.admin_token_file"),
])
def test_check_config_loads_every_file_the_broker_would(tmp_path, pki, broken, key):
    """`--check-config` loads every file the configuration names, as a start would: a missing or
    garbled certificate, key, users or ACL file, or a missing admin token file, is reported with
    the setting and the file (and the line, for users and ACL files), with exit status 1 — the
    message and status a start then fails with — never "configuration is valid"."""
    config, path = _files_config(tmp_path, pki, broken)
    checked = _run(tmp_path, config)
    assert checked.returncode == 1, (checked.returncode, checked.stdout, checked.stderr)
    assert "valid" not in checked.stdout, checked.stdout
    message = checked.stderr.strip()
    assert f"{key}: " in message and str(path) in message, message
    if broken in ("users_file:garbled", "acl_file:garbled"):
        assert "line " in message, message
    assert len(message.splitlines()) == 1, message
    started = _run(tmp_path, config, check=False)
    assert (started.returncode, started.stderr.strip()) == (1, message)


def test_check_config_accepts_files_that_load(tmp_path, pki):
    """With every file present and well-formed, `--check-config` says the configuration is valid
    (exit status 0), without binding the ports it names."""
    config, _ = _files_config(tmp_path, pki, "acl_file:garbled")
    config["auth"]["acl_file"] = str(tmp_path / "acl.txt")
    checked = _run(tmp_path, config)
    assert checked.returncode == 0, checked.stderr
    assert "configuration is valid" in checked.stdout
