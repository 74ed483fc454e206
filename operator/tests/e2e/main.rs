//! The operator against a real control plane: the Helm chart installed with `helm`, the operator
//! running with exactly the chart's RBAC, the examples applied with `kubectl`, broker pods run by
//! `tern-test-kubelet`, and real MQTT clients. `scripts/test.sh` starts the control plane and runs
//! these with `--ignored`.

// The harness's helpers are test code: a failed expectation is the test's failure message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod cluster;
mod failover;
mod mqtt;
mod support;
mod tls;

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use serde_json::json;
use tern_operator::crd::{MqttAcl, MqttCluster, MqttUser, is_true};

use mqtt::{Credentials, connect};
use support::{Env, eventually, workspace};

const LONG: Duration = Duration::from_secs(90);
const SHORT: Duration = Duration::from_secs(30);
/// The v5 reason code a drained broker sends: use another server.
const USE_ANOTHER_SERVER: u8 = 0x9C;

fn example(name: &str) -> String {
    std::fs::read_to_string(workspace().join("examples").join(name)).expect("example file")
}

/// The example cluster, with the loopback addresses the kubelet stand-in gives pods added to the
/// certificate (`spec.tls.extraHostnames`), so clients can verify it when connecting by address.
fn example_cluster(ip_prefix: [u8; 3]) -> String {
    let mut cluster: serde_json::Value =
        serde_yaml::from_str(&example("cluster.yaml")).expect("cluster yaml");
    let [a, b, c] = ip_prefix;
    let addresses: Vec<String> = (2..12).map(|n| format!("{a}.{b}.{c}.{n}")).collect();
    cluster["spec"]["tls"]["extraHostnames"] = json!(addresses);
    // No Prometheus Operator here; the ServiceMonitor is skipped without its CRD anyway.
    serde_yaml::to_string(&cluster).expect("yaml")
}

async fn cluster_ready(env: &Env, name: &str) -> MqttCluster {
    let api: Api<MqttCluster> = Api::namespaced(env.admin.clone(), &env.namespace);
    eventually(&format!("MqttCluster {name} Ready"), LONG, || async {
        let cluster = api.get(name).await.ok()?;
        let status = cluster.status.as_ref()?;
        (is_true(&status.conditions, "Ready")
            && status.observed_generation == cluster.metadata.generation)
            .then_some(cluster)
    })
    .await
}

async fn credentials(env: &Env, secret: &str) -> Credentials {
    let api: Api<Secret> = Api::namespaced(env.admin.clone(), &env.namespace);
    eventually(&format!("credentials Secret {secret}"), SHORT, || async {
        let data = api.get(secret).await.ok()?.data?;
        let text = |k: &str| {
            data.get(k)
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        };
        Some(Credentials {
            username: text("username")?,
            password: text("password")?,
            ca_pem: text("ca.crt")?,
        })
    })
    .await
}

/// A PUBACK that accepted the message; 0x10 only says nobody was subscribed [MQTT-3.4.2.1].
fn accepted(reason: PubAckReason) -> bool {
    matches!(
        reason,
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers
    )
}

/// A rendered broker configuration as a pod's broker loads it, `${POD_NAME}` and `${POD_IP}`
/// expanded as they would be in pod `demo-0`.
fn load_config(text: &str) -> Result<tern_broker::Config, String> {
    let expanded = tern_broker::config::expand_env(text, |name| match name {
        "POD_NAME" => Some("demo-0".to_owned()),
        "POD_IP" => Some("10.1.2.3".to_owned()),
        _ => None,
    })
    .map_err(|name| format!("${{{name}}} is not in a pod's environment"))?;
    tern_broker::Config::from_yaml(&expanded, "broker.yaml").map_err(|e| e.to_string())
}

