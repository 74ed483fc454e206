//! The throughput matrix: each case runs in a fresh child process (`run`) on a fresh store,
//! under a tracer that counts the fsync-family syscalls of the child and all its threads.
//!
//! The default tracer is `perf stat` on the syscall tracepoints: it counts in the kernel without
//! stopping the process. `strace -c` (also offered, for machines without perf) stops the process
//! at every traced syscall; here that cut redb's `sync` throughput by about two thirds, so its
//! counts are right but its throughput is not. The block device's write counter is read by this
//! parent around the child, after a `sync`, so that it includes the file system's journal and
//! the writeback of whatever the store left in the page cache.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::bench::{Mode, Workload, device_sectors_written};
use crate::crash::mode_label;
use crate::store::StoreKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tracer {
    /// `perf stat -e syscalls:sys_enter_*`: exact counts, no slowdown.
    Perf,
    /// `strace -f -c`: exact counts, but every traced call stops the process.
    Strace,
    /// No syscall counts.
    None,
}

#[derive(Args, Debug, Clone)]
pub struct SuiteArgs {
    /// Base directory for the stores (on the disk being measured, not tmpfs).
    #[arg(long)]
    pub dir: PathBuf,
    /// JSON lines are appended here.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub reps: u32,
    /// Seconds each case publishes.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Sync interval of the `batched` cases.
    #[arg(long, default_value_t = 10)]
    pub batch_ms: u64,
    /// Only these workloads (default: all).
    #[arg(long, value_enum)]
    pub workload: Vec<Workload>,
    /// Only these stores (default: all).
    #[arg(long, value_enum)]
    pub store: Vec<StoreKind>,
    /// Only these durability modes (default: all).
    #[arg(long, value_enum)]
    pub mode: Vec<Mode>,
    #[arg(long, value_enum, default_value = "perf")]
    pub tracer: Tracer,
}

struct Case {
    workload: Workload,
    store: StoreKind,
    mode: Mode,
    producers: u64,
    window: u64,
    payload: usize,
}

/// Store and durability pairs; `mem` is the in-memory reference (today's broker).
const CONFIGS: [(StoreKind, Mode); 8] = [
    (StoreKind::Mem, Mode::Off),
    (StoreKind::Redb, Mode::Sync),
    (StoreKind::RedbQr, Mode::Sync),
    (StoreKind::Fjall, Mode::Sync),
    (StoreKind::Redb, Mode::Batched),
    (StoreKind::Fjall, Mode::Batched),
    (StoreKind::Redb, Mode::Off),
    (StoreKind::Fjall, Mode::Off),
];

fn matrix(a: &SuiteArgs) -> Vec<Case> {
    let mut v = Vec::new();
    let want_w = |w| a.workload.is_empty() || a.workload.contains(&w);
    for (store, mode) in CONFIGS {
        let want_s = a.store.is_empty() || a.store.contains(&store);
        // The in-memory reference stays in whatever mode is asked for.
        let want_m = a.mode.is_empty() || a.mode.contains(&mode) || store == StoreKind::Mem;
        if !want_s || !want_m {
            continue;
        }
        let mut add = |workload, producers, window, payload| {
            v.push(Case {
                workload,
                store,
                mode,
                producers,
                window,
                payload,
            })
        };
        if want_w(Workload::P2p) {
            // 1 publisher (no grouping possible), 10 and 100 (issue 20's target), and 100 with
            // 100 publishes in flight each (what a group commit can gather at most).
            for (p, w) in [(1, 1), (10, 1), (100, 1), (100, 100)] {
                for payload in [64, 1024] {
                    add(Workload::P2p, p, w, payload);
                }
            }
        }
        if want_w(Workload::Fanout) {
            add(Workload::Fanout, 10, 1, 1024);
        }
        if want_w(Workload::Retained) {
            add(Workload::Retained, 10, 1, 64);
        }
    }
    v
}

pub fn workload_label(w: Workload) -> &'static str {
    match w {
        Workload::P2p => "p2p",
        Workload::Fanout => "fanout",
        Workload::Retained => "retained",
    }
}

/// Every syscall that can make data durable. A store might use any of them (redb and fjall use
/// fsync and fdatasync), so all are counted.
const SYNC_CALLS: [&str; 6] = [
    "fsync",
    "fdatasync",
    "sync_file_range",
    "msync",
    "syncfs",
    "sync",
];

/// Counts per syscall from `perf stat -x,` output (`value,unit,event,...`).
fn parse_perf(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split(',').collect();
        let (Some(v), Some(ev)) = (t.first(), t.get(2)) else {
            continue;
        };
        let Some(name) = ev.strip_prefix("syscalls:sys_enter_") else {
            continue;
        };
        if let Ok(n) = v.trim().parse::<u64>() {
            m.insert(name.to_string(), n);
        }
    }
    m
}

/// Counts per syscall from `strace -c` output: rows of `% time, seconds, usecs/call, calls,
/// [errors,] syscall`, the errors column being empty when there were none.
fn parse_strace(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(calls)) = (t.last(), t.get(3)) else {
            continue;
        };
        if SYNC_CALLS.contains(name)
            && let Ok(n) = calls.parse::<u64>()
        {
            m.insert(name.to_string(), n);
        }
    }
    m
}

