//! The operator end-to-end harness: a real control plane (from `e2e/control-plane`, through
//! `KUBECONFIG`), the Helm chart installed with `helm`, the operator binary running under the
//! chart's ServiceAccount (a token from the TokenRequest API, so it has exactly the chart's RBAC),
//! and `tern-test-kubelet` running the broker pods as local processes on loopback addresses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::Api;
use kube::config::Kubeconfig;
use tern_test_kubelet::{BinaryMap, IpPrefix, Kubelet, KubeletConfig, KubeletHandle};

pub const RELEASE: &str = "tern-e2e";

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn binary(name: &str) -> PathBuf {
    let path = workspace().join("target/debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Runs a command of the tool set (kubectl, helm); panics with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}; put e2e/control-plane/tools.sh's directory on PATH (scripts/test.sh does)"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {}: {}\n{stdout}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Like [`run`] but returns the failure instead of panicking.
pub fn try_run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

pub fn kubectl(args: &[&str]) -> String {
    run("kubectl", args)
}

/// `kubectl apply -f -` of a YAML text.
pub fn kubectl_apply(namespace: &str, yaml: &str) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(["-n", namespace, "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(yaml.as_bytes()))
        .transpose()
        .map_err(|e| e.to_string())?;
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Everything one test run sets up; torn down on drop.
pub struct Env {
    pub namespace: String,
    pub operator_namespace: String,
    pub admin: Client,
    pub kubelet: Option<KubeletHandle>,
    operator: Option<Operator>,
    pub operator_http: u16,
    /// Authenticates as the chart's ServiceAccount, for every operator process.
    operator_kubeconfig: PathBuf,
    /// Kubelet root, operator logs and kubeconfig; removed with the environment.
    dir: tempfile::TempDir,
}

/// One `tern-operator` process, run the way a pod of the chart's Deployment would be.
pub struct Operator {
    /// The pod name it was given (`POD_NAME`), the prefix of its Lease holder identity.
    pub name: String,
    /// Its `/metrics`, `/healthz` and `/readyz` port on 127.0.0.1.
    pub http: u16,
    child: Child,
}

impl Operator {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `KILL`, …) without waiting.
    pub fn signal(&self, signal: &str) {
        run("kill", &[&format!("-{signal}"), &self.pid().to_string()]);
    }

    /// How it ended, once it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("operator status")
    }

    /// Whether a Lease holder identity is this process's: its pod name, `_`, a random suffix.
    pub fn is(&self, holder: &str) -> bool {
        holder
            .strip_prefix(self.name.as_str())
            .is_some_and(|rest| rest.starts_with('_'))
    }

    /// The HTTP status of `GET path`; `None` when nothing answers.
    pub async fn http_status(&self, path: &str) -> Option<u16> {
        reqwest::get(format!("http://127.0.0.1:{}{path}", self.http))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http))
            .await
            .expect("operator /metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

impl Env {
    /// Installs the chart (namespaced mode, watching `namespace`), starts the operator as the
    /// chart's ServiceAccount and the kubelet stand-in.
    pub async fn start(tag: &str, ip_prefix: [u8; 3]) -> Env {
        Self::start_with(tag, ip_prefix, &[]).await
    }

    /// Like [`Env::start`], with extra environment for the operator (on top of the chart's).
    pub async fn start_with(tag: &str, ip_prefix: [u8; 3], operator_env: &[(&str, &str)]) -> Env {
        let _ = rustls::crypto::ring::default_provider().install_default();
        assert!(
            std::env::var_os("KUBECONFIG").is_some(),
            "KUBECONFIG must point at e2e/control-plane's kubeconfig (scripts/test.sh sets it)"
        );
        let namespace = format!("e2e-{tag}-{}", std::process::id());
        let operator_namespace = format!("{namespace}-op");
        kubectl(&["create", "namespace", &namespace]);
        let chart = workspace().join("charts/tern-operator");
        let chart = chart.to_string_lossy();
        run("helm", &["lint", "--strict", &chart]);
        run(
            "helm",
            &[
                "install",
                RELEASE,
                &chart,
                "-n",
                &operator_namespace,
                "--create-namespace",
                "--set",
                &format!("watchNamespace={namespace}"),
                // CRDs are cluster-wide; an earlier run's release may own them.
                "--take-ownership",
                "--wait=false",
            ],
        );
        let admin = Client::try_default().await.expect("admin client");
        let dir = tempfile::tempdir().expect("tempdir");
        let operator_kubeconfig =
            service_account_kubeconfig(&admin, &operator_namespace, dir.path()).await;
        let operator = start_operator(
            &admin,
            &operator_namespace,
            &operator_kubeconfig,
            dir.path(),
            "operator-0",
            operator_env,
        )
        .await;
        let mut binaries = BinaryMap::default();
        binaries.insert("tern-broker", binary("tern-broker"));
        let mut config = KubeletConfig::new(dir.path().join("kubelet"));
        config.namespace = Some(namespace.clone());
        config.node_name = format!("node-{namespace}");
        config.ip_prefix = IpPrefix(ip_prefix);
        config.binaries = binaries;
        let kubelet = Kubelet::start(config).await.expect("kubelet");
        Env {
            namespace,
            operator_namespace,
            admin,
            kubelet: Some(kubelet),
            operator_http: operator.http,
            operator: Some(operator),
            operator_kubeconfig,
            dir,
        }
    }

    /// Hands the operator [`Env::start`] started to the test, to signal or watch it.
    pub fn take_operator(&mut self) -> Operator {
        self.operator.take().expect("the first operator")
    }

    /// Starts one more operator process, as another pod `name` of the chart's Deployment, with
    /// extra environment on top of the chart's; the test owns it (dropping it stops it).
    pub async fn start_operator(&self, name: &str, env: &[(&str, &str)]) -> Operator {
        start_operator(
            &self.admin,
            &self.operator_namespace,
            &self.operator_kubeconfig,
            self.dir.path(),
            name,
            env,
        )
        .await
    }

    /// The chart's operator Deployment as installed.
    pub async fn operator_deployment(&self) -> Deployment {
        operator_deployment(&self.admin, &self.operator_namespace).await
    }

    pub fn kubelet(&self) -> &KubeletHandle {
        self.kubelet.as_ref().expect("kubelet running")
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        kubectl(&all)
    }

    pub fn apply(&self, yaml: &str) -> Result<String, String> {
        kubectl_apply(&self.namespace, yaml)
    }

    /// The operator's `/metrics` text.
    pub async fn operator_metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.operator_http))
            .await
            .expect("operator /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn stop(mut self) {
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.shutdown().await;
        }
        drop(self.operator.take());
        let _ = try_run(
            "kubectl",
            &["delete", "namespace", &self.namespace, "--wait=false"],
        );
        let _ = try_run(
            "helm",
            &["uninstall", RELEASE, "-n", &self.operator_namespace],
        );
        let _ = try_run(
            "kubectl",
            &[
                "delete",
                "namespace",
                &self.operator_namespace,
                "--wait=false",
            ],
        );
    }
}

