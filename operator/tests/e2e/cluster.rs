//! The pods of an `MqttCluster` as one Tern cluster: the rendered `cluster` section starts every
//! broker (so `${POD_NAME}` and `${POD_IP}` are set and the peer certificate loads), each answers
//! `GET /api/v1/cluster` with its own node id, the peer certificate and the NetworkPolicy are as
//! specified, the brokers find each other through the headless Service's name (the kubelet
//! stand-in's cluster DNS), the status shows the members they agree on, and a message published on
//! one pod reaches a subscriber on another.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::Value;
use tern_operator::crd::{MemberState, MqttCluster};

use super::mqtt::connect;
use super::support::{Env, eventually};
use super::{LONG, SHORT, accepted, credentials, pod_ip};

/// The admin token the operator gave the cluster's brokers.
async fn admin_token(env: &Env, cluster: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.namespace);
    let secret = secrets
        .get(&format!("{cluster}-admin"))
        .await
        .expect("admin Secret");
    let token = secret.data.expect("data")["token"].0.clone();
    String::from_utf8(token).expect("token text")
}

/// `GET /api/v1/cluster` on a broker.
async fn cluster_view(ip: IpAddr, token: &str) -> Option<Value> {
    let response = reqwest::Client::new()
        .get(format!("http://{ip}:9090/api/v1/cluster"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Node ids a broker's view counts as joined, or as itself.
fn joined(view: &Value) -> Vec<String> {
    let mut ids: Vec<String> = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| matches!(m["state"].as_str(), Some("self" | "joined")))
        .filter_map(|m| m["node_id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

/// Waits until the status says the brokers agree on exactly `pods` (by name), every one joined.
pub async fn members_agree(env: &Env, name: &str, pods: &[&str]) -> MqttCluster {
    let api: Api<MqttCluster> = Api::namespaced(env.admin.clone(), &env.namespace);
    let expected = i32::try_from(pods.len()).expect("count");
    eventually(
        &format!("MqttCluster {name}'s brokers agree on {pods:?}"),
        LONG,
        || async {
            let cluster = api.get(name).await.ok()?;
            let status = cluster.status.as_ref()?;
            let listed: Vec<&str> = status.members.iter().map(|m| m.pod.as_str()).collect();
            let all_joined = status
                .members
                .iter()
                .all(|m| m.ready && m.state == Some(MemberState::Joined));
            (status.agreed_members == expected && listed == pods && all_joined).then_some(cluster)
        },
    )
    .await
}

/// Every broker runs with the rendered `cluster` section, answers for itself under the cluster's
/// name, and has found the others through the headless Service: each view holds all `pods` joined,
/// and the status counts them.
pub async fn the_brokers_form_one_cluster(env: &Env, name: &str, pods: &[&str]) {
    assert!(
        env.kubelet().resolves_cluster_names(),
        "the kubelet stand-in cannot give pods their own /etc/hosts on this host (unshare --mount \
         failed), so the headless Service's name does not resolve and the brokers cannot find \
         each other; see e2e/kubelet/README.md"
    );
    let token = admin_token(env, name).await;
    let cluster_name = format!("{}.{name}", env.namespace);
    let mut expected: Vec<String> = pods.iter().map(|p| (*p).to_owned()).collect();
    expected.sort();
    for pod in pods {
        let ip = pod_ip(env, pod);
        let view = eventually(&format!("{pod} has joined {pods:?}"), LONG, || async {
            let view = cluster_view(ip, &token).await?;
            (joined(&view) == expected).then_some(view)
        })
        .await;
        assert_eq!(view["name"], cluster_name.as_str(), "{view}");
        assert_eq!(view["node_id"], *pod, "{view}");
        assert_eq!(view["ready"], true, "{view}");
        let me = view["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["node_id"] == *pod)
            .expect("the broker lists itself");
        assert_eq!(
            (me["state"].as_str(), me["address"].as_str()),
            (Some("self"), Some(format!("{ip}:4370").as_str())),
            "the node advertises ${{POD_IP}}:4370: {view}"
        );
    }
    let cluster = members_agree(env, name, pods).await;
    for member in &cluster.status.expect("status").members {
        assert!(
            member.version.is_some() && member.connections.is_some() && !member.draining,
            "{member:?}"
        );
    }
    let columns = env.kubectl(&["get", "mqttcluster", name, "--no-headers"]);
    let fields: Vec<&str> = columns.split_whitespace().collect();
    let count = pods.len().to_string();
    assert_eq!(
        fields.get(1..4),
        Some([count.as_str(), count.as_str(), count.as_str()].as_slice()),
        "DESIRED, READY and MEMBERS: {columns}"
    );
}

/// `NAME-peer-tls` holds a certificate for the cluster's name from the cluster's CA, owned by the
/// cluster, and nothing of the CA's key.
pub async fn the_peer_certificate_names_the_cluster(env: &Env, cluster: &MqttCluster) {
    let name = cluster.name_any();
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.namespace);
    let secret = secrets
        .get(&format!("{name}-peer-tls"))
        .await
        .expect("peer Secret");
    let uid = cluster.uid().expect("uid");
    assert!(
        secret
            .owner_references()
            .iter()
            .any(|o| o.uid == uid && o.controller == Some(true))
    );
    let data = secret.data.expect("data");
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    let text = |key: &str| String::from_utf8(data[key].0.clone()).expect("PEM");
    let leaf = tern_operator::tls::inspect(&text("tls.crt")).expect("peer certificate");
    assert_eq!(
        leaf.hostnames,
        [format!("{}.{name}", env.namespace)],
        "the cluster's name, its only SAN"
    );
    let ca = secrets
        .get(&format!("{name}-ca"))
        .await
        .expect("CA Secret")
        .data
        .expect("data");
    let ca_pem = String::from_utf8(ca["ca.crt"].0.clone()).expect("CA PEM");
    assert_eq!(text("ca.crt"), ca_pem, "the cluster's CA");
    assert_eq!(
        leaf.issuer,
        tern_operator::tls::inspect(&ca_pem).expect("CA").subject
    );
    let ca_key = String::from_utf8(ca["tls.key"].0.clone()).expect("key PEM");
    assert!(
        !data.values().any(|v| v.0 == ca_key.as_bytes()),
        "the CA's key stays out"
    );
}

/// `NAME` admits 4370 (TCP and UDP) from the cluster's own pods only, and the listeners and 9090
/// from anywhere.
pub async fn the_network_policy_keeps_the_cluster_port_to_the_clusters_pods(
    env: &Env,
    cluster: &MqttCluster,
) {
    let name = cluster.name_any();
    let policies: Api<NetworkPolicy> = Api::namespaced(env.admin.clone(), &env.namespace);
    let policy = policies.get(&name).await.expect("NetworkPolicy");
    let uid = cluster.uid().expect("uid");
    assert!(
        policy
            .owner_references()
            .iter()
            .any(|o| o.uid == uid && o.controller == Some(true))
    );
    let brokers = BTreeMap::from([
        ("app.kubernetes.io/instance".to_owned(), name.clone()),
        (
            "app.kubernetes.io/name".to_owned(),
            "tern-broker".to_owned(),
        ),
    ]);
    let spec = policy.spec.expect("spec");
    assert_eq!(
        spec.pod_selector.and_then(|s| s.match_labels),
        Some(brokers.clone())
    );
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
    let rules = spec.ingress.expect("ingress rules");
    let ports = |index: usize| -> Vec<(String, i32)> {
        rules[index]
            .ports
            .iter()
            .flatten()
            .map(|p| match &p.port {
                Some(IntOrString::Int(port)) => (p.protocol.clone().unwrap_or_default(), *port),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(rules.len(), 2, "{rules:?}");
    let from = rules[0].from.as_ref().expect("sources of the cluster port");
    assert_eq!(from.len(), 1);
    assert_eq!(
        from[0]
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some(brokers)
    );
    assert!(from[0].namespace_selector.is_none() && from[0].ip_block.is_none());
    assert_eq!(ports(0), [("TCP".into(), 4370), ("UDP".into(), 4370)]);
    assert!(rules[1].from.is_none(), "the rest from anywhere");
    let listeners: Vec<i32> = cluster.spec.listeners.iter().map(|l| l.port).collect();
    let mut open: Vec<(String, i32)> = listeners.iter().map(|p| ("TCP".into(), *p)).collect();
    open.push(("TCP".into(), 9090));
    assert_eq!(ports(1), open);
}

/// A subscriber on `demo-2` receives what alice publishes on `demo-0`, through the cluster.
pub async fn a_message_published_on_one_pod_reaches_a_subscriber_on_another(env: &Env) {
    let alice = credentials(env, "alice-mqtt-credentials").await;
    let mut subscriber = eventually("alice connects to demo-2", SHORT, || async {
        connect(pod_ip(env, "demo-2"), 8883, "alice-far", &alice)
            .await
            .ok()
    })
    .await;
    assert!(subscriber.subscribe("alice/cross/#").await);
    let mut publisher = connect(pod_ip(env, "demo-0"), 8883, "alice-near", &alice)
        .await
        .expect("alice connects to demo-0");
    // The SUBACK waits until every linked node holds the new route, so the first publish after it
    // is routed to demo-2.
    assert!(accepted(
        publisher
            .publish_qos1("alice/cross/hello", "from demo-0")
            .await
    ));
    assert_eq!(
        subscriber.receive("alice/cross/hello").await.as_deref(),
        Some("from demo-0"),
        "a message published on demo-0 reaches a subscriber on demo-2"
    );
}

/// The NetworkPolicy is repaired when deleted, deleted when turned off and back when turned on.
pub async fn the_network_policy_is_repaired_and_can_be_turned_off(env: &Env) {
    use kube::api::{DeleteParams, Patch, PatchParams};
    let policies: Api<NetworkPolicy> = Api::namespaced(env.admin.clone(), &env.namespace);
    let clusters: Api<MqttCluster> = Api::namespaced(env.admin.clone(), &env.namespace);
    let old_uid = policies.get("demo").await.expect("NetworkPolicy").uid();
    policies
        .delete("demo", &DeleteParams::default())
        .await
        .expect("delete the NetworkPolicy");
    eventually("the NetworkPolicy is recreated", SHORT, || async {
        let policy = policies.get_opt("demo").await.ok()??;
        (policy.uid() != old_uid).then_some(())
    })
    .await;
    let switch =
        |enabled: bool| serde_json::json!({"spec": {"networkPolicy": {"enabled": enabled}}});
    clusters
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(&switch(false)),
        )
        .await
        .expect("turn the NetworkPolicy off");
    eventually("the NetworkPolicy is deleted", SHORT, || async {
        policies.get_opt("demo").await.ok()?.is_none().then_some(())
    })
    .await;
    clusters
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(&switch(true)),
        )
        .await
        .expect("turn the NetworkPolicy on");
    eventually("the NetworkPolicy is back", SHORT, || async {
        policies.get_opt("demo").await.ok()?.map(|_| ())
    })
    .await;
}