/// The command that runs `exe` under `tracer`, writing its counts to `trace_out`.
fn traced(tracer: Tracer, exe: &Path, trace_out: &Path) -> Command {
    match tracer {
        Tracer::None => Command::new(exe),
        Tracer::Perf => {
            let events: Vec<String> = SYNC_CALLS
                .iter()
                .map(|c| format!("syscalls:sys_enter_{c}"))
                .collect();
            let mut c = Command::new("perf");
            // perf stat follows every thread and child of the command (inherit is the default).
            c.args(["stat", "-x,", "-e", &events.join(","), "-o"])
                .arg(trace_out)
                .arg(exe);
            c
        }
        Tracer::Strace => {
            let mut c = Command::new("strace");
            c.args(["-f", "-c", "-e"])
                .arg(format!("trace={}", SYNC_CALLS.join(",")))
                .arg("-o")
                .arg(trace_out)
                .arg(exe);
            c
        }
    }
}

/// Writes back every dirty page of the machine, so that a device counter read next covers only
/// what happens after it.
fn sync_all() -> Result<()> {
    let s = Command::new("sync").status().context("running sync")?;
    if !s.success() {
        return Err(anyhow!("sync failed: {s}"));
    }
    Ok(())
}

fn run_case(a: &SuiteArgs, exe: &Path, c: &Case, rep: u32) -> Result<Value> {
    let dir = a.dir.join("case");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let trace_out = a.dir.join("trace.txt");
    let mut cmd = traced(a.tracer, exe, &trace_out);
    cmd.args([
        "run",
        "--store",
        c.store.label(),
        "--mode",
        mode_label(c.mode),
        "--batch-ms",
        &a.batch_ms.to_string(),
        "--workload",
        workload_label(c.workload),
        "--producers",
        &c.producers.to_string(),
        "--window",
        &c.window.to_string(),
        "--payload",
        &c.payload.to_string(),
        "--duration",
        &a.duration.to_string(),
        "--dir",
    ])
    .arg(&dir);
    sync_all()?;
    let dev0 = device_sectors_written(&a.dir);
    let o = cmd.output().context("running case")?;
    if !o.status.success() {
        return Err(anyhow!(
            "case failed: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    // After a clean close, what is still dirty in the page cache is the store's too.
    sync_all()?;
    let dev1 = device_sectors_written(&a.dir);
    let mut v: Value = serde_json::from_slice(&o.stdout).context("parsing the case's output")?;
    if let (Some(s0), Some(s1)) = (dev0, dev1) {
        v["device_write_bytes"] = Value::from(s1.saturating_sub(s0) * 512);
    }
    if a.tracer != Tracer::None {
        let s = std::fs::read_to_string(&trace_out)
            .with_context(|| format!("reading {}", trace_out.display()))?;
        let calls = match a.tracer {
            Tracer::Perf => parse_perf(&s),
            _ => parse_strace(&s),
        };
        v["fsyncs"] = Value::from(calls.values().sum::<u64>());
        v["fsync_calls"] = serde_json::to_value(&calls)?;
        v["tracer"] = Value::from(format!("{:?}", a.tracer).to_lowercase());
    }
    v["rep"] = Value::from(rep);
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(v)
}

pub fn suite(a: &SuiteArgs) -> Result<()> {
    let exe = std::env::current_exe().context("locating own executable")?;
    let cases = matrix(a);
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.out)
        .with_context(|| format!("opening {}", a.out.display()))?;
    let total = cases.len() as u32 * a.reps;
    let mut n = 0;
    // Repetitions are the outer loop, so that a slow drift of the machine spreads over every
    // case instead of biasing the ones run last.
    for rep in 0..a.reps {
        for c in &cases {
            n += 1;
            let v = run_case(a, &exe, c, rep)?;
            writeln!(out, "{}", serde_json::to_string(&v)?)?;
            out.flush()?;
            eprintln!(
                "[{n}/{total}] {} {} {} P={} W={} {} B: {:.0}/s fsyncs={}",
                workload_label(c.workload),
                c.store.label(),
                mode_label(c.mode),
                c.producers,
                c.window,
                c.payload,
                v["acked_per_s"].as_f64().unwrap_or(f64::NAN),
                v["fsyncs"]
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perf_and_strace_counts() {
        let perf = "# started on Mon\n\n12,,syscalls:sys_enter_fsync,1151,100.00,,\n\
                    3,,syscalls:sys_enter_fdatasync,1151,100.00,,\n";
        let m = parse_perf(perf);
        assert_eq!(m["fsync"], 12);
        assert_eq!(m["fdatasync"], 3);
        let strace = "% time     seconds  usecs/call     calls    errors syscall\n\
                      ------ ----------- ----------- --------- --------- ----------------\n \
                      92.31    0.000048          48        7           fsync\n  \
                      7.69    0.000004           4         1         1 fdatasync\n\
                      ------ ----------- ----------- --------- --------- ----------------\n\
                      100.00    0.000052          26         8           total\n";
        let m = parse_strace(strace);
        assert_eq!(m["fsync"], 7);
        assert_eq!(m["fdatasync"], 1);
        assert!(!m.contains_key("total"));
    }
}
