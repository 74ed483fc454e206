//! `MqttCluster`: a broker StatefulSet with its Services, configuration, TLS and auth.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A clustered Tern MQTT broker.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tern.dev",
    version = "v1alpha1",
    kind = "MqttCluster",
    namespaced,
    status = "MqttClusterStatus",
    shortname = "mqc",
    category = "tern",
    doc = "A clustered Tern MQTT broker: a StatefulSet of tern-broker pods with Services, configuration, TLS and users.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Members",
        type_ = "integer",
        json_path = ".status.agreedMembers"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!self.listeners.exists(l, l.protocol == 'tls' || l.protocol == 'wss') || has(self.tls)"
).message("listeners of protocol tls or wss need spec.tls").field_path(".tls"))]
#[serde(rename_all = "camelCase")]
pub struct MqttClusterSpec {
    /// Broker pods. `kubectl scale mqttcluster/NAME --replicas=N` changes it; scale-down drains the
    /// leaving pods first.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Broker image; the operator's `--broker-image` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// CPU and memory for each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The MQTT listeners every pod opens and the client Service exposes.
    #[serde(default = "default_listeners")]
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))").message("listener names must be unique"))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.port == a.port))").message("listener ports must be unique"))]
    pub listeners: Vec<ListenerSpec>,
    /// The client Service in front of all pods.
    #[serde(default)]
    pub service: ServiceSpec,
    /// Certificates for `tls` and `wss` listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Let clients connect without a username and password.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// A volume per pod where the broker keeps its sessions and retained messages across restarts
    /// (`storage` in its configuration; docs/storage.md). Without it they live in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<PersistenceSpec>,
    /// Broker settings rendered into its configuration file; unset ones keep the broker's defaults.
    #[serde(default)]
    pub broker: BrokerSettings,
    /// Where the pods may run.
    #[serde(default)]
    pub placement: PlacementSpec,
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,
    /// A NetworkPolicy that admits the brokers' cluster port (4370) only from the cluster's own
    /// pods, and the listeners and the HTTP port from anywhere.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    #[serde(default)]
    pub metrics: MetricsSpec,
    /// Seconds a leaving pod has to hand its clients over before it is stopped.
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub drain_timeout_seconds: i32,
    /// Extra annotations on the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
}

fn default_replicas() -> i32 {
    3
}

fn default_drain_timeout() -> i32 {
    60
}

fn default_listeners() -> Vec<ListenerSpec> {
    vec![ListenerSpec {
        name: "mqtt".into(),
        protocol: ListenerProtocol::Tcp,
        port: 1883,
        path: None,
        proxy_protocol: false,
        client_certificates: ClientCertificates::None,
        max_connections: None,
    }]
}

/// One MQTT listener.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.path) || self.protocol == 'ws' || self.protocol == 'wss'").message("path is only for ws and wss listeners"))]
#[x_kube(validation = Rule::new("self.clientCertificates == 'none' || self.protocol == 'tls' || self.protocol == 'wss'").message("clientCertificates needs a tls or wss listener"))]
#[serde(rename_all = "camelCase")]
pub struct ListenerSpec {
    /// Also the Service port's name: lowercase letters, digits and `-`; not `http`, `peer` or
    /// `gossip`, the broker's own ports.
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("!(self in ['http', 'peer', 'gossip'])").message("http, peer and gossip are the broker's own port names"))]
    pub name: String,
    #[serde(default)]
    pub protocol: ListenerProtocol,
    #[schemars(range(min = 1, max = 65535))]
    #[x_kube(validation = Rule::new("self != 9090").message("port 9090 is the broker's HTTP port"))]
    #[x_kube(validation = Rule::new("self != 4370").message("port 4370 is the brokers' cluster port"))]
    pub port: i32,
    /// WebSocket path (default `/mqtt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^/\S*$"))]
    pub path: Option<String>,
    /// Expect a PROXY protocol header from a load balancer.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Client certificates issued by the cluster CA (see `MqttUser.spec.clientCertificate`):
    /// `none`, `optional` (a certificate's CN is the username, a password is not needed) or
    /// `required`.
    #[serde(default)]
    pub client_certificates: ClientCertificates,
    /// Connections this listener accepts at once, per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    #[default]
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl ListenerProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }

    pub fn uses_websocket(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }

    /// The URI scheme clients use.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Tcp => "mqtt",
            Self::Tls => "mqtts",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertificates {
    #[default]
    None,
    Optional,
    Required,
}

