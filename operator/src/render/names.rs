//! Names, labels and mount paths of everything an `MqttCluster` owns, in one place so the renderers,
//! the reconcilers and the tests agree.

use std::collections::BTreeMap;

/// Where the broker container finds its files. The StatefulSet mounts them; the broker
/// configuration refers to them.
pub mod paths {
    pub const CONFIG_DIR: &str = "/etc/tern/config";
    pub const CONFIG_FILE: &str = "/etc/tern/config/broker.yaml";
    pub const TLS_DIR: &str = "/etc/tern/tls";
    pub const CLIENT_CA_DIR: &str = "/etc/tern/client-ca";
    pub const AUTH_DIR: &str = "/etc/tern/auth";
    pub const ADMIN_DIR: &str = "/etc/tern/admin";
    /// The peer certificate, its key and the cluster CA's certificate, for mutual TLS between
    /// the brokers of a cluster.
    pub const PEER_DIR: &str = "/etc/tern/peer";
    pub const DATA_DIR: &str = "/var/lib/tern";
}

/// Keys inside the Secrets and the ConfigMap.
pub mod keys {
    pub const CONFIG: &str = "broker.yaml";
    pub const USERS: &str = "users";
    pub const ACL: &str = "acl";
    pub const ADMIN_TOKEN: &str = "token";
    pub const TLS_CERT: &str = "tls.crt";
    pub const TLS_KEY: &str = "tls.key";
    pub const CA_CERT: &str = "ca.crt";
}

/// Environment variables the broker container gets from the downward API; the configuration file
/// refers to them (`${POD_NAME}`), so that one ConfigMap serves every pod.
pub mod env {
    pub const POD_NAME: &str = "POD_NAME";
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    pub const POD_IP: &str = "POD_IP";
}

/// The broker's HTTP port (`/metrics`, `/healthz`, `/readyz`, admin API).
pub const HTTP_PORT: i32 = 9090;
pub const HTTP_PORT_NAME: &str = "http";
/// The cluster port: gossip over UDP and peer links over TCP share this number (DESIGN.md §3).
pub const CLUSTER_PORT: i32 = 4370;
/// The container and Service port names of the cluster port, one per protocol.
pub const PEER_PORT_NAME: &str = "peer";
pub const GOSSIP_PORT_NAME: &str = "gossip";
/// Port names the pods and the headless Service use besides the listeners'.
pub const RESERVED_PORT_NAMES: [&str; 3] = [HTTP_PORT_NAME, PEER_PORT_NAME, GOSSIP_PORT_NAME];

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "tern-operator";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// On everything that belongs to a cluster, including users' credentials Secrets, so that a
/// change to any of them can be traced back to the cluster.
pub const LABEL_CLUSTER: &str = "tern.dev/cluster";
/// Hash of the broker configuration, on the pod template: a new configuration rolls the pods.
pub const ANNOTATION_CONFIG_HASH: &str = "tern.dev/config-hash";
/// On the server-certificate Secret: what the certificate was issued for, so that a change of
/// names or CA reissues it.
pub const ANNOTATION_ISSUED_FOR: &str = "tern.dev/issued-for";
/// On a user's credentials Secret: what its client certificate was issued for (username and CA),
/// so that a change of either reissues it.
pub const ANNOTATION_CLIENT_CERT_FOR: &str = "tern.dev/client-certificate-for";

/// The names of one cluster's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNames {
    pub name: String,
    pub namespace: String,
}

