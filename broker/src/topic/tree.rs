//! The retained-message tree: values keyed by exact topic name, one node per level, searched with a
//! topic filter when a subscription is made.
//!
//! The mirror image of the [`FilterTrie`](super::FilterTrie): there the stored keys have wildcards and
//! the probe does not; here the probe has them. Same arena layout, so no operation recurses.

use std::fmt;

use foldhash::HashMap;

use super::trie::Pending;
use super::{MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL, TopicFilter, compaction, split_first_level};

/// The root node's index; the root always exists, is never freed and never holds a value (a topic
/// name has at least one level).
const ROOT: usize = 0;

/// How many untried branches a search keeps on the call stack before spilling to the heap.
const INLINE_BRANCHES: usize = 16;

/// One topic level.
#[derive(Clone)]
struct Node<T> {
    /// Child levels by their text (which may be empty).
    children: HashMap<Box<str>, usize>,
    /// `None` for the root and for freed nodes, which is what stops pruning.
    parent: Option<usize>,
    /// The topic name ending here, kept whole so a search can report it without rebuilding it, and
    /// its value.
    entry: Option<(Box<str>, T)>,
}

impl<T> Node<T> {
    fn new(parent: Option<usize>) -> Self {
        Self {
            children: HashMap::default(),
            parent,
            entry: None,
        }
    }
}

/// Values keyed by topic name, searchable by topic filter.
///
/// Invariant: every index in a live node's `children` or `parent` is a live node of `nodes`; indexes
/// on `free` are vacant nodes ready for reuse.
#[derive(Clone)]
pub struct TopicTree<T> {
    nodes: Vec<Node<T>>,
    free: Vec<usize>,
    /// Topics holding a value.
    len: usize,
}

