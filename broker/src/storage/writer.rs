//! The store's one writer: a thread (the store's calls block) that takes every change that arrived
//! while it was busy, writes them in one commit and then lets the acknowledgements that waited for
//! them go. One fsync thus covers every connection's changes of that moment: a group commit.
//!
//! In `sync` it commits as soon as anything is waiting; in `batched` every `batch_interval_ms`.
//! A commit that fails (a full disk) is kept and tried again, with everything that arrived since,
//! until it goes through: what was acknowledged is never given up, and nothing waiting for it is
//! released before it is on disk.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use tracing::{error, info, warn};

use super::change::Change;
use super::records::{self, DeliveryRecord};
use super::store::{Store, StoreError, Table, Write};
use super::{Pending, Shared};
use crate::receipt::Receipt;

/// How long a failed commit waits before it is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The writer's own view of what is stored: references to each message, so a message is written
/// once and deleted with its last reference.
#[derive(Debug, Default)]
pub(super) struct References {
    /// Message id → deliveries and retained topics holding it.
    pub messages: HashMap<u64, u32>,
    /// Topic → the id of its retained message.
    pub retained: HashMap<ByteString, u64>,
}

impl References {
    pub(super) fn hold(&mut self, id: u64) -> bool {
        let count = self.messages.entry(id).or_insert(0);
        *count += 1;
        *count == 1
    }

    fn release(&mut self, id: u64, writes: &mut Vec<Write>) {
        if let Some(count) = self.messages.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                self.messages.remove(&id);
                writes.push(Write::Delete {
                    table: Table::Messages,
                    key: records::message_key(id),
                });
            }
        }
    }
}

pub(super) struct Writer {
    pub shared: Arc<Shared>,
    pub store: Box<dyn Store>,
    pub references: References,
    /// When the last commit began: in `batched` the next one begins an interval later, or at
    /// once if that commit took longer.
    pub last_commit: Instant,
}

impl Writer {
    pub(super) fn run(mut self) {
        let mut writes = Vec::new();
        let mut receipts: Vec<Arc<Receipt>> = Vec::new();
        let mut failing = false;
        loop {
            let (changes, waiting, closing, through) = self.take(failing);
            // One clock reading for the batch: stored expiries are absolute, made from it.
            let (now, now_millis) = (Instant::now(), records::unix_millis_now());
            for change in changes {
                self.translate(change, now, now_millis, &mut writes);
            }
            receipts.extend(waiting);
            if !writes.is_empty() || !receipts.is_empty() {
                self.last_commit = Instant::now();
                match self.commit(&writes) {
                    Ok(()) => {
                        if failing {
                            info!("storage: commits go through again");
                            self.shared.metrics.failing.set(0);
                            failing = false;
                        }
                        writes.clear();
                        self.shared
                            .durable_through
                            .store(through, std::sync::atomic::Ordering::Release);
                        for receipt in receipts.drain(..) {
                            receipt.party_done();
                        }
                    }
                    Err(error) => {
                        if !failing {
                            error!(%error, "storage: a commit failed; acknowledgements that wait for it are held and it is retried");
                        }
                        failing = true;
                        self.shared.metrics.failing.set(1);
                        self.shared.metrics.failures.inc();
                        if closing {
                            error!("storage: stopping with changes that could not be written");
                            break;
                        }
                        continue;
                    }
                }
            }
            if closing {
                break;
            }
        }
        if let Err(error) = self.store.close() {
            warn!(%error, "storage: closing the store");
        }
    }

    /// Waits for changes (in `sync`, any; in `batched`, the interval; after a failed commit, the
    /// retry pause) and takes them all.
    /// Also returns how many changes were recorded in all by then: once this batch is committed,
    /// that many are on disk.
    fn take(&self, failing: bool) -> (Vec<Change>, Vec<Arc<Receipt>>, bool, u64) {
        let shared = &self.shared;
        let mut pending = shared.pending.lock();
        if failing {
            shared.wake.wait_for(&mut pending, RETRY_PAUSE);
        } else if let Some(interval) = shared.batch_interval {
            // An interval after the last commit began, once there is something to commit.
            let deadline = self.last_commit + interval;
            while !pending.closing {
                let idle = pending.changes.is_empty() && pending.receipts.is_empty();
                if Instant::now() < deadline {
                    shared.wake.wait_until(&mut pending, deadline);
                } else if idle {
                    shared.wake.wait(&mut pending);
                } else {
                    break;
                }
            }
        } else {
            while !pending.closing && pending.changes.is_empty() && pending.receipts.is_empty() {
                shared.wake.wait(&mut pending);
            }
        }
        let Pending {
            changes,
            receipts,
            closing,
            ..
        } = &mut *pending;
        let through = shared.recorded.load(std::sync::atomic::Ordering::Acquire);
        (
            std::mem::take(changes),
            std::mem::take(receipts),
            *closing,
            through,
        )
    }

