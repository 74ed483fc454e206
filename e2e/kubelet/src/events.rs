//! The machine-readable record of pod lifecycle events that tests check: one line per event in
//! `<root>/events.log`, kept in memory too for [`crate::KubeletHandle::events`].
//!
//! | line | when |
//! |---|---|
//! | `start <ns>/<pod> ip=<ip>` | every container of the pod was started for the first time |
//! | `restart <ns>/<pod> container=<name> restarts=<n>` | a container is started again after it exited or failed its liveness probe |
//! | `prestop <ns>/<pod> exit=<code>` | a container's `lifecycle.preStop` hook finished (one line per container with a hook); `exec`: its exit status, `httpGet`: 0 for a 2xx/3xx answer and 1 otherwise; -1 when it could not run or ran out of time |
//! | `stop <ns>/<pod>` | every process of the pod is gone (before the pod object is deleted) |

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::pod::PodName;

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start {
        pod: PodName,
        ip: Ipv4Addr,
    },
    Restart {
        pod: PodName,
        container: String,
        restarts: i32,
    },
    PreStop {
        pod: PodName,
        exit: i32,
    },
    Stop {
        pod: PodName,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start { pod, ip } => write!(f, "start {pod} ip={ip}"),
            Self::Restart {
                pod,
                container,
                restarts,
            } => {
                write!(f, "restart {pod} container={container} restarts={restarts}")
            }
            Self::PreStop { pod, exit } => write!(f, "prestop {pod} exit={exit}"),
            Self::Stop { pod } => write!(f, "stop {pod}"),
        }
    }
}

/// Appends events to the log file and keeps them for the embedding test.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    /// Every line recorded by this kubelet, in order; the file may hold older runs' lines too.
    lines: Mutex<Vec<String>>,
}

impl EventLog {
    pub fn new(root: &Path) -> Self {
        Self {
            path: root.join("events.log"),
            lines: Mutex::new(Vec::new()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `event`; a file that cannot be written is logged, the in-memory record is kept anyway.
    pub fn record(&self, event: &Event) {
        let line = event.to_string();
        tracing::info!(event = %line, "lifecycle event");
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
        if let Err(error) = written {
            tracing::warn!(path = %self.path.display(), %error, "cannot append to the events log");
        }
        self.lines.lock().push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_appended_one_per_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::new(dir.path());
        let pod = PodName::new("ns", "tern-1");
        log.record(&Event::Start {
            pod: pod.clone(),
            ip: Ipv4Addr::new(127, 77, 0, 3),
        });
        log.record(&Event::PreStop {
            pod: pod.clone(),
            exit: 0,
        });
        log.record(&Event::Stop { pod });
        let expected = [
            "start ns/tern-1 ip=127.77.0.3",
            "prestop ns/tern-1 exit=0",
            "stop ns/tern-1",
        ];
        assert_eq!(log.lines(), expected);
        let file = std::fs::read_to_string(log.path()).expect("events.log");
        assert_eq!(file, expected.join("\n") + "\n");
    }
}
