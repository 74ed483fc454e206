//! The admin API under `/api/v1/`, behind a bearer token read from a file (documented in
//! `docs/admin-api.md`). The operator drives brokers through it: push new users and ACL content (or
//! reload after it rewrote the files), drain before a pod goes away. Without a token file the API is
//! off (404).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use bytestring::ByteString;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{HttpError, HttpState};
use crate::auth::{AuthPart, AuthPush, PushError};
use crate::broker::Revalidation;
use crate::cluster::Kicked;
use crate::codec::QoS;
use crate::identity::ClientId;
use crate::message::Message;
use crate::reload::{Reload, ReloadError};
use crate::session::{Session, SubscriptionRecord};
use crate::topic::{self, TopicFilter};

/// Largest page a listing returns.
const MAX_PAGE: usize = 1000;
/// Largest `PUT /auth` body: room for users and ACL files of tens of thousands of users (axum's
/// default of 2 MiB is not).
const MAX_AUTH_BODY: usize = 16 * 1024 * 1024;

/// The bearer token, re-read on reload so it can be rotated without a restart.
#[derive(Debug)]
pub struct AdminToken {
    path: PathBuf,
    value: RwLock<Vec<u8>>,
}

impl AdminToken {
    pub fn load(path: &Path) -> Result<Self, HttpError> {
        Ok(Self {
            value: RwLock::new(read_token(path)?),
            path: path.to_path_buf(),
        })
    }

    /// Constant-time comparison, so response timing does not reveal the token.
    fn accepts(&self, presented: &[u8]) -> bool {
        let value = self.value.read();
        !value.is_empty() && bool::from(value.as_slice().ct_eq(presented))
    }
}

impl Reload for AdminToken {
    fn name(&self) -> &'static str {
        "admin_token"
    }

    fn reload(&self) -> Result<bool, ReloadError> {
        let fresh = read_token(&self.path).map_err(ReloadError::new)?;
        let mut value = self.value.write();
        let changed = *value != fresh;
        *value = fresh;
        Ok(changed)
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }
}

fn read_token(path: &Path) -> Result<Vec<u8>, HttpError> {
    let text = std::fs::read_to_string(path).map_err(|error| HttpError::Token {
        path: path.display().to_string(),
        error,
    })?;
    Ok(text.trim().as_bytes().to_vec())
}

pub(super) fn routes(state: Arc<HttpState>) -> axum::Router<Arc<HttpState>> {
    axum::Router::new()
        .route("/broker", get(broker_info))
        .route("/cluster", get(cluster_view))
        .route("/clients", get(list_clients))
        .route("/clients/{client_id}", get(show_client).delete(end_session))
        .route("/clients/{client_id}/kick", post(kick_client))
        .route("/subscriptions", get(list_subscriptions))
        .route("/retained", get(list_retained).delete(delete_retained))
        .route("/publish", post(publish))
        .route("/reload", post(reload))
        .route(
            "/auth",
            put(push_auth).layer(DefaultBodyLimit::max(MAX_AUTH_BODY)),
        )
        .route("/drain", get(drain_progress).post(start_drain))
        .layer(middleware::from_fn_with_state(state, require_token))
}

/// Every admin route needs `Authorization: Bearer <token>`.
async fn require_token(
    State(state): State<Arc<HttpState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return error(
            StatusCode::NOT_FOUND,
            "the admin API is off: no admin_token_file configured",
        );
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials);
    match presented {
        Some(presented) if token.accepts(presented.as_bytes()) => next.run(request).await,
        _ => {
            let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is matched without regard to
/// case (RFC 9110 §11.1: `bearer` and `BEARER` are `Bearer`), and spaces around the token are not
/// part of it.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then_some(token.trim())
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

impl Page {
    fn apply<T>(&self, items: impl Iterator<Item = T>) -> Vec<T> {
        items
            .skip(self.offset)
            .take(self.limit.min(MAX_PAGE))
            .collect()
    }
}

async fn broker_info(State(state): State<Arc<HttpState>>) -> Json<Value> {
    let broker = &state.broker;
    let (sessions, inflight, queued) = broker.session_totals();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": broker.uptime().as_secs(),
        "listeners": state.listeners,
        "connections": broker.stats().connections.get(),
        "sessions": sessions,
        "subscriptions": broker.subscription_count(),
        "retained": broker.retained().count(),
        "inflight": inflight,
        "queued": queued,
        "draining": broker.is_draining(),
    }))
}

