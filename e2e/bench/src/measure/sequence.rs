//! Sequence accounting: which sequence numbers of which publisher a delivery sink has seen, from
//! which losses (never seen) and duplicates (seen more than once) are counted at the end.
//!
//! A sink is one subscriber, or a whole `$share` group whose members' ledgers are merged. Seen
//! numbers are kept as disjoint ranges, so an in-order stream costs one range however long it is,
//! and a lossy one costs one range per gap.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// A set of u64 kept as disjoint, non-adjacent half-open ranges `[start, end)`.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    ranges: BTreeMap<u64, u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; false if it was already there (a duplicate).
    pub fn insert(&mut self, seq: u64) -> bool {
        // The common case, a stream arriving in order, extends the last range in place.
        if let Some(next) = seq.checked_add(1)
            && let Some(mut last) = self.ranges.last_entry()
            && *last.get() == seq
        {
            *last.get_mut() = next;
            self.len += 1;
            return true;
        }
        self.insert_range(seq, seq.saturating_add(1)) == 1
    }

    /// Adds every number in `[start, end)`; returns how many were not there before.
    pub fn insert_range(&mut self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let (mut lo, mut hi) = (start, end);
        let mut absorbed = 0;
        if let Some((&s, &e)) = self.ranges.range(..=lo).next_back()
            && e >= lo
        {
            lo = s;
            hi = hi.max(e);
            absorbed += e - s;
            self.ranges.remove(&s);
        }
        while let Some((&s, &e)) = self.ranges.range(lo..=hi).next() {
            absorbed += e - s;
            hi = hi.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(lo, hi);
        let added = (hi - lo) - absorbed;
        self.len += added;
        added
    }

    /// Adds everything in `other`; returns how many were new.
    pub fn union(&mut self, other: &SeqSet) -> u64 {
        other
            .ranges
            .iter()
            .map(|(&s, &e)| self.insert_range(s, e))
            .sum()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// How many members are below `limit`.
    pub fn count_below(&self, limit: u64) -> u64 {
        self.ranges
            .range(..limit)
            .map(|(&s, &e)| e.min(limit) - s)
            .sum()
    }
}

/// What one sink saw: per publisher, the set of sequence numbers, and how many deliveries in all.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    seen: HashMap<u32, SeqSet>,
    received: u64,
}

impl Ledger {
    /// Records one delivery; false if it was a duplicate.
    pub fn record(&mut self, publisher: u32, seq: u64) -> bool {
        self.received += 1;
        self.seen.entry(publisher).or_default().insert(seq)
    }

    /// Folds another member of the same sink (a `$share` group) into this one.
    pub fn merge(&mut self, other: &Ledger) {
        self.received += other.received;
        for (publisher, set) in &other.seen {
            self.seen.entry(*publisher).or_default().union(set);
        }
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// Counts against what the sink should have seen: every sequence number below `sent[p]` for
    /// each publisher `p` in `hears`.
    pub fn account(&self, hears: &[u32], sent: &[u64]) -> DeliveryCount {
        let mut count = DeliveryCount {
            received: self.received,
            ..DeliveryCount::default()
        };
        let mut distinct_all = 0;
        for set in self.seen.values() {
            distinct_all += set.len();
        }
        let mut distinct_expected = 0;
        for &publisher in hears {
            let published = sent.get(publisher as usize).copied().unwrap_or(0);
            count.expected += published;
            let got = self
                .seen
                .get(&publisher)
                .map_or(0, |set| set.count_below(published));
            distinct_expected += got;
            count.lost += published - got;
        }
        count.duplicates = self.received - distinct_all;
        count.unexpected = distinct_all - distinct_expected;
        count
    }
}

/// Delivery accounting for one sink, or summed over all sinks of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryCount {
    /// Deliveries the sinks should have seen (each published message once per sink that hears it).
    pub expected: u64,
    /// Deliveries that arrived, duplicates included.
    pub received: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Deliveries of a message the sink had already seen.
    pub duplicates: u64,
    /// Messages the sink should not have seen at all (another publisher's, or never published).
    pub unexpected: u64,
}

impl DeliveryCount {
    pub fn add(&mut self, other: DeliveryCount) {
        self.expected += other.expected;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.unexpected += other.unexpected;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_is_one_range() {
        let mut set = SeqSet::default();
        for seq in 0..10_000 {
            assert!(set.insert(seq));
        }
        assert_eq!(set.len(), 10_000);
        assert_eq!(set.ranges.len(), 1);
    }

    #[test]
    fn gaps_and_late_arrivals_merge() {
        let mut set = SeqSet::default();
        for seq in [0, 1, 2, 5, 6, 9] {
            assert!(set.insert(seq));
        }
        assert_eq!(set.ranges.len(), 3);
        assert!(set.insert(4));
        assert!(set.insert(3));
        assert_eq!(set.ranges.len(), 2);
        assert!(set.insert(8));
        assert!(set.insert(7));
        assert_eq!(set.ranges.len(), 1);
        assert_eq!(set.len(), 10);
        assert_eq!(set.count_below(4), 4);
        assert_eq!(set.count_below(100), 10);
    }

    #[test]
    fn duplicates_are_refused_wherever_they_fall() {
        let mut set = SeqSet::default();
        for seq in [10, 11, 12, 20] {
            set.insert(seq);
        }
        for seq in [10, 11, 12, 20] {
            assert!(!set.insert(seq), "{seq} is a duplicate");
        }
        assert_eq!(set.len(), 4);
    }

    #[test]
    fn overlapping_ranges_count_only_new_members() {
        let mut set = SeqSet::default();
        assert_eq!(set.insert_range(10, 20), 10);
        assert_eq!(set.insert_range(30, 40), 10);
        assert_eq!(set.insert_range(15, 35), 10);
        assert_eq!(set.insert_range(0, 50), 20);
        assert_eq!(set.len(), 50);
        assert_eq!(set.ranges.len(), 1);
    }

    #[test]
    fn ledger_counts_losses_and_duplicates_per_publisher() {
        let mut ledger = Ledger::default();
        // Publisher 0 sent 0..5; 3 never arrived and 1 arrived twice.
        for seq in [0, 1, 1, 2, 4] {
            ledger.record(0, seq);
        }
        // Publisher 1 sent 0..3; all arrived.
        for seq in 0..3 {
            ledger.record(1, seq);
        }
        let count = ledger.account(&[0, 1], &[5, 3]);
        assert_eq!(
            count,
            DeliveryCount {
                expected: 8,
                received: 8,
                lost: 1,
                duplicates: 1,
                unexpected: 0
            }
        );
    }

    #[test]
    fn shared_group_members_merge_into_one_sink() {
        let (mut a, mut b) = (Ledger::default(), Ledger::default());
        for seq in (0..100).step_by(2) {
            a.record(0, seq);
        }
        for seq in (1..100).step_by(2) {
            b.record(0, seq);
        }
        b.record(0, 0); // delivered to both members: a duplicate for the group
        a.merge(&b);
        let count = a.account(&[0], &[100]);
        assert_eq!(count.lost, 0);
        assert_eq!(count.duplicates, 1);
        assert_eq!(count.received, 101);
    }

    #[test]
    fn traffic_from_unheard_publishers_is_unexpected() {
        let mut ledger = Ledger::default();
        ledger.record(0, 0);
        ledger.record(7, 0);
        ledger.record(0, 9); // beyond what publisher 0 sent
        let count = ledger.account(&[0], &[1]);
        assert_eq!(count.unexpected, 2);
        assert_eq!(count.lost, 0);
    }
}
