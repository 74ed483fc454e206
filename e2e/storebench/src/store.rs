//! The one small interface the broker needs from a store, implemented on redb, fjall and memory.
//!
//! Every table maps bytes to bytes, with keys encoded big-endian so that key order is numeric
//! order; both stores receive exactly the same keys and values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde::Serialize;

/// The tables of the proposed layout (see docs/storage.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    /// message id (u64) → message header + topic + properties + payload; stored once.
    Msg = 0,
    /// (session u64, sequence u64) → message id u64 + QoS u8 + flags u8.
    Queue = 1,
    /// (session u64, packet id u16) → message id u64 + state u8 (QoS 2 and sent QoS 1/2).
    Inflight = 2,
    /// topic (UTF-8) → retained message (inline).
    Retained = 3,
    /// client id (UTF-8) → session number u64 + expiry + will + subscriptions.
    Session = 4,
}

pub const TABLES: [Table; 5] = [
    Table::Msg,
    Table::Queue,
    Table::Inflight,
    Table::Retained,
    Table::Session,
];

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Msg => "msg",
            Table::Queue => "queue",
            Table::Inflight => "inflight",
            Table::Retained => "retained",
            Table::Session => "session",
        }
    }
}

pub enum Op {
    Put(Table, Vec<u8>, Vec<u8>),
    Del(Table, Vec<u8>),
}

impl Op {
    pub fn table(&self) -> Table {
        match self {
            Op::Put(t, ..) | Op::Del(t, _) => *t,
        }
    }

