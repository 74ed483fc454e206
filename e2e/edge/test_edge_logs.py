"""The text log against text that clients choose: a client id, an authentication method or a
topic filter with a newline cannot forge a log line, and ANSI escapes in them reach no terminal
(docs/configuration.md, `log`). The broker's standard error is a file here, so the log carries no
colour either."""

from __future__ import annotations

from .helpers import r, raw_connect, wait_log

FORGED = "2026-01-01T00:00:00.000000Z  INFO tern_broker::server: forged"
EVIL_ID = f"evil\n{FORGED}\x1b[31mred"


def test_client_text_cannot_forge_or_colour_log_lines(edge_broker, monkeypatch):
    """A client id with `\\n` and `\\x1b[31m` is logged on one line, the newline as `\\n` and the
    escape as `\\u{1b}`, in "client connected" and "client disconnected"; so is an MQTT 5
    authentication method no hook knows (logged at debug). No line of the log starts with the
    forged text, and the log holds no escape character at all: with standard error a file, no
    colour codes are written even though `NO_COLOR` is unset."""
    monkeypatch.setenv("NO_COLOR", "")  # empty counts as unset: colour is off because of the file
    b = edge_broker()
    c, connack = raw_connect(b.port, EVIL_ID, 4)
    assert connack is not None and connack.type == r.CONNACK and connack.reason == 0, connack
    wait_log(b, r"client connected client_id=evil")
    c.close()
    wait_log(b, r"client disconnected client_id=evil")
    method = f"x-custom\n{FORGED}\x1b]0;title\x07"
    c, connack = raw_connect(b.port, "auth-method", 5, props=[(r.AUTHENTICATION_METHOD, method)])
    assert connack is not None and connack.reason == 0x8C, connack
    c.close()
    wait_log(b, r"no hook knows this authentication method")

    log = b.log_text()
    assert "\x1b" not in log and "\x07" not in log, "escape characters reached the log"
    assert not any(line.startswith(FORGED) for line in log.splitlines()), log
    escaped_id = "evil\\n" + FORGED + "\\u{1b}[31mred"
    for event in ("client connected", "client disconnected"):
        lines = [line for line in log.splitlines() if event in line and "evil" in line]
        assert len(lines) == 1 and f"client_id={escaped_id} " in lines[0], (event, lines)
    lines = [line for line in log.splitlines() if "no hook knows" in line]
    assert len(lines) == 1, lines
    assert "method=x-custom\\n" + FORGED + "\\u{1b}]0;title\\u{7}" in lines[0], lines
