"""The ACL file against real connections: `%u` and `%c` placeholders, deny by default, first
matching rule wins (a `deny` that overlaps a requested filter), `qos<=N` options, and group rules;
denied publishes answered 0x87 on MQTT 5 and dropped silently (but acknowledged) on 3.1.1, denied
subscriptions answered 0x87 / 0x80 in SUBACK. Clients are raw sockets so the reason codes are
read exactly as sent."""

from __future__ import annotations


import pytest

from .helpers import WAIT, r, tern_passwd

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "watcher": "watcher-pw"}

ACL = """\
# the edge suite's ACL (docs/acl.md)
group ops = alice carol

deny  all subscribe news/secret/#
allow all subscribe news/#
allow all both users/%u/#
allow all publish clients/%c/#
allow group ops both ops/#
allow user alice subscribe capped/# qos<=1
allow user alice publish capped/# qos<=1
allow user bob publish plain/# retain=false
allow client sensor-?? publish sensors/#
allow user watcher subscribe #
"""


@pytest.fixture
def acl_broker(edge_broker, tmp_path):
    users = tmp_path / "users.txt"
    for name, password in USERS.items():
        tern_passwd(users, name, password)
    acl = tmp_path / "acl.txt"
    acl.write_text(ACL)
    return edge_broker(config={"auth": {"allow_anonymous": False, "users_file": str(users),
                                        "acl_file": str(acl)}})


def login(port: int, user: str, client_id: str = None, version: int = 5) -> r.RawClient:
    c = r.RawClient(port, version=version)
    c.handshake(client_id or f"{user}-{version}", username=user,
                password=USERS[user].encode())
    return c


_pid = iter(range(1, 60000))


def sub_code(c: r.RawClient, topic_filter: str, qos: int = 1) -> int:
    return c.subscribe(topic_filter, r.sub_options(qos=qos), packet_id=next(_pid)).codes[0]


def pub_ack(c: r.RawClient, topic: str, qos: int = 1, payload: bytes = b"x") -> int:
    """Publishes at QoS 1 or 2 and returns the PUBACK / PUBREC reason (0 on 3.1.1)."""
    pid = next(_pid)
    c.send(r.publish(topic, payload, qos=qos, packet_id=pid, version=c.version))
    ack = c.expect(r.PUBACK if qos == 1 else r.PUBREC, skip=(r.PUBLISH,))
    assert ack.packet_id == pid
    if qos == 2 and ack.reason < 0x80:
        c.send(r.ack(r.PUBREL, pid, version=c.version))
        c.expect(r.PUBCOMP, skip=(r.PUBLISH,))
    return ack.reason


OK = (0x00, 0x10)  # success, or no matching subscribers


def test_percent_u_rules_follow_the_username(acl_broker):
    """`allow all both users/%u/#`: alice may subscribe to and publish under `users/alice/`
    (SUBACK 1, PUBACK success) but not under `users/bob/` (SUBACK 0x87, PUBACK 0x87); bob the
    other way round."""
    port = acl_broker.port
    with login(port, "alice") as alice, login(port, "bob") as bob:
        assert sub_code(alice, "users/alice/#") == 1
        assert sub_code(alice, "users/bob/#") == 0x87
        assert pub_ack(alice, "users/alice/x") in OK
        assert pub_ack(alice, "users/bob/x") == 0x87
        assert sub_code(bob, "users/bob/inbox") == 1
        assert pub_ack(bob, "users/alice/x") == 0x87


def test_percent_c_rules_follow_the_client_id(acl_broker):
    """`allow all publish clients/%c/#`: a client whose id is `dev-42` may publish to
    `clients/dev-42/...` and not to `clients/dev-43/...`, whoever its user is; the rule grants
    no subscription (deny by default)."""
    with login(acl_broker.port, "bob", client_id="dev-42") as c:
        assert pub_ack(c, "clients/dev-42/status") in OK
        assert pub_ack(c, "clients/dev-43/status") == 0x87
        assert sub_code(c, "clients/dev-42/#") == 0x87


def test_deny_by_default_v5(acl_broker):
    """With an ACL file, what no rule allows is denied: an MQTT 5 PUBLISH to an unlisted topic
    gets PUBACK 0x87 (and at QoS 2 PUBREC 0x87), a SUBSCRIBE gets SUBACK 0x87; the connection stays
    open. The refused publishes are counted as `tern_messages_dropped_total{reason="not_authorized"}`
    and not as received messages."""
    before = acl_broker.metrics()
    with login(acl_broker.port, "bob") as c:
        assert pub_ack(c, "random/topic", qos=1) == 0x87
        assert pub_ack(c, "random/topic", qos=2) == 0x87
        assert sub_code(c, "random/#") == 0x87
        c.send(r.pingreq())
        c.expect(r.PINGRESP)
    after = acl_broker.metrics()
    assert after.dropped("not_authorized") - before.dropped("not_authorized") == 2
    for qos in (1, 2):
        assert after.get("tern_messages_received_total", qos=qos) == before.get(
            "tern_messages_received_total", qos=qos)


