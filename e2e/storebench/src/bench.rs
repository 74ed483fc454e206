//! Throughput workloads: producers hand batches to one writer thread that group-commits them,
//! the shape proposed for the broker.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::model::{self, Rng};
use crate::store::{self, Op, OpenOptions, StoreKind, Table};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One fsync per group commit; acknowledgements wait for it.
    Sync,
    /// Commits reach the store at once (acknowledged then); a sync every `batch_ms`.
    Batched,
    /// No sync at all (only on a clean close).
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Each publish stores a message and one queue entry; the subscriber's ack deletes both.
    P2p,
    /// Each publish stores one message referenced by 100 sessions' queue entries; 100 acks.
    Fanout,
    /// Retained set (overwrite) 80 % / delete 20 % over 10,000 topics.
    Retained,
}

pub const FANOUT: u64 = 100;
const RETAINED_TOPICS: u64 = 10_000;

/// A unit of work for the writer: `ops` applied atomically; `ack` told after the group commit.
pub struct Request {
    pub ops: Vec<Op>,
    pub ack: Option<(Sender<u64>, u64)>,
}

#[derive(Default, Debug, Serialize)]
pub struct WriterStats {
    pub commits: u64,
    pub syncs: u64,
    pub requests: u64,
    pub max_group: u64,
    pub logical_bytes: u64,
}

/// The single writer: wait for one request, take every request that arrived meanwhile, apply them
/// in one commit (fsynced in `sync`), then acknowledge them all.
pub fn writer_loop(
    st: &mut dyn store::Store,
    rx: Receiver<Request>,
    mode: Mode,
    batch: Duration,
) -> Result<WriterStats> {
    const MAX_GROUP: usize = 4096;
    let mut stats = WriterStats::default();
    let mut next_sync = Instant::now() + batch;
    let mut dirty = false;
    let mut ops = Vec::new();
    let mut acks = Vec::new();
    loop {
        let first = if mode == Mode::Batched {
            let wait = next_sync.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(r) => Some(r),
                Err(_) => break,
            }
        };
        if let Some(first) = first {
            let mut take = |r: Request| {
                stats.requests += 1;
                for op in r.ops {
                    stats.logical_bytes += op.logical_bytes();
                    ops.push(op);
                }
                if let Some(a) = r.ack {
                    acks.push(a);
                }
            };
            take(first);
            let mut n = 1;
            while n < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => take(r),
                    Err(_) => break,
                }
                n += 1;
            }
            stats.max_group = stats.max_group.max(n as u64);
            st.commit(std::mem::take(&mut ops), mode == Mode::Sync)?;
            stats.commits += 1;
            dirty = true;
            for (tx, tag) in acks.drain(..) {
                let _ = tx.send(tag);
            }
        }
        if mode == Mode::Batched && Instant::now() >= next_sync {
            if dirty {
                st.sync()?;
                stats.syncs += 1;
                dirty = false;
            }
            next_sync = Instant::now() + batch;
        }
    }
    if mode == Mode::Batched && dirty {
        st.sync()?;
        stats.syncs += 1;
    }
    Ok(stats)
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[arg(long, value_enum)]
    pub store: StoreKind,
    #[arg(long, value_enum, default_value = "sync")]
    pub mode: Mode,
    /// Sync interval in `batched` mode.
    #[arg(long, default_value_t = 10)]
    pub batch_ms: u64,
    #[arg(long, value_enum, default_value = "p2p")]
    pub workload: Workload,
    /// Concurrent producers (threads).
    #[arg(long, default_value_t = 10)]
    pub producers: u64,
    /// Unacknowledged publishes each producer keeps in flight.
    #[arg(long, default_value_t = 1)]
    pub window: u64,
    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Seconds producers publish.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Store directory; must not exist or be empty (a fresh store each run).
    #[arg(long)]
    pub dir: std::path::PathBuf,
}

