//! Harness for the broker-edge integration tests (`edge_*.rs`): a `tern-broker` process started from
//! a whole YAML configuration (several listeners, TLS files, users and ACL files, an HTTP endpoint),
//! test certificates made with rcgen, rustls client configs on the ring provider, and a minimal
//! HTTP/1.1 client for the admin API.
//!
//! The rumqttc clients and their inboxes come from the shared `support` harness; this module adds
//! what `support::TestBroker` (one TCP listener plus extra top-level keys) cannot express.

#![allow(
    dead_code,
    reason = "every test file compiles this module on its own and uses only part of it"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Guard for something that must happen.
pub const WAIT: Duration = Duration::from_secs(10);
/// The admin token every edge broker is given.
pub const TOKEN: &str = "edge-rust-token";

pub use crate::support::free_port;

fn tern_binary() -> PathBuf {
    std::env::var_os("TERN_BROKER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tern-broker")))
}

/// A working directory for files a broker reads (certificates, users, ACL, token).
pub struct Workdir {
    dir: TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` by renaming a temporary file over it, as a Secret volume update does.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        fs::write(&tmp, contents).expect("write file");
        fs::rename(&tmp, &path).expect("rename file into place");
        path
    }
}

/// A broker process started from a complete configuration. Its HTTP endpoint is always on, with
/// the admin token [`TOKEN`].
pub struct EdgeBroker {
    child: Option<Child>,
    pub http_port: u16,
    log_path: PathBuf,
    pub work: Workdir,
}

impl EdgeBroker {
    /// Starts `tern-broker --config` with `listeners_yaml` (the items of `listeners:`, each
    /// starting with `  - `) and `extra_yaml` (more top-level keys, not `http`), then waits until
    /// `probe_port` and the HTTP port accept connections. (The broker binds its listeners in order
    /// and the HTTP endpoint last, so the HTTP port accepting means every listener does.)
    pub async fn start(
        work: Workdir,
        listeners_yaml: &str,
        extra_yaml: &str,
        probe_port: u16,
    ) -> Self {
        let http_port = free_port();
        let token = work.write("admin-token", format!("{TOKEN}\n"));
        let config = format!(
            "listeners:\n{listeners_yaml}\nhttp:\n  bind: 127.0.0.1:{http_port}\n  admin_token_file: {}\n\
             log:\n  level: debug\nsys:\n  interval_secs: 0\n{extra_yaml}\n",
            token.display()
        );
        let config_path = work.write("tern.yaml", config);
        let log_path = work.path("broker.log");
        let log = fs::File::create(&log_path).expect("create log");
        let child = Command::new(tern_binary())
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn tern-broker");
        let mut broker = Self {
            child: Some(child),
            http_port,
            log_path,
            work,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if accepts(probe_port).await && accepts(http_port).await {
                return broker;
            }
            if let Some(status) = broker.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("broker exited during start-up ({status})\n{}", broker.log());
            }
            assert!(
                Instant::now() < deadline,
                "broker not listening after {WAIT:?}\n{}",
                broker.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// One admin API request with the right token; returns status and body.
    pub async fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http(
            self.http_port,
            method,
            &format!("/api/v1{path}"),
            Some(TOKEN),
            body,
        )
        .await
    }
}

impl Drop for EdgeBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- broker log -----\n{}----- end -----", self.log());
        }
    }
}

async fn accepts(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// A minimal HTTP/1.1 request (`Connection: close`); returns the status and the body.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the HTTP endpoint");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    request.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("HTTP response in time")
        .expect("read HTTP response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A test certificate authority.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
    pub der: CertificateDer<'static>,
}

/// A certificate and its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    pub key_der: PrivateKeyDer<'static>,
}

impl Authority {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        Self {
            pem: certificate.pem(),
            der: certificate.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, common_name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            der: certificate.der().clone(),
            key_der: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self) -> Leaf {
        self.leaf(
            "tern-test-server",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose common name is `common_name`.
    pub fn client(&self, common_name: &str) -> Leaf {
        self.leaf(common_name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }
}

impl Leaf {
    /// Writes `NAME.crt` and `NAME.key` (key first) into `work`; returns their paths.
    pub fn write(&self, work: &Workdir, name: &str) -> (PathBuf, PathBuf) {
        let key = work.write(&format!("{name}.key"), &self.key_pem);
        let cert = work.write(&format!("{name}.crt"), &self.cert_pem);
        (cert, key)
    }
}

/// A rustls client config on the ring provider (passed explicitly, no process default) trusting
/// `ca`, presenting `client` if given.
pub fn client_config(ca: &Authority, client: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    Arc::new(match client {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der.clone()], leaf.key_der.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// The YAML of a `tls` section for certificate files written by [`Leaf::write`].
pub fn tls_yaml(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "    tls:\n      cert_file: {}\n      key_file: {}\n{extra}",
        cert.display(),
        key.display()
    )
}

/// Polls `check` until it is true; fails after [`WAIT`].
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
