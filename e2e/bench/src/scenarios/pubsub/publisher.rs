//! A publisher: one task issues stamped PUBLISH requests at the configured rate until the window
//! ends; another drives the client's event loop and counts what was written and acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Outgoing, QoS};
use tokio::sync::Notify;

use super::Shared;
use crate::payload::Stamp;

/// What one publisher's event loop has done so far.
#[derive(Debug, Default)]
pub struct Progress {
    /// PUBLISH packets written (sequence numbers `0..sent` have gone out, in order).
    pub sent: AtomicU64,
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) received.
    pub acked: AtomicU64,
    /// Woken after every change, for a caller that waits for one message at a time.
    pub changed: Notify,
}

impl Progress {
    /// Waits until `count` messages are written (QoS 0) or acknowledged (QoS 1 and 2).
    pub async fn wait_for(&self, count: u64, qos: QoS) {
        let counter = if qos == QoS::AtMostOnce {
            &self.sent
        } else {
            &self.acked
        };
        while counter.load(Ordering::Relaxed) < count {
            self.changed.notified().await;
        }
    }
}

pub struct Plan {
    pub index: u32,
    pub topic: String,
    pub qos: QoS,
    pub payload: usize,
    /// Messages/s; 0 = as fast as the client's flow control allows.
    pub rate: f64,
    /// Offset of this publisher's schedule, so fixed-rate publishers do not fire in lockstep.
    pub phase_s: f64,
}

/// Issues PUBLISH requests until the window ends; returns how many were issued.
pub async fn publish(client: AsyncClient, plan: Plan, shared: Arc<Shared>) -> anyhow::Result<u64> {
    let clock = shared.clock;
    let end_ns = shared.window.end;
    let start_ns = clock.now_ns() + clock.ns_at(plan.phase_s);
    let mut seq = 0u64;
    loop {
        let now = clock.now_ns();
        if now >= end_ns {
            break;
        }
        if plan.rate > 0.0 {
            let due = start_ns + (seq as f64 / plan.rate * 1e9) as u64;
            if due > now {
                tokio::time::sleep(Duration::from_nanos(due.min(end_ns) - now)).await;
                continue;
            }
        }
        let stamp = Stamp {
            publisher: plan.index,
            seq,
            sent_ns: clock.now_ns(),
        };
        let request = client.publish_bytes(
            plan.topic.clone(),
            plan.qos,
            false,
            stamp.encode(plan.payload),
        );
        let left = Duration::from_nanos(end_ns.saturating_sub(clock.now_ns()));
        match tokio::time::timeout(left, request).await {
            Ok(result) => result?,
            Err(_) => break,
        }
        seq += 1;
    }
    Ok(seq)
}

/// Drives the event loop until DISCONNECT is written or the connection fails.
pub async fn drive(
    mut eventloop: EventLoop,
    progress: Arc<Progress>,
    shared: Arc<Shared>,
) -> Option<String> {
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                progress.sent.fetch_add(1, Ordering::Relaxed);
                shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                progress.changed.notify_one();
            }
            Ok(Event::Incoming(Incoming::PubAck(_) | Incoming::PubComp(_))) => {
                progress.acked.fetch_add(1, Ordering::Relaxed);
                progress.changed.notify_one();
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return None,
            Ok(_) => {}
            Err(e) => {
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                progress.changed.notify_one();
                return Some(e.to_string());
            }
        }
    }
}
