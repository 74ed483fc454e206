//! TLS end to end: the operator's CA renewing the server certificate under connected clients,
//! client certificates as the MQTT identity, a TLS Secret of the user's own, cert-manager (played by
//! the test: only its CRD is installed), and the Prometheus Operator's ServiceMonitor. The operator
//! runs with exactly the chart's RBAC, so these also prove the chart grants what they need.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use rumqttc::v5::ConnectionError;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, PubAckReason};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use tern_operator::crd::{MqttCluster, MqttUser, is_true};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::mqtt::{CertifiedKey, connect, connect_with_certificate, served_certificate};
use super::support::{Env, eventually, kubectl, kubectl_apply, try_run};
use super::{LONG, SHORT, accepted, cluster_ready, credentials, pod_ip};

const MQTTS: u16 = 8883;
const MTLS: u16 = 8884;
/// The v5 reason code for a revoked identity, in CONNACK and DISCONNECT.
const NOT_AUTHORIZED: u8 = 0x87;

// ---------------------------------------------------------------------------------------------
// Managed CA: renewal under connected clients, client certificates, ServiceMonitor.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the control plane: scripts/test.sh runs it"]
async fn managed_tls_renewal_client_certificates_and_service_monitor() {
    let prefix = [127, 77, 2];
    // Installed only once the operator runs: it must notice the kind appearing.
    let monitors_crd = Crd::absent("servicemonitors.monitoring.coreos.com");
    let env = Env::start("tls-managed", prefix).await;

    // Renewed 30 s after issue: 9m30s before the end of a 10-minute certificate. (No minimum
    // stands in the way; 10 minutes keeps a realistic margin for kubelet to deliver the renewal.)
    env.apply(&format!(
        r#"
apiVersion: tern.dev/v1alpha1
kind: MqttCluster
metadata: {{name: renew}}
spec:
  replicas: 2
  listeners:
    - {{name: mqtts, protocol: tls, port: {MQTTS}}}
    - {{name: mtls, protocol: tls, port: {MTLS}, clientCertificates: required}}
  tls:
    managed: {{validity: 10m, renewBefore: 9m30s}}
    extraHostnames: {addresses}
  metrics:
    serviceMonitor: {{enabled: true, interval: 15s, labels: {{release: prom}}}}
---
apiVersion: tern.dev/v1alpha1
kind: MqttUser
metadata: {{name: alice}}
spec: {{clusterRef: {{name: renew}}}}
---
apiVersion: tern.dev/v1alpha1
kind: MqttUser
metadata: {{name: gateway}}
spec:
  clusterRef: {{name: renew}}
  username: gateway-7
  clientCertificate: {{validity: 24h}}
---
apiVersion: tern.dev/v1alpha1
kind: MqttAcl
metadata: {{name: renew}}
spec:
  clusterRef: {{name: renew}}
  rules:
    - {{access: allow, action: both, topic: "devices/%u/#", everyone: true}}
    - {{access: allow, action: publish, topic: "telemetry/#", users: [gateway-7]}}
    - {{access: allow, action: both, topic: "chat/#", users: [alice]}}
"#,
        addresses = json!(addresses(prefix)),
    ))
    .expect("apply the managed-TLS cluster, users and ACL");
    let cluster = cluster_ready(&env, "renew").await;
    assert_eq!(
        cluster.status.as_ref().and_then(|s| s.ca_secret.as_deref()),
        Some("renew-ca")
    );
    monitors_crd.install(SERVICE_MONITOR_CRD);

    a_client_certificate_is_the_users_identity(&env).await;
    the_server_certificate_is_renewed_under_connected_clients(&env).await;
    the_peer_certificate_is_renewed_and_new_links_use_it(&env).await;
    a_service_monitor_appears_once_its_kind_exists(&env, &cluster).await;

    env.stop().await;
    drop(monitors_crd);
}

