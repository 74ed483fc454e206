//! `tern-operator`: runs the controllers (`run`, the default) or writes the CRD YAML (`crdgen`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tern_operator::metrics::Metrics;
use tern_operator::reconcile::controllers::{self, Scope};
use tern_operator::reconcile::{Context, Settings};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// Tern's Kubernetes operator: MqttCluster, MqttUser and MqttAcl.
#[derive(Debug, Parser)]
#[command(name = "tern-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reconcile the custom resources (the default).
    Run(RunArgs),
    /// Write the CRD YAML to `crds/` and the Helm chart's copy, under `--root`.
    Crdgen {
        /// The repository root.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// Watch only this namespace; all namespaces when empty.
    #[arg(long, env = "WATCH_NAMESPACE", default_value = "")]
    watch_namespace: String,
    /// Image for MqttClusters that do not set spec.image.
    #[arg(long, env = "TERN_BROKER_IMAGE", default_value = concat!("ghcr.io/tern-mqtt/tern-broker:", env!("CARGO_PKG_VERSION")))]
    broker_image: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "TERN_OPERATOR_HTTP_BIND", default_value = "0.0.0.0:8080")]
    http_bind: SocketAddr,
    /// Take a Lease before reconciling, so several replicas can run and only one acts.
    #[arg(long, env = "TERN_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    #[arg(long, env = "TERN_LEASE_NAME", default_value = "tern-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// The cluster's DNS domain, for Service names in certificates and URIs.
    #[arg(long, env = "TERN_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    #[arg(long, env = "TERN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Crdgen { root }) => return tern_operator::crdgen::write_all(&root),
        Some(Command::Run(args)) => args,
        None => cli.run,
    };
    init_logging(args.log_format);
    // One rustls provider for the whole process (DESIGN.md §1).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot configure the Kubernetes client (kubeconfig or in-cluster)")?;
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let http = tokio::spawn(tern_operator::http::serve(
        args.http_bind,
        metrics.clone(),
        shutdown.clone().cancelled_owned(),
    ));

    let lease = if args.leader_election {
        let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&args.lease_namespace)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await
            .context("cannot set up leader election")?;
        let (mut leader, task) = manager.watch().await;
        info!(lease = %args.lease_name, namespace = %args.lease_namespace, "waiting to become the leader");
        loop {
            if *leader.borrow_and_update() {
                break;
            }
            tokio::select! {
                changed = leader.changed() => changed.context("leader election stopped")?,
                () = shutdown.cancelled() => return Ok(()),
            }
        }
        info!("leading");
        Some((leader, task))
    } else {
        None
    };

    let settings = Settings {
        broker_image: args.broker_image.clone(),
        cluster_domain: args.cluster_domain.clone(),
    };
    let ctx = Arc::new(Context::new(client, settings, metrics));
    let scope = Scope((!args.watch_namespace.is_empty()).then(|| args.watch_namespace.clone()));
    info!(namespace = ?scope.0, "starting controllers");
    let controllers = controllers::run(ctx, scope, shutdown.clone());

    match lease {
        Some((mut leader, task)) => {
            tokio::select! {
                () = controllers => {}
                lost = async { while leader.changed().await.is_ok() { if !*leader.borrow() { break; } } } => {
                    let () = lost;
                    // Another replica may be acting now: stop at once rather than reconcile twice.
                    error!("lost the leader Lease; exiting");
                    std::process::exit(1);
                }
            }
            drop(leader);
            // Releases the Lease so a standby takes over without waiting for it to expire.
            let _ = task.await;
        }
        None => controllers.await,
    }
    shutdown.cancel();
    let _ = http.await;
    info!("stopped");
    Ok(())
}

async fn cancel_on_signal(token: CancellationToken) {
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
    info!("shutting down");
    token.cancel();
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