impl<T> TopicTree<T> {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            nodes: vec![Node::new(None)],
            free: Vec::new(),
            len: 0,
        }
    }

    /// Stores `value` under `topic` (a valid topic name), returning the value it replaces.
    pub fn insert(&mut self, topic: &str, value: T) -> Option<T> {
        let mut id = ROOT;
        for level in topic.split(SEPARATOR) {
            id = self.child_or_insert(id, level);
        }
        let node = &mut self.nodes[id];
        match &mut node.entry {
            Some((_, old)) => Some(std::mem::replace(old, value)),
            None => {
                node.entry = Some((topic.into(), value));
                self.len += 1;
                None
            }
        }
    }

    /// Removes and returns the value under `topic`, pruning the branch that led only to it.
    pub fn remove(&mut self, topic: &str) -> Option<T> {
        let id = self.find(topic)?;
        let (_, value) = self.nodes[id].entry.take()?;
        self.len -= 1;
        self.prune(id, topic);
        self.compact_if_sparse();
        Some(value)
    }

    /// The value under exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&T> {
        let id = self.find(topic)?;
        self.nodes[id].entry.as_ref().map(|(_, value)| value)
    }

    /// Calls `f` once for every stored topic that `filter` matches, with the same rules as
    /// [`FilterTrie::for_each_match`](super::FilterTrie::for_each_match): `#` matches its parent level,
    /// `+` exactly one level, and a first-level wildcard skips topics beginning with `$`
    /// [MQTT-4.7.2-1]. The order is unspecified.
    pub fn for_each_match(&self, filter: &TopicFilter, mut f: impl FnMut(&str, &T)) {
        let mut branches = Pending::<(usize, Option<&str>), INLINE_BRANCHES>::new((ROOT, None));
        branches.push((ROOT, Some(filter.as_str())));
        while let Some((id, rest)) = branches.pop() {
            let node = &self.nodes[id];
            let Some(remaining) = rest else {
                report(node, &mut f);
                continue;
            };
            let (level, next) = split_first_level(remaining);
            // At the root, a wildcard must not reach topics beginning with `$`.
            let reachable = |name: &str| id != ROOT || !name.starts_with('$');
            if level == MULTI_LEVEL {
                // This level (the parent rule) and, through the children, everything below it.
                report(node, &mut f);
                for (name, &child) in &node.children {
                    if reachable(name) {
                        branches.push((child, rest));
                    }
                }
            } else if level == SINGLE_LEVEL {
                for (name, &child) in &node.children {
                    if reachable(name) {
                        branches.push((child, next));
                    }
                }
            } else if let Some(&child) = node.children.get(level) {
                branches.push((child, next));
            }
        }
    }

    /// Calls `f` with every stored topic and its value, in no particular order.
    pub fn for_each(&self, mut f: impl FnMut(&str, &T)) {
        for node in &self.nodes {
            report(node, &mut f);
        }
    }

    /// Keeps only the values for which `keep` returns true (for example, drops expired retained
    /// messages), pruning what is left empty.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut T) -> bool) {
        let mut dropped = Vec::new();
        for (id, node) in self.nodes.iter_mut().enumerate() {
            if let Some((topic, value)) = &mut node.entry
                && !keep(topic, value)
            {
                dropped.extend(node.entry.take().map(|(topic, _)| (id, topic)));
            }
        }
        self.len -= dropped.len();
        for (id, topic) in dropped {
            self.prune(id, &topic);
        }
        self.compact_if_sparse();
    }

    /// Drops the vacant nodes once they are most of a large arena, renumbering the others, so
    /// that memory held for retained messages that have gone is given back (see
    /// `FilterTrie::compact_if_sparse`).
    fn compact_if_sparse(&mut self) {
        let Some((renumbered, live)) = compaction(self.nodes.len(), &self.free) else {
            return;
        };
        let mut nodes = Vec::with_capacity(live);
        for (id, mut node) in std::mem::take(&mut self.nodes).into_iter().enumerate() {
            if renumbered[id] == usize::MAX {
                continue;
            }
            node.parent = node.parent.map(|parent| renumbered[parent]);
            for child in node.children.values_mut() {
                *child = renumbered[*child];
            }
            nodes.push(node);
        }
        self.nodes = nodes;
        self.free = Vec::new();
    }

    /// Nodes in use, the root included (for tests of pruning).
    #[cfg(test)]
    pub(super) fn live_nodes(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Nodes the arena holds, vacant ones included (for tests of compaction).
    #[cfg(test)]
    pub(super) fn arena_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Number of topics holding a value.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no topic holds a value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn find(&self, topic: &str) -> Option<usize> {
        let mut id = ROOT;
        for level in topic.split(SEPARATOR) {
            id = *self.nodes[id].children.get(level)?;
        }
        Some(id)
    }

    fn child_or_insert(&mut self, id: usize, level: &str) -> usize {
        if let Some(&child) = self.nodes[id].children.get(level) {
            return child;
        }
        let node = Node::new(Some(id));
        let child = match self.free.pop() {
            Some(free) => {
                self.nodes[free] = node;
                free
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        self.nodes[id].children.insert(level.into(), child);
        child
    }

    /// Frees `id` and then each ancestor that is left vacant; `topic` is the path to `id`. Stops at
    /// the root and at nodes already freed (their `parent` is `None`), so pruning twice is harmless.
    fn prune(&mut self, mut id: usize, topic: &str) {
        for level in topic.rsplit(SEPARATOR) {
            let node = &self.nodes[id];
            let vacant = node.entry.is_none() && node.children.is_empty();
            let Some(parent) = node.parent.filter(|_| vacant) else {
                return;
            };
            let parent_node = &mut self.nodes[parent];
            parent_node.children.remove(level);
            if parent_node.children.is_empty() {
                parent_node.children.shrink_to_fit();
            }
            self.nodes[id] = Node::new(None);
            self.free.push(id);
            id = parent;
        }
    }
}

/// Calls `f` with the node's topic and value, if it holds one.
fn report<T>(node: &Node<T>, f: &mut impl FnMut(&str, &T)) {
    if let Some((topic, value)) = &node.entry {
        f(topic, value);
    }
}

impl<T> Default for TopicTree<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for TopicTree<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicTree")
            .field("len", &self.len)
            .field("nodes", &(self.nodes.len() - self.free.len()))
            .finish_non_exhaustive()
    }
}