/// One session as listings show it.
#[derive(Debug, Serialize)]
struct ClientSummary {
    client_id: String,
    connected: bool,
    username: Option<String>,
    remote_addr: Option<String>,
    listener: Option<String>,
    protocol_level: Option<u8>,
    connected_since: Option<u64>,
    session_expiry_interval: u32,
    subscriptions: usize,
    inflight: usize,
    queued: usize,
}

fn summarize(session: &Session) -> ClientSummary {
    let state = session.lock();
    let client = state.client.as_ref();
    ClientSummary {
        client_id: session.client_id.to_string(),
        connected: state.connection.is_some(),
        username: client.and_then(|c| c.username.as_ref().map(|u| u.to_string())),
        remote_addr: client.map(|c| c.remote_addr.to_string()),
        listener: client.map(|c| c.listener.to_string()),
        protocol_level: client.map(|c| c.protocol.level()),
        connected_since: client
            .and_then(|c| c.connected_at)
            .map(|seconds| u64::from(seconds.get())),
        session_expiry_interval: state.expiry_interval,
        subscriptions: state.subscriptions.len(),
        inflight: state.inflight.len(),
        queued: state.queue.len(),
    }
}

/// Sessions sorted by client id, so pages are stable.
fn sorted_sessions(state: &HttpState) -> Vec<Arc<Session>> {
    let mut sessions = state.broker.sessions();
    sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    sessions
}

async fn list_clients(
    State(state): State<Arc<HttpState>>,
    Query(page): Query<Page>,
) -> Json<Value> {
    let sessions = sorted_sessions(&state);
    let items: Vec<ClientSummary> = page.apply(sessions.iter().map(|s| summarize(s)));
    Json(json!({ "total": sessions.len(), "offset": page.offset, "items": items }))
}

fn find_session(state: &HttpState, client_id: &str) -> Option<Arc<Session>> {
    state.broker.session(&ClientId::new(client_id))
}

async fn show_client(
    State(state): State<Arc<HttpState>>,
    UrlPath(client_id): UrlPath<String>,
) -> Response {
    let Some(session) = find_session(&state, &client_id) else {
        // In a cluster the client may be on another node: say which.
        return match state
            .broker
            .locate_elsewhere(&ClientId::new(&client_id))
            .await
        {
            Some(node) => Json(json!({ "client_id": client_id, "node": node })).into_response(),
            None => error(StatusCode::NOT_FOUND, "no such client"),
        };
    };
    let subscriptions: Vec<Value> = session
        .lock()
        .subscriptions
        .iter()
        .map(|(filter, record)| subscription_json(&session.client_id, &filter.to_string(), record))
        .collect();
    Json(json!({ "client": summarize(&session), "subscriptions": subscriptions })).into_response()
}

/// Disconnects the client (MQTT 5: DISCONNECT 0x98 *Administrative action*), on whichever node of a
/// cluster it is connected to; the session stays.
async fn kick_client(
    State(state): State<Arc<HttpState>>,
    UrlPath(client_id): UrlPath<String>,
) -> Response {
    let (kicked, node) = state
        .broker
        .kick_anywhere(&ClientId::new(&client_id), false)
        .await;
    match kicked {
        Kicked::NoSuchClient => error(StatusCode::NOT_FOUND, "no such client"),
        Kicked::NotConnected => error(StatusCode::CONFLICT, "the client is not connected"),
        Kicked::Done => (
            StatusCode::ACCEPTED,
            Json(json!({ "kicked": client_id, "node": node })),
        )
            .into_response(),
    }
}

