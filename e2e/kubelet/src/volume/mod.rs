//! A pod's volumes on the host: where each one lives (`layout`), which mount path maps to which
//! directory, and writing their files (`payload` builds them, `atomic` writes them the kubelet way).
//! Called by the pod worker at start and whenever a ConfigMap or Secret it uses changes.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, Volume};

pub mod atomic;
pub mod layout;
pub mod payload;

pub use layout::PodDirs;
pub use payload::{PayloadContext, SourceKind, SourceLookup, TokenKey, Tokens};

/// Why a pod's volumes cannot be set up; the pod waits with `CreateContainerConfigError` and retries.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{} {name:?} not found", kind.as_str())]
    Missing { kind: SourceKind, name: String },
    #[error("{} {name:?} has no key {key:?}", kind.as_str())]
    MissingKey {
        kind: SourceKind,
        name: String,
        key: String,
    },
    #[error("volume file path {0:?} is not a plain relative path")]
    InvalidPath(String),
    #[error("downward API field {0:?} is not supported")]
    Field(String),
    #[error("no service account token could be issued for a projected volume")]
    NoToken,
    #[error("volume mount refers to volume {0:?}, which the pod does not have")]
    UnknownVolume(String),
    #[error("not supported by tern-test-kubelet: {what}")]
    Unsupported { what: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Where one volume lives on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVolume {
    pub dir: PathBuf,
    /// Files written from API objects (configMap, secret, projected, downwardAPI), kept up to date.
    pub has_files: bool,
}

/// The host directory of every volume of a pod, by volume name.
#[derive(Debug, Clone, Default)]
pub struct VolumeSet {
    volumes: BTreeMap<String, HostVolume>,
}

impl VolumeSet {
    /// Where each of the pod's volumes goes; refuses volume types this kubelet cannot provide.
    pub fn plan(dirs: &PodDirs, pod: &Pod) -> Result<Self, VolumeError> {
        let mut volumes = BTreeMap::new();
        for volume in pod
            .spec
            .iter()
            .flat_map(|spec| spec.volumes.iter().flatten())
        {
            volumes.insert(volume.name.clone(), host_volume(dirs, volume)?);
        }
        Ok(Self { volumes })
    }

    /// `(mountPath, host path)` for every volume mount of every container, init containers included.
    pub fn mounts(&self, pod: &Pod) -> Result<Vec<(String, PathBuf)>, VolumeError> {
        let mut mounts = Vec::new();
        for container in all_containers(pod) {
            for mount in container.volume_mounts.iter().flatten() {
                let volume = self
                    .volumes
                    .get(&mount.name)
                    .ok_or_else(|| VolumeError::UnknownVolume(mount.name.clone()))?;
                if mount
                    .sub_path_expr
                    .as_deref()
                    .is_some_and(|expr| !expr.is_empty())
                {
                    return Err(VolumeError::Unsupported {
                        what: "volumeMounts[].subPathExpr".into(),
                    });
                }
                let host = match mount.sub_path.as_deref() {
                    Some(sub_path) if !sub_path.is_empty() => volume.dir.join(sub_path),
                    _ => volume.dir.clone(),
                };
                mounts.push((mount.mount_path.clone(), host));
            }
        }
        Ok(mounts)
    }

    /// Creates directory volumes and writes (or refreshes) the files of the others.
    /// Returns the names of the volumes whose files changed.
    pub fn materialize(
        &self,
        pod: &Pod,
        ctx: &PayloadContext<'_>,
    ) -> Result<Vec<String>, VolumeError> {
        let mut changed = Vec::new();
        for volume in pod
            .spec
            .iter()
            .flat_map(|spec| spec.volumes.iter().flatten())
        {
            let Some(host) = self.volumes.get(&volume.name) else {
                continue;
            };
            match payload::volume_payload(ctx, volume)? {
                Some(files) => {
                    if atomic::write_atomically(&host.dir, &files).map_err(io_error(&host.dir))? {
                        changed.push(volume.name.clone());
                    }
                }
                None => fs::create_dir_all(&host.dir).map_err(io_error(&host.dir))?,
            }
        }
        // a subPath of a directory volume is created as a directory, as kubelet does
        for (_, host) in self.mounts(pod)? {
            let in_directory_volume = self
                .volumes
                .values()
                .any(|v| !v.has_files && host.starts_with(&v.dir));
            if in_directory_volume && fs::symlink_metadata(&host).is_err() {
                fs::create_dir_all(&host).map_err(io_error(&host))?;
            }
        }
        Ok(changed)
    }
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_owned(),
        source,
    }
}

fn host_volume(dirs: &PodDirs, volume: &Volume) -> Result<HostVolume, VolumeError> {
    let own_dir = dirs.volume_dir(&volume.name);
    let (dir, has_files) = if volume.config_map.is_some()
        || volume.secret.is_some()
        || volume.projected.is_some()
        || volume.downward_api.is_some()
    {
        (own_dir, true)
    } else if volume.empty_dir.is_some() || volume.ephemeral.is_some() {
        (own_dir, false)
    } else if let Some(claim) = &volume.persistent_volume_claim {
        (dirs.claim_dir(&claim.claim_name), false)
    } else if let Some(host_path) = &volume.host_path {
        (PathBuf::from(&host_path.path), false)
    } else {
        return Err(VolumeError::Unsupported {
            what: format!("the type of volume {:?}", volume.name),
        });
    };
    Ok(HostVolume { dir, has_files })
}

/// Init containers first, then the others.
pub fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|spec| {
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
    })
}

