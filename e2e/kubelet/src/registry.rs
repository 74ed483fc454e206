//! The addresses and process ids of the pods this kubelet runs, shared by the pod workers (which
//! write it) and the embedding test's [`crate::KubeletHandle`] (which reads it). One short lock,
//! never held across an await.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use parking_lot::Mutex;

use crate::config::IpPrefix;
use crate::ip::IpAllocator;
use crate::pod::{PodName, PodUid};

#[derive(Debug)]
pub struct Registry {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    ips: IpAllocator,
    pods: HashMap<PodName, Entry>,
}

#[derive(Debug)]
struct Entry {
    uid: PodUid,
    ip: Ipv4Addr,
    pids: BTreeMap<String, u32>,
}

impl Registry {
    pub fn new(prefix: IpPrefix) -> Self {
        Self {
            state: Mutex::new(State {
                ips: IpAllocator::new(prefix),
                pods: HashMap::new(),
            }),
        }
    }

    /// Gives the pod an address; `None` when all are taken. A newer pod of the same name (a
    /// StatefulSet replacement) takes the name over from one still shutting down.
    pub fn admit(&self, pod: &PodName, uid: &PodUid) -> Option<Ipv4Addr> {
        let mut state = self.state.lock();
        let ip = state.ips.allocate()?;
        let entry = Entry {
            uid: uid.clone(),
            ip,
            pids: BTreeMap::new(),
        };
        state.pods.insert(pod.clone(), entry);
        Some(ip)
    }

    /// Frees the pod's address.
    pub fn release(&self, pod: &PodName, uid: &PodUid, ip: Ipv4Addr) {
        let mut state = self.state.lock();
        state.ips.release(ip);
        if state.pods.get(pod).is_some_and(|entry| entry.uid == *uid) {
            state.pods.remove(pod);
        }
    }

    pub fn set_pid(&self, pod: &PodName, uid: &PodUid, container: &str, pid: Option<u32>) {
        let mut state = self.state.lock();
        let Some(entry) = state.pods.get_mut(pod).filter(|entry| entry.uid == *uid) else {
            return;
        };
        match pid {
            Some(pid) => entry.pids.insert(container.to_owned(), pid),
            None => entry.pids.remove(container),
        };
    }

    pub fn pod_ip(&self, pod: &PodName) -> Option<Ipv4Addr> {
        self.state.lock().pods.get(pod).map(|entry| entry.ip)
    }

    /// The address of this pod, not of another one of the same name.
    pub fn ip_of(&self, pod: &PodName, uid: &PodUid) -> Option<Ipv4Addr> {
        let state = self.state.lock();
        let entry = state.pods.get(pod)?;
        (entry.uid == *uid).then_some(entry.ip)
    }

    pub fn pid(&self, pod: &PodName, container: &str) -> Option<u32> {
        self.state
            .lock()
            .pods
            .get(pod)?
            .pids
            .get(container)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_pod_keeps_its_entry_when_the_old_one_leaves() {
        let registry = Registry::new(IpPrefix([127, 77, 0]));
        let pod = PodName::new("ns", "tern-1");
        let (old, new) = (PodUid("a".into()), PodUid("b".into()));
        let old_ip = registry.admit(&pod, &old).expect("address");
        let new_ip = registry.admit(&pod, &new).expect("address");
        registry.set_pid(&pod, &new, "broker", Some(42));
        registry.set_pid(&pod, &old, "broker", Some(41));
        assert_eq!(
            registry.ip_of(&pod, &old),
            None,
            "the name went to the new pod"
        );
        registry.release(&pod, &old, old_ip);
        assert_eq!(registry.pod_ip(&pod), Some(new_ip));
        assert_eq!(registry.ip_of(&pod, &new), Some(new_ip));
        assert_eq!(registry.pid(&pod, "broker"), Some(42));
        registry.release(&pod, &new, new_ip);
        assert_eq!(registry.pod_ip(&pod), None);
    }
}
