//! `MqttCluster.status`: replicas, endpoints, the members of the brokers' cluster as the brokers
//! report them, and the `Ready`, `Progressing` and `Degraded` conditions with a reason naming what
//! holds things up.

use k8s_openapi::api::apps::v1::StatefulSet;

use super::auth::AuthFiles;
use super::members::Membership;
use super::tls::ServerTls;
use crate::crd::{Conditions, Endpoint, ListenerSpec, MqttCluster, MqttClusterStatus, condition};
use crate::reconcile::apply::patch_status;
use crate::reconcile::context::Context;
use crate::reconcile::error::Result;
use crate::render::names::ClusterNames;

/// What one reconcile saw, for the status.
#[derive(Debug)]
pub struct Observed {
    /// The StatefulSet as the server holds it after the apply.
    pub statefulset: StatefulSet,
    pub tls: ServerTls,
    /// The Secret whose `ca.crt` clients trust.
    pub ca_secret: Option<String>,
    pub auth: AuthFiles,
    pub brokers: Brokers,
    /// Leaving pods still draining before a scale-down.
    pub draining: Vec<String>,
}

/// What the running brokers have and say.
#[derive(Debug, Default)]
pub struct Brokers {
    /// Running pods that do not have the current users and ACL yet.
    pub auth_behind: usize,
    /// Running pods whose `Ready` condition is true.
    pub ready_pods: usize,
    pub membership: Membership,
}

/// The status from what this reconcile observed.
pub fn build(
    cluster: &MqttCluster,
    names: &ClusterNames,
    cluster_domain: &str,
    observed: &Observed,
) -> MqttClusterStatus {
    let spec = &cluster.spec;
    let previous = cluster.status.clone().unwrap_or_default();
    let rollout = rollout(&observed.statefulset, observed.brokers.ready_pods);
    let problems = problems(observed);
    let progressing = progressing(spec.replicas, &rollout, observed);
    let mut conditions = Conditions::new(&previous.conditions, cluster.metadata.generation);
    set_conditions(
        &mut conditions,
        spec.replicas,
        rollout.ready,
        &problems,
        progressing,
    );
    let auth_revision = if observed.brokers.auth_behind == 0 {
        Some(observed.auth.revision.clone())
    } else {
        previous.auth_revision.clone()
    };
    MqttClusterStatus {
        observed_generation: cluster.metadata.generation,
        conditions: conditions.into_vec(),
        replicas: rollout.replicas,
        ready_replicas: rollout.ready,
        selector: names.selector(),
        endpoints: endpoints(&spec.listeners, &names.service_host(cluster_domain)),
        agreed_members: observed.brokers.membership.agreed,
        members: observed.brokers.membership.members.clone(),
        ca_secret: observed.ca_secret.clone(),
        certificate_not_after: observed.tls.not_after.clone(),
        auth_revision,
    }
}

/// Where the StatefulSet's rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rollout {
    replicas: i32,
    ready: i32,
    updated: i32,
    /// Every pod runs the current revision.
    rolled: bool,
    /// The StatefulSet controller has seen the latest spec.
    generation_seen: bool,
}

fn rollout(set: &StatefulSet, ready_pods: usize) -> Rollout {
    let status = set.status.clone().unwrap_or_default();
    // The StatefulSet's count and the pods this reconcile looked at can differ by a moment; report
    // the lower so `Ready` never runs ahead of the pods the members beside it were asked about.
    Rollout {
        replicas: status.replicas,
        ready: status
            .ready_replicas
            .unwrap_or(0)
            .min(i32::try_from(ready_pods).unwrap_or(i32::MAX)),
        updated: status.updated_replicas.unwrap_or(0),
        rolled: status.current_revision.is_some()
            && status.current_revision == status.update_revision,
        generation_seen: status.observed_generation == set.metadata.generation,
    }
}

/// One address per listener.
fn endpoints(listeners: &[ListenerSpec], host: &str) -> Vec<Endpoint> {
    listeners
        .iter()
        .map(|l| Endpoint {
            listener: l.name.clone(),
            url: format!(
                "{}://{host}:{}{}",
                l.protocol.scheme(),
                l.port,
                if l.protocol.uses_websocket() {
                    l.path.clone().unwrap_or_else(|| "/mqtt".into())
                } else {
                    String::new()
                }
            ),
        })
        .collect()
}

