//! Harness for the integration tests: starts a real broker process on a free loopback port and
//! hands out `rumqttc` clients whose received packets arrive through a channel.
//!
//! The broker is the `tern-broker` binary, or Debian's Mosquitto when `TERN_TEST_BROKER=mosquitto`
//! (a reference for checking the tests themselves, not the truth). `TERN_BROKER_BIN` overrides
//! the path of the Tern binary. Each test starts its own broker; dropping a `TestBroker` stops the
//! process and, when the test is failing, prints the broker's log.

#![allow(
    dead_code,
    reason = "every test file compiles this module on its own and uses only part of it"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

pub mod client;
pub mod cluster;
pub mod embedded;
pub mod expect;
pub mod link_proxy;
pub mod pubsub;
pub mod raw_v5;
pub mod v311;
pub mod v5;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Guard for something that must happen: a test fails if it has not happened by then.
pub const WAIT: Duration = Duration::from_secs(10);
/// Window in which something must not happen, after the test has synchronised on a later event.
pub const QUIET: Duration = Duration::from_millis(500);

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Which broker program the tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    Tern,
    Mosquitto,
}

impl BrokerKind {
    /// The broker named by `TERN_TEST_BROKER` (`mosquitto`), else Tern.
    pub fn from_env() -> Self {
        match std::env::var("TERN_TEST_BROKER").as_deref() {
            Ok("mosquitto") => BrokerKind::Mosquitto,
            Ok("tern") | Ok("") | Err(_) => BrokerKind::Tern,
            Ok(other) => panic!("TERN_TEST_BROKER={other}: expected `tern` or `mosquitto`"),
        }
    }

    /// Whether the broker's log says it listens on `port`. A successful connect alone does not
    /// tell: a port from `free_port` is only free when picked, and another test's broker may have
    /// taken it while this one failed to bind.
    fn logged_listening(self, log: &str, port: u16) -> bool {
        match self {
            BrokerKind::Tern => log.lines().any(|line| {
                line.contains("listening") && line.contains(&format!("127.0.0.1:{port}"))
            }),
            BrokerKind::Mosquitto => log.contains(&format!("listen socket on port {port}")),
        }
    }
}

/// Start-up attempts, each on a newly picked port, before a broker that will not listen fails the test.
const START_ATTEMPTS: usize = 5;

/// True when the suite runs against the Mosquitto reference broker.
pub fn mosquitto_mode() -> bool {
    BrokerKind::from_env() == BrokerKind::Mosquitto
}

/// Path of the Tern binary under test: the one Cargo built for this package, unless
/// `TERN_BROKER_BIN` names another.
fn tern_binary() -> PathBuf {
    std::env::var_os("TERN_BROKER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tern-broker")))
}

/// One broker process on `127.0.0.1:port`, with its config and log in a temporary directory.
pub struct TestBroker {
    kind: BrokerKind,
    port: u16,
    child: Option<Child>,
    log_path: PathBuf,
    /// What [`TestBroker::start_with`] added to the config, for [`TestBroker::restart`].
    extra_yaml: String,
    /// The logs of earlier runs of this broker (see [`TestBroker::restart`]).
    earlier_logs: String,
    // Held for its Drop: removes the config and log once the test is over.
    _dir: TempDir,
}

impl TestBroker {
    /// Starts a broker with the default test config: one TCP listener, anonymous access.
    pub async fn start() -> TestBroker {
        TestBroker::start_with("").await
    }

