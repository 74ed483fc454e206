//! Operator features that only show on a live cluster: a password taken from the user's own Secret
//! and rotated by changing it, leader election between operator replicas (graceful and crash
//! failover), and the operator's own health endpoint and shutdown.

use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rumqttc::v5::ConnectionError;
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;
use serde_json::json;
use tern_operator::crd::{MqttUser, is_true};

use super::mqtt::{Credentials, connect};
use super::support::{Env, Operator, eventually, try_run, workspace};
use super::{LONG, SHORT, accepted, cluster_ready, credentials, example_cluster, pod_ip};

/// The v5 DISCONNECT reason code for a client whose rights were withdrawn: Not authorized.
const NOT_AUTHORIZED: u8 = 0x87;

/// `examples/cluster.yaml` (TLS, with the pods' addresses in the certificate) at `replicas`.
fn cluster(ip_prefix: [u8; 3], replicas: u32) -> String {
    let mut cluster: serde_json::Value =
        serde_yaml::from_str(&example_cluster(ip_prefix)).expect("cluster yaml");
    cluster["spec"]["replicas"] = json!(replicas);
    serde_yaml::to_string(&cluster).expect("yaml")
}

async fn user_ready(env: &Env, name: &str) -> MqttUser {
    let users: Api<MqttUser> = Api::namespaced(env.admin.clone(), &env.namespace);
    eventually(&format!("MqttUser {name} Ready"), SHORT, || async {
        let user = users.get(name).await.ok()?;
        let status = user.status.as_ref()?;
        (is_true(&status.conditions, "Ready")
            && status.observed_generation == user.metadata.generation)
            .then_some(user)
    })
    .await
}

/// The CONNACK refusal, if the broker refused the connection with one.
async fn refusal(ip: IpAddr, client_id: &str, credentials: &Credentials) -> ConnectReturnCode {
    match connect(ip, 8883, client_id, credentials).await {
        Ok(_) => panic!("{client_id}: connected; a refusal was expected"),
        Err(ConnectionError::ConnectionRefused(code)) => code,
        Err(other) => panic!("{client_id}: {other}; a CONNACK refusal was expected"),
    }
}

