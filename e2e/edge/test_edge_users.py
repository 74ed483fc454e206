"""The users file: argon2id hashes made by `tern-broker passwd`, and Mosquitto's `$6$` and `$7$`
hashes made by Debian's `mosquitto_passwd`, in one file; right, wrong and missing passwords,
unknown users and anonymous clients, on MQTT 5 and 3.1.1; refusals counted in
`tern_auth_failures_total`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .helpers import conformance, mosquitto_passwd, r, raw_connect, tern_passwd

PASSWORDS = {"argon": "argon-secret", "sha6": "sha6-secret", "pbkdf7": "pbkdf7 secret with spaces"}
PREFIXES = {"argon": "$argon2id$v=19$", "sha6": "$6$", "pbkdf7": "$7$"}


def _users_file(tmp_path: Path) -> Path:
    """A Mosquitto password file (`$6$` with `-H sha512`, `$7$` by default) to which
    `tern-broker passwd` then adds an argon2id user, keeping the Mosquitto lines."""
    path = tmp_path / "passwd"
    mosquitto_passwd(path, "sha6", PASSWORDS["sha6"], sha512=True)
    mosquitto_passwd(path, "pbkdf7", PASSWORDS["pbkdf7"])
    tern_passwd(path, "argon", PASSWORDS["argon"])
    hashes = dict(line.split(":", 1) for line in path.read_text().splitlines() if line)
    for user, prefix in PREFIXES.items():
        assert hashes[user].startswith(prefix), (user, hashes[user])
    return path


def _broker(edge_broker, tmp_path, anonymous: bool = False):
    return edge_broker(config={"auth": {"allow_anonymous": anonymous,
                                        "users_file": str(_users_file(tmp_path))}})


def _connack(port: int, client_id: str, version: int, username=None, password=None) -> int:
    c, connack = raw_connect(port, client_id, version, username=username, password=password)
    with c:
        assert connack is not None and connack.type == r.CONNACK, (
            f"{client_id}: no CONNACK ({connack!r})")
        return connack.reason


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_all_three_hash_formats_authenticate(edge_broker, tmp_path, version):
    """Users whose hashes are argon2id (`tern-broker passwd`), `$6$` (`mosquitto_passwd -H
    sha512`) and `$7$` (`mosquitto_passwd`), all in one file, connect with their passwords
    (CONNACK 0); the same users with a wrong password are refused with 0x86 *Bad user name or
    password* on MQTT 5 and return code 4 on 3.1.1; each refusal is counted in
    `tern_auth_failures_total`."""
    b = _broker(edge_broker, tmp_path)
    refused = 4 if version == 4 else 0x86
    for user, password in PASSWORDS.items():
        assert _connack(b.port, f"ok-{user}", version, user, password) == 0, user
        assert _connack(b.port, f"bad-{user}", version, user, password + "x") == refused, user
    metrics = b.metrics()
    assert metrics.get("tern_auth_failures_total") == len(PASSWORDS)
    assert metrics.get("tern_connections_total") == len(PASSWORDS)


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_unknown_users_and_missing_passwords_are_refused(edge_broker, tmp_path, version):
    """An unknown username is refused like a wrong password (0x86 / return code 4), and so is a
    known username without a password, or with an empty one."""
    b = _broker(edge_broker, tmp_path)
    refused = 4 if version == 4 else 0x86
    assert _connack(b.port, "unknown", version, "mallory", "argon-secret") == refused
    assert _connack(b.port, "no-password", version, "argon", None) == refused
    assert _connack(b.port, "empty-password", version, "argon", "") == refused
    assert b.metrics().get("tern_auth_failures_total") == 3


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_anonymous_clients_follow_allow_anonymous(edge_broker, tmp_path, version):
    """A client without a username is refused when `allow_anonymous` is false (0x87 *Not
    authorized* / return code 5) and let in when it is true; with anonymous access on, a
    username still needs its password (0x86 / 4) and the right one still works."""
    off = _broker(edge_broker, tmp_path, anonymous=False)
    assert _connack(off.port, "anon-off", version) == (5 if version == 4 else 0x87)

    on = _broker(edge_broker, tmp_path, anonymous=True)
    assert _connack(on.port, "anon-on", version) == 0
    assert _connack(on.port, "named-bad", version, "sha6", "nope") == (4 if version == 4 else 0x86)
    assert _connack(on.port, "named-ok", version, "sha6", PASSWORDS["sha6"]) == 0


def test_tern_passwd_updates_and_deletes_entries_in_place(tmp_path, edge_broker):
    """`tern-broker passwd FILE USER --password-stdin` on an existing user replaces only that
    user's hash (the Mosquitto lines stay byte for byte); `-D` removes the user. The broker
    started on the result accepts the new password, refuses the old one and the deleted user."""
    path = _users_file(tmp_path)
    before = {l.split(":", 1)[0]: l for l in path.read_text().splitlines() if l}
    tern_passwd(path, "argon", "changed")
    done = subprocess.run([str(conformance.tern_binary()), "passwd", str(path), "pbkdf7", "-D"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    after = {l.split(":", 1)[0]: l for l in path.read_text().splitlines() if l}
    assert set(after) == {"argon", "sha6"}
    assert after["sha6"] == before["sha6"] and after["argon"] != before["argon"]
    b = edge_broker(config={"auth": {"allow_anonymous": False, "users_file": str(path)}})
    assert _connack(b.port, "new-pw", 5, "argon", "changed") == 0
    assert _connack(b.port, "old-pw", 5, "argon", PASSWORDS["argon"]) == 0x86
    assert _connack(b.port, "deleted", 5, "pbkdf7", PASSWORDS["pbkdf7"]) == 0x86


def test_comments_blank_lines_and_crlf_are_ignored(edge_broker, tmp_path):
    """docs/acl.md: `#` comment lines and blank lines are ignored, and so is whitespace around a
    line, so a users file with CRLF line endings reads the same."""
    path = _users_file(tmp_path)
    lines = path.read_text().splitlines()
    path.write_bytes(("# made by hand\r\n\r\n   " + "\r\n".join(lines) + "\r\n  # end\r\n")
                     .encode())
    b = edge_broker(config={"auth": {"allow_anonymous": False, "users_file": str(path)}})
    for user, password in PASSWORDS.items():
        assert _connack(b.port, f"crlf-{user}", 5, user, password) == 0, user


def test_tern_passwd_reads_a_piped_password_without_a_terminal(tmp_path, edge_broker):
    """`echo PASSWORD | tern-broker passwd FILE USER` — no terminal, no `--password-stdin` —
    reads the password from standard input (it used to try the terminal and fail with "No such
    device or address"); the broker then accepts that password. An empty standard input is
    refused with a one-line message and status 1, without a backtrace even under
    RUST_BACKTRACE=1."""
    path = tmp_path / "users.txt"
    env = {"PATH": "/usr/bin:/bin", "RUST_BACKTRACE": "1"}
    done = subprocess.run([str(conformance.tern_binary()), "passwd", str(path), "alice"],
                          input="piped secret\n", text=True, capture_output=True, timeout=60,
                          env=env, start_new_session=True)
    assert done.returncode == 0, done.stderr
    assert path.read_text().startswith("alice:$argon2id$"), path.read_text()
    b = edge_broker(config={"auth": {"allow_anonymous": False, "users_file": str(path)}})
    assert _connack(b.port, "piped", 5, "alice", "piped secret") == 0

    empty = subprocess.run([str(conformance.tern_binary()), "passwd", str(path), "bob"],
                           stdin=subprocess.DEVNULL, text=True, capture_output=True,
                           timeout=60, env=env, start_new_session=True)
    assert empty.returncode == 1
    assert empty.stderr.strip() == "tern-broker passwd: empty password on standard input", (
        empty.stderr)
