//! Cluster DNS as the pods see it, through the kubelet's managed `/etc/hosts`.
//!
//! A real kubelet mounts a hosts file of its own making at `/etc/hosts` in every container (the
//! pod's own name and address) and points the container's resolver at the cluster DNS, which
//! answers for headless Services with the addresses of their pods — the ready ones, or all of them
//! with `publishNotReadyAddresses` — and for `HOSTNAME.SUBDOMAIN.NAMESPACE.svc.DOMAIN` per pod.
//! There is no DNS server here. Instead each pod gets a hosts file with its own entry, as a kubelet
//! writes it, followed by those cluster DNS records for every headless Service with a selector and
//! the pods of this kubelet that it selects; the file is rewritten in place (same inode) whenever a
//! pod comes, goes or changes readiness, or a Service changes. Each process of the pod runs in a
//! mount namespace of its own where that file is bind-mounted over `/etc/hosts` (see
//! [`crate::pod::process::Launcher`]); glibc reads `/etc/hosts` on every lookup, so a process sees
//! the current records the next time it resolves a name. The host's own `/etc/hosts` is never
//! touched.
//!
//! What this does not do: Services with a cluster IP (nothing here routes it), pods this kubelet
//! does not run, SRV records, and search domains (names must be fully qualified).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pod::{PodName, PodUid};
use crate::registry::Registry;

/// What a pod's own line says: its address, host name and, with a subdomain, its fully qualified
/// name (`HOSTNAME.SUBDOMAIN.NAMESPACE.svc.DOMAIN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnEntry {
    pub ip: Ipv4Addr,
    pub hostname: String,
    pub fqdn: Option<String>,
}

impl OwnEntry {
    /// The entry of `pod` at `ip`: `spec.hostname` (else the pod's name) and `spec.subdomain`.
    pub fn of(pod: &Pod, ip: Ipv4Addr, domain: &str) -> Self {
        let spec = pod.spec.as_ref();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let hostname = spec.and_then(|s| s.hostname.clone()).unwrap_or(name);
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let fqdn = spec
            .and_then(|s| s.subdomain.as_deref())
            .filter(|subdomain| !subdomain.is_empty())
            .map(|subdomain| format!("{hostname}.{subdomain}.{namespace}.svc.{domain}"));
        Self { ip, hostname, fqdn }
    }
}

/// The cluster DNS records of headless Services: `(address, name)`, sorted. `pods` are the pods
/// that have an address, with it.
pub fn cluster_records(
    services: &[Arc<Service>],
    pods: &[(Arc<Pod>, Ipv4Addr)],
    domain: &str,
) -> Vec<(Ipv4Addr, String)> {
    let mut records = Vec::new();
    for service in services {
        let Some(spec) = &service.spec else { continue };
        let selector = spec.selector.clone().unwrap_or_default();
        if spec.cluster_ip.as_deref() != Some("None") || selector.is_empty() {
            continue;
        }
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        let service_name = format!("{name}.{namespace}.svc.{domain}");
        let all = spec.publish_not_ready_addresses == Some(true);
        for (pod, ip) in pods {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let selected = pod.metadata.namespace.as_deref() == Some(namespace)
                && selector.iter().all(|(k, v)| labels.get(k) == Some(v));
            if !selected || !(all || is_ready(pod)) {
                continue;
            }
            records.push((*ip, service_name.clone()));
            let pod_spec = pod.spec.as_ref();
            if let Some(hostname) = pod_spec.and_then(|s| s.hostname.as_deref())
                && pod_spec.and_then(|s| s.subdomain.as_deref()) == Some(name)
            {
                records.push((*ip, format!("{hostname}.{service_name}")));
            }
        }
    }
    records.sort();
    records.dedup();
    records
}

/// Ready, and not on its way out: what the endpoints of a Service without
/// `publishNotReadyAddresses` hold.
fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The text of a pod's hosts file: the kubelet's part, then the cluster DNS records.
pub fn hosts_file(own: &OwnEntry, records: &[(Ipv4Addr, String)]) -> String {
    let mut text = String::from(
        "# Kubernetes-managed hosts file (tern-test-kubelet).\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    match &own.fqdn {
        Some(fqdn) => writeln!(text, "{}\t{fqdn}\t{}", own.ip, own.hostname),
        None => writeln!(text, "{}\t{}", own.ip, own.hostname),
    }
    .ok();
    text.push_str("# Cluster DNS records of headless Services (tern-test-kubelet's stand-in).\n");
    for (ip, name) in records {
        writeln!(text, "{ip}\t{name}").ok();
    }
    text
}

/// A hosts file being kept up to date.
#[derive(Debug)]
struct Attached {
    own: OwnEntry,
    path: PathBuf,
    written: String,
}

/// The pods' hosts files and what they are made from; shared by the pod workers (which attach and
/// detach their pod) and the watch task (which refreshes them all).
pub struct ClusterDns {
    domain: String,
    pods: Store<Pod>,
    services: Store<Service>,
    registry: Arc<Registry>,
    /// By pod UID. The lock is held while the files are written: short, and never across an await.
    attached: Mutex<HashMap<PodUid, Attached>>,
}

