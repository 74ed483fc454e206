//! Reading the store back at start: every table scanned once, every value's checksum checked.
//! What is damaged, or refers to something damaged or missing, is dropped, counted and logged by
//! table and key, and deleted, so the broker starts with everything still valid; what has expired
//! meanwhile is dropped too (the time the broker was down counts).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use tracing::{error, info};

use super::records::{self, RecordError, SessionRecord};
use super::store::{Store, StoreError, Table, Write};
use super::writer::References;
use crate::codec::{QoS, SubscriptionOptions};
use crate::message::{Delivery, Message, RetainedWrite};
use crate::topic::SubscriptionFilter;

/// A session read back from the store.
#[derive(Debug)]
pub struct RecoveredSession {
    pub id: u64,
    pub record: SessionRecord,
    pub subscriptions: Vec<(SubscriptionFilter, SubscriptionOptions, Option<u32>)>,
    /// Deliveries in the order they were queued.
    pub deliveries: Vec<RecoveredDelivery>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub inbound_qos2: Vec<u16>,
}

/// A delivery read back: still to be sent (or sent and unacknowledged, which is resent), or
/// released (PUBREC received; PUBREL is resent).
#[derive(Debug)]
pub enum RecoveredDelivery {
    Pending(Delivery),
    Released { seq: u64, packet_id: u16 },
}

/// What was read back, and what was not.
#[derive(Debug, Default)]
pub struct Recovered {
    pub sessions: Vec<RecoveredSession>,
    pub retained: Vec<RetainedWrite>,
    /// Values that failed their checksum or could not be decoded, by table.
    pub damaged: BTreeMap<&'static str, u64>,
    /// Messages and deliveries whose message expired while the broker was down.
    pub expired: u64,
    /// Stored messages in all.
    pub messages: u64,
    /// Rows that must go: the damaged, the expired and what pointed at them.
    pub(super) cleanup: Vec<Write>,
    pub(super) references: References,
}

impl Recovered {
    fn damaged(&mut self, table: Table, key: &[u8], error: &RecordError) {
        error!(table = table.name(), key = %hex(key), %error, "storage: a damaged value is dropped");
        *self.damaged.entry(table.name()).or_default() += 1;
        self.cleanup.push(Write::Delete {
            table,
            key: key.to_vec(),
        });
    }

    /// Damaged values in all tables.
    pub fn damaged_total(&self) -> u64 {
        self.damaged.values().sum()
    }
}

type Rows = Vec<(Vec<u8>, Vec<u8>)>;

fn rows(store: &mut dyn Store, table: Table) -> Result<Rows, StoreError> {
    let mut rows = Vec::new();
    store.scan(table, &mut |key, value| {
        rows.push((key.to_vec(), value.to_vec()));
        Ok(())
    })?;
    Ok(rows)
}

