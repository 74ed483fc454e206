//! Reading a process's CPU time and memory from /proc (Linux only).
//!
//! CPU time is `utime + stime` from `/proc/PID/stat`, in clock ticks (`getconf CLK_TCK`); memory is
//! `VmRSS` (now) and `VmHWM` (peak) from `/proc/PID/status`, in KiB. The parsers take text so
//! they can be tested without a process.

use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// CPU ticks spent by a process in user and kernel mode, and by its waited-for children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    pub user: u64,
    pub system: u64,
    pub children: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> anyhow::Result<CpuTicks> {
    let close = text.rfind(')').context("no ')' after the command name")?;
    // After the name: field 3 (state) is index 0, so utime (field 14) is 11, stime 12, and the
    // children's cutime and cstime 13 and 14.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |index: usize, name: &str| -> anyhow::Result<u64> {
        fields
            .get(index)
            .with_context(|| format!("no {name} field"))?
            .parse()
            .with_context(|| format!("{name} is not a number"))
    };
    Ok(CpuTicks {
        user: field(11, "utime")?,
        system: field(12, "stime")?,
        children: field(13, "cutime")? + field(14, "cstime")?,
    })
}

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

/// Parses `VmRSS` and `VmHWM` from `/proc/PID/status`.
pub fn parse_status(text: &str) -> anyhow::Result<Memory> {
    let kib = |key: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .with_context(|| format!("no {key} line"))?;
        let value = line
            .trim_start_matches(':')
            .split_whitespace()
            .next()
            .unwrap_or_default();
        value
            .parse()
            .with_context(|| format!("{key} is not a number of kB: {line:?}"))
    };
    Ok(Memory {
        rss_kib: kib("VmRSS")?,
        peak_kib: kib("VmHWM")?,
    })
}

/// The soft limit on open files from `/proc/self/limits` (`None` means unlimited).
pub fn parse_open_files_limit(text: &str) -> anyhow::Result<Option<u64>> {
    let line = text
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .context("no 'Max open files' line")?;
    let soft = line["Max open files".len()..]
        .split_whitespace()
        .next()
        .unwrap_or_default();
    if soft == "unlimited" {
        return Ok(None);
    }
    Ok(Some(soft.parse().with_context(|| {
        format!("bad open files limit {soft:?}")
    })?))
}

pub fn open_files_limit() -> anyhow::Result<Option<u64>> {
    let text = std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    parse_open_files_limit(&text)
}

/// Clock ticks per second, as `getconf CLK_TCK` reports it (100 on every Linux we know of, which
/// is also the fallback).
fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub cpu_s: f64,
    /// CPU seconds of children that have exited and been waited for (worker processes).
    pub children_cpu_s: f64,
    pub memory: Memory,
}

/// Reads one process (the broker, or this process) again and again.
#[derive(Debug, Clone)]
pub struct ProcessProbe {
    pid: String,
    ticks_per_second: f64,
}

impl ProcessProbe {
    pub fn new(pid: u32) -> anyhow::Result<Self> {
        let probe = ProcessProbe {
            pid: pid.to_string(),
            ticks_per_second: clock_ticks_per_second() as f64,
        };
        probe
            .sample()
            .with_context(|| format!("reading /proc/{pid}: is the broker running?"))?;
        Ok(probe)
    }

    /// This process, for the load generator's own CPU time.
    pub fn own() -> Self {
        ProcessProbe {
            pid: "self".into(),
            ticks_per_second: clock_ticks_per_second() as f64,
        }
    }

    pub fn sample(&self) -> anyhow::Result<Sample> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let ticks = parse_stat(&stat)?;
        let memory = parse_status(&status)?;
        if memory.peak_kib == 0 && memory.rss_kib == 0 {
            bail!("process {} has no memory figures (a zombie?)", self.pid);
        }
        Ok(Sample {
            cpu_s: (ticks.user + ticks.system) as f64 / self.ticks_per_second,
            children_cpu_s: ticks.children as f64 / self.ticks_per_second,
            memory,
        })
    }
}

/// What the broker used over a measured window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU seconds (user + system) spent in the window.
    pub cpu_s: f64,
    /// `cpu_s` divided by the window's length: 1.0 is one core busy.
    pub cpu_cores: f64,
    /// Resident memory when the window started and ended, in KiB.
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    /// The process's peak resident memory since it started (VmHWM), in KiB.
    pub rss_peak_kib: u64,
}

/// One process's share of a broker that runs as several (a cluster's nodes).
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    pub pid: u32,
    #[serde(flatten)]
    pub usage: Usage,
}

/// The processes of one broker (one, or a cluster's nodes), read together.
#[derive(Debug, Clone)]
pub struct GroupProbe {
    probes: Vec<(u32, ProcessProbe)>,
}

