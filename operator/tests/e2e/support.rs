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
    operator: Option<Child>,
    pub operator_http: u16,
    /// Kubelet root, operator log and kubeconfig; removed with the environment.
    _dir: tempfile::TempDir,
}

impl Env {
    /// Installs the chart (namespaced mode, watching `namespace`), starts the operator as the
    /// chart's ServiceAccount and the kubelet stand-in.
    pub async fn start(tag: &str, ip_prefix: [u8; 3]) -> Env {
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
        let (operator, operator_http) =
            start_operator(&admin, &operator_namespace, dir.path()).await;
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
            operator: Some(operator),
            operator_http,
            _dir: dir,
        }
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
        if let Some(mut operator) = self.operator.take() {
            terminate(&mut operator);
        }
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

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut operator) = self.operator.take() {
            terminate(&mut operator);
        }
    }
}

fn terminate(child: &mut Child) {
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

/// Runs `tern-operator` the way the chart's Deployment would: its args and env, authenticated as
/// its ServiceAccount. Returns the process and its HTTP port.
async fn start_operator(admin: &Client, namespace: &str, dir: &Path) -> (Child, u16) {
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), namespace);
    let deployment = deployments
        .get(&format!("{RELEASE}-tern-operator"))
        .await
        .expect("the chart's Deployment");
    let pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod template");
    let service_account = pod
        .service_account_name
        .clone()
        .expect("serviceAccountName");
    let container = &pod.containers[0];
    let token = kubectl(&[
        "-n",
        namespace,
        "create",
        "token",
        &service_account,
        "--duration=2h",
    ]);
    let kubeconfig = service_account_kubeconfig(token.trim(), dir).await;
    let port = free_port();
    let mut command = Command::new(binary("tern-operator"));
    command.args(container.args.clone().unwrap_or_default());
    for env in container.env.iter().flatten() {
        if let Some(value) = &env.value {
            command.env(&env.name, value);
        } else if env.name == "POD_NAMESPACE" {
            command.env(&env.name, namespace);
        }
    }
    command
        .env("KUBECONFIG", &kubeconfig)
        .env("TERN_OPERATOR_HTTP_BIND", format!("127.0.0.1:{port}"))
        .env("TERN_LOG_FORMAT", "text")
        .env("RUST_LOG", "info,tern_operator=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("operator.log")).expect("operator log"));
    let child = command.spawn().expect("start tern-operator");
    eprintln!("operator log: {}", dir.join("operator.log").display());
    (child, port)
}

/// A kubeconfig for the same API server that authenticates with `token` only.
async fn service_account_kubeconfig(token: &str, dir: &Path) -> PathBuf {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
