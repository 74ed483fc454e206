//! The `MqttUser` reconciler: makes sure the user's credentials Secret holds a username, a
//! password (generated once, or copied from the user's own Secret so that changing that Secret
//! rotates it), the CA clients trust, a URI per listener and, when asked for, a client certificate
//! from the cluster's CA. The cluster reconciler turns these Secrets into the users file.
//!
//! validate → fetch (the cluster, its users, the Secrets) → what blocks the user → password and
//! client certificate → render and apply the credentials Secret → status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use time::OffsetDateTime;

use super::apply::{apply, patch_status, read_secret, secret_strings};
use super::cluster::{authority_of, users_of};
use super::context::Context;
use super::error::{Error, Result};
use super::passwords::random_token;
use super::{Outcome, finish, rejected_conditions, report_invalid};
use crate::crd::{Conditions, MqttCluster, MqttUser, MqttUserStatus, condition};
use crate::render::fingerprint;
use crate::render::names::{ANNOTATION_CLIENT_CERT_FOR, keys};
use crate::render::secrets::{ClientCertificate, Credentials, credentials_secret};
use crate::tls::{CertificateAuthority, inspect};
use crate::validate::{InvalidSpec, ValidatedUser, validate_user};

/// How soon a blocked user is looked at again; the watches usually notice the fix first.
const BLOCKED_RETRY: Duration = Duration::from_secs(30);
/// How often a working user is looked at again (the server CA in its Secret, its certificate).
const RESYNC: Duration = Duration::from_secs(600);

pub async fn reconcile(user: Arc<MqttUser>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&user, &ctx).await;
    finish(&ctx, "user", &*user, started, result)
}

async fn reconcile_inner(object: &MqttUser, ctx: &Context) -> Result<Outcome> {
    let user = match validate_user(object) {
        Ok(user) => user,
        Err(invalid) => return reject(ctx, object, invalid).await,
    };
    let existing = fetch(ctx, &user).await?;
    let Some(cluster) = &existing.cluster else {
        return update_status(ctx, object, None, Some(cluster_not_found(object)), None).await;
    };
    if let Some(blocked) = blocked(object, &user, &existing) {
        return update_status(ctx, object, None, Some(blocked), None).await;
    }
    let secret_name = Some(user.credentials_secret.as_str());
    if user.client_certificate.is_some() && existing.cluster_ca.is_none() {
        let blocked = waiting_for_ca(&user);
        return update_status(ctx, object, secret_name, Some(blocked), None).await;
    }
    let password = password(&user, &existing);
    let certificate = client_certificate(&user, &existing)?;
    apply_credentials(
        ctx,
        &user,
        cluster,
        &existing,
        &password,
        certificate.as_ref(),
    )
    .await?;
    let not_after = certificate.as_ref().and_then(|c| c.not_after.clone());
    update_status(ctx, object, secret_name, password.err(), not_after).await
}

/// A condition that keeps the user from working.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blocked {
    reason: &'static str,
    message: String,
}

/// What exists for one user. Everything but the cluster stays empty while the cluster is missing.
#[derive(Debug, Default)]
struct Existing {
    cluster: Option<MqttCluster>,
    /// The first `MqttUser` of the cluster, by creation, that claims the same username.
    first_with_username: Option<MqttUser>,
    /// The credentials Secret as it is.
    credentials: Option<Secret>,
    /// The Secret named by `spec.passwordFrom`.
    password_source: Option<Secret>,
    /// The CA that signed the brokers' server certificate, for clients to trust.
    server_ca: Option<String>,
    /// The cluster's CA, which issues client certificates (read only when one is asked for).
    cluster_ca: Option<CertificateAuthority>,
}