    /// Starts a broker whose config has `extra_yaml` (top-level keys such as
    /// `limits: {max_queued_messages: 5}`) appended to the default test config.
    pub async fn start_with(extra_yaml: &str) -> TestBroker {
        let mut failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut broker = TestBroker::spawn(extra_yaml);
            match broker.wait_until_listening().await {
                Ok(()) => return broker,
                // Most likely the port was taken after it was picked: try another.
                Err(why) => failure = why,
            }
        }
        panic!("no broker started in {START_ATTEMPTS} attempts; the last: {failure}");
    }

    fn spawn(extra_yaml: &str) -> TestBroker {
        let kind = BrokerKind::from_env();
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = free_port();
        let log_path = dir.path().join("broker.log");
        let child = launch(kind, &dir, port, extra_yaml, &log_path);
        TestBroker {
            kind,
            port,
            child: Some(child),
            log_path,
            extra_yaml: extra_yaml.to_string(),
            earlier_logs: String::new(),
            _dir: dir,
        }
    }

    /// Stops the process at once with SIGKILL, as a crash would: nothing is flushed or closed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again after [`Self::kill`] or [`Self::stop_gracefully`], on the same
    /// port with the same configuration, and waits until it listens.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the broker is still running");
        self.earlier_logs.push_str(&self.log());
        self.earlier_logs.push_str("----- restarted -----\n");
        let child = launch(
            self.kind,
            &self._dir,
            self.port,
            &self.extra_yaml,
            &self.log_path,
        );
        self.child = Some(child);
        if let Err(why) = self.wait_until_listening().await {
            panic!("the broker did not start again: {why}");
        }
    }

    /// Starts the broker again and waits for it to exit without listening (a refusal to
    /// start); its log then says why.
    pub async fn restart_expecting_failure(&mut self) -> ExitStatus {
        assert!(self.child.is_none(), "the broker is still running");
        self.earlier_logs.push_str(&self.log());
        self.earlier_logs.push_str("----- restarted -----\n");
        let mut child = launch(
            self.kind,
            &self._dir,
            self.port,
            &self.extra_yaml,
            &self.log_path,
        );
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().expect("poll broker") {
                assert!(!status.success(), "the broker exited with success");
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the broker started (or hung) instead of refusing\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Starts a broker process with its config in `dir`, its output in `log_path` (truncated).
fn launch(
    kind: BrokerKind,
    dir: &TempDir,
    port: u16,
    extra_yaml: &str,
    log_path: &PathBuf,
) -> Child {
    {
        let mut command = match kind {
            BrokerKind::Tern => {
                let config = dir.path().join("tern.yaml");
                fs::write(&config, tern_config(port, extra_yaml)).expect("write config");
                let mut command = Command::new(tern_binary());
                command.arg("--config").arg(&config);
                command
            }
            BrokerKind::Mosquitto => {
                let config = dir.path().join("mosquitto.conf");
                fs::write(&config, mosquitto_config(port, extra_yaml)).expect("write config");
                let mut command = Command::new(MOSQUITTO);
                command.arg("-c").arg(&config);
                command
            }
        };
        let log = fs::File::create(log_path).expect("create broker log");
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {kind:?} broker: {e}"))
    }
}

impl TestBroker {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// The broker's stdout and stderr so far (this run's).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns its exit status.
    pub async fn stop_gracefully(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("broker already stopped");
        send_sigterm(&child);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for broker") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker did not exit within {WAIT:?} of SIGTERM\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until this broker accepts connections and its log says it is the one listening;
    /// the error describes a broker that exited or never listened (and has been stopped).
    async fn wait_until_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
                && self.kind.logged_listening(&self.log(), self.port)
            {
                return Ok(());
            }
            let child = self.child.as_mut().expect("broker is running");
            if let Some(status) = child.try_wait().expect("poll broker") {
                self.child = None;
                return Err(format!(
                    "{:?} broker exited during start-up ({status})\n{}",
                    self.kind,
                    self.log()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return Err(format!(
                    "{:?} broker not listening on port {} after {WAIT:?}\n{}",
                    self.kind,
                    self.port,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_sigterm(&child);
            let deadline = Instant::now() + Duration::from_secs(3);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- {:?} broker log ({}) -----\n{}{}----- end of broker log -----",
                self.kind,
                self.log_path.display(),
                self.earlier_logs,
                self.log()
            );
        }
    }
}

/// Asks the process to stop the way an orchestrator would; `kill` avoids a dependency on libc.
fn send_sigterm(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A port that was free a moment ago and that this test binary has not handed out before: the
/// kernel may give a just-released port to the next caller, and the tests of one binary run
/// concurrently. The broker binds it right after; a clash with another process fails loudly.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        if HANDED_OUT
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

fn tern_config(port: u16, extra_yaml: &str) -> String {
    format!(
        "listeners:\n  - name: mqtt\n    protocol: tcp\n    bind: 127.0.0.1:{port}\n\
         auth:\n  allow_anonymous: true\nlog:\n  level: debug\n{extra_yaml}\n"
    )
}

/// The Mosquitto equivalent of the Tern test config, `extra_yaml` translated key by key.
fn mosquitto_config(port: u16, extra_yaml: &str) -> String {
    let mut conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
         log_dest stderr\nlog_type all\n"
    );
    for (key, value) in flatten_yaml(extra_yaml) {
        let option = match key.as_str() {
            "limits.max_packet_size" => "max_packet_size",
            "limits.max_queued_messages" => "max_queued_messages",
            "limits.receive_maximum" | "limits.max_inflight" => "max_inflight_messages",
            "limits.topic_alias_maximum" => "max_topic_alias",
            "limits.server_keep_alive" => "max_keepalive",
            "sys.interval_secs" => "sys_interval",
            other => panic!("no Mosquitto equivalent for config key `{other}`"),
        };
        conf.push_str(&format!("{option} {value}\n"));
    }
    conf
}

/// `a: {b: 1}` → `[("a.b", "1")]`.
fn flatten_yaml(yaml: &str) -> BTreeMap<String, String> {
    fn walk(prefix: &str, value: &serde_yaml::Value, out: &mut BTreeMap<String, String>) {
        match value {
            serde_yaml::Value::Mapping(map) => {
                for (k, v) in map {
                    let k = k.as_str().expect("string keys");
                    let key = if prefix.is_empty() {
                        k.to_owned()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            serde_yaml::Value::Null => {}
            other => {
                let text = serde_yaml::to_string(other).expect("scalar to YAML");
                out.insert(prefix.to_owned(), text.trim().to_owned());
            }
        }
    }
    let mut out = BTreeMap::new();
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("extra YAML parses");
    walk("", &value, &mut out);
    out
}

/// What the event-loop task of one client reports.
#[derive(Debug)]
pub enum Note<P, E> {
    /// A packet received from the broker.
    Packet(P),
    /// The client sent DISCONNECT; the task has ended and dropped the connection.
    DisconnectSent,
    /// The connection failed or was closed by the broker; the task has ended.
    Failed(E),
}

/// The receiving side of one client: packets in arrival order, plus how the connection ended.
///
/// `expect_*` helpers take the first packet of the kind they want and keep the others, in order,
/// for later calls, so waiting for a SUBACK does not lose a PUBLISH that came first.
pub struct Inbox<P, E> {
    rx: mpsc::UnboundedReceiver<Note<P, E>>,
    kept: VecDeque<P>,
    ended: Option<Note<P, E>>,
    task: JoinHandle<()>,
}

impl<P: Debug, E: Debug> Inbox<P, E> {
    pub fn new(rx: mpsc::UnboundedReceiver<Note<P, E>>, task: JoinHandle<()>) -> Self {
        Inbox {
            rx,
            kept: VecDeque::new(),
            ended: None,
            task,
        }
    }

    /// The first packet (kept or new) for which `pick` returns a value; fails after `timeout`
    /// or as soon as the connection has ended.
    pub async fn next_matching<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        pick: impl FnMut(&P) -> Option<T>,
    ) -> T {
        match self.next_matching_within(what, timeout, pick).await {
            Some(found) => found,
            None => panic!(
                "no {what} within {timeout:?}; received meanwhile: {:?}",
                self.kept
            ),
        }
    }

    /// Like [`Inbox::next_matching`], but `None` when nothing matching came within `within`.
    pub async fn next_matching_within<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(&P) -> Option<T>,
    ) -> Option<T> {
        if let Some(at) = self.kept.iter().position(|p| pick(p).is_some()) {
            let packet = self.kept.remove(at).expect("index in range");
            return pick(&packet);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(ended) = &self.ended {
                panic!("waiting for {what}, but the connection has ended: {ended:?}");
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return None,
                Ok(None) => panic!("waiting for {what}: the client task is gone"),
                Ok(Some(Note::Packet(packet))) => match pick(&packet) {
                    Some(found) => return Some(found),
                    None => self.kept.push_back(packet),
                },
                Ok(Some(ended)) => self.ended = Some(ended),
            }
        }
    }

    /// Fails if a packet for which `pick` returns true is kept or arrives within `within`.
    pub async fn nothing_matching(
        &mut self,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(&P) -> bool,
    ) {
        if let Some(p) = self.kept.iter().find(|p| pick(p)) {
            panic!("expected no {what}, got {p:?}");
        }
        let deadline = tokio::time::Instant::now() + within;
        while self.ended.is_none() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) | Ok(None) => return,
                Ok(Some(Note::Packet(packet))) => {
                    if pick(&packet) {
                        panic!("expected no {what} within {within:?}, got {packet:?}");
                    }
                    self.kept.push_back(packet);
                }
                Ok(Some(ended)) => self.ended = Some(ended),
            }
        }
    }

    /// Whether the connection has ended by now (without waiting; packets that came are kept).
    pub fn has_ended(&mut self) -> bool {
        while self.ended.is_none() {
            match self.rx.try_recv() {
                Ok(Note::Packet(packet)) => self.kept.push_back(packet),
                Ok(ended) => self.ended = Some(ended),
                Err(mpsc::error::TryRecvError::Empty) => return false,
                Err(mpsc::error::TryRecvError::Disconnected) => return true,
            }
        }
        true
    }

    /// Waits until the connection has ended and says how.
    pub async fn ended(&mut self, timeout: Duration) -> Note<P, E> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.ended.is_none() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => panic!("connection still open after {timeout:?}"),
                Ok(None) => panic!("the client task is gone without a word"),
                Ok(Some(Note::Packet(packet))) => self.kept.push_back(packet),
                Ok(Some(ended)) => self.ended = Some(ended),
            }
        }
        self.ended.take().expect("set above")
    }

    /// Drops the network connection without DISCONNECT, as if the client had crashed, and
    /// returns once the socket is closed on this side.
    pub async fn drop_connection(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

/// Ends the client task (and so its connection) when an inbox is dropped.
impl<P, E> Drop for Inbox<P, E> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Prints why a test does nothing against the reference broker.
pub fn skip_on_mosquitto(reason: &str) -> bool {
    if mosquitto_mode() {
        eprintln!("skipped against Mosquitto: {reason}");
        true
    } else {
        false
    }
}