/// `MqttUser.spec.clientCertificate`: the credentials Secret carries a certificate from the
/// cluster's CA whose CN is the username; on a `clientCertificates: required` listener it logs
/// the client in as that user with no username or password in CONNECT, and the ACL applies to it.
async fn a_client_certificate_is_the_users_identity(env: &Env) {
    let users: Api<MqttUser> = Api::namespaced(env.admin.clone(), &env.namespace);
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.namespace);
    let (identity, ca_pem) = eventually("gateway's client certificate", SHORT, || async {
        let data = secrets.get("gateway-mqtt-credentials").await.ok()?.data?;
        let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
        let identity = CertifiedKey {
            cert_pem: text("tls.crt")?,
            key_pem: text("tls.key")?,
        };
        Some((identity, text("ca.crt")?))
    })
    .await;
    let cluster_ca = secret_text(&secrets, "renew-ca", "ca.crt").await;
    assert_eq!(ca_pem, cluster_ca, "users trust the cluster's CA");
    let leaf = Cert::from_pem(&identity.cert_pem);
    assert_eq!(leaf.common_name, "gateway-7");
    assert_eq!(leaf.issuer, Cert::from_pem(&cluster_ca).subject);
    let status = eventually("gateway Ready", SHORT, || async {
        let status = users.get("gateway").await.ok()?.status?;
        is_true(&status.conditions, "Ready").then_some(status)
    })
    .await;
    assert_eq!(
        status.certificate_not_after,
        Some(leaf.not_after_rfc3339()),
        "status.certificateNotAfter is the certificate's"
    );

    let ip = pod_ip(env, "renew-0");
    let mut gateway = eventually("gateway-7 connects with its certificate", SHORT, || async {
        connect_with_certificate(ip, MTLS, "gw-cert", &ca_pem, Some(&identity))
            .await
            .ok()
    })
    .await;
    // `%u` is the certificate's CN: subscribing (SUBACK granted QoS, MQTT 3.9.3) and publishing
    // under devices/gateway-7/ work, and the message comes back on the subscription.
    assert!(gateway.subscribe("devices/gateway-7/#").await);
    assert!(accepted(
        gateway.publish_qos1("devices/gateway-7/state", "on").await
    ));
    assert_eq!(
        gateway.receive("devices/gateway-7/state").await.as_deref(),
        Some("on")
    );
    // A rule naming gateway-7 applies; another user's topic is refused with PUBACK 0x87 Not
    // authorized [MQTT-3.4.2.1] (the reason codes of v5 PUBACK).
    assert!(accepted(gateway.publish_qos1("telemetry/temp", "21").await));
    assert_eq!(
        gateway.publish_qos1("devices/alice/state", "x").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        gateway.publish_qos1("chat/general", "x").await,
        PubAckReason::NotAuthorized
    );
    // The telemetry rule is gateway-7's alone: alice, logged in by password, is refused there.
    let alice = credentials(env, "alice-mqtt-credentials").await;
    let mut session = eventually("alice connects", SHORT, || async {
        connect(ip, MQTTS, "alice-acl", &alice).await.ok()
    })
    .await;
    assert_eq!(
        session.publish_qos1("telemetry/temp", "21").await,
        PubAckReason::NotAuthorized
    );

    // The required listener refuses a client without a certificate, and one whose certificate
    // names gateway-7 but comes from another CA, before any CONNACK.
    assert!(
        connect_with_certificate(ip, MTLS, "gw-none", &ca_pem, None)
            .await
            .is_err(),
        "no client certificate"
    );
    let rogue = TestCa::new("rogue CA").client("gateway-7");
    assert!(
        connect_with_certificate(ip, MTLS, "gw-rogue", &ca_pem, Some(&rogue))
            .await
            .is_err(),
        "a certificate from another CA"
    );

    // Deleting the MqttUser revokes its certificate at once, long before it expires (the brokers
    // run with `auth.certificate_identities: listed`): the connected client gets DISCONNECT 0x87
    // Not authorized (MQTT 5 §3.14.2.1), and the same certificate is then refused with CONNACK
    // 0x87 (§3.2.2.2).
    users
        .delete("gateway", &DeleteParams::default())
        .await
        .expect("delete MqttUser gateway");
    assert_eq!(
        gateway.disconnect_reason(SHORT).await,
        Some(NOT_AUTHORIZED),
        "the deleted user's certificate client is disconnected"
    );
    match connect_with_certificate(ip, MTLS, "gw-revoked", &ca_pem, Some(&identity)).await {
        Err(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)) => {}
        Ok(_) => panic!("a revoked certificate connected"),
        Err(other) => panic!("a revoked certificate: {other}; CONNACK 0x87 was expected"),
    }
}