async fn fetch(ctx: &Context, user: &ValidatedUser<'_>) -> Result<Existing> {
    let namespace = &user.cluster.namespace;
    let clusters: Api<MqttCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let name = &user.cluster.name;
    let cluster = clusters
        .get_opt(name)
        .await
        .map_err(|source| Error::ReadCluster {
            name: name.clone(),
            source,
        })?;
    let Some(cluster) = cluster else {
        return Ok(Existing::default());
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let first_with_username = users_of(ctx, &user.cluster)
        .await?
        .into_iter()
        .find(|u| u.username() == user.username);
    let password_source = match user.password_from {
        Some(from) => read_secret(&secrets, from.name.clone()).await?,
        None => None,
    };
    let cluster_ca = match user.client_certificate {
        Some(_) => read_secret(&secrets, user.cluster.ca_secret())
            .await?
            .as_ref()
            .and_then(authority_of),
        None => None,
    };
    Ok(Existing {
        first_with_username,
        credentials: read_secret(&secrets, user.credentials_secret.clone()).await?,
        password_source,
        server_ca: server_ca(&secrets, &cluster, user).await?,
        cluster_ca,
        cluster: Some(cluster),
    })
}

/// The CA that signed the brokers' server certificate, for clients to trust.
async fn server_ca(
    secrets: &Api<Secret>,
    cluster: &MqttCluster,
    user: &ValidatedUser<'_>,
) -> Result<Option<String>> {
    let Some(tls) = &cluster.spec.tls else {
        return Ok(None);
    };
    let source = match &tls.secret_name {
        Some(own) => own.clone(),
        None if tls.cert_manager.is_some() => user.cluster.tls_secret(),
        None => user.cluster.ca_secret(),
    };
    Ok(read_secret(secrets, source)
        .await?
        .and_then(|s| secret_strings(&s).remove(keys::CA_CERT)))
}

/// An invalid user: `Ready=False` with the field in the message and a Warning event; its Secret
/// is left as it is until the user changes.
async fn reject(ctx: &Context, object: &MqttUser, invalid: InvalidSpec) -> Result<Outcome> {
    report_invalid(ctx, object, &invalid).await;
    let previous = object.status.clone().unwrap_or_default();
    let generation = object.metadata.generation;
    let status = MqttUserStatus {
        observed_generation: generation,
        conditions: rejected_conditions(&previous.conditions, generation, &invalid),
        ..previous
    };
    patch_status(&ctx.client, object, object.status.as_ref(), &status).await?;
    Ok(Outcome::Rejected(invalid))
}

fn cluster_not_found(object: &MqttUser) -> Blocked {
    Blocked {
        reason: "ClusterNotFound",
        message: format!(
            "spec.clusterRef: MqttCluster {:?} does not exist",
            object.spec.cluster_ref.name
        ),
    }
}

/// What keeps this user from having credentials at all: another user's claim on the username
/// (the first `MqttUser` to claim it keeps it), or a Secret of that name someone else owns.
fn blocked(object: &MqttUser, user: &ValidatedUser<'_>, existing: &Existing) -> Option<Blocked> {
    if let Some(first) = existing
        .first_with_username
        .as_ref()
        .filter(|u| u.metadata.uid != object.metadata.uid)
    {
        return Some(Blocked {
            reason: "UsernameTaken",
            message: format!(
                "username {:?} already belongs to MqttUser {:?}",
                user.username,
                first.name_any()
            ),
        });
    }
    let ours = |secret: &Secret| {
        secret
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == object.metadata.uid.as_ref())
    };
    if existing.credentials.as_ref().is_some_and(|s| !ours(s)) {
        return Some(Blocked {
            reason: "SecretConflict",
            message: format!(
                "spec.credentialsSecret: Secret {:?} exists and does not belong to this MqttUser",
                user.credentials_secret
            ),
        });
    }
    None
}

fn waiting_for_ca(user: &ValidatedUser<'_>) -> Blocked {
    Blocked {
        reason: "WaitingForCluster",
        message: format!(
            "the CA of MqttCluster {:?} does not exist yet",
            user.cluster.name
        ),
    }
}

