//! `$SYS/broker/...`: broker statistics published as retained messages on an interval, and per-client
//! connect/disconnect notices (like hmq's), so plain MQTT tools can watch the broker.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytestring::ByteString;
use sha2::{Digest, Sha256};
use tracing::{debug, info};

use crate::broker::Broker;
use crate::codec::QoS;
use crate::hook::ClientInfo;
use crate::message::Message;
use crate::stats::DropReason;
use crate::topic::TopicFilter;

/// Publishes the statistics every `config.sys.interval_secs` until shutdown.
pub async fn run(broker: Arc<Broker>) {
    let Some(interval) = broker.config().sys.interval() else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => publish_statistics(&broker),
            () = broker.shutdown_token().cancelled() => return,
        }
    }
}

/// Statistics that add up across a cluster's nodes; the others (version, uptime, retained
/// messages, which every node holds all of) are the publishing node's own.
const SUMMED: [&str; 9] = [
    "clients/connected",
    "clients/total",
    "connections/total",
    "messages/received",
    "messages/sent",
    "messages/dropped",
    "bytes/received",
    "bytes/sent",
    "subscriptions/count",
];

/// One round of `$SYS/broker/...` topics, all retained so a new subscriber sees them at once. In a
/// cluster each node publishes its own under `$SYS/broker/nodes/{node id}/...`, and the node whose
/// id sorts first publishes the cluster's totals under `$SYS/broker/...`, as one broker would.
pub fn publish_statistics(broker: &Broker) {
    let values = node_statistics(broker);
    let Some(cluster) = broker.cluster() else {
        publish_all(broker, "$SYS/broker", values);
        return;
    };
    let node = notice_level(cluster.node_id());
    publish_all(broker, &format!("$SYS/broker/nodes/{node}"), values.clone());
    if !cluster.leads() {
        return;
    }
    let members: Vec<String> = cluster
        .member_ids()
        .iter()
        .map(|id| notice_level(id))
        .collect();
    let totals = values
        .into_iter()
        .map(|(name, own)| {
            if SUMMED.contains(&name) {
                (name, sum_over_nodes(broker, &members, name).to_string())
            } else {
                (name, own)
            }
        })
        .collect();
    publish_all(broker, "$SYS/broker", totals);
}

/// This node's statistics, by topic name under `$SYS/broker/`.
fn node_statistics(broker: &Broker) -> Vec<(&'static str, String)> {
    let stats = broker.stats();
    vec![
        ("version", format!("tern {}", env!("CARGO_PKG_VERSION"))),
        ("uptime", format!("{} seconds", broker.uptime().as_secs())),
        ("clients/connected", stats.connections.get().to_string()),
        ("clients/total", broker.session_count().to_string()),
        (
            "connections/total",
            stats.connections_total.get().to_string(),
        ),
        ("messages/received", stats.received_total().to_string()),
        ("messages/sent", stats.sent_total().to_string()),
        (
            "messages/dropped",
            DropReason::ALL
                .iter()
                .map(|r| stats.dropped_count(*r))
                .sum::<u64>()
                .to_string(),
        ),
        ("bytes/received", stats.bytes_received.get().to_string()),
        ("bytes/sent", stats.bytes_sent.get().to_string()),
        (
            "subscriptions/count",
            broker.subscription_count().to_string(),
        ),
        (
            "retained messages/count",
            broker.retained().count().to_string(),
        ),
    ]
}

