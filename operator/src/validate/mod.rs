//! Checks each custom resource before anything is read or written for it: pure functions from the
//! object to a validated type that holds what its reconciler relies on (namespace, owner reference,
//! parsed durations, the one TLS source), or an [`InvalidSpec`] that names the field. No client
//! here. The CRD schema refuses most of this at admission already; these checks stand behind it for
//! what a schema cannot say and for objects that never met it, so that render never fails on, or
//! quietly misreads, a spec.

mod acl;
mod cluster;
mod user;

pub use acl::{ValidatedAcl, acl_rules, validate_acl};
pub use cluster::{DEFAULT_SERVER_CERT_VALIDITY, TlsSource, ValidatedCluster, validate_cluster};
pub use user::{DEFAULT_CLIENT_CERT_VALIDITY, ValidatedUser, validate_user};

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::render::auth::InvalidRule;

/// Why an object cannot be reconciled as it stands. The operator reports it on the object and waits
/// for the object to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidSpec {
    reason: &'static str,
    message: String,
}

impl InvalidSpec {
    /// `field` (a path such as `spec.replicas`) is wrong: `spec.replicas: must be ≥ 0`.
    pub fn field(field: &str, problem: impl fmt::Display) -> Self {
        Self {
            reason: "InvalidSpec",
            message: format!("{field}: {problem}"),
        }
    }

    /// Rule `index` of an `MqttAcl` is wrong.
    pub fn rule(index: usize, problem: impl fmt::Display) -> Self {
        Self {
            reason: "InvalidRule",
            message: format!("spec.rules[{index}]: {problem}"),
        }
    }

    /// The `Ready` condition's reason and the Warning event's: `InvalidSpec`, or `InvalidRule` for
    /// an ACL rule.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The bounded `error` label of the reconcile error metric.
    pub fn kind(&self) -> &'static str {
        match self.reason {
            "InvalidRule" => "invalid_rule",
            _ => "invalid_spec",
        }
    }

    /// What is wrong, starting with the field.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<InvalidRule> for InvalidSpec {
    fn from(invalid: InvalidRule) -> Self {
        Self {
            reason: "InvalidRule",
            message: invalid.to_string(),
        }
    }
}

/// What every namespaced object must have for the operator to act for it.
#[derive(Debug, Clone)]
struct Identity {
    namespace: String,
    /// The object as the controlling owner of what is made for it.
    owner: OwnerReference,
}

fn identity<K: Resource<DynamicType = ()>>(object: &K) -> Result<Identity, InvalidSpec> {
    if object.meta().name.as_deref().is_none_or(str::is_empty) {
        return Err(InvalidSpec::field("metadata.name", "missing"));
    }
    let Some(namespace) = object.namespace().filter(|n| !n.is_empty()) else {
        return Err(InvalidSpec::field(
            "metadata.namespace",
            "missing (the kind is namespaced)",
        ));
    };
    let Some(owner) = object.controller_owner_ref(&()) else {
        return Err(InvalidSpec::field(
            "metadata.uid",
            "missing (the object was not read from the API server)",
        ));
    };
    Ok(Identity { namespace, owner })
}

/// A Go-style duration (`2160h`, `9m30s`).
fn duration(field: &str, text: &str) -> Result<std::time::Duration, InvalidSpec> {
    humantime::parse_duration(text).map_err(|e| InvalidSpec::field(field, e))
}

/// A Go-style duration of more than zero: a certificate's validity.
fn positive_duration(field: &str, text: &str) -> Result<std::time::Duration, InvalidSpec> {
    match duration(field, text)? {
        zero if zero.is_zero() => Err(InvalidSpec::field(field, "must be longer than zero")),
        validity => Ok(validity),
    }
}

/// Whether `word` can stand as one token in the broker's users and ACL files.
fn is_word(word: &str) -> bool {
    !word.is_empty() && !word.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MqttCluster;

    #[test]
    fn the_message_names_the_field_and_the_reason_is_bounded() {
        let invalid = InvalidSpec::field("spec.replicas", "must be ≥ 0");
        assert_eq!(invalid.to_string(), "spec.replicas: must be ≥ 0");
        assert_eq!(
            (invalid.reason(), invalid.kind()),
            ("InvalidSpec", "invalid_spec")
        );
        let rule = InvalidSpec::rule(2, "applies to no one");
        assert_eq!(rule.message(), "spec.rules[2]: applies to no one");
        assert_eq!(
            (rule.reason(), rule.kind()),
            ("InvalidRule", "invalid_rule")
        );
    }

    #[test]
    fn an_object_without_namespace_or_uid_is_refused() {
        let mut cluster: MqttCluster = serde_yaml::from_str(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {name: demo, uid: u1}\nspec: {}\n",
        )
        .unwrap();
        let err = identity(&cluster).unwrap_err();
        assert!(err.message().starts_with("metadata.namespace: "), "{err}");
        cluster.metadata.namespace = Some("iot".into());
        cluster.metadata.uid = None;
        let err = identity(&cluster).unwrap_err();
        assert!(err.message().starts_with("metadata.uid: "), "{err}");
        cluster.metadata.uid = Some("u1".into());
        let found = identity(&cluster).unwrap();
        assert_eq!(found.namespace, "iot");
        assert_eq!(found.owner.uid, "u1");
        assert_eq!(found.owner.controller, Some(true));
    }

    #[test]
    fn durations_must_parse_and_validities_be_positive() {
        assert_eq!(
            duration("f", "1h30m").unwrap(),
            std::time::Duration::from_secs(5400)
        );
        assert!(duration("f", "0s").unwrap().is_zero());
        assert!(
            positive_duration("f", "0s")
                .unwrap_err()
                .message()
                .starts_with("f: ")
        );
        assert!(
            duration("f", "soon")
                .unwrap_err()
                .message()
                .starts_with("f: ")
        );
    }
}
