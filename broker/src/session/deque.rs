//! A double-ended queue that costs one pointer until something is put in it.
//!
//! Every session holds a delivery queue and an inflight window, and an idle client's are empty for
//! its whole life: inline `VecDeque`s cost 32 bytes each even then. Once used, the deque keeps its
//! box, as a `VecDeque` keeps its buffer, so a busy session allocates nothing per message.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct LazyDeque<T>(
    #[expect(
        clippy::box_collection,
        reason = "the box is what keeps an unused deque at one pointer"
    )]
    Option<Box<VecDeque<T>>>,
);

impl<T> Default for LazyDeque<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> LazyDeque<T> {
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |deque| deque.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn front(&self) -> Option<&T> {
        self.0.as_ref()?.front()
    }

    pub fn back(&self) -> Option<&T> {
        self.0.as_ref()?.back()
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().flat_map(|deque| deque.iter())
    }

    pub fn push_back(&mut self, item: T) {
        self.0.get_or_insert_default().push_back(item);
    }

    pub fn push_front(&mut self, item: T) {
        self.0.get_or_insert_default().push_front(item);
    }

    pub fn pop_front(&mut self) -> Option<T> {
        self.0.as_mut()?.pop_front()
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        self.0.as_ref()?.get(index)
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.0.as_mut()?.get_mut(index)
    }

    pub fn remove(&mut self, index: usize) -> Option<T> {
        self.0.as_mut()?.remove(index)
    }

    pub fn clear(&mut self) {
        if let Some(deque) = &mut self.0 {
            deque.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unused_deque_is_one_pointer_and_behaves_as_empty() {
        assert_eq!(std::mem::size_of::<LazyDeque<u64>>(), 8);
        let mut deque = LazyDeque::<u8>::default();
        assert!(deque.is_empty());
        assert_eq!(
            (deque.front(), deque.back(), deque.get(0)),
            (None, None, None)
        );
        assert_eq!(deque.pop_front(), None);
        assert!(deque.get_mut(0).is_none());
        assert_eq!(deque.remove(0), None);
        assert_eq!(deque.iter().count(), 0);
        deque.clear();
    }

    #[test]
    fn a_used_deque_keeps_order_at_both_ends() {
        let mut deque = LazyDeque::default();
        deque.push_back(2);
        deque.push_back(3);
        deque.push_front(1);
        assert_eq!(deque.iter().copied().collect::<Vec<_>>(), [1, 2, 3]);
        *deque.get_mut(1).unwrap() = 20;
        assert_eq!((deque.get(1), deque.len()), (Some(&20), 3));
        assert_eq!(deque.remove(1), Some(20));
        assert_eq!(deque.pop_front(), Some(1));
        assert_eq!(deque.back(), Some(&3));
        deque.clear();
        assert!(deque.is_empty());
    }
}
