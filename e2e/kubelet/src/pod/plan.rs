//! From a pod's containers to what the supervisors run: the local executable standing in for each
//! image, args and env with `$(VAR)` expanded and the pod rewriter applied, probes and the preStop hook.
//!
//! The executable of a container is `--binary NAME=PATH` where NAME is the first word of `command`,
//! or, without `command`, the basename of the image's repository. The rest of `command` comes before
//! `args`. Exec probes and hooks look their first word up the same way and fall back to the host's
//! `PATH` (so `sh -c …` works).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};

use super::container::ContainerPlan;
use super::env::{self, Env, EnvError};
use super::probe::{Action, ActionBuilder, Probes};
use super::process::ProcessSpec;
use crate::config::{BinaryMap, image_name};
use crate::rewrite::{PodRewriter, expand_vars};
use crate::volume::{PodDirs, SourceLookup};

/// A container that cannot be started yet.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("container {container}: {source}")]
    Env { container: String, source: EnvError },
    #[error("container {container}: no --binary for {name:?}")]
    UnknownBinary { container: String, name: String },
    #[error("container {container}: binary {} for {name:?} is not a file", path.display())]
    MissingBinary {
        container: String,
        name: String,
        path: PathBuf,
    },
    #[error("init container {0}: restartPolicy Always (sidecar containers) is not supported")]
    Sidecar(String),
}

impl PlanError {
    /// The waiting reason kubelet would report.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownBinary { .. } | Self::MissingBinary { .. } => "ErrImagePull",
            Self::Env { .. } | Self::Sidecar(_) => "CreateContainerConfigError",
        }
    }
}

/// What planning reads.
pub struct PlanInput<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Ipv4Addr,
    pub dirs: &'a PodDirs,
    pub rewriter: &'a PodRewriter,
    pub binaries: &'a BinaryMap,
    pub lookup: &'a dyn SourceLookup,
    /// The pod's hosts file, mounted over `/etc/hosts` for its processes.
    pub hosts: Option<PathBuf>,
}

/// The init containers (run in order, each to success) and the app containers.
#[derive(Debug, Clone, Default)]
pub struct PodPlan {
    pub init: Vec<ContainerPlan>,
    pub app: Vec<ContainerPlan>,
}

pub fn plan(input: &PlanInput<'_>) -> Result<PodPlan, PlanError> {
    let Some(spec) = &input.pod.spec else {
        return Ok(PodPlan::default());
    };
    let mut plan = PodPlan::default();
    for container in spec.init_containers.iter().flatten() {
        if container.restart_policy.as_deref() == Some("Always") {
            return Err(PlanError::Sidecar(container.name.clone()));
        }
        plan.init.push(plan_container(input, container)?);
    }
    for container in &spec.containers {
        plan.app.push(plan_container(input, container)?);
    }
    Ok(plan)
}

fn plan_container(
    input: &PlanInput<'_>,
    container: &Container,
) -> Result<ContainerPlan, PlanError> {
    let env = env::resolve(input.pod, container, input.pod_ip, input.lookup).map_err(|source| {
        PlanError::Env {
            container: container.name.clone(),
            source,
        }
    })?;
    let image = container.image.clone().unwrap_or_default();
    let (name, leading) = match container.command.as_deref() {
        Some([first, rest @ ..]) => (first.clone(), rest.to_vec()),
        _ => (image_name(&image).to_owned(), Vec::new()),
    };
    let program = input
        .binaries
        .get(&name)
        .ok_or_else(|| PlanError::UnknownBinary {
            container: container.name.clone(),
            name: name.clone(),
        })?
        .to_owned();
    if !program.is_file() {
        return Err(PlanError::MissingBinary {
            container: container.name.clone(),
            name,
            path: program,
        });
    }
    let words = leading.iter().chain(container.args.iter().flatten());
    let context = ProcessContext {
        input,
        env: &env,
        log: input.dirs.log_file(&container.name),
        workdir: working_dir(input, container),
    };
    let process = context.spec(program.clone(), words);
    let actions = ActionBuilder {
        ports: container.ports.as_deref().unwrap_or_default(),
        pod_ip: input.pod_ip.to_string(),
        exec: |command: &[String]| context.exec(command),
    };
    let probes = Probes {
        startup: container.startup_probe.as_ref().map(|p| actions.probe(p)),
        readiness: container.readiness_probe.as_ref().map(|p| actions.probe(p)),
        liveness: container.liveness_probe.as_ref().map(|p| actions.probe(p)),
    };
    let pre_stop = container
        .lifecycle
        .as_ref()
        .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
        .map(|handler| hook(&actions, handler));
    Ok(ContainerPlan {
        name: container.name.clone(),
        image,
        image_id: format!("tern-test-kubelet://{}", program.display()),
        process,
        probes,
        pre_stop,
    })
}

