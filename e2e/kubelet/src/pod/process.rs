//! Local processes standing in for containers and exec hooks.
//!
//! Each process leads its own process group (signals reach anything it forks) and has a clean
//! environment: `PATH`, `HOME` (the pod directory), `HOSTNAME` and the container's env, nothing of the
//! kubelet's. Output is appended to the container's log file.
//!
//! Children must not outlive the kubelet. Without `unsafe` there is no `prctl(PR_SET_PDEATHSIG)` between
//! fork and exec, so processes are started through util-linux `setpriv --pdeathsig KILL --`, which sets it
//! and execs the program (same pid): the kernel kills the process when the kubelet thread that spawned it
//! dies, even by SIGKILL. That thread is a tokio worker, which lives as long as the runtime, so a
//! runtime shut down without [`crate::KubeletHandle::shutdown`] also takes the processes with it. Where
//! `setpriv` is missing, `kill_on_drop` is the only guard: it covers a dropped runtime and a normal
//! exit, not a SIGKILLed kubelet.
//!
//! A process whose spec has a hosts file runs in a mount namespace of its own (util-linux
//! `unshare`; with `--map-root-user` too when the kubelet is not root) where a shell bind-mounts
//! the file over `/etc/hosts` and execs the program (same pid), the way a kubelet mounts its managed
//! hosts file into a container (see [`crate::dns`]). The namespace's mounts are private: nothing
//! reaches the host's. Where that does not work, the process sees the host's `/etc/hosts`.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::process::{Child, Command};

/// Bind-mounts `$0` (the hosts file) over `/etc/hosts` and execs the rest of the arguments.
const BIND_HOSTS: &str = r#"mount --bind "$0" /etc/hosts && exec "$@""#;

/// How processes are started: through `setpriv` when the host has it, and in a mount namespace of
/// their own when they have a hosts file and the host allows it.
#[derive(Debug, Clone)]
pub struct Launcher {
    setpriv: Option<PathBuf>,
    /// `unshare` and the arguments that give a process private mounts, once shown to work.
    private_mounts: Option<(PathBuf, Vec<&'static str>)>,
}

impl Launcher {
    /// Looks for `setpriv` on `PATH`; hosts files are not mounted.
    pub fn detect() -> Self {
        let setpriv = on_path("setpriv");
        if setpriv.is_none() {
            tracing::warn!("setpriv not found: pod processes may outlive a killed kubelet");
        }
        Self {
            setpriv,
            private_mounts: None,
        }
    }