impl GroupProbe {
    /// `None` when there is nothing to read.
    pub fn new(pids: &[u32]) -> anyhow::Result<Option<Self>> {
        if pids.is_empty() {
            return Ok(None);
        }
        let probes = pids
            .iter()
            .map(|&pid| Ok((pid, ProcessProbe::new(pid)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(GroupProbe { probes }))
    }

    pub fn sample(&self) -> anyhow::Result<Vec<Sample>> {
        self.probes
            .iter()
            .map(|(pid, probe)| {
                probe
                    .sample()
                    .with_context(|| format!("reading /proc/{pid}"))
            })
            .collect()
    }

    /// Each process's usage between two samplings, in PID order as given.
    pub fn between(&self, start: &[Sample], end: &[Sample], window_s: f64) -> Vec<ProcessUsage> {
        self.probes
            .iter()
            .zip(start.iter().zip(end))
            .map(|((pid, _), (s, e))| ProcessUsage {
                pid: *pid,
                usage: Usage::between(s, e, window_s),
            })
            .collect()
    }
}

impl Usage {
    /// The usage of several processes together: CPU and memory added up. The peak is the sum
    /// of each process's own peak, which they need not have reached at the same time.
    pub fn sum(parts: &[ProcessUsage]) -> Usage {
        parts.iter().fold(Usage::default(), |total, part| {
            let u = &part.usage;
            Usage {
                cpu_s: total.cpu_s + u.cpu_s,
                cpu_cores: total.cpu_cores + u.cpu_cores,
                rss_start_kib: total.rss_start_kib + u.rss_start_kib,
                rss_end_kib: total.rss_end_kib + u.rss_end_kib,
                rss_peak_kib: total.rss_peak_kib + u.rss_peak_kib,
            }
        })
    }

    pub fn between(start: &Sample, end: &Sample, window_s: f64) -> Self {
        let cpu_s = (end.cpu_s - start.cpu_s).max(0.0);
        Usage {
            cpu_s,
            cpu_cores: if window_s > 0.0 {
                cpu_s / window_s
            } else {
                0.0
            },
            rss_start_kib: start.memory.rss_kib,
            rss_end_kib: end.memory.rss_kib,
            rss_peak_kib: end.memory.peak_kib,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (tern (broker) x) S 1 4242 4242 0 -1 4194560 2051 0 0 0 \
                        1234 567 0 0 20 0 9 0 12345 123456789 4321 18446744073709551615 \
                        1 1 0 0 0 0 0 4096 17987 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        assert_eq!(
            parse_stat(STAT).unwrap(),
            CpuTicks {
                user: 1234,
                system: 567,
                children: 0,
            }
        );
    }

    #[test]
    fn truncated_stat_is_an_error() {
        assert!(parse_stat("1 (x) S 1 2 3").is_err());
        assert!(parse_stat("garbage").is_err());
    }

    #[test]
    fn status_gives_current_and_peak_rss() {
        let text =
            "Name:\ttern-broker\nVmPeak:\t  900000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(
            parse_status(text).unwrap(),
            Memory {
                rss_kib: 10240,
                peak_kib: 20480
            }
        );
        assert!(parse_status("Name:\tx\n").is_err());
    }

    #[test]
    fn open_files_limit_reads_the_soft_column() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             95743                95743                processes \n\
                    Max open files            20000                1048576              files     \n";
        assert_eq!(parse_open_files_limit(text).unwrap(), Some(20000));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unlimited).unwrap(), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = ProcessProbe::own().sample().unwrap();
        assert!(sample.memory.rss_kib > 0);
        assert!(sample.memory.peak_kib >= sample.memory.rss_kib);
    }

    #[test]
    fn usage_is_the_difference_over_the_window() {
        let at = |cpu_s, rss_kib, peak_kib| Sample {
            cpu_s,
            children_cpu_s: 0.0,
            memory: Memory { rss_kib, peak_kib },
        };
        let usage = Usage::between(&at(1.0, 100, 100), &at(3.0, 150, 200), 4.0);
        assert_eq!(usage.cpu_s, 2.0);
        assert_eq!(usage.cpu_cores, 0.5);
        assert_eq!(
            (usage.rss_start_kib, usage.rss_end_kib, usage.rss_peak_kib),
            (100, 150, 200)
        );
    }

    #[test]
    fn a_group_sums_its_processes() {
        let part = |pid, cpu_s, rss| ProcessUsage {
            pid,
            usage: Usage {
                cpu_s,
                cpu_cores: cpu_s / 2.0,
                rss_start_kib: rss,
                rss_end_kib: rss,
                rss_peak_kib: rss * 2,
            },
        };
        let total = Usage::sum(&[part(1, 1.0, 100), part(2, 0.5, 50)]);
        assert_eq!((total.cpu_s, total.cpu_cores), (1.5, 0.75));
        assert_eq!(
            (total.rss_start_kib, total.rss_end_kib, total.rss_peak_kib),
            (150, 150, 300)
        );
        assert_eq!(Usage::sum(&[]), Usage::default());
    }

    #[test]
    fn a_group_of_this_process_twice_reads_both() {
        let own = std::process::id();
        let group = GroupProbe::new(&[own, own]).unwrap().unwrap();
        let start = group.sample().unwrap();
        let parts = group.between(&start, &group.sample().unwrap(), 1.0);
        assert_eq!(parts.iter().map(|p| p.pid).collect::<Vec<_>>(), [own, own]);
        assert!(GroupProbe::new(&[]).unwrap().is_none());
    }
}