fn pod_ip(env: &Env, pod: &str) -> IpAddr {
    env.kubelet()
        .pod_ip(&env.namespace, pod)
        .unwrap_or_else(|| panic!("{pod} has no address"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the control plane: scripts/test.sh runs it"]
async fn operator_end_to_end() {
    let prefix = [127, 77, 1];
    let env = Env::start("op", prefix).await;

    let cluster_yaml = example_cluster(prefix);
    env.apply(&cluster_yaml)
        .expect("kubectl apply examples/cluster.yaml");
    let cluster = cluster_ready(&env, "demo").await;
    every_object_is_as_specified(&env, &cluster).await;
    cluster::the_peer_certificate_names_the_cluster(&env, &cluster).await;
    cluster::the_network_policy_keeps_the_cluster_port_to_the_clusters_pods(&env, &cluster).await;
    cluster::the_brokers_form_one_cluster(&env, "demo", &["demo-0", "demo-1", "demo-2"]).await;

    env.apply(&example("users.yaml"))
        .expect("kubectl apply examples/users.yaml");
    env.apply(&example("acl.yaml"))
        .expect("kubectl apply examples/acl.yaml");
    generated_credentials_connect_over_tls_and_the_acl_is_enforced(&env).await;
    cluster::a_message_published_on_one_pod_reaches_a_subscriber_on_another(&env).await;
    changing_a_rule_takes_effect_without_a_restart(&env).await;
    a_deleted_or_edited_child_is_repaired(&env).await;
    cluster::the_network_policy_is_repaired_and_can_be_turned_off(&env).await;
    spec_edits_converge(&env).await;
    scale_down_drains_before_the_statefulset_shrinks(&env).await;
    invalid_resources_are_refused_or_reported(&env).await;
    what_the_schema_lets_through_but_the_operator_cannot_use_waits(&env).await;
    a_failed_reconcile_is_recorded_and_retried_until_it_succeeds(&env).await;
    deleting_the_cluster_collects_its_children(&env).await;

    let metrics = env.operator_metrics().await;
    assert!(
        metrics.contains("tern_operator_reconcile_total{controller=\"cluster\",result=\"ok\"}"),
        "{metrics}"
    );
    env.stop().await;
}

async fn every_object_is_as_specified(env: &Env, cluster: &MqttCluster) {
    let client = env.admin.clone();
    let ns = &env.namespace;
    let uid = cluster.uid().expect("uid");
    let owned_by_cluster =
        |refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
            refs.iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        };

    let set = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get("demo")
        .await
        .expect("StatefulSet");
    assert!(owned_by_cluster(set.owner_references()));
    let spec = set.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("demo-headless"));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let container = &pod.containers[0];
    let cluster_ports: Vec<(Option<&str>, i32, Option<&str>)> = container
        .ports
        .iter()
        .flatten()
        .filter(|p| p.container_port == 4370)
        .map(|p| (p.name.as_deref(), p.container_port, p.protocol.as_deref()))
        .collect();
    assert_eq!(
        cluster_ports,
        [
            (Some("peer"), 4370, Some("TCP")),
            (Some("gossip"), 4370, Some("UDP"))
        ]
    );
    let downward: Vec<(&str, &str)> = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let field = e.value_from.as_ref()?.field_ref.as_ref()?;
            Some((e.name.as_str(), field.field_path.as_str()))
        })
        .collect();
    assert!(
        downward.contains(&("POD_NAME", "metadata.name")),
        "{downward:?}"
    );
    assert!(
        downward.contains(&("POD_IP", "status.podIP")),
        "{downward:?}"
    );
    let security = container
        .security_context
        .as_ref()
        .expect("container security");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert!(
        container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .is_some()
    );

    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let headless = services
        .get("demo-headless")
        .await
        .expect("headless Service");
    assert!(owned_by_cluster(headless.owner_references()));
    let headless_spec = headless.spec.expect("spec");
    assert_eq!(headless_spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless_spec.publish_not_ready_addresses, Some(true));
    let headless_ports: Vec<(i32, &str)> = headless_spec
        .ports
        .iter()
        .flatten()
        .map(|p| (p.port, p.protocol.as_deref().unwrap_or_default()))
        .collect();
    assert!(
        headless_ports.contains(&(4370, "TCP")) && headless_ports.contains(&(4370, "UDP")),
        "{headless_ports:?}"
    );
    let client_service = services.get("demo").await.expect("client Service");
    let ports: Vec<i32> = client_service
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, vec![1883, 8883, 8080]);

    let config = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("demo-config")
        .await
        .expect("ConfigMap");
    let text = config
        .data
        .as_ref()
        .and_then(|d| d.get("broker.yaml"))
        .expect("broker.yaml");
    let loaded = load_config(text).expect("the rendered config loads in the broker");
    let section = loaded.cluster.expect("a cluster section");
    assert_eq!(section.name, format!("{ns}.demo"));
    assert_eq!(section.node_id, "demo-0");
    assert_eq!(
        section.seeds,
        [format!("demo-headless.{ns}.svc.cluster.local:4370")]
    );

    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in [
        "demo-ca",
        "demo-tls",
        "demo-peer-tls",
        "demo-auth",
        "demo-admin",
    ] {
        let secret = secrets
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("Secret {name}: {e}"));
        assert!(
            owned_by_cluster(secret.owner_references()),
            "{name} is not owned by the cluster"
        );
    }
    let budget = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
        .get("demo")
        .await
        .expect("PDB");
    assert!(owned_by_cluster(budget.owner_references()));

    let status = cluster.status.as_ref().expect("status");
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    assert_eq!(
        status.selector,
        "app.kubernetes.io/instance=demo,app.kubernetes.io/name=tern-broker"
    );
    assert!(
        status
            .endpoints
            .iter()
            .any(|e| e.url == format!("mqtts://demo.{ns}.svc.cluster.local:8883"))
    );
    let pods: Vec<&str> = status.members.iter().map(|m| m.pod.as_str()).collect();
    assert_eq!(pods, ["demo-0", "demo-1", "demo-2"]);
    assert!(
        status
            .members
            .iter()
            .all(|m| m.ready && m.version.is_some() && m.state.is_some()),
        "{:?}",
        status.members
    );
}

