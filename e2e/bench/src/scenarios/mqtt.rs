//! rumqttc clients for the scenarios: options, connecting many at once (waiting for CONNACK and,
//! for subscribers, SUBACK), and a polite DISCONNECT at the end.
//!
//! Every client speaks MQTT 3.1.1, which all the peer brokers support alike, with a clean session
//! unless the run asks for persistent ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rumqttc::{
    AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, Publish, QoS,
    SubscribeReasonCode,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::Endpoint;
use crate::measure::latency::new_histogram;

/// How long one client may take to get its CONNACK (and SUBACK).
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub host: String,
    pub port: u16,
    /// Unacknowledged outgoing QoS 1/2 PUBLISH packets.
    pub inflight: u16,
    /// Largest packet either way, in bytes.
    pub max_packet: usize,
    /// Requests (publishes) queued towards the event loop before `publish` waits.
    pub channel_capacity: usize,
    /// TCP_NODELAY on the client's socket (rumqttc leaves Nagle's algorithm on).
    pub tcp_nodelay: bool,
    /// CleanSession = 0: the broker keeps the session after the connection.
    pub persistent: bool,
}

impl ClientConfig {
    /// Options for one client, of the broker at `server` when given, else of `host` and `port`.
    fn options(&self, client_id: &str, server: Option<&Endpoint>) -> MqttOptions {
        let (host, port) = server.map_or((self.host.as_str(), self.port), |s| (&s.host, s.port));
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_clean_session(!self.persistent)
            .set_keep_alive(Duration::from_secs(60))
            .set_inflight(self.inflight.max(1))
            .set_max_packet_size(self.max_packet, self.max_packet);
        options
    }
}

pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// One client that has its CONNACK (and SUBACK, if it subscribed).
pub struct Connected {
    pub client: AsyncClient,
    pub eventloop: EventLoop,
}

/// A client to connect: its id, a filter to subscribe to before it counts as ready, and the
/// broker to connect to when it is not the config's (a subscriber on another cluster node).
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub id: String,
    pub subscribe: Option<(String, QoS)>,
    pub server: Option<Endpoint>,
}

pub async fn connect(config: &ClientConfig, spec: &ClientSpec) -> anyhow::Result<Connected> {
    let (client, mut eventloop) = AsyncClient::new(
        config.options(&spec.id, spec.server.as_ref()),
        config.channel_capacity,
    );
    if config.tcp_nodelay {
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
    }
    if let Some((filter, qos)) = &spec.subscribe {
        client
            .subscribe(filter.clone(), *qos)
            .await
            .context("queueing SUBSCRIBE")?;
    }
    let setup = async {
        loop {
            match eventloop.poll().await? {
                Event::Incoming(Incoming::ConnAck(_)) if spec.subscribe.is_none() => return Ok(()),
                Event::Incoming(Incoming::SubAck(suback)) => {
                    if suback.return_codes.contains(&SubscribeReasonCode::Failure) {
                        bail!("the broker refused the subscription {:?}", spec.subscribe);
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(SETUP_TIMEOUT, setup)
        .await
        .context("no CONNACK/SUBACK in time")?
        .with_context(|| format!("connecting {}", spec.id))?;
    Ok(Connected { client, eventloop })
}

/// Connections made by [`connect_all`], in the order of the specs, and how long they took.
pub struct Fleet {
    pub clients: Vec<Connected>,
    /// Nanoseconds from starting each connection to its CONNACK/SUBACK.
    pub setup_times: Histogram<u64>,
    pub elapsed: Duration,
}

/// Connects every spec, `concurrency` at a time; the first failure fails the whole setup.
pub async fn connect_all(
    config: &ClientConfig,
    specs: Vec<ClientSpec>,
    concurrency: usize,
) -> anyhow::Result<Fleet> {
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (index, spec) in specs.into_iter().enumerate() {
        let (config, permits) = (config.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let start = Instant::now();
            let connected = connect(&config, &spec).await?;
            anyhow::Ok((index, connected, start.elapsed()))
        });
    }
    let mut slots: Vec<Option<Connected>> = Vec::new();
    let mut setup_times = new_histogram()?;
    while let Some(joined) = tasks.join_next().await {
        let (index, connected, took) = joined.context("a connecting task panicked")??;
        setup_times.saturating_record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        if slots.len() <= index {
            slots.resize_with(index + 1, || None);
        }
        slots[index] = Some(connected);
    }
    let clients = slots.into_iter().flatten().collect();
    Ok(Fleet {
        clients,
        setup_times,
        elapsed: started.elapsed(),
    })
}

/// Sends DISCONNECT and polls until it is written (or `within` passes), handing any PUBLISH that
/// still arrives to `on_publish`.
pub async fn disconnect(
    connected: &mut Connected,
    within: Duration,
    mut on_publish: impl FnMut(&Publish),
) {
    if connected.client.try_disconnect().is_err() {
        return;
    }
    let drain = async {
        loop {
            match connected.eventloop.poll().await {
                Ok(Event::Incoming(Incoming::Publish(publish))) => on_publish(&publish),
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(within, drain).await;
}