fn with_password(credentials: &Credentials, password: &str) -> Credentials {
    Credentials {
        password: password.to_owned(),
        ..credentials.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the control plane: scripts/test.sh runs it"]
async fn password_from_a_secret_rotates_without_a_restart() {
    const FIRST: &str = "first-password-of-bob-7d1e";
    const SECOND: &str = "second-password-of-bob-c94a";
    let prefix = [127, 77, 8];
    let env = Env::start("pwfrom", prefix).await;
    env.apply(&cluster(prefix, 2)).expect("apply the cluster");
    // A key other than the default `password`, to exercise `secretKeyRef.key`.
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: bob-password}}\nstringData: {{mqtt-password: {FIRST}}}\n---\n\
         apiVersion: tern.dev/v1alpha1\nkind: MqttUser\nmetadata: {{name: bob}}\nspec:\n  clusterRef: {{name: demo}}\n  passwordFrom: {{secretKeyRef: {{name: bob-password, key: mqtt-password}}}}\n---\n\
         apiVersion: tern.dev/v1alpha1\nkind: MqttUser\nmetadata: {{name: erin}}\nspec:\n  clusterRef: {{name: demo}}\n"
    ))
    .expect("apply bob's Secret and the users");
    cluster_ready(&env, "demo").await;
    user_ready(&env, "bob").await;
    user_ready(&env, "erin").await;
    let bob = credentials(&env, "bob-mqtt-credentials").await;
    assert_eq!(
        bob.password, FIRST,
        "the credentials Secret copies passwordFrom"
    );
    let erin = credentials(&env, "erin-mqtt-credentials").await;
    let pods = ["demo-0", "demo-1"];
    let ips: Vec<IpAddr> = pods.iter().map(|p| pod_ip(&env, p)).collect();

    for (pod, &ip) in pods.iter().zip(&ips) {
        eventually(&format!("bob connects to {pod}"), SHORT, || async {
            connect(ip, 8883, "bob-first", &bob).await.ok()
        })
        .await;
        // A CONNECT with a wrong password gets CONNACK 0x86 Bad User Name or Password
        // [MQTT-3.2.2.2, v5 CONNACK reason codes].
        assert_eq!(
            refusal(ip, "bob-early", &with_password(&bob, SECOND)).await,
            ConnectReturnCode::BadUserNamePassword,
            "{pod} refuses the next password before the rotation"
        );
    }
    let mut held = connect(ips[0], 8883, "bob-held", &bob)
        .await
        .expect("bob's long-lived connection");
    let mut bystander = connect(ips[0], 8883, "erin-held", &erin)
        .await
        .expect("erin's connection");
    let pids: Vec<_> = pods
        .iter()
        .map(|p| env.kubelet().container_pid(&env.namespace, p, "broker"))
        .collect();

    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), &env.namespace);
    let rotate = json!({ "stringData": { "mqtt-password": SECOND } });
    secrets
        .patch(
            "bob-password",
            &PatchParams::default(),
            &Patch::Merge(&rotate),
        )
        .await
        .expect("change bob's password Secret");

    eventually(
        "the credentials Secret holds the new password",
        SHORT,
        || async {
            let secret = secrets.get("bob-mqtt-credentials").await.ok()?;
            let password = secret.data?.remove("password")?;
            (password.0 == SECOND.as_bytes()).then_some(())
        },
    )
    .await;
    let rotated = with_password(&bob, SECOND);
    for (pod, &ip) in pods.iter().zip(&ips) {
        eventually(
            &format!("bob connects to {pod} with the new password"),
            SHORT,
            || async { connect(ip, 8883, "bob-second", &rotated).await.ok() },
        )
        .await;
    }
    // docs/admin-api.md: a client whose password changed is told to go with DISCONNECT 0x87 Not
    // authorized (a v5 DISCONNECT reason code, MQTT 5 §3.14.2.1) once the brokers have the change.
    assert_eq!(
        held.disconnect_reason(SHORT).await,
        Some(NOT_AUTHORIZED),
        "bob's connection made with the old password is ended"
    );
    for (pod, &ip) in pods.iter().zip(&ips) {
        assert_eq!(
            refusal(ip, "bob-old", &bob).await,
            ConnectReturnCode::BadUserNamePassword,
            "{pod} refuses the old password"
        );
    }
    // Everyone else is untouched: erin's connection from before the rotation still works.
    assert!(accepted(bystander.publish_qos1("erin/still", "here").await));
    let after: Vec<_> = pods
        .iter()
        .map(|p| env.kubelet().container_pid(&env.namespace, p, "broker"))
        .collect();
    assert_eq!(pids, after, "no broker process was restarted");
    user_ready(&env, "bob").await;

    // Without its password Secret the user is reported and shut out, not left with a stale password.
    secrets
        .delete("bob-password", &DeleteParams::default())
        .await
        .expect("delete bob's password Secret");
    let users: Api<MqttUser> = Api::namespaced(env.admin.clone(), &env.namespace);
    eventually("bob reports PasswordSecretNotFound", SHORT, || async {
        let status = users.get("bob").await.ok()?.status?;
        status
            .conditions
            .iter()
            .any(|c| {
                c.type_ == "Ready" && c.status == "False" && c.reason == "PasswordSecretNotFound"
            })
            .then_some(())
    })
    .await;
    for (pod, &ip) in pods.iter().zip(&ips) {
        eventually(&format!("{pod} no longer lets bob in"), SHORT, || async {
            match connect(ip, 8883, "bob-gone", &rotated).await {
                Err(ConnectionError::ConnectionRefused(code)) => {
                    (code == ConnectReturnCode::BadUserNamePassword).then_some(())
                }
                _ => None,
            }
        })
        .await;
    }
    env.stop().await;
}

/// The chart's Lease: its name (the Deployment's `--lease-name`) in the operator's namespace.
async fn lease_api(env: &Env) -> (Api<Lease>, String) {
    let deployment = env.operator_deployment().await;
    let container = deployment
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].clone())
        .expect("operator container");
    let env_value = |name: &str| {
        container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    // Leader election is on by default, so the chart's two replicas never both reconcile.
    assert_eq!(env_value("TERN_LEADER_ELECTION").as_deref(), Some("true"));
    let name = container
        .args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix("--lease-name="))
        .expect("--lease-name")
        .to_owned();
    (
        Api::namespaced(env.admin.clone(), &env.operator_namespace),
        name,
    )
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .expect("read the Lease")?
        .spec?
        .holder_identity
}