async fn generated_credentials_connect_over_tls_and_the_acl_is_enforced(env: &Env) {
    let users: Api<MqttUser> = Api::namespaced(env.admin.clone(), &env.namespace);
    eventually("MqttUser alice Ready", SHORT, || async {
        let user = users.get("alice").await.ok()?;
        is_true(&user.status?.conditions, "Ready").then_some(())
    })
    .await;
    let alice = credentials(env, "alice-mqtt-credentials").await;
    assert_eq!(alice.username, "alice");
    assert!(alice.password.len() >= 24, "a generated password is long");
    let ip = pod_ip(env, "demo-0");
    // The operator pushes users within seconds; retry the connect until it is in.
    let mut session = eventually("alice connects over TLS", SHORT, || async {
        connect(ip, 8883, "alice-1", &alice).await.ok()
    })
    .await;
    // examples/acl.yaml: the sensors group may publish to sensors/%u/#; nothing allows admin/.
    // Users and ACLs are reconciled separately, and until the first MqttAcl reaches the brokers
    // everything is allowed (docs/operator.md), so wait for the refusal rather than race it.
    assert!(accepted(
        session.publish_qos1("sensors/alice/temp", "21.5").await
    ));
    let mut last = None;
    for _ in 0..(SHORT.as_secs() * 5) {
        let reason = session.publish_qos1("admin/reboot", "now").await;
        if reason == PubAckReason::NotAuthorized {
            last = None;
            break;
        }
        last = Some(reason);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        last, None,
        "admin/reboot is refused with PUBACK 0x87 once the ACL is in force [MQTT-3.4.2.1]"
    );
    assert!(
        session.subscribe("alice/#").await,
        "alice may subscribe to alice/#"
    );
    assert!(accepted(session.publish_qos1("alice/notes", "hello").await));
    assert_eq!(
        session.receive("alice/notes").await.as_deref(),
        Some("hello")
    );
    let mut wrong = alice.clone();
    wrong.password.push('x');
    assert!(
        connect(ip, 8883, "alice-2", &wrong).await.is_err(),
        "a wrong password is refused"
    );
}

