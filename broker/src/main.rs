//! `tern-broker`: runs the broker from a YAML configuration file until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tern_broker::{Config, Server};

mod drain;
mod logging;
mod passwd;

/// jemalloc, with its background thread, returns freed pages to the system about ten seconds after a
/// burst; glibc kept what 2,000,000 subscriptions or a thousand argon2 checks had taken (see
/// docs/performance.md, "Memory given back after a burst").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Tern: a Kubernetes-native MQTT 3.1 / 3.1.1 / 5.0 broker.
#[derive(Debug, Parser)]
#[command(name = "tern-broker", version, about)]
struct Args {
    /// YAML configuration file. Without one the broker serves anonymous clients on 127.0.0.1:1883.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration file, and load every file it names (TLS, users, ACL, admin token)
    /// as a start would, then exit: 0 if the broker would start, 2 if the configuration is invalid,
    /// 1 if a file it names cannot be loaded. Ports are not bound.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Add a user to a users file, change a user's password, or remove a user. New hashes are
    /// argon2id; the file is created if missing and replaced atomically.
    Passwd {
        /// The users file (`username:hash` lines; Mosquitto password files work as they are).
        file: PathBuf,
        username: String,
        /// Remove the user instead.
        #[arg(long, short = 'D')]
        delete: bool,
        /// Read the password from the first line of standard input even when it is a terminal.
        /// When standard input is not a terminal (a pipe), it is read from there anyway.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Drain the broker that a configuration file describes, through its admin API: it stops
    /// accepting and tells clients to use another server. Waits until no client is connected or the
    /// timeout passes, and exits 0 either way (a Kubernetes preStop hook); 1 if the broker cannot be
    /// reached or refuses, 2 if the configuration has no `http` section or admin token file.
    Drain {
        /// The broker's configuration file (`http.bind` and `http.admin_token_file` are used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Seconds to wait for the clients to leave.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        timeout: u64,
    },
    /// Check or repair the store under `storage.dir` while no broker uses it (docs/storage.md).
    Storage {
        #[command(subcommand)]
        action: StorageAction,
    },
}

#[derive(Debug, clap::Subcommand)]
enum StorageAction {
    /// Verify every page and every stored value; exits 0 when the store is intact, 1 when not.
    Check {
        /// The store's directory (`storage.dir`).
        dir: PathBuf,
    },
    /// Drop whatever is damaged, keep everything still valid, and compact the file.
    Repair {
        /// The store's directory (`storage.dir`).
        dir: PathBuf,
    },
}

// Every failure is printed as one line with its causes and a non-zero status; none is returned
// from `main`, which would add a backtrace under RUST_BACKTRACE to a message meant for people.
fn main() {
    let args = Args::parse();
    if let Some(Command::Passwd {
        file,
        username,
        delete,
        password_stdin,
    }) = &args.command
    {
        if let Err(error) = passwd::run(file, username, *delete, *password_stdin) {
            eprintln!("tern-broker passwd: {error:#}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(Command::Storage { action }) = &args.command {
        let (name, result) = match action {
            StorageAction::Check { dir } => ("check", tern_broker::storage::check(dir)),
            StorageAction::Repair { dir } => ("repair", tern_broker::storage::repair(dir)),
        };
        match result {
            Ok(report) => println!("{report}"),
            Err(error) => {
                eprintln!("tern-broker storage {name}: {error}");
                std::process::exit(1);
            }
        }
        return;
    }
    if let Some(Command::Drain { config, timeout }) = &args.command {
        std::process::exit(drain::run(config, Duration::from_secs(*timeout)));
    }
    let config = match &args.config {
        Some(path) => match Config::from_file(path) {
            Ok(config) => config,
            Err(error) => {
                // A configuration mistake is the user's to fix: say what and where, no backtrace.
                eprintln!("tern-broker: invalid configuration: {error}");
                std::process::exit(2);
            }
        },
        None => Config::default(),
    };
    if args.check_config {
        if let Err(error) = Server::check(&config) {
            // The same message and status a start would fail with.
            eprintln!("tern-broker: cannot start: {error}");
            std::process::exit(1);
        }
        println!("configuration is valid");
        return;
    }
    logging::init(&config);
    if let Err(error) = run(config) {
        // Start-up failures (a port in use, an unreadable certificate) are for the operator to fix:
        // the cause chain in one line, no backtrace.
        eprintln!("tern-broker: cannot start: {error:#}");
        std::process::exit(1);
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::builder(config).bind().await?;
        server.run(shutdown_signal()).await;
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT. Only the binary handles signals; the library takes a future.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