async fn holds_lease(leases: &Api<Lease>, name: &str, operator: &Operator) -> Lease {
    eventually(
        &format!("{} holds the Lease", operator.name),
        LONG,
        || async {
            let lease = leases.get_opt(name).await.ok()??;
            let holder = lease.spec.as_ref()?.holder_identity.as_deref()?;
            operator.is(holder).then_some(lease)
        },
    )
    .await
}

async fn live_and_ready(operator: &Operator) {
    eventually(
        &format!("{} answers /healthz and /readyz", operator.name),
        SHORT,
        || async {
            let health = operator.http_status("/healthz").await?;
            let ready = operator.http_status("/readyz").await?;
            (health == 200 && ready == 200).then_some(())
        },
    )
    .await;
}

/// Whether the process ran any reconcile (the counter has a sample only once one ran).
async fn reconciled_anything(operator: &Operator) -> bool {
    operator
        .metrics()
        .await
        .contains("tern_operator_reconcile_total{")
}

async fn exits(operator: &mut Operator) -> std::process::ExitStatus {
    let what = format!("{} exits", operator.name);
    eventually(&what, SHORT, || {
        let status = operator.exit_status();
        async move { status }
    })
    .await
}

/// A new user is reconciled: its credentials Secret and Ready condition appear and the brokers
/// let it in (so the cluster controller pushed it too).
async fn new_user_works(env: &Env, name: &str, ip: IpAddr) {
    env.apply(&format!(
        "apiVersion: tern.dev/v1alpha1\nkind: MqttUser\nmetadata: {{name: {name}}}\nspec:\n  clusterRef: {{name: demo}}\n"
    ))
    .expect("apply the user");
    user_ready(env, name).await;
    let credentials = credentials(env, &format!("{name}-mqtt-credentials")).await;
    eventually(&format!("{name} connects"), SHORT, || async {
        connect(ip, 8883, name, &credentials).await.ok()
    })
    .await;
}

/// The Lease rights of the chart's ServiceAccount are exactly what leader election uses: create
/// (which RBAC cannot limit to a name), then get and patch of the one Lease; nothing else.
async fn lease_rights_are_minimal(env: &Env, lease: &str) {
    let account = env
        .operator_deployment()
        .await
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.service_account_name)
        .expect("serviceAccountName");
    let subject = format!("system:serviceaccount:{}:{account}", env.operator_namespace);
    let named = format!("leases.coordination.k8s.io/{lease}");
    let other = "leases.coordination.k8s.io/someone-else".to_owned();
    let any = "leases.coordination.k8s.io".to_owned();
    for (verb, resource, allowed) in [
        ("create", &any, true),
        ("get", &named, true),
        ("patch", &named, true),
        ("update", &named, false),
        ("delete", &named, false),
        ("list", &any, false),
        ("watch", &any, false),
        ("get", &other, false),
        ("patch", &other, false),
    ] {
        let answer = try_run(
            "kubectl",
            &[
                "auth",
                "can-i",
                verb,
                resource,
                "-n",
                &env.operator_namespace,
                "--as",
                &subject,
            ],
        );
        assert_eq!(answer.is_ok(), allowed, "{verb} {resource}: {answer:?}");
    }
}

