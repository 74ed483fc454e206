//! The PodDisruptionBudget: a node drain takes at most `maxUnavailable` brokers at once.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::ClusterNames;
use crate::crd::MqttClusterSpec;

/// `None` when the spec turns the budget off.
pub fn pod_disruption_budget(
    names: &ClusterNames,
    spec: &MqttClusterSpec,
    owner: OwnerReference,
) -> Option<PodDisruptionBudget> {
    let budget = &spec.pod_disruption_budget;
    budget.enabled.then(|| PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(names.pdb()),
            namespace: Some(names.namespace.clone()),
            labels: Some(names.labels("broker")),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(budget.max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(names.selector_labels()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}
