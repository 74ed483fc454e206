//! The scenarios, one module each, and what they have in common: the result's frame, the run id
//! that keeps topics and client ids apart, and printing/writing the summary.

pub mod connections;
mod mqtt;
pub mod pubsub;
pub mod stresser;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use self::pubsub::topology::Kind;
use crate::cli::{Command, Output};
use crate::measure::machine::Machine;
use crate::report::result::{BrokerInfo, Params, RunResult, SCHEMA};
use crate::report::table;

pub async fn run(command: Command) -> anyhow::Result<()> {
    let (result, output) = match command {
        Command::P2p(args) => (pubsub::run(Kind::P2p, args.clone()).await?, args.output),
        Command::Fanout(args) => (pubsub::run(Kind::Fanout, args.clone()).await?, args.output),
        Command::Fanin(args) => (pubsub::run(Kind::Fanin, args.clone()).await?, args.output),
        Command::Shared(args) => (pubsub::run(Kind::Shared, args.clone()).await?, args.output),
        Command::Connections(args) => match connections::run(args.clone()).await? {
            Some(result) => (result, args.output),
            // A worker process reports to its parent, not to the user.
            None => return Ok(()),
        },
        Command::Stresser(args) => (stresser::run(args.clone()).await?, args.output),
        Command::Report(_) => bail!("report is not a scenario"),
    };
    print!("{}", table::render(&result));
    if let Some(path) = &output.json {
        let json = serde_json::to_string_pretty(&result)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The frame of a result; the scenario fills in its sections.
fn base_result(scenario: &str, output: &Output, params: Params) -> RunResult {
    RunResult {
        schema: SCHEMA,
        scenario: scenario.into(),
        broker: BrokerInfo {
            label: output.label.clone(),
            version: output.broker_version.clone(),
            command: output.broker_cmd.clone(),
            changes: output.broker_changes.clone(),
            pid: output.broker_pids.first().copied(),
            pids: if output.broker_pids.len() > 1 {
                output.broker_pids.clone()
            } else {
                Vec::new()
            },
            nodes: (output.nodes > 1).then_some(output.nodes),
            variant: output.variant.clone(),
        },
        params,
        started_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: Machine::current(),
        command: std::env::args().collect(),
        throughput: None,
        latency: None,
        delivery: None,
        connect: None,
        stresser: None,
        broker_usage: None,
        broker_processes: Vec::new(),
        bench_cpu_s: 0.0,
        errors: Vec::new(),
    }
}

/// A short id unique to this run, for topics and client ids.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:x}", std::process::id(), nanos >> 8)
}
