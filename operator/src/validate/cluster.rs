//! `MqttCluster`: what the cluster reconciler relies on. The name must make valid object names and
//! a valid TLS name for the brokers' cluster; listeners must give the broker a configuration it can
//! load and the Services valid ports, apart from the HTTP and cluster ports; a TLS listener needs a
//! certificate source, and only one; the managed certificate's durations must parse and leave time
//! to renew.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{InvalidSpec, duration, identity, positive_duration};
use crate::crd::{
    ClientCertificates, IssuerRef, ManagedTls, MqttCluster, MqttClusterSpec, TlsSpec,
};
use crate::render::names::{CLUSTER_PORT, ClusterNames, HTTP_PORT, RESERVED_PORT_NAMES};
use crate::tls::is_hostname;

/// The managed server certificate's validity when `spec.tls.managed.validity` is unset (90 days).
pub const DEFAULT_SERVER_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// The longest cluster name: each pod carries the label `controller-revision-hash: NAME-HASH`, with
/// a hash of up to 10 characters, and label values end at 63.
const MAX_NAME_LENGTH: usize = 52;

/// An `MqttCluster` the reconciler can act on.
#[derive(Debug, Clone)]
pub struct ValidatedCluster<'a> {
    pub spec: &'a MqttClusterSpec,
    pub names: ClusterNames,
    /// The cluster as the controlling owner of everything it makes.
    pub owner: OwnerReference,
    pub tls: TlsSource<'a>,
    /// How long a leaving pod may take to hand its clients over.
    pub drain_timeout: Duration,
}

/// Where the server certificate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsSource<'a> {
    /// No `spec.tls`: no certificate (the CA still signs users' client certificates).
    None,
    /// The operator's CA issues it into `NAME-tls` (`managed`, or an empty `tls`).
    Managed {
        validity: Duration,
        renew_before: Duration,
    },
    /// A Secret of the user's (`secretName`).
    Secret(&'a str),
    /// cert-manager issues it into `NAME-tls` (`certManager`).
    CertManager(&'a IssuerRef),
}

impl TlsSource<'_> {
    /// The Secret the pods mount the server certificate from.
    pub fn secret(&self, names: &ClusterNames) -> Option<String> {
        match self {
            Self::None => None,
            Self::Secret(name) => Some((*name).to_owned()),
            Self::Managed { .. } | Self::CertManager(_) => Some(names.tls_secret()),
        }
    }
}

impl ValidatedCluster<'_> {
    /// How long the peer certificate is valid, and how long before its end it is renewed: as the
    /// managed server certificate's when there is one, else the defaults (90 days, a third).
    pub fn peer_certificate_durations(&self) -> (Duration, Duration) {
        match self.tls {
            TlsSource::Managed {
                validity,
                renew_before,
            } => (validity, renew_before),
            _ => (
                DEFAULT_SERVER_CERT_VALIDITY,
                DEFAULT_SERVER_CERT_VALIDITY / 3,
            ),
        }
    }

    /// Every name the server certificate must be valid for; none without TLS.
    pub fn server_hostnames(&self, cluster_domain: &str) -> Vec<String> {
        match &self.spec.tls {
            Some(tls) => self
                .names
                .server_hostnames(cluster_domain, &tls.extra_hostnames),
            None => Vec::new(),
        }
    }
}

pub fn validate_cluster(cluster: &MqttCluster) -> Result<ValidatedCluster<'_>, InvalidSpec> {
    let identity = identity(cluster)?;
    check_name(&identity.owner.name)?;
    let spec = &cluster.spec;
    if spec.replicas < 0 {
        return Err(InvalidSpec::field("spec.replicas", "must be ≥ 0"));
    }
    let drain_timeout = u64::try_from(spec.drain_timeout_seconds)
        .ok()
        .filter(|&seconds| seconds > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| InvalidSpec::field("spec.drainTimeoutSeconds", "must be ≥ 1"))?;
    check_listeners(spec)?;
    let tls = tls_source(spec.tls.as_ref())?;
    let budget = &spec.pod_disruption_budget;
    if budget.enabled && budget.max_unavailable < 1 {
        return Err(InvalidSpec::field(
            "spec.podDisruptionBudget.maxUnavailable",
            "must be ≥ 1",
        ));
    }
    Ok(ValidatedCluster {
        spec,
        names: ClusterNames::new(&identity.owner.name, &identity.namespace),
        owner: identity.owner,
        tls,
        drain_timeout,
    })
}

