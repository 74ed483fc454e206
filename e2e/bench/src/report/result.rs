//! The machine-readable result of one run (`--json`), which `report` reads back.
//!
//! One file per run. Sections that do not apply to a scenario are absent. `scripts/bench.sh` also
//! writes [`Unmeasured`] records for brokers or cases it could not run, so the page can say so.

use serde::{Deserialize, Serialize};

use crate::measure::latency::LatencySummary;
use crate::measure::machine::Machine;
use crate::measure::procfs::Usage;
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
    /// The broker's CPU and memory over the measured window (with `--broker-pid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_usage: Option<Usage>,
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
    pub pid: Option<u32>,
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
}
