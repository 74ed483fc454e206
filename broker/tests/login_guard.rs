//! Password guessing against the users file: an address that keeps failing waits before its next
//! password is checked, and its tries meanwhile are refused at once, without hashing, while
//! logins from other addresses go on. Clients connect from chosen loopback addresses
//! (127.0.0.1, 127.0.0.2) with CONNECT packets written byte by byte.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod edge_support;
mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use edge_support::{EdgeBroker, Workdir, free_port};
use support::raw_v5::{packet, read_packet, string};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

/// An MQTT 5 CONNECT with a username and password, clean start.
fn connect_with_password(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend([5, 0xC2, 0, 30, 0]); // level 5; username, password, clean start; no properties
    body.extend(string(client_id.as_bytes()));
    body.extend(string(username.as_bytes()));
    body.extend(string(password.as_bytes()));
    packet(0x10, body)
}

/// The CONNACK reason code for a login from `source`.
async fn login(port: u16, source: [u8; 4], password: &str) -> u8 {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let id = format!("c-{}", fastrand::u32(..));
    stream
        .write_all(&connect_with_password(&id, "alice", password))
        .await
        .unwrap();
    let connack = read_packet(&mut stream).await.expect("CONNACK");
    assert_eq!(connack.kind, 2, "CONNACK");
    connack.reason()
}

async fn start() -> (EdgeBroker, u16) {
    let work = Workdir::new();
    let users = work.path("users.txt");
    let mut passwd = Command::new(env!("CARGO_BIN_EXE_tern-broker"))
        .arg("passwd")
        .arg(&users)
        .arg("alice")
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = passwd.stdin.take().unwrap();
    Write::write_all(&mut stdin, b"right\n").unwrap();
    drop(stdin);
    assert!(passwd.wait().unwrap().success());
    let port = free_port();
    // A wait far longer than the test, so that "still waiting" does not depend on its speed.
    let extra = format!(
        "auth:\n  users_file: {}\n  failed_logins_per_address: 3\n  login_backoff_secs: 600\n  \
         login_backoff_max_secs: 600\n  reload_poll_secs: 0\n",
        users.display()
    );
    let listeners = format!("  - name: mqtt\n    bind: 127.0.0.1:{port}\n");
    let broker = EdgeBroker::start(work, &listeners, &extra, port).await;
    (broker, port)
}

/// Three wrong passwords from 127.0.0.1 get 0x86 *Bad user name or password*; the fourth try,
/// even with the right password, is refused at once with 0x87 *Not authorized* and counted. A
/// client on 127.0.0.2 logs in with the right password all the while.
#[tokio::test]
async fn an_address_that_keeps_failing_waits_and_others_log_in() {
    let (broker, port) = start().await;
    const GUESSER: [u8; 4] = [127, 0, 0, 1];
    const OTHER: [u8; 4] = [127, 0, 0, 2];
    for _ in 0..3 {
        assert_eq!(login(port, GUESSER, "wrong").await, 0x86);
    }
    assert_eq!(login(port, GUESSER, "right").await, 0x87, "in its wait");
    assert_eq!(login(port, OTHER, "right").await, 0x00, "another address");
    assert_eq!(login(port, OTHER, "wrong").await, 0x86, "its own budget");

    let (status, metrics) =
        edge_support::http(broker.http_port, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"tern_limit_hits_total{limit="login_backoff"} "#))
        .expect("the counter");
    assert_eq!(refused, "1");
}
