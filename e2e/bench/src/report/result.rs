//! The machine-readable result of one run (`--json`), which `report` reads back.
//!
//! One file per run. Sections that do not apply to a scenario are absent. `scripts/bench.sh` also
//! writes [`Unmeasured`] records for brokers or cases it could not run, so the page can say so.

use serde::{Deserialize, Serialize};

use crate::measure::latency::LatencySummary;
use crate::measure::machine::Machine;
use crate::measure::procfs::{ProcessUsage, Usage};
use crate::measure::sequence::DeliveryCount;

pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub schema: u32,
    /// `p2p`, `fanout`, `fanin`, `shared`, `connections` or `stresser`.
    pub scenario: String,
    pub broker: BrokerInfo,
    pub params: Params,
    pub started_unix_s: u64,
    pub machine: Machine,
    /// The tern-bench command line of this run.
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryCount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stresser: Option<StresserStats>,
    /// The broker's CPU and memory over the measured window (with `--broker-pid`); summed over
    /// its processes when there are several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_usage: Option<Usage>,
    /// Each process's part of `broker_usage`, when the broker ran as several (a cluster).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broker_processes: Vec<ProcessUsage>,
    /// CPU seconds the load generator itself spent over the whole run.
    pub bench_cpu_s: f64,
    /// Client errors during the run (connections lost, refused subscriptions), first few only.
    #[serde(default)]
    pub errors: Vec<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub label: String,
    pub version: Option<String>,
    pub command: Option<String>,
    /// Changes from the broker's default configuration that this run needed.
    #[serde(default)]
    pub changes: Vec<String>,
    /// The (first) process measured.
    pub pid: Option<u32>,
    /// Every process measured, when there were several (a cluster's nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// Nodes the broker ran as, when more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u16>,
    /// What sets this setup apart from others of the broker with as many nodes (`--variant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl BrokerInfo {
    /// The setup as the cluster section names it: `tern, 3 nodes, cluster.acknowledge: cluster`.
    pub fn setup(&self) -> String {
        let nodes = self.nodes.unwrap_or(1);
        let mut name = format!(
            "{}, {nodes} node{}",
            self.label,
            if nodes == 1 { "" } else { "s" }
        );
        if let Some(variant) = &self.variant {
            name.push_str(", ");
            name.push_str(variant);
        }
        name
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub qos: Option<u8>,
    pub payload: Option<usize>,
    /// Messages/s per publisher; 0 = as fast as flow control allows.
    pub rate: Option<f64>,
    pub publishers: usize,
    pub subscribers: usize,
    /// Connections (connections), or clients (stresser).
    pub clients: Option<usize>,
    /// Messages per client (stresser).
    pub messages: Option<usize>,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub sources: Option<u8>,
    pub workers: Option<usize>,
    /// Where the clients connected, when the subscribers were sent to other brokers than the
    /// publishers (`--sub-targets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Targets>,
    /// Seconds waited between the last SUBACK and the first PUBLISH (`--settle`), when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_s: Option<f64>,
    /// Whether the clients set TCP_NODELAY (`--tcp-nodelay`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tcp_nodelay: bool,
    /// Whether every client kept its session (`--persistent-sessions`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persistent_sessions: bool,
}

/// The brokers of a run whose subscribers connected elsewhere than its publishers.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// `HOST:PORT` of every publisher.
    pub publishers: String,
    /// `HOST:PORT`s the subscribers were spread over, round robin (subscriber i on the i mod
    /// n-th).
    pub subscribers: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Length of the measured window, in seconds.
    pub window_s: f64,
    /// PUBLISH packets written by the publishers within the window.
    pub published: u64,
    /// PUBLISH packets received by the subscribers within the window.
    pub delivered: u64,
    pub published_per_s: f64,
    pub delivered_per_s: f64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectStats {
    pub requested: u64,
    pub connected: u64,
    pub failed: u64,
    /// Seconds from the first attempt to the last CONNACK.
    pub elapsed_s: f64,
    /// Connections accepted per second over `elapsed_s`.
    pub per_s: f64,
    /// From starting the TCP connection to receiving CONNACK.
    pub latency: LatencySummary,
    /// Broker RSS before the first connection, once all were up, and after holding them (KiB).
    pub rss_before_kib: Option<u64>,
    pub rss_connected_kib: Option<u64>,
    pub rss_held_kib: Option<u64>,
    /// (RSS after holding − RSS before) / connections, in bytes.
    pub bytes_per_connection: Option<f64>,
    /// Connections still open at the end of the hold.
    pub still_open: Option<u64>,
    pub first_error: Option<String>,
}

