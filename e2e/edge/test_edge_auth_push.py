"""`PUT /api/v1/auth` (docs/admin-api.md): users and ACL content pushed through the admin API, as
the operator does before kubelet refreshes the Secret volumes, and applied like a reload of files
with that text: a new user can log in at once, a removed user's connection gets DISCONNECT 0x87
while everyone else stays, text that does not parse is refused with its part and line and nothing
changes. A reload while the files still hold their old text keeps the pushed content; once a file's
text changes, the file wins again. Content for a file the configuration does not name is 409; no
token is 401. Clients are paho-mqtt's."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import WAIT, paho_client, raw_connect, tern_passwd, write_text

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "pub": "pub-pw"}

ACL = [
    "allow user pub publish #",
    "allow all both users/%u/#",
    "allow user alice subscribe feed/#",
]

NOT_AUTHORIZED = 0x87
BAD_USER_NAME_OR_PASSWORD = 0x86


class Pushed:
    """A broker with a users file (alice, bob, pub) and, unless told otherwise, an ACL file; the
    file watcher is off, so only the admin API changes what is in force."""

    def __init__(self, edge_broker, tmp_path: Path, acl_file: bool = True):
        self.tmp_path = tmp_path
        self.users = tmp_path / "users.txt"
        for name, password in PASSWORDS.items():
            tern_passwd(self.users, name, password)
        auth = {"allow_anonymous": False, "users_file": str(self.users), "reload_poll_secs": 0}
        if acl_file:
            self.acl = tmp_path / "acl.txt"
            write_text(self.acl, "\n".join(ACL) + "\n")
            auth["acl_file"] = str(self.acl)
        self.broker = edge_broker(config={"auth": auth})
        self.admin = self.broker.admin()

    def push(self, token: str = "default", **parts):
        return self.admin.request("PUT", "/auth", parts, token=token)

    def login(self, user: str, password=None, client_id=None):
        """A connected paho MQTT 5 client for `user`."""
        return paho_client(client_id or user, username=user,
                           password=password or PASSWORDS[user]).start(self.broker.port)

    def connack(self, user: str, password: str, client_id: str) -> int:
        c, connack = raw_connect(self.broker.port, client_id, username=user, password=password)
        c.close()
        assert connack is not None, f"{user}: closed without CONNACK"
        return connack.reason

    def users_text(self, drop=(), add=None) -> str:
        """The users file's text without the users in `drop`, plus `add` ({user: password})
        hashed by `tern-broker passwd` into a scratch file."""
        lines = [line for line in self.users.read_text().splitlines()
                 if line.split(":", 1)[0] not in drop]
        if add:
            scratch = self.tmp_path / f"scratch-{len(list(self.tmp_path.iterdir()))}.txt"
            for name, password in add.items():
                tern_passwd(scratch, name, password)
            lines += scratch.read_text().splitlines()
        return "\n".join(lines) + "\n"


@pytest.fixture
def pushed(edge_broker, tmp_path):
    return Pushed(edge_broker, tmp_path)


def still_working(pub, client, user: str) -> None:
    """`client` is connected and still receives what `pub` publishes to its own topic."""
    assert client.mqtt.is_connected() and not client.disconnected.is_set(), user
    assert client.subscribe(f"users/{user}/#", qos=1) == [1]
    pub.publish(f"users/{user}/ping", b"still here", qos=1)
    assert client.wait_message(f"users/{user}/ping", timeout=WAIT).payload == b"still here"


def test_pushed_users_let_a_new_user_in_and_disconnect_only_the_removed_one(pushed):
    """alice, bob and pub are connected. Users text without bob and with a new user dave is
    pushed: the answer counts 3 users, 1 revoked and 1 disconnected; bob's connection gets
    DISCONNECT 0x87 *Not authorized* from the server; alice and pub stay connected and keep
    working; dave can connect at once, bob no longer can (CONNACK 0x86). The users file on disk
    still holds the old text."""
    alice, bob, pub = pushed.login("alice"), pushed.login("bob"), pushed.login("pub")
    on_disk = pushed.users.read_text()

    resp = pushed.push(users=pushed.users_text(drop={"bob"}, add={"dave": "dave-pw"}))

    assert resp.status == 200, resp
    assert resp.json() == {"changed": True, "users": 3, "acl_rules": 3, "revoked_users": 1,
                           "disconnected": 1, "subscriptions_removed": 0,
                           "subscriptions_downgraded": 0}, resp.json()
    assert bob.disconnected.wait(WAIT), "bob was not disconnected"
    assert (bob.disconnect_reason, bob.disconnect_from_server) == (NOT_AUTHORIZED, True)
    still_working(pub, alice, "alice")
    assert pub.mqtt.is_connected()
    dave = pushed.login("dave", "dave-pw")
    still_working(pub, dave, "dave")
    assert pushed.connack("bob", PASSWORDS["bob"], "bob-again") == BAD_USER_NAME_OR_PASSWORD
    assert pushed.users.read_text() == on_disk


def test_a_reload_keeps_pushed_content_until_the_files_change(pushed):
    """After a push, `POST /api/v1/reload` while the files still hold their old text (kubelet has
    not refreshed them yet) keeps the pushed users and rules: bob stays refused, dave gets in,
    the pushed ACL right holds. Pushing what is already in force revokes nobody. Once the users
    file gets new text, the next reload applies it: the file wins again."""
    alice = pushed.login("alice")
    users = pushed.users_text(drop={"bob"}, add={"dave": "dave-pw"})
    resp = pushed.push(users=users, acl="\n".join(ACL + ["allow user alice subscribe news/#"]))
    assert resp.status == 200, resp

    reloaded = pushed.admin.reload()["reloaded"]
    outcome = [o for o in reloaded if o["name"] == "users_and_acl"][0]
    assert outcome == {"name": "users_and_acl", "changed": False, "error": None}, reloaded
    assert pushed.connack("bob", PASSWORDS["bob"], "bob-after-reload") == BAD_USER_NAME_OR_PASSWORD
    assert pushed.connack("dave", "dave-pw", "dave-after-reload") == 0
    assert alice.subscribe("news/#", qos=1) == [1]

    again = pushed.push(users=users)
    assert again.status == 200, again
    assert (again.json()["changed"], again.json()["revoked_users"],
            again.json()["disconnected"]) == (False, 0, 0), again.json()
    assert alice.mqtt.is_connected() and not alice.disconnected.is_set()

    write_text(pushed.users, pushed.users_text(add={"erin": "erin-pw"}))
    pushed.admin.reload()
    assert pushed.connack("erin", "erin-pw", "erin") == 0
    assert pushed.connack("bob", PASSWORDS["bob"], "bob-back") == 0
    assert pushed.connack("dave", "dave-pw", "dave-gone") == BAD_USER_NAME_OR_PASSWORD


def test_a_broken_acl_push_is_refused_naming_the_line_and_the_old_rules_stay(pushed):
    """Users text without bob and ACL text with a typo on line 2 are pushed together: 422 with
    `part` "acl", `line` 2 and an error naming line 2. Nothing changed: bob stays connected and
    can still log in, alice keeps her subscription, and a right only the refused ACL would give
    is still refused (SUBACK 0x87)."""
    alice, bob = pushed.login("alice"), pushed.login("bob")
    assert alice.subscribe("feed/#", qos=1) == [1]

    resp = pushed.push(users=pushed.users_text(drop={"bob"}),
                       acl="allow user pub publish #\nallow all subscrib news/#\n")

    assert resp.status == 422, resp
    body = resp.json()
    assert (body["part"], body["line"]) == ("acl", 2), body
    assert "line 2" in body["error"] and "subscrib" in body["error"], body
    assert not bob.disconnected.wait(0.5), "bob was disconnected by a refused push"
    assert pushed.connack("bob", PASSWORDS["bob"], "bob-2") == 0
    assert pushed.admin.subscriptions("alice") == {"feed/#": 1}
    assert alice.subscribe("news/#", qos=1) == [NOT_AUTHORIZED]


def test_acl_content_without_an_acl_file_is_409(edge_broker, tmp_path):
    """The configuration names a users file but no ACL file: a push with ACL text is 409, with
    an error naming `auth.acl_file`, and its users part is not applied either (bob, whom it
    removes, can still log in)."""
    p = Pushed(edge_broker, tmp_path, acl_file=False)

    resp = p.push(users=p.users_text(drop={"bob"}), acl="allow all both #\n")

    assert resp.status == 409, resp
    assert resp.json()["part"] == "acl" and "auth.acl_file" in resp.json()["error"], resp.json()
    assert p.connack("bob", PASSWORDS["bob"], "bob") == 0


def test_a_push_without_the_token_is_401_and_changes_nothing(pushed):
    """No bearer token, or a wrong one: 401 with `WWW-Authenticate: Bearer`, and the users in
    force are unchanged (bob can still log in)."""
    users = pushed.users_text(drop={"bob"})
    for token in (None, "wrong-token"):
        resp = pushed.push(token=token, users=users)
        assert resp.status == 401, (token, resp)
        assert resp.headers.get("www-authenticate") == "Bearer", resp.headers
    assert pushed.connack("bob", PASSWORDS["bob"], "bob") == 0