/// `spec.tls.managed.renewBefore`: the operator requeues itself for the renewal, re-issues
/// `renew-tls`, and the brokers serve the new certificate to new handshakes without a restart,
/// while a client connected before keeps its connection and its subscription.
async fn the_server_certificate_is_renewed_under_connected_clients(env: &Env) {
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.namespace);
    let clusters: Api<MqttCluster> = Api::namespaced(env.admin.clone(), &env.namespace);
    let alice = credentials(env, "alice-mqtt-credentials").await;
    let pods = ["renew-0", "renew-1"];
    let ips: Vec<IpAddr> = pods.iter().map(|p| pod_ip(env, p)).collect();
    let pids: Vec<Option<u32>> = pods.iter().map(|p| broker_pid(env, p)).collect();
    assert!(pids.iter().all(Option::is_some), "{pids:?}");

    let mut before = eventually("alice connects", SHORT, || async {
        connect(ips[0], MQTTS, "alice-before", &alice).await.ok()
    })
    .await;
    assert!(before.subscribe("chat/renewal").await);
    // Read after the client connected: whatever replaces this was issued after it connected.
    let first = Cert::from_pem(&secret_text(&secrets, "renew-tls", "tls.crt").await);

    let renewed = before
        .stay_connected_while(eventually(
            "renew-tls is re-issued and served by every broker",
            LONG,
            || async {
                let current = Cert::from_pem(&secret_text(&secrets, "renew-tls", "tls.crt").await);
                if current.not_after <= first.not_after {
                    return None;
                }
                for ip in &ips {
                    let served = served_certificate(*ip, MQTTS, &alice.ca_pem).await.ok()?;
                    if served != current.der {
                        return None;
                    }
                }
                Some(current)
            },
        ))
        .await;
    assert_ne!(
        renewed.serial, first.serial,
        "a new certificate, not a copy"
    );
    assert_eq!(renewed.issuer, first.issuer, "issued by the same CA");
    before
        .stay_connected_while(eventually(
            "status.certificateNotAfter follows the renewal",
            SHORT,
            || async {
                let status = clusters.get("renew").await.ok()?.status?;
                let at = status.certificate_not_after?;
                let current = Cert::from_pem(&secret_text(&secrets, "renew-tls", "tls.crt").await);
                // Another renewal may have come since; the status names the current one.
                (at == current.not_after_rfc3339() && current.not_after >= renewed.not_after)
                    .then_some(())
            },
        ))
        .await;
    let after: Vec<Option<u32>> = pods.iter().map(|p| broker_pid(env, p)).collect();
    assert_eq!(pids, after, "no broker process was restarted");

    // The connection made before the renewal is the same one (stay_connected_while panics if it
    // ends, and rumqttc would only reconnect on a later poll; it also sends the PINGREQs, so keep
    // alive [MQTT-3.1.2-22] cannot be what ends it): it publishes and receives on the subscription
    // it made then.
    assert!(accepted(before.publish_qos1("chat/renewal", "after").await));
    assert_eq!(
        before.receive("chat/renewal").await.as_deref(),
        Some("after")
    );
    connect(ips[1], MQTTS, "alice-after", &alice)
        .await
        .expect("a new client connects with the renewed certificate");
}

