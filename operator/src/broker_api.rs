//! The client side of the broker's admin API (`docs/admin-api.md`): pushing users and ACL, draining
//! a pod before it leaves, reading what a broker reports about itself and about its cluster. Plain HTTP to the pod's IP on the broker's
//! HTTP port, with the cluster's admin token.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::render::names::HTTP_PORT;

#[derive(Debug, Error)]
pub enum BrokerApiError {
    #[error("broker at {address} unreachable: {source}")]
    Unreachable {
        address: String,
        source: reqwest::Error,
    },
    #[error("broker at {address} answered {status}: {body}")]
    Refused {
        address: String,
        status: u16,
        body: String,
    },
    #[error("broker at {address} sent an unreadable answer: {source}")]
    Unreadable {
        address: String,
        source: reqwest::Error,
    },
}

impl BrokerApiError {
    /// A bounded label for metrics and condition reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "BrokerUnreachable",
            Self::Refused { .. } => "BrokerRefused",
            Self::Unreadable { .. } => "BrokerUnreadable",
        }
    }
}

/// What `GET /api/v1/broker` reports.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BrokerInfo {
    pub version: String,
    pub connections: i64,
    #[serde(default)]
    pub draining: bool,
}

/// What `GET /api/v1/cluster` reports: the cluster as one broker sees it. Only what the operator
/// reads; the rest of the answer (routes, queues, addresses) is left out.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ClusterView {
    /// `cluster.name`.
    pub name: String,
    /// This broker's node id: its pod's name.
    pub node_id: String,
    /// Joined, and holding every live peer's routes and retained messages (`/readyz`).
    pub ready: bool,
    /// Itself (state `self`) and every peer it knows.
    pub members: Vec<ClusterViewMember>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ClusterViewMember {
    pub node_id: String,
    /// `self`, `joined` (link up, routes held), `joining` (link up, routes on their way) or
    /// `unreachable` (alive by gossip, no link).
    pub state: String,
    /// As the member gossips it.
    pub ready: bool,
}

/// What `GET /api/v1/drain` reports.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct DrainProgress {
    /// `running`, `draining` or `drained`.
    pub state: String,
    pub connections: i64,
}

impl DrainProgress {
    /// No client is left on the broker.
    pub fn is_drained(&self) -> bool {
        self.state == "drained" || (self.state == "draining" && self.connections == 0)
    }
}

#[derive(Debug, Serialize)]
struct AuthPush<'a> {
    users: &'a str,
    acl: &'a str,
}

/// An admin-API client shared by all reconciles (one connection pool).
#[derive(Debug, Clone)]
pub struct BrokerApi {
    http: reqwest::Client,
}

impl Default for BrokerApi {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerApi {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self { http }
    }

    fn url(pod_ip: IpAddr, path: &str) -> String {
        match pod_ip {
            IpAddr::V4(ip) => format!("http://{ip}:{HTTP_PORT}/api/v1{path}"),
            IpAddr::V6(ip) => format!("http://[{ip}]:{HTTP_PORT}/api/v1{path}"),
        }
    }

    /// Replaces the broker's users and ACL at once; clients whose rights changed are dealt with by
    /// the broker.
    pub async fn push_auth(
        &self,
        pod_ip: IpAddr,
        token: &str,
        users: &str,
        acl: &str,
    ) -> Result<(), BrokerApiError> {
        let request = self
            .http
            .put(Self::url(pod_ip, "/auth"))
            .bearer_auth(token)
            .json(&AuthPush { users, acl });
        self.send(pod_ip, request).await.map(drop)
    }

    /// Starts draining (idempotent) and returns the progress.
    pub async fn start_drain(
        &self,
        pod_ip: IpAddr,
        token: &str,
    ) -> Result<DrainProgress, BrokerApiError> {
        let request = self
            .http
            .post(Self::url(pod_ip, "/drain"))
            .bearer_auth(token);
        self.send(pod_ip, request).await?;
        self.drain_progress(pod_ip, token).await
    }

    pub async fn drain_progress(
        &self,
        pod_ip: IpAddr,
        token: &str,
    ) -> Result<DrainProgress, BrokerApiError> {
        let request = self
            .http
            .get(Self::url(pod_ip, "/drain"))
            .bearer_auth(token);
        self.json(pod_ip, request).await
    }

    pub async fn info(&self, pod_ip: IpAddr, token: &str) -> Result<BrokerInfo, BrokerApiError> {
        let request = self
            .http
            .get(Self::url(pod_ip, "/broker"))
            .bearer_auth(token);
        self.json(pod_ip, request).await
    }

    /// The cluster as the broker sees it; `None` from a broker that is not part of a cluster.
    pub async fn cluster(
        &self,
        pod_ip: IpAddr,
        token: &str,
    ) -> Result<Option<ClusterView>, BrokerApiError> {
        let request = self
            .http
            .get(Self::url(pod_ip, "/cluster"))
            .bearer_auth(token);
        match self.json(pod_ip, request).await {
            Ok(view) => Ok(Some(view)),
            Err(BrokerApiError::Refused { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn send(
        &self,
        pod_ip: IpAddr,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BrokerApiError> {
        let address = pod_ip.to_string();
        let response = request
            .send()
            .await
            .map_err(|source| BrokerApiError::Unreachable {
                address: address.clone(),
                source,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(512)
            .collect();
        Err(BrokerApiError::Refused {
            address,
            status: status.as_u16(),
            body,
        })
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        pod_ip: IpAddr,
        request: reqwest::RequestBuilder,
    ) -> Result<T, BrokerApiError> {
        self.send(pod_ip, request)
            .await?
            .json()
            .await
            .map_err(|source| BrokerApiError::Unreadable {
                address: pod_ip.to_string(),
                source,
            })
    }
}
