"""`/metrics` as Prometheus sees it: the page is parsed by prometheus_client's text parser, carries
the metric families docs/configuration.md lists with the right types, and its values are exactly
what the test's own clients caused — connections, messages by QoS received and sent, bytes on the
wire, subscriptions, retained messages, sessions and the delivery latency histogram."""

from __future__ import annotations

from .helpers import WAIT, http_request, r


class CountingRawClient(r.RawClient):
    """A conformance RawClient that counts the bytes it writes and reads."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = 0
        self.read = 0

    def send(self, data: bytes) -> None:
        super().send(data)
        self.sent += len(data)

    def _fill(self, deadline: float) -> None:
        before = len(self.buf)
        super()._fill(deadline)
        self.read += len(self.buf) - before


def test_metric_families_and_types(edge_broker):
    """The page parses as Prometheus text; every family docs/configuration.md lists is there with
    its type (counters named `*_total`, gauges, the latency histogram with buckets, sum and count),
    and every name starts with `tern_`. Labelled counters have one sample per documented label."""
    from prometheus_client.parser import text_string_to_metric_families

    b = edge_broker()
    text = http_request(b.http_port, "GET", "/metrics").body.decode()
    kinds = {}
    names = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
            kinds[sample.name] = family.type
    assert all(n.startswith("tern_") for n in names), sorted(names)
    counters = ["tern_connections_total", "tern_messages_received_total", "tern_messages_sent_total",
                "tern_bytes_received_total", "tern_bytes_sent_total",
                "tern_messages_dropped_total", "tern_limit_hits_total",
                "tern_auth_failures_total", "tern_protocol_errors_total",
                "tern_http_connections_closed_total"]
    gauges = ["tern_connections", "tern_sessions", "tern_subscriptions", "tern_retained_messages",
              "tern_inflight_messages", "tern_queued_messages", "tern_http_connections"]
    for name in counters:
        assert kinds.get(name) == "counter", (name, kinds.get(name))
    for name in gauges:
        assert kinds.get(name) == "gauge", (name, kinds.get(name))
    for suffix in ("_bucket", "_sum", "_count"):
        assert kinds.get("tern_delivery_latency_seconds" + suffix) == "histogram"
    m = b.metrics()
    for qos in (0, 1, 2):
        assert m.get("tern_messages_received_total", qos=qos) == 0
        assert m.get("tern_messages_sent_total", qos=qos) == 0
    for reason in ("queue_full", "queue_full_oldest", "expired", "too_large_for_client",
                   "not_authorized"):
        assert m.dropped(reason) == 0
    for limit in ("max_packet_size", "receive_maximum", "max_topic_length", "max_topic_levels",
                  "max_connections", "connection_rate", "publish_rate", "max_subscriptions",
                  "max_queued_messages"):
        assert m.limit(limit) == 0
    for reason in ("max_connections", "header_read_timeout", "keep_alive_timeout",
                   "idle_timeout"):
        assert m.get("tern_http_connections_closed_total", reason=reason) == 0


def test_metric_values_are_what_the_clients_did(edge_broker):
    """Two raw MQTT 5 clients and one 3.1.1 client; the subscriber holds one QoS 2 subscription;
    the publishers send 4 QoS 0, 3 QoS 1 and 2 QoS 2 messages (one of them retained) which all
    reach the subscriber. From a baseline scrape: `tern_connections_total` +3,
    `tern_messages_received_total` and `tern_messages_sent_total` 4/3/2 by QoS,
    `tern_delivery_latency_seconds_count` +9, and the byte counters equal to exactly the bytes the
    clients wrote and read. The gauges: 3 connections, 3 sessions, 1 subscription, 1 retained
    message, nothing in flight or queued."""
    b = edge_broker()
    base = b.metrics()
    sub = CountingRawClient(b.port)
    pub5 = CountingRawClient(b.port)
    pub3 = CountingRawClient(b.port, version=4)
    with sub, pub5, pub3:
        sub.handshake("m-sub")
        pub5.handshake("m-pub5")
        pub3.handshake("m-pub3")
        sub.subscribe("m/#", r.sub_options(qos=2))
        plan = [(pub5, 0), (pub5, 0), (pub3, 0), (pub3, 0), (pub5, 1), (pub3, 1), (pub5, 1),
                (pub5, 2), (pub3, 2)]
        for i, (pub, qos) in enumerate(plan):
            pub.send(r.publish(f"m/{i}", b"payload-%d" % i, qos=qos, packet_id=i + 1 if qos else None,
                               retain=(i == 4), version=pub.version))
            if qos == 1:
                pub.expect(r.PUBACK)
            elif qos == 2:
                pub.expect(r.PUBREC)
                pub.send(r.ack(r.PUBREL, i + 1, version=pub.version))
                pub.expect(r.PUBCOMP)
        publishes, awaiting_rel = 0, set()
        while publishes < len(plan) or awaiting_rel:
            p = sub.recv(WAIT)
            if p.type == r.PUBLISH:
                publishes += 1
                if p.qos == 1:
                    sub.send(r.ack(r.PUBACK, p.packet_id))
                elif p.qos == 2:
                    sub.send(r.ack(r.PUBREC, p.packet_id))
                    awaiting_rel.add(p.packet_id)
            else:
                assert p.type == r.PUBREL, p
                awaiting_rel.discard(p.packet_id)
                sub.send(r.ack(r.PUBCOMP, p.packet_id))
        for c in (sub, pub5, pub3):  # a ping round trip: every earlier answer has been read
            c.send(r.pingreq())
            c.expect(r.PINGRESP)
        m = b.metrics()
        written = sub.sent + pub5.sent + pub3.sent
        read = sub.read + pub5.read + pub3.read

    def delta(name, **labels):
        return m.get(name, **labels) - base.get(name, **labels)

    assert delta("tern_connections_total") == 3
    for qos, count in ((0, 4), (1, 3), (2, 2)):
        assert delta("tern_messages_received_total", qos=qos) == count, qos
        assert delta("tern_messages_sent_total", qos=qos) == count, qos
    assert delta("tern_delivery_latency_seconds_count") == 9
    assert delta("tern_bytes_received_total") == written
    assert delta("tern_bytes_sent_total") == read
    assert m.get("tern_connections") == 3
    assert m.get("tern_sessions") == 3
    assert m.get("tern_subscriptions") == 1
    assert m.get("tern_retained_messages") == 1
    assert m.get("tern_inflight_messages") == 0 and m.get("tern_queued_messages") == 0
    assert m.get("tern_auth_failures_total") == 0 and m.get("tern_protocol_errors_total") == 0
