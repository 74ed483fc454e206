//! A container's environment as kubelet builds it: `envFrom` first, then `env` in order (later names
//! win), `$(VAR)` in values expanded against what came before, `valueFrom` resolved from the pod
//! (`fieldRef`, `resourceFieldRef`) and from ConfigMaps and Secrets (`configMapKeyRef`, `secretKeyRef`).
//! Values are returned as written; the caller applies the pod rewriter once.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Container, EnvVarSource, Pod};

use crate::downward;
use crate::rewrite::expand_vars;
use crate::volume::{SourceKind, SourceLookup};

/// A reference the environment cannot be built without; the container waits with
/// `CreateContainerConfigError`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("{} {name:?} not found", kind.as_str())]
    Missing { kind: SourceKind, name: String },
    #[error("couldn't find key {key} in {} {name:?}", kind.as_str())]
    MissingKey {
        kind: SourceKind,
        name: String,
        key: String,
    },
    #[error("env var {var}: field {path:?} is not supported")]
    Field { var: String, path: String },
}

/// Ordered `NAME=value` pairs, one per name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env(Vec<(String, String)>);

impl Env {
    pub fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(known, _)| known == name) {
            Some((_, old)) => *old = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

/// The environment of `container` in `pod`, whose address is `pod_ip`.
pub fn resolve(
    pod: &Pod,
    container: &Container,
    pod_ip: Ipv4Addr,
    lookup: &dyn SourceLookup,
) -> Result<Env, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut env = Env::default();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let (kind, name, optional, data) = if let Some(cm) = &from.config_map_ref {
            let data = lookup.configmap(namespace, &cm.name).map(|cm| {
                cm.data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect::<Vec<_>>()
            });
            (SourceKind::ConfigMap, &cm.name, cm.optional, data)
        } else if let Some(secret) = &from.secret_ref {
            let data = lookup.secret(namespace, &secret.name).map(|secret| {
                let data = secret.data.clone().unwrap_or_default();
                data.into_iter()
                    .map(|(key, value)| (key, String::from_utf8_lossy(&value.0).into_owned()))
                    .collect()
            });
            (SourceKind::Secret, &secret.name, secret.optional, data)
        } else {
            continue;
        };
        match data {
            Some(pairs) => pairs
                .into_iter()
                .filter(|(key, _)| is_env_name(key))
                .for_each(|(key, value)| env.set(&format!("{prefix}{key}"), value)),
            None if optional.unwrap_or(false) => {}
            None => {
                return Err(EnvError::Missing {
                    kind,
                    name: name.clone(),
                });
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            Some(source) => match value_from(pod, container, &var.name, source, pod_ip, lookup)? {
                Some(value) => value,
                None => continue,
            },
            None => expand_vars(var.value.as_deref().unwrap_or_default(), |name| {
                env.get(name)
            }),
        };
        env.set(&var.name, value);
    }
    Ok(env)
}

/// `Ok(None)`: an optional reference that is missing, so the variable is not set.
fn value_from(
    pod: &Pod,
    container: &Container,
    var: &str,
    source: &EnvVarSource,
    pod_ip: Ipv4Addr,
    lookup: &dyn SourceLookup,
) -> Result<Option<String>, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let unsupported = |path: &str| EnvError::Field {
        var: var.to_owned(),
        path: path.to_owned(),
    };
    if let Some(field) = &source.field_ref {
        let path = field.field_path.as_str();
        if path == "metadata.labels" || path == "metadata.annotations" {
            return Err(unsupported(path));
        }
        return downward::field_value(pod, path, pod_ip)
            .map(Some)
            .ok_or_else(|| unsupported(path));
    }
    if let Some(resource) = &source.resource_field_ref {
        return downward::resource_value(pod, resource, &container.name)
            .map(Some)
            .ok_or_else(|| unsupported(&resource.resource));
    }
    let (kind, name, key, optional, value) = if let Some(selector) = &source.config_map_key_ref {
        let object = lookup.configmap(namespace, &selector.name);
        let value = object.as_ref().map(|cm| {
            cm.data
                .as_ref()
                .and_then(|data| data.get(&selector.key))
                .cloned()
        });
        (
            SourceKind::ConfigMap,
            &selector.name,
            &selector.key,
            selector.optional,
            value,
        )
    } else if let Some(selector) = &source.secret_key_ref {
        let object = lookup.secret(namespace, &selector.name);
        let value = object.as_ref().map(|secret| {
            let bytes = secret
                .data
                .as_ref()
                .and_then(|data| data.get(&selector.key));
            bytes.map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
        });
        (
            SourceKind::Secret,
            &selector.name,
            &selector.key,
            selector.optional,
            value,
        )
    } else {
        return Err(unsupported("valueFrom"));
    };
    match value {
        Some(Some(value)) => Ok(Some(value)),
        _ if optional.unwrap_or(false) => Ok(None),
        None => Err(EnvError::Missing {
            kind,
            name: name.clone(),
        }),
        Some(None) => Err(EnvError::MissingKey {
            kind,
            name: name.clone(),
            key: key.clone(),
        }),
    }
}