/// The peer certificate follows the managed server certificate's schedule: `renew-peer-tls` is
/// reissued (same CA, same name) without restarting a broker, and a pod started afterwards links
/// with the one that kept running, each presenting the certificate it has now.
async fn the_peer_certificate_is_renewed_and_new_links_use_it(env: &Env) {
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.namespace);
    let pods = ["renew-0", "renew-1"];
    let pids: Vec<Option<u32>> = pods.iter().map(|p| broker_pid(env, p)).collect();
    let first = Cert::from_pem(&secret_text(&secrets, "renew-peer-tls", "tls.crt").await);
    assert_eq!(first.common_name, format!("{}.renew", env.namespace));
    let renewed = eventually("renew-peer-tls is re-issued", LONG, || async {
        let current = Cert::from_pem(&secret_text(&secrets, "renew-peer-tls", "tls.crt").await);
        (current.not_after > first.not_after).then_some(current)
    })
    .await;
    assert_ne!(renewed.serial, first.serial, "a new certificate");
    assert_eq!(
        (renewed.issuer.as_str(), renewed.common_name.as_str()),
        (first.issuer.as_str(), first.common_name.as_str())
    );
    let after: Vec<Option<u32>> = pods.iter().map(|p| broker_pid(env, p)).collect();
    assert_eq!(pids, after, "no broker process was restarted");

    let api: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(env.admin.clone(), &env.namespace);
    let old_uid = api.get("renew-1").await.expect("renew-1").uid();
    api.delete("renew-1", &DeleteParams::default())
        .await
        .expect("delete renew-1");
    eventually("renew-1 is replaced", LONG, || async {
        let pod = api.get_opt("renew-1").await.ok()??;
        (pod.uid() != old_uid && pod_ip_of(&pod).is_some()).then_some(())
    })
    .await;
    super::cluster::members_agree(env, "renew", &pods).await;
}

fn pod_ip_of(pod: &k8s_openapi::api::core::v1::Pod) -> Option<&str> {
    pod.status.as_ref()?.pod_ip.as_deref()
}

/// `spec.metrics.serviceMonitor`: once the Prometheus Operator's CRD exists (installed after the
/// operator started and after the cluster was Ready), the operator applies a ServiceMonitor owned
/// by the cluster that selects the headless Service's `http` port, which serves the brokers'
/// metrics; disabling it removes it.
async fn a_service_monitor_appears_once_its_kind_exists(env: &Env, cluster: &MqttCluster) {
    let monitors: Api<DynamicObject> =
        Api::namespaced_with(env.admin.clone(), &env.namespace, &service_monitor_kind());
    let monitor = eventually("ServiceMonitor renew", LONG, || async {
        monitors.get_opt("renew").await.ok()?
    })
    .await;
    let owner = monitor
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .expect("a controller owner");
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid)),
        ("MqttCluster", cluster.metadata.uid.as_ref())
    );
    assert_eq!(
        monitor.labels().get("release").map(String::as_str),
        Some("prom")
    );
    let spec = &monitor.data["spec"];
    let selector = spec["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().expect("label value")))
        .collect::<Vec<_>>()
        .join(",");
    let services: Api<Service> = Api::namespaced(env.admin.clone(), &env.namespace);
    let selected: Vec<Service> = services
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list Services")
        .items;
    assert_eq!(
        selected.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        vec!["renew-headless"],
        "the selector {selector} picks the headless Service only"
    );
    let endpoint = &spec["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "15s");
    let port_name = endpoint["port"].as_str().expect("endpoint port");
    let port = selected[0]
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some(port_name)))
        .unwrap_or_else(|| panic!("the headless Service has no port {port_name}"))
        .port;
    // What Prometheus would scrape there: the broker's own metrics.
    let url = format!("http://{}:{port}/metrics", pod_ip(env, "renew-0"));
    let body = reqwest::get(&url)
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(body.contains("tern_"), "{url} serves broker metrics");

    let clusters: Api<MqttCluster> = Api::namespaced(env.admin.clone(), &env.namespace);
    let patch = json!({ "spec": { "metrics": { "serviceMonitor": { "enabled": false } } } });
    clusters
        .patch("renew", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("disable the ServiceMonitor");
    deleted(&monitors, "renew", "the disabled ServiceMonitor is deleted").await;
}

