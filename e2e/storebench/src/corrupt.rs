//! Corruption: fill a store, close it cleanly, then damage a copy of its files in one way at a
//! time (flipped bytes, truncation) and see what opening and reading it does: refuse (an error
//! naming the damage), read on with data silently wrong or missing, panic, or hang.
//!
//! Every message was acknowledged and synced before the damage, so any message missing on a
//! store that opened without complaint was lost silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use serde::Serialize;

use crate::crash::{ChildOutcome, SESSIONS, VerifyResult, self_exe, verify_child};
use crate::model::{self, Rng};
use crate::store::{self, StoreKind};

#[derive(Args, Debug, Clone)]
pub struct CorruptArgs {
    #[arg(long, value_enum)]
    pub store: StoreKind,
    /// Work directory: holds the pristine store and one damaged copy at a time.
    #[arg(long)]
    pub dir: PathBuf,
    /// Messages in the store before its log is flushed into the main structure.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Messages written after that flush (so in fjall's journal only), then a clean close.
    #[arg(long, default_value_t = 1000)]
    pub tail: u64,
    /// Random single-byte flips per kind of file.
    #[arg(long, default_value_t = 6)]
    pub flips: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Serialize)]
struct CorruptResult {
    kind: &'static str,
    store: &'static str,
    check_on_open: bool,
    trial: String,
    file: String,
    offset: u64,
    file_len: u64,
    status: String,
    outcome: String,
    result: Option<VerifyResult>,
    stderr: String,
}

#[derive(Clone)]
struct StoreFile {
    path: PathBuf,
    len: u64,
    modified: SystemTime,
}

enum Damage {
    /// Invert every bit of the byte at this offset.
    Flip(u64),
    /// Cut the file to this length.
    Truncate(u64),
}

struct Trial {
    name: String,
    /// Index into the group's files.
    file: usize,
    damage: Damage,
}

pub fn corrupt(a: &CorruptArgs) -> Result<()> {
    if a.store == StoreKind::Mem {
        return Err(anyhow!("mem has no files to damage"));
    }
    let pristine = a.dir.join(format!("pristine-{}", a.store.label()));
    fill_pristine(a, &pristine)?;
    let total = a.messages + a.tail;
    let mut all = Vec::new();
    list_files(&pristine, &mut all)?;
    all.sort_by(|x, y| x.path.cmp(&y.path));
    for f in &all {
        let rel = f.path.strip_prefix(&pristine).unwrap_or(&f.path);
        eprintln!("{} {}", rel.display(), f.len);
    }
    // Newest last, so that "the last file" of a group is the one written most recently.
    all.sort_by_key(|f| f.modified);
    let mut rng = Rng::new(a.seed);
    // Without the check, redb trusts its pages; with it, every checksum is verified on open.
    let checks: &[bool] = match a.store {
        StoreKind::Redb | StoreKind::RedbQr => &[false, true],
        _ => &[false],
    };
    for (group, files) in groups(a.store, &all) {
        if files.is_empty() {
            eprintln!("no {group} files found");
            continue;
        }
        for t in trials(a, group, &files, &mut rng)? {
            for &check in checks {
                let r = run_trial(a, &pristine, &files[t.file], &t, check, total)?;
                println!("{}", serde_json::to_string(&r)?);
            }
        }
    }
    std::fs::remove_dir_all(&pristine)?;
    Ok(())
}