fn renewed_until(lease: &Lease) -> SystemTime {
    let spec = lease.spec.as_ref().expect("Lease spec");
    let renewed = spec.renew_time.as_ref().expect("renewTime").0;
    let secs = spec.lease_duration_seconds.expect("leaseDurationSeconds");
    SystemTime::from(renewed) + Duration::from_secs(u64::try_from(secs).expect("duration"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the control plane: scripts/test.sh runs it"]
async fn one_leader_fails_over_and_shuts_down_cleanly() {
    let chart = workspace().join("charts/tern-operator");
    let refused = try_run(
        "helm",
        &[
            "template",
            "x",
            &chart.to_string_lossy(),
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=false",
        ],
    );
    assert!(
        refused.is_err_and(|e| e.contains("replicaCount above 1 needs leaderElection.enabled")),
        "the chart refuses two replicas without leader election"
    );

    let prefix = [127, 77, 9];
    // The first leader's term is long: if the standby still got in within seconds after it
    // stopped, the Lease was released rather than left to expire.
    let mut env =
        Env::start_with("leader", prefix, &[("TERN_LEASE_DURATION_SECONDS", "600")]).await;
    let (leases, lease) = lease_api(&env).await;
    lease_rights_are_minimal(&env, &lease).await;
    let mut first = env.take_operator();
    let held = holds_lease(&leases, &lease, &first).await;
    assert_eq!(held.spec.and_then(|s| s.lease_duration_seconds), Some(600));
    let standby = env.start_operator("operator-1", &[]).await;
    live_and_ready(&first).await;
    // The standby is live and ready too, so a rolling update of the operator never stalls.
    live_and_ready(&standby).await;

    env.apply(&cluster(prefix, 1)).expect("apply the cluster");
    cluster_ready(&env, "demo").await;
    let ip = pod_ip(&env, "demo-0");
    new_user_works(&env, "before", ip).await;
    // A client connected throughout: a new leader renders the same users file (it reuses the
    // deployed password hashes), so failovers never disconnect anyone.
    let before = credentials(&env, "before-mqtt-credentials").await;
    let mut throughout = connect(ip, 8883, "before-throughout", &before)
        .await
        .expect("a connection held across the failovers");
    let holder_now = holder(&leases, &lease).await.expect("a holder");
    assert!(first.is(&holder_now), "the Lease stayed with {holder_now}");
    assert!(reconciled_anything(&first).await);
    assert!(
        !reconciled_anything(&standby).await,
        "the standby reconciled while not holding the Lease"
    );

    // SIGTERM: the leader finishes, releases the Lease and exits 0.
    first.signal("TERM");
    let status = exits(&mut first).await;
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    let after_exit = holder(&leases, &lease).await;
    assert!(
        !after_exit.as_deref().is_some_and(|h| first.is(h)),
        "the Lease was released on shutdown, not left to expire: {after_exit:?}"
    );
    // Well inside the released 600 s term: the standby did not wait for it to run out.
    let taken = holds_lease(&leases, &lease, &standby).await;
    assert_eq!(
        taken.spec.and_then(|s| s.lease_duration_seconds),
        Some(15),
        "the new leader holds it with its own (the default) term"
    );
    new_user_works(&env, "after-sigterm", ip).await;
    assert!(reconciled_anything(&standby).await);
    assert!(accepted(
        throughout.publish_qos1("before/1", "still here").await
    ));

    // SIGKILL: nothing is released; the next standby takes over only once the term has ended.
    let mut killed = standby;
    let successor = env.start_operator("operator-2", &[]).await;
    live_and_ready(&successor).await;
    let before_kill = leases.get(&lease).await.expect("the Lease");
    killed.signal("KILL");
    let status = exits(&mut killed).await;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
    let taken = holds_lease(&leases, &lease, &successor).await;
    let acquired = taken
        .spec
        .as_ref()
        .and_then(|s| s.acquire_time.as_ref())
        .expect("acquireTime")
        .0;
    assert!(
        SystemTime::from(acquired) >= renewed_until(&before_kill),
        "the Lease was taken before the killed leader's term ended"
    );
    new_user_works(&env, "after-sigkill", ip).await;
    assert!(accepted(
        throughout.publish_qos1("before/2", "still here").await
    ));

    // A standby stopped while waiting exits 0 too; the last leader releases the Lease.
    let mut waiting = env.start_operator("operator-3", &[]).await;
    live_and_ready(&waiting).await;
    waiting.signal("TERM");
    assert_eq!(exits(&mut waiting).await.code(), Some(0));
    let mut last = successor;
    last.signal("TERM");
    assert_eq!(exits(&mut last).await.code(), Some(0));
    assert_eq!(holder(&leases, &lease).await, None, "released on shutdown");
    env.stop().await;
}