// ---------------------------------------------------------------------------------------------
// The user's own TLS Secret, and cert-manager.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the control plane: scripts/test.sh runs it"]
async fn user_supplied_and_cert_manager_certificates() {
    let prefix = [127, 77, 3];
    let certificates_crd = Crd::absent("certificates.cert-manager.io");
    let env = Env::start("tls-own", prefix).await;
    let ns = env.namespace.clone();
    let first_ca = TestCa::new("user CA 1");
    let first_leaf = first_ca.server(&own_hostnames(&ns, prefix), 2);
    write_tls_secret(
        &env,
        "my-tls",
        &first_leaf,
        &first_ca.cert_pem,
        &Default::default(),
    )
    .await;
    env.apply(&format!(
        r#"
apiVersion: tern.dev/v1alpha1
kind: MqttCluster
metadata: {{name: own}}
spec:
  replicas: 2
  listeners: [{{name: mqtts, protocol: tls, port: {MQTTS}}}]
  tls: {{secretName: my-tls}}
---
apiVersion: tern.dev/v1alpha1
kind: MqttUser
metadata: {{name: alice}}
spec: {{clusterRef: {{name: own}}}}
---
apiVersion: tern.dev/v1alpha1
kind: MqttCluster
metadata: {{name: cm}}
spec:
  replicas: 1
  listeners: [{{name: mqtts, protocol: tls, port: {MQTTS}}}]
  tls:
    certManager: {{issuerRef: {{name: test-issuer, kind: ClusterIssuer}}}}
    extraHostnames: {extra}
---
apiVersion: tern.dev/v1alpha1
kind: MqttUser
metadata: {{name: bob}}
spec: {{clusterRef: {{name: cm}}}}
"#,
        extra = json!(
            std::iter::once("mqtt.example.test".to_owned())
                .chain(addresses(prefix))
                .collect::<Vec<_>>()
        ),
    ))
    .expect("apply the clusters and users");

    without_cert_manager_the_cluster_says_so(&env).await;
    a_tls_secret_of_the_users_own_is_served_and_followed(&env, prefix, &first_ca, &first_leaf)
        .await;
    certificates_crd.install(CERTIFICATE_CRD);
    the_operator_asks_cert_manager_and_serves_what_it_writes(&env, prefix).await;

    env.stop().await;
    drop(certificates_crd);
}

/// `certManager` without cert-manager's CRD: the reconcile goes on (Services, StatefulSet) and the
/// cluster reports `CertManagerMissing`, instead of failing and retrying in a loop.
async fn without_cert_manager_the_cluster_says_so(env: &Env) {
    let clusters: Api<MqttCluster> = Api::namespaced(env.admin.clone(), &env.namespace);
    let status = eventually("cm reports CertManagerMissing", SHORT, || async {
        let status = clusters.get("cm").await.ok()?.status?;
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "CertManagerMissing")
            .then_some(status)
    })
    .await;
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "CertManagerMissing")
    );
    assert!(
        degraded.message.contains("certificates.cert-manager.io"),
        "{}",
        degraded.message
    );
    // The status is written last, so the reconcile ran to its end: the rest of the cluster exists.
    for kind in ["statefulset/cm", "service/cm", "service/cm-headless"] {
        env.kubectl(&["get", kind, "-o", "name"]);
    }
}

