//! Opening and holding idle connections in one process, and the little line protocol a worker
//! process speaks with its parent: one JSON [`OpenReport`] line once its connections are up, then
//! (after the parent writes any line) one JSON [`HoldReport`] line, then exit.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::raw::{CONNACK_LEN, check_connack, connect_packet};
use crate::measure::procfs::open_files_limit;

/// File descriptors a process needs besides its connections.
const SPARE_FDS: u64 = 64;

/// How one process's connections should be opened.
#[derive(Debug, Clone)]
pub struct OpenPlan {
    pub broker: SocketAddr,
    /// Global connection numbers this process opens.
    pub indices: Vec<usize>,
    /// Loopback source addresses 127.0.0.1 ..= 127.0.0.N; 1 means let the kernel choose.
    pub sources: u8,
    pub keep_alive_s: u16,
    pub concurrency: usize,
    pub timeout: Duration,
    pub run_id: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenReport {
    pub connected: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// Microseconds from starting each connection to its CONNACK.
    pub latencies_us: Vec<u64>,
    /// Wall clock (shared by all processes) of the first attempt and the last CONNACK.
    pub started_unix_ns: u128,
    pub finished_unix_ns: u128,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldReport {
    pub still_open: u64,
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Source address of connection `index`.
pub fn source_for(index: usize, sources: u8) -> Option<Ipv4Addr> {
    (sources > 1).then(|| Ipv4Addr::new(127, 0, 0, 1 + (index % sources as usize) as u8))
}

/// Refuses plans this process's open-file limit cannot hold.
pub fn check_fd_limit(connections: usize) -> anyhow::Result<()> {
    if let Some(limit) = open_files_limit()? {
        let needed = connections as u64 + SPARE_FDS;
        ensure!(
            needed <= limit,
            "{connections} connections need about {needed} file descriptors, the limit is {limit}: \
             raise it (ulimit -n) or spread the load with --workers"
        );
    }
    Ok(())
}

async fn open_one(plan: &OpenPlan, index: usize) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source_for(index, plan.sources) {
        socket
            .bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))
            .with_context(|| format!("binding {source}"))?;
    }
    let mut stream = socket.connect(plan.broker).await?;
    stream.set_nodelay(true)?;
    let id = format!("tbc-{}-{index}", plan.run_id);
    stream
        .write_all(&connect_packet(&id, plan.keep_alive_s)?)
        .await?;
    let mut connack = [0u8; CONNACK_LEN];
    stream
        .read_exact(&mut connack)
        .await
        .context("reading CONNACK")?;
    check_connack(&connack)?;
    Ok(stream)
}

/// Opens every connection of the plan; failures are counted, not fatal.
pub async fn open(plan: OpenPlan) -> (Vec<TcpStream>, OpenReport) {
    let plan = Arc::new(plan);
    let permits = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let mut report = OpenReport {
        started_unix_ns: unix_ns(),
        ..OpenReport::default()
    };
    let mut tasks = JoinSet::new();
    for &index in &plan.indices {
        let (plan, permits) = (plan.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let start = Instant::now();
            let stream = tokio::time::timeout(plan.timeout, open_one(&plan, index))
                .await
                .context("timed out")??;
            anyhow::Ok((stream, start.elapsed()))
        });
    }
    let mut streams = Vec::with_capacity(plan.indices.len());
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok((stream, took)) => {
                streams.push(stream);
                report.connected += 1;
                report
                    .latencies_us
                    .push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
            }
            Err(e) => {
                report.failed += 1;
                report.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    report.finished_unix_ns = unix_ns();
    (streams, report)
}

/// Connections the broker has not closed: a read would block rather than return end of file.
pub fn still_open(streams: &[TcpStream]) -> u64 {
    let mut buf = [0u8; 64];
    streams
        .iter()
        .filter(|s| matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
        .count() as u64
}

/// The worker side of the protocol: open, report, wait for the parent, report again.
pub async fn serve(plan: OpenPlan) -> anyhow::Result<()> {
    check_fd_limit(plan.indices.len())?;
    let (streams, report) = open(plan).await;
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("{}\n", serde_json::to_string(&report)?).as_bytes())
        .await?;
    stdout.flush().await?;
    let mut line = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    let hold = HoldReport {
        still_open: still_open(&streams),
    };
    stdout
        .write_all(format!("{}\n", serde_json::to_string(&hold)?).as_bytes())
        .await?;
    stdout.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_rotate_over_loopback_addresses() {
        assert_eq!(source_for(0, 1), None);
        assert_eq!(source_for(0, 3), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(source_for(4, 3), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_for(5, 3), Some(Ipv4Addr::new(127, 0, 0, 3)));
    }

    #[test]
    fn reports_survive_the_pipe() {
        let report = OpenReport {
            connected: 3,
            latencies_us: vec![1, 2, 3],
            ..OpenReport::default()
        };
        let line = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<OpenReport>(&line).unwrap(), report);
    }
}
