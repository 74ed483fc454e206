//! One container's supervisor: starts its process, restarts it when it exits or fails its liveness or
//! startup probe (restartPolicy Always; backoff 1 s doubling to 5 s, reset after 10 s of running),
//! follows its probes, and on a stop request runs the preStop hook within the grace period, then
//! SIGTERM, then SIGKILL. An init container is run until it exits 0. Every change of state goes to
//! the pod worker as a `ContainerReport`.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::probe::{self, Action, ProbeEvent, Probes};
use super::process::{Launcher, Process, ProcessSpec, exit_code};
use super::status::{ContainerReport, RunState};
use super::{PodName, PodUid};
use crate::events::{Event, EventLog};
use crate::registry::Registry;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A process that ran this long starts over from the first backoff when it exits.
const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// Kubelet leaves at least this much between a preStop hook and SIGKILL.
const MIN_GRACE_AFTER_HOOK: Duration = Duration::from_secs(2);

/// Which container of the pod a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Init(usize),
    App(usize),
}

/// A container resolved by the worker: what to run, how to probe it, its preStop hook.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub process: ProcessSpec,
    pub probes: Probes,
    pub pre_stop: Option<Action>,
}

/// How to stop: the grace period left, and whether the preStop hook runs (pod deletion: yes;
/// kubelet shutdown: no).
#[derive(Debug, Clone, Copy)]
pub struct StopRequest {
    pub grace: Duration,
    pub run_pre_stop: bool,
}

/// What the supervisor shares with its pod.
#[derive(Clone)]
pub struct PodContext {
    pub pod: PodName,
    pub uid: PodUid,
    pub launcher: Launcher,
    pub events: Arc<EventLog>,
    pub registry: Arc<Registry>,
    pub reports: mpsc::Sender<(Slot, ContainerReport)>,
    /// `terminationGracePeriodSeconds`, for a restart after a failed liveness probe.
    pub restart_grace: Duration,
}

/// How a supervisor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// An init container exited 0.
    Completed,
    /// Stopped on request.
    Stopped,
}