    /// Also mounts processes' hosts files over `/etc/hosts`, if `unshare` can give a process
    /// private mounts here: tried with a file in `probe_dir`, as root (`--mount`) or as a user
    /// mapped to root in a user namespace of its own (`--map-root-user --mount`).
    pub async fn mounting_hosts_files(mut self, probe_dir: &Path) -> Self {
        let Some(unshare) = on_path("unshare") else {
            tracing::warn!(
                "unshare not found: pods see the host's /etc/hosts, no cluster DNS names"
            );
            return self;
        };
        let probe = probe_dir.join(".hosts-probe");
        if let Err(error) = std::fs::write(&probe, "127.0.0.1\ttern-test-kubelet-probe\n") {
            tracing::warn!(%error, "cannot write the hosts probe; pods see the host's /etc/hosts");
            return self;
        }
        for args in [
            vec!["--mount", "--propagation", "private"],
            vec!["--map-root-user", "--mount", "--propagation", "private"],
        ] {
            let works = Command::new(&unshare)
                .args(&args)
                .args(["--", "/bin/sh", "-c", BIND_HOSTS])
                .arg(&probe)
                .args(["grep", "-q", "tern-test-kubelet-probe", "/etc/hosts"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|status| status.success());
            if works {
                tracing::info!(?args, "pods get their own /etc/hosts");
                self.private_mounts = Some((unshare, args));
                break;
            }
        }
        if self.private_mounts.is_none() {
            tracing::warn!(
                "unshare cannot give processes private mounts here: pods see the host's /etc/hosts, no cluster DNS names"
            );
        }
        let _ = std::fs::remove_file(&probe);
        self
    }

    /// Whether processes with a hosts file see it as `/etc/hosts`.
    pub fn mounts_hosts_files(&self) -> bool {
        self.private_mounts.is_some()
    }

    fn command(&self, program: &Path, args: &[String], hosts: Option<&Path>) -> Command {
        let mut words: Vec<OsString> = Vec::new();
        if let (Some(hosts), Some((unshare, unshare_args))) = (hosts, &self.private_mounts) {
            words.push(unshare.into());
            words.extend(unshare_args.iter().map(OsString::from));
            words.extend(["--", "/bin/sh", "-c", BIND_HOSTS].map(OsString::from));
            words.push(hosts.into());
        }
        words.push(program.into());
        words.extend(args.iter().map(OsString::from));
        let mut command = match &self.setpriv {
            Some(setpriv) => {
                let mut command = Command::new(setpriv);
                command.args(["--pdeathsig", "KILL", "--"]).args(words);
                command
            }
            None => {
                let mut command = Command::new(&words[0]);
                command.args(&words[1..]);
                command
            }
        };
        command
            .process_group(0)
            .kill_on_drop(true)
            .stdin(Stdio::null());
        command
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// What to run and where.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    /// `HOSTNAME`: the pod's name.
    pub hostname: String,
    pub log: PathBuf,
    /// The pod's hosts file, mounted over `/etc/hosts` where the launcher can.
    pub hosts: Option<PathBuf>,
}

impl ProcessSpec {
    fn command(&self, launcher: &Launcher) -> Command {
        let mut command = launcher.command(&self.program, &self.args, self.hosts.as_deref());
        command
            .current_dir(&self.workdir)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", &self.workdir)
            .env("HOSTNAME", &self.hostname)
            .envs(self.env.iter().map(|(name, value)| (name, value)));
        command
    }
}

/// A running container process.
#[derive(Debug)]
pub struct Process {
    child: Child,
    pid: u32,
}

impl Process {
    /// Starts `spec` with stdout and stderr appended to its log file.
    pub fn spawn(launcher: &Launcher, spec: &ProcessSpec) -> io::Result<Self> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)?;
        writeln!(
            log,
            "[tern-test-kubelet {}] start {} {}",
            Timestamp::now(),
            spec.program.display(),
            spec.args.join(" ")
        )?;
        let child = spec
            .command(launcher)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("process exited at once"))?;
        Ok(Self { child, pid })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit (cancel-safe).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM to the process group, up to `grace` for it to exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        signal_group(self.pid, Signal::TERM);
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            signal_group(self.pid, Signal::KILL); // anything the process left behind
            return status;
        }
        tracing::info!(
            pid = self.pid,
            ?grace,
            "process ignored SIGTERM; killing it"
        );
        signal_group(self.pid, Signal::KILL);
        self.child.wait().await
    }
}

fn signal_group(pid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if let Err(error) = kill_process_group(pid, signal)
        && error != rustix::io::Errno::SRCH
    {
        tracing::warn!(pid = pid.as_raw_nonzero().get(), %error, "cannot signal process group");
    }
}

/// An exit status as containers report it: the code, or 128 + the signal that ended it.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(-1)
}

/// How an exec hook or probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// `None`: it could not be started or ran out of time.
    pub exit: Option<i32>,
    /// Standard output and error, or why it did not run.
    pub output: String,
}

impl ExecOutcome {
    pub fn succeeded(&self) -> bool {
        self.exit == Some(0)
    }
}

