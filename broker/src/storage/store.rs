//! The interface between the broker and whatever keeps its state on disk: a few tables of byte
//! keys and byte values, written in atomic batches. The built-in [`RedbStore`](super::RedbStore)
//! is one implementation; a program that embeds the broker can give it its own (see
//! `examples/memory_store.rs` and `docs/storage.md`).
//!
//! The broker encodes every value itself, with a CRC32C over key and value, so a store only has to
//! keep bytes; what it hands back is checked before it is used.

use thiserror::Error;

/// The tables the broker keeps. Keys are big-endian, so a table's order is the order the broker
/// needs (a session's deliveries in sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Session id → client id, expiry, when it was last disconnected, the will waiting out its
    /// delay.
    Sessions,
    /// Session id, topic filter → subscription options and identifier.
    Subscriptions,
    /// Session id, sequence → a QoS 1 or 2 delivery (queued, sent, or released by PUBREC).
    Deliveries,
    /// Session id, packet id → an inbound QoS 2 message awaiting PUBREL.
    InboundQos2,
    /// Message id → a message, stored once however many deliveries and retained topics hold it.
    Messages,
    /// Topic → the retained message's id and stamp.
    Retained,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Sessions,
        Table::Subscriptions,
        Table::Deliveries,
        Table::InboundQos2,
        Table::Messages,
        Table::Retained,
    ];

    /// The table's name, in a store and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Table::Sessions => "sessions",
            Table::Subscriptions => "subscriptions",
            Table::Deliveries => "deliveries",
            Table::InboundQos2 => "inbound_qos2",
            Table::Messages => "messages",
            Table::Retained => "retained",
        }
    }
}

/// One change to a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: Vec<u8>,
    },
    /// Every key that starts with `prefix` (a session's rows when it ends).
    DeletePrefix {
        table: Table,
        prefix: Vec<u8>,
    },
}

/// Why a store could not do what it was asked.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The disk is full (or the store's quota is): nothing of the batch was applied.
    #[error("no space left: {0}")]
    Full(String),
    /// The store found damage it cannot read past.
    #[error("the store is damaged: {0}")]
    Corrupted(String),
    #[error("{0}")]
    Other(String),
}

/// What [`Store::scan`] calls with each key and value.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// Where the broker's durable state lives. Called from one writer thread only, so an
/// implementation needs no locking of its own.
pub trait Store: Send + 'static {
    /// Applies `writes` in order, all or nothing. With `durable`, returns only once they survive a
    /// crash of the process and of the machine (an fsync); without, they may wait for the next
    /// durable commit.
    fn commit(&mut self, writes: &[Write], durable: bool) -> Result<(), StoreError>;

    /// Calls `visit` with every key and value of `table`, in key order. Used once, at start.
    fn scan(&mut self, table: Table, visit: &mut Visit<'_>) -> Result<(), StoreError>;

    /// How many bytes the store takes on disk, for `/metrics`.
    fn size(&self) -> Option<u64> {
        None
    }

    /// Called once when the broker stops, after the last commit.
    fn close(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }
}