    /// One commit, durable: a panic inside the store counts as a failed commit, not as the end of
    /// the broker.
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let started = Instant::now();
        let store = &mut self.store;
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| store.commit(writes, true)))
            .unwrap_or_else(|_| Err(StoreError::Other("the store panicked".into())));
        if result.is_ok() {
            let metrics = &self.shared.metrics;
            metrics.commits.inc();
            metrics.writes.inc_by(writes.len() as u64);
            metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            if let Some(size) = self.store.size() {
                metrics.size.set(i64::try_from(size).unwrap_or(i64::MAX));
            }
        }
        result
    }

    /// One more reference to `message`; the first one writes it (stored once, however many hold it).
    fn hold_message(
        &mut self,
        message: &crate::message::Message,
        now: Instant,
        now_millis: u64,
        writes: &mut Vec<Write>,
    ) {
        if self.references.hold(message.id) {
            let key = records::message_key(message.id);
            let expiry = records::expiry_millis(message, now, now_millis);
            let value = records::encode_message(&key, message, expiry);
            writes.push(Write::Put {
                table: Table::Messages,
                key,
                value,
            });
        }
    }

    /// The table writes for one change, keeping the message references.
    fn translate(
        &mut self,
        change: Change,
        now: Instant,
        now_millis: u64,
        writes: &mut Vec<Write>,
    ) {
        match change {
            Change::Session { id, record } => {
                let key = records::session_key(id.0);
                let value = records::encode_session(&key, &record);
                writes.push(Write::Put {
                    table: Table::Sessions,
                    key,
                    value,
                });
            }
            Change::EndSession { id, messages } => {
                let key = records::session_key(id.0);
                for table in [Table::Subscriptions, Table::Deliveries, Table::InboundQos2] {
                    writes.push(Write::DeletePrefix {
                        table,
                        prefix: key.clone(),
                    });
                }
                writes.push(Write::Delete {
                    table: Table::Sessions,
                    key,
                });
                for message in messages {
                    self.references.release(message, writes);
                }
            }
            Change::Subscribe {
                session,
                filter,
                options,
                identifier,
            } => {
                let key = records::subscription_key(session.0, &filter);
                let value = records::encode_subscription(&key, &options, identifier);
                writes.push(Write::Put {
                    table: Table::Subscriptions,
                    key,
                    value,
                });
            }
            Change::Unsubscribe { session, filter } => writes.push(Write::Delete {
                table: Table::Subscriptions,
                key: records::subscription_key(session.0, &filter),
            }),
            Change::Deliver {
                session,
                seq,
                delivery,
            } => {
                let message = &delivery.message;
                self.hold_message(message, now, now_millis, writes);
                let key = records::delivery_key(session.0, seq);
                let record = DeliveryRecord {
                    message: message.id,
                    qos: delivery.qos,
                    retain: delivery.retain,
                    released: None,
                    subscription_ids: delivery.subscription_ids,
                };
                let value = records::encode_delivery(&key, &record);
                writes.push(Write::Put {
                    table: Table::Deliveries,
                    key,
                    value,
                });
            }
            Change::Release {
                session,
                seq,
                packet_id,
                message,
            } => {
                let key = records::delivery_key(session.0, seq);
                let record = DeliveryRecord {
                    message: 0,
                    qos: crate::codec::QoS::ExactlyOnce,
                    retain: false,
                    released: Some(packet_id),
                    subscription_ids: Vec::new(),
                };
                let value = records::encode_delivery(&key, &record);
                writes.push(Write::Put {
                    table: Table::Deliveries,
                    key,
                    value,
                });
                self.references.release(message, writes);
            }
            Change::Forget {
                session,
                seq,
                message,
            } => {
                writes.push(Write::Delete {
                    table: Table::Deliveries,
                    key: records::delivery_key(session.0, seq),
                });
                if let Some(message) = message {
                    self.references.release(message, writes);
                }
            }
            Change::InboundQos2 {
                session,
                packet_id,
                held,
            } => {
                let key = records::inbound_key(session.0, packet_id);
                writes.push(if held {
                    let value = records::encode_marker(&key);
                    Write::Put {
                        table: Table::InboundQos2,
                        key,
                        value,
                    }
                } else {
                    Write::Delete {
                        table: Table::InboundQos2,
                        key,
                    }
                });
            }
            Change::Retained(write) => {
                let key = write.topic.as_bytes().to_vec();
                let old = self.references.retained.remove(&write.topic);
                match &write.message {
                    Some(message) => {
                        self.hold_message(message, now, now_millis, writes);
                        self.references
                            .retained
                            .insert(write.topic.clone(), message.id);
                        let value = records::encode_retained(&key, message.id, &write.stamp);
                        writes.push(Write::Put {
                            table: Table::Retained,
                            key,
                            value,
                        });
                    }
                    None => writes.push(Write::Delete {
                        table: Table::Retained,
                        key,
                    }),
                }
                if let Some(old) = old {
                    self.references.release(old, writes);
                }
            }
        }
    }
}
