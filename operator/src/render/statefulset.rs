//! The broker StatefulSet: non-root pods with a read-only root filesystem, probes on the broker's
//! `/healthz` and `/readyz`, a preStop that drains, and the configuration and Secrets mounted.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{
    ANNOTATION_CONFIG_HASH, CLUSTER_PORT, ClusterNames, GOSSIP_PORT_NAME, HTTP_PORT,
    HTTP_PORT_NAME, PEER_PORT_NAME, env, keys, paths,
};
use crate::crd::MqttClusterSpec;

/// The broker runs as this user and group, as distroless' `nonroot`.
const BROKER_UID: i64 = 65532;
/// Room beyond the drain timeout for the process to exit after the preStop.
const TERMINATION_MARGIN_SECS: i64 = 15;

/// What the StatefulSet is rendered from besides the spec.
#[derive(Debug, Clone)]
pub struct StatefulSetInputs<'a> {
    pub names: &'a ClusterNames,
    pub spec: &'a MqttClusterSpec,
    pub owner: OwnerReference,
    pub image: String,
    /// Replicas to apply now: the spec's, or the current count while leaving pods drain.
    pub replicas: i32,
    pub config_hash: String,
    /// The Secret with the server certificate (`tls.crt`, `tls.key`), when TLS is on.
    pub tls_secret: Option<String>,
}