impl ClusterDns {
    /// Watches the selected pods and the Services (of `namespace`, or everywhere) and keeps the
    /// attached hosts files current until `cancel`.
    pub fn start(
        client: Client,
        selection: (&str, Option<&str>),
        domain: &str,
        registry: Arc<Registry>,
        cancel: CancellationToken,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let (selector, namespace) = selection;
        let (pod_api, service_api): (Api<Pod>, Api<Service>) = match namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        };
        let (pods, pod_writer) = reflector::store();
        let (services, service_writer) = reflector::store();
        let pod_events = reflector::reflector(
            pod_writer,
            watcher(pod_api, watcher::Config::default().labels(selector)),
        )
        .default_backoff()
        .map(|event| event.map(|_| ()))
        .boxed();
        let service_events = reflector::reflector(
            service_writer,
            watcher(service_api, watcher::Config::default()),
        )
        .default_backoff()
        .map(|event| event.map(|_| ()))
        .boxed();
        let dns = Arc::new(Self {
            domain: domain.to_owned(),
            pods,
            services,
            registry,
            attached: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn({
            let dns = dns.clone();
            async move {
                let mut events = stream::select(pod_events, service_events);
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        event = events.next() => match event {
                            Some(Ok(())) => dns.refresh(),
                            Some(Err(error)) => tracing::warn!(%error, "pod/service watch for cluster DNS failed; retrying"),
                            None => return,
                        },
                    }
                }
            }
        });
        (dns, task)
    }

    /// Writes `path` as `pod`'s hosts file and keeps it current until [`ClusterDns::detach`]. The
    /// other pods' files are refreshed too: they now have this pod's address.
    pub fn attach(&self, pod: &Pod, uid: &PodUid, ip: Ipv4Addr, path: PathBuf) {
        let own = OwnEntry::of(pod, ip, &self.domain);
        self.attached.lock().insert(
            uid.clone(),
            Attached {
                own,
                path,
                written: String::new(),
            },
        );
        self.refresh();
    }

    /// Stops keeping the pod's file; the others lose its records.
    pub fn detach(&self, uid: &PodUid) {
        self.attached.lock().remove(uid);
        self.refresh();
    }

    /// Rewrites, in place, every attached file whose text changed.
    pub fn refresh(&self) {
        let services = self.services.state();
        let pods: Vec<(Arc<Pod>, Ipv4Addr)> = self
            .pods
            .state()
            .into_iter()
            .filter_map(|pod| {
                let ip = self.registry.ip_of(&PodName::of(&pod), &PodUid::of(&pod))?;
                Some((pod, ip))
            })
            .collect();
        let records = cluster_records(&services, &pods, &self.domain);
        let mut attached = self.attached.lock();
        for file in attached.values_mut() {
            let text = hosts_file(&file.own, &records);
            if text == file.written {
                continue;
            }
            // `write` truncates and writes the same inode: a bind mount of it sees the new text.
            match std::fs::write(&file.path, &text) {
                Ok(()) => file.written = text,
                Err(error) => {
                    tracing::warn!(path = %file.path.display(), %error, "cannot write a hosts file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, ServiceSpec};
    use kube::api::ObjectMeta;

    use super::*;

    fn service(name: &str, headless: bool, not_ready_too: bool) -> Arc<Service> {
        Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(if headless { "None" } else { "10.0.0.7" }.into()),
                selector: Some(BTreeMap::from([("app".into(), "mqtt".into())])),
                publish_not_ready_addresses: Some(not_ready_too),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        })
    }

    fn pod(name: &str, app: &str, ready: bool, host: u8) -> (Arc<Pod>, Ipv4Addr) {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some(BTreeMap::from([("app".into(), app.into())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                hostname: Some(name.into()),
                subdomain: Some("mqtt-headless".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        };
        (Arc::new(pod), Ipv4Addr::new(127, 77, 0, host))
    }

    #[test]
    fn a_headless_service_names_its_pods_ready_or_not_as_it_asks() {
        let pods = [
            pod("mqtt-0", "mqtt", true, 2),
            pod("mqtt-1", "mqtt", false, 3),
            pod("other-0", "other", true, 4),
        ];
        let services = [
            service("mqtt-headless", true, true),
            service("mqtt-ready", true, false),
            service("mqtt", false, true),
        ];
        let records = cluster_records(&services, &pods, "cluster.local");
        let text: Vec<String> = records.iter().map(|(ip, n)| format!("{ip} {n}")).collect();
        assert_eq!(
            text,
            [
                "127.77.0.2 mqtt-0.mqtt-headless.ns.svc.cluster.local",
                "127.77.0.2 mqtt-headless.ns.svc.cluster.local",
                "127.77.0.2 mqtt-ready.ns.svc.cluster.local",
                "127.77.0.3 mqtt-1.mqtt-headless.ns.svc.cluster.local",
                "127.77.0.3 mqtt-headless.ns.svc.cluster.local",
            ]
        );
    }

    #[test]
    fn the_hosts_file_starts_with_the_pods_own_entry() {
        let (pod, ip) = pod("mqtt-0", "mqtt", true, 2);
        let own = OwnEntry::of(&pod, ip, "cluster.local");
        let text = hosts_file(
            &own,
            &[(
                Ipv4Addr::new(127, 77, 0, 3),
                "mqtt-headless.ns.svc.cluster.local".into(),
            )],
        );
        assert!(
            text.starts_with("# Kubernetes-managed hosts file"),
            "{text}"
        );
        assert!(text.contains("127.0.0.1\tlocalhost\n"), "{text}");
        assert!(
            text.contains("127.77.0.2\tmqtt-0.mqtt-headless.ns.svc.cluster.local\tmqtt-0\n"),
            "{text}"
        );
        assert!(
            text.ends_with("127.77.0.3\tmqtt-headless.ns.svc.cluster.local\n"),
            "{text}"
        );
        let mut plain = Pod::clone(&pod);
        plain.spec = None;
        let own = OwnEntry::of(&plain, ip, "cluster.local");
        assert_eq!(own.fqdn, None);
        assert!(hosts_file(&own, &[]).contains("127.77.0.2\tmqtt-0\n"));
    }
}
