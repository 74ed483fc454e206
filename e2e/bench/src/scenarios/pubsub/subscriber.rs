//! A subscriber task: reads deliveries until told to stop, recording each into its sink's ledger
//! (losses, duplicates) and, when it was sent inside the measured window, its latency.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{Event, Incoming, Publish};
use tokio::sync::watch;

use super::Shared;
use crate::measure::latency::LocalLatency;
use crate::measure::sequence::Ledger;
use crate::payload::Stamp;
use crate::scenarios::mqtt::{Connected, disconnect};

pub struct Outcome {
    pub sink: usize,
    pub ledger: Ledger,
    pub error: Option<String>,
}

struct Recorder {
    shared: Arc<Shared>,
    ledger: Ledger,
    latency: LocalLatency,
}

impl Recorder {
    fn on_publish(&mut self, publish: &Publish) {
        let Some(stamp) = Stamp::decode(&publish.payload) else {
            return;
        };
        let now = self.shared.clock.now_ns();
        self.shared
            .counters
            .delivered
            .fetch_add(1, Ordering::Relaxed);
        self.ledger.record(stamp.publisher, stamp.seq);
        if self.shared.window.contains(&stamp.sent_ns) {
            self.latency.record(now.saturating_sub(stamp.sent_ns));
        }
    }
}

pub async fn run(
    mut connected: Connected,
    sink: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Outcome> {
    let latency = LocalLatency::new(shared.latency.clone());
    let mut recorder = Recorder {
        shared: shared.clone(),
        ledger: Ledger::default(),
        latency,
    };
    let mut error = None;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            event = connected.eventloop.poll() => match event {
                Ok(Event::Incoming(Incoming::Publish(publish))) => recorder.on_publish(&publish),
                Ok(_) => {}
                Err(e) => {
                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                    error = Some(format!("subscriber {sink}: {e}"));
                    break;
                }
            },
        }
    }
    if error.is_none() {
        disconnect(&mut connected, Duration::from_secs(2), |p| {
            recorder.on_publish(p)
        })
        .await;
    }
    recorder.latency.flush();
    Ok(Outcome {
        sink,
        ledger: recorder.ledger,
        error,
    })
}
