//! The files of ConfigMap, Secret, downward API and projected volumes, built from the objects the
//! sources watch (`items`, `key`, `path`, `optional`, modes honoured). ConfigMap text is passed through
//! the pod's rewriter; Secrets and `binaryData` are written as they are. No I/O here.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Component, Path};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Secret, Volume,
};

use super::VolumeError;
use super::atomic::{FileEntry, Payload};
use crate::downward;
use crate::rewrite::PodRewriter;

/// ConfigMaps and Secrets of the pod's namespace, as the kubelet currently knows them.
pub trait SourceLookup {
    fn configmap(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>>;
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>>;
}

/// A service account token a projected volume asks for: audience and lifetime.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenKey {
    pub audience: Option<String>,
    pub expiration_seconds: Option<i64>,
}

/// Tokens already issued for the pod, by what was asked.
pub type Tokens = BTreeMap<TokenKey, String>;

const CONFIGMAP_MODE: i32 = 0o644;
const SECRET_MODE: i32 = 0o600;

/// Which kind of object a volume or env var refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    ConfigMap,
    Secret,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfigMap => "configmap",
            Self::Secret => "secret",
        }
    }
}

/// What building a payload reads.
pub struct PayloadContext<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Ipv4Addr,
    pub lookup: &'a dyn SourceLookup,
    pub rewriter: &'a PodRewriter,
    pub tokens: &'a Tokens,
}

impl PayloadContext<'_> {
    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// The ConfigMap's keys and bytes, text rewritten, or `None` when it does not exist.
    fn configmap_data(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let configmap = self.lookup.configmap(self.namespace(), name)?;
        let text = configmap.data.iter().flatten();
        let binary = configmap.binary_data.iter().flatten();
        Some(
            text.map(|(key, value)| (key.clone(), self.rewriter.rewrite(value).into_bytes()))
                .chain(binary.map(|(key, value)| (key.clone(), value.0.clone())))
                .collect(),
        )
    }

    fn secret_data(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let secret = self.lookup.secret(self.namespace(), name)?;
        let binary = secret.data.iter().flatten();
        let text = secret.string_data.iter().flatten();
        Some(
            binary
                .map(|(key, value)| (key.clone(), value.0.clone()))
                .chain(text.map(|(key, value)| (key.clone(), value.clone().into_bytes())))
                .collect(),
        )
    }
}

/// The files of a file-backed volume, or `None` for a directory volume (emptyDir, claim, hostPath).
pub fn volume_payload(
    ctx: &PayloadContext<'_>,
    volume: &Volume,
) -> Result<Option<Payload>, VolumeError> {
    let payload = if let Some(source) = &volume.config_map {
        let mode = source.default_mode.unwrap_or(CONFIGMAP_MODE);
        let keyed = Keyed::new(
            SourceKind::ConfigMap,
            &source.name,
            source.items.as_deref(),
            source.optional,
        );
        keyed.files(ctx.configmap_data(&source.name), mode)?
    } else if let Some(source) = &volume.secret {
        let name = source.secret_name.as_deref().unwrap_or_default();
        let mode = source.default_mode.unwrap_or(SECRET_MODE);
        let keyed = Keyed::new(
            SourceKind::Secret,
            name,
            source.items.as_deref(),
            source.optional,
        );
        keyed.files(ctx.secret_data(name), mode)?
    } else if let Some(source) = &volume.downward_api {
        let mode = source.default_mode.unwrap_or(CONFIGMAP_MODE);
        downward_files(ctx, source.items.as_deref().unwrap_or_default(), mode)?
    } else if let Some(source) = &volume.projected {
        projected_files(ctx, source)?
    } else {
        return Ok(None);
    };
    Ok(Some(payload))
}

fn projected_files(
    ctx: &PayloadContext<'_>,
    projected: &ProjectedVolumeSource,
) -> Result<Payload, VolumeError> {
    let mut payload = Payload::new();
    for source in projected.sources.iter().flatten() {
        let files = if let Some(cm) = &source.config_map {
            let mode = projected.default_mode.unwrap_or(CONFIGMAP_MODE);
            let keyed = Keyed::new(
                SourceKind::ConfigMap,
                &cm.name,
                cm.items.as_deref(),
                cm.optional,
            );
            keyed.files(ctx.configmap_data(&cm.name), mode)?
        } else if let Some(secret) = &source.secret {
            let mode = projected.default_mode.unwrap_or(SECRET_MODE);
            let keyed = Keyed::new(
                SourceKind::Secret,
                &secret.name,
                secret.items.as_deref(),
                secret.optional,
            );
            keyed.files(ctx.secret_data(&secret.name), mode)?
        } else if let Some(downward) = &source.downward_api {
            let mode = projected.default_mode.unwrap_or(CONFIGMAP_MODE);
            downward_files(ctx, downward.items.as_deref().unwrap_or_default(), mode)?
        } else if let Some(token) = &source.service_account_token {
            let key = TokenKey {
                audience: token.audience.clone(),
                expiration_seconds: token.expiration_seconds,
            };
            let data = ctx.tokens.get(&key).ok_or(VolumeError::NoToken)?;
            let mode = projected.default_mode.unwrap_or(SECRET_MODE);
            single_file(&token.path, data.as_bytes().to_vec(), mode)?
        } else {
            return Err(VolumeError::Unsupported {
                what: "a projected source other than configMap, secret, downwardAPI, serviceAccountToken".into(),
            });
        };
        payload.extend(files);
    }
    Ok(payload)
}

