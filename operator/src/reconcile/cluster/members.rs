//! The brokers' cluster as the brokers report it: every running pod is asked about the cluster
//! (`GET /api/v1/cluster`) and about itself (`GET /api/v1/broker`), and the answers are merged into
//! the members of `status.members` and the count in `status.agreedMembers`. Asking is the only
//! I/O here; merging is a pure function of the answers.

use std::collections::BTreeSet;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::auth::{is_running_and_ready, pod_ip};
use crate::broker_api::{BrokerInfo, ClusterView};
use crate::crd::{Member, MemberState};
use crate::reconcile::context::Context;

/// What one running pod answered; `None` where it could not be asked or did not answer.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub pod: String,
    /// The pod's `Ready` condition.
    pub pod_ready: bool,
    pub cluster: Option<ClusterView>,
    pub broker: Option<BrokerInfo>,
}

/// The members and how many of them the brokers agree on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Membership {
    pub members: Vec<Member>,
    /// Members every broker that answered counts as joined or as itself.
    pub agreed: i32,
}

/// Asks every pod in `pods` (running, in ordinal order) at once.
pub async fn ask(ctx: &Context, pods: &[Pod], token: &str) -> Vec<Answer> {
    join_all(pods.iter().map(|pod| async move {
        let mut answer = Answer {
            pod: pod.name_any(),
            pod_ready: is_running_and_ready(pod),
            ..Answer::default()
        };
        if let Some(ip) = pod_ip(pod) {
            let (cluster, broker) = futures::join!(
                ctx.broker_api.cluster(ip, token),
                ctx.broker_api.info(ip, token)
            );
            answer.cluster = cluster.ok().flatten();
            answer.broker = broker.ok();
        }
        answer
    }))
    .await
}

/// Merges the answers: one member per pod asked, in their order, then any other node id a broker
/// reports (a pod that is gone but not yet declared dead), by name.
pub fn merge(answers: &[Answer]) -> Membership {
    let views: Vec<&ClusterView> = answers.iter().filter_map(|a| a.cluster.as_ref()).collect();
    let mut names: Vec<String> = answers.iter().map(|a| a.pod.clone()).collect();
    let reported: BTreeSet<&str> = views
        .iter()
        .flat_map(|v| v.members.iter().map(|m| m.node_id.as_str()))
        .collect();
    names.extend(
        reported
            .into_iter()
            .filter(|id| !answers.iter().any(|a| a.pod == *id))
            .map(str::to_owned),
    );
    let members = names
        .into_iter()
        .map(|name| {
            let answer = answers.iter().find(|a| a.pod == name);
            member(name, answer, &views)
        })
        .collect();
    Membership {
        members,
        agreed: agreed(&views),
    }
}

fn member(name: String, answer: Option<&Answer>, views: &[&ClusterView]) -> Member {
    let own = answer.and_then(|a| a.cluster.as_ref());
    let info = answer.and_then(|a| a.broker.as_ref());
    let ready = match (own, answer) {
        (Some(view), _) => view.ready,
        (None, Some(answer)) => answer.pod_ready,
        // Not a pod any more: whatever it last gossiped does not make it a ready broker.
        (None, None) => false,
    };
    Member {
        state: state(&name, own.is_some(), views),
        ready,
        version: info.map(|i| i.version.clone()),
        connections: info.map(|i| i.connections),
        draining: info.is_some_and(|i| i.draining),
        pod: name,
    }
}

/// The worst state any other broker reports for `name` (absent from a view: `missing`). With no
/// other broker to ask, a broker that answered itself is joined to all there is.
fn state(name: &str, answered: bool, views: &[&ClusterView]) -> Option<MemberState> {
    let others: Vec<&&ClusterView> = views.iter().filter(|v| v.node_id != name).collect();
    if others.is_empty() {
        return answered.then_some(MemberState::Joined);
    }
    others
        .iter()
        .map(|view| {
            let seen = view.members.iter().find(|m| m.node_id == name);
            match seen.map(|m| m.state.as_str()) {
                Some("joined" | "self") => MemberState::Joined,
                Some("joining") => MemberState::Joining,
                Some(_) => MemberState::Unreachable,
                None => MemberState::Missing,
            }
        })
        .max()
}

