//! `tern-broker drain`: drains the broker that a configuration file describes, through its admin API,
//! and waits until no client is connected; made for a Kubernetes preStop hook. The broker is reached
//! at `http.bind` (an unspecified address such as `0.0.0.0` means this host's loopback) with the token
//! in `http.admin_token_file`.
//!
//! Exit status: 0 once drained, and also when the timeout passes first (with a warning: a preStop hook
//! must not hold up or fail the pod's termination); 1 when the broker cannot be reached or refuses;
//! 2 when the configuration does not say how to reach it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use tern_broker::Config;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// How often the drain's progress is read.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Longest one request may take; the broker answers from memory, so this only guards against a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the drain could not be asked for.
#[derive(Debug, thiserror::Error)]
enum DrainError {
    /// The configuration does not say how to reach the admin API.
    #[error("{0}")]
    Config(String),
    /// No answer from the broker, or not one this command understands.
    #[error("cannot reach the broker's admin API at {url}: {source:#}")]
    Unreachable { url: String, source: anyhow::Error },
    /// The broker answered with an error status (a wrong token, the admin API off, …).
    #[error("the broker at {url} refused the drain: {status}: {body}")]
    Refused {
        url: String,
        status: StatusCode,
        body: String,
    },
}

impl DrainError {
    fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) => 2,
            Self::Unreachable { .. } | Self::Refused { .. } => 1,
        }
    }
}

/// The drain's progress as `GET /api/v1/drain` reports it.
#[derive(Debug, Deserialize)]
struct Progress {
    /// `running`, `draining` or `drained`.
    state: String,
    connections: i64,
    sessions: usize,
    queued: usize,
}

/// Where the admin API is and how to authenticate to it.
#[derive(Debug, PartialEq)]
struct Target {
    url: String,
    authorization: HeaderValue,
}

impl Target {
    fn from_config(config: &Config) -> Result<Self, DrainError> {
        let http = config.http.as_ref().ok_or_else(|| {
            DrainError::Config(
                "the configuration has no `http` section: drain reaches the broker through its \
                 admin API at http.bind"
                    .into(),
            )
        })?;
        let token_file = http.admin_token_file.as_ref().ok_or_else(|| {
            DrainError::Config(
                "the configuration sets no `http.admin_token_file`: without a token the broker's \
                 admin API, which drain uses, is off"
                    .into(),
            )
        })?;
        let token = std::fs::read_to_string(token_file).map_err(|e| {
            DrainError::Config(format!(
                "cannot read http.admin_token_file {}: {e}",
                token_file.display()
            ))
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(DrainError::Config(format!(
                "http.admin_token_file {} is empty",
                token_file.display()
            )));
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                DrainError::Config(format!(
                    "http.admin_token_file {} holds characters an HTTP header cannot carry",
                    token_file.display()
                ))
            })?;
        authorization.set_sensitive(true);
        let addr = reachable(http.bind);
        if addr.port() == 0 {
            return Err(DrainError::Config(
                "http.bind has port 0, so the broker's admin port cannot be known".into(),
            ));
        }
        Ok(Self {
            url: format!("http://{addr}/api/v1/drain"),
            authorization,
        })
    }
}

/// The address to connect to for a socket bound to `bind`: an unspecified address (`0.0.0.0`, `[::]`)
/// listens on every interface, so this host's loopback of the same family reaches it.
fn reachable(bind: SocketAddr) -> SocketAddr {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bind.port())
}

/// Runs the command; returns the process's exit status.
pub fn run(config_path: &Path, timeout: Duration) -> i32 {
    let config = Config::from_file(config_path);
    // Log as the broker does (level and format from its configuration), so a preStop hook's output
    // reads like the broker's own.
    let defaults = Config::default();
    crate::logging::init(config.as_ref().unwrap_or(&defaults));
    let result = config
        .map_err(|e| DrainError::Config(format!("invalid configuration: {e}")))
        .and_then(|config| Target::from_config(&config))
        .and_then(|target| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| DrainError::Unreachable {
                    url: target.url.clone(),
                    source: anyhow::Error::new(e).context("cannot start the async runtime"),
                })?;
            runtime.block_on(drain(&target, timeout))
        });
    match result {
        Ok(()) => 0,
        Err(e) => {
            error!("{e}");
            e.exit_code()
        }
    }
}