/// Aborts the task when dropped, so a prober never outlives its process.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the container until stopped (or, for an init container, until it succeeds).
pub async fn supervise(
    plan: ContainerPlan,
    slot: Slot,
    ctx: PodContext,
    mut stop: oneshot::Receiver<StopRequest>,
) -> Exit {
    let mut supervisor = Supervisor::new(&plan, slot, &ctx);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut process = match Process::spawn(&ctx.launcher, &plan.process) {
            Ok(process) => process,
            Err(error) => {
                tracing::warn!(pod = %ctx.pod, container = %plan.name, %error, "cannot start container");
                supervisor.report.state = RunState::waiting("RunContainerError", error.to_string());
                supervisor.send().await;
                if sleep_or_stop(backoff, &mut stop).await.is_some() {
                    return Exit::Stopped;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let started_at = Timestamp::now();
        let started = Instant::now();
        supervisor.running(&process, started_at).await;

        let (terminated, stopped) = supervisor.watch(&mut process, &mut stop).await;
        ctx.registry.set_pid(&ctx.pod, &ctx.uid, &plan.name, None);
        let exit = terminated.unwrap_or(-1);
        let state = RunState::Terminated {
            exit_code: exit,
            reason: if exit == 0 { "Completed" } else { "Error" }.to_owned(),
            started_at,
            finished_at: Timestamp::now(),
        };
        if stopped {
            return Exit::Stopped;
        }
        if matches!(slot, Slot::Init(_)) && exit == 0 {
            supervisor.report.state = state;
            supervisor.report.ready = false;
            supervisor.send().await;
            return Exit::Completed;
        }
        backoff = if started.elapsed() >= BACKOFF_RESET {
            FIRST_BACKOFF
        } else {
            backoff
        };
        tracing::info!(pod = %ctx.pod, container = %plan.name, exit, ?backoff, "container exited; restarting");
        supervisor.exited(state, backoff).await;
        if sleep_or_stop(backoff, &mut stop).await.is_some() {
            return Exit::Stopped;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The report being kept up to date, and what it needs.
struct Supervisor<'a> {
    plan: &'a ContainerPlan,
    slot: Slot,
    ctx: &'a PodContext,
    report: ContainerReport,
}

impl<'a> Supervisor<'a> {
    fn new(plan: &'a ContainerPlan, slot: Slot, ctx: &'a PodContext) -> Self {
        let mut report =
            ContainerReport::waiting(&plan.name, &plan.image, "ContainerCreating", None);
        report.image_id.clone_from(&plan.image_id);
        Self {
            plan,
            slot,
            ctx,
            report,
        }
    }

    async fn send(&self) {
        // the worker is gone only when the pod is being torn down; nothing left to tell then
        let _ = self
            .ctx
            .reports
            .send((self.slot, self.report.clone()))
            .await;
    }

    async fn running(&mut self, process: &Process, started_at: Timestamp) {
        let ctx = self.ctx;
        ctx.registry
            .set_pid(&ctx.pod, &ctx.uid, &self.plan.name, Some(process.pid()));
        if self.report.restart_count > 0 {
            ctx.events.record(&Event::Restart {
                pod: ctx.pod.clone(),
                container: self.plan.name.clone(),
                restarts: self.report.restart_count,
            });
        }
        self.report.container_id = Some(format!("tern-test-kubelet://{}", process.pid()));
        self.report.state = RunState::Running { started_at };
        self.report.ready = false;
        self.report.started = false;
        self.send().await;
    }

    async fn exited(&mut self, state: RunState, backoff: Duration) {
        self.report.restart_count += 1;
        self.report.last_state = Some(state);
        self.report.ready = false;
        self.report.started = false;
        let message = format!(
            "back-off {backoff:?} restarting failed container={} pod={}",
            self.plan.name, self.ctx.pod
        );
        self.report.state = RunState::waiting("CrashLoopBackOff", message);
        self.send().await;
    }

    /// Follows the process and its probes until it exits, fails a probe (it is then stopped) or a
    /// stop is requested. Returns its exit code and whether it was stopped on request.
    async fn watch(
        &mut self,
        process: &mut Process,
        stop: &mut oneshot::Receiver<StopRequest>,
    ) -> (Option<i32>, bool) {
        let (probe_events, mut probe_rx) = mpsc::channel(8);
        let _prober = match self.slot {
            Slot::App(_) => Some(AbortOnDrop(tokio::spawn(probe::run(
                self.plan.probes.clone(),
                self.ctx.launcher.clone(),
                probe_events,
            )))),
            Slot::Init(_) => None,
        };
        loop {
            tokio::select! {
                status = process.wait() => return (status.ok().map(exit_code), false),
                Some(event) = probe_rx.recv() => match event {
                    ProbeEvent::Started => {
                        self.report.started = true;
                        self.send().await;
                    }
                    ProbeEvent::Ready(ready) => {
                        self.report.ready = ready;
                        self.send().await;
                    }
                    ProbeEvent::Failed { probe, message } => {
                        tracing::info!(pod = %self.ctx.pod, container = %self.plan.name, probe, %message, "probe failed; restarting container");
                        let request = StopRequest { grace: self.ctx.restart_grace, run_pre_stop: true };
                        return (self.terminate(process, request).await, false);
                    }
                },
                request = &mut *stop => {
                    let request = request.unwrap_or(StopRequest { grace: Duration::ZERO, run_pre_stop: false });
                    return (self.terminate(process, request).await, true);
                }
            }
        }
    }

    /// preStop (bounded by the grace period), SIGTERM, the rest of the grace, SIGKILL.
    async fn terminate(&self, process: &mut Process, request: StopRequest) -> Option<i32> {
        let deadline = Instant::now() + request.grace;
        if request.run_pre_stop
            && let Some(hook) = &self.plan.pre_stop
        {
            self.pre_stop(hook, request.grace).await;
        }
        let rest = deadline
            .saturating_duration_since(Instant::now())
            .max(MIN_GRACE_AFTER_HOOK.min(request.grace));
        process.stop(rest).await.ok().map(exit_code)
    }

    async fn pre_stop(&self, hook: &Action, grace: Duration) {
        let ctx = self.ctx;
        let outcome = hook.run(&ctx.launcher, grace).await;
        let exit = outcome.exit.unwrap_or(-1);
        tracing::info!(pod = %ctx.pod, container = %self.plan.name, exit, output = %outcome.output.trim_end(), "preStop hook ran");
        let logged = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.plan.process.log)
            .and_then(|mut log| {
                writeln!(
                    log,
                    "[tern-test-kubelet {}] preStop exit={exit}",
                    Timestamp::now()
                )?;
                log.write_all(outcome.output.as_bytes())
            });
        if let Err(error) = logged {
            tracing::warn!(pod = %ctx.pod, %error, "cannot write the preStop output to the container log");
        }
        ctx.events.record(&Event::PreStop {
            pod: ctx.pod.clone(),
            exit,
        });
    }
}

/// Sleeps, unless a stop request comes first (then returns it).
async fn sleep_or_stop(
    delay: Duration,
    stop: &mut oneshot::Receiver<StopRequest>,
) -> Option<StopRequest> {
    tokio::select! {
        () = tokio::time::sleep(delay) => None,
        request = stop => Some(request.unwrap_or(StopRequest { grace: Duration::ZERO, run_pre_stop: false })),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::IpPrefix;

    fn shell(dir: &Path, script: &str) -> ProcessSpec {
        ProcessSpec {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: Vec::new(),
            workdir: dir.to_owned(),
            hostname: "p".into(),
            log: dir.join("c.log"),
            hosts: None,
        }
    }

    fn plan(dir: &Path, script: &str, pre_stop: Option<&str>) -> ContainerPlan {
        ContainerPlan {
            name: "c".into(),
            image: "img".into(),
            image_id: "local".into(),
            process: shell(dir, script),
            probes: Probes::default(),
            pre_stop: pre_stop.map(|hook| Action::Exec(shell(dir, hook))),
        }
    }

    fn context(dir: &Path, reports: mpsc::Sender<(Slot, ContainerReport)>) -> PodContext {
        let registry = Arc::new(Registry::new(IpPrefix([127, 77, 0])));
        let pod = PodName::new("ns", "p");
        let uid = PodUid("u".into());
        registry.admit(&pod, &uid);
        PodContext {
            pod,
            uid,
            launcher: Launcher::detect(),
            events: Arc::new(EventLog::new(dir)),
            registry,
            reports,
            restart_grace: Duration::from_secs(1),
        }
    }

    /// Reports until one satisfies `done`.
    async fn until(
        reports: &mut mpsc::Receiver<(Slot, ContainerReport)>,
        done: impl Fn(&ContainerReport) -> bool,
    ) -> ContainerReport {
        let wait = async {
            loop {
                let (_, report) = reports.recv().await.expect("supervisor reports");
                if done(&report) {
                    return report;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("report in time")
    }

    #[tokio::test]
    async fn an_exited_container_is_restarted_after_a_backoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = mpsc::channel(64);
        let (stop, stop_rx) = oneshot::channel();
        let ctx = context(dir.path(), tx);
        let events = ctx.events.clone();
        let task = tokio::spawn(supervise(
            plan(dir.path(), "exit 1", None),
            Slot::App(0),
            ctx,
            stop_rx,
        ));

        let backing_off = until(&mut rx, |r| {
            matches!(r.state, RunState::Waiting { .. }) && r.restart_count == 1
        })
        .await;
        assert!(
            matches!(&backing_off.state, RunState::Waiting { reason, .. } if reason == "CrashLoopBackOff")
        );
        assert!(matches!(
            backing_off.last_state,
            Some(RunState::Terminated { exit_code: 1, .. })
        ));
        until(&mut rx, |r| {
            matches!(r.state, RunState::Running { .. }) && r.restart_count == 1
        })
        .await;
        assert_eq!(events.lines(), ["restart ns/p container=c restarts=1"]);

        stop.send(StopRequest {
            grace: Duration::from_secs(1),
            run_pre_stop: true,
        })
        .expect("supervisor listens");
        assert_eq!(task.await.expect("supervisor ends"), Exit::Stopped);
    }

    #[tokio::test]
    async fn a_stop_runs_the_pre_stop_hook_then_sigterm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = mpsc::channel(64);
        let (stop, stop_rx) = oneshot::channel();
        let ctx = context(dir.path(), tx);
        let (events, registry) = (ctx.events.clone(), ctx.registry.clone());
        let container = plan(dir.path(), "exec sleep 30", Some("echo bye; exit 3"));
        let task = tokio::spawn(supervise(container, Slot::App(0), ctx, stop_rx));
        until(&mut rx, |r| r.ready).await;
        let pid = registry
            .pid(&PodName::new("ns", "p"), "c")
            .expect("pid registered");

        let began = Instant::now();
        stop.send(StopRequest {
            grace: Duration::from_secs(20),
            run_pre_stop: true,
        })
        .expect("supervisor listens");
        assert_eq!(task.await.expect("supervisor ends"), Exit::Stopped);
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "sleep ends on SIGTERM"
        );
        assert_eq!(events.lines(), ["prestop ns/p exit=3"]);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        assert_eq!(registry.pid(&PodName::new("ns", "p"), "c"), None);
        let log = std::fs::read_to_string(dir.path().join("c.log")).expect("log");
        assert!(log.contains("preStop exit=3\nbye\n"), "{log}");
    }

    #[tokio::test]
    async fn an_init_container_runs_to_completion() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, _rx) = mpsc::channel(64);
        let (_stop, stop_rx) = oneshot::channel();
        let ctx = context(dir.path(), tx);
        let exit = supervise(
            plan(dir.path(), "exit 0", None),
            Slot::Init(0),
            ctx,
            stop_rx,
        )
        .await;
        assert_eq!(exit, Exit::Completed);
    }
}
