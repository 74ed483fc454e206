//! The broker configuration file (`broker.yaml`), in the broker's own format
//! (`docs/configuration.md`), and the `NAME-config` ConfigMap that carries it. Every pod of a
//! cluster gets the same file; pod-specific values come from the environment, which the broker
//! expands (`${POD_NAME}`) when it loads the file.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{Map, Value, json};

use super::names::{CLUSTER_PORT, ClusterNames, HTTP_PORT, env, keys, paths};
use crate::crd::{
    BrokerSettings, ClientCertificates, ListenerSpec, MqttClusterSpec, PersistenceSpec,
};

/// `NAME-config` with `config` (the text [`broker_config`] renders) under `broker.yaml`.
pub fn config_map(names: &ClusterNames, owner: OwnerReference, config: String) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(names.config_map()),
            namespace: Some(names.namespace.clone()),
            labels: Some(names.labels("config")),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(keys::CONFIG.into(), config)])),
        ..Default::default()
    }
}

/// Renders `broker.yaml` for the cluster `names`, whose pods find each other through the DNS of
/// `cluster_domain`.
pub fn broker_config(names: &ClusterNames, spec: &MqttClusterSpec, cluster_domain: &str) -> String {
    let mut config = json!({
        "listeners": spec.listeners.iter().map(listener).collect::<Vec<_>>(),
        "http": {
            "bind": format!("0.0.0.0:{HTTP_PORT}"),
            "admin_token_file": format!("{}/{}", paths::ADMIN_DIR, keys::ADMIN_TOKEN),
        },
        "auth": {
            "allow_anonymous": spec.allow_anonymous,
            "users_file": format!("{}/{}", paths::AUTH_DIR, keys::USERS),
            "acl_file": format!("{}/{}", paths::AUTH_DIR, keys::ACL),
            // The operator pushes users and ACL through the admin API at once; the poll is the
            // backstop that picks up kubelet's later refresh of the Secret volume.
            "reload_poll_secs": 10,
            // Every MqttUser has a users-file line, so a client certificate logs in only while
            // its MqttUser exists: deleting the user revokes the certificate at once.
            "certificate_identities": "listed",
        },
        "log": {
            "level": spec.broker.log_level.as_deref().unwrap_or("info"),
            "format": "json",
        },
        "limits": limits(&spec.broker),
        "features": features(&spec.broker),
    });
    // Everything so far is taken literally from the spec; `$` must not start an expansion.
    escape_dollars(&mut config);
    config["cluster"] = cluster(names, cluster_domain);
    if let Some(persistence) = &spec.persistence {
        config["storage"] = storage(persistence);
    }
    let header = "# Rendered by tern-operator from the MqttCluster; edits are overwritten.\n";
    // A JSON value of strings, numbers and booleans always serializes.
    format!(
        "{header}{}",
        serde_yaml::to_string(&config).unwrap_or_default()
    )
}

/// The `cluster` section: every pod of the StatefulSet is a node of one Tern cluster named after
/// the MqttCluster, which finds the others through the headless Service and links to them over
/// mutual TLS with the peer certificate.
fn cluster(names: &ClusterNames, cluster_domain: &str) -> Value {
    let peer_file = |key: &str| format!("{}/{key}", paths::PEER_DIR);
    json!({
        "name": names.cluster_name(),
        // The pod's own name and address, which the StatefulSet gives it from the downward API.
        "node_id": format!("${{{}}}", env::POD_NAME),
        "bind": format!("0.0.0.0:{CLUSTER_PORT}"),
        "advertise": format!("${{{}}}:{CLUSTER_PORT}", env::POD_IP),
        "seeds": [names.seed(cluster_domain)],
        "tls": {
            "cert_file": peer_file(keys::TLS_CERT),
            "key_file": peer_file(keys::TLS_KEY),
            "ca_file": peer_file(keys::CA_CERT),
        },
    })
}

/// The `storage` section: the broker keeps its sessions and retained messages on the pod's
/// volume, mounted at the data directory.
fn storage(persistence: &PersistenceSpec) -> Value {
    let mut storage = json!({
        "dir": paths::DATA_DIR,
        "durability": persistence.durability.as_str(),
    });
    if let Some(interval) = persistence.batch_interval_ms {
        storage["batch_interval_ms"] = interval.into();
    }
    storage
}

