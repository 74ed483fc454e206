//! Acknowledgements of a client's QoS 1 and 2 messages held until the other nodes of the cluster
//! hold the message (`cluster.acknowledge: cluster`) and until the store has it on disk
//! (`storage.durability: sync`): a [`Receipt`] with a party for each. The PUBREL and PUBCOMP the
//! broker answers with in a QoS 2 exchange wait for the store the same way. PUBACKs and PUBRECs go
//! in the order their PUBLISHes arrived [MQTT-4.6.0-2], and PUBRELs in the order of their PUBRECs
//! [MQTT-4.6.0-3], so once one acknowledgement is held, every later one waits behind it.
//!
//! The client is read from meanwhile: its Receive Maximum bounds how many acknowledgements it
//! awaits, so a publisher fills its window and pauses itself, and a slow peer costs it latency
//! rather than a stall at every message.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::codec::Packet;
use crate::receipt::Receipt;

#[derive(Default)]
pub(super) struct HeldAcks {
    acks: VecDeque<(Option<Arc<Receipt>>, Packet)>,
}

impl HeldAcks {
    pub(super) fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }

    pub(super) fn push(&mut self, receipt: Option<Arc<Receipt>>, ack: Packet) {
        self.acks.push_back((receipt, ack));
    }

    /// Ready when the first held acknowledgement may go; wakes `cx` when it may.
    pub(super) fn poll_first(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self.acks.front() {
            None => Poll::Pending,
            Some((None, _)) => Poll::Ready(()),
            Some((Some(receipt), _)) => receipt.poll_done(cx),
        }
    }

    /// Takes the acknowledgements that may go now, oldest first.
    pub(super) fn take_ready(&mut self) -> Vec<Packet> {
        let mut ready = Vec::new();
        while self
            .acks
            .front()
            .is_some_and(|(receipt, _)| receipt.as_ref().is_none_or(|r| r.is_done()))
        {
            ready.extend(self.acks.pop_front().map(|(_, ack)| ack));
        }
        ready
    }
}
