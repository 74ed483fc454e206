//! `MqttUser`: what the user reconciler relies on, and what would otherwise break the whole
//! cluster's users or ACL file: a username and groups the broker's files can hold, and a client
//! certificate validity that parses.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{InvalidSpec, identity, is_word, positive_duration};
use crate::crd::{MqttUser, SecretKeyRef};
use crate::render::names::ClusterNames;

/// A client certificate's validity when `spec.clientCertificate.validity` is unset (a year).
pub const DEFAULT_CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// An `MqttUser` the reconciler can act on.
#[derive(Debug, Clone)]
pub struct ValidatedUser<'a> {
    /// The names of the user's cluster (`spec.clusterRef`, in the user's namespace).
    pub cluster: ClusterNames,
    /// The user as the controlling owner of its credentials Secret.
    pub owner: OwnerReference,
    pub username: String,
    /// The Secret the credentials are written to.
    pub credentials_secret: String,
    /// Where the password comes from, when not generated.
    pub password_from: Option<&'a SecretKeyRef>,
    /// The client certificate's validity, when one is asked for.
    pub client_certificate: Option<Duration>,
}

pub fn validate_user(user: &MqttUser) -> Result<ValidatedUser<'_>, InvalidSpec> {
    let identity = identity(user)?;
    let spec = &user.spec;
    if spec.cluster_ref.name.is_empty() {
        return Err(InvalidSpec::field(
            "spec.clusterRef.name",
            "must not be empty",
        ));
    }
    let username = user.username();
    let username_field = if spec.username.is_some() {
        "spec.username"
    } else {
        "metadata.name (the username when spec.username is unset)"
    };
    if !is_word(&username) || username.contains(':') || username.starts_with('#') {
        return Err(InvalidSpec::field(
            username_field,
            "a username cannot be empty, start with '#', or hold ':', whitespace or control characters",
        ));
    }
    if spec.credentials_secret.as_deref() == Some("") {
        return Err(InvalidSpec::field(
            "spec.credentialsSecret",
            "must not be empty",
        ));
    }
    if let Some(from) = &spec.password_from {
        if from.secret_key_ref.name.is_empty() {
            return Err(InvalidSpec::field(
                "spec.passwordFrom.secretKeyRef.name",
                "must not be empty",
            ));
        }
        if from.secret_key_ref.key.is_empty() {
            return Err(InvalidSpec::field(
                "spec.passwordFrom.secretKeyRef.key",
                "must not be empty",
            ));
        }
    }
    if let Some(index) = spec.groups.iter().position(|g| !is_word(&g.0)) {
        return Err(InvalidSpec::field(
            &format!("spec.groups[{index}]"),
            "a group name cannot be empty or hold whitespace",
        ));
    }
    let client_certificate = match &spec.client_certificate {
        None => None,
        Some(request) => Some(match &request.validity {
            Some(text) => positive_duration("spec.clientCertificate.validity", text)?,
            None => DEFAULT_CLIENT_CERT_VALIDITY,
        }),
    };
    Ok(ValidatedUser {
        cluster: ClusterNames::new(&spec.cluster_ref.name, &identity.namespace),
        owner: identity.owner,
        username,
        credentials_secret: user.credentials_secret_name(),
        password_from: spec.password_from.as_ref().map(|p| &p.secret_key_ref),
        client_certificate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(metadata: &str, spec: &str) -> MqttUser {
        serde_yaml::from_str(&format!(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttUser\nmetadata: {metadata}\nspec: {spec}\n"
        ))
        .unwrap()
    }

    const META: &str = "{name: alice, namespace: iot, uid: u1}";

    fn refused(metadata: &str, spec: &str) -> String {
        validate_user(&user(metadata, spec))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_plain_user_takes_its_name_and_the_defaults() {
        let alice = user(META, "{clusterRef: {name: demo}}");
        let valid = validate_user(&alice).unwrap();
        assert_eq!(valid.cluster, ClusterNames::new("demo", "iot"));
        assert_eq!(valid.username, "alice");
        assert_eq!(valid.credentials_secret, "alice-mqtt-credentials");
        assert_eq!(valid.owner.uid, "u1");
        assert!(valid.password_from.is_none() && valid.client_certificate.is_none());

        let gateway = user(
            META,
            "{clusterRef: {name: demo}, username: gw-7, credentialsSecret: gw, passwordFrom: {secretKeyRef: {name: pw}}, clientCertificate: {}, groups: [sensors]}",
        );
        let valid = validate_user(&gateway).unwrap();
        assert_eq!(
            (valid.username.as_str(), valid.credentials_secret.as_str()),
            ("gw-7", "gw")
        );
        assert_eq!(valid.password_from.unwrap().key, "password");
        assert_eq!(valid.client_certificate, Some(DEFAULT_CLIENT_CERT_VALIDITY));
    }

    #[test]
    fn what_would_break_the_users_or_acl_file_is_refused_with_the_field() {
        assert!(
            refused(META, "{clusterRef: {name: demo}, username: \"a:b\"}")
                .starts_with("spec.username: ")
        );
        assert!(
            refused(
                "{name: \"#x\", namespace: iot, uid: u1}",
                "{clusterRef: {name: demo}}"
            )
            .starts_with("metadata.name (the username")
        );
        assert_eq!(
            refused(
                META,
                "{clusterRef: {name: demo}, groups: [ok, \"two words\"]}"
            ),
            "spec.groups[1]: a group name cannot be empty or hold whitespace"
        );
        assert_eq!(
            refused(META, "{clusterRef: {name: \"\"}}"),
            "spec.clusterRef.name: must not be empty"
        );
        assert_eq!(
            refused(
                META,
                "{clusterRef: {name: demo}, passwordFrom: {secretKeyRef: {name: pw, key: \"\"}}}"
            ),
            "spec.passwordFrom.secretKeyRef.key: must not be empty"
        );
        assert!(
            refused(
                META,
                "{clusterRef: {name: demo}, clientCertificate: {validity: forever}}"
            )
            .starts_with("spec.clientCertificate.validity: ")
        );
        assert_eq!(
            refused(
                META,
                "{clusterRef: {name: demo}, clientCertificate: {validity: 0s}}"
            ),
            "spec.clientCertificate.validity: must be longer than zero"
        );
    }
}