fn publish_all(broker: &Broker, prefix: &str, values: Vec<(&'static str, String)>) {
    for (name, value) in values {
        broker.publish(
            Message::new(format!("{prefix}/{name}"), value, QoS::AtMostOnce, true),
            None,
        );
    }
}

/// The sum of one statistic over the live members, from the per-node values every node retains.
fn sum_over_nodes(broker: &Broker, members: &[String], name: &str) -> u64 {
    members
        .iter()
        .filter_map(|node| {
            let topic = format!("$SYS/broker/nodes/{node}/{name}");
            let filter = TopicFilter::parse(ByteString::from(topic)).ok()?;
            let found = broker
                .retained()
                .matching(&filter, std::time::Instant::now());
            let message = found.first()?;
            std::str::from_utf8(&message.payload)
                .ok()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The most bytes of a notice topic's client-id level. A client id may be 65,535 bytes, and so may
/// a topic: the id whole would leave no room for the rest of the topic, and a topic no client can
/// be sent closes every subscriber of the notices. A longer id is cut, and a hash of the whole id
/// keeps it apart from others with the same start.
const MAX_NOTICE_LEVEL: usize = 128;
/// Bytes of the escaped id kept before the hash when it is cut.
const NOTICE_PREFIX: usize = MAX_NOTICE_LEVEL - 17;

/// Publishes `$SYS/broker/clients/{client id}/connected` (or `/disconnected`) with a JSON body.
/// Characters that would break the topic (`/`, `+`, `#`), and `%` and `~`, are percent-encoded
/// in the id; an id longer than [`MAX_NOTICE_LEVEL`] becomes its start, `~` and a hash.
pub fn client_notice(broker: &Broker, client: &ClientInfo, connected: bool) {
    if !broker.config().sys.client_notices {
        return;
    }
    let event = if connected {
        "connected"
    } else {
        "disconnected"
    };
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let body = serde_json::json!({
        "client_id": client.client_id.as_str(),
        "username": client.username.as_deref(),
        "remote_addr": client.remote_addr.to_string(),
        "protocol_level": client.protocol.level(),
        "listener": &*client.listener,
        "event": event,
        "timestamp": timestamp,
    });
    let topic = format!(
        "$SYS/broker/clients/{}/{event}",
        notice_level(client.client_id.as_str())
    );
    debug!(%topic, "client notice");
    broker.publish(
        Message::new(topic, body.to_string(), QoS::AtMostOnce, false),
        None,
    );
}

/// The client id as one topic level of at most [`MAX_NOTICE_LEVEL`] bytes.
fn notice_level(id: &str) -> String {
    let escaped = escape_topic_level(id, usize::MAX);
    if escaped.len() <= MAX_NOTICE_LEVEL {
        return escaped;
    }
    info!(
        len = id.len(),
        "client id too long for a $SYS notice topic; the topic carries its start and a hash"
    );
    let digest = Sha256::digest(id.as_bytes());
    let mut level = escape_topic_level(id, NOTICE_PREFIX);
    level.push('~');
    for byte in &digest[..8] {
        level.push_str(&format!("{byte:02x}"));
    }
    level
}

/// The id percent-encoded where it would break a topic level, stopping before `max` bytes. `~`
/// is encoded too, so it only ever appears before a hash.
fn escape_topic_level(id: &str, max: usize) -> String {
    let mut out = String::with_capacity(id.len().min(max));
    for c in id.chars() {
        let escaped = match c {
            '%' => "%25",
            '/' => "%2F",
            '+' => "%2B",
            '#' => "%23",
            '~' => "%7E",
            _ => "",
        };
        let len = if escaped.is_empty() { c.len_utf8() } else { 3 };
        if out.len() + len > max {
            break;
        }
        match escaped {
            "" => out.push(c),
            escaped => out.push_str(escaped),
        }
    }
    if out.is_empty() { "%00".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_become_one_safe_topic_level() {
        assert_eq!(notice_level("a/b+c#d%e~f"), "a%2Fb%2Bc%23d%25e%7Ef");
        assert_eq!(notice_level("plain-id"), "plain-id");
        assert_eq!(notice_level(""), "%00");
    }

    /// Any client id, up to the 65,535 bytes a CONNECT can carry, gives a notice topic that is a
    /// valid topic name [MQTT-4.7.3-3] and short; two long ids that start alike stay apart, and
    /// the same id always gives the same topic, so its connected and disconnected notices match.
    #[test]
    fn a_long_client_id_becomes_its_start_and_a_hash() {
        let long = "é/".repeat(21_845);
        assert_eq!(long.len(), 65_535);
        let level = notice_level(&long);
        assert!(level.len() <= MAX_NOTICE_LEVEL, "{} bytes", level.len());
        assert!(level.starts_with("é%2F"), "{level}");
        let topic = format!("$SYS/broker/clients/{level}/disconnected");
        crate::topic::validate_topic_name(&topic).expect("a valid topic name");
        let other = format!("{}x", &long[..long.len() - 1]);
        assert_ne!(notice_level(&other), level);
        assert_eq!(notice_level(&long), level);
        let just_fits = "a".repeat(MAX_NOTICE_LEVEL);
        assert_eq!(notice_level(&just_fits), just_fits);
    }
}
