//! Why a reconcile failed: one variant per step and object, so that the `error` label of
//! `tern_operator_reconcile_errors_total` (from [`Error::kind`], a fixed set of names) says what
//! failed, and the error policy's Warning event ([`Error::reason`]) says it on the object.

use thiserror::Error;

use super::passwords::HashError;
use crate::render::auth::AuthFileError;
use crate::tls::TlsError;

#[derive(Debug, Error)]
pub enum Error {
    // Fetch: what exists.
    #[error("cannot read Secret {name:?}: {source}")]
    ReadSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot list the users' credentials Secrets: {0}")]
    ListCredentials(#[source] kube::Error),
    #[error("cannot list MqttUsers: {0}")]
    ListUsers(#[source] kube::Error),
    #[error("cannot list MqttAcls: {0}")]
    ListAcls(#[source] kube::Error),
    #[error("cannot list the broker pods: {0}")]
    ListPods(#[source] kube::Error),
    #[error("cannot read the StatefulSet: {0}")]
    ReadStatefulSet(#[source] kube::Error),
    #[error("cannot read MqttCluster {name:?}: {source}")]
    ReadCluster {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read the cert-manager Certificate: {0}")]
    ReadCertificate(#[source] kube::Error),
    #[error("cannot find out whether the API server serves {group_version}: {source}")]
    Discover {
        group_version: &'static str,
        #[source]
        source: kube::Error,
    },

    // Make: keys, certificates, hashes and files.
    #[error("cannot generate the cluster's CA: {0}")]
    GenerateCa(#[source] TlsError),
    #[error("cannot issue the server certificate: {0}")]
    IssueServerCertificate(#[source] TlsError),
    #[error("cannot issue the client certificate: {0}")]
    IssueClientCertificate(#[source] TlsError),
    #[error("cannot issue the peer certificate: {0}")]
    IssuePeerCertificate(#[source] TlsError),
    #[error("cannot hash a password: {0}")]
    HashPassword(#[from] HashError),
    #[error(transparent)]
    RenderAuthFile(#[from] AuthFileError),

    // Apply, in the order the cluster reconciler applies.
    #[error("cannot apply the admin token Secret: {0}")]
    ApplyAdminSecret(#[source] kube::Error),
    #[error("cannot create the CA Secret: {0}")]
    CreateCaSecret(#[source] kube::Error),
    /// Another writer created the CA Secret first (another operator replica, or a broken Secret
    /// that must not be overwritten blindly); the next reconcile reads theirs.
    #[error("the CA Secret changed while it was being created")]
    CaSecretConflict,
    #[error("cannot apply the server certificate Secret: {0}")]
    ApplyTlsSecret(#[source] kube::Error),
    #[error("cannot apply the peer certificate Secret: {0}")]
    ApplyPeerTlsSecret(#[source] kube::Error),
    #[error("cannot apply the cert-manager Certificate: {0}")]
    ApplyCertificate(#[source] kube::Error),
    #[error("cannot apply the users and ACL Secret: {0}")]
    ApplyAuthSecret(#[source] kube::Error),
    #[error("cannot apply the broker configuration ConfigMap: {0}")]
    ApplyConfigMap(#[source] kube::Error),
    #[error("cannot apply the headless Service: {0}")]
    ApplyHeadlessService(#[source] kube::Error),
    #[error("cannot apply the client Service: {0}")]
    ApplyClientService(#[source] kube::Error),
    #[error("cannot apply the PodDisruptionBudget: {0}")]
    ApplyPodDisruptionBudget(#[source] kube::Error),
    #[error("cannot apply the NetworkPolicy: {0}")]
    ApplyNetworkPolicy(#[source] kube::Error),
    #[error("cannot apply the ServiceMonitor: {0}")]
    ApplyServiceMonitor(#[source] kube::Error),
    #[error("cannot apply the StatefulSet: {0}")]
    ApplyStatefulSet(#[source] kube::Error),
    #[error("cannot apply the credentials Secret: {0}")]
    ApplyCredentialsSecret(#[source] kube::Error),

    // Clean up: what the spec no longer asks for.
    #[error("cannot delete the PodDisruptionBudget: {0}")]
    DeletePodDisruptionBudget(#[source] kube::Error),
    #[error("cannot delete the NetworkPolicy: {0}")]
    DeleteNetworkPolicy(#[source] kube::Error),
    #[error("cannot delete the ServiceMonitor: {0}")]
    DeleteServiceMonitor(#[source] kube::Error),
    #[error("cannot delete the cert-manager Certificate: {0}")]
    DeleteCertificate(#[source] kube::Error),

    // Status.
    #[error("cannot write the status: {0}")]
    PatchStatus(#[source] kube::Error),
}

impl Error {
    /// The bounded `error` label of the reconcile error metric: which step failed, on what.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ReadSecret { .. } => "read_secret",
            Self::ListCredentials(_) => "list_credentials",
            Self::ListUsers(_) => "list_users",
            Self::ListAcls(_) => "list_acls",
            Self::ListPods(_) => "list_pods",
            Self::ReadStatefulSet(_) => "read_statefulset",
            Self::ReadCluster { .. } => "read_cluster",
            Self::ReadCertificate(_) => "read_certificate",
            Self::Discover { .. } => "discover",
            Self::GenerateCa(_) => "generate_ca",
            Self::IssueServerCertificate(_) => "issue_server_certificate",
            Self::IssueClientCertificate(_) => "issue_client_certificate",
            Self::IssuePeerCertificate(_) => "issue_peer_certificate",
            Self::HashPassword(_) => "hash_password",
            Self::RenderAuthFile(error) => error.kind(),
            Self::ApplyAdminSecret(_) => "apply_admin_secret",
            Self::CreateCaSecret(_) => "create_ca_secret",
            Self::CaSecretConflict => "ca_secret_conflict",
            Self::ApplyTlsSecret(_) => "apply_tls_secret",
            Self::ApplyPeerTlsSecret(_) => "apply_peer_tls_secret",
            Self::ApplyCertificate(_) => "apply_certificate",
            Self::ApplyAuthSecret(_) => "apply_auth_secret",
            Self::ApplyConfigMap(_) => "apply_config_map",
            Self::ApplyHeadlessService(_) => "apply_headless_service",
            Self::ApplyClientService(_) => "apply_client_service",
            Self::ApplyPodDisruptionBudget(_) => "apply_pdb",
            Self::ApplyNetworkPolicy(_) => "apply_network_policy",
            Self::ApplyServiceMonitor(_) => "apply_service_monitor",
            Self::ApplyStatefulSet(_) => "apply_statefulset",
            Self::ApplyCredentialsSecret(_) => "apply_credentials_secret",
            Self::DeletePodDisruptionBudget(_) => "delete_pdb",
            Self::DeleteNetworkPolicy(_) => "delete_network_policy",
            Self::DeleteServiceMonitor(_) => "delete_service_monitor",
            Self::DeleteCertificate(_) => "delete_certificate",
            Self::PatchStatus(_) => "patch_status",
        }
    }

    /// The reason of the Warning event the error policy records: the kind in CamelCase with
    /// `Failed` (`apply_statefulset` → `ApplyStatefulsetFailed`), as bounded as the kind.
    pub fn reason(&self) -> String {
        let mut reason: String = self
            .kind()
            .split('_')
            .flat_map(|word| {
                let mut chars = word.chars();
                chars
                    .next()
                    .map(|first| first.to_ascii_uppercase())
                    .into_iter()
                    .chain(chars)
            })
            .collect();
        reason.push_str("Failed");
        reason
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "Conflict")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn kinds_are_snake_case_and_reasons_camel_case() {
        let errors = [
            Error::ApplyStatefulSet(api_error(500)),
            Error::ApplyPodDisruptionBudget(api_error(500)),
            Error::ReadSecret {
                name: "demo-ca".into(),
                source: api_error(403),
            },
            Error::CaSecretConflict,
            Error::PatchStatus(api_error(409)),
        ];
        let kinds: Vec<&str> = errors.iter().map(Error::kind).collect();
        assert_eq!(
            kinds,
            [
                "apply_statefulset",
                "apply_pdb",
                "read_secret",
                "ca_secret_conflict",
                "patch_status"
            ]
        );
        let reasons: Vec<String> = errors.iter().map(Error::reason).collect();
        assert_eq!(
            reasons,
            [
                "ApplyStatefulsetFailed",
                "ApplyPdbFailed",
                "ReadSecretFailed",
                "CaSecretConflictFailed",
                "PatchStatusFailed"
            ]
        );
        // The Secret's name is in the message, never in the label.
        assert!(errors[2].to_string().contains("demo-ca"));
        assert!(!errors[2].kind().contains("demo"));
    }
}
