//! `/metrics`: the counters kept on the hot path, plus gauges sampled from the broker's state at scrape
//! time (sessions, subscriptions, routes, retained messages, inflight and queued messages and bytes).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::HttpState;

pub(super) async fn render(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    let broker = &state.broker;
    let stats = broker.stats();
    let (sessions, inflight, queued) = broker.session_totals();
    stats.sessions.set(gauge(sessions));
    stats.inflight.set(gauge(inflight));
    stats.queued.set(gauge(queued));
    stats.subscriptions.set(gauge(broker.subscription_count()));
    stats.routes.set(gauge(broker.route_count()));
    if let Some(cluster) = broker.cluster() {
        cluster.sample_metrics();
    }
    stats.retained.set(gauge(broker.retained().count()));
    stats.retained_bytes.set(gauge(broker.retained().bytes()));
    stats.queued_bytes.set(gauge(broker.queued_bytes()));
    stats
        .partial_packet_bytes
        .set(gauge(broker.partial_packet_bytes()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        stats.render(),
    )
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