/// A cleanly closed store: `messages` committed in batches of 100 and moved out of the log,
/// then `tail` more that stay in the log.
fn fill_pristine(a: &CorruptArgs, pristine: &Path) -> Result<()> {
    if pristine.exists() {
        std::fs::remove_dir_all(pristine)?;
    }
    let st = Command::new(self_exe()?)
        .args(["fill", "--store", a.store.label(), "--dir"])
        .arg(pristine)
        .args([
            "--messages",
            &a.messages.to_string(),
            "--batch",
            "100",
            "--flush",
            "--tail",
            &a.tail.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running fill")?;
    if !st.success() {
        return Err(anyhow!("fill failed: {st}"));
    }
    Ok(())
}

fn list_files(dir: &Path, out: &mut Vec<StoreFile>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_dir() {
            list_files(&e.path(), out)?;
        } else {
            let m = e.metadata()?;
            out.push(StoreFile {
                path: e.path(),
                len: m.len(),
                modified: m.modified()?,
            });
        }
    }
    Ok(())
}

/// The files worth damaging, by kind.
fn groups(kind: StoreKind, all: &[StoreFile]) -> Vec<(&'static str, Vec<StoreFile>)> {
    let pick = |f: &dyn Fn(&StoreFile) -> bool| all.iter().filter(|x| f(x)).cloned().collect();
    match kind {
        StoreKind::Redb | StoreKind::RedbQr => {
            vec![("db", pick(&|x| x.path.ends_with(store::REDB_FILE)))]
        }
        StoreKind::Fjall => {
            let name = |x: &StoreFile| {
                x.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let in_dir = |x: &StoreFile, d: &str| x.path.to_string_lossy().contains(d);
            // The live manifest of each keyspace is its highest-numbered `v<N>`; older ones are
            // never read again, so damaging them would test nothing.
            let live_version = |x: &StoreFile| {
                let Some(n) = name(x)
                    .strip_prefix('v')
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    return false;
                };
                !all.iter().any(|y| {
                    y.path.parent() == x.path.parent()
                        && name(y)
                            .strip_prefix('v')
                            .and_then(|m| m.parse::<u64>().ok())
                            .is_some_and(|m| m > n)
                })
            };
            vec![
                ("journal", pick(&|x| name(x).ends_with(".jnl") && x.len > 0)),
                ("table", pick(&|x| in_dir(x, "tables") && x.len > 4096)),
                (
                    "manifest",
                    pick(&|x| live_version(x) || name(x) == "current"),
                ),
            ]
        }
        StoreKind::Mem => Vec::new(),
    }
}

/// Length up to the last non-zero byte: files may be preallocated (fjall's journal is 64 MiB of
/// which little is used), and damage should land in what was written.
fn written_extent(path: &Path) -> Result<u64> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(b.iter().rposition(|x| *x != 0).map_or(0, |i| i as u64 + 1))
}

fn trials(a: &CorruptArgs, group: &str, files: &[StoreFile], rng: &mut Rng) -> Result<Vec<Trial>> {
    let mut v = Vec::new();
    let mut t = |name: String, file: usize, damage: Damage| v.push(Trial { name, file, damage });
    let extents = files
        .iter()
        .map(|f| written_extent(&f.path))
        .collect::<Result<Vec<_>>>()?;
    for i in 0..a.flips {
        let f = rng.below(files.len() as u64) as usize;
        let off = rng.below(extents[f]);
        t(
            format!("{group}: flip 1 random byte #{i}"),
            f,
            Damage::Flip(off),
        );
    }
    // A byte of a live message's payload: stored as is in redb and in fjall's journal; fjall's
    // tables compress blocks, where the needle is found only if a block stayed uncompressed.
    let live = if group == "journal" {
        a.messages + a.tail / 2
    } else {
        a.messages / 2
    };
    let enc = model::encode_msg(live, &model::topic(live % SESSIONS), 64);
    let needle = &enc[enc.len() - 32..];
    for (i, f) in files.iter().enumerate() {
        let b = std::fs::read(&f.path)?;
        let Some(pos) = b.windows(needle.len()).position(|w| w == needle) else {
            continue;
        };
        t(
            format!("{group}: flip 1 byte of a live message's payload"),
            i,
            Damage::Flip(pos as u64 + 8),
        );
        if group == "journal" {
            // fjall's batch start marker: tag 1, item count (u32 LE), seqno. `fill_pristine`
            // commits 100 messages, so 200 items, per batch. A bad tag is not a checksum
            // mismatch: the journal reader takes it for the end of the log.
            let start = [1u8, 200, 0, 0, 0];
            if let Some(s) = b[..pos].windows(start.len()).rposition(|w| w == start) {
                t(
                    "journal: flip the tag of the batch start before a live message".into(),
                    i,
                    Damage::Flip(s as u64),
                );
            }
        }
        break;
    }
    let last = files.len() - 1;
    let (len, ext) = (files[last].len, extents[last]);
    t(
        format!("{group}: file's last 100 B cut"),
        last,
        Damage::Truncate(len.saturating_sub(100)),
    );
    if ext < len {
        t(
            format!("{group}: written data's last 100 B cut (torn append)"),
            last,
            Damage::Truncate(ext.saturating_sub(100)),
        );
    }
    t(
        format!("{group}: truncated to half"),
        last,
        Damage::Truncate(len / 2),
    );
    t(format!("{group}: flip byte 0"), last, Damage::Flip(0));
    if group == "db" {
        // redb's header: the god byte (which commit slot is primary, recovery needed), then the
        // root page numbers in the two commit slots at 64 and 192 (+8 within each slot).
        t("db: flip the god byte".into(), 0, Damage::Flip(9));
        t(
            "db: flip commit slot 0's root page".into(),
            0,
            Damage::Flip(72),
        );
        t(
            "db: flip commit slot 1's root page".into(),
            0,
            Damage::Flip(200),
        );
    }
    Ok(v)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let t = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &t)?;
        } else {
            std::fs::copy(e.path(), &t)?;
        }
    }
    Ok(())
}

