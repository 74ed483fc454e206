//! mqtt-stresser's workload done with rumqttc: per client, publish M messages one after another
//! (each written, or acknowledged at QoS 1/2, before the next), then time how long the rest takes
//! to arrive at the client's own subscriber.
//!
//! The rates follow mqtt-stresser's definitions: publish rate = M / time to publish all; receive
//! rate = M / time from the end of publishing to the last delivery (at least 1 ms; deliveries that
//! arrived while publishing make this number large, as they do for mqtt-stresser). The result
//! also carries real latency percentiles and the overall delivered rate.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{Event, Incoming, QoS};

use crate::cli::StresserArgs;
use crate::measure::clock::Clock;
use crate::measure::latency::{LocalLatency, SharedLatency};
use crate::measure::sequence::{DeliveryCount, Ledger};
use crate::payload::{STAMP_LEN, Stamp};
use crate::report::result::{RunResult, Spread, StresserStats, Throughput};
use crate::scenarios::mqtt::{self, ClientConfig, ClientSpec, Connected};
use crate::scenarios::pubsub::Shared;
use crate::scenarios::pubsub::publisher::{self, Progress};

/// Receive time used when every message had already arrived when publishing ended.
const MIN_RECEIVE: Duration = Duration::from_millis(1);

struct ClientOutcome {
    published: u64,
    publish_time: Duration,
    receive_time: Option<Duration>,
    first_publish: Instant,
    last_receive: Option<Instant>,
    ledger: Ledger,
    error: Option<String>,
}

pub async fn run(args: &StresserArgs, result: &mut RunResult) -> anyhow::Result<()> {
    let run_id = crate::scenarios::run_id();
    let qos = mqtt::qos(args.qos);
    let config = ClientConfig {
        host: args.target.host.clone(),
        port: args.target.port,
        inflight: 100,
        max_packet: 10 * 1024,
        channel_capacity: 16,
        tcp_nodelay: false,
        persistent: false,
    };
    let topic = |i: usize| format!("tern-bench/{run_id}/stresser/{i}");
    let subs = (0..args.clients).map(|i| ClientSpec {
        id: format!("tb-{run_id}-s{i}"),
        subscribe: Some((topic(i), qos)),
        server: None,
    });
    let subs = mqtt::connect_all(&config, subs.collect(), 100)
        .await
        .context("connecting subscribers")?;
    let pubs = (0..args.clients).map(|i| ClientSpec {
        id: format!("tb-{run_id}-p{i}"),
        subscribe: None,
        server: None,
    });
    let pubs = mqtt::connect_all(&config, pubs.collect(), 100)
        .await
        .context("connecting publishers")?;

    let clock = Clock::new();
    let shared = Arc::new(Shared {
        clock,
        counters: Arc::default(),
        latency: SharedLatency::new()?,
        window: 0..u64::MAX,
    });
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    let tasks: Vec<_> = subs
        .clients
        .into_iter()
        .zip(pubs.clients)
        .enumerate()
        .map(|(i, (sub, publ))| {
            let client = Client {
                index: i as u32,
                topic: topic(i),
                qos,
                messages: args.messages as u64,
                shared: shared.clone(),
                deadline,
            };
            tokio::spawn(client.run(sub, publ))
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.context("a stresser client panicked")??);
    }
    summarise(args, &outcomes, &shared, result);
    Ok(())
}

fn summarise(
    args: &StresserArgs,
    outcomes: &[ClientOutcome],
    shared: &Shared,
    result: &mut RunResult,
) {
    let rate = |count: u64, took: Duration| count as f64 / took.as_secs_f64().max(1e-9);
    let messages = args.messages as u64;
    let publish: Vec<f64> = outcomes
        .iter()
        .map(|o| rate(o.published, o.publish_time))
        .collect();
    let receive: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.receive_time.map(|t| rate(messages, t)))
        .collect();
    result.stresser = Some(StresserStats {
        tool: "tern-bench".into(),
        clients: args.clients,
        messages: args.messages,
        completed: receive.len(),
        publish: Spread::of(publish),
        receive: Spread::of(receive),
    });
    let mut delivery = DeliveryCount::default();
    for (i, outcome) in outcomes.iter().enumerate() {
        let mut sent = vec![0; outcomes.len()];
        sent[i] = outcome.published;
        delivery.add(outcome.ledger.account(&[i as u32], &sent));
    }
    let first = outcomes.iter().map(|o| o.first_publish).min();
    let last = outcomes.iter().filter_map(|o| o.last_receive).max();
    if let (Some(first), Some(last)) = (first, last) {
        let window_s = last
            .saturating_duration_since(first)
            .as_secs_f64()
            .max(1e-9);
        let published = outcomes.iter().map(|o| o.published).sum::<u64>();
        result.throughput = Some(Throughput {
            window_s,
            published,
            delivered: delivery.received,
            published_per_s: published as f64 / window_s,
            delivered_per_s: delivery.received as f64 / window_s,
        });
    }
    result.latency = Some(shared.latency.summary());
    result.delivery = Some(delivery);
    result.errors = outcomes
        .iter()
        .filter_map(|o| o.error.clone())
        .take(10)
        .collect();
}

