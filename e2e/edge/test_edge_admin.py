"""The admin API end to end (docs/admin-api.md), over real HTTP against the real binary, with MQTT
clients on the other side: bearer-token checks, broker info, clients (paging, show, kick, end
session), subscriptions, retained messages, publish, reload, drain, health and readiness, and
token rotation."""

from __future__ import annotations

import base64
import subprocess

import pytest

import expect  # conformance helper

from .helpers import (HOST, WAIT, clients, conformance, http_request, r, wait_for, write_text)

ROUTES = [("GET", "/broker"), ("GET", "/clients"), ("GET", "/clients/x"),
          ("DELETE", "/clients/x"), ("POST", "/clients/x/kick"), ("GET", "/subscriptions"),
          ("GET", "/retained"), ("DELETE", "/retained?topic=a"), ("POST", "/publish"),
          ("POST", "/reload"), ("PUT", "/auth"), ("GET", "/drain"), ("POST", "/drain")]


def test_missing_or_wrong_token_is_401_with_a_bearer_challenge(edge_broker):
    """Every admin route without `Authorization`, with a wrong bearer token, or with another
    scheme answers 401 with `WWW-Authenticate: Bearer` and does nothing (no drain started); the
    right token gets 200. `/metrics`, `/healthz` and `/readyz` need no token."""
    b = edge_broker()
    admin = b.admin()
    for method, path in ROUTES:
        for token, headers in ((None, {}), ("wrong-token", {}),
                               (None, {"Authorization": f"Basic {b.admin_token}"}),
                               (None, {"Authorization": b.admin_token})):
            resp = admin.request(method, path, token=token, headers=headers)
            assert resp.status == 401, (method, path, token, headers, resp)
            assert resp.headers.get("www-authenticate") == "Bearer", resp.headers
    assert admin.get("/drain").json()["state"] == "running"
    assert admin.get("/broker").status == 200
    for path in ("/metrics", "/healthz", "/readyz"):
        assert http_request(b.http_port, "GET", path).status == 200, path


def test_the_bearer_scheme_is_case_insensitive(edge_broker):
    """RFC 9110 §11.1: the authentication scheme is case-insensitive, so `bearer TOKEN` and
    `BEARER TOKEN` are accepted like `Bearer TOKEN`; the token itself is compared exactly."""
    b = edge_broker()
    admin = b.admin()
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        headers = {"Authorization": f"{scheme} {b.admin_token}"}
        assert admin.get("/broker", token=None, headers=headers).status == 200, scheme
    headers = {"Authorization": f"bearer {b.admin_token.upper()}"}
    assert admin.get("/broker", token=None, headers=headers).status == 401


def test_without_a_token_file_the_admin_api_is_404(edge_broker):
    """No `http.admin_token_file`: `/api/v1/...` answers 404 whatever the request carries, while
    `/metrics`, `/healthz` and `/readyz` still answer 200."""
    b = edge_broker(admin_token=None)
    for method, path in ROUTES:
        for headers in ({}, {"Authorization": "Bearer anything"}):
            resp = http_request(b.http_port, method, "/api/v1" + path, headers=headers)
            assert resp.status == 404, (method, path, resp)
    for path in ("/metrics", "/healthz", "/readyz"):
        assert http_request(b.http_port, "GET", path).status == 200, path


def test_broker_info(edge_broker):
    """`GET /api/v1/broker` reports the binary's version (as `tern-broker --version` prints it),
    every listener with its name, protocol and bound address, and the current connections,
    sessions, subscriptions and retained messages; `draining` is false."""
    b = edge_broker([{"name": "second", "protocol": "ws"}])
    c = clients.connect_v5(b.port, "info-client")
    c.subscribe("info/#")
    c.publish("info/kept", b"r", qos=1, retain=True)
    info = b.admin().ok("GET", "/broker")
    version = subprocess.run([str(conformance.tern_binary()), "--version"], capture_output=True,
                             text=True, timeout=WAIT).stdout.split()[-1]
    assert info["version"] == version
    listeners = {l["name"]: (l["protocol"], l["address"]) for l in info["listeners"]}
    assert listeners == {"mqtt": ("tcp", f"{HOST}:{b.port}"),
                         "second": ("ws", f"{HOST}:{b.ports['second']}")}
    assert (info["connections"], info["sessions"], info["subscriptions"], info["retained"]) == (
        1, 1, 1, 1), info
    assert info["draining"] is False and info["uptime_secs"] >= 0


