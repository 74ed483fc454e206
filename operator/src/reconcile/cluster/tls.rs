//! The cluster's CA and server certificate: created once, reissued when the names or the CA
//! change or when the certificate nears expiry. Clients stay connected through a renewal: the
//! broker reloads the files when kubelet refreshes the Secret volume and keeps open connections.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::super::apply::{apply, secret_data, secret_strings};
use super::super::error::{Error, Result};
use super::super::hex;
use crate::crd::{ManagedTls, MqttCluster};
use crate::render::names::{ANNOTATION_ISSUED_FOR, ClusterNames, keys};
use crate::tls::{CertificateAuthority, inspect};

const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// What the reconcile learned about the server certificate.
#[derive(Debug, Clone, Default)]
pub struct ServerTls {
    /// The Secret the pods mount (`tls.crt`, `tls.key`).
    pub secret: Option<String>,
    /// Expiry of the current certificate, when known.
    pub not_after: Option<String>,
    /// When the operator will reissue it.
    pub renew_in: Option<Duration>,
    /// Something keeps TLS from working; for the Degraded condition.
    pub problem: Option<(&'static str, String)>,
    /// The certificate was (re)issued in this reconcile.
    pub issued: bool,
    /// The Secret whose `ca.crt` clients trust, when there is one.
    pub ca_secret: Option<String>,
}

/// Reads the cluster's CA, creating it on first use. Created rather than applied so two
/// operator replicas racing at start-up cannot each make a different CA.
pub async fn ensure_ca(
    secrets: &Api<Secret>,
    names: &ClusterNames,
    owner: &OwnerReference,
) -> Result<(CertificateAuthority, bool)> {
    if let Some(existing) = secrets.get_opt(&names.ca_secret()).await? {
        let data = secret_strings(&existing);
        if let (Some(cert), Some(key)) = (data.get(keys::TLS_CERT), data.get(keys::TLS_KEY)) {
            return Ok((
                CertificateAuthority {
                    cert_pem: cert.clone(),
                    key_pem: key.clone(),
                },
                false,
            ));
        }
    }
    let ca =
        CertificateAuthority::generate(&format!("Tern CA {}/{}", names.namespace, names.name))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(names.ca_secret()),
            namespace: Some(names.namespace.clone()),
            labels: Some(names.labels("tls")),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(secret_data(BTreeMap::from([
            (keys::TLS_CERT.into(), ca.cert_pem.clone()),
            (keys::TLS_KEY.into(), ca.key_pem.clone()),
            (keys::CA_CERT.into(), ca.cert_pem.clone()),
        ]))),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok((ca, true)),
        // Someone else was faster (another replica, or a broken Secret we must not overwrite
        // blindly): the next reconcile reads theirs.
        Err(kube::Error::Api(status)) if status.code == 409 => Err(Error::Render(
            "the CA Secret changed while it was being created".into(),
        )),
        Err(error) => Err(error.into()),
    }
}

/// Durations of the managed certificate from the spec.
pub fn managed_durations(
    managed: &ManagedTls,
) -> std::result::Result<(Duration, Duration), String> {
    let validity = match &managed.validity {
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| format!("spec.tls.managed.validity: {e}"))?,
        None => DEFAULT_VALIDITY,
    };
    let renew_before = match &managed.renew_before {
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| format!("spec.tls.managed.renewBefore: {e}"))?,
        None => validity / 3,
    };
    if renew_before >= validity {
        return Err("spec.tls.managed.renewBefore must be shorter than validity".into());
    }
    Ok((validity, renew_before))
}