/// The password: from the user's own Secret (blocked while that Secret or key is missing), or the
/// one generated before, or a new one.
fn password(user: &ValidatedUser<'_>, existing: &Existing) -> Result<String, Blocked> {
    let Some(reference) = user.password_from else {
        let previous = existing.credentials.as_ref().map(secret_strings);
        return Ok(previous
            .and_then(|mut data| data.remove("password"))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(random_token));
    };
    let Some(secret) = &existing.password_source else {
        return Err(Blocked {
            reason: "PasswordSecretNotFound",
            message: format!(
                "spec.passwordFrom: Secret {:?} does not exist",
                reference.name
            ),
        });
    };
    match secret_strings(secret).remove(&reference.key) {
        Some(password) if !password.is_empty() => Ok(password),
        _ => Err(Blocked {
            reason: "PasswordKeyNotFound",
            message: format!(
                "spec.passwordFrom: Secret {:?} has no non-empty UTF-8 key {:?}",
                reference.name, reference.key
            ),
        }),
    }
}

/// A client certificate and key with what they were issued for.
#[derive(Debug, Clone)]
struct IssuedClientCertificate {
    cert_pem: String,
    key_pem: String,
    issued_for: String,
    not_after: Option<String>,
}

/// The client certificate, when one is asked for: the one in the credentials Secret while it was
/// issued for this username and CA and has more than a third of its validity left, else a new one.
fn client_certificate(
    user: &ValidatedUser<'_>,
    existing: &Existing,
) -> Result<Option<IssuedClientCertificate>> {
    let (Some(validity), Some(ca)) = (user.client_certificate, &existing.cluster_ca) else {
        return Ok(None);
    };
    let issued_for = fingerprint(&format!("{}\0{}", user.username, ca.cert_pem));
    let current = existing.credentials.as_ref().and_then(|secret| {
        let reuse = secret.annotations().get(ANNOTATION_CLIENT_CERT_FOR) == Some(&issued_for);
        let mut data = secret_strings(secret);
        let (cert, key) = (data.remove(keys::TLS_CERT)?, data.remove(keys::TLS_KEY)?);
        let fresh = inspect(&cert)
            .is_ok_and(|i| !i.expires_within(OffsetDateTime::now_utc(), validity / 3));
        (reuse && fresh).then_some((cert, key))
    });
    let (cert_pem, key_pem) = match current {
        Some(pair) => pair,
        None => {
            let issued = ca
                .issue_client(&user.username, validity)
                .map_err(Error::IssueClientCertificate)?;
            (issued.cert_pem, issued.key_pem)
        }
    };
    let not_after = inspect(&cert_pem).ok().map(|i| i.not_after_rfc3339());
    Ok(Some(IssuedClientCertificate {
        cert_pem,
        key_pem,
        issued_for,
        not_after,
    }))
}

/// Renders and applies the credentials Secret (without `password` while it cannot be had).
async fn apply_credentials(
    ctx: &Context,
    user: &ValidatedUser<'_>,
    cluster: &MqttCluster,
    existing: &Existing,
    password: &Result<String, Blocked>,
    certificate: Option<&IssuedClientCertificate>,
) -> Result<()> {
    let secret = credentials_secret(&Credentials {
        cluster: &user.cluster,
        secret_name: &user.credentials_secret,
        owner: user.owner.clone(),
        username: &user.username,
        password: password.as_ref().ok().map(String::as_str),
        server_ca: existing.server_ca.as_deref(),
        listeners: &cluster.spec.listeners,
        cluster_domain: &ctx.settings.cluster_domain,
        client_certificate: certificate.map(|c| ClientCertificate {
            cert_pem: &c.cert_pem,
            key_pem: &c.key_pem,
            issued_for: &c.issued_for,
        }),
    });
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &user.cluster.namespace);
    apply(&secrets, &secret)
        .await
        .map_err(Error::ApplyCredentialsSecret)?;
    Ok(())
}

