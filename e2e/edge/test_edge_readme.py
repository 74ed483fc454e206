"""The README's walk through TLS, users and an ACL ("### With TLS, users and an ACL") runs as
written: its shell block is taken from README.md as it is, and run with bash against the binary
under test, so the README cannot drift from what the broker does. Only what a test must change is
changed: the build and the binary's path (the binary under test instead of a release build), and
the ports (free ones instead of 8883, 8084 and 9090). It needs what the README says a user needs:
`openssl`, `mosquitto_pub`/`mosquitto_sub` and `curl`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from .helpers import conformance, free_port

README = conformance.REPO / "README.md"
HEADING = "### With TLS, users and an ACL"
BUILD = "cargo build --release -p tern-broker\n"
BINARY = "tern=$PWD/target/release/tern-broker"
PORTS = (8883, 8084, 9090)


def _shell_block(heading: str) -> str:
    """The first ```sh block after ``heading`` in README.md."""
    text = README.read_text()
    assert heading in text, f"README.md has no section {heading!r}"
    section = text[text.index(heading):]
    match = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert match, f"no ```sh block under {heading!r}"
    return match.group(1)


def test_the_readme_tls_walk_runs_as_written(tmp_path):
    """Run from a stand-in for the checkout, the walk makes a CA and a certificate for localhost,
    a users file with a piped password, an admin token, the ACL and the configuration in its own
    directory (`~/tern-demo`), checks the configuration, starts the broker, publishes and
    receives `home/alice/hello world` over TLS as alice, reads the admin API with the token and
    stops the broker; it exits 0 and writes nothing into the checkout."""
    for tool in ("openssl", "mosquitto_pub", "mosquitto_sub", "curl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing; the README's walk needs it", pytrace=False)
    block = _shell_block(HEADING)
    assert BUILD in block and BINARY in block, "the walk's first lines changed; update the test"
    script = block.replace(BUILD, "").replace(BINARY, f"tern={conformance.tern_binary()}")
    for port in PORTS:
        assert re.search(rf"\b{port}\b", script), f"port {port} is no longer in the walk"
        script = re.sub(rf"\b{port}\b", str(free_port()), script)
    # A failed command stops the walk, and the broker it started goes with it.
    script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script
    home, checkout = tmp_path / "home", tmp_path / "checkout"
    home.mkdir()
    checkout.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "NO_COLOR": "1", "RUST_BACKTRACE": "0"}
    done = subprocess.run(["bash", "-c", script], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"the walk failed:\n{done.stdout}\n{done.stderr}"
    assert "configuration is valid" in done.stdout
    assert "home/alice/hello world" in done.stdout.splitlines(), done.stdout
    assert '"listeners":[' in done.stdout, "the admin API did not answer with the token"
    assert list(checkout.iterdir()) == [], "the walk wrote into the checkout"
    demo = home / "tern-demo"
    assert {p.name for p in demo.iterdir()} >= {
        "ca.crt", "server.crt", "server.key", "users.txt", "acl.txt", "admin-token", "tern.yaml"}
