//! Command-line interface: one subcommand per scenario, plus `report`.
//!
//! Only parsing and defaults live here; the scenarios read these structs and never look at argv
//! themselves (except `connections`, which passes its own argv on to its worker processes).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

/// Load generator for MQTT brokers: throughput, publish→delivery latency, losses, connections.
#[derive(Debug, Parser)]
#[command(name = "tern-bench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Point-to-point: N publishers, each with its own subscriber on its own topic (default N = 10).
    P2p(PubSubArgs),
    /// Fan-out: one publisher, N subscribers on one topic (default N = 1000).
    Fanout(PubSubArgs),
    /// Fan-in: N publishers (default 1000), one subscriber on a wildcard filter.
    Fanin(PubSubArgs),
    /// Shared subscription: N publishers (default 10), a `$share/bench/...` group of subscribers.
    Shared(PubSubArgs),
    /// Open N idle clients as fast as the broker allows, hold them, report rate and memory.
    Connections(ConnectionsArgs),
    /// The mqtt-stresser workload (each client publishes M messages to its own subscriber).
    Stresser(StresserArgs),
    /// Turn a directory of JSON results into a Markdown page and SVG charts.
    Report(ReportArgs),
}

/// Where the broker listens.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Broker host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker MQTT (TCP) port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
}