/// The client Service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations for the Service, for example a cloud load balancer's settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Source ranges allowed through a LoadBalancer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Where the server certificate comes from: the operator's own CA (the default), a Secret you
/// provide, or cert-manager.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("(has(self.secretName) ? 1 : 0) + (has(self.certManager) ? 1 : 0) + (has(self.managed) ? 1 : 0) <= 1").message("set at most one of managed, secretName and certManager"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// The operator's CA for this cluster issues and renews the certificate (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedTls>,
    /// A `kubernetes.io/tls` Secret of yours with `tls.crt`, `tls.key` and optionally `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// A cert-manager issuer signs the certificate (needs cert-manager installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManagerTls>,
    /// Hostnames or IP addresses added to the certificate besides the Services' and pods' names,
    /// such as a load balancer's DNS name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub extra_hostnames: Vec<String>,
}

/// Validity of the operator-issued server certificate, as Go durations (`2160h`, `90m`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedTls {
    /// How long an issued certificate is valid (default `2160h`, 90 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(h|m|s))+$"))]
    pub validity: Option<String>,
    /// Renew when less than this is left (default a third of the validity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(h|m|s))+$"))]
    pub renew_before: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerTls {
    pub issuer_ref: IssuerRef,
}

/// A cert-manager `Issuer` or `ClusterIssuer`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    #[schemars(length(min = 1))]
    pub name: String,
    /// `Issuer` (default) or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    pub kind: String,
    #[serde(default = "default_issuer_group")]
    pub group: String,
}

fn default_issuer_kind() -> String {
    "Issuer".into()
}

fn default_issuer_group() -> String {
    "cert-manager.io".into()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    /// Size of each pod's volume (default `1Gi`).
    #[serde(default = "default_volume_size")]
    pub size: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// `storage.durability`: `sync` (default), acknowledgements wait until what they acknowledge
    /// is on disk; `batched`, changes are synced every `batchIntervalMs` and a crash loses at most
    /// that.
    #[serde(default)]
    pub durability: StorageDurability,
    /// `storage.batch_interval_ms`, with `batched` (1 ..= 60000; the broker's default is 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub batch_interval_ms: Option<u32>,
    /// What happens to the pods' volumes when the cluster shrinks or is deleted (the
    /// StatefulSet's `persistentVolumeClaimRetentionPolicy`): `Retain` (default) keeps them, so a
    /// pod that comes back finds its sessions; `Delete` removes them with their data.
    #[serde(default)]
    pub retention: VolumeRetention,
}

fn default_volume_size() -> Quantity {
    Quantity("1Gi".into())
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageDurability {
    #[default]
    Sync,
    Batched,
}

impl StorageDurability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Batched => "batched",
        }
    }
}

/// When the pods' volumes are deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRetention {
    /// When the `MqttCluster` (and so its StatefulSet) is deleted.
    #[serde(default)]
    pub when_deleted: RetentionPolicy,
    /// When `replicas` goes down: the volumes of the pods that go.
    #[serde(default)]
    pub when_scaled: RetentionPolicy,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RetentionPolicy {
    #[default]
    Retain,
    Delete,
}

impl RetentionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retain => "Retain",
            Self::Delete => "Delete",
        }
    }
}