/// Reads everything back.
pub(super) fn load(store: &mut dyn Store) -> Result<Recovered, StoreError> {
    let started = Instant::now();
    let now = Instant::now();
    let now_millis = records::unix_millis_now();
    let mut recovered = Recovered::default();

    // Messages first: deliveries and retained topics refer to them.
    let mut messages: HashMap<u64, Option<Arc<Message>>> = HashMap::new();
    for (key, value) in rows(store, Table::Messages)? {
        match records::decode_message(&key, &value) {
            Ok((mut message, expires_at)) => {
                let id = message.id;
                match records::expiry_instant(expires_at, now, now_millis) {
                    Ok(at) => {
                        message.expires_at = at;
                        messages.insert(id, Some(Arc::new(message)));
                    }
                    Err(()) => {
                        messages.insert(id, None);
                    }
                }
            }
            Err(error) => recovered.damaged(Table::Messages, &key, &error),
        }
    }
    recovered.messages = messages.len() as u64;

    let mut sessions: BTreeMap<u64, RecoveredSession> = BTreeMap::new();
    for (key, value) in rows(store, Table::Sessions)? {
        let decoded = records::u64_of(&key)
            .and_then(|id| records::decode_session(&key, &value).map(|record| (id, record)));
        match decoded {
            Ok((id, record)) => {
                sessions.insert(
                    id,
                    RecoveredSession {
                        id,
                        record,
                        subscriptions: Vec::new(),
                        deliveries: Vec::new(),
                        inbound_qos2: Vec::new(),
                    },
                );
            }
            Err(error) => recovered.damaged(Table::Sessions, &key, &error),
        }
    }

    for (key, value) in rows(store, Table::Subscriptions)? {
        let decoded = records::split_session_key(&key).and_then(|(id, filter)| {
            let text = std::str::from_utf8(filter)
                .map_err(|_| RecordError::Invalid("a filter that is not UTF-8".into()))?;
            let filter = SubscriptionFilter::parse(&ByteString::from(text), true)
                .map_err(|error| RecordError::Invalid(error.to_string()))?;
            let (options, identifier) = records::decode_subscription(&key, &value)?;
            Ok((id, filter, options, identifier))
        });
        match decoded {
            Ok((id, filter, options, identifier)) => match sessions.get_mut(&id) {
                Some(session) => session.subscriptions.push((filter, options, identifier)),
                None => recovered.orphan(Table::Subscriptions, &key),
            },
            Err(error) => recovered.damaged(Table::Subscriptions, &key, &error),
        }
    }

    for (key, value) in rows(store, Table::InboundQos2)? {
        let decoded = records::split_session_key(&key).and_then(|(id, rest)| {
            records::check_marker(&key, &value)?;
            Ok((id, records::u16_of(rest)?))
        });
        match decoded {
            Ok((id, packet_id)) => match sessions.get_mut(&id) {
                Some(session) => session.inbound_qos2.push(packet_id),
                None => recovered.orphan(Table::InboundQos2, &key),
            },
            Err(error) => recovered.damaged(Table::InboundQos2, &key, &error),
        }
    }

    for (key, value) in rows(store, Table::Deliveries)? {
        let decoded = records::split_session_key(&key).and_then(|(id, rest)| {
            let seq = records::u64_of(rest)?;
            Ok((id, seq, records::decode_delivery(&key, &value)?))
        });
        let (id, seq, record) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                recovered.damaged(Table::Deliveries, &key, &error);
                continue;
            }
        };
        let Some(session) = sessions.get_mut(&id) else {
            recovered.orphan(Table::Deliveries, &key);
            continue;
        };
        if let Some(packet_id) = record.released {
            session
                .deliveries
                .push(RecoveredDelivery::Released { seq, packet_id });
            continue;
        }
        match messages.get(&record.message) {
            Some(Some(message)) if record.qos != QoS::AtMostOnce => {
                recovered.references.hold(record.message);
                session
                    .deliveries
                    .push(RecoveredDelivery::Pending(Delivery {
                        message: Arc::clone(message),
                        qos: record.qos,
                        retain: record.retain,
                        subscription_ids: record.subscription_ids,
                        share: Delivery::share_of(message, 1),
                        seq,
                    }));
            }
            Some(None) => {
                recovered.expired += 1;
                recovered.cleanup.push(Write::Delete {
                    table: Table::Deliveries,
                    key,
                });
            }
            _ => {
                error!(key = %hex(&key), message = record.message, "storage: a delivery whose message is missing or damaged is dropped");
                *recovered
                    .damaged
                    .entry(Table::Deliveries.name())
                    .or_default() += 1;
                recovered.cleanup.push(Write::Delete {
                    table: Table::Deliveries,
                    key,
                });
            }
        }
    }

    for (key, value) in rows(store, Table::Retained)? {
        let decoded = std::str::from_utf8(&key)
            .map_err(|_| RecordError::Invalid("a topic that is not UTF-8".into()))
            .and_then(|topic| {
                let (message, stamp) = records::decode_retained(&key, &value)?;
                Ok((ByteString::from(topic), message, stamp))
            });
        let (topic, id, stamp) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                recovered.damaged(Table::Retained, &key, &error);
                continue;
            }
        };
        match messages.get(&id) {
            Some(Some(message)) => {
                recovered.references.hold(id);
                recovered.references.retained.insert(topic.clone(), id);
                recovered.retained.push(RetainedWrite {
                    topic,
                    stamp,
                    message: Some(Arc::clone(message)),
                });
            }
            Some(None) => {
                recovered.expired += 1;
                recovered.cleanup.push(Write::Delete {
                    table: Table::Retained,
                    key,
                });
            }
            None => {
                error!(topic = %topic, message = id, "storage: a retained message that is missing or damaged is dropped");
                *recovered.damaged.entry(Table::Retained.name()).or_default() += 1;
                recovered.cleanup.push(Write::Delete {
                    table: Table::Retained,
                    key,
                });
            }
        }
    }

    // Messages nothing refers to any more (expired, or their last holder was damaged).
    for id in messages.keys() {
        if !recovered.references.messages.contains_key(id) {
            recovered.cleanup.push(Write::Delete {
                table: Table::Messages,
                key: records::message_key(*id),
            });
        }
    }

    recovered.sessions = sessions.into_values().collect();
    info!(
        sessions = recovered.sessions.len(),
        messages = recovered.references.messages.len(),
        retained = recovered.retained.len(),
        expired = recovered.expired,
        damaged = recovered.damaged_total(),
        millis = started.elapsed().as_millis() as u64,
        "storage: read back"
    );
    Ok(recovered)
}

impl Recovered {
    /// A row of a session that is not there (its record was damaged): it goes too.
    fn orphan(&mut self, table: Table, key: &[u8]) {
        *self.damaged.entry(table.name()).or_default() += 1;
        self.cleanup.push(Write::Delete {
            table,
            key: key.to_vec(),
        });
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