/// Keys that are not valid variable names are skipped by `envFrom`, as in kubelet.
fn is_env_name(key: &str) -> bool {
    !key.is_empty() && !key.starts_with(|c: char| c.is_ascii_digit()) && !key.contains('=')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapEnvSource, EnvFromSource, EnvVar, ObjectFieldSelector, Secret,
        SecretKeySelector,
    };
    use kube::api::ObjectMeta;

    use super::*;

    struct Lookup;

    impl SourceLookup for Lookup {
        fn configmap(&self, _namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
            (name == "settings").then(|| {
                Arc::new(ConfigMap {
                    data: Some(BTreeMap::from([
                        ("LEVEL".to_owned(), "debug".to_owned()),
                        ("1BAD".to_owned(), "x".to_owned()),
                    ])),
                    ..ConfigMap::default()
                })
            })
        }
        fn secret(&self, _namespace: &str, name: &str) -> Option<Arc<Secret>> {
            (name == "token").then(|| {
                Arc::new(Secret {
                    data: Some(BTreeMap::from([(
                        "token".to_owned(),
                        ByteString(b"s3cret".to_vec()),
                    )])),
                    ..Secret::default()
                })
            })
        }
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(source),
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("tern-1".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn secret_ref(name: &str, key: &str, optional: Option<bool>) -> EnvVarSource {
        EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..EnvVarSource::default()
        }
    }

    #[test]
    fn env_from_then_env_with_expansion_and_references() {
        let container = Container {
            name: "broker".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "settings".into(),
                    optional: None,
                }),
                prefix: Some("TERN_".into()),
                secret_ref: None,
            }]),
            env: Some(vec![
                from(
                    "POD_NAME",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
                var("NODE_ID", "$(POD_NAME).$(TERN_LEVEL)"),
                from("TOKEN", secret_ref("token", "token", None)),
                from("OPTIONAL", secret_ref("absent", "token", Some(true))),
                var("TERN_LEVEL", "info"),
            ]),
            ..Container::default()
        };
        let env =
            resolve(&pod(), &container, Ipv4Addr::new(127, 77, 0, 2), &Lookup).expect("resolves");
        let pairs: Vec<_> = env.iter().collect();
        assert_eq!(
            pairs,
            [
                ("TERN_LEVEL", "info"),
                ("POD_NAME", "tern-1"),
                ("NODE_ID", "tern-1.debug"),
                ("TOKEN", "s3cret")
            ]
        );
    }

    #[test]
    fn missing_references_are_errors_unless_optional() {
        let container = |source| Container {
            name: "broker".into(),
            env: Some(vec![from("X", source)]),
            ..Container::default()
        };
        let ip = Ipv4Addr::new(127, 77, 0, 2);
        assert_eq!(
            resolve(
                &pod(),
                &container(secret_ref("absent", "k", None)),
                ip,
                &Lookup
            ),
            Err(EnvError::Missing {
                kind: SourceKind::Secret,
                name: "absent".into()
            })
        );
        assert_eq!(
            resolve(
                &pod(),
                &container(secret_ref("token", "nokey", None)),
                ip,
                &Lookup
            ),
            Err(EnvError::MissingKey {
                kind: SourceKind::Secret,
                name: "token".into(),
                key: "nokey".into()
            })
        );
        let env = resolve(
            &pod(),
            &container(secret_ref("token", "nokey", Some(true))),
            ip,
            &Lookup,
        );
        assert_eq!(env, Ok(Env::default()));
    }
}