/// Broker settings; each maps to a key of the broker's configuration file
/// (`docs/configuration.md`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSettings {
    /// `log.level`: a tracing filter such as `info` or `info,tern_broker::listener=debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub log_level: Option<String>,
    /// `limits.max_connections`, per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<i64>,
    /// `limits.max_connection_rate`: new connections per second, per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connection_rate: Option<i64>,
    /// `limits.max_packet_size` in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 64, max = 268435455))]
    pub max_packet_size: Option<i64>,
    /// `limits.max_inflight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub max_inflight: Option<i32>,
    /// `limits.max_queued_messages` per session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_queued_messages: Option<i64>,
    /// `limits.queue_overflow`: `drop_oldest`, `drop_newest` or `disconnect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["drop_oldest", "drop_newest", "disconnect"]))]
    pub queue_overflow: Option<String>,
    /// `limits.backlog_high_water`: queued messages in a connected subscriber's session at which
    /// the publishers feeding it are paused; 0 turns publisher backpressure off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub backlog_high_water: Option<i64>,
    /// `limits.backlog_max_pause_ms`: longest one publisher waits for one backlog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub backlog_max_pause_millis: Option<i64>,
    /// `limits.backlog_max_delay_ms`: milliseconds of publishing a connected subscriber's queue
    /// may span before the publishers feeding it are paused; 0 leaves only `backlogHighWater`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 60000))]
    pub backlog_max_delay_millis: Option<i64>,
    /// `limits.park_after_idle_ms`: idle time after which a plain TCP connection gives up its
    /// task and waits in the broker's parking lot; 0 never parks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400000))]
    pub park_after_idle_millis: Option<i64>,
    /// `limits.max_session_expiry_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_session_expiry_seconds: Option<i64>,
    /// `limits.max_publish_rate`: PUBLISH packets per second per client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_publish_rate: Option<i64>,
    /// `limits.max_subscriptions_per_client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_subscriptions_per_client: Option<i64>,
    /// `features.maximum_qos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2))]
    pub maximum_qos: Option<i32>,
    /// `features.retain_available`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_available: Option<bool>,
}

/// Pod placement, passed to the pod template as given.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// When empty, pods are spread over nodes with `whenUnsatisfiable: ScheduleAnyway`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Pods a voluntary disruption (node drain) may take down at once.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub max_unavailable: i32,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: 1,
        }
    }
}

/// The cluster's NetworkPolicy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// `false` deletes it, for namespaces whose policies you write yourself: it admits the
    /// listeners and the HTTP port from every source, which widens a namespace that admits less.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

fn yes() -> bool {
    true
}

fn one() -> i32 {
    1
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,
}

/// A Prometheus Operator `ServiceMonitor` for the brokers, applied only when that CRD exists.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Scrape interval (`30s`); Prometheus' default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(h|m|s))+$"))]
    pub interval: Option<String>,
    /// Labels your Prometheus selects ServiceMonitors by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for ServiceMonitorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: None,
            labels: BTreeMap::new(),
        }
    }
}

/// What the operator observed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MqttClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pods the StatefulSet runs.
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pods (for the scale subresource and HPAs).
    #[serde(default)]
    pub selector: String,
    /// Addresses clients connect to, one per listener.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// Members of the brokers' cluster that every broker that answered counts as joined (or as
    /// itself): the cluster's size as the brokers agree on it. Equal to the ready replicas in a
    /// healthy cluster; lower while members join or leave, or when the brokers have not found
    /// each other.
    #[serde(default)]
    pub agreed_members: i32,
    /// The members of the brokers' cluster, as the brokers report it through their admin API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    /// Secret holding the CA certificate clients trust (`ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<String>,
    /// When the current server certificate expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_not_after: Option<String>,
    /// Digest of the users and ACL last delivered to every ready broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_revision: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub listener: String,
    /// `mqtt://NAME.NAMESPACE.svc:1883` and the like.
    pub url: String,
}

/// One member of the brokers' cluster: a broker pod, or a node id the brokers still report.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The member's node id, which is its pod's name.
    pub pod: String,
    /// The broker is ready: it has joined and holds every live peer's routes and retained
    /// messages (its `/readyz`).
    pub ready: bool,
    /// How the other brokers see it: the least joined state any of them reports. Absent when no
    /// broker could be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MemberState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<i64>,
    /// The broker is draining: it accepts no clients and hands its sessions over.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// A member as the other brokers of its cluster see it; the variants are ordered from best to
/// worst, and a member's state is the worst any broker reports.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Every other broker that answered has a link to it and holds its routes.
    Joined,
    /// Some broker's link to it is up, its routes still on their way.
    Joining,
    /// Some broker knows it is alive by gossip but has no link to it.
    Unreachable,
    /// Some broker that answered does not know it at all: the brokers have not all found each
    /// other (seeds that do not resolve, or a split cluster).
    Missing,
}