def test_clients_list_pages_and_show(edge_broker):
    """`GET /api/v1/clients` lists sessions sorted by client id with `total`; `offset` and `limit`
    page through them (`offset=1&limit=2` → the 2nd and 3rd; past the end → no items, same total).
    `GET /api/v1/clients/{id}` shows one: connected, username, `remote_addr` (the client's real
    address), listener, protocol level, session expiry, subscription count and the subscriptions
    themselves; an unknown id is 404; an id with `/` is reached percent-encoded."""
    b = edge_broker()
    admin = b.admin()
    for i in (3, 0, 4, 1, 2):
        clients.connect_v5(b.port, f"page-{i}")
    odd = clients.connect_v5(b.port, "dev/7", SessionExpiryInterval=120)
    odd.subscribe("odd/#", qos=1)
    with r.RawClient(b.port, version=4) as raw:
        raw.handshake("page-raw", username="somebody")
        body = admin.ok("GET", "/clients")
        ids = [item["client_id"] for item in body["items"]]
        assert ids == sorted(ids) and body["total"] == 7 and body["offset"] == 0, body
        page = admin.ok("GET", "/clients?offset=1&limit=2")
        assert page["total"] == 7 and page["offset"] == 1
        assert [i["client_id"] for i in page["items"]] == ids[1:3]
        empty = admin.ok("GET", "/clients?offset=50&limit=10")
        assert empty["items"] == [] and empty["total"] == 7

        shown = admin.ok("GET", "/clients/page-raw")["client"]
        local = raw.sock.getsockname()
        assert shown["remote_addr"] == f"{local[0]}:{local[1]}"
        assert (shown["connected"], shown["username"], shown["listener"],
                shown["protocol_level"]) == (True, "somebody", "mqtt", 4), shown
        assert isinstance(shown["connected_since"], int)

    detail = admin.ok("GET", "/clients/dev%2F7")
    assert detail["client"]["session_expiry_interval"] == 120
    assert detail["client"]["subscriptions"] == 1
    assert [(s["filter"], s["qos"]) for s in detail["subscriptions"]] == [("odd/#", 1)]
    assert admin.get("/clients/nobody").status == 404


def test_kick_disconnects_with_0x98_and_keeps_the_session(edge_broker):
    """`POST /api/v1/clients/{id}/kick`: 202; the MQTT 5 client gets DISCONNECT 0x98
    *Administrative action* and is closed; its persistent session stays (listed, not connected)
    and resumes with its subscription. Kicking it again is 409 (not connected), an unknown id 404."""
    b = edge_broker()
    admin = b.admin()
    with r.RawClient(b.port) as c:
        c.handshake("kickme", props=[(r.SESSION_EXPIRY_INTERVAL, 300)])
        c.subscribe("kick/#", r.sub_options(qos=1))
        resp = admin.post("/clients/kickme/kick")
        assert resp.status == 202, resp
        expect.disconnected(c, 0x98, timeout=WAIT)
    wait_for(lambda: not admin.client("kickme")["client"]["connected"],
             message="the kicked client to show as disconnected")
    assert admin.post("/clients/kickme/kick").status == 409
    assert admin.post("/clients/nobody/kick").status == 404
    with r.RawClient(b.port) as c:
        assert c.handshake("kickme", clean=False,
                           props=[(r.SESSION_EXPIRY_INTERVAL, 300)]).session_present


