//! Crash recovery: a child fills a store and is killed with SIGKILL mid-stream; a fresh child
//! reopens it (timed) and scans it, checking every acknowledged entry byte for byte.
//!
//! SIGKILL kills the process, not the machine: what the kernel had accepted stays in the page
//! cache and reaches the disk. So this tests atomicity and recovery of a process crash, and
//! whether a store keeps acknowledged-but-unsynced writes in user space; it does not test
//! whether the fsyncs are placed right for a power loss.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use serde::Serialize;

use crate::bench::{Mode, disk_usage, ensure_fresh};
use crate::model::{self, Rng};
use crate::store::{self, OpenOptions, StoreKind, Table};

pub const SESSIONS: u64 = 100;

#[derive(Args, Debug, Clone)]
pub struct FillArgs {
    #[arg(long, value_enum)]
    pub store: StoreKind,
    #[arg(long, value_enum, default_value = "sync")]
    pub mode: Mode,
    #[arg(long, default_value_t = 10)]
    pub batch_ms: u64,
    #[arg(long)]
    pub dir: PathBuf,
    /// Messages to queue (ids 0..N, each in one of 100 sessions' queues).
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Messages per commit (at least 1).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Keep writing after `messages` until killed.
    #[arg(long)]
    pub forever: bool,
    /// After `messages`, move everything out of the log (fjall: flush memtables), then write
    /// `tail` more messages, then close cleanly.
    #[arg(long)]
    pub flush: bool,
    #[arg(long, default_value_t = 0)]
    pub tail: u64,
}

/// Prints `C n` once ids below n are committed (acknowledged), `D n` once they are durable.
pub fn fill(a: &FillArgs) -> Result<()> {
    ensure_fresh(&a.dir)?;
    let mut st = store::open(&OpenOptions {
        kind: a.store,
        dir: a.dir.clone(),
        check_on_open: false,
    })?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut id = 0u64;
    let mut last_sync = Instant::now();
    let mut write_batch = |st: &mut Box<dyn store::Store>, id: &mut u64| -> Result<()> {
        let mut ops = Vec::with_capacity(2 * a.batch as usize);
        for _ in 0..a.batch {
            ops.extend(model::store_p2p(*id, *id % SESSIONS, *id, a.payload));
            *id += 1;
        }
        st.commit(ops, a.mode == Mode::Sync)?;
        writeln!(out, "C {id}")?;
        if a.mode == Mode::Sync {
            writeln!(out, "D {id}")?;
        } else if a.mode == Mode::Batched
            && last_sync.elapsed() >= Duration::from_millis(a.batch_ms)
        {
            st.sync()?;
            last_sync = Instant::now();
            writeln!(out, "D {id}")?;
        }
        out.flush()?;
        Ok(())
    };
    while id < a.messages || a.forever {
        write_batch(&mut st, &mut id)?;
    }
    if a.flush {
        st.flush()?;
        let end = id + a.tail;
        while id < end {
            write_batch(&mut st, &mut id)?;
        }
    }
    st.close()?;
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    #[arg(long, value_enum)]
    pub store: StoreKind,
    #[arg(long)]
    pub dir: PathBuf,
    /// Ids below this were acknowledged to the producer.
    #[arg(long, default_value_t = 0)]
    pub acked: u64,
    /// Ids below this were reported durable.
    #[arg(long, default_value_t = 0)]
    pub durable: u64,
    /// redb: verify every page checksum on open.
    #[arg(long)]
    pub check_on_open: bool,
}

#[derive(Debug, Default, Serialize, serde::Deserialize, Clone)]
pub struct VerifyResult {
    pub open_ms: f64,
    pub scan_ms: f64,
    pub queue_entries: u64,
    pub messages: u64,
    /// Acknowledged ids whose message or queue entry is missing.
    pub missing_acked: u64,
    /// Durable ids whose message or queue entry is missing.
    pub missing_durable: u64,
    /// Messages whose bytes differ from what was written.
    pub bad_content: u64,
    /// Entries that do not parse, or a queue entry that does not match its key.
    pub bad_entries: u64,
    /// Queue entries without their message, or messages without their queue entry.
    pub half_committed: u64,
    /// Ids beyond `acked` present (committed, the ack not yet seen by the producer).
    pub beyond_acked: u64,
    pub error_stage: Option<String>,
    pub error: Option<String>,
}

pub fn verify(a: &VerifyArgs) -> VerifyResult {
    let mut r = VerifyResult::default();
    let t0 = Instant::now();
    let st = match store::open(&OpenOptions {
        kind: a.store,
        dir: a.dir.clone(),
        check_on_open: a.check_on_open,
    }) {
        Ok(s) => s,
        Err(e) => {
            r.error_stage = Some("open".into());
            r.error = Some(format!("{e:#}"));
            return r;
        }
    };
    r.open_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    if let Err(e) = scan(st.as_ref(), a, &mut r) {
        r.error_stage = Some("scan".into());
        r.error = Some(format!("{e:#}"));
    }
    r.scan_ms = t1.elapsed().as_secs_f64() * 1e3;
    if let Err(e) = st.close() {
        r.error_stage.get_or_insert_with(|| "close".into());
        r.error.get_or_insert_with(|| format!("{e:#}"));
    }
    r
}

