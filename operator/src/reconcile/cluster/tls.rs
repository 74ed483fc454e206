//! The cluster's CA, server certificate and peer certificate: the CA created once, the certificates
//! reissued when their names or the CA change or when they near expiry. Clients stay connected
//! through a renewal: the broker reloads the server certificate when kubelet refreshes the Secret
//! volume and keeps open connections; it reads the peer certificate again for every new peer link,
//! and links already up stay up.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::crd::MqttCluster;
use crate::reconcile::apply::{apply, secret_strings};
use crate::reconcile::context::Context;
use crate::reconcile::error::{Error, Result};
use crate::render::hex;
use crate::render::names::{ANNOTATION_ISSUED_FOR, keys};
use crate::render::secrets::{IssuedFiles, ca_secret, peer_tls_secret, tls_secret};
use crate::tls::{CertificateAuthority, CertificateInfo, inspect};
use crate::validate::ValidatedCluster;

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

/// What the reconcile learned about the peer certificate.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate {
    /// When the operator will reissue it.
    pub renew_in: Option<Duration>,
    /// The expiry of a certificate issued in this reconcile; `None` when the one in place stays.
    pub issued: Option<String>,
}

/// The CA in a `NAME-ca` Secret, when it holds a certificate and a key.
pub fn authority_of(secret: &Secret) -> Option<CertificateAuthority> {
    let mut data = secret_strings(secret);
    Some(CertificateAuthority {
        cert_pem: data.remove(keys::TLS_CERT)?,
        key_pem: data.remove(keys::TLS_KEY)?,
    })
}

/// The cluster's CA from `existing`, or a new one in a Secret created (rather than applied) so
/// that two operator replicas racing at start-up cannot each make a different CA. The flag says
/// whether it was made now.
pub async fn ensure_ca(
    ctx: &Context,
    cluster: &ValidatedCluster<'_>,
    existing: Option<&Secret>,
) -> Result<(CertificateAuthority, bool)> {
    if let Some(ca) = existing.and_then(authority_of) {
        return Ok((ca, false));
    }
    let names = &cluster.names;
    let ca = CertificateAuthority::generate(&format!("Tern CA {}/{}", names.namespace, names.name))
        .map_err(Error::GenerateCa)?;
    let secret = ca_secret(names, cluster.owner.clone(), &ca.cert_pem, &ca.key_pem);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok((ca, true)),
        // Someone else was faster (another replica, or a broken Secret we must not overwrite
        // blindly): the next reconcile reads theirs.
        Err(kube::Error::Api(status)) if status.code == 409 => Err(Error::CaSecretConflict),
        Err(error) => Err(Error::CreateCaSecret(error)),
    }
}

/// Keeps the operator-managed server certificate in `NAME-tls` (`existing`) while it was issued
/// for these names and this CA and is not due for renewal; issues and applies a new one otherwise.
pub async fn ensure_managed_certificate(
    ctx: &Context,
    cluster: &ValidatedCluster<'_>,
    existing: Option<&Secret>,
    ca: &CertificateAuthority,
    hostnames: &[String],
    (validity, renew_before): (Duration, Duration),
) -> Result<ServerTls> {
    let names = &cluster.names;
    let issued_for = issued_for(hostnames, &ca.cert_pem);
    let now = OffsetDateTime::now_utc();
    if let Some(info) = reusable(existing, &issued_for, now, renew_before) {
        return Ok(ServerTls {
            secret: Some(names.tls_secret()),
            not_after: Some(info.not_after_rfc3339()),
            renew_in: renew_in(&info, now, renew_before),
            ca_secret: Some(names.ca_secret()),
            ..Default::default()
        });
    }
    let leaf = ca
        .issue_server(&names.name, hostnames, validity)
        .map_err(Error::IssueServerCertificate)?;
    let info = inspect(&leaf.cert_pem).map_err(Error::IssueServerCertificate)?;
    let secret = tls_secret(
        names,
        cluster.owner.clone(),
        IssuedFiles {
            cert_pem: &leaf.cert_pem,
            key_pem: &leaf.key_pem,
            ca_pem: &ca.cert_pem,
            issued_for: &issued_for,
        },
    );
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    apply(&secrets, &secret)
        .await
        .map_err(Error::ApplyTlsSecret)?;
    Ok(ServerTls {
        secret: Some(names.tls_secret()),
        not_after: Some(info.not_after_rfc3339()),
        renew_in: Some(validity.saturating_sub(renew_before)),
        issued: true,
        ca_secret: Some(names.ca_secret()),
        ..Default::default()
    })
}