#[derive(Debug, Serialize)]
pub struct RunResult {
    pub kind: &'static str,
    pub workload: Workload,
    pub store: &'static str,
    pub mode: Mode,
    pub batch_ms: u64,
    pub producers: u64,
    pub window: u64,
    pub payload: usize,
    pub secs: f64,
    /// Publishes (or retained operations) acknowledged.
    pub acked: u64,
    pub acked_per_s: f64,
    /// Payload bytes of the acknowledged publishes (retained deletes carry none): the
    /// denominator of write amplification.
    pub payload_bytes: u64,
    pub writer: WriterStats,
    /// /proc/self/io write_bytes: bytes this process caused to be written to the device.
    /// Counted when pages are dirtied, so it includes writes still in the page cache at exit,
    /// but not the file system's own journal (ext4's jbd2 writes on every fsync).
    pub write_bytes: u64,

    /// /proc/self/io wchar: bytes passed to write-like syscalls.
    pub wchar: u64,
    pub cancelled_write_bytes: u64,
    /// Space allocated to the store directory after a clean close.
    pub disk_bytes: u64,
}

/// Sectors written to the block device holding `path`, from /sys/dev/block/MAJ:MIN/stat
/// (field 7, in 512-byte units whatever the device's sector size). None on a file system
/// without a block device (tmpfs, overlay): the figure is then not available, not zero.
pub fn device_sectors_written(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    // Linux's dev_t encoding (glibc's gnu_dev_major / gnu_dev_minor).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    stat.split_whitespace().nth(6)?.parse().ok()
}

#[derive(Default, Clone, Copy)]
pub struct Io {
    pub wchar: u64,
    pub write_bytes: u64,
    pub cancelled: u64,
}

pub fn proc_io() -> Result<Io> {
    let s = std::fs::read_to_string("/proc/self/io").context("reading /proc/self/io")?;
    let mut io = Io::default();
    for line in s.lines() {
        let mut it = line.split(':');
        let (Some(k), Some(v)) = (it.next(), it.next()) else {
            continue;
        };
        let v: u64 = v.trim().parse().unwrap_or(0);
        match k {
            "wchar" => io.wchar = v,
            "write_bytes" => io.write_bytes = v,
            "cancelled_write_bytes" => io.cancelled = v,
            _ => {}
        }
    }
    Ok(io)
}

/// Bytes allocated on disk below `dir` (st_blocks, not apparent length).
pub fn disk_usage(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e?;
        let m = e.metadata()?;
        if m.is_dir() {
            total += disk_usage(&e.path())?;
        } else {
            total += m.blocks() * 512;
        }
    }
    Ok(total)
}

pub fn ensure_fresh(dir: &Path) -> Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(anyhow!(
            "{} is not empty; give a new or empty directory",
            dir.display()
        ));
    }
    Ok(())
}

pub fn run(a: &RunArgs) -> Result<RunResult> {
    ensure_fresh(&a.dir)?;
    let io0 = proc_io()?;
    let mut st = store::open(&OpenOptions {
        kind: a.store,
        dir: a.dir.clone(),
        check_on_open: false,
    })?;
    // Session records exist before anyone publishes (written at CONNECT/SUBSCRIBE time).
    let sessions = match a.workload {
        Workload::P2p => a.producers,
        Workload::Fanout => FANOUT,
        Workload::Retained => 0,
    };
    let mut ops = Vec::new();
    for s in 0..sessions {
        let mut v = s.to_be_bytes().to_vec();
        v.extend_from_slice(b"\0\0\0\0subscriptions: tern/bench/+/data qos 1");
        ops.push(Op::Put(
            Table::Session,
            format!("client-{s}").into_bytes(),
            v,
        ));
    }
    st.commit(ops, true)?;

    let (tx, rx) = mpsc::channel::<Request>();
    let mode = a.mode;
    let batch = Duration::from_millis(a.batch_ms);
    let writer = thread::Builder::new().name("store-writer".into()).spawn(
        move || -> Result<(Box<dyn store::Store>, WriterStats)> {
            let stats = writer_loop(st.as_mut(), rx, mode, batch)?;
            Ok((st, stats))
        },
    )?;

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let t0 = Instant::now();
    let mut producers = Vec::new();
    for p in 0..a.producers {
        let tx = tx.clone();
        let stop = stop.clone();
        let counters = counters.clone();
        let (window, payload, workload) = (a.window.max(1), a.payload, a.workload);
        producers.push(thread::spawn(move || -> Result<()> {
            produce(p, workload, window, payload, &tx, &stop, &counters)
        }));
    }
    drop(tx);
    thread::sleep(Duration::from_secs_f64(a.duration));
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().map_err(|_| anyhow!("producer panicked"))??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (st, writer) = writer.join().map_err(|_| anyhow!("writer panicked"))??;
    st.close()?;
    let io1 = proc_io()?;
    let acked = counters.acked.load(Ordering::Relaxed);
    Ok(RunResult {
        kind: "run",
        workload: a.workload,
        store: a.store.label(),
        mode: a.mode,
        batch_ms: a.batch_ms,
        producers: a.producers,
        window: a.window,
        payload: a.payload,
        secs,
        acked,
        acked_per_s: acked as f64 / secs,
        payload_bytes: counters.payload_bytes.load(Ordering::Relaxed),
        writer,
        write_bytes: io1.write_bytes - io0.write_bytes,
        wchar: io1.wchar - io0.wchar,
        cancelled_write_bytes: io1.cancelled - io0.cancelled,

        disk_bytes: disk_usage(&a.dir)?,
    })
}

