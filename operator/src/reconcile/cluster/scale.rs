//! Scale-down without dropping clients on the floor: before the StatefulSet shrinks, each leaving
//! pod (the highest ordinals) is drained through the admin API — it stops accepting, tells v5
//! clients to use another server and lets them go — and only then is the replica count lowered.
//! A pod that cannot be reached (not running, no IP) has no clients to drain. A drain that does
//! not finish within `drainTimeoutSeconds` is given up on, counted and reported.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::auth::pod_ip;
use super::fetch::Existing;
use crate::crd::MqttCluster;
use crate::reconcile::context::Context;
use crate::validate::ValidatedCluster;

/// The replica count to apply now, and the leaving pods still draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    pub replicas: i32,
    pub draining: Vec<String>,
}

/// Decides the StatefulSet's replicas: the spec's, except during a scale-down, which keeps the
/// current count until every leaving pod is drained (or its drain timed out). Records a
/// `ScalingUp` or `ScaledDown` event on `object` when the count changes.
pub async fn scale(
    ctx: &Context,
    object: &MqttCluster,
    cluster: &ValidatedCluster<'_>,
    existing: &Existing,
    token: &str,
) -> Scale {
    let wanted = cluster.spec.replicas;
    let settled = Scale {
        replicas: wanted,
        draining: Vec::new(),
    };
    match existing.replicas {
        Some(current) if current > wanted => {
            let leaving: Vec<Pod> =
                pods_from_ordinal(&existing.pods, &cluster.names.statefulset(), wanted)
                    .into_iter()
                    .cloned()
                    .collect();
            match drain_leaving(ctx, &leaving, token, cluster.drain_timeout).await {
                ScaleDown::Draining(waiting) => Scale {
                    replicas: current,
                    draining: waiting,
                },
                ScaleDown::Ready { timed_out } => {
                    let (kind, note) = scaled_down(current, wanted, &timed_out);
                    ctx.publish(object, kind, "ScaledDown", &note).await;
                    settled
                }
            }
        }
        Some(current) if current < wanted => {
            let note = format!("scaling {current} → {wanted}");
            ctx.publish(object, EventType::Normal, "ScalingUp", &note)
                .await;
            settled
        }
        _ => settled,
    }
}

/// The `ScaledDown` event: a warning when some drain timed out.
fn scaled_down(current: i32, wanted: i32, timed_out: &[String]) -> (EventType, String) {
    if timed_out.is_empty() {
        let note = format!(
            "drained and removed {} pod(s); scaling {current} → {wanted}",
            current - wanted
        );
        (EventType::Normal, note)
    } else {
        let note = format!(
            "drain timed out on {}; scaling {current} → {wanted} anyway",
            timed_out.join(", ")
        );
        (EventType::Warning, note)
    }
}

/// Where a scale-down stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ScaleDown {
    /// Every leaving pod is drained (or gone): the StatefulSet may shrink.
    Ready { timed_out: Vec<String> },
    /// Still draining these pods.
    Draining(Vec<String>),
}

/// Drives the drain of `leaving` pods one step; call again until it returns `Ready`.
async fn drain_leaving(
    ctx: &Context,
    leaving: &[Pod],
    token: &str,
    timeout: Duration,
) -> ScaleDown {
    let mut waiting = Vec::new();
    let mut timed_out = Vec::new();
    for pod in leaving {
        let name = pod.name_any();
        let (Some(uid), Some(ip)) = (pod.metadata.uid.clone(), pod_ip(pod)) else {
            continue;
        };
        let started = *ctx.drains.lock().entry(uid.clone()).or_insert_with(|| {
            info!(pod = %name, "draining before scale-down");
            Instant::now()
        });
        let progress = match ctx.broker_api.start_drain(ip, token).await {
            Ok(progress) => progress,
            // Not answering: not running, so nothing to drain.
            Err(error) => {
                warn!(pod = %name, %error, "leaving pod does not answer; not draining it");
                continue;
            }
        };
        if progress.is_drained() {
            continue;
        }
        if started.elapsed() >= timeout {
            warn!(pod = %name, connections = progress.connections, "drain timed out");
            timed_out.push(name);
            continue;
        }
        waiting.push(name);
    }
    if waiting.is_empty() {
        for pod in leaving {
            if let Some(uid) = &pod.metadata.uid
                && ctx.drains.lock().remove(uid).is_some()
            {
                ctx.metrics.drained(timed_out.contains(&pod.name_any()));
            }
        }
        ScaleDown::Ready { timed_out }
    } else {
        ScaleDown::Draining(waiting)
    }
}

/// The pods of a StatefulSet named `set` with an ordinal at or above `from`.
fn pods_from_ordinal<'a>(pods: &'a [Pod], set: &str, from: i32) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| ordinal(&p.name_any(), set).is_some_and(|n| n >= from))
        .collect()
}

/// `demo-3` → 3 for set `demo`.
pub fn ordinal(pod: &str, set: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_drain_is_a_warning() {
        assert_eq!(
            scaled_down(3, 2, &[]),
            (
                EventType::Normal,
                "drained and removed 1 pod(s); scaling 3 → 2".into()
            )
        );
        let (kind, note) = scaled_down(3, 1, &["demo-2".into()]);
        assert_eq!(kind, EventType::Warning);
        assert_eq!(note, "drain timed out on demo-2; scaling 3 → 1 anyway");
    }

    #[test]
    fn ordinals_belong_to_their_set_only() {
        assert_eq!(ordinal("demo-3", "demo"), Some(3));
        assert_eq!(ordinal("demo-x-3", "demo"), None);
        assert_eq!(ordinal("demox-3", "demo"), None);
        assert_eq!(ordinal("demo-12", "demo"), Some(12));
    }
}