/// The name makes the StatefulSet's, the Services' and the pods' names, and ends the brokers'
/// cluster name (`NAMESPACE.NAME`), which their peer certificate carries as a DNS name: a DNS label
/// that starts with a letter serves all of them.
fn check_name(name: &str) -> Result<(), InvalidSpec> {
    let valid = name.len() <= MAX_NAME_LENGTH
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        return Ok(());
    }
    Err(InvalidSpec::field(
        "metadata.name",
        format!(
            "must be 1 to {MAX_NAME_LENGTH} lowercase letters, digits and '-', starting with a letter and ending with a letter or digit (it names the StatefulSet, its Services and the brokers' cluster)"
        ),
    ))
}

/// Each listener becomes a broker listener, a container port and a Service port.
fn check_listeners(spec: &MqttClusterSpec) -> Result<(), InvalidSpec> {
    if spec.listeners.is_empty() {
        return Err(InvalidSpec::field(
            "spec.listeners",
            "needs at least one listener",
        ));
    }
    for (index, listener) in spec.listeners.iter().enumerate() {
        let field = |name: &str| format!("spec.listeners[{index}].{name}");
        let earlier = &spec.listeners[..index];
        if !is_port_name(&listener.name) {
            return Err(InvalidSpec::field(
                &field("name"),
                "must be 1 to 15 lowercase letters, digits and '-', starting and ending with a letter or digit",
            ));
        }
        if RESERVED_PORT_NAMES.contains(&listener.name.as_str()) {
            return Err(InvalidSpec::field(
                &field("name"),
                format!(
                    "{:?} is the name of one of the broker's own ports",
                    listener.name
                ),
            ));
        }
        if earlier.iter().any(|l| l.name == listener.name) {
            return Err(InvalidSpec::field(
                &field("name"),
                "another listener has this name",
            ));
        }
        if !(1..=65535).contains(&listener.port) {
            return Err(InvalidSpec::field(
                &field("port"),
                "must be between 1 and 65535",
            ));
        }
        if listener.port == HTTP_PORT {
            return Err(InvalidSpec::field(
                &field("port"),
                "9090 is the broker's HTTP port",
            ));
        }
        if listener.port == CLUSTER_PORT {
            return Err(InvalidSpec::field(
                &field("port"),
                "4370 is the brokers' cluster port",
            ));
        }
        if earlier.iter().any(|l| l.port == listener.port) {
            return Err(InvalidSpec::field(
                &field("port"),
                "another listener has this port",
            ));
        }
        match &listener.path {
            Some(_) if !listener.protocol.uses_websocket() => {
                return Err(InvalidSpec::field(
                    &field("path"),
                    "is only for ws and wss listeners",
                ));
            }
            Some(path) if !path.starts_with('/') => {
                return Err(InvalidSpec::field(&field("path"), "must start with '/'"));
            }
            _ => {}
        }
        if listener.client_certificates != ClientCertificates::None && !listener.protocol.uses_tls()
        {
            return Err(InvalidSpec::field(
                &field("clientCertificates"),
                "needs a tls or wss listener",
            ));
        }
        if listener.protocol.uses_tls() && spec.tls.is_none() {
            return Err(InvalidSpec::field(
                &field("protocol"),
                "a tls or wss listener needs spec.tls",
            ));
        }
    }
    Ok(())
}

/// A container port name: what the listener's name is also used as.
fn is_port_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn tls_source(tls: Option<&TlsSpec>) -> Result<TlsSource<'_>, InvalidSpec> {
    let Some(tls) = tls else {
        return Ok(TlsSource::None);
    };
    let source = match (&tls.managed, &tls.secret_name, &tls.cert_manager) {
        (None, None, None) => managed(&ManagedTls::default())?,
        (Some(managed_tls), None, None) => managed(managed_tls)?,
        (None, Some(name), None) if name.is_empty() => {
            return Err(InvalidSpec::field(
                "spec.tls.secretName",
                "must not be empty",
            ));
        }
        // The user's certificate names what it names; extraHostnames is not used.
        (None, Some(name), None) => return Ok(TlsSource::Secret(name)),
        (None, None, Some(cert_manager)) if cert_manager.issuer_ref.name.is_empty() => {
            return Err(InvalidSpec::field(
                "spec.tls.certManager.issuerRef.name",
                "must not be empty",
            ));
        }
        (None, None, Some(cert_manager)) => TlsSource::CertManager(&cert_manager.issuer_ref),
        _ => {
            return Err(InvalidSpec::field(
                "spec.tls",
                "set at most one of managed, secretName and certManager",
            ));
        }
    };
    if let Some((index, name)) = tls
        .extra_hostnames
        .iter()
        .enumerate()
        .find(|(_, name)| !is_hostname(name))
    {
        return Err(InvalidSpec::field(
            &format!("spec.tls.extraHostnames[{index}]"),
            format!("{name:?} is neither a DNS name nor an IP address"),
        ));
    }
    Ok(source)
}

