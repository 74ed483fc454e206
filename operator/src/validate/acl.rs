//! `MqttAcl`: its rules as the broker's own parser reads them, and rules the renderer would
//! otherwise drop or widen (no subject, or `everyone` beside named subjects). An invalid rule's
//! reason is `InvalidRule`; the cluster reconciler uses the same check to keep the previous ACL.

use super::InvalidSpec;
use crate::crd::MqttAcl;
use crate::render::auth::validate_acl as parse_rules;
use crate::render::names::ClusterNames;
use kube::ResourceExt;

/// An `MqttAcl` the reconciler can report on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedAcl {
    /// The names of the ACL's cluster (`spec.clusterRef`, in the ACL's namespace).
    pub cluster: ClusterNames,
    /// Lines the rules contribute to the ACL file.
    pub lines: usize,
}

pub fn validate_acl(acl: &MqttAcl) -> Result<ValidatedAcl, InvalidSpec> {
    if acl.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(InvalidSpec::field("metadata.name", "missing"));
    }
    let Some(namespace) = acl.namespace().filter(|n| !n.is_empty()) else {
        return Err(InvalidSpec::field(
            "metadata.namespace",
            "missing (the kind is namespaced)",
        ));
    };
    if acl.spec.cluster_ref.name.is_empty() {
        return Err(InvalidSpec::field(
            "spec.clusterRef.name",
            "must not be empty",
        ));
    }
    Ok(ValidatedAcl {
        cluster: ClusterNames::new(&acl.spec.cluster_ref.name, &namespace),
        lines: acl_rules(acl)?,
    })
}

/// Checks the rules alone; returns the lines they contribute to the ACL file.
pub fn acl_rules(acl: &MqttAcl) -> Result<usize, InvalidSpec> {
    for (index, rule) in acl.spec.rules.iter().enumerate() {
        let named = rule.users.len() + rule.groups.len() + rule.client_ids.len();
        match (rule.everyone, named) {
            (false, 0) => {
                return Err(InvalidSpec::rule(
                    index,
                    "applies to no one: set everyone, or users, groups or clientIds",
                ));
            }
            (true, 1..) => {
                return Err(InvalidSpec::rule(
                    index,
                    "set everyone or users, groups and clientIds, not both",
                ));
            }
            _ => {}
        }
    }
    Ok(parse_rules(acl)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(rules: &str) -> MqttAcl {
        serde_yaml::from_str(&format!(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttAcl\nmetadata: {{name: a, namespace: iot}}\nspec:\n  clusterRef: {{name: demo}}\n  rules: {rules}\n"
        ))
        .unwrap()
    }

    #[test]
    fn valid_rules_count_their_lines() {
        let valid = validate_acl(&acl(
            "[{access: allow, action: both, topic: \"a/#\", users: [x, y]}, {access: deny, action: publish, topic: b, everyone: true}]",
        ))
        .unwrap();
        assert_eq!(valid.cluster, ClusterNames::new("demo", "iot"));
        assert_eq!(valid.lines, 3);
    }

    #[test]
    fn a_bad_rule_is_an_invalid_rule_named_by_its_index() {
        let filter = validate_acl(&acl(
            "[{access: allow, action: subscribe, topic: ok, everyone: true}, {access: allow, action: subscribe, topic: \"a/#/b\", everyone: true}]",
        ))
        .unwrap_err();
        assert_eq!(filter.reason(), "InvalidRule");
        assert!(filter.message().starts_with("spec.rules[1]: "), "{filter}");
        let nobody =
            validate_acl(&acl("[{access: allow, action: publish, topic: a}]")).unwrap_err();
        assert_eq!(
            nobody.to_string(),
            "spec.rules[0]: applies to no one: set everyone, or users, groups or clientIds"
        );
        let both = acl_rules(&acl(
            "[{access: allow, action: publish, topic: a, everyone: true, users: [x]}]",
        ))
        .unwrap_err();
        assert_eq!(both.reason(), "InvalidRule");
    }

    #[test]
    fn an_acl_without_namespace_is_an_invalid_spec() {
        let mut orphan = acl("[{access: allow, action: publish, topic: a, everyone: true}]");
        orphan.metadata.namespace = None;
        let invalid = validate_acl(&orphan).unwrap_err();
        assert_eq!(invalid.reason(), "InvalidSpec");
        assert!(invalid.message().starts_with("metadata.namespace: "));
    }
}
