//! `tern-broker drain --config FILE`, the Kubernetes preStop command, against a real broker process:
//! it drains the broker through the admin API and waits for the clients to leave (v5 clients get
//! DISCONNECT 0x9C *Use another server*), exiting 0; a configuration without an `http` section exits
//! 2 and says so; a broker that cannot be reached exits 1.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod edge_support;
mod support;

use std::path::Path;
use std::process::Output;

use edge_support::{EdgeBroker, WAIT, Workdir, free_port};
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use support::v5;

fn tern_binary() -> std::path::PathBuf {
    std::env::var_os("TERN_BROKER_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_tern-broker")))
}

/// Runs `tern-broker drain --config CONFIG --timeout SECS` to the end, bounded by the test's guard.
async fn drain(config: &Path, timeout_secs: u64) -> (Output, String) {
    let run = tokio::process::Command::new(tern_binary())
        .arg("drain")
        .arg("--config")
        .arg(config)
        .arg("--timeout")
        .arg(timeout_secs.to_string())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT + std::time::Duration::from_secs(timeout_secs), run)
        .await
        .expect("drain finished in time")
        .expect("run tern-broker drain");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

/// The drain command asks the broker to drain: the connected MQTT 5 client is told to use another
/// server (DISCONNECT 0x9C), the broker then reports `drained`, and the command exits 0 once it has
/// seen that, well within its timeout.
#[tokio::test]
async fn drain_moves_v5_clients_away_and_exits_zero_once_drained() {
    let port = free_port();
    let broker = EdgeBroker::start(
        Workdir::new(),
        &format!("  - name: mqtt\n    bind: 127.0.0.1:{port}\n"),
        "auth:\n  allow_anonymous: true\n",
        port,
    )
    .await;
    let (_client, mut inbox) = v5::connect(port, "leaving-soon").await;

    let (output, stderr) = drain(&broker.work.path("tern.yaml"), 10).await;

    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("drained"), "{stderr}");
    assert_eq!(
        v5::expect_server_disconnect(&mut inbox, WAIT).await,
        DisconnectReasonCode::UseAnotherServer
    );
    let (status, body) = broker.admin("GET", "/drain", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""state":"drained""#), "{body}");
    assert!(body.contains(r#""connections":0"#), "{body}");
}

/// Without an `http` section there is no admin API to drain through: exit status 2 and a message
/// that names `http`.
#[tokio::test]
async fn a_configuration_without_http_exits_2_and_names_http() {
    let work = Workdir::new();
    let config = work.write(
        "tern.yaml",
        format!(
            "listeners:\n  - name: mqtt\n    bind: 127.0.0.1:{}\n",
            free_port()
        ),
    );

    let (output, stderr) = drain(&config, 5).await;

    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`http`"), "{stderr}");
}

/// A configuration whose admin API nobody serves: exit status 1, and the message says the broker
/// cannot be reached and where it was looked for.
#[tokio::test]
async fn a_broker_that_cannot_be_reached_exits_1() {
    let work = Workdir::new();
    let token = work.write("admin-token", "some-token\n");
    let http_port = free_port();
    let config = work.write(
        "tern.yaml",
        format!(
            "listeners:\n  - name: mqtt\n    bind: 127.0.0.1:{}\nhttp:\n  bind: 0.0.0.0:{http_port}\n  admin_token_file: {}\n",
            free_port(),
            token.display()
        ),
    );

    let (output, stderr) = drain(&config, 5).await;

    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{http_port}")),
        "{stderr}"
    );
}