/// How many node ids every view lists as joined or as itself.
fn agreed(views: &[&ClusterView]) -> i32 {
    let counted = |view: &ClusterView| -> BTreeSet<String> {
        view.members
            .iter()
            .filter(|m| matches!(m.state.as_str(), "self" | "joined"))
            .map(|m| m.node_id.clone())
            .collect()
    };
    let mut views = views.iter();
    let Some(first) = views.next() else {
        return 0;
    };
    let common = views.fold(counted(first), |common, view| {
        common.intersection(&counted(view)).cloned().collect()
    });
    i32::try_from(common.len()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker_api::ClusterViewMember;

    /// A broker's answer: its own id, then `(peer, state)` for each peer it knows.
    fn answered(pod: &str, peers: &[(&str, &str)]) -> Answer {
        let mut members = vec![ClusterViewMember {
            node_id: pod.into(),
            state: "self".into(),
            ready: true,
        }];
        members.extend(peers.iter().map(|(id, state)| ClusterViewMember {
            node_id: (*id).into(),
            state: (*state).into(),
            ready: true,
        }));
        Answer {
            pod: pod.into(),
            pod_ready: true,
            cluster: Some(ClusterView {
                name: "iot.demo".into(),
                node_id: pod.into(),
                ready: true,
                members,
            }),
            broker: Some(BrokerInfo {
                version: "0.1.0".into(),
                connections: 2,
                draining: false,
            }),
        }
    }

    fn silent(pod: &str, pod_ready: bool) -> Answer {
        Answer {
            pod: pod.into(),
            pod_ready,
            ..Answer::default()
        }
    }

    fn states(membership: &Membership) -> Vec<(&str, Option<MemberState>)> {
        membership
            .members
            .iter()
            .map(|m| (m.pod.as_str(), m.state))
            .collect()
    }

    #[test]
    fn brokers_that_see_each_other_agree_on_all_of_them() {
        let membership = merge(&[
            answered("demo-0", &[("demo-1", "joined"), ("demo-2", "joined")]),
            answered("demo-1", &[("demo-0", "joined"), ("demo-2", "joined")]),
            answered("demo-2", &[("demo-1", "joined"), ("demo-0", "joined")]),
        ]);
        assert_eq!(membership.agreed, 3);
        assert_eq!(
            states(&membership),
            [
                ("demo-0", Some(MemberState::Joined)),
                ("demo-1", Some(MemberState::Joined)),
                ("demo-2", Some(MemberState::Joined))
            ]
        );
        let first = &membership.members[0];
        assert!(first.ready && !first.draining);
        assert_eq!(
            (first.version.as_deref(), first.connections),
            (Some("0.1.0"), Some(2))
        );
    }

    #[test]
    fn brokers_that_never_found_each_other_agree_on_none() {
        let membership = merge(&[
            answered("demo-0", &[]),
            answered("demo-1", &[]),
            answered("demo-2", &[]),
        ]);
        assert_eq!(membership.agreed, 0);
        assert!(
            membership
                .members
                .iter()
                .all(|m| m.state == Some(MemberState::Missing) && m.ready)
        );
        assert_eq!(
            merge(&[answered("demo-0", &[])]).agreed,
            1,
            "a cluster of one"
        );
        assert_eq!(
            states(&merge(&[answered("demo-0", &[])])),
            [("demo-0", Some(MemberState::Joined))]
        );
    }

    #[test]
    fn the_worst_report_decides_and_a_silent_pod_counts_only_through_the_others() {
        let membership = merge(&[
            answered("demo-0", &[("demo-1", "joined"), ("demo-2", "joining")]),
            answered("demo-1", &[("demo-0", "joined"), ("demo-2", "unreachable")]),
            silent("demo-2", false),
            silent("demo-3", false),
        ]);
        assert_eq!(membership.agreed, 2, "demo-0 and demo-1");
        assert_eq!(
            states(&membership),
            [
                ("demo-0", Some(MemberState::Joined)),
                ("demo-1", Some(MemberState::Joined)),
                ("demo-2", Some(MemberState::Unreachable)),
                ("demo-3", Some(MemberState::Missing))
            ]
        );
        let silent = &membership.members[2];
        assert!(!silent.ready && silent.version.is_none());
    }

    #[test]
    fn a_node_the_brokers_still_report_is_listed_after_the_pods() {
        let membership = merge(&[
            answered("demo-0", &[("demo-1", "joined"), ("demo-9", "unreachable")]),
            answered("demo-1", &[("demo-0", "joined")]),
        ]);
        assert_eq!(membership.agreed, 2);
        assert_eq!(
            states(&membership),
            [
                ("demo-0", Some(MemberState::Joined)),
                ("demo-1", Some(MemberState::Joined)),
                ("demo-9", Some(MemberState::Missing))
            ]
        );
        assert!(!membership.members[2].ready);
    }

    #[test]
    fn a_draining_broker_says_so_and_nobody_answering_agrees_on_nothing() {
        let mut leaving = answered("demo-0", &[]);
        leaving.broker.as_mut().unwrap().draining = true;
        assert!(merge(&[leaving]).members[0].draining);
        let membership = merge(&[silent("demo-0", true)]);
        assert_eq!(membership.agreed, 0);
        assert_eq!(states(&membership), [("demo-0", None)]);
        assert!(membership.members[0].ready, "the pod's own readiness");
    }
}