/// Doubles every `$` in the strings of `value`: the broker reads `$$` as a literal `$` and
/// `${NAME}` as an environment variable, and a spec's value (a WebSocket path, a log filter) is
/// meant as written.
fn escape_dollars(value: &mut Value) {
    match value {
        Value::String(text) if text.contains('$') => *text = text.replace('$', "$$"),
        Value::Array(items) => items.iter_mut().for_each(escape_dollars),
        Value::Object(map) => map.values_mut().for_each(escape_dollars),
        _ => {}
    }
}

fn listener(spec: &ListenerSpec) -> Value {
    let mut listener = Map::new();
    listener.insert("name".into(), spec.name.clone().into());
    listener.insert("protocol".into(), spec.protocol.as_str().into());
    listener.insert("bind".into(), format!("0.0.0.0:{}", spec.port).into());
    if spec.proxy_protocol {
        listener.insert("proxy_protocol".into(), true.into());
    }
    if let Some(max) = spec.max_connections {
        listener.insert("max_connections".into(), max.into());
    }
    if spec.protocol.uses_tls() {
        let mut tls = Map::new();
        tls.insert(
            "cert_file".into(),
            format!("{}/{}", paths::TLS_DIR, keys::TLS_CERT).into(),
        );
        tls.insert(
            "key_file".into(),
            format!("{}/{}", paths::TLS_DIR, keys::TLS_KEY).into(),
        );
        if spec.client_certificates != ClientCertificates::None {
            tls.insert(
                "client_ca_file".into(),
                format!("{}/{}", paths::CLIENT_CA_DIR, keys::CA_CERT).into(),
            );
            tls.insert("use_identity_as_username".into(), true.into());
            tls.insert(
                "require_client_certificate".into(),
                (spec.client_certificates == ClientCertificates::Required).into(),
            );
        }
        listener.insert("tls".into(), Value::Object(tls));
    }
    if spec.protocol.uses_websocket() {
        listener.insert(
            "websocket".into(),
            json!({ "path": spec.path.as_deref().unwrap_or("/mqtt") }),
        );
    }
    Value::Object(listener)
}

fn limits(settings: &BrokerSettings) -> Value {
    let mut limits = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            limits.insert(key.into(), value);
        }
    };
    put("max_connections", settings.max_connections.map(Value::from));
    put(
        "max_connection_rate",
        settings.max_connection_rate.map(Value::from),
    );
    put("max_packet_size", settings.max_packet_size.map(Value::from));
    put("max_inflight", settings.max_inflight.map(Value::from));
    put(
        "max_queued_messages",
        settings.max_queued_messages.map(Value::from),
    );
    put(
        "queue_overflow",
        settings.queue_overflow.clone().map(Value::from),
    );
    put(
        "backlog_high_water",
        settings.backlog_high_water.map(Value::from),
    );
    put(
        "backlog_max_pause_ms",
        settings.backlog_max_pause_millis.map(Value::from),
    );
    put(
        "backlog_max_delay_ms",
        settings.backlog_max_delay_millis.map(Value::from),
    );
    put(
        "park_after_idle_ms",
        settings.park_after_idle_millis.map(Value::from),
    );
    put(
        "max_session_expiry_secs",
        settings.max_session_expiry_seconds.map(Value::from),
    );
    put(
        "max_publish_rate",
        settings.max_publish_rate.map(Value::from),
    );
    put(
        "max_subscriptions_per_client",
        settings.max_subscriptions_per_client.map(Value::from),
    );
    Value::Object(limits)
}

