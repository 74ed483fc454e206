"""The network connection as an ordered, lossless byte stream: the server must not depend on
how the client's bytes are cut into TCP segments."""

import time

import pytest

import rawmqtt as r
from support_extra import BOTH


def _session_bytes(uid: str, version: int) -> bytes:
    topic = f"tcp/{uid}"
    return (r.connect(uid, version=version)
            + r.subscribe(1, [(topic, 1)], version=version)
            + r.publish(topic, b"over tcp", qos=1, packet_id=2, version=version)
            + r.pingreq())


def _answers(c: r.RawClient) -> list:
    out = []
    while not out or out[-1].type != r.PINGRESP:
        out.append(c.recv(5.0))
    return out


@pytest.mark.parametrize("split", ["one_byte_writes", "one_write"])
@pytest.mark.parametrize("version", BOTH)
def test_packets_split_or_coalesced_in_the_byte_stream(broker, uid, version, split):
    """v5 [MQTT-4.2.0-1], v3.1.1 [MQTT-7.1.1-1]: over TCP the server reads MQTT packets from an
    ordered byte stream whatever its segmentation: CONNECT, SUBSCRIBE, a QoS 1 PUBLISH and
    PINGREQ sent one byte per write, or all in a single write, are each answered in order
    (CONNACK, SUBACK, then PUBACK and the delivery of the message, then PINGRESP)."""
    data = _session_bytes(uid, version)
    with r.RawClient(broker.port, version=version) as c:
        if split == "one_write":
            c.send(data)
        else:
            for i in range(len(data)):
                c.send(data[i:i + 1])
                time.sleep(0.001)
        got = _answers(c)
    types = [p.type for p in got]
    assert types[:2] == [r.CONNACK, r.SUBACK] and types[-1] == r.PINGRESP, got
    assert sorted(types[2:-1]) == [r.PUBLISH, r.PUBACK], got
    assert got[0].reason == 0 and got[1].codes == [1], got
    delivery = next(p for p in got if p.type == r.PUBLISH)
    assert delivery.payload == b"over tcp", delivery
