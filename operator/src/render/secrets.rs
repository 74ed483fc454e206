//! The Secrets a cluster and its users get: the admin API token, the CA, the server certificate,
//! the brokers' peer certificate, the rendered users and ACL files, and each user's credentials. What goes in them (tokens, keys,
//! certificates, hashes) is made by the reconcilers; these functions only lay the objects out.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::names::{
    ANNOTATION_CLIENT_CERT_FOR, ANNOTATION_ISSUED_FOR, ClusterNames, LABEL_CLUSTER,
    LABEL_COMPONENT, keys,
};
use crate::crd::ListenerSpec;

const TLS_TYPE: &str = "kubernetes.io/tls";

/// `NAME-admin`: the token the brokers' admin API accepts.
pub fn admin_secret(names: &ClusterNames, owner: OwnerReference, token: &str) -> Secret {
    secret(
        metadata(names, names.admin_secret(), "admin", owner),
        None,
        [(keys::ADMIN_TOKEN, token)],
    )
}

/// `NAME-ca`: the cluster's CA certificate and key (`ca.crt` repeats the certificate).
pub fn ca_secret(
    names: &ClusterNames,
    owner: OwnerReference,
    cert_pem: &str,
    key_pem: &str,
) -> Secret {
    secret(
        metadata(names, names.ca_secret(), "tls", owner),
        Some(TLS_TYPE),
        [
            (keys::TLS_CERT, cert_pem),
            (keys::TLS_KEY, key_pem),
            (keys::CA_CERT, cert_pem),
        ],
    )
}

/// A certificate the operator issued from the cluster's CA for the brokers (the server or the
/// peer certificate), with its key and the CA's certificate.
#[derive(Debug, Clone, Copy)]
pub struct IssuedFiles<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    pub ca_pem: &'a str,
    /// A digest of the names and CA it was issued for ([`ANNOTATION_ISSUED_FOR`]).
    pub issued_for: &'a str,
}

/// `NAME-tls`: the server certificate the pods mount, with the CA that signed it.
pub fn tls_secret(
    names: &ClusterNames,
    owner: OwnerReference,
    certificate: IssuedFiles<'_>,
) -> Secret {
    let metadata = metadata(names, names.tls_secret(), "tls", owner);
    issued_secret(metadata, certificate)
}

/// `NAME-peer-tls`: the certificate every broker of the cluster presents on peer links, with the
/// CA both ends verify it against. Its own component label: the users' controller follows the
/// CA through `tls` Secrets and has no business with this one.
pub fn peer_tls_secret(
    names: &ClusterNames,
    owner: OwnerReference,
    certificate: IssuedFiles<'_>,
) -> Secret {
    let metadata = metadata(names, names.peer_tls_secret(), "peer-tls", owner);
    issued_secret(metadata, certificate)
}

fn issued_secret(mut metadata: ObjectMeta, certificate: IssuedFiles<'_>) -> Secret {
    metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_ISSUED_FOR.into(),
        certificate.issued_for.into(),
    )]));
    secret(
        metadata,
        Some(TLS_TYPE),
        [
            (keys::TLS_CERT, certificate.cert_pem),
            (keys::TLS_KEY, certificate.key_pem),
            (keys::CA_CERT, certificate.ca_pem),
        ],
    )
}

/// `NAME-auth`: the users file and the ACL file the pods mount.
pub fn auth_secret(names: &ClusterNames, owner: OwnerReference, users: &str, acl: &str) -> Secret {
    secret(
        metadata(names, names.auth_secret(), "auth", owner),
        None,
        [(keys::USERS, users), (keys::ACL, acl)],
    )
}

/// A client certificate issued to a user.
#[derive(Debug, Clone, Copy)]
pub struct ClientCertificate<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    /// A digest of the username and CA it was issued for ([`ANNOTATION_CLIENT_CERT_FOR`]).
    pub issued_for: &'a str,
}

/// What a user's credentials Secret is made of.
#[derive(Debug, Clone)]
pub struct Credentials<'a> {
    /// The names of the user's cluster.
    pub cluster: &'a ClusterNames,
    /// The Secret's name (`spec.credentialsSecret` or `NAME-mqtt-credentials`).
    pub secret_name: &'a str,
    /// The `MqttUser`, which controls the Secret.
    pub owner: OwnerReference,
    pub username: &'a str,
    /// `None` while the password cannot be had (its Secret or key is missing).
    pub password: Option<&'a str>,
    /// The CA that signed the brokers' server certificate, for clients to trust.
    pub server_ca: Option<&'a str>,
    /// The cluster's listeners, one connection URI each.
    pub listeners: &'a [ListenerSpec],
    pub cluster_domain: &'a str,
    pub client_certificate: Option<ClientCertificate<'a>>,
}

