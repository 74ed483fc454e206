//! The `MqttUser` reconciler: makes sure the user's credentials Secret holds a username, a
//! password (generated once, or copied from the user's own Secret so that changing that Secret
//! rotates it), the CA clients trust, a URI per listener and, when asked for, a client certificate
//! from the cluster's CA. The cluster reconciler turns these Secrets into the users file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use time::OffsetDateTime;

use super::apply::{apply, patch_status, secret_data, secret_strings};
use super::cluster::{random_token, users_of};
use super::context::Context;
use super::error::{Error, Result};
use crate::crd::{Conditions, MqttCluster, MqttUser, MqttUserStatus, condition};
use crate::render::names::{ClusterNames, LABEL_CLUSTER, LABEL_COMPONENT, keys};
use crate::tls::{CertificateAuthority, inspect};

const DEFAULT_CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Annotation on the credentials Secret: what the client certificate was issued for.
const ANNOTATION_CLIENT_CERT_FOR: &str = "tern.dev/client-certificate-for";

pub async fn reconcile(user: Arc<MqttUser>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&user, &ctx).await;
    ctx.metrics.reconciled(
        "user",
        started.elapsed(),
        result.as_ref().err().map(Error::kind),
    );
    result
}

/// A condition that keeps the user from working, with when to look again.
struct Blocked {
    reason: &'static str,
    message: String,
}

async fn reconcile_inner(user: &MqttUser, ctx: &Context) -> Result<Action> {
    let namespace = user.namespace().ok_or(Error::MissingField("namespace"))?;
    let clusters: Api<MqttCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let username = user.username();
    let secret_name = user.credentials_secret_name();

    let Some(cluster) = clusters.get_opt(&user.spec.cluster_ref.name).await? else {
        let blocked = Blocked {
            reason: "ClusterNotFound",
            message: format!(
                "spec.clusterRef: MqttCluster {:?} does not exist",
                user.spec.cluster_ref.name
            ),
        };
        return finish(ctx, user, None, Some(blocked), None).await;
    };
    let names = ClusterNames::new(&cluster.name_any(), &namespace);

    // The first MqttUser (by creation) to claim a username keeps it.
    let owner_of_name = users_of(ctx, &names)
        .await?
        .into_iter()
        .find(|u| u.username() == username);
    if let Some(first) = owner_of_name.filter(|u| u.metadata.uid != user.metadata.uid) {
        let blocked = Blocked {
            reason: "UsernameTaken",
            message: format!(
                "username {username:?} already belongs to MqttUser {:?}",
                first.name_any()
            ),
        };
        return finish(ctx, user, None, Some(blocked), None).await;
    }

    let existing = secrets.get_opt(&secret_name).await?;
    if let Some(existing) = &existing {
        let ours = existing
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == user.metadata.uid.as_ref());
        if !ours {
            let blocked = Blocked {
                reason: "SecretConflict",
                message: format!(
                    "spec.credentialsSecret: Secret {secret_name:?} exists and does not belong to this MqttUser"
                ),
            };
            return finish(ctx, user, None, Some(blocked), None).await;
        }
    }
    let previous = existing.as_ref().map(secret_strings).unwrap_or_default();
    let mut data = BTreeMap::new();
    data.insert("username".to_owned(), username.clone());
    let mut blocked = None;

    match &user.spec.password_from {
        Some(from) => {
            let reference = &from.secret_key_ref;
            match secrets.get_opt(&reference.name).await? {
                None => {
                    blocked = Some(Blocked {
                        reason: "PasswordSecretNotFound",
                        message: format!(
                            "spec.passwordFrom: Secret {:?} does not exist",
                            reference.name
                        ),
                    })
                }
                Some(secret) => match secret_strings(&secret).remove(&reference.key) {
                    Some(password) if !password.is_empty() => {
                        data.insert("password".into(), password);
                    }
                    _ => {
                        blocked = Some(Blocked {
                            reason: "PasswordKeyNotFound",
                            message: format!(
                                "spec.passwordFrom: Secret {:?} has no non-empty UTF-8 key {:?}",
                                reference.name, reference.key
                            ),
                        })
                    }
                },
            }
        }
        None => {
            let password = previous
                .get("password")
                .filter(|p| !p.is_empty())
                .cloned()
                .unwrap_or_else(random_token);
            data.insert("password".into(), password);
        }
    }

    if let Some(ca) = server_ca(&secrets, &cluster, &names).await? {
        data.insert(keys::CA_CERT.into(), ca);
    }
    let host = names.service_host(&ctx.settings.cluster_domain);
    for listener in &cluster.spec.listeners {
        let path = if listener.protocol.uses_websocket() {
            listener.path.clone().unwrap_or_else(|| "/mqtt".into())
        } else {
            String::new()
        };
        data.insert(
            format!("uri-{}", listener.name),
            format!(
                "{}://{}@{host}:{}{path}",
                listener.protocol.scheme(),
                userinfo(&username),
                listener.port
            ),
        );
    }

    let mut annotations = BTreeMap::new();
    let mut certificate_not_after = None;
    if let Some(request) = &user.spec.client_certificate {
        let validity = match request.validity.as_deref().map(humantime::parse_duration) {
            None => DEFAULT_CLIENT_CERT_VALIDITY,
            Some(Ok(validity)) => validity,
            Some(Err(e)) => {
                let blocked = Blocked {
                    reason: "InvalidValidity",
                    message: format!("spec.clientCertificate.validity: {e}"),
                };
                return finish(ctx, user, Some(&secret_name), Some(blocked), None).await;
            }
        };
        match cluster_ca(&secrets, &names).await? {
            None => {
                let blocked = Blocked {
                    reason: "WaitingForCluster",
                    message: format!("the CA of MqttCluster {:?} does not exist yet", names.name),
                };
                return finish(ctx, user, Some(&secret_name), Some(blocked), None).await;
            }
            Some(ca) => {
                let issued_for = super::fingerprint(&format!("{username}\0{}", ca.cert_pem));
                let reuse = existing
                    .as_ref()
                    .and_then(|s| s.annotations().get(ANNOTATION_CLIENT_CERT_FOR).cloned())
                    == Some(issued_for.clone());
                let current = previous
                    .get(keys::TLS_CERT)
                    .zip(previous.get(keys::TLS_KEY))
                    .filter(|(cert, _)| {
                        reuse
                            && inspect(cert).is_ok_and(|i| {
                                !i.expires_within(OffsetDateTime::now_utc(), validity / 3)
                            })
                    });
                let (cert, key) = match current {
                    Some((cert, key)) => (cert.clone(), key.clone()),
                    None => {
                        let issued = ca.issue_client(&username, validity)?;
                        (issued.cert_pem, issued.key_pem)
                    }
                };
                certificate_not_after = inspect(&cert).ok().map(|i| i.not_after_rfc3339());
                data.insert(keys::TLS_CERT.into(), cert);
                data.insert(keys::TLS_KEY.into(), key);
                annotations.insert(ANNOTATION_CLIENT_CERT_FOR.to_owned(), issued_for);
            }
        }
    }

    let mut labels = names.labels("credentials");
    labels.insert(LABEL_CLUSTER.into(), names.name.clone());
    labels.insert(LABEL_COMPONENT.into(), "credentials".into());
    let owner = user
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("uid"))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(secret_data(data)),
        ..Default::default()
    };
    apply(&secrets, &secret).await?;
    finish(
        ctx,
        user,
        Some(&secret_name),
        blocked,
        certificate_not_after,
    )
    .await
}

