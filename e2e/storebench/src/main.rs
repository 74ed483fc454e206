//! tern-storebench: measures redb and fjall on the broker's durable workload (issue 20).
//! See docs/storage.md for the figures and the commands that produced them.

mod bench;
mod corrupt;
mod crash;
mod model;
mod report;
mod store;
mod suite;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tern-storebench", about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One throughput case in this process; prints one JSON line.
    Run(bench::RunArgs),
    /// The matrix of throughput cases, each in a child under a syscall counter (`perf stat`, or
    /// `strace -c`); appends JSON lines.
    Suite(suite::SuiteArgs),
    /// Queue messages in batches, printing what is committed; used by `crash` and `corrupt`.
    Fill(crash::FillArgs),
    /// Open (timed) and scan a store, checking every message; prints one JSON line.
    Verify(crash::VerifyArgs),
    /// Fill a store in a child, SIGKILL it mid-stream past N messages, reopen and verify.
    Crash(crash::CrashArgs),
    /// Damage a cleanly closed store's files in several ways and report what opening it does.
    Corrupt(corrupt::CorruptArgs),
    /// Markdown tables (medians and ranges over repetitions) from the JSON lines of the others.
    Report { files: Vec<PathBuf> },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run(a) => println!("{}", serde_json::to_string(&bench::run(&a)?)?),
        Cmd::Suite(a) => suite::suite(&a)?,
        Cmd::Fill(a) => crash::fill(&a)?,
        Cmd::Verify(a) => {
            let r = crash::verify(&a);
            println!("{}", serde_json::to_string(&r)?);
            if r.error.is_some() {
                std::process::exit(2);
            }
        }
        Cmd::Crash(a) => crash::crash(&a)?,
        Cmd::Corrupt(a) => corrupt::corrupt(&a)?,
        Cmd::Report { files } => report::report(&files)?,
    }
    Ok(())
}
