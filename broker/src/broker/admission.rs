//! Admission: whether one more connection may come in, under the connection rate and the broker's
//! and its listener's connection limits. A connection holds a [`ConnectionSlot`] for its whole life
//! and gives it back when it ends. Also the broker-wide budget of bytes that connections hold in
//! packets not yet received whole ([`PartialHold`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tracing::{info, warn};

use super::Broker;
use crate::codec::ReasonCode;
use crate::config::Limits;
use crate::limits::{Slots, TokenBucket};
use crate::stats::LimitKind;

/// A connection's unfinished packet up to this size is not counted against
/// `limits.max_partial_packet_bytes`: most packets are small, and their connections then never
/// touch the shared count.
pub const PARTIAL_FREE: usize = 64 * 1024;

/// File descriptors kept back from the process's limit when `limits.max_connections` is not set:
/// for listeners, the HTTP endpoint's connections, the users, ACL and TLS files, and the runtime's
/// own.
const DESCRIPTORS_KEPT: u64 = 256;

/// The broker-wide limits.
#[derive(Debug)]
pub(super) struct Admission {
    /// `limits.max_connections`, or what the file descriptor limit allows.
    connections: Slots,
    /// `limits.max_connection_rate`.
    rate: Option<Mutex<TokenBucket>>,
    /// Bytes held in unfinished packets beyond [`PARTIAL_FREE`] each, by all connections.
    partial: AtomicUsize,
    /// `limits.max_partial_packet_bytes`.
    max_partial: usize,
}

impl Admission {
    pub(super) fn new(limits: &Limits) -> Self {
        let max_connections = limits
            .max_connections
            .or_else(connections_the_fd_limit_allows);
        Self {
            connections: Slots::new(max_connections),
            rate: limits
                .max_connection_rate
                .map(|rate| Mutex::new(TokenBucket::per_second(rate))),
            partial: AtomicUsize::new(0),
            max_partial: limits.max_partial_packet_bytes,
        }
    }
}

/// The default for `limits.max_connections`: the process's soft limit on open files
/// (RLIMIT_NOFILE) less [`DESCRIPTORS_KEPT`], so that a connection beyond it is refused with
/// CONNACK 0x89 instead of the accept failing for every client. `None` where the limit cannot be
/// read or is unlimited.
fn connections_the_fd_limit_allows() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok();
    let Some(soft) = limits.as_deref().and_then(soft_open_files) else {
        warn!("cannot read the open files limit; limits.max_connections has no default");
        return None;
    };
    let max = soft.saturating_sub(DESCRIPTORS_KEPT).max(1);
    info!(
        open_files = soft,
        max_connections = max,
        "limits.max_connections not set: taken from the open files limit"
    );
    usize::try_from(max).ok()
}

/// The soft limit from `/proc/self/limits`' "Max open files" line.
fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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
/// connection ends. It holds the connection's handle on the broker too, which a connection reaches
/// through [`ConnectionSlot::broker`] rather than keeping a second one: eight bytes per connection.
#[derive(Debug)]
pub struct ConnectionSlot {
    broker: Arc<Broker>,
    gate: Arc<ListenerGate>,
}

impl ConnectionSlot {
    /// The broker this connection was admitted to.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }
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

impl Broker {
    /// Brings what one connection holds against `limits.max_partial_packet_bytes` from `held` to
    /// `unfinished` bytes, the undecoded input it keeps; false, changing nothing, when that would
    /// take the broker past its budget (counted). Held in blocks of [`PARTIAL_FREE`] (a `u16` of
    /// them covers the largest packet, and this is kept per connection), rounded up, and the first
    /// block is free, so a connection with small packets never touches the shared count. Whoever
    /// holds blocks gives them back with `hold_partial(held, 0)` when the connection ends.
    pub fn hold_partial(&self, held: &mut u16, unfinished: usize) -> bool {
        let wanted = if unfinished > PARTIAL_FREE {
            u16::try_from(unfinished.div_ceil(PARTIAL_FREE)).unwrap_or(u16::MAX)
        } else {
            0
        };
        let partial = &self.admission.partial;
        if wanted > *held {
            let more = usize::from(wanted - *held) * PARTIAL_FREE;
            let before = partial.fetch_add(more, Ordering::Relaxed);
            if before + more > self.admission.max_partial {
                partial.fetch_sub(more, Ordering::Relaxed);
                self.stats.limit_hit(LimitKind::PartialPacketBytes);
                return false;
            }
        } else if wanted < *held {
            partial.fetch_sub(
                usize::from(*held - wanted) * PARTIAL_FREE,
                Ordering::Relaxed,
            );
        }
        *held = wanted;
        true
    }

    /// Bytes held in unfinished packets broker-wide, as counted against the budget.
    pub fn partial_packet_bytes(&self) -> usize {
        self.admission.partial.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.broker.admission.connections.give_back();
        self.gate.slots.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_files_limit_is_read_from_proc() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            20000                524288               files     \n";
        assert_eq!(soft_open_files(limits), Some(20_000));
        assert_eq!(
            soft_open_files("Max open files  unlimited unlimited files"),
            None
        );
        assert_eq!(soft_open_files(""), None);
    }
}
