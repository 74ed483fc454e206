//! Admission: whether one more connection may come in, under the connection rate and the broker's
//! and its listener's connection limits. A connection holds a [`ConnectionSlot`] for its whole life
//! and gives it back when it ends.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::Broker;
use crate::codec::ReasonCode;
use crate::config::Limits;
use crate::limits::{Slots, TokenBucket};
use crate::stats::LimitKind;

/// The broker-wide limits.
#[derive(Debug)]
pub(super) struct Admission {
    /// `limits.max_connections`.
    connections: Slots,
    /// `limits.max_connection_rate`.
    rate: Option<Mutex<TokenBucket>>,
}

impl Admission {
    pub(super) fn new(limits: &Limits) -> Self {
        Self {
            connections: Slots::new(limits.max_connections),
            rate: limits
                .max_connection_rate
                .map(|rate| Mutex::new(TokenBucket::per_second(rate))),
        }
    }
}

/// What a connection knows about the listener it came through: its name, and its own connection
/// limit (`listeners[].max_connections`).
#[derive(Debug)]
pub struct ListenerGate {
    pub name: Arc<str>,
    slots: Slots,
}

impl ListenerGate {
    pub fn new(name: Arc<str>, max_connections: Option<usize>) -> Self {
        Self {
            name,
            slots: Slots::new(max_connections),
        }
    }
}

/// Why a connection was not admitted: the CONNACK reason code and a short explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub reason: ReasonCode,
    pub why: &'static str,
}

/// A connection's place under the broker's and its listener's connection limits, given back when the
/// connection ends.
#[derive(Debug)]
pub struct ConnectionSlot {
    broker: Arc<Broker>,
    gate: Arc<ListenerGate>,
}

impl Broker {
    /// Applies the connection rate and the broker and listener connection limits, counting each
    /// refusal.
    pub fn admit(self: &Arc<Self>, gate: &Arc<ListenerGate>) -> Result<ConnectionSlot, Refusal> {
        let admission = &self.admission;
        if let Some(rate) = &admission.rate
            && !rate.lock().try_take(Instant::now())
        {
            self.stats.limit_hit(LimitKind::ConnectionRate);
            return Err(Refusal {
                reason: ReasonCode::CONNECTION_RATE_EXCEEDED,
                why: "connection rate exceeded",
            });
        }
        if !admission.connections.try_take() {
            self.stats.limit_hit(LimitKind::Connections);
            return Err(Refusal {
                reason: ReasonCode::SERVER_BUSY,
                why: "too many connections",
            });
        }
        if !gate.slots.try_take() {
            admission.connections.give_back();
            self.stats.limit_hit(LimitKind::Connections);
            return Err(Refusal {
                reason: ReasonCode::SERVER_BUSY,
                why: "too many connections on this listener",
            });
        }
        Ok(ConnectionSlot {
            broker: Arc::clone(self),
            gate: Arc::clone(gate),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.broker.admission.connections.give_back();
        self.gate.slots.give_back();
    }
}
