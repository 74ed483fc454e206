//! `tern-test-kubelet`: a kubelet stand-in for operator tests. It registers a Node, schedules the pods
//! of a label selector onto it, and runs their containers as local processes on loopback addresses
//! (`<prefix>.2` …), with volumes materialized the kubelet way, probes, restarts, preStop hooks,
//! graceful deletion and pod status written through `pods/status` — so the StatefulSet controller and
//! the operator see real, Ready pods.
//!
//! The one deliberate difference from a kubelet is that there are no network namespaces and, apart
//! from each pod's `/etc/hosts`, no mount namespaces: mount paths and the pod's own addresses are
//! rewritten in args, env and ConfigMap files (see [`rewrite`]). Cluster DNS comes through that
//! `/etc/hosts` (see [`dns`]). Tests embed it through [`Kubelet::start`]; the `tern-test-kubelet`
//! binary is a thin wrapper. It never deletes pod objects except after stopping a pod whose
//! deletion was requested.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod config;
pub mod dns;
pub mod downward;
pub mod events;
pub mod ip;
mod node;
pub mod pod;
mod registry;
pub mod rewrite;
mod sources;
pub mod volume;

pub use config::{BinaryMap, IpPrefix, KubeletConfig};
pub use events::Event;
pub use pod::PodName;

use dns::ClusterDns;
use events::EventLog;
use node::NodeAgent;
use pod::manager::{self, Selection};
use pod::process::Launcher;
use pod::worker::Shared;
use registry::Registry;
use sources::Sources;

/// Starts kubelets.
pub struct Kubelet;

impl Kubelet {
    /// Connects with `config.kubeconfig` (or `KUBECONFIG`), registers the node, waits for the
    /// ConfigMap and Secret caches, and starts running pods in the background on the current runtime.
    pub async fn start(config: KubeletConfig) -> anyhow::Result<KubeletHandle> {
        let client = match &config.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                let options = KubeConfigOptions::default();
                let client_config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .context("loading kubeconfig")?;
                Client::try_from(client_config).context("building the API client")?
            }
            None => Client::try_default()
                .await
                .context("building the API client from KUBECONFIG")?,
        };
        Self::start_with_client(client, config).await
    }

    /// Like [`Kubelet::start`] with a client the caller built.
    pub async fn start_with_client(
        client: Client,
        config: KubeletConfig,
    ) -> anyhow::Result<KubeletHandle> {
        std::fs::create_dir_all(&config.root)
            .with_context(|| format!("creating {}", config.root.display()))?;
        // rewritten paths must be absolute: processes run in their pod directory
        let root = std::fs::canonicalize(&config.root)?;
        let cancel = CancellationToken::new();
        let node = NodeAgent::register(client.clone(), &config.node_name)
            .await
            .with_context(|| format!("registering node {}", config.node_name))?;
        let (sources, sources_task) = Sources::start(
            client.clone(),
            config.namespace.as_deref(),
            cancel.child_token(),
        )
        .await?;
        let events = Arc::new(EventLog::new(&root));
        let registry = Arc::new(Registry::new(config.ip_prefix));
        let launcher = Launcher::detect().mounting_hosts_files(&root).await;
        let cluster_dns = launcher.mounts_hosts_files();
        let (dns, dns_task) = ClusterDns::start(
            client.clone(),
            (&config.selector, config.namespace.as_deref()),
            &config.cluster_domain,
            registry.clone(),
            cancel.child_token(),
        );
        let shared = Arc::new(Shared {
            client,
            root: root.clone(),
            binaries: config.binaries.clone(),
            sources,
            registry: registry.clone(),
            events: events.clone(),
            launcher,
            dns,
        });
        let selection = Selection {
            selector: config.selector.clone(),
            namespace: config.namespace.clone(),
            node_name: config.node_name.clone(),
        };
        let heartbeat = tokio::spawn(node.heartbeat(cancel.child_token()));
        let pods = tokio::spawn(manager::run(shared, selection, cancel.child_token()));
        tracing::info!(node = %config.node_name, selector = %config.selector, root = %root.display(), "kubelet started");
        Ok(KubeletHandle {
            cancel,
            // pods first: shutdown waits for them, the others end at once
            tasks: vec![pods, heartbeat, sources_task, dns_task],
            cluster_dns,
            registry,
            events,
            root,
        })
    }
}

/// A running kubelet. Dropping it starts the shutdown without waiting for it; prefer
/// [`KubeletHandle::shutdown`].
pub struct KubeletHandle {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    cluster_dns: bool,
    registry: Arc<Registry>,
    events: Arc<EventLog>,
    root: PathBuf,
}

impl KubeletHandle {
    /// The address of a pod this kubelet runs.
    pub fn pod_ip(&self, namespace: &str, name: &str) -> Option<IpAddr> {
        self.registry
            .pod_ip(&PodName::new(namespace, name))
            .map(IpAddr::V4)
    }

    /// Whether pods resolve the cluster's DNS names of headless Services and their pods (through
    /// their own `/etc/hosts`, see [`dns`]); `false` where this host gives processes no private
    /// mounts.
    pub fn resolves_cluster_names(&self) -> bool {
        self.cluster_dns
    }

    /// The process id of a running container.
    pub fn container_pid(&self, namespace: &str, name: &str, container: &str) -> Option<u32> {
        self.registry.pid(&PodName::new(namespace, name), container)
    }

    /// The lifecycle events recorded so far (see [`events`] for the line format).
    pub fn events(&self) -> Vec<String> {
        self.events.lines()
    }

    /// `<root>/events.log`.
    pub fn events_path(&self) -> &Path {
        self.events.path()
    }

    /// The root directory (absolute); see [`volume::layout`] for what lies under it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stops every pod's processes (SIGTERM, SIGKILL after 10 s; no preStop, pod objects left in
    /// place) and the background tasks, and waits for them.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in std::mem::take(&mut self.tasks) {
            if let Err(error) = task.await {
                tracing::error!(%error, "kubelet task failed");
            }
        }
        tracing::info!("kubelet stopped");
    }
}

impl Drop for KubeletHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