/// Ends the session outright (disconnecting the client if it is connected), on whichever node of a
/// cluster holds it.
async fn end_session(
    State(state): State<Arc<HttpState>>,
    UrlPath(client_id): UrlPath<String>,
) -> Response {
    match state
        .broker
        .kick_anywhere(&ClientId::new(&client_id), true)
        .await
    {
        (Kicked::NoSuchClient, _) => error(StatusCode::NOT_FOUND, "no such client"),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

fn subscription_json(client_id: &ClientId, filter: &str, record: &SubscriptionRecord) -> Value {
    json!({
        "client_id": client_id.as_str(),
        "filter": filter,
        "qos": record.options.qos as u8,
        "no_local": record.options.no_local,
        "retain_as_published": record.options.retain_as_published,
        "retain_handling": record.options.retain_handling as u8,
        "identifier": record.identifier,
    })
}

// The paging fields are repeated rather than flattened: `serde(flatten)` makes the query-string
// deserializer see every value as a string, so numbers would be refused.
#[derive(Debug, Deserialize)]
struct SubscriptionQuery {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
    client_id: Option<String>,
}

async fn list_subscriptions(
    State(state): State<Arc<HttpState>>,
    Query(query): Query<SubscriptionQuery>,
) -> Json<Value> {
    let mut all = Vec::new();
    for session in sorted_sessions(&state) {
        if query
            .client_id
            .as_deref()
            .is_some_and(|id| id != session.client_id.as_str())
        {
            continue;
        }
        let mut subscriptions: Vec<Value> = session
            .lock()
            .subscriptions
            .iter()
            .map(|(filter, record)| {
                subscription_json(&session.client_id, &filter.to_string(), record)
            })
            .collect();
        subscriptions.sort_by(|a, b| a["filter"].as_str().cmp(&b["filter"].as_str()));
        all.extend(subscriptions);
    }
    let page = Page {
        offset: query.offset,
        limit: query.limit,
    };
    let items = page.apply(all.iter().cloned());
    Json(json!({ "total": all.len(), "offset": page.offset, "items": items }))
}

#[derive(Debug, Deserialize)]
struct RetainedQuery {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
    filter: Option<String>,
}

async fn list_retained(
    State(state): State<Arc<HttpState>>,
    Query(query): Query<RetainedQuery>,
) -> Response {
    let filter_text = query.filter.unwrap_or_else(|| "#".into());
    let filter = match TopicFilter::parse(ByteString::from(filter_text)) {
        Ok(filter) => filter,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("filter: {e}")),
    };
    let mut messages = state.broker.retained().matching(&filter, Instant::now());
    messages.sort_by(|a, b| a.topic.cmp(&b.topic));
    let page = Page {
        offset: query.offset,
        limit: query.limit,
    };
    let items: Vec<Value> = page
        .apply(messages.iter())
        .into_iter()
        .map(|m| {
            json!({
                "topic": &*m.topic,
                "qos": m.qos as u8,
                "payload_base64": base64::engine::general_purpose::STANDARD.encode(&m.payload),
                "size": m.payload.len(),
            })
        })
        .collect();
    Json(json!({ "total": messages.len(), "offset": page.offset, "items": items })).into_response()
}

#[derive(Debug, Deserialize)]
struct TopicQuery {
    topic: String,
}

async fn delete_retained(
    State(state): State<Arc<HttpState>>,
    Query(query): Query<TopicQuery>,
) -> Response {
    if let Err(e) = topic::validate_topic_name(&query.topic) {
        return error(StatusCode::BAD_REQUEST, &format!("topic: {e}"));
    }
    if state.broker.delete_retained(&query.topic) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, "no retained message on that topic")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    topic: String,
    /// UTF-8 payload; or use `payload_base64` for binary.
    payload: Option<String>,
    payload_base64: Option<String>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
}

