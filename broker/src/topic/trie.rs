//! The subscription trie: one node per topic-filter level, each filter's data at its last node, and a
//! match that walks a PUBLISH topic name through it once.
//!
//! This is the routing hot path. Nodes live in one arena (`Vec`) and refer to each other by index, so
//! every operation is a loop rather than recursion (no stack depth tied to a client's input, no
//! recursive drop), and a match allocates nothing unless it has more than 16 `+` branches pending at
//! once. What the data is (subscribers, share groups) is the router's business.

use std::fmt;

use foldhash::HashMap;

use super::{MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL, TopicFilter, compaction, split_first_level};

/// The root node's index; the root always exists and is never freed.
const ROOT: usize = 0;

/// How many untried `+` branches a match keeps on the call stack before spilling to the heap.
const INLINE_BRANCHES: usize = 16;

/// One filter level.
#[derive(Clone)]
struct Node<T> {
    /// Literal child levels by their text (which may be empty).
    children: HashMap<Box<str>, usize>,
    /// The `+` child, apart from `children` so a match never hashes a wildcard.
    plus: Option<usize>,
    /// `None` for the root and for freed nodes, which is what stops pruning.
    parent: Option<usize>,
    /// Data of the filter that ends at this node.
    exact: Option<T>,
    /// Data of this node's filter followed by `/#` (of `#` alone, at the root), kept here rather than
    /// in a child because `#` ends a filter and also matches this node's own level.
    multi: Option<T>,
}

impl<T> Node<T> {
    fn new(parent: Option<usize>) -> Self {
        Self {
            children: HashMap::default(),
            plus: None,
            parent,
            exact: None,
            multi: None,
        }
    }

    /// Holds no data and leads nowhere, so it can be pruned.
    fn is_vacant(&self) -> bool {
        self.exact.is_none()
            && self.multi.is_none()
            && self.plus.is_none()
            && self.children.is_empty()
    }

    fn slot(&self, slot: Slot) -> Option<&T> {
        match slot {
            Slot::Exact => self.exact.as_ref(),
            Slot::Multi => self.multi.as_ref(),
        }
    }

    fn slot_mut(&mut self, slot: Slot) -> &mut Option<T> {
        match slot {
            Slot::Exact => &mut self.exact,
            Slot::Multi => &mut self.multi,
        }
    }
}

/// Which of a node's two data slots a filter uses.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Exact,
    Multi,
}

/// The levels that lead to a filter's node (`None`: the root) and the slot its data uses there.
fn locate(filter: &str) -> (Option<&str>, Slot) {
    if filter == MULTI_LEVEL {
        return (None, Slot::Multi);
    }
    match filter
        .strip_suffix(MULTI_LEVEL)
        .and_then(|f| f.strip_suffix(SEPARATOR))
    {
        Some(prefix) => (Some(prefix), Slot::Multi),
        None => (Some(filter), Slot::Exact),
    }
}

/// Subscription trie from topic filters to the data `T` the router keeps per filter.
///
/// Invariant: every index in a live node's `children`, `plus` or `parent` is a live node of `nodes`;
/// indexes on `free` are vacant nodes ready for reuse.
#[derive(Clone)]
pub struct FilterTrie<T> {
    nodes: Vec<Node<T>>,
    free: Vec<usize>,
    /// Filters holding data.
    len: usize,
}

impl<T> FilterTrie<T> {
    /// An empty trie.
    pub fn new() -> Self {
        Self {
            nodes: vec![Node::new(None)],
            free: Vec::new(),
            len: 0,
        }
    }

    /// The data stored for exactly this filter.
    pub fn get(&self, filter: &TopicFilter) -> Option<&T> {
        let (id, slot) = self.find(filter.as_str())?;
        self.nodes[id].slot(slot)
    }

    /// The data stored for exactly this filter, mutably.
    pub fn get_mut(&mut self, filter: &TopicFilter) -> Option<&mut T> {
        let (id, slot) = self.find(filter.as_str())?;
        self.nodes[id].slot_mut(slot).as_mut()
    }