async fn changing_a_rule_takes_effect_without_a_restart(env: &Env) {
    let alice = credentials(env, "alice-mqtt-credentials").await;
    let before = env
        .kubelet()
        .container_pid(&env.namespace, "demo-0", "broker");
    let acls: Api<MqttAcl> = Api::namespaced(env.admin.clone(), &env.namespace);
    let name = acls.list(&Default::default()).await.expect("acls").items[0].name_any();
    let rule =
        json!({"access": "allow", "action": "publish", "topic": "admin/#", "users": ["alice"]});
    let patch = json!([{ "op": "add", "path": "/spec/rules/0", "value": rule }]);
    acls.patch(
        &name,
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(patch).expect("patch")),
    )
    .await
    .expect("patch the ACL");
    for pod in ["demo-0", "demo-1", "demo-2"] {
        let ip = pod_ip(env, pod);
        eventually(
            &format!("{pod} allows alice to publish to admin/"),
            SHORT,
            || {
                let alice = alice.clone();
                async move {
                    let mut session = connect(ip, 8883, "alice-acl", &alice).await.ok()?;
                    accepted(session.publish_qos1("admin/reboot", "now").await).then_some(())
                }
            },
        )
        .await;
    }
    let after = env
        .kubelet()
        .container_pid(&env.namespace, "demo-0", "broker");
    assert_eq!(before, after, "the broker process was not restarted");
}

