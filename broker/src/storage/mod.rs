//! What outlives the process when `storage.dir` is set (DESIGN.md §2, `docs/storage.md`):
//! sessions with their subscriptions, their queued and in-flight QoS 1 and 2 messages and their
//! inbound QoS 2 packet ids, and retained messages.
//!
//! The broker keeps working in memory as before and tells a [`Storage`] of every change to that
//! state ([`Change`]); one writer thread turns the changes into table writes and commits them in
//! groups (see `writer`). A message is stored once however many sessions hold it. In `sync` (and
//! in `batched` once the disk has fallen behind), an acknowledgement waits for a [`Receipt`] that
//! the writer completes once what it covers is on disk ([`Storage::hold`]). At start, [`Storage::open`] reads everything back ([`Recovered`]) for
//! the broker to rebuild its state from.
//!
//! The store behind it is a [`Store`]: the built-in [`RedbStore`], or an embedding program's own.

mod change;
mod load;
mod metrics;
mod records;
mod redb_store;
mod store;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use thiserror::Error;

pub use change::Change;
pub use load::{Recovered, RecoveredDelivery, RecoveredSession};
pub use records::{SessionRecord, StoredWill, unix_millis_now};
pub use redb_store::{FILE_NAME, RedbStore};
pub use store::{Store, StoreError, Table, Visit, Write};

use crate::config::{Durability, StorageConfig};
use crate::receipt::Receipt;
use crate::stats::Stats;
use metrics::StorageMetrics;

/// Why the store could not be opened.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error(
        "{0}\nThe store is refused rather than read as valid data. `tern-broker storage repair DIR` keeps everything still valid and drops the rest; docs/storage.md explains."
    )]
    Damaged(String),
    #[error("{0}")]
    Open(String),
}

impl From<StoreError> for StorageError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Corrupted(what) => StorageError::Damaged(what),
            other => StorageError::Open(other.to_string()),
        }
    }
}

/// How many changes `batched` lets wait for the disk before acknowledgements wait too: what a crash
/// can lose at most when the disk is slower than the traffic.
pub const BATCHED_BACKLOG: u64 = 10_000;

/// The broker's handle on its store: cheap to clone, shared by everything that changes durable
/// state.
#[derive(Clone)]
pub struct Storage {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("sync", &self.shared.sync)
            .finish_non_exhaustive()
    }
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer.
    wake: Condvar,
    /// Changes recorded so far; read without the lock (see [`Storage::recorded`]).
    recorded: AtomicU64,
    /// How many of the recorded changes are on disk (the first this many).
    durable_through: AtomicU64,
    /// `durability: sync`: acknowledgements wait for the disk.
    sync: bool,
    /// `durability: batched`: commit this often.
    batch_interval: Option<Duration>,
    metrics: StorageMetrics,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Pending {
    changes: Vec<Change>,
    receipts: Vec<Arc<Receipt>>,
    closing: bool,
}

impl Storage {
    /// Opens the built-in store in `config.dir`, reads it back and starts the writer. `None` with
    /// `durability: off`.
    pub fn open(
        config: &StorageConfig,
        stats: &Stats,
    ) -> Result<Option<(Self, Recovered)>, StorageError> {
        if config.durability == Durability::Off {
            return Ok(None);
        }
        let store = RedbStore::open(&config.dir)?;
        Self::with_store(Box::new(store), config, stats).map(Some)
    }