fn terminate(child: &mut Child) {
    // Never signal a pid that was already reaped: it may belong to another process by now.
    if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    for _ in 0..50 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn operator_deployment(admin: &Client, namespace: &str) -> Deployment {
    Api::<Deployment>::namespaced(admin.clone(), namespace)
        .get(&format!("{RELEASE}-tern-operator"))
        .await
        .expect("the chart's Deployment")
}

/// Runs `tern-operator` the way a pod `name` of the chart's Deployment would: its args and env
/// (plus `extra_env`), authenticated as its ServiceAccount.
async fn start_operator(
    admin: &Client,
    namespace: &str,
    kubeconfig: &Path,
    dir: &Path,
    name: &str,
    extra_env: &[(&str, &str)],
) -> Operator {
    let pod = operator_deployment(admin, namespace)
        .await
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod template");
    let container = &pod.containers[0];
    let port = free_port();
    let mut command = Command::new(binary("tern-operator"));
    command.args(container.args.clone().unwrap_or_default());
    for env in container.env.iter().flatten() {
        if let Some(value) = &env.value {
            command.env(&env.name, value);
            continue;
        }
        // The downward API, as kubelet would fill it in.
        let field = env
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        match field {
            Some("metadata.namespace") => command.env(&env.name, namespace),
            Some("metadata.name") => command.env(&env.name, name),
            other => panic!(
                "env {} from {other:?}: the harness cannot fill it in",
                env.name
            ),
        };
    }
    let log = dir.join(format!("{name}.log"));
    command
        .env("KUBECONFIG", kubeconfig)
        .env("TERN_OPERATOR_HTTP_BIND", format!("127.0.0.1:{port}"))
        .env("TERN_LOG_FORMAT", "text")
        .env("RUST_LOG", "info,tern_operator=debug")
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("operator log"));
    let child = command.spawn().expect("start tern-operator");
    eprintln!("operator {name} log: {}", log.display());
    Operator {
        name: name.to_owned(),
        http: port,
        child,
    }
}

/// A kubeconfig for the chart's ServiceAccount, from a TokenRequest token.
async fn service_account_kubeconfig(admin: &Client, namespace: &str, dir: &Path) -> PathBuf {
    let service_account = operator_deployment(admin, namespace)
        .await
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.service_account_name)
        .expect("serviceAccountName");
    let token = kubectl(&[
        "-n",
        namespace,
        "create",
        "token",
        &service_account,
        "--duration=2h",
    ]);
    token_kubeconfig(token.trim(), dir).await
}

/// A kubeconfig for the same API server that authenticates with `token` only.
async fn token_kubeconfig(token: &str, dir: &Path) -> PathBuf {
    let mut kubeconfig = Kubeconfig::read().expect("admin kubeconfig");
    for auth in &mut kubeconfig.auth_infos {
        if let Some(info) = auth.auth_info.as_mut() {
            *info = kube::config::AuthInfo {
                token: Some(token.to_owned().into()),
                ..Default::default()
            };
        }
    }
    let path = dir.join("operator.kubeconfig");
    std::fs::write(
        &path,
        serde_yaml::to_string(&kubeconfig).expect("kubeconfig yaml"),
    )
    .expect("write kubeconfig");
    path
}

/// A port that was free a moment ago and that this test binary has not handed out before: the
/// kernel may give a just-released port to the next caller, and tests run concurrently.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}