/// `spec.tls.secretName`: the brokers serve the user's certificate, clients trust the `ca.crt`
/// the users' credentials copy from it, and replacing the Secret's contents (here with a new CA)
/// is served by the running brokers without a restart, reflected in the status and in the users'
/// `ca.crt`, while a client connected before stays connected.
async fn a_tls_secret_of_the_users_own_is_served_and_followed(
    env: &Env,
    prefix: [u8; 3],
    first_ca: &TestCa,
    first_leaf: &CertifiedKey,
) {
    let clusters: Api<MqttCluster> = Api::namespaced(env.admin.clone(), &env.namespace);
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.namespace);
    let cluster = cluster_ready(env, "own").await;
    let status = cluster.status.expect("status");
    assert_eq!(status.ca_secret.as_deref(), Some("my-tls"));
    let first = Cert::from_pem(&first_leaf.cert_pem);
    assert_eq!(
        status.certificate_not_after,
        Some(first.not_after_rfc3339())
    );
    assert!(
        secrets.get_opt("own-tls").await.expect("get").is_none(),
        "with secretName the operator writes no certificate of its own"
    );
    let alice = credentials(env, "alice-mqtt-credentials").await;
    assert_eq!(
        alice.ca_pem, first_ca.cert_pem,
        "users trust the Secret's ca.crt"
    );
    let pods = ["own-0", "own-1"];
    let ips: Vec<IpAddr> = pods.iter().map(|p| pod_ip(env, p)).collect();
    let pids: Vec<Option<u32>> = pods.iter().map(|p| broker_pid(env, p)).collect();
    for ip in &ips {
        let served = served_certificate(*ip, MQTTS, &alice.ca_pem)
            .await
            .expect("TLS handshake");
        assert_eq!(served, first.der, "{ip} serves the user's certificate");
    }
    let mut before = eventually("alice connects", SHORT, || async {
        connect(ips[0], MQTTS, "alice-before", &alice).await.ok()
    })
    .await;
    assert!(before.subscribe("news/#").await);

    let second_ca = TestCa::new("user CA 2");
    let second_leaf = second_ca.server(&own_hostnames(&env.namespace, prefix), 3);
    write_tls_secret(
        env,
        "my-tls",
        &second_leaf,
        &second_ca.cert_pem,
        &Default::default(),
    )
    .await;
    let second = Cert::from_pem(&second_leaf.cert_pem);
    before
        .stay_connected_while(eventually(
            "every broker serves the replaced certificate",
            LONG,
            || async {
                for ip in &ips {
                    let served = served_certificate(*ip, MQTTS, &second_ca.cert_pem)
                        .await
                        .ok()?;
                    if served != second.der {
                        return None;
                    }
                }
                Some(())
            },
        ))
        .await;
    let renewed = before
        .stay_connected_while(eventually(
            "the status and alice's ca.crt follow the Secret",
            SHORT,
            || async {
                let status = clusters.get("own").await.ok()?.status?;
                let alice = credentials(env, "alice-mqtt-credentials").await;
                (status.certificate_not_after == Some(second.not_after_rfc3339())
                    && alice.ca_pem == second_ca.cert_pem)
                    .then_some(alice)
            },
        ))
        .await;
    let after: Vec<Option<u32>> = pods.iter().map(|p| broker_pid(env, p)).collect();
    assert_eq!(pids, after, "no broker process was restarted");
    connect(ips[1], MQTTS, "alice-after", &renewed)
        .await
        .expect("a new client trusting the new CA connects");
    // The client connected before the change is still on its first connection.
    assert!(accepted(
        before.publish_qos1("news/old", "still here").await
    ));
    assert_eq!(
        before.receive("news/old").await.as_deref(),
        Some("still here")
    );
}

