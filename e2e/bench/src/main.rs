//! `tern-bench`: the load generator that measures Tern and its peer brokers side by side.
//!
//! Each subcommand runs one scenario against one broker (throughput, latency, losses, connections)
//! and prints a summary, or renders the collected JSON results as a Markdown page with SVG charts.
//! `scripts/bench.sh` drives it over every broker and scenario, `scripts/bench-cluster.sh` over
//! clusters; nothing in the test suite runs it.

mod cli;
mod measure;
mod payload;
mod report;
mod scenarios;

use anyhow::Context;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Report(args) => report::run(&args),
        command => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(scenarios::run(command))
        }
    }
}
