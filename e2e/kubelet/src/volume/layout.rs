//! Where a pod's files live under the kubelet's root:
//!
//! ```text
//! <root>/events.log                              lifecycle events (see `events`)
//! <root>/<ns>/<pod>/<container>.log              container output, appended across restarts and pod UIDs
//! <root>/<ns>/<pod>/<uid>/                       the working directory of the pod's processes
//! <root>/<ns>/<pod>/<uid>/etc-hosts              the pod's /etc/hosts (see `dns`)
//! <root>/<ns>/<pod>/<uid>/volumes/<volume>/      configMap, secret, projected, downwardAPI, emptyDir
//! <root>/pvc/<ns>/<claim>/                       persistentVolumeClaim: kept across pods of the same claim
//! ```
//!
//! The `<uid>` directory is removed when the pod is gone; logs and claims stay.

use std::path::PathBuf;

use crate::pod::{PodName, PodUid};

/// The directories of one pod.
#[derive(Debug, Clone)]
pub struct PodDirs {
    root: PathBuf,
    pod: PodName,
    uid: PodUid,
}

impl PodDirs {
    pub fn new(root: impl Into<PathBuf>, pod: PodName, uid: PodUid) -> Self {
        Self {
            root: root.into(),
            pod,
            uid,
        }
    }

    /// `<root>/<ns>/<pod>`: container logs.
    pub fn pod_dir(&self) -> PathBuf {
        self.root.join(&self.pod.namespace).join(&self.pod.name)
    }

    /// `<root>/<ns>/<pod>/<uid>`: the processes' working directory.
    pub fn uid_dir(&self) -> PathBuf {
        self.pod_dir().join(&self.uid.0)
    }

    /// `<root>/<ns>/<pod>/<uid>/etc-hosts`: what the pod's processes see as `/etc/hosts`.
    pub fn hosts_file(&self) -> PathBuf {
        self.uid_dir().join("etc-hosts")
    }

    pub fn volume_dir(&self, volume: &str) -> PathBuf {
        self.uid_dir().join("volumes").join(volume)
    }

    pub fn claim_dir(&self, claim: &str) -> PathBuf {
        self.root.join("pvc").join(&self.pod.namespace).join(claim)
    }

    pub fn log_file(&self, container: &str) -> PathBuf {
        self.pod_dir().join(format!("{container}.log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let dirs = PodDirs::new("/r", PodName::new("ns", "tern-0"), PodUid("u1".into()));
        assert_eq!(dirs.uid_dir(), PathBuf::from("/r/ns/tern-0/u1"));
        assert_eq!(
            dirs.volume_dir("config"),
            PathBuf::from("/r/ns/tern-0/u1/volumes/config")
        );
        assert_eq!(
            dirs.hosts_file(),
            PathBuf::from("/r/ns/tern-0/u1/etc-hosts")
        );
        assert_eq!(
            dirs.claim_dir("data-tern-0"),
            PathBuf::from("/r/pvc/ns/data-tern-0")
        );
        assert_eq!(
            dirs.log_file("broker"),
            PathBuf::from("/r/ns/tern-0/broker.log")
        );
    }
}