/// Starts the drain, then reads its progress until no client is connected or `timeout` has passed.
async fn drain(target: &Target, timeout: Duration) -> Result<(), DrainError> {
    let deadline = Instant::now() + timeout;
    let unreachable = |source: anyhow::Error| DrainError::Unreachable {
        url: target.url.clone(),
        source,
    };
    // The admin API is on this host: a proxy from the environment must not be used for it.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| unreachable(e.into()))?;
    let mut progress = call(target, client.post(&target.url)).await?;
    info!(
        url = %target.url,
        connections = progress.connections,
        sessions = progress.sessions,
        "drain started"
    );
    let mut failing = false;
    loop {
        if progress.state == "drained" {
            info!(
                sessions = progress.sessions,
                queued = progress.queued,
                "drained: no client is connected"
            );
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            warn!(
                connections = progress.connections,
                timeout_secs = timeout.as_secs(),
                "clients still connected when the timeout passed; the broker disconnects them as it stops"
            );
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        match call(target, client.get(&target.url)).await {
            Ok(next) => {
                debug!(state = %next.state, connections = next.connections, "drain progress");
                progress = next;
                failing = false;
            }
            // Keep trying until the deadline: the drain itself has started and goes on regardless.
            Err(e) if !failing => {
                warn!(error = %e, "cannot read the drain's progress; trying again");
                failing = true;
            }
            Err(e) => debug!(error = %e, "still cannot read the drain's progress"),
        }
    }
}

/// Sends one admin API request and reads the drain's progress from the answer.
async fn call(target: &Target, request: reqwest::RequestBuilder) -> Result<Progress, DrainError> {
    let unreachable = |source: anyhow::Error| DrainError::Unreachable {
        url: target.url.clone(),
        source,
    };
    let response = request
        .header(AUTHORIZATION, target.authorization.clone())
        .send()
        .await
        .map_err(|e| unreachable(e.into()))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(DrainError::Refused {
            url: target.url.clone(),
            status,
            body: body.trim().to_string(),
        });
    }
    response
        .json()
        .await
        .map_err(|e| unreachable(anyhow::Error::new(e).context("unexpected answer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, "test.yaml").unwrap()
    }

    #[test]
    fn an_unspecified_bind_address_is_reached_on_loopback_of_its_family() {
        let reach = |bind: &str| reachable(bind.parse().unwrap()).to_string();
        assert_eq!(reach("0.0.0.0:9090"), "127.0.0.1:9090");
        assert_eq!(reach("[::]:9090"), "[::1]:9090");
        assert_eq!(reach("10.1.2.3:9090"), "10.1.2.3:9090");
        assert_eq!(reach("[fd00::1]:9090"), "[fd00::1]:9090");
    }

    #[test]
    fn the_target_comes_from_http_bind_and_the_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "  s3cret\n").unwrap();
        let target = Target::from_config(&config(&format!(
            "http: {{bind: '0.0.0.0:9191', admin_token_file: '{}'}}",
            token.display()
        )))
        .unwrap();
        assert_eq!(target.url, "http://127.0.0.1:9191/api/v1/drain");
        assert_eq!(target.authorization, "Bearer s3cret");
        assert!(target.authorization.is_sensitive());
    }

    #[test]
    fn a_configuration_without_a_way_in_is_a_configuration_error() {
        let refused = |yaml: &str| match Target::from_config(&config(yaml)) {
            Err(e @ DrainError::Config(_)) => {
                assert_eq!(e.exit_code(), 2);
                e.to_string()
            }
            other => panic!("expected a configuration error, got {other:?}"),
        };
        assert!(refused("log: {level: info}").contains("`http`"));
        assert!(refused("http: {bind: '127.0.0.1:9090'}").contains("http.admin_token_file"));
        assert!(
            refused("http: {bind: '127.0.0.1:9090', admin_token_file: /nonexistent/token}")
                .contains("/nonexistent/token")
        );
    }
}
