//! The Node this kubelet plays: registered (or taken over) at start with a `Ready` condition, then kept
//! alive every 10 s like a kubelet does — its Lease in `kube-node-lease` renewed and the `Ready`
//! heartbeat time refreshed — so a node lifecycle controller, if one runs, never marks it NotReady.
//! The Node is left in place at shutdown, as a stopped kubelet leaves it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::downward::{HOST_IP, NODE_CPU, NODE_EPHEMERAL_STORAGE, NODE_MEMORY, NODE_PODS};

/// The field manager of everything this kubelet writes.
pub const FIELD_MANAGER: &str = "tern-test-kubelet";
const HEARTBEAT: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// A registered node and what its heartbeat writes.
pub struct NodeAgent {
    nodes: Api<Node>,
    leases: Api<Lease>,
    name: String,
    uid: String,
    ready_since: Timestamp,
}

impl NodeAgent {
    /// Creates the Node (or takes over an existing one of that name) and reports it Ready.
    pub async fn register(client: Client, name: &str) -> Result<Self, kube::Error> {
        let nodes: Api<Node> = Api::all(client.clone());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(labels(name)),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        let applied = nodes
            .patch(name, &apply_params(), &Patch::Apply(&node))
            .await?;
        let agent = Self {
            nodes,
            leases: Api::namespaced(client, LEASE_NAMESPACE),
            name: name.to_owned(),
            uid: applied.metadata.uid.unwrap_or_default(),
            ready_since: Timestamp::now(),
        };
        agent.beat().await?;
        tracing::info!(node = name, "node registered and ready");
        Ok(agent)
    }

    /// Renews the lease and the Ready heartbeat every 10 s until cancelled; failures are logged.
    pub async fn heartbeat(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(HEARTBEAT) => {}
            }
            if let Err(error) = self.beat().await {
                tracing::warn!(node = %self.name, %error, "node heartbeat failed");
            }
        }
    }

    async fn beat(&self) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let status = Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            status: Some(self.status(now)),
            ..Node::default()
        };
        self.nodes
            .patch_status(&self.name, &apply_params(), &Patch::Apply(&status))
            .await?;
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(LEASE_NAMESPACE.to_owned()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: self.name.clone(),
                    uid: self.uid.clone(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.name.clone()),
                lease_duration_seconds: Some(LEASE_SECONDS),
                renew_time: Some(MicroTime(now)),
                ..LeaseSpec::default()
            }),
        };
        self.leases
            .patch(&self.name, &apply_params(), &Patch::Apply(&lease))
            .await?;
        Ok(())
    }

    fn status(&self, now: Timestamp) -> NodeStatus {
        let resources = BTreeMap::from([
            ("cpu".to_owned(), Quantity(NODE_CPU.into())),
            ("memory".to_owned(), Quantity(NODE_MEMORY.into())),
            (
                "ephemeral-storage".to_owned(),
                Quantity(NODE_EPHEMERAL_STORAGE.into()),
            ),
            ("pods".to_owned(), Quantity(NODE_PODS.into())),
        ]);
        NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("KubeletReady".into()),
                message: Some("tern-test-kubelet is posting ready status".into()),
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(Time(self.ready_since)),
            }]),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: HOST_IP.into(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: self.name.clone(),
                },
            ]),
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            node_info: Some(NodeSystemInfo {
                architecture: go_arch().into(),
                operating_system: std::env::consts::OS.into(),
                os_image: "tern-test-kubelet".into(),
                container_runtime_version: "tern-test-kubelet://local-processes".into(),
                kubelet_version: concat!("v0.0.0-tern-test-kubelet-", env!("CARGO_PKG_VERSION"))
                    .into(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), name.to_owned()),
        (
            "kubernetes.io/os".to_owned(),
            std::env::consts::OS.to_owned(),
        ),
        ("kubernetes.io/arch".to_owned(), go_arch().to_owned()),
        ("tern.dev/test-kubelet".to_owned(), "true".to_owned()),
    ])
}

/// Kubernetes spells architectures the Go way.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