def test_deny_by_default_v311_is_silent_for_publish(acl_broker):
    """MQTT 3.1.1 has no negative PUBACK: a denied QoS 1 PUBLISH is acknowledged (PUBACK) and
    dropped — a subscriber allowed to read the topic never gets it, while the message published
    right after it on an allowed topic arrives; a denied SUBSCRIBE gets return code 0x80."""
    port = acl_broker.port
    with login(port, "watcher") as watcher, login(port, "bob", version=4) as bob:
        assert sub_code(watcher, "random/#") == 1
        assert sub_code(watcher, "users/bob/#") == 1
        bob.send(r.publish("random/x", b"denied", qos=1, packet_id=7, version=4))
        assert bob.expect(r.PUBACK).packet_id == 7
        bob.send(r.publish("users/bob/marker", b"allowed", qos=1, packet_id=8, version=4))
        assert bob.expect(r.PUBACK).packet_id == 8
        first = watcher.expect(r.PUBLISH)
        assert (first.topic, first.payload) == ("users/bob/marker", b"allowed"), first
        assert sub_code(bob, "random/#") == 0x80
    assert acl_broker.metrics().dropped("not_authorized") == 1


def test_first_matching_rule_decides_and_deny_overlaps(acl_broker):
    """Rules are tried in file order and the first that applies decides: with `deny all subscribe
    news/secret/#` before `allow all subscribe news/#`, `news/#` is refused (it would also receive
    `news/secret/...`), and so are `news/secret/x` and `news/+/today` (which overlaps
    `news/secret/today`); `news/public/#` is granted."""
    with login(acl_broker.port, "bob") as c:
        assert sub_code(c, "news/#") == 0x87
        assert sub_code(c, "news/secret/x") == 0x87
        assert sub_code(c, "news/+/today") == 0x87
        assert sub_code(c, "news/public/#") == 1


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_qos_cap_downgrades_subscriptions_and_refuses_higher_publishes(acl_broker, version):
    """`allow user alice subscribe capped/# qos<=1`: a QoS 2 subscription is granted with QoS 1
    (SUBACK 0x01) and deliveries come at QoS 1; `allow user alice publish capped/# qos<=1`: a QoS
    1 publish is accepted, a QoS 2 one is denied (MQTT 5 PUBREC 0x87; 3.1.1 acknowledged and
    dropped)."""
    with login(acl_broker.port, "alice", version=version) as alice:
        assert sub_code(alice, "capped/#", qos=2) == 1
        if version == 5:
            assert pub_ack(alice, "capped/two", qos=2) == 0x87
        else:
            alice.send(r.publish("capped/two", b"2", qos=2, packet_id=50, version=4))
            alice.expect(r.PUBREC)
            alice.send(r.ack(r.PUBREL, 50, version=4))
            alice.expect(r.PUBCOMP)
        alice.send(r.publish("capped/one", b"1", qos=1, packet_id=51, version=version))
        got = [alice.recv(WAIT), alice.recv(WAIT)]
        delivery = [p for p in got if p.type == r.PUBLISH]
        assert [(p.topic, p.qos) for p in delivery] == [("capped/one", 1)], got
        assert acl_broker.admin().subscriptions(f"alice-{version}") == {"capped/#": 1}


@pytest.mark.parametrize("version", [5, 4], ids=["v5", "v311"])
def test_group_rules_apply_to_members_only(acl_broker, version):
    """`group ops = alice carol` with `allow group ops both ops/#`: carol (a member) may
    subscribe and publish under `ops/` and receives her message; bob (not a member) is refused
    (SUBACK 0x87 / 0x80; MQTT 5 PUBACK 0x87)."""
    refused = 0x87 if version == 5 else 0x80
    with login(acl_broker.port, "carol", version=version) as carol, \
            login(acl_broker.port, "bob", version=version) as bob:
        assert sub_code(carol, "ops/#") == 1
        carol.send(r.publish("ops/deploy", b"go", qos=1, packet_id=60, version=version))
        got = [carol.recv(WAIT), carol.recv(WAIT)]
        assert sorted(p.type for p in got) == [r.PUBLISH, r.PUBACK], got
        assert sub_code(bob, "ops/#") == refused
        if version == 5:
            assert pub_ack(bob, "ops/deploy") == 0x87


def test_sys_topics_need_an_explicit_rule(acl_broker):
    """`allow user watcher subscribe #` does not reach `$SYS/...` (a leading wildcard does not
    match `$` topics), so `$SYS/#` is refused by default; `#` itself is refused for watcher because
    the earlier `deny all subscribe news/secret/#` overlaps it."""
    with login(acl_broker.port, "watcher") as c:
        assert sub_code(c, "$SYS/#") == 0x87
        assert sub_code(c, "#") == 0x87
        assert sub_code(c, "anything/else/#") == 1


def test_retain_option_restricts_publishes(acl_broker):
    """`allow user bob publish plain/# retain=false`: a non-retained PUBLISH is accepted, a
    retained one is denied (PUBACK 0x87) and nothing is retained (admin API)."""
    with login(acl_broker.port, "bob") as bob:
        assert pub_ack(bob, "plain/a") in OK
        bob.send(r.publish("plain/b", b"keep me", qos=1, retain=True, packet_id=900))
        assert bob.expect(r.PUBACK).reason == 0x87
    assert acl_broker.admin().ok("GET", "/retained")["total"] == 0


def test_client_id_pattern_rules(acl_broker):
    """`allow client sensor-?? publish sensors/#`: `?` is exactly one character, so client ids
    `sensor-01` and `sensor-ab` may publish there, `sensor-1` and `sensor-001` may not (0x87)."""
    for client_id, allowed in (("sensor-01", True), ("sensor-ab", True), ("sensor-1", False),
                               ("sensor-001", False)):
        with login(acl_broker.port, "bob", client_id=client_id) as c:
            code = pub_ack(c, "sensors/temp")
            assert (code in OK) == allowed, (client_id, hex(code))
