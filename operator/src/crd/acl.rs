//! `MqttAcl`: ordered allow/deny rules for one cluster, rendered into the broker's ACL file.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ClusterRef;

/// Access rules for an `MqttCluster`.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tern.dev",
    version = "v1alpha1",
    kind = "MqttAcl",
    namespaced,
    status = "MqttAclStatus",
    shortname = "mqacl",
    category = "tern",
    doc = "Ordered allow/deny rules for an MqttCluster's clients. Once a cluster has any MqttAcl, whatever no rule allows is denied.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(name = "Order", type_ = "integer", json_path = ".spec.order"),
    printcolumn(name = "Rules", type_ = "integer", json_path = ".status.rules"),
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
#[serde(rename_all = "camelCase")]
pub struct MqttAclSpec {
    pub cluster_ref: ClusterRef,
    /// Where this resource's rules go among the cluster's other `MqttAcl`s: ascending, then by name.
    #[serde(default)]
    pub order: i32,
    /// Tried in order; the first rule that applies decides.
    #[schemars(length(min = 1, max = 1000))]
    pub rules: Vec<AclRule>,
}

/// One rule. It applies to `everyone`, or to the listed users, groups and client-id patterns.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.everyone != (size(self.users) + size(self.groups) + size(self.clientIds) > 0)").message("a rule applies either to everyone or to users, groups or clientIds"))]
#[x_kube(validation = Rule::new("self.access == 'allow' || (!has(self.maxQos) && !has(self.retain))").message("maxQos and retain are for allow rules only"))]
#[x_kube(validation = Rule::new("!has(self.retain) || self.action != 'subscribe'").message("retain is for rules that cover publish"))]
#[serde(rename_all = "camelCase")]
pub struct AclRule {
    pub access: Access,
    pub action: Action,
    /// An MQTT topic filter; `%u` stands for the client's username and `%c` for its client id.
    #[schemars(length(min = 1, max = 65535), regex(pattern = r"^\S+$"))]
    pub topic: String,
    #[serde(default)]
    pub everyone: bool,
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub users: Vec<Word>,
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub groups: Vec<Word>,
    /// Client-id globs: `*` any run of characters, `?` one character.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub client_ids: Vec<Word>,
    /// The highest QoS allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2))]
    pub max_qos: Option<u8>,
    /// Allow only publishes with (true) or without (false) the retain flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<bool>,
}

/// A name or pattern without whitespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(transparent)]
pub struct Word(#[schemars(length(min = 1, max = 256), regex(pattern = r"^\S+$"))] pub String);

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Allow,
    Deny,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Publish,
    Subscribe,
    Both,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MqttAclStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Lines this resource contributes to the ACL file.
    #[serde(default)]
    pub rules: i32,
}
