//! Clusters of real broker processes on one machine: node `i` of a test cluster listens on its own
//! loopback address `127.0.B.i` (MQTT 1883, HTTP 9090, gossip and peer links 4370), so every node
//! has the same ports and no port is picked at random. `B` is unique per test cluster within a
//! test binary (and above the block a developer's `scripts/cluster.sh` uses).
//!
//! Nodes can be killed (`SIGKILL`), stopped and restarted; dropping the cluster stops them all and,
//! when the test is failing, prints every node's log.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::link_proxy::LinkProxy;
use super::{WAIT, tern_binary};

const MQTT_PORT: u16 = 1883;
const HTTP_PORT: u16 = 9090;
const CLUSTER_PORT: u16 = 4370;
pub const TOKEN: &str = "cluster-test-token";

/// How long a node that was killed may take to be noticed (the failure detector's window at the
/// test's gossip settings, with room for a loaded machine).
pub const FAILURE_WINDOW: Duration = Duration::from_secs(30);

/// The next address block, from 127.100.x.x up.
fn next_block() -> u8 {
    static NEXT: AtomicU8 = AtomicU8::new(100);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub struct TestCluster {
    name: String,
    /// Gossip seeds besides the cluster's own first two nodes.
    extra_seeds: Vec<String>,
    block: u8,
    nodes: Vec<Node>,
    extra_yaml: String,
    /// A node whose gossip and peer links pass through a [`LinkProxy`], which it advertises.
    proxied: Option<usize>,
    dir: TempDir,
}

struct Node {
    child: Option<Child>,
    log: PathBuf,
}

impl TestCluster {
    /// Starts `size` nodes of a cluster named `name` and waits until every one is ready.
    pub async fn start(size: usize) -> Self {
        Self::start_with(size, "demo", "").await
    }

    /// Like [`Self::start`], with `extra_yaml` added to every node's configuration.
    pub async fn start_with(size: usize, name: &str, extra_yaml: &str) -> Self {
        Self::start_seeded(size, name, extra_yaml, Vec::new()).await
    }

    /// Like [`Self::start_with`], also gossiping with `extra_seeds` (`host:port`).
    pub async fn start_seeded(
        size: usize,
        name: &str,
        extra_yaml: &str,
        extra_seeds: Vec<String>,
    ) -> Self {
        let mut cluster = Self::new(name, extra_yaml, extra_seeds, None);
        cluster.spawn_all(size).await;
        cluster
    }

    /// Like [`Self::start_with`], with node `proxied`'s gossip and peer links passing through the
    /// returned proxy, so that a test can break them.
    pub async fn start_proxied(
        size: usize,
        name: &str,
        extra_yaml: &str,
        proxied: usize,
    ) -> (Self, LinkProxy) {
        let mut cluster = Self::new(name, extra_yaml, Vec::new(), Some(proxied));
        let proxy = LinkProxy::start(
            cluster.advertised(proxied),
            SocketAddr::new(cluster.ip(proxied), CLUSTER_PORT),
        )
        .await;
        cluster.spawn_all(size).await;
        (cluster, proxy)
    }

    fn new(name: &str, extra_yaml: &str, extra_seeds: Vec<String>, proxied: Option<usize>) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        fs::write(dir.path().join("token"), TOKEN).expect("write token");
        Self {
            name: name.to_owned(),
            extra_seeds,
            block: next_block(),
            nodes: Vec::new(),
            extra_yaml: extra_yaml.to_owned(),
            proxied,
            dir,
        }
    }

    async fn spawn_all(&mut self, size: usize) {
        for i in 0..size {
            let node = self.spawn(i);
            self.nodes.push(node);
        }
        for i in 0..size {
            self.wait_ready(i).await;
        }
    }

    /// What node `i` advertises to its peers: its own address, or its proxy's.
    fn advertised(&self, i: usize) -> SocketAddr {
        if self.proxied == Some(i) {
            let host = u8::try_from(101 + i).expect("a small cluster");
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, self.block, 0, host)),
                CLUSTER_PORT,
            )
        } else {
            SocketAddr::new(self.ip(i), CLUSTER_PORT)
        }
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    fn ip(&self, i: usize) -> IpAddr {
        let host = u8::try_from(i + 1).expect("a small cluster");
        IpAddr::V4(Ipv4Addr::new(127, self.block, 0, host))
    }

    /// Node `i`'s MQTT host and port.
    pub fn mqtt(&self, i: usize) -> (String, u16) {
        (self.ip(i).to_string(), MQTT_PORT)
    }

    /// Node `i`'s gossip address, as a seed.
    pub fn gossip(&self, i: usize) -> String {
        format!("{}:{CLUSTER_PORT}", self.ip(i))
    }

    fn http(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.ip(i), HTTP_PORT)
    }

    pub fn node_id(&self, i: usize) -> String {
        format!("{}-{i}", self.name)
    }

    fn config(&self, i: usize) -> String {
        let seeds: Vec<String> = (0..2)
            .map(|s| self.gossip(s))
            .chain(self.extra_seeds.iter().cloned())
            .collect();
        format!(
            "listeners:\n  - name: mqtt\n    bind: {ip}:{MQTT_PORT}\n\
             auth:\n  allow_anonymous: true\n\
             log:\n  level: info,tern_broker::cluster=debug\n\
             http:\n  bind: {ip}:{HTTP_PORT}\n  admin_token_file: {token}\n\
             cluster:\n  name: {name}\n  node_id: {id}\n  bind: {ip}:{CLUSTER_PORT}\n  advertise: {advertise}\n  seeds: [{seeds}]\n\
             {extra}\n",
            ip = self.ip(i),
            token = self.dir.path().join("token").display(),
            name = self.name,
            id = self.node_id(i),
            advertise = self.advertised(i),
            seeds = seeds.join(", "),
            extra = self.extra_yaml,
        )
    }

    fn spawn(&self, i: usize) -> Node {
        let config = self.dir.path().join(format!("node-{i}.yaml"));
        fs::write(&config, self.config(i)).expect("write config");
        let log = self.dir.path().join(format!("node-{i}.log"));
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let child = Command::new(tern_binary())
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .expect("spawn a broker node");
        Node {
            child: Some(child),
            log,
        }
    }

    /// Waits until node `i` answers `/readyz` with 200: joined, holding every peer's routes.
    pub async fn wait_ready(&self, i: usize) {
        let url = format!("http://{}/readyz", self.http(i));
        let deadline = Instant::now() + WAIT * 2;
        loop {
            if let Ok(response) = reqwest::get(&url).await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} not ready in time\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /api/v1/cluster` on node `i`.
    pub async fn view(&self, i: usize) -> Value {
        let url = format!("http://{}/api/v1/cluster", self.http(i));
        reqwest::Client::new()
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("the admin API answers")
            .json()
            .await
            .expect("a JSON cluster view")
    }

    /// The members node `i` sees, with their state, by node id.
    pub async fn members(&self, i: usize) -> Vec<(String, String)> {
        let view = self.view(i).await;
        view["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (
                    m["node_id"].as_str().unwrap_or_default().to_owned(),
                    m["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Waits until node `i` sees exactly `expected` (node ids) as members, and returns how long
    /// that took.
    pub async fn wait_members(&self, i: usize, expected: &[String], within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let members: Vec<String> = self.members(i).await.into_iter().map(|m| m.0).collect();
            if members == expected {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "node {i} sees {members:?}, not {expected:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The peers node `i` holds `count` routes for, by node id, once it does.
    pub async fn wait_peer_routes(&self, i: usize, peer: usize, count: u64) {
        let peer_id = self.node_id(peer);
        let deadline = Instant::now() + WAIT;
        loop {
            let view = self.view(i).await;
            let routes = view["members"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["node_id"] == peer_id.as_str())
                .and_then(|m| m["routes"].as_u64());
            if routes == Some(count) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} holds {routes:?} routes of {peer_id}, not {count}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `METHOD /api/v1/PATH` on node `i`: the status and the JSON body (null when there is none).
    pub async fn admin(&self, i: usize, method: reqwest::Method, path: &str) -> (u16, Value) {
        let url = format!("http://{}/api/v1/{path}", self.http(i));
        let response = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("the admin API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// How many sessions node `i` holds for `client_id` (0 or 1).
    pub async fn sessions_with(&self, i: usize, client_id: &str) -> usize {
        let (status, body) = self
            .admin(i, reqwest::Method::GET, &format!("clients/{client_id}"))
            .await;
        // A node that does not hold the client may still say where it is.
        usize::from(status == 200 && body.get("client").is_some())
    }

    /// Waits until the other nodes keep `count` wills in all.
    pub async fn wait_kept_wills(&self, count: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut kept = 0;
            for i in 0..self.size() {
                kept += self.view(i).await["kept_wills"].as_u64().unwrap_or(0);
            }
            if kept == count {
                return;
            }
            assert!(Instant::now() < deadline, "{kept} wills kept, not {count}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills node `i` with SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again (a new generation), and waits until it is ready.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.nodes[i] = self.spawn(i);
        self.wait_ready(i).await;
    }

    /// Every node's log.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let log = fs::read_to_string(&node.log).unwrap_or_default();
            all.push_str(&format!("----- node {i} -----\n{log}"));
        }
        all
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
