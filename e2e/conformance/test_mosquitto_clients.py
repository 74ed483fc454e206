"""Debian's mosquitto_pub / mosquitto_sub against the broker, for MQTT 3.1, 3.1.1 and 5.

mosquitto_sub runs with -d so the test can see its SUBACK before publishing,
and with -F so each message comes out as one parseable line.
"""

import shutil
import signal
import subprocess
import threading

import pytest

import clients
from clients import app_messages, connect_v5, sync, wait_for

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_sub") is None,
                                reason="mosquitto-clients (mosquitto_pub/mosquitto_sub) not installed")

VERSIONS = ["mqttv31", "mqttv311", "mqttv5"]
FORMAT = "MSG|%t|%q|%r|%x|%C|%E|%P|%R|%D"
STDBUF = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []


class Sub:
    """A running mosquitto_sub whose output is collected line by line."""

    def __init__(self, port, topic, version="mqttv311", qos=0, count=None, extra=()):
        # stdbuf: mosquitto_sub block-buffers stdout into a pipe; the test needs each line.
        cmd = [*STDBUF, "mosquitto_sub", "-h", clients.next_host(port), "-p", str(port), "-V", version, "-t", topic,
               "-q", str(qos), "-d", "-F", FORMAT, *extra]
        if count is not None:
            cmd += ["-C", str(count)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, errors="replace")
        self.lines: list = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        _SUBS.append(self)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_subscribed(self, timeout=5.0):
        wait_for(lambda: any("received SUBACK" in line for line in self.lines), timeout,
                 message=f"mosquitto_sub SUBACK (output: {self.lines})")
        return self

    def messages(self):
        out = []
        for line in self.lines:
            if line.startswith("MSG|"):
                _, topic, qos, retain, hexpayload, ctype, expiry, user, resp, corr = line.split("|")
                out.append(dict(topic=topic, qos=int(qos), retain=retain == "1",
                                payload=bytes.fromhex(hexpayload), content_type=ctype,
                                expiry=expiry, user=user, response_topic=resp,
                                correlation=corr))
        return out

    def wait_messages(self, n, timeout=5.0):
        wait_for(lambda: len(self.messages()) >= n, timeout,
                 message=f"{n} message(s) at mosquitto_sub (output: {self.lines[-10:]})")
        return self.messages()

    def wait_exit(self, timeout=5.0):
        """The exit status, once the process has ended and all its output is read."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"mosquitto_sub still running; output: {self.lines[-10:]}")
        self.reader.join(timeout)
        return code

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


_SUBS: list = []


@pytest.fixture(autouse=True)
def _stop_subs():
    yield
    while _SUBS:
        _SUBS.pop().stop()


def pub(port, topic, payload="hello", version="mqttv311", qos=0, extra=()):
    cmd = ["mosquitto_pub", "-h", clients.next_host(port), "-p", str(port), "-V", version, "-t", topic,
           "-q", str(qos), *extra]
    cmd += ["-n"] if payload is None else ["-m", payload]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, f"mosquitto_pub failed ({done.returncode}): {done.stderr}"


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", VERSIONS)
def test_cli_pub_sub_each_qos(broker, uid, version, qos):
    """v5 [MQTT-3.8.4-8] [MQTT-3.3.4-1], v3.1.1 [MQTT-3.8.4-6] [MQTT-3.3.4-1]:
    mosquitto_sub receives what mosquitto_pub sends, at the QoS used, for 3.1/3.1.1/5."""
    topic = f"cli/{uid}/{version}"
    sub = Sub(broker.port, topic, version, qos=qos, count=1).wait_subscribed()
    pub(broker.port, topic, f"msg-{qos}", version, qos)
    assert sub.wait_exit() == 0
    [msg] = sub.messages()
    assert (msg["topic"], msg["payload"], msg["qos"], msg["retain"]) == (
        topic, f"msg-{qos}".encode(), qos, False)


@pytest.mark.parametrize("pub_version,sub_version", [
    ("mqttv31", "mqttv5"), ("mqttv5", "mqttv31"), ("mqttv311", "mqttv5"), ("mqttv5", "mqttv311")])
def test_cli_cross_version_delivery(broker, uid, pub_version, sub_version):
    """v5 [MQTT-3.3.2-3]: a message crosses protocol versions unchanged (QoS 1 both ways)."""
    topic = f"clix/{uid}"
    sub = Sub(broker.port, topic, sub_version, qos=1, count=1).wait_subscribed()
    pub(broker.port, topic, "across", pub_version, 1)
    sub.wait_exit()
    assert sub.messages()[0]["payload"] == b"across" and sub.messages()[0]["qos"] == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_retained_set_and_cleared(broker, uid, version):
    """v5 [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-9], v3.1.1 [MQTT-3.3.1-6] [MQTT-3.3.1-8]
    [MQTT-3.3.1-10]: -r stores a retained message that a later mosquitto_sub gets with the
    retain flag; -r -n (empty) clears it."""
    topic = f"clir/{uid}"
    pub(broker.port, topic, "kept", version, 1, extra=["-r"])
    sub = Sub(broker.port, topic, version, qos=1, count=1)
    sub.wait_exit()
    assert [(m["payload"], m["retain"]) for m in sub.messages()] == [(b"kept", True)]
    pub(broker.port, topic, None, version, 1, extra=["-r"])
    sub = Sub(broker.port, topic, version, qos=1, count=1).wait_subscribed()
    pub(broker.port, topic, "live", version, 1)
    sub.wait_exit()
    assert [(m["payload"], m["retain"]) for m in sub.messages()] == [(b"live", False)]


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_count_stops_after_n(broker, uid, version):
    """v5 [MQTT-4.6.0-5], v3.1.1 [MQTT-4.6.0-5]: with -C 3, mosquitto_sub exits after exactly
    three of the five messages published, and they are the first three, in order."""
    topic = f"clic/{uid}"
    sub = Sub(broker.port, topic, version, qos=1, count=3).wait_subscribed()
    for i in range(5):
        pub(broker.port, topic, f"n{i}", version, 1)
    assert sub.wait_exit() == 0
    assert [m["payload"] for m in sub.messages()] == [b"n0", b"n1", b"n2"]


@pytest.mark.parametrize("retain", [False, True], ids=["plain", "retained"])
@pytest.mark.parametrize("version", VERSIONS)
def test_cli_will_published_when_client_killed(broker, uid, version, retain):
    """v5 [MQTT-3.1.2-8] [MQTT-3.1.2-14] [MQTT-3.1.2-15], v3.1.1 [MQTT-3.1.2-8]
    [MQTT-3.1.2-16] [MQTT-3.1.2-17]: --will-topic/--will-payload/--will-qos/--will-retain
    set a will that is published (retained if asked) when mosquitto_sub is killed."""
    will_topic = f"cliw/{uid}"
    watcher = connect_v5(broker.port, uid + "w")
    watcher.subscribe(will_topic, qos=1)
    extra = ["--will-topic", will_topic, "--will-payload", "died", "--will-qos", "1"]
    if retain:
        extra.append("--will-retain")
    holder = Sub(broker.port, f"cliw/{uid}/hold", version, extra=extra).wait_subscribed()
    holder.proc.send_signal(signal.SIGKILL)
    msg = watcher.wait_message(will_topic)
    assert (msg.payload, msg.qos) == (b"died", 1)
    late = Sub(broker.port, will_topic, version, qos=1, count=1, extra=["-W", "3"])
    if retain:
        late.wait_exit()
        assert [(m["payload"], m["retain"]) for m in late.messages()] == [(b"died", True)]
    else:
        late.wait_subscribed()
        pub(broker.port, will_topic, "after", version, 1)
        late.wait_exit()
        assert [m["payload"] for m in late.messages()] == [b"after"]


@pytest.mark.parametrize("version", VERSIONS)
def test_cli_will_not_published_on_clean_exit(broker, uid, version):
    """v5 [MQTT-3.1.2-10], v3.1.1 [MQTT-3.1.2-10]: mosquitto_sub leaving normally (-C 1, then
    DISCONNECT) does not publish its will."""
    will_topic = f"cliwn/{uid}"
    watcher = connect_v5(broker.port, uid + "w")
    watcher.subscribe(will_topic, qos=1)
    holder = Sub(broker.port, f"{will_topic}/hold", version, count=1, extra=[
        "--will-topic", will_topic, "--will-payload", "died", "-i", (uid + "h")[-23:]])
    holder.wait_subscribed()
    pub(broker.port, f"{will_topic}/hold", "bye", version)
    assert holder.wait_exit() == 0
    connect_v5(broker.port, (uid + "h")[-23:]).disconnect()
    sync(connect_v5(broker.port, uid + "p"), watcher, will_topic, qos=1)
    assert app_messages(watcher, will_topic) == []


def test_cli_v5_properties_pass_through(broker, uid):
    """v5 [MQTT-3.3.2-4] [MQTT-3.3.2-6] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17]
    [MQTT-3.3.2-18] [MQTT-3.3.2-20]: -D publish user-property / content-type /
    message-expiry-interval / response-topic / correlation-data / payload-format-indicator
    reach both a paho subscriber and a mosquitto_sub subscriber."""
    topic = f"clip/{uid}"
    paho = connect_v5(broker.port, uid + "s")
    paho.subscribe(topic, qos=1)
    sub = Sub(broker.port, topic, "mqttv5", qos=1, count=1).wait_subscribed()
    pub(broker.port, topic, "props", "mqttv5", 1, extra=[
        "-D", "publish", "user-property", "k", "v1",
        "-D", "publish", "user-property", "a", "b",
        "-D", "publish", "user-property", "k", "v2",
        "-D", "publish", "content-type", "text/plain",
        "-D", "publish", "message-expiry-interval", "60",
        "-D", "publish", "response-topic", f"reply/{uid}",
        "-D", "publish", "correlation-data", "corr-1",
        "-D", "publish", "payload-format-indicator", "1",
    ])
    props = paho.wait_message(topic).props
    assert props.get("UserProperty") == [("k", "v1"), ("a", "b"), ("k", "v2")]
    assert props.get("ContentType") == "text/plain"
    assert 58 <= props.get("MessageExpiryInterval", -1) <= 60
    assert props.get("ResponseTopic") == f"reply/{uid}"
    assert props.get("CorrelationData") == b"corr-1"
    assert props.get("PayloadFormatIndicator") == 1
    sub.wait_exit()
    [m] = sub.messages()
    assert (m["content_type"], m["user"], m["response_topic"], m["correlation"]) == (
        "text/plain", "k:v1 a:b k:v2", f"reply/{uid}", "corr-1")
    assert 58 <= int(m["expiry"]) <= 60


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_cli_persistent_session_receives_queued(broker, uid, version):
    """v5 [MQTT-3.1.2-5] [MQTT-3.1.2-23], v3.1.1 [MQTT-3.1.2-4] [MQTT-3.1.2-5]: mosquitto_sub -c
    (clean session 0 / session expiry) subscribes and leaves (-E); a QoS 1 message sent while
    it is away is delivered when it comes back with the same id."""
    topic = f"clis/{uid}"
    cid = (uid + "c")[-23:]
    session = ["-c", "-i", cid] + (["-x", "60"] if version == "mqttv5" else [])
    first = Sub(broker.port, topic, version, qos=1, extra=session + ["-E"])
    assert first.wait_exit() == 0
    pub(broker.port, topic, "queued", version, 1)
    again = Sub(broker.port, topic, version, qos=1, count=1, extra=session)
    assert again.wait_exit() == 0
    assert [m["payload"] for m in again.messages()] == [b"queued"]
