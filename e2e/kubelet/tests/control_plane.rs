//! The kubelet against the real control plane (`e2e/control-plane/start.sh`): a StatefulSet of two
//! brokers becomes Ready as the StatefulSet controller counts it, serves MQTT on its pod address, sees
//! its ConfigMap change, and scales down through the preStop hook.
//!
//! Run: `cargo build -p tern-broker && KUBECONFIG=$(e2e/control-plane/start.sh) cargo test -p
//! tern-test-kubelet -- --ignored --nocapture`. Uses a namespace `kubelet-test-<pid>` and a node of
//! the same name, and deletes both at the end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, ServiceAccount};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use tern_test_kubelet::{BinaryMap, IpPrefix, Kubelet, KubeletConfig, KubeletHandle};

const STATEFULSET: &str = "tern";

fn broker_config(revision: u32) -> String {
    format!(
        "# revision {revision}; this file is /etc/tern/config/broker.yaml\n\
         listeners:\n  - {{name: mqtt, protocol: tcp, bind: \"0.0.0.0:1883\"}}\n\
         http: {{bind: \"0.0.0.0:9090\"}}\n\
         auth: {{allow_anonymous: true}}\n"
    )
}

fn broker_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("debug/tern-broker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: scripts/test.sh runs it"]
async fn a_statefulset_of_brokers_becomes_ready_serves_mqtt_and_scales_down_through_prestop() {
    let began = Instant::now();
    let broker = broker_binary();
    assert!(
        broker.is_file(),
        "{} is missing: cargo build -p tern-broker",
        broker.display()
    );
    let kubeconfig =
        std::env::var_os("KUBECONFIG").expect("KUBECONFIG names the control plane's kubeconfig");

    let pid = std::process::id();
    let namespace = format!("kubelet-test-{pid}");
    let root = tempfile::Builder::new()
        .prefix("tern-test-kubelet-")
        .tempdir()
        .expect("root directory");
    let mut binaries = BinaryMap::default();
    binaries.insert("tern-broker", &broker);
    let config = KubeletConfig {
        kubeconfig: Some(PathBuf::from(kubeconfig)),
        namespace: Some(namespace.clone()),
        node_name: format!("{namespace}-node"),
        ip_prefix: IpPrefix([127, 78, u8::try_from(pid % 250).expect("fits") + 1]),
        binaries,
        ..KubeletConfig::new(root.path())
    };

    let client = Client::try_default().await.expect("API client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns_object =
        serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("namespace");
    namespaces
        .create(&PostParams::default(), &ns_object)
        .await
        .expect("namespace created");
    let kubelet = Kubelet::start(config.clone())
        .await
        .expect("kubelet starts");

    let outcome = AssertUnwindSafe(scenario(&client, &namespace, &kubelet))
        .catch_unwind()
        .await;
    let t = Instant::now();
    clean_up(&client, &namespace, &config.node_name, kubelet).await;
    eprintln!("clean-up took {:?}", t.elapsed());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    eprintln!("kubelet control-plane test took {:?}", began.elapsed());
}

async fn scenario(client: &Client, namespace: &str, kubelet: &KubeletHandle) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    // pods cannot be created before the namespace's default ServiceAccount exists
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    eventually("default ServiceAccount", || async {
        accounts.get_opt("default").await.ok()?.map(|_| ())
    })
    .await;
    configmaps
        .create(&PostParams::default(), &configmap(broker_config(1)))
        .await
        .expect("configmap created");
    sets.create(&PostParams::default(), &statefulset(2))
        .await
        .expect("statefulset created");

    let t = Instant::now();
    for name in ["tern-0", "tern-1"] {
        eventually(&format!("{name} Ready"), || pod_is_ready(&pods, name)).await;
    }
    eventually("readyReplicas == 2", || ready_replicas(&sets, 2)).await;
    eprintln!("two replicas ready in {:?}", t.elapsed());

    let pod0 = pods.get("tern-0").await.expect("tern-0");
    let status = pod0.status.as_ref().expect("status");
    let ip: IpAddr = status
        .pod_ip
        .as_deref()
        .expect("podIP")
        .parse()
        .expect("an address");
    assert_eq!(kubelet.pod_ip(namespace, "tern-0"), Some(ip));
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    mqtt_round_trip(ip).await;

    config_update_reaches_the_volume(&configmaps, kubelet, &pod0, ip).await;

    let pid = kubelet
        .container_pid(namespace, "tern-1", "broker")
        .expect("tern-1 runs");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let t = Instant::now();
    let scale = json!({"spec": {"replicas": 1}});
    sets.patch(STATEFULSET, &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .expect("scaled to 1");
    eventually("tern-1 deleted", || async {
        pods.get_opt("tern-1").await.ok()?.is_none().then_some(())
    })
    .await;
    eprintln!("tern-1 stopped and deleted in {:?}", t.elapsed());
    let events = kubelet.events();
    let prestop = format!("prestop {namespace}/tern-1 exit=0");
    let stop = format!("stop {namespace}/tern-1");
    let at = |line: &str| events.iter().position(|e| e == line);
    assert!(
        at(&prestop).is_some() && at(&prestop) < at(&stop),
        "{events:#?}"
    );
    let file = std::fs::read_to_string(kubelet.events_path()).expect("events.log");
    assert!(file.lines().any(|line| line == prestop), "{file}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "tern-1's broker {pid} still runs"
    );
    assert_eq!(kubelet.pod_ip(namespace, "tern-1"), None);
    eventually("readyReplicas == 1", || ready_replicas(&sets, 1)).await;
}

/// Subscribes and publishes through the broker on the pod's address.
async fn mqtt_round_trip(ip: IpAddr) {
    let mut options = MqttOptions::new("kubelet-test", ip.to_string(), 1883);
    options.set_keep_alive(Duration::from_secs(5));
    let (mqtt, mut events) = AsyncClient::new(options, 10);
    mqtt.subscribe("kubelet/test", QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    mqtt.publish(
        "kubelet/test",
        QoS::AtLeastOnce,
        false,
        b"hello pod".to_vec(),
    )
    .await
    .expect("publish queued");
    let received = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => return publish.payload,
                Ok(_) => {}
                Err(error) => panic!("MQTT connection to {ip}:1883 failed: {error}"),
            }
        }
    })
    .await
    .expect("message round-tripped in time");
    assert_eq!(&received[..], b"hello pod");
}

