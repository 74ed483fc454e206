//! The publish/subscribe scenarios (p2p, fan-out, fan-in, shared): connect every subscriber, then
//! every publisher; publish through a warm-up and a measured window; let deliveries drain; count.
//!
//! Throughput is what crossed the window's edges (counter snapshots), latency covers messages sent
//! inside the window, and losses and duplicates cover everything that was written.
//!
//! Subscribers connect and run on a runtime of their own, as a consumer in another process would.
//! On the publishers' runtime, one fan-in subscriber was one task among 2,000 busy publisher tasks
//! and was polled once per round of them, so it measured the load generator's scheduler rather
//! than how fast the broker delivers.

pub mod publisher;
mod subscriber;
pub mod topology;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::publisher::{Plan, Progress};
use self::topology::{Kind, Topology};
use super::mqtt::{self, ClientConfig, ClientSpec, Connected};
use crate::cli::{Endpoint, PubSubArgs};
use crate::measure::clock::Clock;
use crate::measure::latency::{LatencySummary, SharedLatency};
use crate::measure::procfs::{GroupProbe, ProcessProbe, ProcessUsage, Usage};
use crate::measure::progress::{self, Counters, Phase, PhaseCell};
use crate::measure::sequence::{DeliveryCount, Ledger};
use crate::payload::STAMP_LEN;
use crate::report::result::{ConnectStats, Params, RunResult, Targets, Throughput};

/// What every client task of a run shares.
pub struct Shared {
    pub clock: Clock,
    pub counters: Arc<Counters>,
    pub latency: SharedLatency,
    /// Clock readings of the measured window: messages sent inside it count for latency.
    pub window: Range<u64>,
}

struct PublisherTask {
    client: rumqttc::AsyncClient,
    progress: Arc<Progress>,
    driver: JoinHandle<Option<String>>,
    publishing: JoinHandle<anyhow::Result<u64>>,
}

/// At most this many client errors are kept in the result.
const MAX_ERRORS: usize = 10;