impl ClusterNames {
    pub fn new(name: &str, namespace: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    pub fn statefulset(&self) -> String {
        self.name.clone()
    }

    pub fn client_service(&self) -> String {
        self.name.clone()
    }

    pub fn headless_service(&self) -> String {
        format!("{}-headless", self.name)
    }

    pub fn config_map(&self) -> String {
        format!("{}-config", self.name)
    }

    /// The CA certificate and key; never mounted into pods whole.
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.name)
    }

    /// The operator-issued (or cert-manager-issued) server certificate.
    pub fn tls_secret(&self) -> String {
        format!("{}-tls", self.name)
    }

    /// The certificate the brokers present to each other on peer links.
    pub fn peer_tls_secret(&self) -> String {
        format!("{}-peer-tls", self.name)
    }

    /// The rendered users and ACL files.
    pub fn auth_secret(&self) -> String {
        format!("{}-auth", self.name)
    }

    /// The admin API token the brokers and the operator share.
    pub fn admin_secret(&self) -> String {
        format!("{}-admin", self.name)
    }

    pub fn pdb(&self) -> String {
        self.name.clone()
    }

    pub fn service_monitor(&self) -> String {
        self.name.clone()
    }

    pub fn certificate(&self) -> String {
        self.name.clone()
    }

    pub fn network_policy(&self) -> String {
        self.name.clone()
    }

    /// The name the brokers of this cluster gossip and that their peer certificate carries:
    /// `NAMESPACE.NAME`, unique in the Kubernetes cluster. Namespace first, so that the last label
    /// is the MqttCluster's name, which validation keeps a DNS label starting with a letter (a TLS
    /// name must not end in an all-numeric label, and a namespace may be all digits).
    pub fn cluster_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// The gossip seed: the headless Service's DNS name, which resolves to every pod, ready or
    /// not, at the cluster port.
    pub fn seed(&self, cluster_domain: &str) -> String {
        format!(
            "{}.{}.svc.{cluster_domain}:{CLUSTER_PORT}",
            self.headless_service(),
            self.namespace
        )
    }

    /// `NAME-N`, the StatefulSet's pod with ordinal `n`.
    pub fn pod(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.name)
    }

    /// The client Service's in-cluster DNS name.
    pub fn service_host(&self, cluster_domain: &str) -> String {
        format!("{}.{}.svc.{cluster_domain}", self.name, self.namespace)
    }

    /// Labels that select the broker pods; also the StatefulSet's selector.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NAME.to_owned(), "tern-broker".to_owned()),
            (LABEL_INSTANCE.to_owned(), self.name.clone()),
        ])
    }

    /// `selector_labels` as a label-selector string (`status.selector`, list calls).
    pub fn selector(&self) -> String {
        self.selector_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Labels on every object of the cluster.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(LABEL_MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned());
        labels.insert(LABEL_CLUSTER.to_owned(), self.name.clone());
        labels.insert(LABEL_COMPONENT.to_owned(), component.to_owned());
        labels
    }

    /// Every name the server certificate must be valid for: the client Service, the headless
    /// Service and each pod behind it, short and fully qualified.
    pub fn server_hostnames(&self, cluster_domain: &str, extra: &[String]) -> Vec<String> {
        let ns = &self.namespace;
        let mut names = Vec::new();
        for service in [self.client_service(), self.headless_service()] {
            names.push(service.clone());
            names.push(format!("{service}.{ns}"));
            names.push(format!("{service}.{ns}.svc"));
            names.push(format!("{service}.{ns}.svc.{cluster_domain}"));
        }
        let headless = self.headless_service();
        names.push(format!("*.{headless}.{ns}.svc"));
        names.push(format!("*.{headless}.{ns}.svc.{cluster_domain}"));
        for name in extra {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_cover_services_pods_and_extras_once() {
        let names = ClusterNames::new("demo", "iot");
        let hosts = names.server_hostnames(
            "cluster.local",
            &["mqtt.example.com".into(), "demo.iot.svc".into()],
        );
        for expected in [
            "demo",
            "demo.iot.svc.cluster.local",
            "demo-headless.iot.svc",
            "*.demo-headless.iot.svc.cluster.local",
            "mqtt.example.com",
        ] {
            assert!(hosts.iter().any(|h| h == expected), "{expected} missing");
        }
        assert_eq!(hosts.iter().filter(|h| *h == "demo.iot.svc").count(), 1);
    }

    #[test]
    fn the_cluster_is_named_after_namespace_and_name_and_seeded_by_the_headless_service() {
        let names = ClusterNames::new("demo", "iot");
        assert_eq!(names.cluster_name(), "iot.demo");
        assert_eq!(
            names.seed("cluster.local"),
            "demo-headless.iot.svc.cluster.local:4370"
        );
        assert_eq!(names.peer_tls_secret(), "demo-peer-tls");
    }

    #[test]
    fn the_selector_string_matches_the_labels() {
        let names = ClusterNames::new("demo", "iot");
        assert_eq!(
            names.selector(),
            "app.kubernetes.io/instance=demo,app.kubernetes.io/name=tern-broker"
        );
    }
}