fn features(settings: &BrokerSettings) -> Value {
    let mut features = Map::new();
    if let Some(qos) = settings.maximum_qos {
        features.insert("maximum_qos".into(), qos.into());
    }
    if let Some(retain) = settings.retain_available {
        features.insert("retain_available".into(), retain.into());
    }
    Value::Object(features)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MqttCluster;

    fn render(yaml: &str) -> String {
        let cluster: MqttCluster = serde_yaml::from_str(yaml).unwrap();
        broker_config(
            &ClusterNames::new("demo", "iot"),
            &cluster.spec,
            "cluster.local",
        )
    }

    /// What a pod's environment holds.
    fn pod_env(name: &str) -> Option<String> {
        match name {
            "POD_NAME" => Some("demo-1".into()),
            "POD_IP" => Some("10.1.2.3".into()),
            _ => None,
        }
    }

    /// The file as a pod's broker sees it, with its environment expanded.
    fn expanded(text: &str) -> String {
        tern_broker::config::expand_env(text, pod_env)
            .unwrap_or_else(|name| panic!("${{{name}}} is not in a pod's environment\n{text}"))
    }

    /// The broker's own parser is the judge: what the operator renders must load in a pod.
    fn parses(text: &str) -> tern_broker::Config {
        tern_broker::Config::from_yaml(&expanded(text), "broker.yaml")
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn the_config_map_carries_the_file_and_belongs_to_the_cluster() {
        let cluster: MqttCluster = serde_yaml::from_str(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo, namespace: iot, uid: u1}\nspec: {}\n",
        )
        .unwrap();
        let names = ClusterNames::new("demo", "iot");
        let owner = kube::Resource::controller_owner_ref(&cluster, &()).unwrap();
        let text = broker_config(&names, &cluster.spec, "cluster.local");
        let map = config_map(&names, owner, text.clone());
        assert_eq!(map.metadata.name.as_deref(), Some("demo-config"));
        assert_eq!(map.metadata.namespace.as_deref(), Some("iot"));
        let labels = map.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[super::super::names::LABEL_COMPONENT], "config");
        assert_eq!(labels[super::super::names::LABEL_CLUSTER], "demo");
        let owners = map.metadata.owner_references.as_ref().unwrap();
        assert_eq!(
            (owners[0].uid.as_str(), owners[0].controller),
            ("u1", Some(true))
        );
        let data = map.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["broker.yaml"]);
        assert_eq!(data["broker.yaml"], text);
        parses(&data["broker.yaml"]);
    }

    /// `persistence` keeps sessions and retained messages on the pod's volume; without it the
    /// broker keeps them in memory.
    #[test]
    fn persistence_renders_storage_on_the_data_volume() {
        let text = render(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {persistence: {size: 2Gi, durability: batched, batchIntervalMs: 25}}\n",
        );
        let storage = parses(&text).storage.unwrap();
        assert_eq!(storage.dir.to_str(), Some("/var/lib/tern"));
        assert_eq!(storage.durability, tern_broker::config::Durability::Batched);
        assert_eq!(storage.batch_interval_ms, 25);

        let text = render(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {persistence: {}}\n",
        );
        let storage = parses(&text).storage.unwrap();
        assert_eq!(storage.durability, tern_broker::config::Durability::Sync);

        let text = render(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {}\n",
        );
        assert!(parses(&text).storage.is_none());
    }

    #[test]
    fn the_defaults_render_a_config_the_broker_accepts() {
        let text = render(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {}\n",
        );
        let config = parses(&text);
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].bind.to_string(), "0.0.0.0:1883");
        assert!(!config.auth.allow_anonymous);
        assert!(config.auth.users_file.is_some() && config.auth.acl_file.is_some());
        assert_eq!(
            config.auth.certificate_identities,
            tern_broker::config::CertificateIdentities::Listed
        );
        let http = config.http.unwrap();
        assert!(http.admin_token_file.is_some());
    }

    #[test]
    fn every_listener_kind_and_setting_renders_and_loads() {
        let text = render(
            r#"
apiVersion: tern.dev/v1alpha1
kind: MqttCluster
metadata: {name: demo}
spec:
  allowAnonymous: true
  listeners:
    - {name: mqtt, port: 1883, proxyProtocol: true, maxConnections: 100}
    - {name: mqtts, protocol: tls, port: 8883, clientCertificates: required}
    - {name: ws, protocol: ws, port: 8080, path: /ws}
    - {name: wss, protocol: wss, port: 8443, clientCertificates: optional}
  tls: {}
  broker:
    logLevel: debug
    maxConnections: 5000
    maxConnectionRate: 100
    maxPacketSize: 65536
    maxInflight: 32
    maxQueuedMessages: 100
    queueOverflow: disconnect
    backlogHighWater: 50
    backlogMaxPauseMillis: 250
    backlogMaxDelayMillis: 20
    parkAfterIdleMillis: 5000
    maxSessionExpirySeconds: 3600
    maxPublishRate: 50
    maxSubscriptionsPerClient: 10
    maximumQos: 1
    retainAvailable: false
"#,
        );
        let config = parses(&text);
        assert!(config.auth.allow_anonymous);
        assert_eq!(config.listeners.len(), 4);
        assert!(config.listeners[0].proxy_protocol);
        assert_eq!(config.listeners[0].max_connections, Some(100));
        let mqtts = config.listeners[1].tls.as_ref().unwrap();
        assert!(mqtts.require_client_certificate && mqtts.use_identity_as_username);
        assert_eq!(
            config.listeners[2].websocket.as_ref().unwrap().path,
            "/ws".to_owned()
        );
        let wss = config.listeners[3].tls.as_ref().unwrap();
        assert!(!wss.require_client_certificate && wss.client_ca_file.is_some());
        assert_eq!(config.limits.max_packet_size, 65536);
        assert_eq!(config.limits.max_inflight, 32);
        assert_eq!(config.limits.backlog_high_water, 50);
        assert_eq!(config.limits.backlog_max_pause_ms, 250);
        assert_eq!(config.limits.backlog_max_delay_ms, 20);
        assert_eq!(config.limits.park_after_idle_ms, 5000);
        assert_eq!(config.limits.max_subscriptions_per_client, Some(10));
        assert_eq!(config.features.maximum_qos, 1);
        assert!(!config.features.retain_available);
        assert_eq!(config.log.level, "debug");
    }

    #[test]
    fn every_pod_is_a_node_of_one_cluster_linked_over_mutual_tls() {
        let text = render(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {}\n",
        );
        assert!(
            text.contains("${POD_NAME}") && text.contains("${POD_IP}:4370"),
            "{text}"
        );
        let cluster = parses(&text).cluster.expect("a cluster section");
        assert_eq!(cluster.name, "iot.demo");
        assert_eq!(cluster.node_id, "demo-1");
        assert_eq!(cluster.bind.to_string(), "0.0.0.0:4370");
        assert_eq!(cluster.advertise_addr().to_string(), "10.1.2.3:4370");
        assert_eq!(cluster.seeds, ["demo-headless.iot.svc.cluster.local:4370"]);
        let tls = cluster.tls.expect("peer TLS");
        assert_eq!(tls.cert_file.to_str(), Some("/etc/tern/peer/tls.crt"));
        assert_eq!(tls.key_file.to_str(), Some("/etc/tern/peer/tls.key"));
        assert_eq!(tls.ca_file.to_str(), Some("/etc/tern/peer/ca.crt"));
        // The broker's defaults for the failure detector and the queues.
        assert_eq!(cluster.gossip_interval_ms, 500);
        let spec: MqttCluster = serde_yaml::from_str(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo}\nspec: {}\n",
        )
        .unwrap();
        let other = broker_config(
            &ClusterNames::new("demo", "iot"),
            &spec.spec,
            "example.internal",
        );
        let seeds = parses(&other).cluster.expect("a cluster section").seeds;
        assert_eq!(seeds, ["demo-headless.iot.svc.example.internal:4370"]);
    }

    #[test]
    fn a_dollar_in_the_spec_is_taken_literally() {
        let text = render(
            r#"
apiVersion: tern.dev/v1alpha1
kind: MqttCluster
metadata: {name: demo}
spec:
  listeners: [{name: ws, protocol: ws, port: 8080, path: "/a$b${POD_NAME}$$"}]
  broker: {logLevel: "info,x=${HOME}"}
"#,
        );
        let config: serde_yaml::Value = serde_yaml::from_str(&expanded(&text)).unwrap();
        assert_eq!(
            config["listeners"][0]["websocket"]["path"].as_str(),
            Some("/a$b${POD_NAME}$$")
        );
        assert_eq!(config["log"]["level"].as_str(), Some("info,x=${HOME}"));
        assert_eq!(config["cluster"]["node_id"].as_str(), Some("demo-1"));
    }
}