    /// The data for this filter, created with `T::default()` (and the filter's path with it) if absent.
    pub fn entry_or_default(&mut self, filter: &TopicFilter) -> &mut T
    where
        T: Default,
    {
        self.entry_or_insert_with(filter, T::default)
    }

    /// The data for this filter, created by `make` (and the filter's path with it) if absent.
    pub fn entry_or_insert_with(
        &mut self,
        filter: &TopicFilter,
        make: impl FnOnce() -> T,
    ) -> &mut T {
        let (levels, slot) = locate(filter.as_str());
        let mut id = ROOT;
        for level in levels.into_iter().flat_map(|l| l.split(SEPARATOR)) {
            id = self.child_or_insert(id, level);
        }
        let data = self.nodes[id].slot_mut(slot);
        if data.is_none() {
            self.len += 1;
        }
        data.get_or_insert_with(make)
    }

    /// Removes the filter's data if `is_empty` says it holds nothing more, and prunes the branch that
    /// leads only to it. Returns whether the data was removed.
    pub fn remove_if(&mut self, filter: &TopicFilter, is_empty: impl FnOnce(&T) -> bool) -> bool {
        let Some((id, slot)) = self.find(filter.as_str()) else {
            return false;
        };
        let data = self.nodes[id].slot_mut(slot);
        if !data.as_ref().is_some_and(is_empty) {
            return false;
        }
        *data = None;
        self.len -= 1;
        if let (Some(levels), _) = locate(filter.as_str()) {
            self.prune(id, levels);
        }
        self.compact_if_sparse();
        true
    }

    /// Calls `f` once with the data of every filter that matches `topic`, a valid topic name.
    ///
    /// `#` matches its parent level too (`a/#` matches `a`), `+` matches exactly one level (an empty
    /// one too), and a filter whose first level is a wildcard does not match a topic beginning with
    /// `$` [MQTT-4.7.2-1]. Each filter has one path, so each is reported at most once; the order is
    /// unspecified. The data is borrowed for as long as the trie is, so a caller may keep it.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a T)) {
        let dollar = topic.starts_with('$');
        let mut branches = Pending::<(usize, Option<&str>), INLINE_BRANCHES>::new((ROOT, None));
        branches.push((ROOT, Some(topic)));
        // Each popped branch follows literal children in the inner loop; only `+` alternatives are
        // pushed, so a trie without `+` never touches `branches` again.
        'branch: while let Some((mut id, mut rest)) = branches.pop() {
            loop {
                let node = &self.nodes[id];
                let Some(remaining) = rest else {
                    // The topic ends here: filters ending here match, and so does `here/#`.
                    if let Some(data) = &node.exact {
                        f(data);
                    }
                    if let Some(data) = &node.multi {
                        f(data);
                    }
                    continue 'branch;
                };
                let wildcards = id != ROOT || !dollar;
                if wildcards && let Some(data) = &node.multi {
                    f(data);
                }
                let (level, next) = split_first_level(remaining);
                if wildcards && let Some(plus) = node.plus {
                    branches.push((plus, next));
                }
                match node.children.get(level) {
                    Some(&child) => {
                        id = child;
                        rest = next;
                    }
                    None => continue 'branch,
                }
            }
        }
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

    /// Number of filters holding data.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no filter holds data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `f` with every filter holding data and its data, in no particular order. Builds each
    /// filter's text, so it is for listings, not for routing.
    pub fn for_each(&self, mut f: impl FnMut(&str, &T)) {
        let root = &self.nodes[ROOT];
        if let Some(data) = &root.multi {
            f(MULTI_LEVEL, data);
        }
        // (node, length of the parent's path, this node's level, whether it is a first level)
        let mut pending: Vec<(usize, usize, &str, bool)> = Vec::new();
        push_children(&mut pending, root, 0, true);
        let mut path = String::new();
        while let Some((id, parent_len, level, first)) = pending.pop() {
            path.truncate(parent_len);
            if !first {
                path.push(SEPARATOR);
            }
            path.push_str(level);
            let node = &self.nodes[id];
            if let Some(data) = &node.exact {
                f(&path, data);
            }
            if let Some(data) = &node.multi {
                let len = path.len();
                path.push(SEPARATOR);
                path.push_str(MULTI_LEVEL);
                f(&path, data);
                path.truncate(len);
            }
            push_children(&mut pending, node, path.len(), false);
        }
    }

    /// The node and slot of exactly this filter, if its path exists.
    fn find(&self, filter: &str) -> Option<(usize, Slot)> {
        let (levels, slot) = locate(filter);
        let mut id = ROOT;
        for level in levels.into_iter().flat_map(|l| l.split(SEPARATOR)) {
            let node = &self.nodes[id];
            id = if level == SINGLE_LEVEL {
                node.plus?
            } else {
                *node.children.get(level)?
            };
        }
        Some((id, slot))
    }

    fn child_or_insert(&mut self, id: usize, level: &str) -> usize {
        let node = &self.nodes[id];
        let existing = if level == SINGLE_LEVEL {
            node.plus
        } else {
            node.children.get(level).copied()
        };
        if let Some(child) = existing {
            return child;
        }
        let child = self.alloc(id);
        let node = &mut self.nodes[id];
        if level == SINGLE_LEVEL {
            node.plus = Some(child);
        } else {
            node.children.insert(level.into(), child);
        }
        child
    }

    fn alloc(&mut self, parent: usize) -> usize {
        let node = Node::new(Some(parent));
        match self.free.pop() {
            Some(id) => {
                self.nodes[id] = node;
                id
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    /// Drops the vacant nodes once they are most of a large arena, renumbering the others, so
    /// that memory held for subscriptions that have gone is given back. Each compaction costs the
    /// nodes left, and comes only after as many have been freed: constant per removal on average.
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
            node.plus = node.plus.map(|child| renumbered[child]);
            for child in node.children.values_mut() {
                *child = renumbered[*child];
            }
            nodes.push(node);
        }
        self.nodes = nodes;
        self.free = Vec::new();
    }

    /// Frees `id` and then each ancestor that is left vacant; `levels` is the path to `id`.
    fn prune(&mut self, mut id: usize, levels: &str) {
        for level in levels.rsplit(SEPARATOR) {
            let node = &self.nodes[id];
            let Some(parent) = node.parent.filter(|_| node.is_vacant()) else {
                return;
            };
            let parent_node = &mut self.nodes[parent];
            if level == SINGLE_LEVEL {
                parent_node.plus = None;
            } else {
                parent_node.children.remove(level);
                if parent_node.children.is_empty() {
                    parent_node.children.shrink_to_fit();
                }
            }
            self.nodes[id] = Node::new(None);
            self.free.push(id);
            id = parent;
        }
    }
}

