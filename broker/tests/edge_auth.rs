//! Users file, ACL file and their live reload, seen by `rumqttc` clients (MQTT 5 and 3.1.1): users
//! made with `tern-broker passwd`, wrong passwords refused (0x86 / return code 4), ACL denials as
//! rumqttc reports them (PUBACK and SUBACK 0x87, 3.1.1 SUBACK failure), and a user removed from the
//! users file while connected gets DISCONNECT 0x87 after `POST /api/v1/reload` while another user
//! stays connected. Limits that answer in CONNACK and SUBACK are checked the same way.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod edge_support;
mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use edge_support::{EdgeBroker, WAIT, Workdir, free_port};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, DisconnectReasonCode, Filter, Packet, PubAckReason, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, MqttOptions};
use support::{Note, v5, v311};

fn tern_binary() -> std::path::PathBuf {
    std::env::var_os("TERN_BROKER_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_tern-broker")))
}

/// `tern-broker passwd FILE USER [--password-stdin | -D]`.
fn passwd(file: &std::path::Path, user: &str, password: Option<&str>) {
    let mut command = Command::new(tern_binary());
    command.arg("passwd").arg(file).arg(user);
    match password {
        Some(_) => command.arg("--password-stdin"),
        None => command.arg("-D"),
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tern-broker passwd");
    if let Some(password) = password {
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

const ACL: &str = "allow all both users/%u/#\nallow user alice subscribe shared/#\n";

struct AuthBroker {
    broker: EdgeBroker,
    port: u16,
    users: std::path::PathBuf,
}

async fn start(limits: &str) -> AuthBroker {
    let work = Workdir::new();
    let users = work.path("users.txt");
    for (user, password) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        passwd(&users, user, Some(password));
    }
    let acl = work.write("acl.txt", ACL);
    let port = free_port();
    let extra = format!(
        "auth:\n  allow_anonymous: false\n  users_file: {}\n  acl_file: {}\n  reload_poll_secs: 0\n{limits}",
        users.display(),
        acl.display()
    );
    let broker = EdgeBroker::start(
        work,
        &format!("  - name: mqtt\n    bind: 127.0.0.1:{port}\n"),
        &extra,
        port,
    )
    .await;
    AuthBroker {
        broker,
        port,
        users,
    }
}

fn options(port: u16, id: &str, user: &str, password: &str) -> MqttOptions {
    let mut options = v5::options(port, id);
    options.set_credentials(user, password);
    options
}

/// The CONNACK code of a refused MQTT 5 connection attempt.
async fn refused_v5(options: MqttOptions) -> ConnectReturnCode {
    let (_client, eventloop) = AsyncClient::new(options, 10);
    let mut inbox = v5::spawn_inbox(eventloop);
    match inbox.ended(WAIT).await {
        Note::Failed(ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected a refusing CONNACK, got {other:?}"),
    }
}

/// Users hashed by `tern-broker passwd` (argon2id) connect with their passwords; a wrong password
/// is refused with 0x86 on MQTT 5 and return code 4 (bad user name or password) on 3.1.1.
#[tokio::test]
async fn passwords_are_checked_for_rumqttc_clients() {
    let b = start("").await;
    let (_alice, _inbox, connack) = v5::start(options(b.port, "alice", "alice", "alice-pw")).await;
    assert_eq!(connack.code, ConnectReturnCode::Success);
    assert_eq!(
        refused_v5(options(b.port, "alice-bad", "alice", "nope")).await,
        ConnectReturnCode::BadUserNamePassword
    );
    let mut v3 = v311::options(b.port, "bob-bad");
    v3.set_credentials("bob", "nope");
    let (_client, eventloop) = rumqttc::AsyncClient::new(v3, 10);
    let mut inbox = v311::spawn_inbox(eventloop);
    match inbox.ended(WAIT).await {
        Note::Failed(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::BadUserNamePassword);
        }
        other => panic!("expected a refusing CONNACK, got {other:?}"),
    }
}

/// ACL denials as rumqttc sees them: MQTT 5 PUBACK `NotAuthorized` for a publish outside
/// `users/%u/#`, SUBACK `NotAuthorized` for another user's tree while its own is granted; MQTT 3.1.1
/// SUBACK `Failure` (0x80).
#[tokio::test]
async fn acl_denials_reach_rumqttc() {
    let b = start("").await;
    let (alice, mut inbox, _) = v5::start(options(b.port, "alice", "alice", "alice-pw")).await;
    alice
        .subscribe_many([
            Filter::new("users/alice/#", QoS::AtLeastOnce),
            Filter::new("users/bob/#", QoS::AtLeastOnce),
        ])
        .await
        .unwrap();
    let suback = v5::expect_suback(&mut inbox, WAIT).await;
    assert_eq!(
        suback.return_codes,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::NotAuthorized
        ]
    );
    alice
        .publish("users/bob/x", QoS::AtLeastOnce, false, "no")
        .await
        .unwrap();
    let reason = inbox
        .next_matching("PUBACK", WAIT, |p| match p {
            Packet::PubAck(ack) => Some(ack.reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, PubAckReason::NotAuthorized);

    let mut v3 = v311::options(b.port, "bob-v3");
    v3.set_credentials("bob", "bob-pw");
    let (bob, mut bob_inbox, _) = v311::start(v3).await;
    bob.subscribe("users/alice/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let suback = v311::expect_suback(&mut bob_inbox, WAIT).await;
    assert_eq!(suback.return_codes, [rumqttc::SubscribeReasonCode::Failure]);
}

/// bob is removed from the users file (`tern-broker passwd FILE bob -D`) and the admin API reloads
/// it: bob's rumqttc v5 client gets DISCONNECT 0x87 *Not authorized*; alice's stays connected and
/// keeps receiving.
#[tokio::test]
async fn a_removed_user_is_disconnected_with_0x87() {
    let b = start("").await;
    let (alice, mut alice_inbox, _) =
        v5::start(options(b.port, "alice", "alice", "alice-pw")).await;
    v5::subscribe(&alice, &mut alice_inbox, "users/alice/#", QoS::AtLeastOnce).await;
    let (_bob, mut bob_inbox, _) = v5::start(options(b.port, "bob", "bob", "bob-pw")).await;
    passwd(&b.users, "bob", None);
    let (status, body) = b.broker.admin("POST", "/reload", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        v5::expect_server_disconnect(&mut bob_inbox, WAIT).await,
        DisconnectReasonCode::NotAuthorized
    );
    v5::publish(
        &alice,
        &mut alice_inbox,
        "users/alice/still",
        QoS::AtLeastOnce,
        false,
        "here",
    )
    .await;
    assert_eq!(
        v5::payload(&v5::expect_publish(&mut alice_inbox, WAIT).await),
        "here"
    );
}

/// `limits.max_connections: 1`: a second rumqttc v5 client gets CONNACK `ServerBusy` (0x89);
/// `limits.max_subscriptions_per_client: 1`: a second filter gets SUBACK `QuotaExceeded` (0x97).
#[tokio::test]
async fn connection_and_subscription_limits_reach_rumqttc() {
    let b = start("limits:\n  max_connections: 1\n  max_subscriptions_per_client: 1\n").await;
    let (alice, mut inbox, _) = v5::start(options(b.port, "alice", "alice", "alice-pw")).await;
    assert_eq!(
        refused_v5(options(b.port, "bob", "bob", "bob-pw")).await,
        ConnectReturnCode::ServerBusy
    );
    alice
        .subscribe_many([
            Filter::new("users/alice/1", QoS::AtLeastOnce),
            Filter::new("users/alice/2", QoS::AtLeastOnce),
        ])
        .await
        .unwrap();
    let suback = v5::expect_suback(&mut inbox, WAIT).await;
    assert_eq!(
        suback.return_codes,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::QuotaExceeded
        ]
    );
}

/// The broker keeps to the client's own Maximum Packet Size [MQTT-3.1.2-25]: a rumqttc v5
/// subscriber announcing 1024 bytes does not get a 4 kB message (it is dropped for that client,
/// counted as `tern_messages_dropped_total{reason="too_large_for_client"}`) but gets the small one
/// published after it, and stays connected.
#[tokio::test]
async fn the_clients_maximum_packet_size_is_respected() {
    let b = start("").await;
    let mut small = options(b.port, "alice", "alice", "alice-pw");
    small.set_max_packet_size(Some(1024));
    let (alice, mut inbox, _) = v5::start(small).await;
    v5::subscribe(&alice, &mut inbox, "users/alice/#", QoS::AtLeastOnce).await;
    v5::publish(
        &alice,
        &mut inbox,
        "users/alice/big",
        QoS::AtLeastOnce,
        false,
        vec![1u8; 4096],
    )
    .await;
    v5::publish(
        &alice,
        &mut inbox,
        "users/alice/small",
        QoS::AtLeastOnce,
        false,
        "fits",
    )
    .await;
    let got = v5::expect_publish(&mut inbox, WAIT).await;
    assert_eq!(v5::topic(&got), "users/alice/small");
    let (status, metrics) =
        edge_support::http(b.broker.http_port, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"tern_messages_dropped_total{reason="too_large_for_client"} 1"#),
        "{metrics}"
    );
}