fn scan(st: &dyn store::Store, a: &VerifyArgs, r: &mut VerifyResult) -> Result<()> {
    // Per id, bit 0: queue entry seen, bit 1: message seen and intact.
    let known = a.acked.max(a.durable);
    let mut seen: Vec<u8> = vec![0; known as usize + 1024];
    // A damaged key can hold any id; one far beyond what the writer can have reached (it is
    // killed within a few batches of `acked`) is a bad entry, not a reason to allocate its index.
    let limit = known + (1 << 24);
    let mut mark = |id: u64, bit: u8| -> bool {
        if id >= limit {
            return false;
        }
        let i = id as usize;
        if i >= seen.len() {
            seen.resize(i + 1024, 0);
        }
        seen[i] |= bit;
        true
    };
    st.scan(Table::Queue, &mut |k, v| {
        r.queue_entries += 1;
        let ok = match (model::parse_queue_key(k), model::parse_queue_value(v)) {
            (Some((s, seq)), Some(id)) if seq == id && s == id % SESSIONS => mark(id, 1),
            _ => false,
        };
        if !ok {
            r.bad_entries += 1;
        }
        Ok(())
    })?;
    st.scan(Table::Msg, &mut |k, v| {
        r.messages += 1;
        let Ok(k) = <[u8; 8]>::try_from(k) else {
            r.bad_entries += 1;
            return Ok(());
        };
        let id = u64::from_be_bytes(k);
        if !model::check_msg(id, v) {
            r.bad_content += 1;
        } else if !mark(id, 2) {
            r.bad_entries += 1;
        }
        Ok(())
    })?;
    for (id, s) in seen.iter().enumerate() {
        let id = id as u64;
        if *s != 3 {
            if id < a.acked {
                r.missing_acked += 1;
            }
            if id < a.durable {
                r.missing_durable += 1;
            }
        }
        if *s == 1 || *s == 2 {
            r.half_committed += 1;
        }
        if *s != 0 && id >= a.acked {
            r.beyond_acked += 1;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// orchestration

pub fn self_exe() -> Result<PathBuf> {
    std::env::current_exe().context("locating own executable")
}

/// Writes back and drops the page cache (needs root), so that an open reads from the disk.
fn drop_caches() -> bool {
    let ok = Command::new("sync").status().is_ok_and(|s| s.success());
    ok && std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

pub struct ChildOutcome {
    pub status: String,
    pub result: Option<VerifyResult>,
    pub stderr_tail: String,
}

/// Runs `verify` in a child: a damaged file may make a store panic, abort or hang, and each of
/// those is an outcome to report, not a reason for this process to stop.
pub fn verify_child(
    store: StoreKind,
    dir: &Path,
    acked: u64,
    durable: u64,
    check_on_open: bool,
    timeout: Duration,
) -> Result<ChildOutcome> {
    let mut cmd = Command::new(self_exe()?);
    cmd.args(["verify", "--store", store.label(), "--dir"])
        .arg(dir)
        .args([
            "--acked",
            &acked.to_string(),
            "--durable",
            &durable.to_string(),
        ])
        // The panic message, not a backtrace, is what the last lines of stderr should hold.
        .env("RUST_BACKTRACE", "0");
    if check_on_open {
        cmd.arg("--check-on-open");
    }
    let t0 = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning verify")?;
    // Drain both pipes while waiting, so that a chatty child cannot block on a full pipe and
    // be taken for a hang.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break match s.code() {
                Some(0) => "exit 0".to_string(),
                Some(101) => "panic".to_string(),
                Some(c) => format!("exit {c}"),
                None => "killed by signal".to_string(),
            };
        }
        if t0.elapsed() > timeout {
            child.kill()?;
            child.wait()?;
            break "timeout".to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().map_err(|_| anyhow!("stdout reader panicked"))?;
    let stderr = err.join().map_err(|_| anyhow!("stderr reader panicked"))?;
    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
    Ok(ChildOutcome {
        status,
        result: serde_json::from_str(stdout.trim()).ok(),
        stderr_tail: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
    })
}

#[derive(Args, Debug, Clone)]
pub struct CrashArgs {
    #[arg(long, value_enum)]
    pub store: StoreKind,
    #[arg(long, value_enum, default_value = "sync")]
    pub mode: Mode,
    #[arg(long, default_value_t = 10)]
    pub batch_ms: u64,
    /// Base directory; each repetition uses and then removes a subdirectory.
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Messages per commit (at least 1).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    /// Drop the page cache before each reopen (needs root), for cold-cache figures.
    #[arg(long)]
    pub cold: bool,
    /// Keep the store directories.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Serialize)]
struct CrashResult {
    kind: &'static str,
    store: &'static str,
    mode: Mode,
    payload: usize,
    rep: u32,
    fill_secs: f64,
    acked: u64,
    durable: u64,
    disk_bytes: u64,
    cold_cache: bool,
    recover_status: String,
    recover: Option<VerifyResult>,
    recover_stderr: String,
    reopen_status: String,
    reopen: Option<VerifyResult>,
    /// redb only: a clean reopen with `set_check_integrity_on_open(true)`.
    reopen_checked: Option<VerifyResult>,
}

/// What the killed writer had reported before it died.
struct Killed {
    acked: u64,
    durable: u64,
    fill_secs: f64,
}

/// Starts `fill --forever` on a fresh `dir` and SIGKILLs it a random moment after it has
/// acknowledged `a.messages` (within the next 10 commits, and a random part of the way into a
/// commit, so that the kill lands mid-write rather than between commits).
fn fill_and_kill(a: &CrashArgs, dir: &Path, rng: &mut Rng) -> Result<Killed> {
    let t0 = Instant::now();
    let mut child = Command::new(self_exe()?)
        .args(["fill", "--store", a.store.label(), "--dir"])
        .arg(dir)
        .args([
            "--mode",
            mode_label(a.mode),
            "--batch-ms",
            &a.batch_ms.to_string(),
            "--messages",
            &a.messages.to_string(),
            "--batch",
            &a.batch.to_string(),
            "--payload",
            &a.payload.to_string(),
            "--forever",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning fill")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut acked, mut durable) = (0u64, 0u64);
    let parse = |l: &str, acked: &mut u64, durable: &mut u64| {
        let mut it = l.split(' ');
        match (it.next(), it.next().and_then(|n| n.parse::<u64>().ok())) {
            (Some("C"), Some(n)) => *acked = n,
            (Some("D"), Some(n)) => *durable = n,
            _ => {}
        }
    };
    let kill_at = a.messages + rng.below(10) * a.batch;
    let mut killed = false;
    for l in lines.by_ref() {
        parse(&l?, &mut acked, &mut durable);
        if acked >= kill_at {
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
            child.kill().context("killing fill")?;
            killed = true;
            break;
        }
    }
    // Lines still in the pipe were printed, so acknowledged, before the child died.
    for l in lines {
        parse(&l?, &mut acked, &mut durable);
    }
    let status = child.wait()?;
    if !killed {
        return Err(anyhow!(
            "fill ended by itself ({status}) at {acked} messages, before the kill point"
        ));
    }
    Ok(Killed {
        acked,
        durable,
        fill_secs: t0.elapsed().as_secs_f64(),
    })
}

pub fn crash(a: &CrashArgs) -> Result<()> {
    const TIMEOUT: Duration = Duration::from_secs(600);
    for rep in 0..a.reps {
        let dir = a.dir.join(format!("crash-{}-{rep}", a.store.label()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let mut rng = Rng::new(rep as u64 + 7);
        let k = fill_and_kill(a, &dir, &mut rng)?;
        let disk_bytes = disk_usage(&dir)?;
        // First open after the crash: the recovery being measured.
        let cold = a.cold && drop_caches();
        let rec = verify_child(a.store, &dir, k.acked, k.durable, false, TIMEOUT)?;
        // Second open, after the clean close of the first: the ordinary restart.
        let cold2 = a.cold && drop_caches();
        let re = verify_child(a.store, &dir, k.acked, k.durable, false, TIMEOUT)?;
        // redb's opt-in full check, what a broker wanting corruption detection would pay.
        let checked = if matches!(a.store, StoreKind::Redb | StoreKind::RedbQr) {
            if a.cold {
                drop_caches();
            }
            verify_child(a.store, &dir, k.acked, k.durable, true, TIMEOUT)?.result
        } else {
            None
        };
        let r = CrashResult {
            kind: "crash",
            store: a.store.label(),
            mode: a.mode,
            payload: a.payload,
            rep,
            fill_secs: k.fill_secs,
            acked: k.acked,
            durable: k.durable,
            disk_bytes,
            cold_cache: cold && cold2,
            recover_status: rec.status,
            recover: rec.result,
            recover_stderr: rec.stderr_tail,
            reopen_status: re.status,
            reopen: re.result,
            reopen_checked: checked,
        };
        println!("{}", serde_json::to_string(&r)?);
        if !a.keep {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    Ok(())
}

pub fn mode_label(m: Mode) -> &'static str {
    match m {
        Mode::Sync => "sync",
        Mode::Batched => "batched",
        Mode::Off => "off",
    }
}