    /// Reads `store` back and starts the writer on it: how an embedding program brings its own
    /// store.
    pub fn with_store(
        mut store: Box<dyn Store>,
        config: &StorageConfig,
        stats: &Stats,
    ) -> Result<(Self, Recovered), StorageError> {
        let started = std::time::Instant::now();
        let mut recovered = load::load(store.as_mut())?;
        let cleanup = std::mem::take(&mut recovered.cleanup);
        if !cleanup.is_empty() {
            store.commit(&cleanup, true)?;
        }
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            recorded: AtomicU64::new(0),
            durable_through: AtomicU64::new(0),
            sync: config.durability == Durability::Sync,
            batch_interval: (config.durability == Durability::Batched)
                .then(|| config.batch_interval()),
            metrics: StorageMetrics::register(stats),
            writer: Mutex::new(None),
        });
        let metrics = &shared.metrics;
        metrics
            .recovery_seconds
            .set(started.elapsed().as_secs_f64());
        metrics.damaged.inc_by(recovered.damaged_total());
        if let Some(size) = store.size() {
            metrics.size.set(i64::try_from(size).unwrap_or(i64::MAX));
        }
        let writer = writer::Writer {
            shared: Arc::clone(&shared),
            store,
            references: std::mem::take(&mut recovered.references),
            last_commit: std::time::Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("tern-storage".into())
            .spawn(move || writer.run())
            .map_err(|error| StorageError::Open(format!("starting the store's writer: {error}")))?;
        *shared.writer.lock() = Some(handle);
        Ok((Self { shared }, recovered))
    }

    /// Records a change; the writer commits it with the next group.
    pub fn record(&self, change: Change) {
        let shared = &*self.shared;
        let mut pending = shared.pending.lock();
        pending.changes.push(change);
        shared.recorded.fetch_add(1, Ordering::Release);
        let first = pending.changes.len() == 1;
        drop(pending);
        if first {
            shared.wake.notify_one();
        }
    }

    /// How many changes have been recorded: compared before and after some work, says whether it
    /// changed durable state (or another task did meanwhile, which only costs a wait).
    pub fn recorded(&self) -> u64 {
        self.shared.recorded.load(Ordering::Acquire)
    }

    /// When changes were recorded since `since` and the acknowledgement must wait for them: a
    /// receipt (`receipt` with one more party, or a new one) that the writer completes once they
    /// are on disk. Otherwise `receipt` as it was. In `sync` an acknowledgement always waits; in
    /// `batched` only while the disk has fallen more than [`BATCHED_BACKLOG`] changes behind, so
    /// that a crash never loses more than that.
    pub fn hold(&self, since: u64, receipt: Option<Arc<Receipt>>) -> Option<Arc<Receipt>> {
        let recorded = self.recorded();
        if recorded == since {
            return receipt;
        }
        let behind = recorded.saturating_sub(self.shared.durable_through.load(Ordering::Acquire));
        if !self.shared.sync && behind < BATCHED_BACKLOG {
            return receipt;
        }
        let receipt = match receipt {
            Some(receipt) => {
                receipt.add_party();
                receipt
            }
            None => Arc::new(Receipt::new(1)),
        };
        let shared = &*self.shared;
        let mut pending = shared.pending.lock();
        pending.receipts.push(Arc::clone(&receipt));
        let first = pending.changes.is_empty() && pending.receipts.len() == 1;
        drop(pending);
        if first {
            shared.wake.notify_one();
        }
        Some(receipt)
    }

    /// Commits are failing (a full disk): readiness is down until one goes through.
    pub fn is_failing(&self) -> bool {
        self.shared.metrics.failing.get() != 0
    }

    /// Writes what is left and stops the writer: the broker's last step. Blocks until done.
    pub fn close(&self) {
        self.shared.pending.lock().closing = true;
        self.shared.wake.notify_one();
        let handle = self.shared.writer.lock().take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("storage: the writer thread panicked");
        }
    }
}

/// Checks a store that is not open: every page, then every value's checksum. Returns a report
/// for `tern-broker storage check`.
pub fn check(dir: &Path) -> Result<String, StorageError> {
    let clean = RedbStore::check(dir)?;
    let mut store = RedbStore::open(dir)?;
    let recovered = load::load(&mut store)?;
    let mut report = format!(
        "{}: {}; {} sessions, {} messages, {} retained, {} expired",
        dir.join(FILE_NAME).display(),
        if clean {
            "pages intact"
        } else {
            "not closed cleanly, repaired"
        },
        recovered.sessions.len(),
        recovered.messages,
        recovered.retained.len(),
        recovered.expired,
    );
    for (table, count) in &recovered.damaged {
        report.push_str(&format!(
            "\n{table}: {count} damaged values (dropped at the next start)"
        ));
    }
    if recovered.damaged.is_empty() && clean {
        report.push_str("\nno damaged values");
        Ok(report)
    } else {
        report.push_str("\n`tern-broker storage repair DIR` drops them and keeps the rest");
        Err(StorageError::Open(report))
    }
}

/// Repairs a store that is not open (`tern-broker storage repair`): opens it without the page
/// check (redb repairs what an interrupted commit left), drops every value that fails its
/// checksum or refers to one that does, and compacts the file. Returns a report.
pub fn repair(dir: &Path) -> Result<String, StorageError> {
    let mut store = RedbStore::open_for_repair(dir)?;
    let mut recovered = load::load(&mut store)?;
    let cleanup = std::mem::take(&mut recovered.cleanup);
    store.commit(&cleanup, true)?;
    drop(store);
    RedbStore::compact(dir)?;
    let clean = RedbStore::check(dir)?;
    Ok(format!(
        "{}: {} values dropped ({} damaged, {} expired); {} sessions and {} retained messages kept; pages {}",
        dir.join(FILE_NAME).display(),
        cleanup.len(),
        recovered.damaged_total(),
        recovered.expired,
        recovered.sessions.len(),
        recovered.retained.len(),
        if clean { "intact" } else { "still damaged" },
    ))
}
