//! Probes and lifecycle hooks: `httpGet` (plain HTTP/1.1 against the pod address; 200–399 passes),
//! `tcpSocket`, `exec` (the mapped binary, args rewritten) and, for hooks, `sleep`.
//!
//! Timing follows the probe's `periodSeconds`, `initialDelaySeconds`, `timeoutSeconds`,
//! `successThreshold` and `failureThreshold`, except that period and initial delay are capped at 2 s to
//! keep tests quick. One prober task runs per container process: startup probe first, then readiness
//! and liveness side by side; it reports transitions to the container's supervisor.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::process::{ExecOutcome, Launcher, ProcessSpec, run_exec};

/// Upper bound on `periodSeconds` and `initialDelaySeconds`.
pub const MAX_PERIOD: Duration = Duration::from_secs(2);

/// One check or hook action.
#[derive(Debug, Clone)]
pub enum Action {
    Http {
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Exec(ProcessSpec),
    Sleep(Duration),
    /// Something this kubelet cannot do (gRPC probes, HTTPS, an unknown port name): always fails.
    Unsupported(String),
}

impl Action {
    /// Runs the action once, within `timeout`. Exit 0 is success; network checks report 0 or 1.
    pub async fn run(&self, launcher: &Launcher, timeout: Duration) -> ExecOutcome {
        let network = |passed: bool, output: String| ExecOutcome {
            exit: Some(if passed { 0 } else { 1 }),
            output,
        };
        match self {
            Self::Http {
                host,
                port,
                path,
                headers,
            } => match tokio::time::timeout(timeout, http_get(host, *port, path, headers)).await {
                Ok(Ok(status)) => network(
                    (200..400).contains(&status),
                    format!("HTTP status {status}"),
                ),
                Ok(Err(error)) => {
                    network(false, format!("Get http://{host}:{port}{path}: {error}"))
                }
                Err(_) => network(
                    false,
                    format!("Get http://{host}:{port}{path}: timeout after {timeout:?}"),
                ),
            },
            Self::Tcp { host, port } => {
                match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), *port)))
                    .await
                {
                    Ok(Ok(_)) => network(true, String::new()),
                    Ok(Err(error)) => network(false, format!("dial tcp {host}:{port}: {error}")),
                    Err(_) => network(false, format!("dial tcp {host}:{port}: timeout")),
                }
            }
            Self::Exec(spec) => run_exec(launcher, spec, timeout).await,
            Self::Sleep(duration) => {
                tokio::time::sleep((*duration).min(timeout)).await;
                network(true, String::new())
            }
            Self::Unsupported(what) => ExecOutcome {
                exit: None,
                output: format!("not supported by tern-test-kubelet: {what}"),
            },
        }
    }
}

/// Builds actions for one container: its ports, the pod address, and how to turn an exec command
/// into a process.
pub struct ActionBuilder<'a, F> {
    pub ports: &'a [ContainerPort],
    pub pod_ip: String,
    pub exec: F,
}

impl<F: Fn(&[String]) -> Result<ProcessSpec, String>> ActionBuilder<'_, F> {
    pub fn http(&self, get: &HTTPGetAction) -> Action {
        if get
            .scheme
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case("http"))
        {
            return Action::Unsupported("httpGet with scheme HTTPS".into());
        }
        match self.port(&get.port) {
            Ok(port) => Action::Http {
                host: self.host(get.host.as_deref()),
                port,
                path: get
                    .path
                    .clone()
                    .filter(|p| p.starts_with('/'))
                    .unwrap_or_else(|| "/".into()),
                headers: get
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            },
            Err(what) => Action::Unsupported(what),
        }
    }

    pub fn tcp(&self, tcp: &TCPSocketAction) -> Action {
        match self.port(&tcp.port) {
            Ok(port) => Action::Tcp {
                host: self.host(tcp.host.as_deref()),
                port,
            },
            Err(what) => Action::Unsupported(what),
        }
    }

    pub fn exec(&self, command: Option<&[String]>) -> Action {
        match command {
            Some(command) if !command.is_empty() => {
                (self.exec)(command).map_or_else(Action::Unsupported, Action::Exec)
            }
            _ => Action::Unsupported("exec without a command".into()),
        }
    }

    pub fn probe(&self, probe: &Probe) -> ProbePlan {
        let action = if let Some(get) = &probe.http_get {
            self.http(get)
        } else if let Some(tcp) = &probe.tcp_socket {
            self.tcp(tcp)
        } else if let Some(exec) = &probe.exec {
            self.exec(exec.command.as_deref())
        } else {
            Action::Unsupported("gRPC probes".into())
        };
        let seconds = |value: Option<i32>, default: i32| {
            Duration::from_secs(u64::try_from(value.unwrap_or(default)).unwrap_or(0))
        };
        ProbePlan {
            action,
            initial_delay: seconds(probe.initial_delay_seconds, 0).min(MAX_PERIOD),
            period: seconds(probe.period_seconds, 10).clamp(Duration::from_millis(100), MAX_PERIOD),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: threshold(probe.success_threshold),
            failure_threshold: threshold(probe.failure_threshold.or(Some(3))),
        }
    }

    /// The pod's address stands in for an empty host and for the pod's own loopback.
    fn host(&self, host: Option<&str>) -> String {
        match host {
            Some(host)
                if !host.is_empty() && !matches!(host, "localhost" | "127.0.0.1" | "0.0.0.0") =>
            {
                host.to_owned()
            }
            _ => self.pod_ip.clone(),
        }
    }

    fn port(&self, port: &IntOrString) -> Result<u16, String> {
        let number = match port {
            IntOrString::Int(number) => Some(*number),
            IntOrString::String(name) => name.parse().ok().or_else(|| {
                self.ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .map(|p| p.container_port)
            }),
        };
        number
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| format!("port {port:?} of no container port"))
    }
}