/// The CA that signed the brokers' server certificate, for clients to trust.
async fn server_ca(
    secrets: &Api<Secret>,
    cluster: &MqttCluster,
    names: &ClusterNames,
) -> Result<Option<String>> {
    let Some(tls) = &cluster.spec.tls else {
        return Ok(None);
    };
    let source = match &tls.secret_name {
        Some(own) => own.clone(),
        None if tls.cert_manager.is_some() => names.tls_secret(),
        None => names.ca_secret(),
    };
    Ok(secrets
        .get_opt(&source)
        .await?
        .and_then(|s| secret_strings(&s).remove(keys::CA_CERT)))
}

async fn cluster_ca(
    secrets: &Api<Secret>,
    names: &ClusterNames,
) -> Result<Option<CertificateAuthority>> {
    Ok(secrets.get_opt(&names.ca_secret()).await?.and_then(|s| {
        let mut data = secret_strings(&s);
        Some(CertificateAuthority {
            cert_pem: data.remove(keys::TLS_CERT)?,
            key_pem: data.remove(keys::TLS_KEY)?,
        })
    }))
}

/// Percent-encodes a username for the userinfo part of a URI (RFC 3986 unreserved stay).
fn userinfo(username: &str) -> String {
    username
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn finish(
    ctx: &Context,
    user: &MqttUser,
    secret: Option<&str>,
    blocked: Option<Blocked>,
    certificate_not_after: Option<String>,
) -> Result<Action> {
    let previous = user.status.clone().unwrap_or_default();
    let mut conditions = Conditions::new(&previous.conditions, user.metadata.generation);
    let retry = blocked.is_some();
    match &blocked {
        Some(b) => {
            conditions.set(condition::READY, false, b.reason, b.message.clone());
            conditions.set(condition::DEGRADED, true, b.reason, b.message.clone());
        }
        None => {
            conditions.set(
                condition::READY,
                true,
                "CredentialsReady",
                "credentials Secret is up to date",
            );
            conditions.set(condition::DEGRADED, false, "AsExpected", "");
        }
    }
    conditions.set(condition::PROGRESSING, false, "Settled", "");
    let status = MqttUserStatus {
        observed_generation: user.metadata.generation,
        conditions: conditions.into_vec(),
        username: Some(user.username()),
        credentials_secret: secret.map(str::to_owned).or(previous.credentials_secret),
        certificate_not_after,
    };
    patch_status(&ctx.client, user, user.status.as_ref(), &status).await?;
    // A missing cluster or Secret shows up through the watches; the requeue is a backstop.
    Ok(Action::requeue(if retry {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(600)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_percent_encoded_in_uris() {
        assert_eq!(userinfo("alice"), "alice");
        assert_eq!(userinfo("a@b/c"), "a%40b%2Fc");
        assert_eq!(userinfo("ü"), "%C3%BC");
    }
}