/// With cert-manager's CRD installed (after the cluster was created), the operator applies a
/// `Certificate` for the Services, the pods and `extraHostnames` from the issuer named in the
/// spec; the test then does cert-manager's part and writes the Secret, and the brokers serve it.
/// Switching the cluster to a managed certificate removes the Certificate again.
async fn the_operator_asks_cert_manager_and_serves_what_it_writes(env: &Env, prefix: [u8; 3]) {
    let ns = &env.namespace;
    let certificates: Api<DynamicObject> =
        Api::namespaced_with(env.admin.clone(), ns, &certificate_kind());
    let certificate = eventually("Certificate cm", LONG, || async {
        certificates.get_opt("cm").await.ok()?
    })
    .await;
    let clusters: Api<MqttCluster> = Api::namespaced(env.admin.clone(), ns);
    let cluster = clusters.get("cm").await.expect("cluster cm");
    assert!(
        certificate
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == cluster.metadata.uid.as_ref()),
        "owned by the cluster"
    );
    let spec = &certificate.data["spec"];
    assert_eq!(spec["secretName"], "cm-tls");
    assert_eq!(
        spec["issuerRef"],
        json!({"name": "test-issuer", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().expect("string").to_owned())
            .collect()
    };
    let dns_names = strings(&spec["dnsNames"]);
    for expected in [
        "cm".to_owned(),
        format!("cm.{ns}.svc"),
        format!("cm.{ns}.svc.cluster.local"),
        format!("cm-headless.{ns}.svc"),
        format!("*.cm-headless.{ns}.svc"),
        format!("*.cm-headless.{ns}.svc.cluster.local"),
        "mqtt.example.test".to_owned(),
    ] {
        assert!(dns_names.contains(&expected), "{expected} in {dns_names:?}");
    }
    let ip_addresses = strings(&spec["ipAddresses"]);
    assert_eq!(ip_addresses, addresses(prefix));

    // cert-manager's part: sign what the Certificate asks for, write the Secret with the labels
    // of its secretTemplate.
    let issuer = TestCa::new("cert-manager test issuer");
    let mut names = dns_names.clone();
    names.extend(ip_addresses);
    let leaf = issuer.server(&names, 90);
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_value(spec["secretTemplate"]["labels"].clone()).unwrap_or_default();
    assert_eq!(
        labels.get("tern.dev/cluster").map(String::as_str),
        Some("cm")
    );
    write_tls_secret(env, "cm-tls", &leaf, &issuer.cert_pem, &labels).await;

    let cluster = cluster_ready(env, "cm").await;
    assert_eq!(
        cluster.status.as_ref().and_then(|s| s.ca_secret.as_deref()),
        Some("cm-tls")
    );
    let bob = eventually("bob's credentials carry the issuer's CA", SHORT, || async {
        let bob = credentials(env, "bob-mqtt-credentials").await;
        (bob.ca_pem == issuer.cert_pem).then_some(bob)
    })
    .await;
    let ip = pod_ip(env, "cm-0");
    let served = served_certificate(ip, MQTTS, &bob.ca_pem)
        .await
        .expect("TLS handshake");
    assert_eq!(served, Cert::from_pem(&leaf.cert_pem).der);
    let mut session = eventually("bob connects", SHORT, || async {
        connect(ip, MQTTS, "bob", &bob).await.ok()
    })
    .await;
    assert!(accepted(session.publish_qos1("anything", "cm").await));

    // certManager → managed: the Certificate goes (cert-manager would otherwise keep rewriting
    // cm-tls), and the brokers serve the operator's own certificate from the cluster's CA instead.
    let patch = json!({ "spec": { "tls": { "certManager": null, "managed": {} } } });
    clusters
        .patch("cm", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("switch cm to a managed certificate");
    deleted(&certificates, "cm", "the Certificate is deleted").await;
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), ns);
    let cluster_ca = secret_text(&secrets, "cm-ca", "ca.crt").await;
    let served = eventually("cm-0 serves the cluster CA's certificate", LONG, || async {
        served_certificate(ip, MQTTS, &cluster_ca).await.ok()
    })
    .await;
    assert_eq!(
        served,
        Cert::from_pem(&secret_text(&secrets, "cm-tls", "tls.crt").await).der
    );
    let bob = eventually(
        "bob's credentials carry the cluster's CA",
        SHORT,
        || async {
            let bob = credentials(env, "bob-mqtt-credentials").await;
            (bob.ca_pem == cluster_ca).then_some(bob)
        },
    )
    .await;
    connect(ip, MQTTS, "bob-managed", &bob)
        .await
        .expect("bob connects trusting the cluster's CA");
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// Addresses the kubelet stand-in gives pods (`.2` upwards), for certificates' IP SANs.
fn addresses(prefix: [u8; 3]) -> Vec<String> {
    let [a, b, c] = prefix;
    (2..12).map(|n| format!("{a}.{b}.{c}.{n}")).collect()
}

/// What a certificate of the cluster `own` must name for clients connecting by pod address.
fn own_hostnames(namespace: &str, prefix: [u8; 3]) -> Vec<String> {
    let mut names = vec![
        "own".to_owned(),
        format!("own.{namespace}.svc"),
        format!("*.own-headless.{namespace}.svc"),
    ];
    names.extend(addresses(prefix));
    names
}

fn broker_pid(env: &Env, pod: &str) -> Option<u32> {
    env.kubelet().container_pid(&env.namespace, pod, "broker")
}