struct Client {
    index: u32,
    topic: String,
    qos: QoS,
    messages: u64,
    shared: Arc<Shared>,
    deadline: Instant,
}

impl Client {
    async fn run(self, sub: Connected, publ: Connected) -> anyhow::Result<ClientOutcome> {
        let receiving = tokio::spawn(receive(
            sub,
            self.messages,
            self.shared.clone(),
            self.deadline,
        ));
        let progress = Arc::new(Progress::default());
        let Connected { client, eventloop } = publ;
        let driver = tokio::spawn(publisher::drive(
            eventloop,
            progress.clone(),
            self.shared.clone(),
        ));
        let first_publish = Instant::now();
        let mut error = None;
        let publishing = async {
            for seq in 0..self.messages {
                let stamp = Stamp {
                    publisher: self.index,
                    seq,
                    sent_ns: self.shared.clock.now_ns(),
                };
                client
                    .publish_bytes(self.topic.clone(), self.qos, false, stamp.encode(STAMP_LEN))
                    .await?;
                progress.wait_for(seq + 1, self.qos).await;
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout_at(self.deadline.into(), publishing).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error = Some(format!("publisher {}: {e:#}", self.index)),
            Err(_) => error = Some(format!("publisher {}: timed out", self.index)),
        }
        let publish_end = Instant::now();
        let _ = client.try_disconnect();
        if tokio::time::timeout(Duration::from_secs(2), driver)
            .await
            .is_err()
        {
            error
                .get_or_insert_with(|| format!("publisher {}: DISCONNECT not written", self.index));
        }
        let (ledger, last_receive, received_all) =
            receiving.await.context("a receiver panicked")??;
        let receive_time = received_all.then(|| {
            last_receive.map_or(MIN_RECEIVE, |at| {
                at.saturating_duration_since(publish_end).max(MIN_RECEIVE)
            })
        });
        Ok(ClientOutcome {
            published: progress.sent.load(Ordering::Relaxed),
            publish_time: publish_end - first_publish,
            receive_time,
            first_publish,
            last_receive,
            ledger,
            error,
        })
    }
}

/// Reads deliveries until `messages` arrived or the deadline passed; returns the ledger, when the
/// last one arrived, and whether all did.
async fn receive(
    mut sub: Connected,
    messages: u64,
    shared: Arc<Shared>,
    deadline: Instant,
) -> anyhow::Result<(Ledger, Option<Instant>, bool)> {
    let mut ledger = Ledger::default();
    let mut latency = LocalLatency::new(shared.latency.clone());
    let mut last = None;
    let reading = async {
        while ledger.received() < messages {
            if let Event::Incoming(Incoming::Publish(publish)) = sub.eventloop.poll().await? {
                let Some(stamp) = Stamp::decode(&publish.payload) else {
                    continue;
                };
                latency.record(shared.clock.now_ns().saturating_sub(stamp.sent_ns));
                shared.counters.delivered.fetch_add(1, Ordering::Relaxed);
                ledger.record(stamp.publisher, stamp.seq);
                last = Some(Instant::now());
            }
        }
        anyhow::Ok(())
    };
    let complete = matches!(
        tokio::time::timeout_at(deadline.into(), reading).await,
        Ok(Ok(()))
    );
    latency.flush();
    mqtt::disconnect(&mut sub, Duration::from_secs(1), |_| {}).await;
    Ok((ledger, last, complete))
}