impl Target {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// One broker address, `HOST:PORT` (`[V6ADDR]:PORT` for an IPv6 literal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl FromStr for Endpoint {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let (host, port) = text
            .rsplit_once(':')
            .with_context(|| format!("{text:?} is not HOST:PORT"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || host.contains(['[', ']']) {
            bail!("{text:?} has no host");
        }
        let port = port
            .parse()
            .with_context(|| format!("{text:?}: bad port {port:?}"))?;
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What is recorded about the broker, and where the results go.
#[derive(Debug, Clone, Args)]
pub struct Output {
    /// PID of the broker process: its CPU time and RSS are read from /proc. Repeat it (or list
    /// PIDs with commas) for a broker that runs as several processes, such as a cluster's nodes:
    /// the report sums them and keeps each one's figures too. Only p2p, fanout, fanin and shared
    /// take more than one.
    #[arg(long = "broker-pid", value_delimiter = ',')]
    pub broker_pids: Vec<u32>,
    /// Write the machine-readable summary to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Name of the broker under test, as it appears in reports.
    #[arg(long, default_value = "broker")]
    pub label: String,
    /// Broker version, for the report.
    #[arg(long)]
    pub broker_version: Option<String>,
    /// Command line the broker was started with, for the report.
    #[arg(long)]
    pub broker_cmd: Option<String>,
    /// A change from the broker's default configuration this run needed (repeatable).
    #[arg(long = "broker-change")]
    pub broker_changes: Vec<String>,
    /// Nodes the broker ran as (a cluster), for the report.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub nodes: u16,
    /// What sets this setup apart from others of the same broker and node count, for the report
    /// (for example `cluster.acknowledge: cluster`).
    #[arg(long)]
    pub variant: Option<String>,
}

impl Output {
    /// The one broker PID of a scenario that measures a single process (connections, stresser).
    pub fn single_pid(&self) -> anyhow::Result<Option<u32>> {
        match self.broker_pids.as_slice() {
            [] => Ok(None),
            [pid] => Ok(Some(*pid)),
            _ => bail!("this scenario measures one broker process: give --broker-pid once"),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct PubSubArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub output: Output,
    /// N of the scenario: pairs (p2p), subscribers (fanout) or publishers (fanin, shared).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Members of the `$share` group (shared scenario).
    #[arg(long, default_value_t = 10)]
    pub group_size: usize,
    /// QoS of every PUBLISH and SUBSCRIBE.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size in bytes (at least the 24-byte stamp; the rest is padding).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Messages per second per publisher; 0 publishes as fast as flow control allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of publishing before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds without new deliveries after which the missing messages count as lost.
    #[arg(long, default_value_t = 5.0)]
    pub drain_timeout: f64,
    /// Clients connecting at the same time while the scenario is set up.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// Unacknowledged QoS 1/2 PUBLISH packets each client keeps in flight.
    #[arg(long, default_value_t = 100)]
    pub inflight: u16,
    /// Brokers for the subscribers, `HOST:PORT[,HOST:PORT...]`: subscriber i connects to the
    /// (i mod count)-th, while the publishers stay on --host/--port. Made for clusters: publish on
    /// one node, subscribe on the others. Without it everyone connects to --host/--port.
    #[arg(long, value_delimiter = ',')]
    pub sub_targets: Vec<Endpoint>,
    /// Seconds to wait after every client is connected and subscribed before publishing starts.
    /// A cluster may learn of a subscription made on another node only after its SUBACK.
    #[arg(long, default_value_t = 0.0)]
    pub settle: f64,
    /// Set TCP_NODELAY on every client's socket. Without it (rumqttc's default, and the clients'
    /// in scripts/bench.sh's results) a publisher's small QoS 0 PUBLISHes, which nothing answers,
    /// wait for the broker's delayed ACK once they come faster than it (about 1 ms apart): tens of
    /// milliseconds of latency that belong to the client, not the broker.
    #[arg(long)]
    pub tcp_nodelay: bool,
    /// Every client keeps its session after the connection (MQTT 3.1.1 CleanSession = 0), so a
    /// broker that stores sessions stores their QoS 1 and 2 messages (`scripts/bench-storage.sh`).
    #[arg(long)]
    pub persistent_sessions: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub output: Output,
    /// Idle clients to open.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Loopback source addresses to spread connections over (127.0.0.1, 127.0.0.2, ...), each
    /// good for about 28,000 connections to one destination.
    #[arg(long, default_value_t = 1)]
    pub sources: u8,
    /// Processes to spread the connections over (this binary forks itself).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Connection attempts in progress at once, over all processes. Above the broker's listen
    /// backlog, SYNs are dropped and retried a second later, which then dominates the rate.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// Seconds to hold the connections open once all are up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Keep alive announced in CONNECT, in seconds (clients send nothing while idle).
    #[arg(long, default_value_t = 600)]
    pub keep_alive: u16,
    /// Seconds one connection may take from SYN to CONNACK.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Internal: run as worker I of `--workers` (set by the parent process).
    #[arg(long, hide = true)]
    pub worker_index: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct StresserArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub output: Output,
    /// Concurrent clients (each one publisher and one subscriber).
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Messages each client publishes.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// QoS of publisher and subscriber.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Seconds after which the run is abandoned.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Run this mqtt-stresser binary and parse its report instead of the built-in workload.
    #[arg(long)]
    pub stresser_bin: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Directory of JSON results written by the scenarios (and by scripts/bench.sh).
    #[arg(long)]
    pub results: PathBuf,
    /// Markdown file to write.
    #[arg(long)]
    pub markdown: PathBuf,
    /// Directory for the SVG charts (not used with --cluster).
    #[arg(long, required_unless_present = "cluster")]
    pub svg_dir: Option<PathBuf>,
    /// How the Markdown page refers to the SVG directory.
    #[arg(long, default_value = "benchmarks")]
    pub svg_href: String,
    /// The commands that produced the results, in order, shown on the page so the runs can be
    /// repeated (repeat the option for results that later runs added to).
    #[arg(long = "command", default_value = "scripts/bench.sh")]
    pub commands: Vec<String>,
    /// Render the results (of scripts/bench-cluster.sh) as the page's `## Cluster` section, put
    /// in place of that section of --markdown, or after the rest if it has none; the rest of the
    /// file is kept. Without it the whole page is written, and a `## Cluster` section already in
    /// --markdown is carried over, since its results are not in --results.
    #[arg(long)]
    pub cluster: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_host_and_port() {
        let e: Endpoint = "127.0.0.3:21884".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.3", 21884));
        assert_eq!(e.to_string(), "127.0.0.3:21884");
        let v6: Endpoint = "[::1]:1883".parse().unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 1883));
        assert_eq!(v6.to_string(), "[::1]:1883");
        for bad in ["127.0.0.3", ":1883", "host:port", "host:70000", "[::1:1883"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sub_targets_take_a_comma_separated_list() {
        let cli = Cli::try_parse_from([
            "tern-bench",
            "p2p",
            "--sub-targets",
            "127.0.0.3:1,127.0.0.4:2",
            "--broker-pid",
            "10,11",
            "--broker-pid",
            "12",
        ])
        .unwrap();
        let Command::P2p(args) = cli.command else {
            panic!("not p2p")
        };
        assert_eq!(
            args.sub_targets
                .iter()
                .map(Endpoint::to_string)
                .collect::<Vec<_>>(),
            ["127.0.0.3:1", "127.0.0.4:2"]
        );
        assert_eq!(args.output.broker_pids, [10, 11, 12]);
        assert!(args.output.single_pid().is_err());
    }

    #[test]
    fn single_node_defaults_are_unchanged() {
        let cli = Cli::try_parse_from(["tern-bench", "fanout", "--broker-pid", "7"]).unwrap();
        let Command::Fanout(args) = cli.command else {
            panic!("not fanout")
        };
        assert!(args.sub_targets.is_empty());
        assert_eq!(args.settle, 0.0);
        assert!(!args.tcp_nodelay);
        assert_eq!(args.output.nodes, 1);
        assert_eq!(args.output.single_pid().unwrap(), Some(7));
    }
}
