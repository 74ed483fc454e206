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

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::process::{Child, Command};

/// How processes are started: through `setpriv` when the host has it.
#[derive(Debug, Clone)]
pub struct Launcher {
    setpriv: Option<PathBuf>,
}

impl Launcher {
    /// Looks for `setpriv` on `PATH`.
    pub fn detect() -> Self {
        let setpriv = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("setpriv"))
                .find(|candidate| candidate.is_file())
        });
        if setpriv.is_none() {
            tracing::warn!("setpriv not found: pod processes may outlive a killed kubelet");
        }
        Self { setpriv }
    }

    fn command(&self, program: &Path, args: &[String]) -> Command {
        let mut command = match &self.setpriv {
            Some(setpriv) => {
                let mut command = Command::new(setpriv);
                command.args(["--pdeathsig", "KILL", "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .process_group(0)
            .kill_on_drop(true)
            .stdin(Stdio::null());
        command
    }
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
}

impl ProcessSpec {
    fn command(&self, launcher: &Launcher) -> Command {
        let mut command = launcher.command(&self.program, &self.args);
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