/// Writes the status; a blocked user is looked at again sooner.
async fn update_status(
    ctx: &Context,
    user: &MqttUser,
    secret: Option<&str>,
    blocked: Option<Blocked>,
    certificate_not_after: Option<String>,
) -> Result<Outcome> {
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
    let next = if retry { BLOCKED_RETRY } else { RESYNC };
    Ok(Outcome::Reconciled(Action::requeue(next)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::secrets::secret_data;
    use crate::validate::validate_user;
    use std::collections::BTreeMap;

    fn user(spec: &str) -> MqttUser {
        serde_yaml::from_str(&format!(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttUser\nmetadata: {{name: alice, namespace: iot, uid: u1}}\nspec: {spec}\n"
        ))
        .unwrap()
    }

    fn secret(owner_uid: &str, pairs: &[(&str, &str)]) -> Secret {
        let mut secret = Secret {
            data: Some(secret_data(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )),
            ..Default::default()
        };
        secret.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                uid: owner_uid.into(),
                ..Default::default()
            },
        ]);
        secret
    }

    #[test]
    fn a_generated_password_is_kept_and_one_from_a_secret_is_copied() {
        let plain = user("{clusterRef: {name: demo}}");
        let valid = validate_user(&plain).unwrap();
        let mut existing = Existing::default();
        let generated = password(&valid, &existing).unwrap();
        assert_eq!(generated.len(), 32);
        existing.credentials = Some(secret("u1", &[("password", "kept")]));
        assert_eq!(password(&valid, &existing).unwrap(), "kept");

        let own =
            user("{clusterRef: {name: demo}, passwordFrom: {secretKeyRef: {name: pw, key: k}}}");
        let valid = validate_user(&own).unwrap();
        assert_eq!(
            password(&valid, &existing).unwrap_err().reason,
            "PasswordSecretNotFound"
        );
        existing.password_source = Some(secret("x", &[("other", "v")]));
        assert_eq!(
            password(&valid, &existing).unwrap_err().reason,
            "PasswordKeyNotFound"
        );
        existing.password_source = Some(secret("x", &[("k", "from-secret")]));
        assert_eq!(password(&valid, &existing).unwrap(), "from-secret");
    }

    #[test]
    fn a_taken_username_or_a_foreign_secret_blocks_the_user() {
        let alice = user("{clusterRef: {name: demo}}");
        let valid = validate_user(&alice).unwrap();
        let mut existing = Existing {
            first_with_username: Some(alice.clone()),
            credentials: Some(secret("u1", &[])),
            ..Default::default()
        };
        assert_eq!(blocked(&alice, &valid, &existing), None);
        let mut older = alice.clone();
        older.metadata.uid = Some("u0".into());
        older.metadata.name = Some("alice-old".into());
        existing.first_with_username = Some(older);
        assert_eq!(
            blocked(&alice, &valid, &existing).unwrap().reason,
            "UsernameTaken"
        );
        existing.first_with_username = None;
        existing.credentials = Some(secret("someone-else", &[]));
        assert_eq!(
            blocked(&alice, &valid, &existing).unwrap().reason,
            "SecretConflict"
        );
    }

    #[test]
    fn a_client_certificate_is_reused_for_the_same_username_and_ca() {
        let gateway = user("{clusterRef: {name: demo}, clientCertificate: {validity: 24h}}");
        let valid = validate_user(&gateway).unwrap();
        let ca = CertificateAuthority::generate("ca").unwrap();
        let mut existing = Existing {
            cluster_ca: Some(ca.clone()),
            ..Default::default()
        };
        let first = client_certificate(&valid, &existing).unwrap().unwrap();
        assert_eq!(inspect(&first.cert_pem).unwrap().common_name, "alice");
        let mut stored = secret(
            "u1",
            &[
                (keys::TLS_CERT, &first.cert_pem),
                (keys::TLS_KEY, &first.key_pem),
            ],
        );
        stored.metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_CLIENT_CERT_FOR.to_owned(),
            first.issued_for.clone(),
        )]));
        existing.credentials = Some(stored);
        let again = client_certificate(&valid, &existing).unwrap().unwrap();
        assert_eq!(again.cert_pem, first.cert_pem);
        existing.cluster_ca = Some(CertificateAuthority::generate("new ca").unwrap());
        let reissued = client_certificate(&valid, &existing).unwrap().unwrap();
        assert_ne!(reissued.cert_pem, first.cert_pem);
        assert_ne!(reissued.issued_for, first.issued_for);
    }
}
