//! `tern-operator`: runs the controllers (`run`, the default) or writes the CRD YAML (`crdgen`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use kube::Client;
use tern_operator::leader::{self, LeaseConfig};
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
    /// Seconds a leader's term lasts without renewal: how long a standby waits before taking over
    /// from a leader that vanished without releasing the Lease.
    #[arg(long, env = "TERN_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=3600))]
    lease_duration_seconds: u64,
    /// This pod's name, shown as the Lease's holder (the host name when empty).
    #[arg(long, env = "POD_NAME", default_value = "")]
    pod_name: String,
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

    let result = lead_and_reconcile(client, metrics, &args, &shutdown).await;
    shutdown.cancel();
    match http.await {
        Ok(Err(error)) => error!(%error, "the HTTP endpoint failed"),
        Err(error) => error!(%error, "the HTTP endpoint task failed"),
        Ok(Ok(())) => {}
    }
    info!("stopped");
    result
}

/// Runs the controllers until `shutdown`; with leader election, only while holding the Lease.
async fn lead_and_reconcile(
    client: Client,
    metrics: Metrics,
    args: &RunArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let leadership = if args.leader_election {
        let config = LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity: leader::identity(&pod_name(&args.pod_name)),
            duration_secs: args.lease_duration_seconds,
        };
        info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "waiting to become the leader");
        match leader::acquire(&client, &config, shutdown).await {
            Some(leadership) => Some(leadership),
            None => return Ok(()),
        }
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
    match leadership {
        Some(mut leadership) => {
            tokio::select! {
                () = controllers => {}
                () = leadership.lost() => {
                    // Another replica may be acting now: stop at once rather than reconcile twice.
                    error!("lost the leader Lease; exiting");
                    std::process::exit(1);
                }
            }
            // Only after the last reconcile has finished, so the next leader never overlaps.
            leadership.release().await;
        }
        None => controllers.await,
    }
    Ok(())
}

/// The name the Lease shows for this process: the pod's, else the host's.
fn pod_name(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tern-operator".to_owned())
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