/// Shared by the producers.
#[derive(Default)]
struct Counters {
    /// The next message id (unique across producers).
    next_id: AtomicU64,
    acked: AtomicU64,
    payload_bytes: AtomicU64,
}

/// One publisher with `window` publishes in flight, and its subscriber's acknowledgements.
fn produce(
    p: u64,
    workload: Workload,
    window: u64,
    payload: usize,
    tx: &Sender<Request>,
    stop: &AtomicBool,
    counters: &Counters,
) -> Result<()> {
    let (atx, arx) = mpsc::channel::<u64>();
    let mut rng = Rng::new(p + 1);
    let send = |ops: Vec<Op>, ack: Option<u64>| -> Result<()> {
        tx.send(Request {
            ops,
            ack: ack.map(|t| (atx.clone(), t)),
        })
        .map_err(|_| anyhow!("writer gone"))
    };
    let publish = |rng: &mut Rng| -> Result<()> {
        let id = counters.next_id.fetch_add(1, Ordering::Relaxed);
        let ops = match workload {
            Workload::P2p => model::store_p2p(id, p, id, payload),
            Workload::Fanout => {
                let mut ops = Vec::with_capacity(FANOUT as usize + 1);
                ops.push(Op::Put(
                    Table::Msg,
                    model::msg_key(id),
                    model::encode_msg(id, &model::topic(p), payload),
                ));
                for s in 0..FANOUT {
                    ops.push(Op::Put(
                        Table::Queue,
                        model::queue_key(s, id),
                        model::queue_value(id, 1, 0),
                    ));
                }
                ops
            }
            Workload::Retained => {
                let t = rng.below(RETAINED_TOPICS);
                let key = format!("tern/retained/{t}/state").into_bytes();
                if rng.below(10) < 8 {
                    vec![Op::Put(
                        Table::Retained,
                        key,
                        model::encode_msg(id, &model::topic(t), payload),
                    )]
                } else {
                    vec![Op::Del(Table::Retained, key)]
                }
            }
        };
        // Every publish sent is acknowledged before the producer returns (it drains its
        // window), so counting payload here counts acknowledged payload.
        if ops.iter().any(|op| matches!(op, Op::Put(..))) {
            counters
                .payload_bytes
                .fetch_add(payload as u64, Ordering::Relaxed);
        }
        send(ops, Some(id))
    };
    let mut outstanding = 0;
    while outstanding < window {
        publish(&mut rng)?;
        outstanding += 1;
    }
    while outstanding > 0 {
        let id = arx.recv().map_err(|_| anyhow!("writer gone"))?;
        outstanding -= 1;
        counters.acked.fetch_add(1, Ordering::Relaxed);
        // The subscriber's acknowledgement: not waited for (a lost delete only redelivers).
        match workload {
            Workload::P2p => send(model::ack_p2p(id, p, id), None)?,
            Workload::Fanout => {
                // Each subscriber's PUBACK deletes its entry; the last one also the message.
                for s in 0..FANOUT {
                    let mut ops = vec![Op::Del(Table::Queue, model::queue_key(s, id))];
                    if s == FANOUT - 1 {
                        ops.push(Op::Del(Table::Msg, model::msg_key(id)));
                    }
                    send(ops, None)?;
                }
            }
            Workload::Retained => {}
        }
        if !stop.load(Ordering::Relaxed) {
            publish(&mut rng)?;
            outstanding += 1;
        }
    }
    Ok(())
}