/// mqtt-stresser's figures: per client, messages over the time taken, then spread over clients.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct StresserStats {
    /// `mqtt-stresser` when its own binary ran, `tern-bench` for the built-in workload.
    pub tool: String,
    pub clients: usize,
    pub messages: usize,
    pub completed: usize,
    pub publish: Spread,
    pub receive: Spread,
}

/// Fastest, median and slowest per-client rate, in messages/s.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub fastest: f64,
    pub median: f64,
    pub slowest: f64,
}

impl Spread {
    /// Spread of per-client rates; the median of an even count is the mean of the middle two, as
    /// mqtt-stresser computes it.
    pub fn of(mut rates: Vec<f64>) -> Spread {
        if rates.is_empty() {
            return Spread::default();
        }
        rates.sort_by(f64::total_cmp);
        let n = rates.len();
        Spread {
            fastest: rates[n - 1],
            median: (rates[(n - 1) / 2] + rates[n / 2]) / 2.0,
            slowest: rates[0],
        }
    }
}

/// A broker or case that could not be measured, and why (written by scripts/bench.sh).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unmeasured {
    pub broker: String,
    pub scenario: Option<String>,
    pub reason: String,
}

/// A result with nothing measured yet, for tests.
#[cfg(test)]
pub fn fixture(scenario: &str, label: &str) -> RunResult {
    RunResult {
        schema: SCHEMA,
        scenario: scenario.into(),
        broker: BrokerInfo {
            label: label.into(),
            ..BrokerInfo::default()
        },
        params: Params::default(),
        started_unix_s: 1_700_000_000,
        machine: Machine {
            cpu_model: "Test CPU".into(),
            cores: 2,
            memory_mib: 1024,
            kernel: "6.1".into(),
        },
        command: vec!["tern-bench".into(), scenario.into()],
        throughput: None,
        latency: None,
        delivery: None,
        connect: None,
        stresser: None,
        broker_usage: None,
        broker_processes: Vec::new(),
        bench_cpu_s: 0.0,
        errors: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_uses_the_middle_pair_for_the_median() {
        let spread = Spread::of(vec![4.0, 1.0, 3.0, 2.0]);
        assert_eq!(
            spread,
            Spread {
                fastest: 4.0,
                median: 2.5,
                slowest: 1.0
            }
        );
        assert_eq!(Spread::of(vec![5.0]).median, 5.0);
        assert_eq!(Spread::of(Vec::new()), Spread::default());
    }

    #[test]
    fn setups_name_broker_nodes_and_variant() {
        let mut broker = BrokerInfo {
            label: "tern".into(),
            ..BrokerInfo::default()
        };
        assert_eq!(broker.setup(), "tern, 1 node");
        broker.nodes = Some(3);
        broker.variant = Some("cluster.acknowledge: cluster".into());
        assert_eq!(
            broker.setup(),
            "tern, 3 nodes, cluster.acknowledge: cluster"
        );
    }

    #[test]
    fn single_node_results_have_no_cluster_fields() {
        let json = serde_json::to_value(fixture("p2p", "tern")).unwrap();
        for key in ["pids", "nodes", "variant"] {
            assert!(json["broker"].get(key).is_none(), "{key} in {json}");
        }
        assert!(json["params"].get("targets").is_none());
        assert!(json.get("broker_processes").is_none());
        let back: RunResult = serde_json::from_value(json).unwrap();
        assert_eq!(back, fixture("p2p", "tern"));
    }
}