    /// Key + value bytes the caller asked to store (a delete counts its key).
    pub fn logical_bytes(&self) -> u64 {
        match self {
            Op::Put(_, k, v) => (k.len() + v.len()) as u64,
            Op::Del(_, k) => k.len() as u64,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// BTreeMaps behind the same writer thread: the in-memory reference.
    Mem,
    /// redb 5, one file, copy-on-write B-trees; after a crash, a full repair on open (every page
    /// of the committed trees read and its checksum checked).
    Redb,
    /// redb 5 with quick-repair on every commit (allocator state saved, 2-phase commit).
    RedbQr,
    /// fjall 3, LSM trees (one keyspace per table) sharing one write-ahead journal.
    Fjall,
}

impl StoreKind {
    pub fn label(self) -> &'static str {
        match self {
            StoreKind::Mem => "mem",
            StoreKind::Redb => "redb",
            StoreKind::RedbQr => "redb-qr",
            StoreKind::Fjall => "fjall",
        }
    }
}

/// Called with each key and value of a scan; an error stops the scan.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// What the broker needs: atomic multi-table batches, an explicit sync, an ordered scan.
pub trait Store: Send {
    /// Applies `ops` atomically. With `durable`, they are on disk when this returns; without,
    /// they survive whatever the store's weakest level survives (see each implementation).
    fn commit(&mut self, ops: Vec<Op>, durable: bool) -> Result<()>;
    /// Makes every earlier commit durable.
    fn sync(&mut self) -> Result<()>;
    /// Visits every entry of `table` in key order.
    fn scan(&self, table: Table, f: &mut Visit<'_>) -> Result<()>;
    /// Moves what is only in the write-ahead log into the main structure (fjall: flush
    /// memtables to tables); a no-op elsewhere.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// Closes cleanly.
    fn close(self: Box<Self>) -> Result<()>;
}

pub struct OpenOptions {
    pub kind: StoreKind,
    pub dir: PathBuf,
    /// redb only: verify every page's checksum on open, not only after a crash.
    pub check_on_open: bool,
}

pub fn open(o: &OpenOptions) -> Result<Box<dyn Store>> {
    std::fs::create_dir_all(&o.dir).with_context(|| format!("creating {}", o.dir.display()))?;
    Ok(match o.kind {
        StoreKind::Mem => Box::new(MemStore::default()),
        StoreKind::Redb => Box::new(RedbStore::open(&o.dir, false, o.check_on_open)?),
        StoreKind::RedbQr => Box::new(RedbStore::open(&o.dir, true, o.check_on_open)?),
        StoreKind::Fjall => Box::new(FjallStore::open(&o.dir)?),
    })
}

// ---------------------------------------------------------------------------------------------
// memory

#[derive(Default)]
pub struct MemStore {
    tables: [BTreeMap<Vec<u8>, Vec<u8>>; 5],
}

impl Store for MemStore {
    fn commit(&mut self, ops: Vec<Op>, _durable: bool) -> Result<()> {
        for op in ops {
            match op {
                Op::Put(t, k, v) => {
                    self.tables[t as usize].insert(k, v);
                }
                Op::Del(t, k) => {
                    self.tables[t as usize].remove(&k);
                }
            }
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
    fn scan(&self, table: Table, f: &mut Visit<'_>) -> Result<()> {
        for (k, v) in &self.tables[table as usize] {
            f(k, v)?;
        }
        Ok(())
    }
    fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// redb

type RedbDef = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;

const REDB_TABLES: [RedbDef; 5] = [
    redb::TableDefinition::new("msg"),
    redb::TableDefinition::new("queue"),
    redb::TableDefinition::new("inflight"),
    redb::TableDefinition::new("retained"),
    redb::TableDefinition::new("session"),
];

pub const REDB_FILE: &str = "tern.redb";

pub struct RedbStore {
    db: redb::Database,
    quick_repair: bool,
}

impl RedbStore {
    fn open(dir: &Path, quick_repair: bool, check_on_open: bool) -> Result<Self> {
        let path = dir.join(REDB_FILE);
        let mut b = redb::Builder::new();
        // The broker would size this from its memory limit; the default is 1 GiB.
        b.set_cache_size(256 << 20);
        b.set_check_integrity_on_open(check_on_open);
        let db = b
            .create(&path)
            .with_context(|| format!("opening redb {}", path.display()))?;
        let s = RedbStore { db, quick_repair };
        // Create the tables once so that a later commit only touches the ones it writes.
        let tx = s.begin(true)?;
        for def in REDB_TABLES {
            tx.open_table(def)?;
        }
        tx.commit()?;
        Ok(s)
    }

    /// A write transaction. `Durability::None` keeps the commit in this process's memory (a
    /// later durable commit writes it out), so a non-durable commit does not survive kill -9.
    fn begin(&self, durable: bool) -> Result<redb::WriteTransaction> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })?;
        if self.quick_repair {
            tx.set_quick_repair(true);
        }
        Ok(tx)
    }
}

impl Store for RedbStore {
    fn commit(&mut self, mut ops: Vec<Op>, durable: bool) -> Result<()> {
        let tx = self.begin(durable)?;
        // Group by table and open each table once: opening one costs a lookup in the table of
        // tables. The sort is stable, so the order of operations on one key is kept.
        ops.sort_by_key(Op::table);
        for chunk in ops.chunk_by(|a, b| a.table() == b.table()) {
            let mut table = tx.open_table(REDB_TABLES[chunk[0].table() as usize])?;
            for op in chunk {
                match op {
                    Op::Put(_, k, v) => {
                        table.insert(k.as_slice(), v.as_slice())?;
                    }
                    Op::Del(_, k) => {
                        table.remove(k.as_slice())?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        // redb has no separate sync: an empty durable commit makes the earlier non-durable
        // commits durable.
        self.begin(true)?.commit()?;
        Ok(())
    }

    fn scan(&self, table: Table, f: &mut Visit<'_>) -> Result<()> {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.begin_read()?;
        let t = tx.open_table(REDB_TABLES[table as usize])?;
        for e in t.iter()? {
            let (k, v) = e?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.close()?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// fjall

pub struct FjallStore {
    db: fjall::Database,
    ks: Vec<fjall::Keyspace>,
}

impl FjallStore {
    fn open(dir: &Path) -> Result<Self> {
        let db = fjall::Database::builder(dir)
            .cache_size(256 << 20)
            .open()
            .with_context(|| format!("opening fjall {}", dir.display()))?;
        let mut ks = Vec::new();
        for t in TABLES {
            ks.push(db.keyspace(t.name(), fjall::KeyspaceCreateOptions::default)?);
        }
        Ok(FjallStore { db, ks })
    }
}

impl Store for FjallStore {
    fn commit(&mut self, ops: Vec<Op>, durable: bool) -> Result<()> {
        // A durable batch is fdatasync'ed (the journal is preallocated, so its length does not
        // change and the data sync suffices). Any other batch is still flushed from fjall's 8 KiB
        // journal buffer to the kernel: then a crash of the process alone (kill -9, OOM, panic)
        // loses nothing acknowledged, and only a power loss or kernel crash can lose the last
        // `batched` interval. redb has no such middle level: its non-durable commits stay in
        // this process's memory until the next durable one.
        let mode = if durable {
            fjall::PersistMode::SyncData
        } else {
            fjall::PersistMode::Buffer
        };
        let mut b = self.db.batch().durability(Some(mode));
        for op in ops {
            match op {
                Op::Put(t, k, v) => b.insert(&self.ks[t as usize], k, v),
                Op::Del(t, k) => b.remove(&self.ks[t as usize], k),
            }
        }
        b.commit()?;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }

    fn scan(&self, table: Table, f: &mut Visit<'_>) -> Result<()> {
        for g in self.ks[table as usize].iter() {
            let (k, v) = g.into_inner()?;
            f(&k, &v)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        for k in &self.ks {
            k.rotate_memtable_and_wait()?;
        }
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.persist(fjall::PersistMode::SyncAll)?;
        drop(self.ks);
        drop(self.db);
        Ok(())
    }
}
