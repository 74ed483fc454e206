//! `MqttUser`: a username with a password (generated or yours) and optionally a client certificate.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ClusterRef;

/// A user of an `MqttCluster`.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tern.dev",
    version = "v1alpha1",
    kind = "MqttUser",
    namespaced,
    status = "MqttUserStatus",
    shortname = "mqu",
    category = "tern",
    doc = "A user of an MqttCluster: username, password in a Secret, optional client certificate, groups.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(name = "Username", type_ = "string", json_path = ".status.username"),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.credentialsSecret"
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
#[serde(rename_all = "camelCase")]
pub struct MqttUserSpec {
    pub cluster_ref: ClusterRef,
    /// The MQTT username; the resource's name when unset. No `:`, no whitespace, no control
    /// characters, and not starting with `#`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[^#:\s\x00-\x1f\x7f][^:\s\x00-\x1f\x7f]*$")
    )]
    pub username: Option<String>,
    /// Take the password from a Secret of yours; a change to that Secret rotates it on every broker.
    /// Without it the operator generates one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_from: Option<PasswordFrom>,
    /// The Secret the operator writes with `username`, `password`, `ca.crt`, connection URIs and,
    /// with a client certificate, `tls.crt` and `tls.key` (default `NAME-mqtt-credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
    /// Issue a client certificate from the cluster's CA whose CN is the username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificate>,
    /// Groups the user belongs to, for `MqttAcl` rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub groups: Vec<GroupName>,
}

/// A group name: no whitespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(transparent)]
pub struct GroupName(#[schemars(length(min = 1, max = 128), regex(pattern = r"^\S+$"))] pub String);

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordFrom {
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret in the user's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Default `password`.
    #[serde(default = "default_password_key")]
    pub key: String,
}

fn default_password_key() -> String {
    "password".into()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificate {
    /// How long the certificate is valid (default `8760h`, a year); renewed when a third is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(h|m|s))+$"))]
    pub validity: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MqttUserStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// When the client certificate expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_not_after: Option<String>,
}

impl MqttUser {
    /// The MQTT username: `spec.username`, else the resource's name.
    pub fn username(&self) -> String {
        self.spec
            .username
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }

    /// The Secret the operator writes the credentials to.
    pub fn credentials_secret_name(&self) -> String {
        self.spec.credentials_secret.clone().unwrap_or_else(|| {
            format!(
                "{}-mqtt-credentials",
                self.metadata.name.as_deref().unwrap_or_default()
            )
        })
    }
}