/// What keeps the spec from taking effect, as (reason, message).
fn problems(observed: &Observed) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if let Some((reason, message)) = &observed.tls.problem {
        problems.push((*reason, message.clone()));
    }
    if let Some(problem) = &observed.auth.acl_problem {
        problems.push((
            "InvalidAcl",
            format!("{problem}; the previous ACL stays in force"),
        ));
    }
    problems
}

/// What is moving, as (reason, message), the first of these that applies.
fn progressing(
    wanted: i32,
    rollout: &Rollout,
    observed: &Observed,
) -> Option<(&'static str, String)> {
    let Rollout {
        replicas,
        ready,
        updated,
        ..
    } = *rollout;
    if !observed.draining.is_empty() {
        let draining = observed.draining.join(", ");
        Some(("Draining", format!("draining {draining} before scale-down")))
    } else if !rollout.generation_seen || replicas != wanted {
        Some(("Scaling", format!("{replicas} of {wanted} pods")))
    } else if !rollout.rolled || updated < wanted {
        Some((
            "RollingUpdate",
            format!("{updated} of {wanted} pods updated"),
        ))
    } else if ready < wanted {
        Some(("WaitingForPods", format!("{ready} of {wanted} pods ready")))
    } else if let Some(agreed) = disagreement(wanted, &observed.brokers.membership) {
        let message = format!("{agreed} of {wanted} brokers agree on the cluster's members");
        Some(("FormingCluster", message))
    } else if observed.brokers.auth_behind > 0 {
        let behind = observed.brokers.auth_behind;
        let message = format!("{behind} broker(s) do not have the current users and ACL yet");
        Some(("PushingAuth", message))
    } else {
        None
    }
}

/// How many members the brokers agree on, when that is fewer than wanted: pods that are ready
/// but have not all found each other yet serve their own clients, not the cluster's. `None` also
/// when no broker answered, since then nothing is known either way.
fn disagreement(wanted: i32, membership: &Membership) -> Option<i32> {
    let answered = membership.members.iter().any(|m| m.state.is_some());
    (answered && membership.agreed < wanted).then_some(membership.agreed)
}