/// A user's credentials Secret: `username`, `password`, `ca.crt`, `uri-LISTENER` per listener and,
/// with a client certificate, `tls.crt` and `tls.key`. Labelled with the cluster, so that the
/// cluster's reconciler finds it and a change to it is traced back to the cluster.
pub fn credentials_secret(credentials: &Credentials<'_>) -> Secret {
    let names = credentials.cluster;
    let mut data = BTreeMap::new();
    data.insert("username".to_owned(), credentials.username.to_owned());
    if let Some(password) = credentials.password {
        data.insert("password".into(), password.to_owned());
    }
    if let Some(ca) = credentials.server_ca {
        data.insert(keys::CA_CERT.into(), ca.to_owned());
    }
    let host = names.service_host(credentials.cluster_domain);
    for listener in credentials.listeners {
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
                userinfo(credentials.username),
                listener.port
            ),
        );
    }
    let mut annotations = BTreeMap::new();
    if let Some(certificate) = credentials.client_certificate {
        data.insert(keys::TLS_CERT.into(), certificate.cert_pem.to_owned());
        data.insert(keys::TLS_KEY.into(), certificate.key_pem.to_owned());
        annotations.insert(
            ANNOTATION_CLIENT_CERT_FOR.to_owned(),
            certificate.issued_for.to_owned(),
        );
    }
    let mut labels = names.labels("credentials");
    labels.insert(LABEL_CLUSTER.into(), names.name.clone());
    labels.insert(LABEL_COMPONENT.into(), "credentials".into());
    Secret {
        metadata: ObjectMeta {
            name: Some(credentials.secret_name.to_owned()),
            namespace: Some(names.namespace.clone()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![credentials.owner.clone()]),
            ..Default::default()
        },
        data: Some(secret_data(data)),
        ..Default::default()
    }
}

/// Secret data from strings.
pub fn secret_data(pairs: BTreeMap<String, String>) -> BTreeMap<String, ByteString> {
    pairs
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect()
}

fn metadata(
    names: &ClusterNames,
    name: String,
    component: &str,
    owner: OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(names.labels(component)),
        owner_references: Some(vec![owner]),
        ..Default::default()
    }
}