fn hook<F: Fn(&[String]) -> Result<ProcessSpec, String>>(
    actions: &ActionBuilder<'_, F>,
    handler: &LifecycleHandler,
) -> Action {
    if let Some(exec) = &handler.exec {
        actions.exec(exec.command.as_deref())
    } else if let Some(get) = &handler.http_get {
        actions.http(get)
    } else if let Some(sleep) = &handler.sleep {
        Action::Sleep(Duration::from_secs(
            u64::try_from(sleep.seconds).unwrap_or(0),
        ))
    } else if let Some(tcp) = &handler.tcp_socket {
        actions.tcp(tcp)
    } else {
        Action::Unsupported("empty lifecycle handler".into())
    }
}

/// `workingDir` through the rewriter when it lands in a volume; the pod directory otherwise.
fn working_dir(input: &PlanInput<'_>, container: &Container) -> PathBuf {
    container
        .working_dir
        .as_deref()
        .map(|dir| PathBuf::from(input.rewriter.rewrite(dir)))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| input.dirs.uid_dir())
}

/// Builds process specs for one container: its env, log and working directory.
struct ProcessContext<'a> {
    input: &'a PlanInput<'a>,
    env: &'a Env,
    log: PathBuf,
    workdir: PathBuf,
}

impl ProcessContext<'_> {
    /// A word as the container sees it: `$(VAR)` expanded with the container env, then rewritten.
    fn word(&self, word: &str) -> String {
        self.input
            .rewriter
            .rewrite(&expand_vars(word, |name| self.env.get(name)))
    }

    fn spec<'w>(&self, program: PathBuf, words: impl Iterator<Item = &'w String>) -> ProcessSpec {
        ProcessSpec {
            program,
            args: words.map(|word| self.word(word)).collect(),
            env: self
                .env
                .iter()
                .map(|(name, value)| (name.to_owned(), self.input.rewriter.rewrite(value)))
                .collect(),
            workdir: self.workdir.clone(),
            hostname: self.input.pod.metadata.name.clone().unwrap_or_default(),
            log: self.log.clone(),
            hosts: self.input.hosts.clone(),
        }
    }

    /// An exec probe or hook: the binary map, an absolute path, or the host's `PATH`.
    fn exec(&self, command: &[String]) -> Result<ProcessSpec, String> {
        let Some((first, rest)) = command.split_first() else {
            return Err("exec without a command".into());
        };
        let program = self
            .input
            .binaries
            .get(first)
            .map(PathBuf::from)
            .or_else(|| host_program(first))
            .ok_or_else(|| format!("exec {first:?}: no --binary and not on the host's PATH"))?;
        Ok(self.spec(program, rest.iter()))
    }
}