async fn a_deleted_or_edited_child_is_repaired(env: &Env) {
    let services: Api<Service> = Api::namespaced(env.admin.clone(), &env.namespace);
    let old_uid = services.get("demo").await.expect("client Service").uid();
    services
        .delete("demo", &DeleteParams::default())
        .await
        .expect("delete Service");
    eventually("the client Service is recreated", SHORT, || async {
        let service = services.get("demo").await.ok()?;
        (service.uid() != old_uid).then_some(())
    })
    .await;
    let patch = json!({ "spec": { "publishNotReadyAddresses": false } });
    services
        .patch(
            "demo-headless",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("edit the headless Service");
    eventually("the headless Service edit is undone", SHORT, || async {
        let service = services.get("demo-headless").await.ok()?;
        (service.spec?.publish_not_ready_addresses == Some(true)).then_some(())
    })
    .await;
}

async fn spec_edits_converge(env: &Env) {
    let clusters: Api<MqttCluster> = Api::namespaced(env.admin.clone(), &env.namespace);
    let patch = json!({ "spec": { "broker": { "maxConnections": 777 } } });
    clusters
        .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edit the cluster");
    let config_maps: Api<ConfigMap> = Api::namespaced(env.admin.clone(), &env.namespace);
    eventually("the ConfigMap carries the new limit", SHORT, || async {
        let text = config_maps
            .get("demo-config")
            .await
            .ok()?
            .data?
            .remove("broker.yaml")?;
        let config = load_config(&text).ok()?;
        (config.limits.max_connections == Some(777)).then_some(())
    })
    .await;
    // The pod template's config hash changed: the StatefulSet rolls the pods one at a time, each
    // drained by its preStop, and the cluster comes back Ready.
    cluster_ready(env, "demo").await;
    let sets: Api<StatefulSet> = Api::namespaced(env.admin.clone(), &env.namespace);
    let status = sets.get("demo").await.expect("set").status.expect("status");
    assert_eq!(status.current_revision, status.update_revision);
    assert_eq!(status.updated_replicas, Some(3));
    // Every pod was replaced, one at a time: the new ones joined the remaining ones.
    cluster::members_agree(env, "demo", &["demo-0", "demo-1", "demo-2"]).await;
}

async fn scale_down_drains_before_the_statefulset_shrinks(env: &Env) {
    let alice = credentials(env, "alice-mqtt-credentials").await;
    let mut on_leaving_pod = connect(pod_ip(env, "demo-2"), 8883, "alice-leaving", &alice)
        .await
        .expect("connect to demo-2");
    // Watched from before the scale: the StatefulSet's replicas, and when they first dropped.
    let sets: Api<StatefulSet> = Api::namespaced(env.admin.clone(), &env.namespace);
    let shrunk = tokio::spawn({
        let sets = sets.clone();
        async move {
            loop {
                let replicas = sets
                    .get("demo")
                    .await
                    .ok()
                    .and_then(|s| s.spec)
                    .and_then(|s| s.replicas);
                if replicas.is_some_and(|r| r < 3) {
                    return std::time::Instant::now();
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    });
    env.kubectl(&["scale", "mqttcluster/demo", "--replicas=2"]);
    let reason = on_leaving_pod.disconnect_reason(SHORT).await;
    let told_to_move = std::time::Instant::now();
    assert_eq!(
        reason,
        Some(USE_ANOTHER_SERVER),
        "the leaving pod's client is told to move"
    );
    // The operator drained through the admin API while the StatefulSet still had three replicas:
    // the broker counts a connection as closed only once its DISCONNECT is written, so the
    // StatefulSet shrinks after the client was told to move.
    let shrunk_at = tokio::time::timeout(LONG, shrunk)
        .await
        .expect("the StatefulSet shrinks")
        .expect("the watch task");
    assert!(
        shrunk_at >= told_to_move,
        "drain happens before the StatefulSet shrinks"
    );
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), &env.namespace);
    eventually("demo-2 is gone", LONG, || async {
        pods.get_opt("demo-2").await.ok()?.is_none().then_some(())
    })
    .await;
    let cluster = cluster_ready(env, "demo").await;
    assert_eq!(cluster.status.expect("status").replicas, 2);
    // The brokers left behind drop the member that left.
    cluster::members_agree(env, "demo", &["demo-0", "demo-1"]).await;
    let metrics = env.operator_metrics().await;
    assert!(
        metrics.contains("tern_operator_drains_total{outcome=\"drained\"} 1"),
        "{metrics}"
    );
    let events = env.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=ScaledDown",
        "-o",
        "name",
    ]);
    assert!(!events.trim().is_empty(), "a ScaledDown event was recorded");
}