fn managed(managed: &ManagedTls) -> Result<TlsSource<'static>, InvalidSpec> {
    let validity = match &managed.validity {
        Some(text) => positive_duration("spec.tls.managed.validity", text)?,
        None => DEFAULT_SERVER_CERT_VALIDITY,
    };
    let renew_before = match &managed.renew_before {
        Some(text) => duration("spec.tls.managed.renewBefore", text)?,
        None => validity / 3,
    };
    if renew_before >= validity {
        return Err(InvalidSpec::field(
            "spec.tls.managed.renewBefore",
            "must be shorter than validity",
        ));
    }
    Ok(TlsSource::Managed {
        validity,
        renew_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(spec: &str) -> MqttCluster {
        serde_yaml::from_str(&format!(
            "apiVersion: tern.dev/v1alpha1\nkind: MqttCluster\nmetadata: {{name: demo, namespace: iot, uid: u1}}\nspec: {spec}\n"
        ))
        .unwrap()
    }

    fn refused(spec: &str) -> String {
        match validate_cluster(&cluster(spec)) {
            Ok(_) => panic!("{spec} was accepted"),
            Err(invalid) => {
                assert_eq!(invalid.reason(), "InvalidSpec");
                invalid.to_string()
            }
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        let cluster = cluster("{}");
        let valid = validate_cluster(&cluster).unwrap();
        assert_eq!(valid.names, ClusterNames::new("demo", "iot"));
        assert_eq!(valid.owner.uid, "u1");
        assert_eq!(valid.tls, TlsSource::None);
        assert_eq!(valid.tls.secret(&valid.names), None);
        assert_eq!(valid.drain_timeout, Duration::from_secs(60));
        assert!(valid.server_hostnames("cluster.local").is_empty());
    }

    #[test]
    fn the_name_must_make_object_names_and_a_tls_name() {
        for name in ["demo", "a", "mqtt-2", &"a".repeat(52)] {
            let mut object = cluster("{}");
            object.metadata.name = Some(name.to_owned());
            assert!(validate_cluster(&object).is_ok(), "{name}");
        }
        for name in ["2fast", "demo-", "Demo", "de.mo", "de_mo", &"a".repeat(53)] {
            let mut object = cluster("{}");
            object.metadata.name = Some(name.to_owned());
            let message = validate_cluster(&object).unwrap_err().to_string();
            assert!(
                message.starts_with("metadata.name: must be 1 to 52 "),
                "{name}: {message}"
            );
        }
    }

    #[test]
    fn the_peer_certificate_lives_as_long_as_a_managed_server_certificate() {
        let managed = cluster("{tls: {managed: {validity: 10h, renewBefore: 1h}}}");
        assert_eq!(
            validate_cluster(&managed)
                .unwrap()
                .peer_certificate_durations(),
            (Duration::from_secs(36000), Duration::from_secs(3600))
        );
        for spec in ["{}", "{tls: {secretName: own}}"] {
            let other = cluster(spec);
            assert_eq!(
                validate_cluster(&other)
                    .unwrap()
                    .peer_certificate_durations(),
                (
                    DEFAULT_SERVER_CERT_VALIDITY,
                    DEFAULT_SERVER_CERT_VALIDITY / 3
                ),
                "{spec}"
            );
        }
    }

    #[test]
    fn each_tls_source_is_told_apart() {
        let managed = cluster(
            "{tls: {managed: {validity: 10m, renewBefore: 9m30s}, extraHostnames: [mqtt.example.com, 10.0.0.1]}}",
        );
        let valid = validate_cluster(&managed).unwrap();
        assert_eq!(
            valid.tls,
            TlsSource::Managed {
                validity: Duration::from_secs(600),
                renew_before: Duration::from_secs(570)
            }
        );
        assert_eq!(valid.tls.secret(&valid.names).as_deref(), Some("demo-tls"));
        assert!(
            valid
                .server_hostnames("cluster.local")
                .contains(&"10.0.0.1".to_owned())
        );
        let empty = cluster("{tls: {}}");
        assert_eq!(
            validate_cluster(&empty).unwrap().tls,
            TlsSource::Managed {
                validity: DEFAULT_SERVER_CERT_VALIDITY,
                renew_before: DEFAULT_SERVER_CERT_VALIDITY / 3
            }
        );
        let own = cluster("{tls: {secretName: my-tls}}");
        let valid = validate_cluster(&own).unwrap();
        assert_eq!(valid.tls, TlsSource::Secret("my-tls"));
        assert_eq!(valid.tls.secret(&valid.names).as_deref(), Some("my-tls"));
        let issued = cluster("{tls: {certManager: {issuerRef: {name: ca}}}}");
        assert!(matches!(
            validate_cluster(&issued).unwrap().tls,
            TlsSource::CertManager(IssuerRef { name, .. }) if name == "ca"
        ));
    }

    #[test]
    fn what_render_would_misuse_is_refused_with_the_field() {
        for (spec, message) in [
            ("{replicas: -1}", "spec.replicas: must be ≥ 0"),
            (
                "{drainTimeoutSeconds: 0}",
                "spec.drainTimeoutSeconds: must be ≥ 1",
            ),
            (
                "{listeners: []}",
                "spec.listeners: needs at least one listener",
            ),
            (
                "{listeners: [{name: a, port: 1883}, {name: a, port: 1884}]}",
                "spec.listeners[1].name: another listener has this name",
            ),
            (
                "{listeners: [{name: a, port: 1883}, {name: b, port: 1883}]}",
                "spec.listeners[1].port: another listener has this port",
            ),
            (
                "{listeners: [{name: a, port: 9090}]}",
                "spec.listeners[0].port: 9090 is the broker's HTTP port",
            ),
            (
                "{listeners: [{name: a, port: 4370}]}",
                "spec.listeners[0].port: 4370 is the brokers' cluster port",
            ),
            (
                "{listeners: [{name: peer, port: 1883}]}",
                "spec.listeners[0].name: \"peer\" is the name of one of the broker's own ports",
            ),
            (
                "{listeners: [{name: a, port: 0}]}",
                "spec.listeners[0].port: must be between 1 and 65535",
            ),
            (
                "{listeners: [{name: a, port: 1883, path: /x}]}",
                "spec.listeners[0].path: is only for ws and wss listeners",
            ),
            (
                "{listeners: [{name: a, protocol: ws, port: 80, path: x}]}",
                "spec.listeners[0].path: must start with '/'",
            ),
            (
                "{listeners: [{name: a, port: 1883, clientCertificates: required}]}",
                "spec.listeners[0].clientCertificates: needs a tls or wss listener",
            ),
            (
                "{listeners: [{name: a, protocol: tls, port: 8883}]}",
                "spec.listeners[0].protocol: a tls or wss listener needs spec.tls",
            ),
            (
                "{tls: {secretName: x, certManager: {issuerRef: {name: ca}}}}",
                "spec.tls: set at most one of managed, secretName and certManager",
            ),
            (
                "{tls: {managed: {validity: 1h, renewBefore: 2h}}}",
                "spec.tls.managed.renewBefore: must be shorter than validity",
            ),
            (
                "{podDisruptionBudget: {maxUnavailable: 0}}",
                "spec.podDisruptionBudget.maxUnavailable: must be ≥ 1",
            ),
        ] {
            assert_eq!(refused(spec), message, "{spec}");
        }
        assert!(
            refused("{listeners: [{name: MQTT, port: 1883}]}")
                .starts_with("spec.listeners[0].name: ")
        );
        assert!(
            refused("{tls: {managed: {validity: soon}}}")
                .starts_with("spec.tls.managed.validity: ")
        );
        assert_eq!(
            refused("{tls: {extraHostnames: [ok.example.com, not a host]}}"),
            "spec.tls.extraHostnames[1]: \"not a host\" is neither a DNS name nor an IP address"
        );
        // Names a certificate of the user's own does not use are not checked.
        validate_cluster(&cluster(
            "{tls: {secretName: own, extraHostnames: [\"not a host\"]}}",
        ))
        .unwrap();
        // A disabled budget's count is not used.
        validate_cluster(&cluster(
            "{podDisruptionBudget: {enabled: false, maxUnavailable: 0}}",
        ))
        .unwrap();
    }
}