fn host_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|path| path.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{
        ConfigMap, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Lifecycle, ObjectFieldSelector,
        PodSpec, Probe, Secret,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::pod::{PodName, PodUid};

    struct NoSources;

    impl SourceLookup for NoSources {
        fn configmap(&self, _namespace: &str, _name: &str) -> Option<Arc<ConfigMap>> {
            None
        }
        fn secret(&self, _namespace: &str, _name: &str) -> Option<Arc<Secret>> {
            None
        }
    }

    fn container(image: &str) -> Container {
        Container {
            name: "broker".into(),
            image: Some(image.into()),
            args: Some(vec![
                "--config".into(),
                "/etc/tern/config/broker.yaml".into(),
                "--id=$(POD_NAME)".into(),
            ]),
            env: Some(vec![EnvVar {
                name: "POD_NAME".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        api_version: None,
                    }),
                    ..EnvVarSource::default()
                }),
            }]),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    port: IntOrString::Int(9090),
                    path: Some("/readyz".into()),
                    ..HTTPGetAction::default()
                }),
                ..Probe::default()
            }),
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    exec: Some(ExecAction {
                        command: Some(vec!["tern-broker".into(), "--version".into()]),
                    }),
                    ..LifecycleHandler::default()
                }),
                ..Lifecycle::default()
            }),
            ..Container::default()
        }
    }

    fn pod(container: Container) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("tern-0".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![container],
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn plan_for(pod: &Pod, binaries: &BinaryMap) -> Result<PodPlan, PlanError> {
        let dirs = PodDirs::new("/r", PodName::new("ns", "tern-0"), PodUid("u".into()));
        let ip = Ipv4Addr::new(127, 77, 0, 2);
        let rewriter = PodRewriter::new(
            [("/etc/tern/config".to_owned(), PathBuf::from("/r/cfg"))],
            ip,
        );
        plan(&PlanInput {
            pod,
            pod_ip: ip,
            dirs: &dirs,
            rewriter: &rewriter,
            binaries,
            lookup: &NoSources,
            hosts: Some(PathBuf::from("/r/ns/tern-0/u/etc-hosts")),
        })
    }

    #[test]
    fn the_image_names_the_binary_and_args_are_expanded_and_rewritten() {
        let mut binaries = BinaryMap::default();
        binaries.insert("tern-broker", "/bin/sh"); // any existing file stands in
        let pod = pod(container("ghcr.io/tern-mqtt/tern-broker:0.1.0"));
        let plan = plan_for(&pod, &binaries).expect("plan");
        let broker = &plan.app[0];
        assert_eq!(broker.process.program, PathBuf::from("/bin/sh"));
        assert_eq!(
            broker.process.args,
            ["--config", "/r/cfg/broker.yaml", "--id=tern-0"]
        );
        assert_eq!(broker.process.workdir, PathBuf::from("/r/ns/tern-0/u"));
        assert_eq!(broker.process.log, PathBuf::from("/r/ns/tern-0/broker.log"));
        let hosts = Some(PathBuf::from("/r/ns/tern-0/u/etc-hosts"));
        assert_eq!(broker.process.hosts, hosts, "the container's /etc/hosts");
        assert!(matches!(
            broker.probes.readiness.as_ref().map(|p| &p.action),
            Some(Action::Http { host, port: 9090, .. }) if host == "127.77.0.2"
        ));
        match &broker.pre_stop {
            Some(Action::Exec(spec)) => {
                assert_eq!(spec.program, PathBuf::from("/bin/sh"));
                assert_eq!(spec.args, ["--version"]);
                assert_eq!(spec.hosts, hosts, "hooks run in the container's view too");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn command_overrides_the_image_and_unknown_binaries_are_image_pull_errors() {
        let mut binaries = BinaryMap::default();
        binaries.insert("tern-broker", "/bin/sh");
        let mut with_command = container("anything:1");
        with_command.command = Some(vec!["/usr/bin/tern-broker".into(), "serve".into()]);
        let plan = plan_for(&pod(with_command), &binaries).expect("plan");
        assert_eq!(plan.app[0].process.args[0], "serve");

        let error = plan_for(&pod(container("mosquitto")), &binaries).expect_err("unknown");
        assert_eq!(error.reason(), "ErrImagePull");
        binaries.insert("mosquitto", "/nonexistent/mosquitto");
        let error = plan_for(&pod(container("mosquitto")), &binaries).expect_err("missing file");
        assert_eq!(error.reason(), "ErrImagePull");
    }
}