fn secret<const N: usize>(
    metadata: ObjectMeta,
    type_: Option<&str>,
    pairs: [(&str, &str); N],
) -> Secret {
    Secret {
        metadata,
        type_: type_.map(str::to_owned),
        data: Some(secret_data(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )),
        ..Default::default()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MqttCluster;

    fn text(secret: &Secret, key: &str) -> String {
        String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            uid: "u1".into(),
            controller: Some(true),
            ..Default::default()
        }
    }

    #[test]
    fn usernames_are_percent_encoded_in_uris() {
        assert_eq!(userinfo("alice"), "alice");
        assert_eq!(userinfo("a@b/c"), "a%40b%2Fc");
        assert_eq!(userinfo("ü"), "%C3%BC");
    }

    #[test]
    fn cluster_secrets_are_named_labelled_and_owned() {
        let names = ClusterNames::new("demo", "iot");
        let admin = admin_secret(&names, owner(), "t0ken");
        assert_eq!(admin.metadata.name.as_deref(), Some("demo-admin"));
        assert_eq!(text(&admin, keys::ADMIN_TOKEN), "t0ken");
        assert_eq!(admin.type_, None);
        let ca = ca_secret(&names, owner(), "CERT", "KEY");
        assert_eq!(ca.type_.as_deref(), Some(TLS_TYPE));
        assert_eq!(text(&ca, keys::CA_CERT), "CERT");
        assert_eq!(text(&ca, keys::TLS_KEY), "KEY");
        let tls = tls_secret(
            &names,
            owner(),
            IssuedFiles {
                cert_pem: "LEAF",
                key_pem: "LEAF KEY",
                ca_pem: "CERT",
                issued_for: "digest",
            },
        );
        assert_eq!(tls.metadata.name.as_deref(), Some("demo-tls"));
        assert_eq!(
            tls.metadata.annotations.as_ref().unwrap()[ANNOTATION_ISSUED_FOR],
            "digest"
        );
        assert_eq!(text(&tls, keys::TLS_CERT), "LEAF");
        assert_eq!(text(&tls, keys::CA_CERT), "CERT");
        let peer = peer_tls_secret(
            &names,
            owner(),
            IssuedFiles {
                cert_pem: "PEER",
                key_pem: "PEER KEY",
                ca_pem: "CERT",
                issued_for: "peer digest",
            },
        );
        assert_eq!(peer.metadata.name.as_deref(), Some("demo-peer-tls"));
        assert_eq!(peer.type_.as_deref(), Some(TLS_TYPE));
        assert_eq!(
            peer.metadata.annotations.as_ref().unwrap()[ANNOTATION_ISSUED_FOR],
            "peer digest"
        );
        assert_eq!(
            peer.metadata.labels.as_ref().unwrap()[LABEL_COMPONENT],
            "peer-tls"
        );
        assert_eq!(
            (
                text(&peer, keys::TLS_CERT),
                text(&peer, keys::TLS_KEY),
                text(&peer, keys::CA_CERT)
            ),
            ("PEER".into(), "PEER KEY".into(), "CERT".into())
        );
        let auth = auth_secret(&names, owner(), "USERS", "ACL");
        assert_eq!(auth.metadata.name.as_deref(), Some("demo-auth"));
        assert_eq!(
            (text(&auth, keys::USERS), text(&auth, keys::ACL)),
            ("USERS".into(), "ACL".into())
        );
        for secret in [&admin, &ca, &tls, &peer, &auth] {
            let labels = secret.metadata.labels.as_ref().unwrap();
            assert_eq!(labels[LABEL_CLUSTER], "demo");
            assert_eq!(secret.metadata.namespace.as_deref(), Some("iot"));
            assert_eq!(
                secret.metadata.owner_references.as_ref().unwrap()[0].uid,
                "u1"
            );
        }
    }

    #[test]
    fn credentials_hold_a_uri_per_listener_and_the_certificate_when_there_is_one() {
        let cluster: MqttCluster = serde_yaml::from_str(
            r#"
apiVersion: tern.dev/v1alpha1
kind: MqttCluster
metadata: {name: demo}
spec:
  listeners:
    - {name: mqtts, protocol: tls, port: 8883}
    - {name: ws, protocol: ws, port: 8080}
    - {name: wss, protocol: wss, port: 8443, path: /broker}
  tls: {}
"#,
        )
        .unwrap();
        let names = ClusterNames::new("demo", "iot");
        let mut credentials = Credentials {
            cluster: &names,
            secret_name: "a-creds",
            owner: owner(),
            username: "a@b",
            password: Some("pw"),
            server_ca: Some("CA"),
            listeners: &cluster.spec.listeners,
            cluster_domain: "cluster.local",
            client_certificate: None,
        };
        let secret = credentials_secret(&credentials);
        assert_eq!(secret.metadata.name.as_deref(), Some("a-creds"));
        assert_eq!(secret.metadata.annotations, None);
        assert_eq!(text(&secret, "username"), "a@b");
        assert_eq!(text(&secret, "password"), "pw");
        assert_eq!(text(&secret, keys::CA_CERT), "CA");
        assert_eq!(
            text(&secret, "uri-mqtts"),
            "mqtts://a%40b@demo.iot.svc.cluster.local:8883"
        );
        assert_eq!(
            text(&secret, "uri-ws"),
            "ws://a%40b@demo.iot.svc.cluster.local:8080/mqtt"
        );
        assert_eq!(
            text(&secret, "uri-wss"),
            "wss://a%40b@demo.iot.svc.cluster.local:8443/broker"
        );
        assert!(!secret.data.as_ref().unwrap().contains_key(keys::TLS_CERT));
        let labels = secret.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_COMPONENT], "credentials");

        credentials.password = None;
        credentials.client_certificate = Some(ClientCertificate {
            cert_pem: "LEAF",
            key_pem: "KEY",
            issued_for: "digest",
        });
        let secret = credentials_secret(&credentials);
        assert!(!secret.data.as_ref().unwrap().contains_key("password"));
        assert_eq!(text(&secret, keys::TLS_KEY), "KEY");
        assert_eq!(
            secret.metadata.annotations.as_ref().unwrap()[ANNOTATION_CLIENT_CERT_FOR],
            "digest"
        );
    }
}