fn downward_files(
    ctx: &PayloadContext<'_>,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
) -> Result<Payload, VolumeError> {
    let mut payload = Payload::new();
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            downward::field_value(ctx.pod, &field.field_path, ctx.pod_ip)
                .ok_or_else(|| VolumeError::Field(field.field_path.clone()))?
        } else if let Some(resource) = &item.resource_field_ref {
            downward::resource_value(ctx.pod, resource, "")
                .ok_or_else(|| VolumeError::Field(resource.resource.clone()))?
        } else {
            return Err(VolumeError::Field(item.path.clone()));
        };
        payload.extend(single_file(
            &item.path,
            value.into_bytes(),
            item.mode.unwrap_or(default_mode),
        )?);
    }
    Ok(payload)
}

/// The service account tokens the pod's projected volumes ask for.
pub fn token_requests(pod: &Pod) -> Vec<TokenKey> {
    let volumes = pod
        .spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten());
    volumes
        .filter_map(|volume| volume.projected.as_ref())
        .flat_map(|projected| projected.sources.iter().flatten())
        .filter_map(|source| source.service_account_token.as_ref())
        .map(|token| TokenKey {
            audience: token.audience.clone(),
            expiration_seconds: token.expiration_seconds,
        })
        .collect()
}

/// A reference to the keys of one ConfigMap or Secret.
struct Keyed<'a> {
    kind: SourceKind,
    name: &'a str,
    items: Option<&'a [KeyToPath]>,
    optional: bool,
}

impl<'a> Keyed<'a> {
    fn new(
        kind: SourceKind,
        name: &'a str,
        items: Option<&'a [KeyToPath]>,
        optional: Option<bool>,
    ) -> Self {
        Self {
            kind,
            name,
            items,
            optional: optional.unwrap_or(false),
        }
    }

    /// All keys as files named after them, or the `items` at their paths.
    fn files(
        &self,
        data: Option<BTreeMap<String, Vec<u8>>>,
        default_mode: i32,
    ) -> Result<Payload, VolumeError> {
        let Some(mut data) = data else {
            return if self.optional {
                Ok(Payload::new())
            } else {
                Err(VolumeError::Missing {
                    kind: self.kind,
                    name: self.name.to_owned(),
                })
            };
        };
        let Some(items) = self.items else {
            let mut payload = Payload::new();
            for (key, bytes) in data {
                payload.extend(single_file(&key, bytes, default_mode)?);
            }
            return Ok(payload);
        };
        let mut payload = Payload::new();
        for item in items {
            match data.remove(&item.key) {
                Some(bytes) => payload.extend(single_file(
                    &item.path,
                    bytes,
                    item.mode.unwrap_or(default_mode),
                )?),
                None if self.optional => {}
                None => {
                    return Err(VolumeError::MissingKey {
                        kind: self.kind,
                        name: self.name.to_owned(),
                        key: item.key.clone(),
                    });
                }
            }
        }
        Ok(payload)
    }
}

fn single_file(path: &str, data: Vec<u8>, mode: i32) -> Result<Payload, VolumeError> {
    validate_path(path)?;
    let mode = u32::try_from(mode).unwrap_or(0o644);
    Ok(Payload::from([(path.to_owned(), FileEntry { data, mode })]))
}