async fn secret_text(secrets: &Api<Secret>, name: &str, key: &str) -> String {
    let secret = secrets
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Secret {name}: {e}"));
    let bytes = secret
        .data
        .and_then(|mut d| d.remove(key))
        .unwrap_or_else(|| panic!("Secret {name} has no {key}"));
    String::from_utf8(bytes.0).expect("UTF-8")
}

/// Creates or replaces a `kubernetes.io/tls` Secret, the way a user or cert-manager would.
async fn write_tls_secret(
    env: &Env,
    name: &str,
    leaf: &CertifiedKey,
    ca_pem: &str,
    labels: &std::collections::BTreeMap<String, String>,
) {
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name, "labels": labels },
        "type": "kubernetes.io/tls",
        "stringData": { "tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": ca_pem },
    });
    kubectl_apply(&env.namespace, &secret.to_string())
        .unwrap_or_else(|e| panic!("write Secret {name}: {e}"));
}

/// What the tests read from a certificate, parsed with x509-parser.
struct Cert {
    der: Vec<u8>,
    serial: String,
    subject: String,
    issuer: String,
    common_name: String,
    /// Seconds since the epoch.
    not_after: i64,
}

impl Cert {
    fn from_pem(pem: &str) -> Cert {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("PEM certificate")
            .as_ref()
            .to_vec();
        let (_, cert) = X509Certificate::from_der(&der).expect("X.509 certificate");
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        Cert {
            serial: cert.raw_serial_as_string(),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            common_name,
            not_after: cert.validity().not_after.timestamp(),
            der,
        }
    }

    /// `notAfter` as the operator's status fields write it (RFC 3339, UTC).
    fn not_after_rfc3339(&self) -> String {
        let at = time::OffsetDateTime::from_unix_timestamp(self.not_after).expect("timestamp");
        let (date, clock) = (at.date(), at.time());
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            date.year(),
            u8::from(date.month()),
            date.day(),
            clock.hour(),
            clock.minute(),
            clock.second()
        )
    }
}

/// A CA of the test's own, made with rcgen: what a user or cert-manager's issuer would have.
struct TestCa {
    cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server certificate for `hostnames` (DNS names and IP addresses), valid for `days`.
    fn server(&self, hostnames: &[String], days: i64) -> CertifiedKey {
        let mut params = rcgen::CertificateParams::new(hostnames.to_vec()).expect("SANs");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(days);
        self.sign(params)
    }

    fn client(&self, common_name: &str) -> CertifiedKey {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: rcgen::CertificateParams) -> CertifiedKey {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A cluster-wide CRD this test installs; removed again when the guard drops (also when the test
/// fails), so later tests on the same control plane find the kind absent.
struct Crd {
    name: &'static str,
}

impl Crd {
    /// Makes sure the CRD does not exist (an earlier failed run may have left it).
    fn absent(name: &'static str) -> Crd {
        kubectl(&["delete", "crd", name, "--ignore-not-found", "--wait=true"]);
        Crd { name }
    }

    fn install(&self, yaml: &str) {
        kubectl_apply("default", yaml).unwrap_or_else(|e| panic!("install CRD {}: {e}", self.name));
        kubectl(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{}", self.name),
            "--timeout=60s",
        ]);
    }
}

impl Drop for Crd {
    fn drop(&mut self) {
        let _ = try_run(
            "kubectl",
            &[
                "delete",
                "crd",
                self.name,
                "--ignore-not-found",
                "--wait=false",
            ],
        );
    }
}

fn service_monitor_kind() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

fn certificate_kind() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// Just enough of the Prometheus Operator's CRD for the API server to serve the kind.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {plural: servicemonitors, singular: servicemonitor, kind: ServiceMonitor, listKind: ServiceMonitorList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// Just enough of cert-manager's Certificate CRD.
const CERTIFICATE_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: certificates.cert-manager.io}
spec:
  group: cert-manager.io
  scope: Namespaced
  names: {plural: certificates, singular: certificate, kind: Certificate, listKind: CertificateList, shortNames: [cert, certs]}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// Waits until the API server no longer has `name`.
async fn deleted(api: &Api<DynamicObject>, name: &str, what: &str) {
    eventually(what, SHORT, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}
