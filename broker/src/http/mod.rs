//! The HTTP endpoint on one port: `/metrics` (Prometheus text), `/healthz` (the process is alive),
//! `/readyz` (listeners up and not draining) and the admin API under `/api/v1/` (see `admin`).
//! It runs beside the MQTT listeners and stops with the broker's shutdown token; `serve` bounds its
//! connections (a cap, a header read timeout, an idle timeout) so that it cannot starve them.

mod admin;
mod metrics;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::info;

pub use admin::AdminToken;

use crate::auth::FileAuth;
use crate::broker::Broker;
use crate::config::HttpConfig;
use crate::storage::Storage;

/// Why the HTTP endpoint could not start. The cause is part of the message rather than a `source`,
/// so that a report that prints the chain names it once.
#[derive(Debug, Error)]
pub enum HttpError {
    #[error("cannot bind the HTTP endpoint to {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot read the admin token file {path}: {error}")]
    Token { path: String, error: std::io::Error },
}

/// A listener as the admin API reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListenerInfo {
    pub name: String,
    pub protocol: String,
    pub address: SocketAddr,
}

/// Shared by every handler.
#[derive(Debug)]
pub(crate) struct HttpState {
    broker: Arc<Broker>,
    listeners: Vec<ListenerInfo>,
    token: Option<Arc<AdminToken>>,
    /// The users and ACL files' live content, which `PUT /api/v1/auth` replaces; `None` when the
    /// configuration names neither file.
    auth: Option<Arc<FileAuth>>,
}

/// A bound HTTP endpoint.
pub struct HttpServer {
    socket: TcpListener,
    bounds: serve::Bounds,
    state: Arc<HttpState>,
}

impl HttpServer {
    /// Binds the port. `token` is the admin token, loaded from `admin_token_file` beforehand
    /// (without one the admin API is off); `auth` is what the admin API pushes users and ACL
    /// content into.
    pub async fn bind(
        config: &HttpConfig,
        broker: Arc<Broker>,
        listeners: Vec<ListenerInfo>,
        auth: Option<Arc<FileAuth>>,
        token: Option<Arc<AdminToken>>,
    ) -> Result<Self, HttpError> {
        let socket = TcpListener::bind(config.bind)
            .await
            .map_err(|error| HttpError::Bind {
                addr: config.bind,
                error,
            })?;
        Ok(Self {
            socket,
            bounds: serve::Bounds::new(config),
            state: Arc::new(HttpState {
                broker,
                listeners,
                token,
                auth,
            }),
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// Serves until the broker shuts down, within the configured bounds (see `serve`).
    pub async fn run(self) {
        info!(addr = ?self.local_addr(), admin_api = self.state.token.is_some(), "HTTP endpoint listening");
        let app = Router::new()
            .route("/metrics", get(metrics::render))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .nest("/api/v1", admin::routes(self.state.clone()))
            .with_state(Arc::clone(&self.state));
        serve::serve(
            self.socket,
            app,
            self.bounds,
            Arc::clone(&self.state.broker),
        )
        .await;
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready while the listeners accept and, in a cluster, once the node has joined and holds every
/// live peer's routes; not ready once a drain or shutdown has begun.
async fn readyz(State(state): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    let broker = &state.broker;
    if broker.is_draining() || broker.accepting_token().is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if broker.cluster().is_some_and(|cluster| !cluster.is_ready()) {
        (StatusCode::SERVICE_UNAVAILABLE, "joining the cluster\n")
    } else if broker.storage().is_some_and(Storage::is_failing) {
        // Acknowledgements that wait for the disk are held: new clients are better elsewhere.
        (StatusCode::SERVICE_UNAVAILABLE, "storage failing\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