pub fn statefulset(inputs: &StatefulSetInputs<'_>) -> StatefulSet {
    let names = inputs.names;
    let spec = inputs.spec;
    let mut annotations = spec.pod_annotations.clone();
    annotations.insert(ANNOTATION_CONFIG_HASH.into(), inputs.config_hash.clone());
    let mut pod_labels = names.labels("broker");
    pod_labels.extend(names.selector_labels());
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(names.statefulset()),
            namespace: Some(names.namespace.clone()),
            labels: Some(names.labels("broker")),
            owner_references: Some(vec![inputs.owner.clone()]),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(inputs.replicas),
            service_name: Some(names.headless_service()),
            // Pods start and stop together; rolling updates still go one pod at a time.
            pod_management_policy: Some("Parallel".into()),
            selector: selector(names),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod_spec(inputs)),
            },
            persistent_volume_claim_retention_policy: spec.persistence.as_ref().map(|p| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(p.retention.when_deleted.as_str().into()),
                    when_scaled: Some(p.retention.when_scaled.as_str().into()),
                }
            }),
            volume_claim_templates: spec.persistence.as_ref().map(|p| {
                vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("data".into()),
                        labels: Some(names.labels("broker")),
                        ..Default::default()
                    },
                    spec: Some(PersistentVolumeClaimSpec {
                        access_modes: Some(vec!["ReadWriteOnce".into()]),
                        storage_class_name: p.storage_class_name.clone(),
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([("storage".into(), p.size.clone())])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The broker pod: locked down, placed as the spec asks, spread over nodes by default.
fn pod_spec(inputs: &StatefulSetInputs<'_>) -> PodSpec {
    let spec = inputs.spec;
    let topology_spread_constraints = if spec.placement.topology_spread_constraints.is_empty() {
        vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(selector(inputs.names)),
            ..Default::default()
        }]
    } else {
        spec.placement.topology_spread_constraints.clone()
    };
    PodSpec {
        containers: vec![broker_container(inputs)],
        volumes: Some(volumes(inputs)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(
            i64::from(spec.drain_timeout_seconds) + TERMINATION_MARGIN_SECS,
        ),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(BROKER_UID),
            run_as_group: Some(BROKER_UID),
            fs_group: Some(BROKER_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        affinity: spec.placement.affinity.clone(),
        tolerations: non_empty(spec.placement.tolerations.clone()),
        node_selector: non_empty_map(spec.placement.node_selector.clone()),
        topology_spread_constraints: Some(topology_spread_constraints),
        priority_class_name: spec.placement.priority_class_name.clone(),
        image_pull_secrets: non_empty(spec.image_pull_secrets.clone()),
        ..Default::default()
    }
}

fn selector(names: &ClusterNames) -> LabelSelector {
    LabelSelector {
        match_labels: Some(names.selector_labels()),
        ..Default::default()
    }
}

fn broker_container(inputs: &StatefulSetInputs<'_>) -> Container {
    let spec = inputs.spec;
    let mut ports: Vec<ContainerPort> = spec
        .listeners
        .iter()
        .map(|l| ContainerPort {
            name: Some(l.name.clone()),
            container_port: l.port,
            protocol: Some("TCP".into()),
            ..Default::default()
        })
        .collect();
    let port = |name: &str, number: i32, protocol: &str| ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    ports.push(port(HTTP_PORT_NAME, HTTP_PORT, "TCP"));
    // The cluster port: peer links over TCP, gossip over UDP.
    ports.push(port(PEER_PORT_NAME, CLUSTER_PORT, "TCP"));
    ports.push(port(GOSSIP_PORT_NAME, CLUSTER_PORT, "UDP"));
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(HTTP_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    Container {
        name: "broker".into(),
        image: Some(inputs.image.clone()),
        image_pull_policy: spec.image_pull_policy.clone(),
        args: Some(vec!["--config".into(), paths::CONFIG_FILE.into()]),
        ports: Some(ports),
        // The configuration's `cluster.node_id` and `cluster.advertise` are `${POD_NAME}` and
        // `${POD_IP}:4370`: the broker expands them from these.
        env: Some(vec![
            field_env(env::POD_NAME, "metadata.name"),
            field_env(env::POD_NAMESPACE, "metadata.namespace"),
            field_env(env::POD_IP, "status.podIP"),
        ]),
        resources: spec.resources.clone(),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        startup_probe: Some(probe("/healthz", 2, 30)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "tern-broker".into(),
                        "drain".into(),
                        "--config".into(),
                        paths::CONFIG_FILE.into(),
                        "--timeout".into(),
                        spec.drain_timeout_seconds.to_string(),
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(volume_mounts(inputs)),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn client_certificates_on(spec: &MqttClusterSpec) -> bool {
    spec.listeners
        .iter()
        .any(|l| l.client_certificates != crate::crd::ClientCertificates::None)
}

fn volumes(inputs: &StatefulSetInputs<'_>) -> Vec<Volume> {
    let names = inputs.names;
    let secret = |volume: &str, secret: String, items: Option<Vec<KeyToPath>>| Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            items,
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map(),
                ..Default::default()
            }),
            ..Default::default()
        },
        secret("auth", names.auth_secret(), None),
        secret("admin", names.admin_secret(), None),
        // The peer certificate and the CA's certificate, never the CA's key.
        secret(
            "peer-tls",
            names.peer_tls_secret(),
            Some(key_items(&[keys::TLS_CERT, keys::TLS_KEY, keys::CA_CERT])),
        ),
    ];
    if let Some(tls) = &inputs.tls_secret {
        let items = key_items(&[keys::TLS_CERT, keys::TLS_KEY]);
        volumes.push(secret("tls", tls.clone(), Some(items)));
    }
    if client_certificates_on(inputs.spec) {
        // Only the CA certificate: the CA's key never leaves the operator.
        let items = key_items(&[keys::CA_CERT]);
        volumes.push(secret("client-ca", names.ca_secret(), Some(items)));
    }
    if inputs.spec.persistence.is_none() {
        volumes.push(Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    volumes
}

/// Secret keys mounted under their own names.
fn key_items(keys: &[&str]) -> Vec<KeyToPath> {
    keys.iter()
        .map(|k| KeyToPath {
            key: (*k).into(),
            path: (*k).into(),
            ..Default::default()
        })
        .collect()
}

fn volume_mounts(inputs: &StatefulSetInputs<'_>) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let mut mounts = vec![
        mount("config", paths::CONFIG_DIR, true),
        mount("auth", paths::AUTH_DIR, true),
        mount("admin", paths::ADMIN_DIR, true),
        mount("peer-tls", paths::PEER_DIR, true),
        mount("data", paths::DATA_DIR, false),
    ];
    if inputs.tls_secret.is_some() {
        mounts.push(mount("tls", paths::TLS_DIR, true));
    }
    if client_certificates_on(inputs.spec) {
        mounts.push(mount("client-ca", paths::CLIENT_CA_DIR, true));
    }
    mounts
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

fn non_empty_map(map: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then_some(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MqttCluster;
    use kube::Resource;

    fn render(yaml: &str) -> StatefulSet {
        let cluster: MqttCluster = serde_yaml::from_str(yaml).unwrap();
        let names = ClusterNames::new("demo", "iot");
        statefulset(&StatefulSetInputs {
            names: &names,
            spec: &cluster.spec,
            owner: cluster.controller_owner_ref(&()).unwrap_or_default(),
            image: "tern-broker:test".into(),
            replicas: cluster.spec.replicas,
            config_hash: "abc".into(),
            tls_secret: cluster.spec.tls.as_ref().map(|_| names.tls_secret()),
        })
    }

    fn pod(set: &StatefulSet) -> &PodSpec {
        set.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn pods_run_locked_down_with_probes_and_a_draining_pre_stop() {
        let set = render(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo, uid: u1}\nspec: {drainTimeoutSeconds: 30}\n",
        );
        let pod = pod(&set);
        let security = pod.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let container = &pod.containers[0];
        let container_security = container.security_context.as_ref().unwrap();
        assert_eq!(container_security.read_only_root_filesystem, Some(true));
        assert_eq!(container_security.allow_privilege_escalation, Some(false));
        let readiness = container.readiness_probe.as_ref().unwrap();
        assert_eq!(
            readiness.http_get.as_ref().unwrap().path.as_deref(),
            Some("/readyz")
        );
        let pre_stop = container
            .lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap();
        let command = pre_stop.exec.as_ref().unwrap().command.as_ref().unwrap();
        assert_eq!(&command[..2], ["tern-broker", "drain"]);
        assert!(command.ends_with(&["--timeout".into(), "30".into()]));
        assert_eq!(pod.termination_grace_period_seconds, Some(45));
        assert_eq!(
            set.spec.as_ref().unwrap().service_name.as_deref(),
            Some("demo-headless")
        );
    }

    #[test]
    fn pods_open_the_cluster_port_and_know_their_name_and_address() {
        let set = render(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {listeners: [{name: mqtt, port: 1883}]}\n",
        );
        let container = &pod(&set).containers[0];
        let ports: Vec<(&str, i32, &str)> = container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p.name.as_deref().unwrap(),
                    p.container_port,
                    p.protocol.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("mqtt", 1883, "TCP"),
                ("http", 9090, "TCP"),
                ("peer", 4370, "TCP"),
                ("gossip", 4370, "UDP")
            ]
        );
        let env: Vec<(&str, &str)> = container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| {
                let field = e.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
                (e.name.as_str(), field.field_path.as_str())
            })
            .collect();
        assert!(env.contains(&("POD_NAME", "metadata.name")), "{env:?}");
        assert!(env.contains(&("POD_IP", "status.podIP")), "{env:?}");
    }

    #[test]
    fn the_ca_key_is_never_mounted() {
        let set = render(
            r#"
apiVersion: tern.dev/v1alpha1
kind: MqttCluster
metadata: {name: demo}
spec:
  listeners: [{name: mqtts, protocol: tls, port: 8883, clientCertificates: required}]
  tls: {}
"#,
        );
        let volumes = pod(&set).volumes.as_ref().unwrap();
        let client_ca = volumes.iter().find(|v| v.name == "client-ca").unwrap();
        let items = client_ca.secret.as_ref().unwrap().items.as_ref().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].key, "ca.crt");
        let tls = volumes.iter().find(|v| v.name == "tls").unwrap();
        assert_eq!(
            tls.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("demo-tls")
        );
    }

    #[test]
    fn every_pod_mounts_the_peer_certificate_without_the_ca_key() {
        let set = render(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {}\n",
        );
        let pod = pod(&set);
        let peer = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "peer-tls")
            .unwrap();
        let source = peer.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some("demo-peer-tls"));
        let keys: Vec<&str> = source
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(keys, ["tls.crt", "tls.key", "ca.crt"]);
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "peer-tls")
            .unwrap();
        assert_eq!(mount.mount_path, "/etc/tern/peer");
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn persistence_adds_a_claim_template_instead_of_an_empty_dir() {
        let set = render(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {persistence: {size: 5Gi}}\n",
        );
        let claims = set
            .spec
            .as_ref()
            .unwrap()
            .volume_claim_templates
            .as_ref()
            .unwrap();
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let retention = set
            .spec
            .as_ref()
            .unwrap()
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(
            (
                retention.when_deleted.as_deref(),
                retention.when_scaled.as_deref()
            ),
            (Some("Retain"), Some("Retain")),
            "volumes are kept by default"
        );
        assert!(
            pod(&set)
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .all(|v| v.empty_dir.is_none())
        );
    }

    #[test]
    fn the_volumes_go_with_the_pods_when_asked() {
        let set = render(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {persistence: {retention: {whenScaled: Delete, whenDeleted: Delete}}}\n",
        );
        let retention = set
            .spec
            .unwrap()
            .persistent_volume_claim_retention_policy
            .unwrap();
        assert_eq!(
            (
                retention.when_deleted.as_deref(),
                retention.when_scaled.as_deref()
            ),
            (Some("Delete"), Some("Delete"))
        );
        let set = render(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {}\n",
        );
        assert!(
            set.spec
                .unwrap()
                .persistent_volume_claim_retention_policy
                .is_none()
        );
    }
}