/// Queues a node's children for [`FilterTrie::for_each`].
fn push_children<'a, T>(
    pending: &mut Vec<(usize, usize, &'a str, bool)>,
    node: &'a Node<T>,
    path_len: usize,
    first: bool,
) {
    for (level, &child) in &node.children {
        pending.push((child, path_len, level, first));
    }
    if let Some(plus) = node.plus {
        pending.push((plus, path_len, SINGLE_LEVEL, first));
    }
}

impl<T> Default for FilterTrie<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for FilterTrie<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterTrie")
            .field("len", &self.len)
            .field("nodes", &(self.nodes.len() - self.free.len()))
            .finish_non_exhaustive()
    }
}

/// A last-in-first-out list of branches still to walk, whose first `N` entries live inline so the
/// common case allocates nothing.
pub(super) struct Pending<I: Copy, const N: usize> {
    inline: [I; N],
    len: usize,
    /// Used only while `inline` is full, so its entries are always the newest.
    spilled: Vec<I>,
}

impl<I: Copy, const N: usize> Pending<I, N> {
    /// An empty list; `filler` only initialises the unused inline slots.
    pub(super) fn new(filler: I) -> Self {
        Self {
            inline: [filler; N],
            len: 0,
            spilled: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, item: I) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = item;
                self.len += 1;
            }
            None => self.spilled.push(item),
        }
    }

    pub(super) fn pop(&mut self) -> Option<I> {
        if let Some(item) = self.spilled.pop() {
            return Some(item);
        }
        self.len = self.len.checked_sub(1)?;
        self.inline.get(self.len).copied()
    }
}