def test_delete_ends_the_session(edge_broker):
    """`DELETE /api/v1/clients/{id}`: 204. For a connected MQTT 5 client: DISCONNECT 0x98 and
    its session is gone. For an offline persistent session with a queued message: the session,
    its subscription and the message are gone — reconnecting finds no session (Session Present 0)
    and receives nothing. Afterwards the id is 404."""
    b = edge_broker()
    admin = b.admin()
    with r.RawClient(b.port) as online:
        online.handshake("del-online", props=[(r.SESSION_EXPIRY_INTERVAL, 300)])
        assert admin.delete("/clients/del-online").status == 204
        expect.disconnected(online, 0x98, timeout=WAIT)
    wait_for(lambda: admin.client("del-online") is None, message="the session to be gone")

    with r.RawClient(b.port) as away:
        away.handshake("del-away", props=[(r.SESSION_EXPIRY_INTERVAL, 300)])
        away.subscribe("del/#", r.sub_options(qos=1))
        away.send(r.disconnect())
        away.read_until_closed(WAIT)
    pub = clients.connect_v5(b.port, "del-pub")
    pub.publish("del/x", b"queued", qos=1)
    wait_for(lambda: admin.client("del-away")["client"]["queued"] == 1,
             message="the message to be queued")
    assert admin.delete("/clients/del-away").status == 204
    assert admin.client("del-away") is None
    assert admin.delete("/clients/del-away").status == 404
    assert "del/#" not in [s["filter"] for s in admin.ok("GET", "/subscriptions")["items"]]
    with r.RawClient(b.port) as back:
        assert not back.handshake("del-away", clean=False,
                                  props=[(r.SESSION_EXPIRY_INTERVAL, 300)]).session_present
        expect.still_open(back)
        assert back.quiet_for(0.2) == []


def test_subscriptions_list(edge_broker):
    """`GET /api/v1/subscriptions` lists every subscription (client id, filter with any
    `$share/` prefix, QoS, options, identifier), sorted by client id then filter;
    `?client_id=` restricts it to one client."""
    b = edge_broker()
    admin = b.admin()
    with r.RawClient(b.port) as one, r.RawClient(b.port) as two:
        one.handshake("subs-1")
        two.handshake("subs-2")
        one.subscribe("z/last", r.sub_options(qos=2, no_local=True))
        one.subscribe("a/first", r.sub_options(qos=0, retain_handling=2), packet_id=2,
                      props=[(r.SUBSCRIPTION_IDENTIFIER, 42)])
        two.subscribe("$share/g/jobs/#", r.sub_options(qos=1))
        body = admin.ok("GET", "/subscriptions")
        got = [(s["client_id"], s["filter"], s["qos"]) for s in body["items"]]
        assert got == [("subs-1", "a/first", 0), ("subs-1", "z/last", 2),
                       ("subs-2", "$share/g/jobs/#", 1)], body
        assert body["total"] == 3
        first = body["items"][0]
        assert first["identifier"] == 42 and first["retain_handling"] == 2, first
        assert body["items"][1]["no_local"] is True
        only = admin.ok("GET", "/subscriptions?client_id=subs-2")
        assert [s["filter"] for s in only["items"]] == ["$share/g/jobs/#"]


@pytest.mark.parametrize("path", ["/subscriptions?offset=1&limit=1",
                                  "/retained?offset=1&limit=1",
                                  "/subscriptions?client_id=page-sub&limit=1"])
def test_subscription_and_retained_lists_page(edge_broker, path):
    """docs/admin-api.md: "Lists take `offset` … and `limit`". `GET /api/v1/subscriptions` and
    `GET /api/v1/retained` with `offset` and `limit` answer 200 with one item and the full total
    (the same as `GET /api/v1/clients` does)."""
    b = edge_broker()
    with r.RawClient(b.port) as c:
        c.handshake("page-sub")
        c.subscribe("p/1", r.sub_options(qos=1))
        c.subscribe("p/2", r.sub_options(qos=1), packet_id=2)
        for i in (1, 2):
            c.send(r.publish(f"p/{i}", b"r", qos=1, retain=True, packet_id=10 + i))
        got = sorted(c.recv(WAIT).type for _ in range(4))  # 2 PUBACKs, 2 deliveries
        assert got == [r.PUBLISH, r.PUBLISH, r.PUBACK, r.PUBACK], got
        resp = b.admin().get(path)
        assert resp.status == 200, resp
        body = resp.json()
        assert body["total"] == 2 and len(body["items"]) == 1, body