/// Keeps the peer certificate in `NAME-peer-tls` (`existing`) while it was issued for the
/// cluster's name and this CA and is not due for renewal; issues and applies a new one otherwise.
/// It is renewed on the schedule of a managed server certificate
/// ([`ValidatedCluster::peer_certificate_durations`]), whatever the server certificate's source:
/// the brokers' mutual TLS never depends on a certificate the operator does not control.
pub async fn ensure_peer_certificate(
    ctx: &Context,
    cluster: &ValidatedCluster<'_>,
    existing: Option<&Secret>,
    ca: &CertificateAuthority,
) -> Result<PeerCertificate> {
    let names = &cluster.names;
    let (validity, renew_before) = cluster.peer_certificate_durations();
    let cluster_name = names.cluster_name();
    let issued_for = issued_for(std::slice::from_ref(&cluster_name), &ca.cert_pem);
    let now = OffsetDateTime::now_utc();
    if let Some(info) = reusable(existing, &issued_for, now, renew_before) {
        return Ok(PeerCertificate {
            renew_in: renew_in(&info, now, renew_before),
            issued: None,
        });
    }
    let leaf = ca
        .issue_peer(&cluster_name, validity)
        .map_err(Error::IssuePeerCertificate)?;
    let info = inspect(&leaf.cert_pem).map_err(Error::IssuePeerCertificate)?;
    let secret = peer_tls_secret(
        names,
        cluster.owner.clone(),
        IssuedFiles {
            cert_pem: &leaf.cert_pem,
            key_pem: &leaf.key_pem,
            ca_pem: &ca.cert_pem,
            issued_for: &issued_for,
        },
    );
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    apply(&secrets, &secret)
        .await
        .map_err(Error::ApplyPeerTlsSecret)?;
    Ok(PeerCertificate {
        renew_in: Some(validity.saturating_sub(renew_before)),
        issued: Some(info.not_after_rfc3339()),
    })
}

/// How long until a certificate with `info` is due for renewal, `renew_before` ahead of its end.
fn renew_in(
    info: &CertificateInfo,
    now: OffsetDateTime,
    renew_before: Duration,
) -> Option<Duration> {
    (info.not_after - now)
        .checked_sub(time::Duration::try_from(renew_before).unwrap_or_default())
        .and_then(|d| Duration::try_from(d).ok())
}

/// The certificate in `secret`, when it was issued for `issued_for` and has more than
/// `renew_before` left at `now`.
fn reusable(
    secret: Option<&Secret>,
    issued_for: &str,
    now: OffsetDateTime,
    renew_before: Duration,
) -> Option<CertificateInfo> {
    let secret = secret?;
    let same_request = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_ISSUED_FOR))
        .is_some_and(|a| a == issued_for);
    let data = secret_strings(secret);
    if !same_request || !data.contains_key(keys::TLS_KEY) {
        return None;
    }
    inspect(data.get(keys::TLS_CERT)?)
        .ok()
        .filter(|info| !info.expires_within(now, renew_before))
}