/// The ConfigMaps and Secrets a pod uses (volumes, env, envFrom) with the resource version the
/// lookup has for each (`None`: missing). A change means the pod's files or env may be out of date.
pub fn fingerprint(
    pod: &Pod,
    lookup: &dyn SourceLookup,
) -> Vec<(SourceKind, String, Option<String>)> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut refs = references(pod);
    refs.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    refs.dedup();
    refs.into_iter()
        .map(|(kind, name)| {
            let version = match kind {
                SourceKind::ConfigMap => lookup
                    .configmap(namespace, &name)
                    .and_then(|o| o.metadata.resource_version.clone()),
                SourceKind::Secret => lookup
                    .secret(namespace, &name)
                    .and_then(|o| o.metadata.resource_version.clone()),
            };
            (kind, name, version)
        })
        .collect()
}

fn references(pod: &Pod) -> Vec<(SourceKind, String)> {
    let mut refs = Vec::new();
    for volume in pod
        .spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
    {
        if let Some(cm) = &volume.config_map {
            refs.push((SourceKind::ConfigMap, cm.name.clone()));
        }
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            refs.push((SourceKind::Secret, name));
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(cm) = &source.config_map {
                refs.push((SourceKind::ConfigMap, cm.name.clone()));
            }
            if let Some(secret) = &source.secret {
                refs.push((SourceKind::Secret, secret.name.clone()));
            }
        }
    }
    for container in all_containers(pod) {
        for from in container.env_from.iter().flatten() {
            if let Some(cm) = &from.config_map_ref {
                refs.push((SourceKind::ConfigMap, cm.name.clone()));
            }
            if let Some(secret) = &from.secret_ref {
                refs.push((SourceKind::Secret, secret.name.clone()));
            }
        }
        for source in container
            .env
            .iter()
            .flatten()
            .filter_map(|e| e.value_from.as_ref())
        {
            if let Some(cm) = &source.config_map_key_ref {
                refs.push((SourceKind::ConfigMap, cm.name.clone()));
            }
            if let Some(secret) = &source.secret_key_ref {
                refs.push((SourceKind::Secret, secret.name.clone()));
            }
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapVolumeSource, EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource,
        PodSpec, Secret, VolumeMount,
    };
    use kube::api::ObjectMeta;

    use super::*;
    use crate::pod::{PodName, PodUid};
    use crate::rewrite::PodRewriter;

    struct OneConfigMap(Arc<ConfigMap>);

    impl SourceLookup for OneConfigMap {
        fn configmap(&self, _namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
            (name == "config").then(|| self.0.clone())
        }
        fn secret(&self, _namespace: &str, _name: &str) -> Option<Arc<Secret>> {
            None
        }
    }

    fn mount(name: &str, path: &str, sub_path: Option<&str>) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            sub_path: sub_path.map(Into::into),
            ..VolumeMount::default()
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("tern-0".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "broker".into(),
                    volume_mounts: Some(vec![
                        mount("config", "/etc/tern/config", None),
                        mount("data", "/data", None),
                        mount("scratch", "/tmp", Some("t")),
                    ]),
                    ..Container::default()
                }],
                volumes: Some(vec![
                    Volume {
                        name: "config".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: "config".into(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    },
                    Volume {
                        name: "data".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: "data-tern-0".into(),
                            read_only: None,
                        }),
                        ..Volume::default()
                    },
                    Volume {
                        name: "scratch".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    },
                ]),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn volumes_are_materialized_under_the_pod_and_claims_under_pvc() {
        let root = tempfile::tempdir().expect("tempdir");
        let pod = pod();
        let dirs = PodDirs::new(
            root.path(),
            PodName::new("ns", "tern-0"),
            PodUid("u1".into()),
        );
        let set = VolumeSet::plan(&dirs, &pod).expect("plan");
        let mounts = set.mounts(&pod).expect("mounts");
        let uid_dir = root.path().join("ns/tern-0/u1");
        assert_eq!(
            mounts,
            [
                (
                    "/etc/tern/config".to_owned(),
                    uid_dir.join("volumes/config")
                ),
                ("/data".to_owned(), root.path().join("pvc/ns/data-tern-0")),
                ("/tmp".to_owned(), uid_dir.join("volumes/scratch/t")),
            ]
        );

        let configmap = ConfigMap {
            metadata: ObjectMeta {
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                "broker.yaml".to_owned(),
                "bind: 0.0.0.0:1883\nstore: /data/db\n".to_owned(),
            )])),
            ..ConfigMap::default()
        };
        let lookup = OneConfigMap(Arc::new(configmap));
        let ip = Ipv4Addr::new(127, 77, 0, 5);
        let rewriter = PodRewriter::new(mounts, ip);
        let tokens = Tokens::new();
        let ctx = PayloadContext {
            pod: &pod,
            pod_ip: ip,
            lookup: &lookup,
            rewriter: &rewriter,
            tokens: &tokens,
        };
        assert_eq!(
            set.materialize(&pod, &ctx).expect("materialize"),
            ["config"]
        );
        assert_eq!(
            set.materialize(&pod, &ctx).expect("again"),
            Vec::<String>::new()
        );

        let file =
            fs::read_to_string(uid_dir.join("volumes/config/broker.yaml")).expect("config file");
        let data = root.path().join("pvc/ns/data-tern-0");
        assert_eq!(
            file,
            format!("bind: 127.77.0.5:1883\nstore: {}/db\n", data.display())
        );
        assert!(data.is_dir());
        assert!(uid_dir.join("volumes/scratch/t").is_dir());
        assert_eq!(
            fingerprint(&pod, &lookup),
            [(
                SourceKind::ConfigMap,
                "config".to_owned(),
                Some("7".to_owned())
            )]
        );
    }
}