def test_retained_list_and_delete(edge_broker):
    """`GET /api/v1/retained?filter=` lists retained messages matching the filter (topic, QoS,
    `payload_base64`, size); `DELETE /api/v1/retained?topic=` removes one (204; again 404; a
    wildcard topic 400), after which a new subscriber gets only the other retained message."""
    b = edge_broker()
    admin = b.admin()
    pub = clients.connect_v5(b.port, "ret-pub")
    pub.publish("ret/1", b"\x00one", qos=1, retain=True)
    pub.publish("ret/2", b"two", qos=0, retain=True)
    pub.publish("other/3", b"three", qos=1, retain=True)
    listed = admin.ok("GET", "/retained?filter=ret/%23")
    assert listed["total"] == 2
    assert [(i["topic"], i["qos"], base64.b64decode(i["payload_base64"]), i["size"])
            for i in listed["items"]] == [("ret/1", 1, b"\x00one", 4), ("ret/2", 0, b"two", 3)]
    assert admin.ok("GET", "/retained")["total"] == 3

    assert admin.delete("/retained?topic=ret/1").status == 204
    assert admin.delete("/retained?topic=ret/1").status == 404
    assert admin.delete("/retained?topic=ret/%2B").status == 400
    assert [i["topic"] for i in admin.ok("GET", "/retained?filter=ret/%23")["items"]] == ["ret/2"]
    with r.RawClient(b.port) as fresh:
        fresh.handshake("ret-fresh")
        fresh.subscribe("ret/1", r.sub_options(qos=1))
        fresh.subscribe("ret/2", r.sub_options(qos=1), packet_id=2)
        # Retained messages for the first SUBSCRIBE are sent before the second one's, so once
        # ret/2's is in, ret/1's would have come first.
        got = fresh.expect(r.PUBLISH)
        assert (got.topic, got.payload) == ("ret/2", b"two"), got


def test_publish_through_the_api(edge_broker):
    """`POST /api/v1/publish`: a text payload at QoS 1 reaches the subscriber at QoS 1 and the
    answer counts the sessions it was handed to; `payload_base64` carries binary bytes exactly;
    `retain: true` stores it. A topic with wildcards, an empty topic, QoS 3, both payload kinds,
    bad base64 and malformed JSON are each 400."""
    b = edge_broker()
    admin = b.admin()
    sub = clients.connect_v5(b.port, "api-sub")
    assert sub.subscribe("api/#", qos=2) == [2]
    assert admin.ok("POST", "/publish", {"topic": "api/text", "payload": "héllo", "qos": 1}) == {
        "delivered_to": 1}
    got = sub.wait_message("api/text")
    assert (got.payload, got.qos) == ("héllo".encode(), 1)
    raw = bytes([0, 255, 16, 128])
    admin.ok("POST", "/publish", {"topic": "api/bin", "payload_base64":
                                  base64.b64encode(raw).decode(), "retain": True})
    assert sub.wait_message("api/bin").payload == raw
    assert [i["topic"] for i in admin.ok("GET", "/retained")["items"]] == ["api/bin"]
    for bad in ({"topic": "api/+/x", "payload": "x"}, {"topic": "", "payload": "x"},
                {"topic": "api/x", "payload": "x", "qos": 3},
                {"topic": "api/x", "payload": "x", "payload_base64": "eA=="},
                {"topic": "api/x", "payload_base64": "***"}, "{not json"):
        resp = admin.post("/publish", bad if isinstance(bad, dict) else bad.encode())
        assert resp.status == 400, (bad, resp)
        assert "error" in resp.json(), resp
    assert admin.ok("POST", "/publish", {"topic": "nobody/here"}) == {"delivered_to": 0}


def test_reload_reports_each_file_set(edge_broker):
    """`POST /api/v1/reload` with nothing changed answers 200 and reports each reloadable file
    set (here the admin token) as unchanged, without error."""
    b = edge_broker()
    body = b.admin().reload()
    assert {"name": "admin_token", "changed": False, "error": None} in body["reloaded"], body


