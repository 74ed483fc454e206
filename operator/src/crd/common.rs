//! Pieces shared by the three kinds: the reference to a cluster and the status conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `MqttCluster` a user or ACL belongs to, in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Name of the `MqttCluster`.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// The condition types every kind reports.
pub mod condition {
    /// The resource is in effect: its objects exist and the brokers use it.
    pub const READY: &str = "Ready";
    /// The operator is moving the resource towards its spec (rollout, scaling, issuing).
    pub const PROGRESSING: &str = "Progressing";
    /// Something keeps the spec from taking effect; the message names it.
    pub const DEGRADED: &str = "Degraded";
}

/// Builds the conditions of a status, keeping `lastTransitionTime` from the previous status when a
/// condition's status did not change (the Kubernetes API convention).
#[derive(Debug)]
pub struct Conditions<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    now: Time,
    set: Vec<Condition>,
}

impl<'a> Conditions<'a> {
    pub fn new(previous: &'a [Condition], generation: Option<i64>) -> Self {
        Self {
            previous,
            generation,
            now: Time(k8s_openapi::jiff::Timestamp::now()),
            set: Vec::new(),
        }
    }

    /// Sets condition `type_` to `status` with a CamelCase `reason` and a human `message`.
    pub fn set(&mut self, type_: &str, status: bool, reason: &str, message: impl Into<String>) {
        let status = if status { "True" } else { "False" };
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| self.now.clone(), |c| c.last_transition_time.clone());
        self.set.retain(|c| c.type_ != type_);
        self.set.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
            observed_generation: self.generation,
            last_transition_time,
        });
    }

    pub fn into_vec(self) -> Vec<Condition> {
        self.set
    }
}

/// Whether `conditions` hold `type_` with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_is_kept_while_the_status_stays() {
        let mut first = Conditions::new(&[], Some(1));
        first.set(condition::READY, true, "Reconciled", "ok");
        let first = first.into_vec();
        let mut second = Conditions::new(&first, Some(2));
        second.set(condition::READY, true, "Reconciled", "still ok");
        second.set(condition::DEGRADED, false, "Reconciled", "");
        let second = second.into_vec();
        assert_eq!(
            second[0].last_transition_time,
            first[0].last_transition_time
        );
        assert_eq!(second[0].observed_generation, Some(2));
        assert!(is_true(&second, condition::READY));
        assert!(!is_true(&second, condition::DEGRADED));
    }
}
