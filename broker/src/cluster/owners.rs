//! Who holds each client id, and who keeps each connected client's will, cluster-wide.
//!
//! Every client id has one *arbiter*: the live node that ranks highest for it by rendezvous hashing
//! (each node scores `hash(client id, node id)`; the highest wins), so every node that agrees on
//! the members agrees on the arbiter, and a member leaving moves only its own client ids. A node
//! with a CONNECT claims the id from its arbiter, which answers with the node that held it before;
//! the claimant then takes the session over from that node. After the members change, each node
//! registers its sessions again with their (possibly new) arbiters; when two nodes hold one id, the
//! newer connection wins and the arbiter evicts the older.
//!
//! A connected client's will is kept by its *keeper*: the highest-ranked live node other than the
//! one it is connected to, so that it survives that node's death. When a node dies, each keeper
//! publishes the wills it keeps for that node's clients.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::session::PendingWill;

/// One ranking of a node for a client id: the same on every node (a fixed-key hash).
fn score(client_id: &str, node_id: &str) -> u64 {
    // foldhash with a fixed seed: stable across processes, unlike a per-process random state.
    let mut hasher = foldhash::fast::FixedState::with_seed(0x7465_726e).build_hasher();
    hasher.write(client_id.as_bytes());
    hasher.write_u8(0xff);
    hasher.write(node_id.as_bytes());
    hasher.finish()
}

/// The node among `nodes` that ranks highest for `client_id`.
pub fn rank_first<'a>(
    client_id: &str,
    nodes: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    nodes
        .into_iter()
        .max_by_key(|node| (score(client_id, node), *node))
}

/// An owner as the arbiter records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub node_id: std::sync::Arc<str>,
    /// When the owner accepted the connection (milliseconds; the newer wins a conflict).
    pub stamp: u64,
}

/// The client ids this node arbitrates.
#[derive(Debug, Default)]
pub struct OwnerTable {
    owners: HashMap<String, Held>,
}

/// What a registration decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    /// The registering node holds the id now.
    Accepted,
    /// The id is held by a newer connection elsewhere: the registering node must let it go.
    Stale,
    /// The registering node's connection is the newer: this node (the previous holder) must let
    /// it go.
    Displaced(std::sync::Arc<str>),
}

impl OwnerTable {
    /// A CONNECT on `node` claims `client_id`: it holds the id from now on; returns who held it.
    pub fn claim(&mut self, client_id: &str, held: Held) -> Option<Held> {
        self.owners.insert(client_id.to_owned(), held)
    }

    /// A node says it holds `client_id` (after the arbiter changed, or after a partition healed).
    pub fn register(&mut self, client_id: &str, held: Held) -> Registered {
        match self.owners.get(client_id) {
            Some(current) if current.node_id == held.node_id => {
                self.owners.insert(client_id.to_owned(), held);
                Registered::Accepted
            }
            Some(current) if current.stamp >= held.stamp => Registered::Stale,
            Some(current) => {
                let displaced = std::sync::Arc::clone(&current.node_id);
                self.owners.insert(client_id.to_owned(), held);
                Registered::Displaced(displaced)
            }
            None => {
                self.owners.insert(client_id.to_owned(), held);
                Registered::Accepted
            }
        }
    }

    /// Who holds `client_id`, as far as this arbiter knows.
    pub fn holder(&self, client_id: &str) -> Option<Held> {
        self.owners.get(client_id).cloned()
    }

    /// Forgets every id a departed node held.
    pub fn forget_node(&mut self, node_id: &str) {
        self.owners.retain(|_, held| &*held.node_id != node_id);
    }

    /// Forgets the ids this node no longer arbitrates (the members changed).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.owners.retain(|client_id, _| keep(client_id));
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }
}

/// A will kept for a client of another node.
#[derive(Debug, Clone)]
pub struct KeptWill {
    pub owner: std::sync::Arc<str>,
    pub owner_generation: u64,
    pub will: PendingWill,
}

/// The wills this node keeps, by client id.
#[derive(Debug, Default)]
pub struct WillTable {
    wills: HashMap<String, KeptWill>,
}

impl WillTable {
    pub fn keep(&mut self, client_id: String, will: KeptWill) {
        self.wills.insert(client_id, will);
    }

    /// Drops the will of `client_id` if `owner` is the node that left it.
    pub fn drop_will(&mut self, client_id: &str, owner: &str) {
        if self
            .wills
            .get(client_id)
            .is_some_and(|kept| &*kept.owner == owner)
        {
            self.wills.remove(client_id);
        }
    }

    /// Takes the wills of a node that died (that incarnation of it).
    pub fn take_for(&mut self, owner: &str, generation: u64) -> Vec<(String, PendingWill)> {
        let dead: Vec<String> = self
            .wills
            .iter()
            .filter(|(_, kept)| &*kept.owner == owner && kept.owner_generation == generation)
            .map(|(client_id, _)| client_id.clone())
            .collect();
        dead.into_iter()
            .filter_map(|id| self.wills.remove(&id).map(|kept| (id, kept.will)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.wills.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn every_node_agrees_on_the_arbiter_and_a_departure_moves_only_its_own_ids() {
        let all = ["n-0", "n-1", "n-2", "n-3"];
        let mut moved = 0;
        let mut owned_by_gone = 0;
        for i in 0..1000 {
            let id = format!("client-{i}");
            let before = rank_first(&id, all).unwrap();
            let mut reversed = all;
            reversed.reverse();
            assert_eq!(
                rank_first(&id, reversed),
                Some(before),
                "order does not matter"
            );
            let after = rank_first(&id, all.iter().copied().filter(|n| *n != "n-2")).unwrap();
            if before == "n-2" {
                owned_by_gone += 1;
            }
            if before != after {
                moved += 1;
                assert_eq!(before, "n-2", "only the departed node's ids move");
            }
        }
        assert_eq!(moved, owned_by_gone);
        assert!(
            (150..350).contains(&owned_by_gone),
            "about a quarter each: {owned_by_gone}"
        );
    }

    #[test]
    fn the_newer_connection_wins_a_registration_conflict() {
        let held = |node: &str, stamp| Held {
            node_id: Arc::from(node),
            stamp,
        };
        let mut table = OwnerTable::default();
        assert_eq!(table.claim("c", held("a", 10)), None);
        assert_eq!(table.register("c", held("b", 5)), Registered::Stale);
        assert_eq!(
            table.register("c", held("b", 20)),
            Registered::Displaced(Arc::from("a"))
        );
        assert_eq!(table.claim("c", held("a", 30)), Some(held("b", 20)));
        table.forget_node("a");
        assert_eq!(table.len(), 0);
    }
}