/// `Degraded` from the problems, `Progressing` from what moves, and `Ready` when neither: a
/// problem's reason wins over a movement's.
fn set_conditions(
    conditions: &mut Conditions<'_>,
    wanted: i32,
    ready: i32,
    problems: &[(&'static str, String)],
    progressing: Option<(&'static str, String)>,
) {
    match problems.first() {
        Some((reason, _)) => {
            let messages: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
            conditions.set(condition::DEGRADED, true, reason, messages.join("; "));
        }
        None => conditions.set(condition::DEGRADED, false, "AsExpected", ""),
    }
    match &progressing {
        Some((reason, message)) => {
            conditions.set(condition::PROGRESSING, true, reason, message.clone())
        }
        None => conditions.set(
            condition::PROGRESSING,
            false,
            "Settled",
            "all pods run the current spec",
        ),
    }
    match (problems.first(), progressing.as_ref()) {
        (Some((reason, message)), _) | (None, Some((reason, message))) => {
            conditions.set(condition::READY, false, reason, message.clone())
        }
        (None, None) => conditions.set(
            condition::READY,
            true,
            "Ready",
            format!("{ready} of {wanted} brokers ready"),
        ),
    }
}

/// Whether nothing is moving: the next look can wait.
pub fn is_settled(status: &MqttClusterStatus, replicas: i32) -> bool {
    status.ready_replicas == replicas
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == condition::PROGRESSING && c.status == "False")
}

pub async fn patch(ctx: &Context, cluster: &MqttCluster, status: MqttClusterStatus) -> Result<()> {
    patch_status(&ctx.client, cluster, cluster.status.as_ref(), &status).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Member, MemberState, is_true};
    use k8s_openapi::api::apps::v1::StatefulSetStatus;

    fn cluster() -> MqttCluster {
        serde_yaml::from_str(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo, generation: 2}\nspec:\n  replicas: 2\n  listeners: [{name: mqtt, port: 1883}, {name: ws, protocol: ws, port: 8080}]\n",
        )
        .unwrap()
    }

    fn member(pod: &str) -> Member {
        Member {
            pod: pod.into(),
            ready: true,
            state: Some(MemberState::Joined),
            version: None,
            connections: None,
            draining: false,
        }
    }

    /// Two pods, rolled and ready, both with the current users and ACL.
    fn settled() -> Observed {
        let mut statefulset = StatefulSet::default();
        statefulset.metadata.generation = Some(5);
        statefulset.status = Some(StatefulSetStatus {
            observed_generation: Some(5),
            replicas: 2,
            ready_replicas: Some(2),
            updated_replicas: Some(2),
            current_revision: Some("r1".into()),
            update_revision: Some("r1".into()),
            ..Default::default()
        });
        Observed {
            statefulset,
            tls: ServerTls::default(),
            ca_secret: Some("demo-ca".into()),
            auth: AuthFiles {
                users: String::new(),
                acl: String::new(),
                revision: "rev".into(),
                acl_problem: None,
            },
            brokers: Brokers {
                auth_behind: 0,
                ready_pods: 2,
                membership: Membership {
                    members: vec![member("demo-0"), member("demo-1")],
                    agreed: 2,
                },
            },
            draining: Vec::new(),
        }
    }

    fn reason(status: &MqttClusterStatus, type_: &str) -> String {
        let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        c.reason.clone()
    }

    fn build_status(observed: &Observed) -> MqttClusterStatus {
        build(
            &cluster(),
            &ClusterNames::new("demo", "iot"),
            "cluster.local",
            observed,
        )
    }

    #[test]
    fn a_settled_cluster_is_ready_with_its_endpoints_and_revision() {
        let status = build_status(&settled());
        assert!(is_true(&status.conditions, condition::READY));
        assert!(is_settled(&status, 2));
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!((status.replicas, status.ready_replicas), (2, 2));
        assert_eq!(status.auth_revision.as_deref(), Some("rev"));
        assert_eq!(status.agreed_members, 2);
        assert_eq!(status.members.len(), 2);
        let urls: Vec<&str> = status.endpoints.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "mqtt://demo.iot.svc.cluster.local:1883",
                "ws://demo.iot.svc.cluster.local:8080/mqtt"
            ]
        );
    }

    #[test]
    fn ready_never_runs_ahead_of_the_members_and_draining_comes_first() {
        let mut observed = settled();
        observed.brokers.ready_pods = 1;
        let status = build_status(&observed);
        assert_eq!(status.ready_replicas, 1);
        assert_eq!(reason(&status, condition::READY), "WaitingForPods");
        observed.draining = vec!["demo-2".into()];
        let status = build_status(&observed);
        assert_eq!(reason(&status, condition::PROGRESSING), "Draining");
        assert!(!is_settled(&status, 2));
    }

    #[test]
    fn ready_waits_until_the_brokers_agree_on_every_member() {
        let mut observed = settled();
        observed.brokers.membership.agreed = 1;
        let status = build_status(&observed);
        assert_eq!(reason(&status, condition::READY), "FormingCluster");
        assert_eq!(reason(&status, condition::PROGRESSING), "FormingCluster");
        assert!(!is_settled(&status, 2));
        // No broker answered: agreement is unknown, and the pods' readiness decides.
        observed.brokers.membership = Membership::default();
        let status = build_status(&observed);
        assert!(is_true(&status.conditions, condition::READY));
    }

    #[test]
    fn a_problem_degrades_the_cluster_and_names_the_reason() {
        let mut observed = settled();
        observed.tls.problem = Some(("TlsSecretNotFound", "no secret".into()));
        observed.auth.acl_problem = Some("MqttAcl x: bad".into());
        observed.brokers.auth_behind = 1;
        let status = build_status(&observed);
        assert_eq!(reason(&status, condition::READY), "TlsSecretNotFound");
        assert_eq!(reason(&status, condition::DEGRADED), "TlsSecretNotFound");
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::DEGRADED)
            .unwrap();
        assert_eq!(
            degraded.message,
            "no secret; MqttAcl x: bad; the previous ACL stays in force"
        );
        assert_eq!(reason(&status, condition::PROGRESSING), "PushingAuth");
        assert_eq!(status.auth_revision, None, "the previous revision stays");
    }
}