/// A new ConfigMap revision shows up, rewritten, in the kubelet-style volume of the running pod.
async fn config_update_reaches_the_volume(
    configmaps: &Api<ConfigMap>,
    kubelet: &KubeletHandle,
    pod: &Pod,
    ip: IpAddr,
) {
    let uid = pod.metadata.uid.as_deref().expect("uid");
    let namespace = pod.metadata.namespace.as_deref().expect("namespace");
    let volume = kubelet
        .root()
        .join(namespace)
        .join("tern-0")
        .join(uid)
        .join("volumes/config");
    let file = volume.join("broker.yaml");
    let first = std::fs::read_to_string(&file).expect("materialized config");
    assert!(first.contains(&format!("bind: \"{ip}:1883\"")), "{first}");
    assert!(
        first.contains(&format!("this file is {}\n", file.display())),
        "{first}"
    );
    assert_eq!(
        std::fs::read_link(&file).expect("a symlink"),
        Path::new("..data/broker.yaml")
    );
    let first_version = std::fs::read_link(volume.join("..data")).expect("..data");

    let t = Instant::now();
    configmaps
        .replace(
            "tern-config",
            &PostParams::default(),
            &configmap(broker_config(2)),
        )
        .await
        .expect("configmap updated");
    eventually("revision 2 materialized", || async {
        let text = std::fs::read_to_string(&file).ok()?;
        text.starts_with("# revision 2").then_some(())
    })
    .await;
    eprintln!("configmap update materialized in {:?}", t.elapsed());
    assert_ne!(
        std::fs::read_link(volume.join("..data")).expect("..data"),
        first_version
    );
}

fn configmap(broker_yaml: String) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": "tern-config"},
        "data": {"broker.yaml": broker_yaml},
    }))
    .expect("configmap")
}

fn statefulset(replicas: i32) -> StatefulSet {
    let labels =
        json!({"app.kubernetes.io/name": "tern-broker", "app.kubernetes.io/instance": STATEFULSET});
    serde_json::from_value(json!({
        "metadata": {"name": STATEFULSET},
        "spec": {
            "replicas": replicas,
            "serviceName": STATEFULSET,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "broker",
                        "image": "ghcr.io/tern-mqtt/tern-broker:0.1.0",
                        "args": ["--config", "/etc/tern/config/broker.yaml"],
                        "ports": [{"name": "mqtt", "containerPort": 1883}, {"name": "http", "containerPort": 9090}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 9090}, "periodSeconds": 1},
                        "lifecycle": {"preStop": {"exec": {"command": ["tern-broker", "--version"]}}},
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/tern/config"}],
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": "tern-config"}}],
                },
            },
        },
    }))
    .expect("statefulset")
}

async fn pod_is_ready(pods: &Api<Pod>, name: &str) -> Option<()> {
    let pod = pods.get_opt(name).await.ok()??;
    let conditions = pod.status?.conditions?;
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
        .then_some(())
}

async fn ready_replicas(sets: &Api<StatefulSet>, want: i32) -> Option<()> {
    let set = sets.get(STATEFULSET).await.ok()?;
    (set.status?.ready_replicas? == want).then_some(())
}

/// Polls `check` every 100 ms until it gives `Some`, for at most 60 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<()>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while check().await.is_none() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the namespace while the kubelet still runs (so its pods are stopped and removed the way
/// kubelet does), then stops the kubelet and removes its node.
async fn clean_up(client: &Client, namespace: &str, node: &str, kubelet: KubeletHandle) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    if let Err(error) = namespaces.delete(namespace, &DeleteParams::default()).await {
        eprintln!("deleting namespace {namespace}: {error}");
    }
    // the namespace controller gets to the pods only after a few seconds; no new pod can be created
    // in a terminating namespace, so deleting them now is safe and quicker
    let _ = pods
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match pods.list(&ListParams::default()).await {
            Ok(list) if list.items.is_empty() => break,
            Err(_) => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    kubelet.shutdown().await;
    // anything left (a failed run) is force-deleted so the namespace can go
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    let _ = pods.delete_collection(&force, &ListParams::default()).await;
    let nodes: Api<Node> = Api::all(client.clone());
    if let Err(error) = nodes.delete(node, &DeleteParams::default()).await {
        eprintln!("deleting node {node}: {error}");
    }
}