async fn invalid_resources_are_refused_or_reported(env: &Env) {
    let refused = env.apply(
        "apiVersion: tern.dev/v1alpha1\nkind: MqttAcl\nmetadata: {name: refused}\nspec:\n  clusterRef: {name: demo}\n  rules:\n    - {access: deny, action: publish, topic: a, everyone: true, maxQos: 1}\n",
    );
    let message = refused.expect_err("the API server refuses maxQos on a deny rule");
    assert!(
        message.contains("maxQos and retain are for allow rules only"),
        "{message}"
    );

    env.apply(
        "apiVersion: tern.dev/v1alpha1\nkind: MqttAcl\nmetadata: {name: bad-filter}\nspec:\n  clusterRef: {name: demo}\n  rules:\n    - {access: allow, action: subscribe, topic: \"a/#/b\", everyone: true}\n",
    )
    .expect("schema-valid ACL");
    let acls: Api<MqttAcl> = Api::namespaced(env.admin.clone(), &env.namespace);
    let condition = eventually("bad-filter reports InvalidRule", SHORT, || async {
        let status = acls.get("bad-filter").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.reason == "InvalidRule")
    })
    .await;
    assert!(
        condition.message.starts_with("spec.rules[0]"),
        "{}",
        condition.message
    );
    let clusters: Api<MqttCluster> = Api::namespaced(env.admin.clone(), &env.namespace);
    eventually(
        "the cluster reports the invalid ACL as Degraded",
        SHORT,
        || async {
            let status = clusters.get("demo").await.ok()?.status?;
            status
                .conditions
                .iter()
                .any(|c| {
                    c.type_ == "Degraded" && c.status == "True" && c.message.contains("bad-filter")
                })
                .then_some(())
        },
    )
    .await;
    acls.delete("bad-filter", &DeleteParams::default())
        .await
        .expect("delete bad-filter");

    env.apply(
        "apiVersion: tern.dev/v1alpha1\nkind: MqttUser\nmetadata: {name: orphan}\nspec:\n  clusterRef: {name: nowhere}\n",
    )
    .expect("user of an unknown cluster");
    env.apply(
        "apiVersion: tern.dev/v1alpha1\nkind: MqttUser\nmetadata: {name: carol}\nspec:\n  clusterRef: {name: demo}\n  passwordFrom: {secretKeyRef: {name: no-such-secret}}\n",
    )
    .expect("user with a missing Secret");
    // A Secret made by someone else under a user's credentials name, labelled to look like ours.
    env.apply(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: mallory-mqtt-credentials\n  labels: {tern.dev/cluster: demo, app.kubernetes.io/component: credentials}\nstringData: {username: mallory, password: chosen-by-mallory}\n",
    )
    .expect("look-alike Secret");
    env.apply(
        "apiVersion: tern.dev/v1alpha1\nkind: MqttUser\nmetadata: {name: mallory}\nspec:\n  clusterRef: {name: demo}\n",
    )
    .expect("user whose Secret name is taken");
    let users: Api<MqttUser> = Api::namespaced(env.admin.clone(), &env.namespace);
    for (user, reason) in [
        ("orphan", "ClusterNotFound"),
        ("carol", "PasswordSecretNotFound"),
        ("mallory", "SecretConflict"),
    ] {
        eventually(&format!("{user} reports {reason}"), SHORT, || async {
            let status = users.get(user).await.ok()?.status?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == reason)
                .then_some(())
        })
        .await;
    }
    // Users are rendered as a whole: once a user created after mallory can log in, the users file
    // the brokers hold reflects mallory's state too.
    env.apply("apiVersion: tern.dev/v1alpha1\nkind: MqttUser\nmetadata: {name: dave}\nspec:\n  clusterRef: {name: demo}\n")
        .expect("user dave");
    let dave = credentials(env, "dave-mqtt-credentials").await;
    let ip = pod_ip(env, "demo-0");
    eventually("dave connects", SHORT, || async {
        connect(ip, 8883, "dave", &dave).await.ok()
    })
    .await;
    let mut mallory = credentials(env, "alice-mqtt-credentials").await;
    mallory.username = "mallory".into();
    mallory.password = "chosen-by-mallory".into();
    assert!(
        connect(pod_ip(env, "demo-0"), 8883, "mallory", &mallory)
            .await
            .is_err(),
        "a password from a Secret the MqttUser does not own is never deployed"
    );
}