/// A relative path without `..` that does not start with `..` (kubelet's rules for volume files).
fn validate_path(path: &str) -> Result<(), VolumeError> {
    let relative = Path::new(path);
    let plain = relative
        .components()
        .all(|component| matches!(component, Component::Normal(_) | Component::CurDir));
    if path.is_empty() || path.starts_with("..") || !plain {
        return Err(VolumeError::InvalidPath(path.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, SecretVolumeSource};
    use kube::api::ObjectMeta;

    use super::*;

    #[derive(Default)]
    struct Fake {
        configmaps: BTreeMap<String, Arc<ConfigMap>>,
        secrets: BTreeMap<String, Arc<Secret>>,
    }

    impl SourceLookup for Fake {
        fn configmap(&self, _namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
            self.configmaps.get(name).cloned()
        }
        fn secret(&self, _namespace: &str, name: &str) -> Option<Arc<Secret>> {
            self.secrets.get(name).cloned()
        }
    }

    fn fake() -> Fake {
        let configmap = ConfigMap {
            data: Some(BTreeMap::from([
                (
                    "broker.yaml".to_owned(),
                    "bind: 0.0.0.0:1883\nusers: /etc/tern/config/users\n".to_owned(),
                ),
                ("other".to_owned(), "x".to_owned()),
            ])),
            binary_data: Some(BTreeMap::from([(
                "blob".to_owned(),
                ByteString(b"0.0.0.0".to_vec()),
            )])),
            ..ConfigMap::default()
        };
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "tls.key".to_owned(),
                ByteString(b"0.0.0.0 key".to_vec()),
            )])),
            ..Secret::default()
        };
        Fake {
            configmaps: BTreeMap::from([("config".to_owned(), Arc::new(configmap))]),
            secrets: BTreeMap::from([("tls".to_owned(), Arc::new(secret))]),
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn build(volume: Volume, lookup: &Fake) -> Result<Option<Payload>, VolumeError> {
        let pod = pod();
        let rewriter = PodRewriter::new(
            [("/etc/tern/config".to_owned(), "/r/config".into())],
            Ipv4Addr::new(127, 77, 0, 2),
        );
        let tokens = Tokens::new();
        let ctx = PayloadContext {
            pod: &pod,
            pod_ip: Ipv4Addr::new(127, 77, 0, 2),
            lookup,
            rewriter: &rewriter,
            tokens: &tokens,
        };
        volume_payload(&ctx, &volume)
    }

    fn configmap_volume(source: ConfigMapVolumeSource) -> Volume {
        Volume {
            name: "config".into(),
            config_map: Some(source),
            ..Volume::default()
        }
    }

    fn text(payload: &Payload, path: &str) -> String {
        String::from_utf8_lossy(&payload[path].data).into_owned()
    }

    #[test]
    fn configmap_text_is_rewritten_binary_data_is_not() {
        let volume = configmap_volume(ConfigMapVolumeSource {
            name: "config".into(),
            ..ConfigMapVolumeSource::default()
        });
        let payload = build(volume, &fake()).expect("valid").expect("files");
        assert_eq!(
            text(&payload, "broker.yaml"),
            "bind: 127.77.0.2:1883\nusers: /r/config/users\n"
        );
        assert_eq!(text(&payload, "blob"), "0.0.0.0");
        assert_eq!(payload["other"].mode, 0o644);
    }

    #[test]
    fn items_choose_keys_paths_and_modes() {
        let volume = configmap_volume(ConfigMapVolumeSource {
            name: "config".into(),
            items: Some(vec![KeyToPath {
                key: "other".into(),
                path: "sub/renamed".into(),
                mode: Some(0o600),
            }]),
            ..ConfigMapVolumeSource::default()
        });
        let payload = build(volume, &fake()).expect("valid").expect("files");
        assert_eq!(payload.keys().collect::<Vec<_>>(), ["sub/renamed"]);
        assert_eq!(payload["sub/renamed"].mode, 0o600);
    }

    #[test]
    fn secrets_are_not_rewritten_and_default_to_0600() {
        let volume = Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("tls".into()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        };
        let payload = build(volume, &fake()).expect("valid").expect("files");
        assert_eq!(text(&payload, "tls.key"), "0.0.0.0 key");
        assert_eq!(payload["tls.key"].mode, 0o600);
    }

    #[test]
    fn missing_sources_and_keys_fail_unless_optional() {
        let missing = configmap_volume(ConfigMapVolumeSource {
            name: "nope".into(),
            ..ConfigMapVolumeSource::default()
        });
        assert!(matches!(
            build(missing, &fake()),
            Err(VolumeError::Missing { .. })
        ));
        let optional = configmap_volume(ConfigMapVolumeSource {
            name: "nope".into(),
            optional: Some(true),
            ..ConfigMapVolumeSource::default()
        });
        assert_eq!(
            build(optional, &fake())
                .expect("optional")
                .expect("files")
                .len(),
            0
        );
        let missing_key = configmap_volume(ConfigMapVolumeSource {
            name: "config".into(),
            items: Some(vec![KeyToPath {
                key: "absent".into(),
                path: "a".into(),
                mode: None,
            }]),
            ..ConfigMapVolumeSource::default()
        });
        assert!(matches!(
            build(missing_key, &fake()),
            Err(VolumeError::MissingKey { .. })
        ));
    }

    #[test]
    fn paths_may_not_escape() {
        for bad in ["../x", "/etc/passwd", "..data", "a/../../b", ""] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
        assert!(validate_path("a/b.txt").is_ok());
    }
}