pub async fn run(kind: Kind, args: PubSubArgs) -> anyhow::Result<RunResult> {
    ensure!(
        args.payload >= STAMP_LEN,
        "--payload must be at least {STAMP_LEN} bytes"
    );
    ensure!(
        args.duration > 0.0 && args.warmup >= 0.0,
        "--duration must be positive"
    );
    ensure!(args.rate >= 0.0, "--rate must not be negative");
    let run_id = super::run_id();
    let clients = args.clients.unwrap_or(kind.default_clients());
    let topology = Topology::build(kind, clients, args.group_size, &run_id)?;
    let probe = GroupProbe::new(&args.output.broker_pids)?;
    let targets = targets(&args);

    match &targets {
        None => eprintln!(
            "{}: connecting {} subscribers and {} publishers to {}",
            kind.name(),
            topology.subscribers.len(),
            topology.publishers.len(),
            args.target.endpoint()
        ),
        Some(t) => eprintln!(
            "{}: connecting {} subscribers to {} and {} publishers to {}",
            kind.name(),
            topology.subscribers.len(),
            t.subscribers.join(", "),
            topology.publishers.len(),
            t.publishers
        ),
    }
    let receivers = ReceiverRuntime::new(topology.subscribers.len())?;
    let (subscribers, publishers) = connect(&topology, &args, &run_id, receivers.handle()).await?;
    let connect = connect_stats(&subscribers, &publishers)?;
    if args.settle > 0.0 {
        eprintln!(
            "{}: waiting {} s for the subscriptions to settle",
            kind.name(),
            args.settle
        );
        tokio::time::sleep(secs(args.settle)).await;
    }

    let clock = Clock::new();
    let window = clock.ns_at(args.warmup)..clock.ns_at(args.warmup + args.duration);
    let shared = Arc::new(Shared {
        clock,
        counters: Arc::default(),
        latency: SharedLatency::new()?,
        window,
    });
    let phase = Arc::new(PhaseCell::default());
    phase.set(Phase::Warmup);
    let progress_line = progress::spawn(
        shared.counters.clone(),
        shared.latency.clone(),
        phase.clone(),
    );
    let (stop, stop_rx) = watch::channel(false);
    let sub_tasks: Vec<_> = subscribers
        .clients
        .into_iter()
        .zip(&topology.subscribers)
        .map(|(connected, spec)| {
            receivers.handle().spawn(subscriber::run(
                connected,
                spec.sink,
                shared.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let pub_tasks = start_publishers(publishers, &topology, &args, &shared);

    let (throughput, usage) = measure_window(&shared, &phase, probe.as_ref()).await?;

    let mut errors = Vec::new();
    let sent = stop_publishers(pub_tasks, args.qos, secs(args.drain_timeout), &mut errors).await?;
    drain(
        &shared.counters,
        topology.expected(&sent),
        secs(args.drain_timeout),
    )
    .await;
    stop.send_replace(true);
    let delivery = account(sub_tasks, &topology, &sent, &mut errors).await?;
    progress_line.abort();
    errors.truncate(MAX_ERRORS);

    let mut result = super::base_result(
        kind.name(),
        &args.output,
        Params {
            qos: Some(args.qos),
            payload: Some(args.payload),
            rate: Some(args.rate),
            publishers: topology.publishers.len(),
            subscribers: topology.subscribers.len(),
            warmup_s: args.warmup,
            duration_s: args.duration,
            targets,
            settle_s: (args.settle > 0.0).then_some(args.settle),
            tcp_nodelay: args.tcp_nodelay,
            persistent_sessions: args.persistent_sessions,
            ..Params::default()
        },
    );
    result.throughput = Some(throughput);
    result.latency = Some(shared.latency.summary());
    result.delivery = Some(delivery);
    result.connect = Some(connect);
    if let Some(processes) = usage {
        result.broker_usage = Some(Usage::sum(&processes));
        // One process's share is the total: listing it again says nothing.
        if processes.len() > 1 {
            result.broker_processes = processes;
        }
    }
    result.bench_cpu_s = ProcessProbe::own()
        .sample()
        .map_or(0.0, |s| s.cpu_s + s.children_cpu_s);
    result.errors = errors;
    Ok(result)
}

/// Collects the subscribers' ledgers by sink and counts them against what was sent.
async fn account(
    tasks: Vec<JoinHandle<anyhow::Result<subscriber::Outcome>>>,
    topology: &Topology,
    sent: &[u64],
    errors: &mut Vec<String>,
) -> anyhow::Result<DeliveryCount> {
    let mut sinks = vec![Ledger::default(); topology.sinks.len()];
    for task in tasks {
        let outcome = task.await.context("a subscriber task panicked")??;
        sinks[outcome.sink].merge(&outcome.ledger);
        errors.extend(outcome.error);
    }
    let mut delivery = DeliveryCount::default();
    for (ledger, hears) in sinks.iter().zip(&topology.sinks) {
        delivery.add(ledger.account(hears, sent));
    }
    Ok(delivery)
}

/// Connects every subscriber (each one ready once its SUBACK is in), then every publisher.
async fn connect(
    topology: &Topology,
    args: &PubSubArgs,
    run_id: &str,
    receivers: &Handle,
) -> anyhow::Result<(mqtt::Fleet, mqtt::Fleet)> {
    let qos = mqtt::qos(args.qos);
    let config = ClientConfig {
        host: args.target.host.clone(),
        port: args.target.port,
        inflight: args.inflight,
        max_packet: (args.payload + 1024).max(10 * 1024),
        channel_capacity: 16,
        tcp_nodelay: args.tcp_nodelay,
        persistent: args.persistent_sessions,
    };
    let sub_specs: Vec<_> = topology
        .subscribers
        .iter()
        .enumerate()
        .map(|(i, s)| ClientSpec {
            id: format!("tb-{run_id}-s{i}"),
            subscribe: Some((s.filter.clone(), qos)),
            server: subscriber_target(&args.sub_targets, i).cloned(),
        })
        .collect();
    // Connected on the receivers' runtime, so their sockets belong to its I/O driver.
    let (sub_config, concurrency) = (config.clone(), args.connect_concurrency);
    let subscribers = receivers
        .spawn(async move { mqtt::connect_all(&sub_config, sub_specs, concurrency).await })
        .await
        .context("the task connecting the subscribers panicked")?
        .context("connecting the subscribers")?;
    let pub_specs = (0..topology.publishers.len()).map(|i| ClientSpec {
        id: format!("tb-{run_id}-p{i}"),
        subscribe: None,
        server: None,
    });
    let publishers = mqtt::connect_all(&config, pub_specs.collect(), args.connect_concurrency)
        .await
        .context("connecting the publishers")?;
    Ok((subscribers, publishers))
}

/// The broker subscriber `index` connects to when `--sub-targets` is given: round robin over
/// them, so subscribers (and in p2p, pairs) spread evenly over a cluster's other nodes.
fn subscriber_target(targets: &[Endpoint], index: usize) -> Option<&Endpoint> {
    (!targets.is_empty()).then(|| &targets[index % targets.len()])
}

/// The targets as the result records them, when subscribers do not use the publishers' broker.
fn targets(args: &PubSubArgs) -> Option<Targets> {
    (!args.sub_targets.is_empty()).then(|| Targets {
        publishers: args.target.endpoint().to_string(),
        subscribers: args.sub_targets.iter().map(Endpoint::to_string).collect(),
    })
}

/// The subscribers' runtime: as many worker threads as there are subscribers, up to the cores.
struct ReceiverRuntime {
    handle: Handle,
    /// Taken only on drop.
    runtime: Option<Runtime>,
}

impl ReceiverRuntime {
    fn new(subscribers: usize) -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(subscribers.clamp(1, cores))
            .thread_name("tb-subscriber")
            .enable_all()
            .build()
            .context("starting the subscribers' runtime")?;
        Ok(ReceiverRuntime {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for ReceiverRuntime {
    fn drop(&mut self) {
        // Dropped inside the main runtime, where a blocking shutdown is not allowed; every
        // subscriber task has been joined (or the run failed) by then.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Starts each publisher's event loop driver and publishing loop. Fixed-rate publishers are
/// spread evenly over one period, so they do not all fire at once.
fn start_publishers(
    publishers: mqtt::Fleet,
    topology: &Topology,
    args: &PubSubArgs,
    shared: &Arc<Shared>,
) -> Vec<PublisherTask> {
    let count = topology.publishers.len();
    let clients = publishers
        .clients
        .into_iter()
        .zip(&topology.publishers)
        .enumerate();
    clients
        .map(|(index, (Connected { client, eventloop }, topic))| {
            let progress = Arc::new(Progress::default());
            let plan = Plan {
                index: index as u32,
                topic: topic.clone(),
                qos: mqtt::qos(args.qos),
                payload: args.payload,
                rate: args.rate,
                phase_s: if args.rate > 0.0 {
                    index as f64 / count as f64 / args.rate
                } else {
                    0.0
                },
            };
            PublisherTask {
                driver: tokio::spawn(publisher::drive(
                    eventloop,
                    progress.clone(),
                    shared.clone(),
                )),
                publishing: tokio::spawn(publisher::publish(client.clone(), plan, shared.clone())),
                client,
                progress,
            }
        })
        .collect()
}

/// Sleeps through the warm-up and the measured window; returns what crossed the window and what
/// the broker used in it.
async fn measure_window(
    shared: &Shared,
    phase: &PhaseCell,
    probe: Option<&GroupProbe>,
) -> anyhow::Result<(Throughput, Option<Vec<ProcessUsage>>)> {
    let sample = || {
        probe
            .map(|p| p.sample().context("reading the broker's /proc entries"))
            .transpose()
    };
    sleep_until(&shared.clock, shared.window.start).await;
    phase.set(Phase::Measuring);
    let (sent0, delivered0, at0) = (
        shared.counters.sent(),
        shared.counters.delivered(),
        Instant::now(),
    );
    let broker0 = sample()?;
    sleep_until(&shared.clock, shared.window.end).await;
    let (sent1, delivered1) = (shared.counters.sent(), shared.counters.delivered());
    let window_s = at0.elapsed().as_secs_f64();
    let broker1 = sample()?;
    phase.set(Phase::Draining);
    let throughput = Throughput {
        window_s,
        published: sent1 - sent0,
        delivered: delivered1 - delivered0,
        published_per_s: (sent1 - sent0) as f64 / window_s,
        delivered_per_s: (delivered1 - delivered0) as f64 / window_s,
    };
    let usage = probe
        .zip(broker0.zip(broker1))
        .map(|(probe, (start, end))| probe.between(&start, &end, window_s));
    Ok((throughput, usage))
}

fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

async fn sleep_until(clock: &Clock, at_ns: u64) {
    let now = clock.now_ns();
    if at_ns > now {
        tokio::time::sleep(Duration::from_nanos(at_ns - now)).await;
    }
}

fn connect_stats(
    subscribers: &mqtt::Fleet,
    publishers: &mqtt::Fleet,
) -> anyhow::Result<ConnectStats> {
    let mut times = subscribers.setup_times.clone();
    times
        .add(&publishers.setup_times)
        .context("merging connect times")?;
    let connected = (subscribers.clients.len() + publishers.clients.len()) as u64;
    let elapsed_s = (subscribers.elapsed + publishers.elapsed).as_secs_f64();
    Ok(ConnectStats {
        requested: connected,
        connected,
        elapsed_s,
        per_s: connected as f64 / elapsed_s.max(1e-9),
        latency: LatencySummary::of(&times),
        ..ConnectStats::default()
    })
}

/// Ends publishing, waits (up to `within`) for everything issued to be written and acknowledged,
/// disconnects the publishers, and returns how many PUBLISH packets each one wrote.
async fn stop_publishers(
    mut tasks: Vec<PublisherTask>,
    qos: u8,
    within: Duration,
    errors: &mut Vec<String>,
) -> anyhow::Result<Vec<u64>> {
    let mut issued = Vec::with_capacity(tasks.len());
    for task in &mut tasks {
        match (&mut task.publishing)
            .await
            .context("a publisher task panicked")?
        {
            Ok(count) => issued.push(count),
            Err(e) => {
                errors.push(format!("publisher: {e:#}"));
                issued.push(0);
            }
        }
    }
    let settled = || {
        tasks.iter().zip(&issued).all(|(task, &issued)| {
            let sent = task.progress.sent.load(Ordering::Relaxed);
            let acked = task.progress.acked.load(Ordering::Relaxed);
            sent >= issued && (qos == 0 || acked >= sent)
        })
    };
    let deadline = Instant::now() + within;
    while !settled() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in &tasks {
        let _ = task.client.try_disconnect();
    }
    // One deadline for all: awaited one by one, a broker that never answers would cost 2 s for
    // each of fan-in's 1,000 publishers.
    let disconnected_by = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut sent = Vec::with_capacity(tasks.len());
    for mut task in tasks {
        match tokio::time::timeout_at(disconnected_by, &mut task.driver).await {
            Ok(Ok(Some(error))) => errors.push(format!("publisher: {error}")),
            Ok(_) => {}
            Err(_) => {
                task.driver.abort();
                errors.push("publisher: DISCONNECT not written within 2 s".into());
            }
        }
        sent.push(task.progress.sent.load(Ordering::Relaxed));
    }
    Ok(sent)
}

/// Waits until `expected` deliveries arrived, or none arrived for `idle`.
async fn drain(counters: &Counters, expected: u64, idle: Duration) {
    let mut last = (counters.delivered(), Instant::now());
    while counters.delivered() < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = counters.delivered();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= idle {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_go_round_robin_over_the_targets() {
        let targets: Vec<Endpoint> = ["127.0.0.3:1", "127.0.0.4:2"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let ports: Vec<u16> = (0..5)
            .map(|i| subscriber_target(&targets, i).unwrap().port)
            .collect();
        assert_eq!(ports, [1, 2, 1, 2, 1]);
        assert!(subscriber_target(&[], 3).is_none());
    }
}
