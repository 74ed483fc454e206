//! Where messages must go in the cluster: for every route (a filter with direct subscribers, or a
//! shared group's filter) the set of nodes that hold it, this node included. Publishing matches a
//! topic once against this table and learns which peers get a copy and, for each matching shared
//! group, which one node delivers it.
//!
//! Nodes are bits of a 64-bit set ([`NodeBit`]), this node always bit 0; a cluster has at most 64
//! nodes. Each node's own route set is also kept (`by_node`), so that a node's snapshot can replace
//! what it held before and a node that leaves takes its routes with it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::topic::{FilterTrie, ShareName, SubscriptionFilter, TopicFilter};

/// The most nodes a cluster can have (this node included).
pub const MAX_NODES: usize = 64;

/// A node's place in the table: its bit in every node set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeBit(u8);

impl NodeBit {
    /// This node.
    pub const LOCAL: Self = Self(0);

    fn mask(self) -> u64 {
        1 << self.0
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Who holds one filter.
#[derive(Debug)]
struct Entry {
    filter: TopicFilter,
    /// Nodes with direct (non-shared) subscribers.
    direct: u64,
    groups: Vec<Group>,
}

#[derive(Debug)]
struct Group {
    name: ShareName,
    nodes: u64,
    /// Turns through `nodes` message by message.
    cursor: AtomicUsize,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.direct == 0 && self.groups.is_empty()
    }
}

/// Where one message goes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Peers with a matching direct route.
    pub direct: u64,
    /// Shared groups this node delivers itself.
    pub local_groups: Vec<SubscriptionFilter>,
    /// Shared groups picked for a peer, with the peer.
    pub remote_groups: Vec<(NodeBit, SubscriptionFilter)>,
}

impl Plan {
    /// Every peer that gets a copy: a direct match or a group picked for it.
    pub fn peers(&self) -> u64 {
        self.remote_groups
            .iter()
            .fold(self.direct, |set, (node, _)| set | node.mask())
    }

    /// The shared groups picked for `node`.
    pub fn groups_for(&self, node: NodeBit) -> Vec<SubscriptionFilter> {
        self.remote_groups
            .iter()
            .filter(|(n, _)| *n == node)
            .map(|(_, group)| group.clone())
            .collect()
    }

    pub fn has_direct(&self, node: NodeBit) -> bool {
        self.direct & node.mask() != 0
    }
}

/// The bits of a node set, lowest first.
pub fn nodes_in(set: u64) -> impl Iterator<Item = NodeBit> {
    (0..64u8)
        .filter(move |bit| set & (1 << bit) != 0)
        .map(NodeBit)
}

/// Every node's routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    trie: FilterTrie<Entry>,
    by_node: HashMap<NodeBit, HashSet<SubscriptionFilter>>,
    /// Bits given to nodes; bit 0 is this node's from the start.
    taken: u64,
}

impl RouteTable {
    pub fn new() -> Self {
        Self {
            taken: NodeBit::LOCAL.mask(),
            ..Self::default()
        }
    }

    /// A bit for a new peer; `None` when the cluster is full.
    pub fn allocate(&mut self) -> Option<NodeBit> {
        let free = (!self.taken).trailing_zeros();
        let bit = u8::try_from(free)
            .ok()
            .filter(|b| usize::from(*b) < MAX_NODES)?;
        self.taken |= 1 << bit;
        Some(NodeBit(bit))
    }

    /// Forgets a peer and every route it held; its bit may be given out again.
    pub fn release(&mut self, node: NodeBit) {
        self.replace(node, HashSet::new());
        self.by_node.remove(&node);
        if node != NodeBit::LOCAL {
            self.taken &= !node.mask();
        }
    }

    /// Adds a route for `node`; false if it already had it.
    pub fn add(&mut self, node: NodeBit, route: &SubscriptionFilter) -> bool {
        if !self.by_node.entry(node).or_default().insert(route.clone()) {
            return false;
        }
        let entry = self.trie.entry_or_insert_with(&route.filter, || Entry {
            filter: route.filter.clone(),
            direct: 0,
            groups: Vec::new(),
        });
        match &route.share {
            None => entry.direct |= node.mask(),
            Some(name) => match entry.groups.iter_mut().find(|g| &g.name == name) {
                Some(group) => group.nodes |= node.mask(),
                None => entry.groups.push(Group {
                    name: name.clone(),
                    nodes: node.mask(),
                    cursor: AtomicUsize::new(0),
                }),
            },
        }
        true
    }

    /// Removes a route of `node`; false if it did not have it.
    pub fn remove(&mut self, node: NodeBit, route: &SubscriptionFilter) -> bool {
        let held = self
            .by_node
            .get_mut(&node)
            .is_some_and(|routes| routes.remove(route));
        if !held {
            return false;
        }
        if let Some(entry) = self.trie.get_mut(&route.filter) {
            match &route.share {
                None => entry.direct &= !node.mask(),
                Some(name) => {
                    if let Some(at) = entry.groups.iter().position(|g| &g.name == name) {
                        entry.groups[at].nodes &= !node.mask();
                        if entry.groups[at].nodes == 0 {
                            entry.groups.swap_remove(at);
                        }
                    }
                }
            }
        }
        self.trie.remove_if(&route.filter, Entry::is_empty);
        true
    }