/// Issues or keeps the operator-managed server certificate in `NAME-tls`.
pub async fn ensure_managed_certificate(
    secrets: &Api<Secret>,
    names: &ClusterNames,
    owner: &OwnerReference,
    ca: &CertificateAuthority,
    hostnames: &[String],
    managed: &ManagedTls,
) -> Result<ServerTls> {
    let (validity, renew_before) = match managed_durations(managed) {
        Ok(durations) => durations,
        Err(message) => {
            return Ok(ServerTls {
                problem: Some(("InvalidTls", message)),
                ..Default::default()
            });
        }
    };
    let issued_for = issued_for(hostnames, &ca.cert_pem);
    let now = OffsetDateTime::now_utc();
    let current = secrets.get_opt(&names.tls_secret()).await?;
    if let Some(secret) = &current {
        let same_request = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_ISSUED_FOR))
            == Some(&issued_for);
        let data = secret_strings(secret);
        if let (true, Some(cert), Some(_)) = (
            same_request,
            data.get(keys::TLS_CERT),
            data.get(keys::TLS_KEY),
        ) && let Ok(info) = inspect(cert)
            && !info.expires_within(now, renew_before)
        {
            let left = info.not_after - now;
            let renew_in = left
                .checked_sub(time::Duration::try_from(renew_before).unwrap_or_default())
                .and_then(|d| Duration::try_from(d).ok());
            return Ok(ServerTls {
                secret: Some(names.tls_secret()),
                not_after: Some(info.not_after_rfc3339()),
                renew_in,
                ca_secret: Some(names.ca_secret()),
                ..Default::default()
            });
        }
    }
    let leaf = ca.issue_server(&names.name, hostnames, validity)?;
    let info = inspect(&leaf.cert_pem)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(names.tls_secret()),
            namespace: Some(names.namespace.clone()),
            labels: Some(names.labels("tls")),
            annotations: Some(BTreeMap::from([(ANNOTATION_ISSUED_FOR.into(), issued_for)])),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(secret_data(BTreeMap::from([
            (keys::TLS_CERT.into(), leaf.cert_pem),
            (keys::TLS_KEY.into(), leaf.key_pem),
            (keys::CA_CERT.into(), ca.cert_pem.clone()),
        ]))),
        ..Default::default()
    };
    apply(secrets, &secret).await?;
    Ok(ServerTls {
        secret: Some(names.tls_secret()),
        not_after: Some(info.not_after_rfc3339()),
        renew_in: Some(validity.saturating_sub(renew_before)),
        issued: true,
        ca_secret: Some(names.ca_secret()),
        ..Default::default()
    })
}

/// Checks a Secret the user provides.
pub async fn check_user_secret(secrets: &Api<Secret>, name: &str) -> Result<ServerTls> {
    let Some(secret) = secrets.get_opt(name).await? else {
        return Ok(ServerTls {
            secret: Some(name.to_owned()),
            problem: Some((
                "TlsSecretNotFound",
                format!("spec.tls.secretName: Secret {name:?} does not exist"),
            )),
            ..Default::default()
        });
    };
    let data = secret_strings(&secret);
    let problem = match (data.get(keys::TLS_CERT), data.get(keys::TLS_KEY)) {
        (Some(cert), Some(_)) => match inspect(cert) {
            Ok(info) => {
                return Ok(ServerTls {
                    secret: Some(name.to_owned()),
                    not_after: Some(info.not_after_rfc3339()),
                    ca_secret: data.contains_key(keys::CA_CERT).then(|| name.to_owned()),
                    ..Default::default()
                });
            }
            Err(e) => format!("spec.tls.secretName: Secret {name:?}: tls.crt: {e}"),
        },
        _ => format!("spec.tls.secretName: Secret {name:?} lacks tls.crt or tls.key"),
    };
    Ok(ServerTls {
        secret: Some(name.to_owned()),
        problem: Some(("InvalidTlsSecret", problem)),
        ..Default::default()
    })
}

/// The clusters whose `spec.tls.secretName` is `secret`: a change to a user's own TLS Secret
/// updates their status (certificate expiry, and through it the CA in users' credentials).
pub fn clusters_using_secret(
    clusters: &Store<MqttCluster>,
    secret: &Secret,
) -> Vec<ObjectRef<MqttCluster>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
    clusters
        .state()
        .into_iter()
        .filter(|c| c.namespace() == namespace)
        .filter(|c| c.spec.tls.as_ref().and_then(|t| t.secret_name.as_ref()) == Some(&name))
        .map(|c| ObjectRef::from_obj(&*c))
        .collect()
}

/// A digest of what a server certificate must say: a change reissues it.
fn issued_for(hostnames: &[String], ca_pem: &str) -> String {
    let mut digest = Sha256::new();
    for name in hostnames {
        digest.update(name.as_bytes());
        digest.update([0]);
    }
    digest.update(ca_pem.as_bytes());
    hex(&digest.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_default_and_refuse_nonsense() {
        let (validity, renew) = managed_durations(&ManagedTls::default()).unwrap();
        assert_eq!(validity, DEFAULT_VALIDITY);
        assert_eq!(renew, DEFAULT_VALIDITY / 3);
        let short = ManagedTls {
            validity: Some("1h".into()),
            renew_before: Some("2h".into()),
        };
        assert!(
            managed_durations(&short)
                .unwrap_err()
                .contains("renewBefore")
        );
    }
}