/// What a Secret the user provides (`secret`, read under `name`) says about the certificate.
pub fn check_tls_secret(name: &str, secret: Option<&Secret>) -> ServerTls {
    let Some(secret) = secret else {
        return ServerTls {
            secret: Some(name.to_owned()),
            problem: Some((
                "TlsSecretNotFound",
                format!("spec.tls.secretName: Secret {name:?} does not exist"),
            )),
            ..Default::default()
        };
    };
    let data = secret_strings(secret);
    let problem = match (data.get(keys::TLS_CERT), data.get(keys::TLS_KEY)) {
        (Some(cert), Some(_)) => match inspect(cert) {
            Ok(info) => {
                return ServerTls {
                    secret: Some(name.to_owned()),
                    not_after: Some(info.not_after_rfc3339()),
                    ca_secret: data.contains_key(keys::CA_CERT).then(|| name.to_owned()),
                    ..Default::default()
                };
            }
            Err(e) => format!("spec.tls.secretName: Secret {name:?}: tls.crt: {e}"),
        },
        _ => format!("spec.tls.secretName: Secret {name:?} lacks tls.crt or tls.key"),
    };
    ServerTls {
        secret: Some(name.to_owned()),
        problem: Some(("InvalidTlsSecret", problem)),
        ..Default::default()
    }
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

/// A digest of what a certificate must say (its names and its CA): a change reissues it.
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
    use crate::render::names::ClusterNames;

    const HOUR: Duration = Duration::from_secs(3600);

    fn issued_secret(ca: &CertificateAuthority, hosts: &[String], validity: Duration) -> Secret {
        let leaf = ca.issue_server("demo", hosts, validity).unwrap();
        tls_secret(
            &ClusterNames::new("demo", "iot"),
            Default::default(),
            IssuedFiles {
                cert_pem: &leaf.cert_pem,
                key_pem: &leaf.key_pem,
                ca_pem: &ca.cert_pem,
                issued_for: &issued_for(hosts, &ca.cert_pem),
            },
        )
    }

    #[test]
    fn a_certificate_is_kept_until_its_names_ca_or_renewal_time_change() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let hosts = vec!["demo.iot.svc".to_owned()];
        let secret = issued_secret(&ca, &hosts, 10 * HOUR);
        let now = OffsetDateTime::now_utc();
        let digest = issued_for(&hosts, &ca.cert_pem);
        assert!(reusable(Some(&secret), &digest, now, HOUR).is_some());
        assert!(reusable(None, &digest, now, HOUR).is_none());
        let more_names = issued_for(&["demo.iot.svc".into(), "x.example".into()], &ca.cert_pem);
        assert!(reusable(Some(&secret), &more_names, now, HOUR).is_none());
        let other_ca = CertificateAuthority::generate("other").unwrap();
        assert!(
            reusable(
                Some(&secret),
                &issued_for(&hosts, &other_ca.cert_pem),
                now,
                HOUR
            )
            .is_none()
        );
        assert!(
            reusable(Some(&secret), &digest, now, 11 * HOUR).is_none(),
            "due for renewal"
        );
    }

    #[test]
    fn renewal_is_due_renew_before_the_end() {
        let ca = CertificateAuthority::generate("ca").unwrap();
        let leaf = ca.issue_peer("iot.demo", 10 * HOUR).unwrap();
        let info = inspect(&leaf.cert_pem).unwrap();
        let now = OffsetDateTime::now_utc();
        let due = renew_in(&info, now, 4 * HOUR).unwrap();
        assert!(
            due <= 6 * HOUR && due > 6 * HOUR - Duration::from_secs(60),
            "{due:?}"
        );
        assert_eq!(renew_in(&info, now, 11 * HOUR), None, "overdue");
    }

    #[test]
    fn a_users_secret_is_checked_for_a_readable_certificate_and_key() {
        let missing = check_tls_secret("my-tls", None);
        assert_eq!(missing.problem.unwrap().0, "TlsSecretNotFound");
        assert_eq!(missing.secret.as_deref(), Some("my-tls"));
        let ca = CertificateAuthority::generate("ca").unwrap();
        let good = check_tls_secret("my-tls", Some(&issued_secret(&ca, &["a.b".into()], HOUR)));
        assert!(good.problem.is_none() && good.not_after.is_some());
        assert_eq!(good.ca_secret.as_deref(), Some("my-tls"));
        let mut broken = issued_secret(&ca, &["a.b".into()], HOUR);
        broken.data.as_mut().unwrap().remove(keys::TLS_KEY);
        assert_eq!(
            check_tls_secret("my-tls", Some(&broken)).problem.unwrap().0,
            "InvalidTlsSecret"
        );
    }
}
