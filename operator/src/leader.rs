//! Leader election through a `coordination.k8s.io` Lease (kube-lease-manager): only the holder
//! reconciles, other replicas stand by.
//!
//! A standby reads the Lease every [`POLL`] and competes only once it is free or its term has
//! ended. kube-lease-manager's own loop would instead sleep until the end of the term it last saw,
//! so a Lease released by a leader that stopped gracefully would sit free for up to a whole term.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use rand::RngExt as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often a standby looks at the Lease.
pub const POLL: Duration = Duration::from_secs(2);
/// How long releasing the Lease on shutdown may take; past it, the term simply runs out.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader Lease: {0}")]
    Lease(#[from] LeaseManagerError),
    #[error("leader Lease: {0}")]
    Kube(#[from] kube::Error),
}

/// Which Lease to hold, and as whom.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per process: see [`identity`].
    pub identity: String,
    /// Seconds a term lasts without renewal: how long standbys wait for a leader that vanished.
    pub duration_secs: u64,
}

/// A holder identity for this process: the pod's name, so `kubectl get lease` shows which pod
/// leads, plus a random suffix, so a restarted container never mistakes its predecessor's term for
/// its own.
pub fn identity(pod_name: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..8)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("{pod_name}_{suffix}")
}

/// The Lease, held and renewed in the background.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    renewer: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

/// Waits until this process holds the Lease; `None` when `shutdown` came first.
pub async fn acquire(
    client: &Client,
    config: &LeaseConfig,
    shutdown: &CancellationToken,
) -> Option<Leadership> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    loop {
        let attempt = async {
            if held_by_another(&leases, config).await? {
                tokio::time::sleep(POLL).await;
                return Ok(None);
            }
            let manager = LeaseManagerBuilder::new(client.clone(), &config.name)
                .with_namespace(&config.namespace)
                .with_identity(&config.identity)
                .with_duration(config.duration_secs)
                .with_grace(grace(config.duration_secs))
                .build()
                .await?;
            // Free or expired: this takes it, or learns that another standby was quicker (and then
            // sleeps to the end of that one's term, as a standby would anyway).
            Ok::<_, LeaderError>(manager.changed().await?.then_some(manager))
        };
        tokio::select! {
            () = shutdown.cancelled() => return None,
            result = attempt => match result {
                Ok(Some(manager)) => {
                    info!(identity = %config.identity, "acquired the leader Lease");
                    let (leading, renewer) = manager.watch().await;
                    return Some(Leadership { leading, renewer });
                }
                Ok(None) => {}
                Err(error) => {
                    warn!(%error, "cannot take part in leader election; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(POLL) => {}
                    }
                }
            },
        }
    }
}

/// Renews a third of a term before it ends, like client-go's defaults (15 s term, 10 s deadline).
fn grace(duration_secs: u64) -> u64 {
    (duration_secs / 3).max(1)
}

/// Whether another identity holds the Lease with a term that has not ended.
async fn held_by_another(leases: &Api<Lease>, config: &LeaseConfig) -> Result<bool, LeaderError> {
    let Some(spec) = leases.get_opt(&config.name).await?.and_then(|l| l.spec) else {
        return Ok(false);
    };
    let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
        return Ok(false);
    };
    if holder == config.identity {
        return Ok(false);
    }
    let term_end = spec
        .renew_time
        .zip(spec.lease_duration_seconds)
        .map(|(renewed, secs)| {
            SystemTime::from(renewed.0) + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        });
    let held = term_end.is_some_and(|end| end > SystemTime::now());
    debug!(%holder, held, "leader Lease");
    Ok(held)
}

impl Leadership {
    /// Resolves when another replica has taken the Lease (or renewal stopped for good).
    pub async fn lost(&mut self) {
        while self.leading.changed().await.is_ok() {
            if !*self.leading.borrow() {
                return;
            }
        }
    }

    /// Stops renewing and frees the Lease, so a standby takes over within [`POLL`] instead of
    /// waiting for the term to run out.
    pub async fn release(self) {
        // Closing the channel makes kube-lease-manager's task release the Lease and end.
        drop(self.leading);
        match tokio::time::timeout(RELEASE_TIMEOUT, self.renewer).await {
            Ok(Ok(Ok(_))) => info!("released the leader Lease"),
            Ok(Ok(Err(error))) => warn!(%error, "cannot release the leader Lease; it will expire"),
            Ok(Err(error)) => warn!(%error, "the Lease task failed; the Lease will expire"),
            Err(_) => warn!("releasing the leader Lease timed out; it will expire"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_name_the_pod_and_differ_per_process() {
        let a = identity("tern-operator-abc");
        let b = identity("tern-operator-abc");
        assert!(a.starts_with("tern-operator-abc_"));
        assert_ne!(a, b);
    }

    #[test]
    fn renewal_leaves_a_third_of_the_term() {
        assert_eq!(grace(15), 5);
        assert_eq!(grace(2), 1);
    }
}
