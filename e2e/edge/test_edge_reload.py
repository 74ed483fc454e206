"""Users and ACL files reloaded while clients are connected — by the file watcher
(`auth.reload_poll_secs: 1`) and by `POST /api/v1/reload` (watcher off) — with the effects on each
connected client: a new right works at once, a revoked subscription disappears while the client
stays connected, a removed user or a changed password disconnects exactly that user (MQTT 5
DISCONNECT 0x87), and a broken file is refused with its name and line while the previous rules stay
in force."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import expect  # conformance helper: still_open, disconnected

from .helpers import (WAIT, conformance, r, tern_passwd, wait_for, wait_log, write_text)

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "pub": "pub-pw"}

BASE_ACL = [
    "allow user pub publish #",
    "allow all both users/%u/#",
    "allow user alice subscribe feed/a/#",
    "allow user alice subscribe feed/b/#",
    "allow user alice subscribe feed/q/#",
]

TRIGGERS = ["file_watcher", "admin_reload"]


class Live:
    """A broker with a users file and an ACL file, and the means to change them."""

    def __init__(self, edge_broker, tmp_path: Path, trigger: str):
        self.trigger = trigger
        self.users = tmp_path / "users.txt"
        self.acl = tmp_path / "acl.txt"
        for name, password in PASSWORDS.items():
            tern_passwd(self.users, name, password)
        self.acl.write_text("\n".join(BASE_ACL) + "\n")
        self.broker = edge_broker(config={"auth": {
            "allow_anonymous": False, "users_file": str(self.users), "acl_file": str(self.acl),
            "reload_poll_secs": 1 if trigger == "file_watcher" else 0}})
        self.admin = self.broker.admin()
        self._pid = 100

    def login(self, user: str, version: int = 5, client_id=None, password=None) -> r.RawClient:
        c = r.RawClient(self.broker.port, version=version)
        c.handshake(client_id or user, username=user,
                    password=(password or PASSWORDS[user]).encode())
        return c

    def connack(self, user: str, password: str, client_id: str) -> int:
        with r.RawClient(self.broker.port) as c:
            c.send(r.connect(client_id, username=user, password=password.encode()))
            return c.expect(r.CONNACK).reason

    def sub(self, c: r.RawClient, topic_filter: str, qos: int = 1) -> int:
        self._pid += 1
        return c.subscribe(topic_filter, r.sub_options(qos=qos), packet_id=self._pid).codes[0]

    def applied(self, reloaded_name: str = "users_and_acl") -> None:
        """After a file change: with the admin trigger, reload now and check the outcome; with
        the watcher, nothing to do (the caller waits for the effect)."""
        if self.trigger == "admin_reload":
            body = self.admin.reload()
            outcome = [o for o in body["reloaded"] if o["name"] == reloaded_name]
            assert outcome and outcome[0]["changed"] and outcome[0]["error"] is None, body

    def set_acl(self, lines) -> None:
        write_text(self.acl, "\n".join(lines) + "\n")
        self.applied()

    def passwd(self, user: str, password=None, delete: bool = False) -> None:
        """`tern-broker passwd` on the live users file (it replaces the file atomically)."""
        if delete:
            done = subprocess.run([str(conformance.tern_binary()), "passwd", str(self.users),
                                   user, "-D"], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        else:
            tern_passwd(self.users, user, password)
        self.applied()


@pytest.fixture(params=TRIGGERS)
def live(request, edge_broker, tmp_path):
    return Live(edge_broker, tmp_path, request.param)


def test_adding_a_right_takes_effect_for_a_connected_client(live):
    """bob's SUBSCRIBE to `extra/#` is refused (0x87); after `allow user bob subscribe extra/#` is
    added to the ACL and reloaded, the same connection's SUBSCRIBE is granted (QoS 1) and bob
    receives a message published there. bob was never disconnected."""
    with live.login("bob") as bob, live.login("pub") as pub:
        assert live.sub(bob, "extra/#") == 0x87
        live.set_acl(BASE_ACL + ["allow user bob subscribe extra/#"])
        if live.trigger == "admin_reload":
            assert live.sub(bob, "extra/#") == 1
        else:
            wait_for(lambda: live.sub(bob, "extra/#") == 1, interval=0.2,
                     message="the watcher to apply the new right")
        pub.send(r.publish("extra/news", b"new right", qos=1, packet_id=1))
        pub.expect(r.PUBACK)
        assert bob.expect(r.PUBLISH).payload == b"new right"
        expect.still_open(bob)


def test_revoking_a_subscription_right_removes_only_that_subscription(live):
    """alice holds `feed/a/#`, `feed/b/#` (QoS 1) and `feed/q/#` (QoS 2). The ACL loses the
    `feed/a/#` rule and caps `feed/q/#` at `qos<=1`: after the reload the admin API lists
    `feed/b/#` at QoS 1 and `feed/q/#` at QoS 1, and no `feed/a/#`; alice stays connected, gets
    nothing published to `feed/a/...`, and still gets what is published to `feed/b/...` (the
    publisher's `feed/a` message goes first, so its absence is certain once `feed/b`'s arrives)."""
    with live.login("alice") as alice, live.login("pub") as pub:
        assert [live.sub(alice, f) for f in ("feed/a/#", "feed/b/#")] == [1, 1]
        assert live.sub(alice, "feed/q/#", qos=2) == 2
        lines = [line for line in BASE_ACL if "feed/a/#" not in line]
        lines = [line + (" qos<=1" if "feed/q/#" in line else "") for line in lines]
        live.set_acl(lines)
        want = {"feed/b/#": 1, "feed/q/#": 1}
        if live.trigger == "admin_reload":
            assert live.admin.subscriptions("alice") == want
        else:
            wait_for(lambda: live.admin.subscriptions("alice") == want,
                     message=f"alice's subscriptions to become {want}")
        pub.send(r.publish("feed/a/1", b"revoked", qos=1, packet_id=1)
                 + r.publish("feed/b/1", b"kept", qos=1, packet_id=2))
        assert {pub.expect(r.PUBACK).packet_id, pub.expect(r.PUBACK).packet_id} == {1, 2}
        first = alice.expect(r.PUBLISH)
        assert (first.topic, first.payload) == ("feed/b/1", b"kept"), first
        expect.still_open(alice)
        assert live.admin.client("alice")["client"]["connected"]


def test_removing_a_user_disconnects_that_user_only(live):
    """bob is removed from the users file (`tern-broker passwd FILE bob -D`) while alice (MQTT 5)
    and carol (3.1.1) are connected: bob's MQTT 5 connection gets DISCONNECT 0x87 *Not authorized*
    and is closed; alice and carol stay connected and keep working; bob can no longer connect
    (CONNACK 0x86)."""
    with live.login("alice") as alice, live.login("bob") as bob, \
            live.login("carol", version=4) as carol:
        live.passwd("bob", delete=True)
        expect.disconnected(bob, 0x87, timeout=WAIT)
        expect.still_open(alice)
        expect.still_open(carol)
        assert live.sub(alice, "users/alice/#") == 1
        assert live.connack("bob", PASSWORDS["bob"], "bob-again") == 0x86
        info = live.admin.client("alice")["client"]
        assert info["connected"], info


def test_changing_a_password_disconnects_only_that_user(live):
    """carol's password is changed with `tern-broker passwd` while carol, alice (both MQTT 5) and
    bob (3.1.1) are connected: carol gets DISCONNECT 0x87; alice and bob stay connected; carol
    then connects with the new password, and the old one is refused (0x86)."""
    with live.login("alice") as alice, live.login("carol") as carol, \
            live.login("bob", version=4) as bob:
        live.passwd("carol", "carol-new-pw")
        expect.disconnected(carol, 0x87, timeout=WAIT)
        expect.still_open(alice)
        expect.still_open(bob)
        assert live.connack("carol", "carol-pw", "carol-old") == 0x86
        assert live.connack("carol", "carol-new-pw", "carol-new") == 0


@pytest.mark.parametrize("broken", ["users", "acl"])
def test_a_broken_file_is_refused_and_the_old_rules_stay(live, broken):
    """A users file or ACL file with a syntax error on line 3 is refused: `POST /api/v1/reload`
    answers 422 and the `users_and_acl` outcome names the file and `line 3` (with the watcher,
    the broker logs the same refusal). Until the file is fixed the previous rules stay in force:
    connected clients stay connected with their subscriptions, alice can still log in with her
    password, a right added in the broken ACL is not granted. Once the file is fixed, the next
    reload applies it."""
    with live.login("alice") as alice, live.login("bob") as bob:
        assert live.sub(alice, "feed/a/#") == 1
        offset = len(live.broker.log_text())
        if broken == "users":
            lines = live.users.read_text().splitlines()
            write_text(live.users, "\n".join(lines[:2] + ["this line has no separator"]
                                             + lines[2:]) + "\n")
            path = live.users
        else:
            write_text(live.acl, "\n".join(BASE_ACL[:2] + ["allow user bob subscrib extra/#"]
                                           + BASE_ACL[2:] + ["allow user bob subscribe extra/#"])
                       + "\n")
            path = live.acl
        if live.trigger == "file_watcher":
            line = wait_log(live.broker, r"reload failed[^\n]*", after=offset)
            assert str(path) in line and "line 3" in line, line
        resp = live.admin.post("/reload")
        assert resp.status == 422, resp
        outcome = [o for o in resp.json()["reloaded"] if o["name"] == "users_and_acl"][0]
        assert str(path) in outcome["error"] and "line 3" in outcome["error"], outcome

        expect.still_open(alice)
        expect.still_open(bob)
        assert live.admin.subscriptions("alice") == {"feed/a/#": 1}
        assert live.connack("alice", PASSWORDS["alice"], "alice-2") == 0
        assert live.sub(bob, "extra/#") == 0x87

        write_text(live.acl, "\n".join(BASE_ACL + ["allow user bob subscribe extra/#"]) + "\n")
        if broken == "users":
            write_text(live.users, "\n".join(lines) + "\n")
        if live.trigger == "admin_reload":
            live.admin.reload()
            assert live.sub(bob, "extra/#") == 1
        else:
            wait_for(lambda: live.sub(bob, "extra/#") == 1, interval=0.2,
                     message="the fixed file to be applied")
        expect.still_open(alice)


def test_revoked_rights_also_apply_to_offline_sessions_and_shared_subscriptions(live):
    """A revoked right reaches every session, not just connected ones: alice's persistent session
    (offline) and bob's shared subscription `$share/g/feed/a/#` both lose their `feed/a/...`
    subscriptions when the ACL drops them, so a message published to `feed/a/...` afterwards is
    neither queued for alice nor delivered to bob; the subscriptions still allowed stay."""
    lines = BASE_ACL + ["allow user bob subscribe feed/#"]
    write_text(live.acl, "\n".join(lines) + "\n")
    live.admin.reload()
    away = r.RawClient(live.broker.port)
    away.handshake("alice-away", username="alice", password=PASSWORDS["alice"].encode(),
                   props=[(r.SESSION_EXPIRY_INTERVAL, 300)])
    assert [live.sub(away, f) for f in ("feed/a/#", "feed/b/#")] == [1, 1]
    away.send(r.disconnect())
    away.read_until_closed(WAIT)
    away.close()
    with live.login("bob") as bob, live.login("pub") as pub:
        assert live.sub(bob, "$share/g/feed/a/#") == 1
        assert live.sub(bob, "feed/b/#") == 1
        revoked = ([line for line in BASE_ACL if "feed/a/#" not in line]
                   + ["allow user bob subscribe feed/b/#"])
        live.set_acl(revoked)
        want_alice, want_bob = {"feed/b/#": 1}, {"feed/b/#": 1}
        wait_for(lambda: live.admin.subscriptions("alice-away") == want_alice
                 and live.admin.subscriptions("bob") == want_bob,
                 message="the revoked subscriptions to be removed")
        pub.send(r.publish("feed/a/1", b"revoked", qos=1, packet_id=1)
                 + r.publish("feed/b/1", b"kept", qos=1, packet_id=2))
        pub.expect(r.PUBACK)
        pub.expect(r.PUBACK)
        first = bob.expect(r.PUBLISH)
        assert (first.topic, first.payload) == ("feed/b/1", b"kept"), first
    assert live.admin.client("alice-away")["client"]["queued"] == 1
    with r.RawClient(live.broker.port) as back:
        back.handshake("alice-away", clean=False, username="alice",
                       password=PASSWORDS["alice"].encode(),
                       props=[(r.SESSION_EXPIRY_INTERVAL, 300)])
        first = back.expect(r.PUBLISH)
        assert (first.topic, first.payload) == ("feed/b/1", b"kept"), first


def test_a_removed_users_311_connection_is_closed(live):
    """A removed user's MQTT 3.1.1 connection is closed (3.1.1 has no DISCONNECT from the server);
    another user's 3.1.1 connection stays."""
    with live.login("bob", version=4) as bob, live.login("carol", version=4) as carol:
        live.passwd("bob", delete=True)
        packets, closed = bob.read_until_closed(WAIT)
        assert closed and packets == [], packets
        expect.still_open(carol)
