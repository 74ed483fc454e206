//! The controllers: one per kind, sharing a [`Context`]. Each reconcile is a pipeline and is
//! idempotent. The controller fetches the object from its watch cache and hands it over; the
//! reconcile validates it (pure, [`crate::validate`]) before reading anything else for it, fetches
//! what exists, renders what should (pure, [`crate::render`]), applies it, cleans up what the spec
//! no longer asks for, and writes the status. An invalid object is reported on itself and waits
//! for a change; a failed reconcile is recorded (metric, Warning event, log line) and retried with
//! a per-object backoff by the error policy in [`controllers`].

pub mod acl;
pub mod apply;
pub mod backoff;
pub mod cluster;
pub mod context;
pub mod controllers;
pub mod error;
pub mod passwords;
pub mod user;

pub use context::{Context, Settings};
pub use error::Error;

use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::warn;

use crate::crd::{Conditions, condition};
use crate::validate::InvalidSpec;
use error::Result;

/// How a reconcile that did not fail ended.
#[derive(Debug)]
pub enum Outcome {
    /// Done; look again as the action says.
    Reconciled(Action),
    /// The object is invalid: reported on it, nothing applied, nothing retried until it changes.
    Rejected(InvalidSpec),
}

/// Ends one reconcile of `object`: the reconcile metrics (an invalid object counts as an error of
/// kind `invalid_spec` or `invalid_rule`), the object's backoff forgotten unless it failed, and
/// the action for the controller.
fn finish<K>(
    ctx: &Context,
    controller: &'static str,
    object: &K,
    started: Instant,
    result: Result<Outcome>,
) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
{
    let error = match &result {
        Ok(Outcome::Reconciled(_)) => None,
        Ok(Outcome::Rejected(invalid)) => Some(invalid.kind()),
        Err(error) => Some(error.kind()),
    };
    ctx.metrics.reconciled(controller, started.elapsed(), error);
    let outcome = result?;
    ctx.backoff.succeeded(&ObjectRef::from_obj(object).erase());
    Ok(match outcome {
        Outcome::Reconciled(action) => action,
        Outcome::Rejected(_) => Action::await_change(),
    })
}

/// Says on `object` why it is invalid: a Warning event and a log line. Its reconciler writes the
/// `Ready=False` condition with [`rejected_conditions`].
async fn report_invalid<K>(ctx: &Context, object: &K, invalid: &InvalidSpec)
where
    K: Resource<DynamicType = ()>,
{
    warn!(
        kind = %K::kind(&()),
        name = %object.name_any(),
        namespace = ?object.namespace(),
        reason = invalid.reason(),
        "{invalid}; waiting for the object to change"
    );
    ctx.publish(
        object,
        EventType::Warning,
        invalid.reason(),
        invalid.message(),
    )
    .await;
}

/// The conditions of an object rejected as invalid: not ready and degraded, with the invalid
/// field in the message, and nothing moving until the object changes.
fn rejected_conditions(
    previous: &[Condition],
    generation: Option<i64>,
    invalid: &InvalidSpec,
) -> Vec<Condition> {
    let mut conditions = Conditions::new(previous, generation);
    conditions.set(condition::READY, false, invalid.reason(), invalid.message());
    conditions.set(
        condition::DEGRADED,
        true,
        invalid.reason(),
        invalid.message(),
    );
    conditions.set(condition::PROGRESSING, false, "Settled", "");
    conditions.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::is_true;

    #[test]
    fn a_rejected_object_is_not_ready_and_says_which_field() {
        let invalid = InvalidSpec::field("spec.replicas", "must be ≥ 0");
        let conditions = rejected_conditions(&[], Some(4), &invalid);
        let ready = conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .unwrap();
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.message.as_str()
            ),
            ("False", "InvalidSpec", "spec.replicas: must be ≥ 0")
        );
        assert_eq!(ready.observed_generation, Some(4));
        assert!(is_true(&conditions, condition::DEGRADED));
        assert!(!is_true(&conditions, condition::PROGRESSING));
    }
}
