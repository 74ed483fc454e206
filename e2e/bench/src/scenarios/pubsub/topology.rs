//! Who publishes where and who listens: the shape of each publish/subscribe scenario.
//!
//! A *sink* is what losses and duplicates are counted against: one subscriber, or a whole
//! `$share` group (each message should reach the group once). Topics live under
//! `tern-bench/RUN/` so runs never hear each other.

use anyhow::ensure;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    P2p,
    Fanout,
    Fanin,
    Shared,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::P2p => "p2p",
            Kind::Fanout => "fanout",
            Kind::Fanin => "fanin",
            Kind::Shared => "shared",
        }
    }

    /// The scenario's N when `--clients` is not given.
    pub fn default_clients(self) -> usize {
        match self {
            Kind::P2p | Kind::Shared => 10,
            Kind::Fanout | Kind::Fanin => 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberSpec {
    pub filter: String,
    pub sink: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The topic of each publisher; the index is the publisher's number in payload stamps.
    pub publishers: Vec<String>,
    pub subscribers: Vec<SubscriberSpec>,
    /// For each sink, the publishers it should hear.
    pub sinks: Vec<Vec<u32>>,
}

impl Topology {
    /// `clients` is the scenario's N: pairs (p2p), subscribers (fanout) or publishers (fanin,
    /// shared); `group_size` is the `$share` group's size.
    pub fn build(kind: Kind, clients: usize, group_size: usize, run: &str) -> anyhow::Result<Self> {
        ensure!(clients > 0, "--clients must be at least 1");
        let base = format!("tern-bench/{run}/{}", kind.name());
        let all = |n: usize| (0..n as u32).collect::<Vec<_>>();
        let topology = match kind {
            Kind::P2p => Topology {
                publishers: (0..clients).map(|i| format!("{base}/{i}")).collect(),
                subscribers: (0..clients)
                    .map(|i| SubscriberSpec {
                        filter: format!("{base}/{i}"),
                        sink: i,
                    })
                    .collect(),
                sinks: (0..clients as u32).map(|i| vec![i]).collect(),
            },
            Kind::Fanout => Topology {
                publishers: vec![base.clone()],
                subscribers: (0..clients)
                    .map(|i| SubscriberSpec {
                        filter: base.clone(),
                        sink: i,
                    })
                    .collect(),
                sinks: vec![vec![0]; clients],
            },
            Kind::Fanin => Topology {
                publishers: (0..clients).map(|i| format!("{base}/{i}")).collect(),
                subscribers: vec![SubscriberSpec {
                    filter: format!("{base}/+"),
                    sink: 0,
                }],
                sinks: vec![all(clients)],
            },
            Kind::Shared => {
                ensure!(group_size > 0, "--group-size must be at least 1");
                let filter = format!("$share/bench/{base}/+");
                Topology {
                    publishers: (0..clients).map(|i| format!("{base}/{i}")).collect(),
                    subscribers: (0..group_size)
                        .map(|_| SubscriberSpec {
                            filter: filter.clone(),
                            sink: 0,
                        })
                        .collect(),
                    sinks: vec![all(clients)],
                }
            }
        };
        Ok(topology)
    }

    /// Deliveries expected when publisher `p` has sent `sent[p]` messages.
    pub fn expected(&self, sent: &[u64]) -> u64 {
        self.sinks
            .iter()
            .flatten()
            .map(|&p| sent.get(p as usize).copied().unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2p_pairs_each_publisher_with_its_own_subscriber() {
        let t = Topology::build(Kind::P2p, 3, 10, "r").unwrap();
        assert_eq!(
            t.publishers,
            [
                "tern-bench/r/p2p/0",
                "tern-bench/r/p2p/1",
                "tern-bench/r/p2p/2"
            ]
        );
        assert_eq!(
            t.subscribers[1],
            SubscriberSpec {
                filter: "tern-bench/r/p2p/1".into(),
                sink: 1
            }
        );
        assert_eq!(t.sinks, [vec![0], vec![1], vec![2]]);
        assert_eq!(t.expected(&[5, 6, 7]), 18);
    }

    #[test]
    fn fanout_has_one_publisher_heard_by_every_subscriber() {
        let t = Topology::build(Kind::Fanout, 1000, 10, "r").unwrap();
        assert_eq!(t.publishers.len(), 1);
        assert_eq!(t.subscribers.len(), 1000);
        assert!(t.subscribers.iter().all(|s| s.filter == t.publishers[0]));
        assert_eq!(t.expected(&[10]), 10_000);
    }

    #[test]
    fn fanin_has_one_wildcard_subscriber() {
        let t = Topology::build(Kind::Fanin, 4, 10, "r").unwrap();
        assert_eq!(
            t.subscribers,
            [SubscriberSpec {
                filter: "tern-bench/r/fanin/+".into(),
                sink: 0
            }]
        );
        assert_eq!(t.sinks, [vec![0, 1, 2, 3]]);
        assert_eq!(t.expected(&[1, 1, 1, 1]), 4);
    }

    #[test]
    fn shared_group_is_one_sink() {
        let t = Topology::build(Kind::Shared, 5, 10, "r").unwrap();
        assert_eq!(t.subscribers.len(), 10);
        assert!(
            t.subscribers
                .iter()
                .all(|s| s.sink == 0 && s.filter == "$share/bench/tern-bench/r/shared/+")
        );
        assert_eq!(
            t.expected(&[2; 5]),
            10,
            "each message reaches the group once"
        );
    }

    #[test]
    fn zero_clients_is_refused() {
        assert!(Topology::build(Kind::P2p, 0, 10, "r").is_err());
        assert!(Topology::build(Kind::Shared, 3, 0, "r").is_err());
    }
}
