//! `tern-test-kubelet`: runs the pods of a label selector as local processes until SIGTERM or Ctrl-C.
//! See the crate documentation and README.md.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tern_test_kubelet::{BinaryMap, IpPrefix, Kubelet, KubeletConfig};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// A kubelet stand-in for operator tests: schedules the selected pods onto one node and runs their
/// containers as local processes on loopback addresses.
#[derive(Debug, Parser)]
#[command(name = "tern-test-kubelet", version, about)]
struct Args {
    /// Kubeconfig file.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Label selector of the pods to run.
    #[arg(long, default_value = "app.kubernetes.io/name=tern-broker")]
    selector: String,
    /// Only this namespace (default: all).
    #[arg(long)]
    namespace: Option<String>,
    /// Name of the Node to register and bind pods to.
    #[arg(long, default_value = "tern-test-node")]
    node_name: String,
    /// First three octets of the pod addresses (loopback only).
    #[arg(long, default_value = "127.77.0")]
    ip_prefix: IpPrefix,
    /// Pod directories, volumes, logs and events.log.
    #[arg(long)]
    root: PathBuf,
    /// A container command or image name and the local executable that runs it.
    #[arg(long = "binary", value_name = "NAME=PATH")]
    binaries: Vec<String>,
    /// The cluster's DNS domain, of the Service names in the pods' /etc/hosts.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut binaries = BinaryMap::default();
    for flag in &args.binaries {
        binaries.insert_flag(flag)?;
    }
    let config = KubeletConfig {
        kubeconfig: args.kubeconfig,
        selector: args.selector,
        namespace: args.namespace,
        node_name: args.node_name,
        ip_prefix: args.ip_prefix,
        root: args.root,
        binaries,
        cluster_domain: args.cluster_domain,
    };
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let kubelet = Kubelet::start(config).await?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        result = tokio::signal::ctrl_c() => {
            result.context("waiting for Ctrl-C")?;
            tracing::info!("interrupted: stopping");
        }
    }
    kubelet.shutdown().await;
    Ok(())
}