fn threshold(value: Option<i32>) -> u32 {
    value
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(1)
}

/// A probe with its timing.
#[derive(Debug, Clone)]
pub struct ProbePlan {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// A container's probes.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    pub startup: Option<ProbePlan>,
    pub readiness: Option<ProbePlan>,
    pub liveness: Option<ProbePlan>,
}

/// What the prober tells the container supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The startup probe passed (or there is none): readiness and liveness probes begin.
    Started,
    Ready(bool),
    /// The startup or liveness probe failed `failureThreshold` times in a row: restart the container.
    Failed {
        probe: &'static str,
        message: String,
    },
}

/// Probes one container process until it fails a startup or liveness probe or `events` closes.
pub async fn run(probes: Probes, launcher: Launcher, events: mpsc::Sender<ProbeEvent>) {
    if let Some(startup) = &probes.startup {
        let mut failures = 0;
        tokio::time::sleep(startup.initial_delay).await;
        loop {
            let outcome = startup.action.run(&launcher, startup.timeout).await;
            if outcome.succeeded() {
                break;
            }
            failures += 1;
            if failures >= startup.failure_threshold {
                let message = outcome.output;
                let _ = events
                    .send(ProbeEvent::Failed {
                        probe: "startup",
                        message,
                    })
                    .await;
                return;
            }
            tokio::time::sleep(startup.period).await;
        }
    }
    if events.send(ProbeEvent::Started).await.is_err() {
        return;
    }
    let readiness = readiness(probes.readiness.as_ref(), &launcher, &events);
    let liveness = liveness(probes.liveness.as_ref(), &launcher, &events);
    tokio::select! {
        () = readiness => {}
        () = liveness => {}
    }
}