fn damage(path: &Path, d: &Damage) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    match *d {
        Damage::Flip(off) => {
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, off)?;
            b[0] ^= 0xFF;
            f.write_all_at(&b, off)?;
        }
        Damage::Truncate(len) => f.set_len(len)?,
    }
    f.sync_all()?;
    Ok(())
}

/// Damages a fresh copy of the pristine store and verifies it in a child.
fn run_trial(
    a: &CorruptArgs,
    pristine: &Path,
    file: &StoreFile,
    t: &Trial,
    check: bool,
    total: u64,
) -> Result<CorruptResult> {
    let tdir = a.dir.join(format!("trial-{}", a.store.label()));
    if tdir.exists() {
        std::fs::remove_dir_all(&tdir)?;
    }
    copy_dir(pristine, &tdir)?;
    let rel = file.path.strip_prefix(pristine)?;
    damage(&tdir.join(rel), &t.damage)?;
    let o = verify_child(
        a.store,
        &tdir,
        total,
        total,
        check,
        Duration::from_secs(120),
    )?;
    std::fs::remove_dir_all(&tdir)?;
    Ok(CorruptResult {
        kind: "corrupt",
        store: a.store.label(),
        check_on_open: check,
        trial: t.name.clone(),
        file: rel.display().to_string(),
        offset: match t.damage {
            Damage::Flip(o) | Damage::Truncate(o) => o,
        },
        file_len: file.len,
        status: o.status.clone(),
        outcome: classify(&o),
        result: o.result,
        stderr: o.stderr_tail,
    })
}

/// One phrase per outcome, worst first.
fn classify(o: &ChildOutcome) -> String {
    match (&o.result, o.status.as_str()) {
        (_, "panic") => format!("PANIC: {}", o.stderr_tail),
        (_, "timeout") => "HANG (killed after timeout)".into(),
        (Some(r), _) => {
            if r.bad_content > 0 || r.bad_entries > 0 {
                format!(
                    "SILENTLY WRONG: {} bad messages, {} bad entries, {} missing",
                    r.bad_content, r.bad_entries, r.missing_acked
                )
            } else if let (Some(stage), Some(e)) = (&r.error_stage, &r.error) {
                format!("refused at {stage}: {e}")
            } else if r.missing_acked > 0 || r.half_committed > 0 {
                format!(
                    "SILENT LOSS: opened without error, {} messages missing, {} half-committed",
                    r.missing_acked, r.half_committed
                )
            } else {
                "no effect: all entries intact".into()
            }
        }
        (None, s) => format!("{s}: {}", o.stderr_tail),
    }
}