def test_drain(edge_broker):
    """`POST /api/v1/drain`: 202; MQTT 5 clients get DISCONNECT 0x9C *Use another server*, 3.1.1
    clients are closed; new connections get no CONNACK; `/readyz` turns 503 while `/healthz` stays
    200; `GET /api/v1/drain` reports `drained` once no connection is left, and the persistent
    session is still held."""
    b = edge_broker()
    admin = b.admin()
    assert http_request(b.http_port, "GET", "/readyz").status == 200
    assert admin.ok("GET", "/drain")["state"] == "running"
    v5 = r.RawClient(b.port)
    v5.handshake("drain-v5", props=[(r.SESSION_EXPIRY_INTERVAL, 300)])
    v3 = r.RawClient(b.port, version=4)
    v3.handshake("drain-v3")
    with v5, v3:
        resp = admin.post("/drain")
        assert resp.status == 202, resp
        assert resp.json()["state"] in ("draining", "drained")
        expect.disconnected(v5, 0x9C, timeout=WAIT)
        packets, closed = v3.read_until_closed(WAIT)
        assert closed and packets == [], packets
    try:
        with r.RawClient(b.port) as late:
            late.send_quietly(r.connect("too-late"))
            packets, closed = late.read_until_closed(WAIT)
            assert closed and packets == [], packets
    except ConnectionRefusedError:
        pass  # the listener is closed: refused before a byte is sent
    assert http_request(b.http_port, "GET", "/readyz").status == 503
    assert http_request(b.http_port, "GET", "/healthz").status == 200
    progress = wait_for(lambda: (lambda p: p if p["state"] == "drained" else None)(
        admin.ok("GET", "/drain")), message="the drain to finish")
    assert progress["connections"] == 0 and progress["sessions"] == 1, progress
    assert admin.ok("GET", "/broker")["draining"] is True


@pytest.mark.parametrize("trigger", ["admin_reload", "file_watcher"])
def test_token_rotation(edge_broker, trigger):
    """The admin token file is rewritten with a new token; after `POST /api/v1/reload` (made
    with the old token, reporting `admin_token` changed) — or after the file watcher sees the
    change — the new token is accepted and the old one gets 401."""
    b = edge_broker(config={"auth": {"reload_poll_secs": 1 if trigger == "file_watcher" else 0}})
    old, new = b.admin(), b.admin("edge-token-1")
    assert old.get("/broker").status == 200 and new.get("/broker").status == 401
    write_text(b.token_path, "  edge-token-1\n")
    if trigger == "admin_reload":
        body = old.reload()
        assert {"name": "admin_token", "changed": True, "error": None} in body["reloaded"], body
    else:
        wait_for(lambda: new.get("/broker").status == 200, interval=0.1,
                 message="the watcher to load the new token")
    assert new.get("/broker").status == 200
    resp = old.get("/broker")
    assert resp.status == 401 and resp.headers.get("www-authenticate") == "Bearer", resp


def test_healthz_and_readyz(edge_broker):
    """`/healthz` answers 200 while the process runs and `/readyz` 200 while listeners accept."""
    b = edge_broker()
    assert http_request(b.http_port, "GET", "/healthz").status == 200
    assert http_request(b.http_port, "GET", "/readyz").status == 200


def test_delete_publishes_the_pending_will(edge_broker):
    """docs/admin-api.md: `DELETE /api/v1/clients/{id}` "publishes a pending will": the will of a
    connected MQTT 5 client reaches a subscriber when its session is ended through the API."""
    b = edge_broker()
    watcher = clients.connect_v5(b.port, "will-watcher")
    assert watcher.subscribe("wills/#", qos=1) == [1]
    with r.RawClient(b.port) as doomed:
        doomed.handshake("doomed", will=r.Will("wills/doomed", b"gone", qos=1))
        assert b.admin().delete("/clients/doomed").status == 204
        expect.disconnected(doomed, 0x98, timeout=WAIT)
    got = watcher.wait_message("wills/doomed")
    assert got.payload == b"gone"
