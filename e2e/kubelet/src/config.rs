//! What a kubelet is told at start: the node it plays, the pods it runs, where their files go, which
//! local executables stand in for container images. Parsing of the `--ip-prefix` and `--binary` flags
//! lives here too, so the binary and embedding tests build the same `KubeletConfig`.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Everything [`crate::Kubelet::start`] needs.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// Kubeconfig file; `None` uses the `KUBECONFIG` environment variable or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Label selector of the pods this kubelet schedules and runs, e.g. `app.kubernetes.io/name=tern-broker`.
    pub selector: String,
    /// Only pods (and ConfigMaps and Secrets) of this namespace; `None` watches all namespaces.
    pub namespace: Option<String>,
    /// Name of the Node object this kubelet registers and binds pods to.
    pub node_name: String,
    /// Pods get the addresses `<prefix>.2` to `<prefix>.254`.
    pub ip_prefix: IpPrefix,
    /// Pod directories, volumes, container logs and `events.log` go here.
    pub root: PathBuf,
    /// Container command or image name → local executable.
    pub binaries: BinaryMap,
    /// The cluster's DNS domain, of the names in the pods' hosts files (see [`crate::dns`]).
    pub cluster_domain: String,
}

impl KubeletConfig {
    /// A configuration with the defaults of the command line: selector
    /// `app.kubernetes.io/name=tern-broker`, node `tern-test-node`, addresses `127.77.0.x`, all
    /// namespaces, cluster domain `cluster.local`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            kubeconfig: None,
            selector: "app.kubernetes.io/name=tern-broker".to_owned(),
            namespace: None,
            node_name: "tern-test-node".to_owned(),
            ip_prefix: IpPrefix([127, 77, 0]),
            root: root.into(),
            binaries: BinaryMap::default(),
            cluster_domain: "cluster.local".to_owned(),
        }
    }
}

/// The first three octets of the pods' loopback addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix(pub [u8; 3]);

impl IpPrefix {
    /// The address `<prefix>.<host>`.
    pub fn address(self, host: u8) -> Ipv4Addr {
        let [a, b, c] = self.0;
        Ipv4Addr::new(a, b, c, host)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.0;
        write!(f, "{a}.{b}.{c}")
    }
}

/// A flag value that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("ip prefix {0:?}: expected three octets of a loopback address, like 127.77.0")]
    IpPrefix(String),
    #[error("binary {0:?}: expected NAME=PATH")]
    Binary(String),
}

impl FromStr for IpPrefix {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::IpPrefix(text.to_owned());
        let octets: Vec<u8> = text
            .trim_end_matches('.')
            .split('.')
            .map(|octet| octet.parse::<u8>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        match octets.as_slice() {
            // Only loopback: the pods' listeners must never be reachable from outside this machine.
            [127, b, c] => Ok(Self([127, *b, *c])),
            _ => Err(bad()),
        }
    }
}

/// Container command names and image names mapped to local executables (`--binary NAME=PATH`).
#[derive(Debug, Clone, Default)]
pub struct BinaryMap {
    binaries: HashMap<String, PathBuf>,
}

impl BinaryMap {
    /// Maps `name` (a command, or an image's repository basename) to `path`.
    pub fn insert(&mut self, name: impl Into<String>, path: impl Into<PathBuf>) {
        self.binaries.insert(name.into(), path.into());
    }

    /// The executable for a command word: looked up as given, then by its basename
    /// (`/usr/local/bin/tern-broker` → `tern-broker`).
    pub fn get(&self, command: &str) -> Option<&Path> {
        self.binaries
            .get(command)
            .or_else(|| self.binaries.get(basename(command)))
            .map(PathBuf::as_path)
    }

    /// Parses one `NAME=PATH` flag value and adds it.
    pub fn insert_flag(&mut self, flag: &str) -> Result<(), ConfigError> {
        match flag.split_once('=') {
            Some((name, path)) if !name.is_empty() && !path.is_empty() => {
                self.insert(name, path);
                Ok(())
            }
            _ => Err(ConfigError::Binary(flag.to_owned())),
        }
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The repository basename of an image reference, which names its binary:
/// `ghcr.io/tern-mqtt/tern-broker:0.1.0` → `tern-broker`, `localhost:5000/x@sha256:…` → `x`.
pub fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = basename(without_digest);
    last.split(':').next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_prefix_takes_three_loopback_octets() {
        assert_eq!("127.77.0".parse(), Ok(IpPrefix([127, 77, 0])));
        assert_eq!("127.77.0.".parse(), Ok(IpPrefix([127, 77, 0])));
        assert!("10.0.0".parse::<IpPrefix>().is_err());
        assert!("127.77".parse::<IpPrefix>().is_err());
        assert!("127.77.0.1".parse::<IpPrefix>().is_err());
        assert!("127.300.0".parse::<IpPrefix>().is_err());
        assert_eq!(
            IpPrefix([127, 77, 0]).address(9),
            Ipv4Addr::new(127, 77, 0, 9)
        );
    }

    #[test]
    fn image_names_are_repository_basenames() {
        assert_eq!(
            image_name("ghcr.io/tern-mqtt/tern-broker:0.1.0"),
            "tern-broker"
        );
        assert_eq!(image_name("tern-broker"), "tern-broker");
        assert_eq!(
            image_name("localhost:5000/tern-broker@sha256:abc"),
            "tern-broker"
        );
        assert_eq!(image_name("localhost:5000/a/b:1"), "b");
    }

    #[test]
    fn binaries_are_found_by_name_or_basename() {
        let mut map = BinaryMap::default();
        map.insert_flag("tern-broker=/bin/tb").expect("valid flag");
        assert_eq!(map.get("tern-broker"), Some(Path::new("/bin/tb")));
        assert_eq!(
            map.get("/usr/local/bin/tern-broker"),
            Some(Path::new("/bin/tb"))
        );
        assert_eq!(map.get("sh"), None);
        assert!(map.insert_flag("tern-broker").is_err());
        assert!(map.insert_flag("=x").is_err());
    }
}