/// Runs `spec` to completion within `timeout`, capturing its output (the log file is not used).
pub async fn run_exec(launcher: &Launcher, spec: &ProcessSpec, timeout: Duration) -> ExecOutcome {
    let child = spec
        .command(launcher)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(error) => {
            return ExecOutcome {
                exit: None,
                output: format!("cannot start {}: {error}", spec.program.display()),
            };
        }
    };
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => ExecOutcome {
            exit: Some(exit_code(output.status)),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        },
        Ok(Err(error)) => ExecOutcome {
            exit: None,
            output: format!("{}: {error}", spec.program.display()),
        },
        Err(_) => {
            if let Some(pid) = pid {
                signal_group(pid, Signal::KILL);
            }
            ExecOutcome {
                exit: None,
                output: format!("timed out after {timeout:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, program: &str, args: &[&str]) -> ProcessSpec {
        ProcessSpec {
            program: PathBuf::from(program),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec![("GREETING".into(), "hello".into())],
            workdir: dir.to_owned(),
            hostname: "tern-0".into(),
            log: dir.join("c.log"),
            hosts: None,
        }
    }

    #[tokio::test]
    async fn exec_sees_only_the_container_env_and_reports_the_exit_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let launcher = Launcher::detect();
        let run = spec(
            dir.path(),
            "/bin/sh",
            &["-c", "echo $GREETING $HOSTNAME ${KUBECONFIG:-none}; exit 3"],
        );
        let outcome = run_exec(&launcher, &run, Duration::from_secs(5)).await;
        assert_eq!(outcome.exit, Some(3));
        assert_eq!(outcome.output, "hello tern-0 none\n");

        let slow = spec(dir.path(), "/bin/sh", &["-c", "sleep 30"]);
        let outcome = run_exec(&launcher, &slow, Duration::from_millis(200)).await;
        assert_eq!(outcome.exit, None);
    }

    #[tokio::test]
    async fn a_process_sees_its_hosts_file_as_etc_hosts_and_its_updates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let launcher = Launcher::detect().mounting_hosts_files(dir.path()).await;
        if !launcher.mounts_hosts_files() {
            eprintln!("skipped: this host gives processes no private mounts");
            return;
        }
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.77.0.2\tmqtt-0.example\n").expect("hosts");
        let mut lookup = spec(
            dir.path(),
            "/bin/sh",
            &[
                "-c",
                "getent hosts mqtt-0.example; sleep 0.5; getent hosts mqtt-1.example; echo $$",
            ],
        );
        lookup.hosts = Some(hosts.clone());
        let mut process = Process::spawn(&launcher, &lookup).expect("spawn");
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(&hosts, "127.77.0.3\tmqtt-1.example\n").expect("rewrite hosts");
        let status = process.wait().await.expect("exit");
        assert!(status.success());
        let log = std::fs::read_to_string(dir.path().join("c.log")).expect("log");
        let resolved = |ip: &str, name: &str| {
            log.lines()
                .any(|line| line.split_whitespace().eq([ip, name]))
        };
        assert!(resolved("127.77.0.2", "mqtt-0.example"), "{log}");
        assert!(
            resolved("127.77.0.3", "mqtt-1.example"),
            "the rewrite is seen: {log}"
        );
        assert!(
            log.trim_end().ends_with(&process.pid().to_string()),
            "the program keeps the pid the kubelet knows: {log}"
        );
        let host = std::fs::read_to_string("/etc/hosts").expect("the host's /etc/hosts");
        assert!(
            !host.contains("mqtt-0.example"),
            "the host's file is untouched"
        );
    }

    #[tokio::test]
    async fn a_process_that_ignores_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let launcher = Launcher::detect();
        let stubborn = spec(
            dir.path(),
            "/bin/sh",
            &["-c", "trap '' TERM; echo up; sleep 30 & wait"],
        );
        let mut process = Process::spawn(&launcher, &stubborn).expect("spawn");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = process
            .stop(Duration::from_millis(300))
            .await
            .expect("stopped");
        assert_eq!(exit_code(status), 137);
        let log = std::fs::read_to_string(dir.path().join("c.log")).expect("log");
        assert!(
            log.contains("start /bin/sh") && log.contains("up\n"),
            "{log}"
        );
    }
}