/// Reports readiness transitions; returns only when `events` closes.
async fn readiness(
    plan: Option<&ProbePlan>,
    launcher: &Launcher,
    events: &mpsc::Sender<ProbeEvent>,
) {
    let Some(plan) = plan else {
        if events.send(ProbeEvent::Ready(true)).await.is_ok() {
            events.closed().await;
        }
        return;
    };
    let (mut ready, mut successes, mut failures) = (false, 0, 0);
    tokio::time::sleep(plan.initial_delay).await;
    loop {
        let outcome = plan.action.run(launcher, plan.timeout).await;
        if outcome.succeeded() {
            (successes, failures) = (successes + 1, 0);
        } else {
            tracing::debug!(message = %outcome.output, "readiness probe failed");
            (successes, failures) = (0, failures + 1);
        }
        let now = if successes >= plan.success_threshold {
            true
        } else if failures >= plan.failure_threshold {
            false
        } else {
            ready
        };
        if now != ready {
            ready = now;
            if events.send(ProbeEvent::Ready(ready)).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(plan.period).await;
    }
}

/// Returns after reporting a liveness failure, or when `events` closes; never without a probe.
async fn liveness(
    plan: Option<&ProbePlan>,
    launcher: &Launcher,
    events: &mpsc::Sender<ProbeEvent>,
) {
    let Some(plan) = plan else {
        events.closed().await;
        return;
    };
    let mut failures = 0;
    tokio::time::sleep(plan.initial_delay).await;
    loop {
        let outcome = plan.action.run(launcher, plan.timeout).await;
        if outcome.succeeded() {
            failures = 0;
        } else {
            failures += 1;
            if failures >= plan.failure_threshold {
                let message = outcome.output;
                let _ = events
                    .send(ProbeEvent::Failed {
                        probe: "liveness",
                        message,
                    })
                    .await;
                return;
            }
        }
        tokio::time::sleep(plan.period).await;
    }
}

/// `GET path` over HTTP/1.1; the status code of the answer.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect((host, port)).await?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/tern-test-kubelet\r\nAccept: */*\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::with_capacity(256);
    let mut buffer = [0u8; 256];
    while !answer.contains(&b'\n') && answer.len() < 4096 {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    let status_line = String::from_utf8_lossy(&answer);
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/"))
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::net::TcpListener;

    use super::*;

    type NoExec = fn(&[String]) -> Result<ProcessSpec, String>;

    fn builder() -> ActionBuilder<'static, NoExec> {
        static PORTS: std::sync::OnceLock<Vec<ContainerPort>> = std::sync::OnceLock::new();
        let ports = PORTS.get_or_init(|| {
            vec![ContainerPort {
                name: Some("http".into()),
                container_port: 9090,
                ..ContainerPort::default()
            }]
        });
        ActionBuilder {
            ports,
            pod_ip: "127.0.0.1".into(),
            exec: |_| Err("no exec in this test".into()),
        }
    }

    /// Serves `status` to every request on a free port.
    async fn server(status: u16) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let _ = socket.read(&mut buffer).await;
                let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        port
    }

    #[test]
    fn named_ports_and_hosts_resolve() {
        let get = HTTPGetAction {
            port: IntOrString::String("http".into()),
            path: Some("/readyz".into()),
            ..HTTPGetAction::default()
        };
        match builder().http(&get) {
            Action::Http {
                host, port, path, ..
            } => assert_eq!(
                (host.as_str(), port, path.as_str()),
                ("127.0.0.1", 9090, "/readyz")
            ),
            other => panic!("{other:?}"),
        }
        let unknown = HTTPGetAction {
            port: IntOrString::String("metrics".into()),
            ..HTTPGetAction::default()
        };
        assert!(matches!(builder().http(&unknown), Action::Unsupported(_)));
    }

    #[test]
    fn periods_are_capped() {
        let probe = Probe {
            period_seconds: Some(30),
            initial_delay_seconds: Some(60),
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(1883),
                host: None,
            }),
            ..Probe::default()
        };
        let plan = builder().probe(&probe);
        assert_eq!((plan.period, plan.initial_delay), (MAX_PERIOD, MAX_PERIOD));
        assert_eq!((plan.success_threshold, plan.failure_threshold), (1, 3));
    }

    #[tokio::test]
    async fn http_checks_pass_on_2xx_and_3xx_only() {
        let launcher = Launcher::detect();
        let action = |port| Action::Http {
            host: "127.0.0.1".into(),
            port,
            path: "/readyz".into(),
            headers: vec![],
        };
        let timeout = Duration::from_secs(2);
        assert!(
            action(server(200).await)
                .run(&launcher, timeout)
                .await
                .succeeded()
        );
        assert!(
            action(server(302).await)
                .run(&launcher, timeout)
                .await
                .succeeded()
        );
        let failed = action(server(503).await).run(&launcher, timeout).await;
        assert_eq!(failed.exit, Some(1));
        assert_eq!(failed.output, "HTTP status 503");
    }

    #[tokio::test]
    async fn readiness_follows_the_thresholds_and_liveness_fails_the_container() {
        let launcher = Launcher::detect();
        let healthy = server(200).await;
        let plan = |port, failure_threshold| ProbePlan {
            action: Action::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold,
        };
        // a port nobody listens on: bind and drop
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let probes = Probes {
            startup: None,
            readiness: Some(plan(healthy, 1)),
            liveness: Some(plan(closed, 3)),
        };
        let (tx, mut rx) = mpsc::channel(8);
        let started = Instant::now();
        let task = tokio::spawn(run(probes, launcher, tx));
        assert_eq!(rx.recv().await, Some(ProbeEvent::Started));
        assert_eq!(rx.recv().await, Some(ProbeEvent::Ready(true)));
        assert!(matches!(
            rx.recv().await,
            Some(ProbeEvent::Failed {
                probe: "liveness",
                ..
            })
        ));
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "three failures, two periods apart"
        );
        task.await.expect("prober ends after a liveness failure");
    }
}