/// A spec the API server's schema accepts but the operator cannot act on: `Ready=False` with reason
/// `InvalidSpec` and the field in the message, a Warning event, the error metric, and nothing made
/// for it.
async fn what_the_schema_lets_through_but_the_operator_cannot_use_waits(env: &Env) {
    env.apply(
        "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: unusable}\nspec:\n  replicas: 1\n  tls: {managed: {validity: 1h, renewBefore: 2h}}\n",
    )
    .expect("schema-valid cluster");
    env.apply(
        "apiVersion: tern.dev/v1alpha1\nkind: MqttUser\nmetadata: {name: erin}\nspec:\n  clusterRef: {name: demo}\n  clientCertificate: {validity: 0s}\n",
    )
    .expect("schema-valid user");
    let clusters: Api<MqttCluster> = Api::namespaced(env.admin.clone(), &env.namespace);
    let users: Api<MqttUser> = Api::namespaced(env.admin.clone(), &env.namespace);
    let cluster_ready = eventually("unusable reports InvalidSpec", SHORT, || async {
        let status = clusters.get("unusable").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "InvalidSpec")
    })
    .await;
    assert_eq!(
        cluster_ready.message,
        "spec.tls.managed.renewBefore: must be shorter than validity"
    );
    let user_ready = eventually("erin reports InvalidSpec", SHORT, || async {
        let status = users.get("erin").await.ok()?.status?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "InvalidSpec")
    })
    .await;
    assert_eq!(
        user_ready.message,
        "spec.clientCertificate.validity: must be longer than zero"
    );
    let sets: Api<StatefulSet> = Api::namespaced(env.admin.clone(), &env.namespace);
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.namespace);
    assert!(sets.get_opt("unusable").await.expect("get").is_none());
    assert!(secrets.get_opt("unusable-ca").await.expect("get").is_none());
    assert!(
        secrets
            .get_opt("erin-mqtt-credentials")
            .await
            .expect("get")
            .is_none()
    );
    let events = env.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=InvalidSpec,type=Warning",
        "-o",
        "jsonpath={.items[*].involvedObject.name}",
    ]);
    for name in ["unusable", "erin"] {
        assert!(
            events.split_whitespace().any(|n| n == name),
            "a Warning event on {name}: {events}"
        );
    }
    let metrics = env.operator_metrics().await;
    for controller in ["cluster", "user"] {
        let line = format!(
            "tern_operator_reconcile_errors_total{{controller=\"{controller}\",error=\"invalid_spec\"}}"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    clusters
        .delete("unusable", &DeleteParams::default())
        .await
        .expect("delete unusable");
    users
        .delete("erin", &DeleteParams::default())
        .await
        .expect("delete erin");
}

/// A Secret of someone else's where a new cluster's CA would go: the operator does not overwrite
/// it, so creating the CA fails. The failure is counted by its kind, recorded as a Warning event
/// on the cluster, and retried; once the Secret is gone, a retry succeeds.
async fn a_failed_reconcile_is_recorded_and_retried_until_it_succeeds(env: &Env) {
    env.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: blocked-ca}\nstringData: {note: not a CA}\n")
        .expect("a Secret in the CA's place");
    env.apply(
        "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: blocked}\nspec: {replicas: 0}\n",
    )
    .expect("cluster blocked");
    eventually("a Warning event names the failed step", SHORT, || async {
        let events = env.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "reason=CaSecretConflictFailed,type=Warning,involvedObject.name=blocked",
            "-o",
            "name",
        ]);
        (!events.trim().is_empty()).then_some(())
    })
    .await;
    let metrics = env.operator_metrics().await;
    let line =
        "tern_operator_reconcile_errors_total{controller=\"cluster\",error=\"ca_secret_conflict\"}";
    assert!(metrics.contains(line), "{line} in\n{metrics}");

    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.namespace);
    secrets
        .delete("blocked-ca", &DeleteParams::default())
        .await
        .expect("delete the Secret in the way");
    let clusters: Api<MqttCluster> = Api::namespaced(env.admin.clone(), &env.namespace);
    eventually("a retry creates the CA and the status", LONG, || async {
        let ca = secrets.get_opt("blocked-ca").await.ok()??;
        let status = clusters.get("blocked").await.ok()?.status?;
        (ca.data?.contains_key("tls.crt") && status.observed_generation.is_some()).then_some(())
    })
    .await;
    clusters
        .delete("blocked", &DeleteParams::default())
        .await
        .expect("delete blocked");
}

async fn deleting_the_cluster_collects_its_children(env: &Env) {
    let clusters: Api<MqttCluster> = Api::namespaced(env.admin.clone(), &env.namespace);
    clusters
        .delete("demo", &DeleteParams::foreground())
        .await
        .expect("delete the cluster");
    let sets: Api<StatefulSet> = Api::namespaced(env.admin.clone(), &env.namespace);
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.namespace);
    eventually("children are garbage-collected", LONG, || async {
        let gone = sets.get_opt("demo").await.ok()?.is_none()
            && secrets.get_opt("demo-auth").await.ok()?.is_none()
            && secrets.get_opt("demo-ca").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
}