    /// Makes `routes` everything `node` holds (a snapshot from it).
    pub fn replace(&mut self, node: NodeBit, routes: HashSet<SubscriptionFilter>) {
        let old = self.by_node.remove(&node).unwrap_or_default();
        self.by_node.insert(node, old.clone());
        for route in old.difference(&routes) {
            self.remove(node, route);
        }
        for route in routes.difference(&old) {
            self.add(node, route);
        }
    }

    /// How many routes `node` holds.
    pub fn count(&self, node: NodeBit) -> usize {
        self.by_node.get(&node).map_or(0, HashSet::len)
    }

    /// Distinct filters with any route.
    pub fn filters(&self) -> usize {
        self.trie.len()
    }

    /// Where a message on `topic` goes; each matching shared group is given to one of its nodes,
    /// in turn.
    pub fn plan(&self, topic: &str) -> Plan {
        let mut plan = Plan::default();
        self.trie.for_each_match(topic, |entry| {
            plan.direct |= entry.direct;
            for group in &entry.groups {
                let Some(node) = pick(group) else { continue };
                let route = SubscriptionFilter {
                    share: Some(group.name.clone()),
                    filter: entry.filter.clone(),
                };
                if node == NodeBit::LOCAL {
                    plan.local_groups.push(route);
                } else {
                    plan.remote_groups.push((node, route));
                }
            }
        });
        plan.direct &= !NodeBit::LOCAL.mask();
        plan
    }
}

/// The group's next node in turn.
fn pick(group: &Group) -> Option<NodeBit> {
    let count = group.nodes.count_ones() as usize;
    if count == 0 {
        return None;
    }
    let turn = group.cursor.fetch_add(1, Ordering::Relaxed) % count;
    nodes_in(group.nodes).nth(turn)
}

#[cfg(test)]
mod tests {
    use bytestring::ByteString;

    use super::*;

    fn route(text: &'static str) -> SubscriptionFilter {
        SubscriptionFilter::parse(&ByteString::from_static(text), true).expect("a valid filter")
    }

    #[test]
    fn a_message_goes_to_each_peer_with_a_matching_route_once() {
        let mut table = RouteTable::new();
        let (b, c) = (table.allocate().unwrap(), table.allocate().unwrap());
        table.add(NodeBit::LOCAL, &route("a/#"));
        table.add(b, &route("a/+"));
        table.add(b, &route("a/#"));
        table.add(c, &route("x/#"));
        let plan = table.plan("a/1");
        assert_eq!(
            nodes_in(plan.peers()).collect::<Vec<_>>(),
            [b],
            "not the local node, b once"
        );
        assert!(table.plan("y").peers() == 0);
        assert_eq!(table.filters(), 3);
    }

    #[test]
    fn a_shared_group_spread_over_nodes_gets_each_message_once_in_turn() {
        let mut table = RouteTable::new();
        let (b, c) = (table.allocate().unwrap(), table.allocate().unwrap());
        for node in [NodeBit::LOCAL, b, c] {
            table.add(node, &route("$share/g/s/#"));
        }
        let mut local = 0;
        let mut remote = HashMap::new();
        for _ in 0..30 {
            let plan = table.plan("s/1");
            assert_eq!(
                plan.local_groups.len() + plan.remote_groups.len(),
                1,
                "one node per message"
            );
            local += plan.local_groups.len();
            for (node, group) in &plan.remote_groups {
                assert_eq!(group, &route("$share/g/s/#"));
                *remote.entry(*node).or_insert(0) += 1;
            }
        }
        assert_eq!(
            (local, remote.get(&b), remote.get(&c)),
            (10, Some(&10), Some(&10))
        );
    }

    #[test]
    fn a_snapshot_replaces_and_a_departure_removes_a_nodes_routes() {
        let mut table = RouteTable::new();
        let b = table.allocate().unwrap();
        table.add(b, &route("old"));
        table.add(b, &route("kept"));
        table.replace(b, [route("kept"), route("new")].into_iter().collect());
        assert_eq!(table.plan("old").peers(), 0);
        assert_ne!(table.plan("new").peers(), 0);
        assert_eq!(table.count(b), 2);
        table.release(b);
        assert_eq!((table.plan("kept").peers(), table.filters()), (0, 0));
        assert_eq!(table.allocate(), Some(b), "the bit is free again");
    }

    #[test]
    fn the_table_holds_at_most_sixty_four_nodes() {
        let mut table = RouteTable::new();
        for _ in 1..MAX_NODES {
            assert!(table.allocate().is_some());
        }
        assert_eq!(table.allocate(), None);
    }
}