async fn publish(
    State(state): State<Arc<HttpState>>,
    body: Result<Json<PublishRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    if let Err(e) = topic::validate_topic_name(&request.topic) {
        return error(StatusCode::BAD_REQUEST, &format!("topic: {e}"));
    }
    // The token holder has every right but one: `$SYS` carries what the broker itself says, and
    // a statistic or notice written through here would be read as the broker's.
    if topic::is_sys(&request.topic) {
        return error(
            StatusCode::FORBIDDEN,
            "topic: only the broker publishes under $SYS",
        );
    }
    let Some(qos) = QoS::from_bits(request.qos) else {
        return error(StatusCode::BAD_REQUEST, "qos: must be 0, 1 or 2");
    };
    let payload = match (request.payload, request.payload_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => match base64::engine::general_purpose::STANDARD.decode(encoded) {
            Ok(bytes) => bytes,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("payload_base64: {e}")),
        },
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "give payload or payload_base64, not both",
            );
        }
    };
    let delivered = state
        .broker
        .publish(
            Message::new(request.topic, payload, qos, request.retain),
            None,
        )
        .routed
        .sessions;
    Json(json!({ "delivered_to": delivered })).into_response()
}

/// The cluster as this node sees it: members with their state, routes and queues.
async fn cluster_view(State(state): State<Arc<HttpState>>) -> Response {
    match state.broker.cluster() {
        Some(cluster) => Json(cluster.view()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "this broker is not part of a cluster",
        ),
    }
}

async fn reload(State(state): State<Arc<HttpState>>) -> Response {
    let outcomes = state.broker.reload_all();
    let status = if outcomes.iter().any(|o| o.error.is_some()) {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, Json(json!({ "reloaded": outcomes }))).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthRequest {
    /// The users file's new text.
    users: Option<String>,
    /// The ACL file's new text.
    acl: Option<String>,
}

/// Replaces the users and/or ACL content without waiting for the files to change, then re-checks
/// connected clients as a reload does. The files' text at the moment of the push is remembered, so a
/// later reload keeps the pushed content until the files change (see `FileAuth::push`).
async fn push_auth(
    State(state): State<Arc<HttpState>>,
    body: Result<Json<AuthRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    let push = AuthPush {
        users: request.users,
        acl: request.acl,
    };
    if push.users.is_none() && push.acl.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "nothing to push: give users, acl or both",
        );
    }
    let result = match &state.auth {
        Some(auth) => auth.push(&push),
        // Neither file is configured, so whatever was given has nothing to replace.
        None if push.users.is_some() => Err(PushError::NotConfigured(AuthPart::Users)),
        None => Err(PushError::NotConfigured(AuthPart::Acl)),
    };
    let applied = match result {
        Ok(applied) => applied,
        Err(refused) => return push_refused(&refused),
    };
    let revalidation = if applied.changed {
        state.broker.revalidate_clients()
    } else {
        Revalidation::default()
    };
    Json(json!({
        "changed": applied.changed,
        "users": applied.users,
        "acl_rules": applied.acl_rules,
        "revoked_users": applied.revoked_users,
        "disconnected": revalidation.disconnected,
        "subscriptions_removed": revalidation.subscriptions_removed,
        "subscriptions_downgraded": revalidation.subscriptions_downgraded,
    }))
    .into_response()
}

/// `409` for a file the configuration does not name, `422` for text that does not parse; the body
/// names the part and the line.
fn push_refused(refused: &PushError) -> Response {
    tracing::warn!(error = %refused, "pushed users/ACL content refused; previous state kept");
    let status = match refused {
        PushError::NotConfigured(_) => StatusCode::CONFLICT,
        PushError::Users(_) | PushError::Acl(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let body = json!({
        "error": refused.to_string(),
        "part": refused.part().name(),
        "line": refused.line(),
    });
    (status, Json(body)).into_response()
}

async fn start_drain(State(state): State<Arc<HttpState>>) -> Response {
    state.broker.start_drain();
    (StatusCode::ACCEPTED, Json(state.broker.drain_progress())).into_response()
}

async fn drain_progress(State(state): State<Arc<HttpState>>) -> Json<crate::broker::DrainProgress> {
    Json(state.broker.drain_progress())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_without_regard_to_case() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER  t0k ", "bEaReR t0k"] {
            assert_eq!(bearer_credentials(value), Some("t0k"), "{value:?}");
        }
        for value in ["Basic t0k", "Bearert0k", "t0k", "", "Bearer"] {
            assert_eq!(bearer_credentials(value), None, "{value:?}");
        }
    }
}
