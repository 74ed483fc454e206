//! The parking lot: idle plain-TCP connections held without a task.
//!
//! Most of what a broker holds is clients that say nothing for minutes. A Tokio task and its socket
//! registration cost about 1 KB per connection whether or not anything happens, so a connection that
//! has nothing to read, write or wait for leaves its task: its state is boxed, its socket goes into
//! one epoll set that a single thread watches, and its control block sends wake-ups here. The lot
//! resumes it in a new task when the socket becomes readable (data or close), when a kick or a
//! delivery arrives, and a little before its keep-alive deadline, which the task then keeps to the
//! millisecond. One thread serves every broker in the process.

use std::io;
use std::net::TcpStream as StdTcpStream;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use parking_lot::Mutex;
use slab::Slab;
use tracing::{debug, warn};

use super::Connection;

/// A parked connection is resumed this long before its keep-alive deadline, so that the deadline
/// is kept by its task's timer rather than by the lot's coarse sweep.
pub(super) const RESUME_BEFORE_DEADLINE: Duration = Duration::from_secs(2);
/// The longest the lot's thread sleeps between looks at the deadlines.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The token of the lot's own wake-up descriptor; sockets' tokens have a non-zero generation in
/// their upper half, so no socket gets this one.
const WAKER: Token = Token(0);
/// What the lot stores instead of a deadline for a connection without keep alive.
const NEVER: u32 = u32::MAX;

/// One parked connection.
struct Parked {
    socket: StdTcpStream,
    /// Told apart from an earlier occupant of the same slot, whose wake-ups may still arrive.
    generation: u32,
    /// Whole seconds after the lot started at which to resume the connection; [`NEVER`] if it has
    /// no keep alive.
    resume_at: u32,
    /// Its state, which also holds its place in the broker's task tracker while it has no task.
    connection: Box<Connection>,
}

struct Lot {
    registry: Registry,
    waker: Waker,
    /// Set from the first wake-up until the thread looks: wake-ups in between need no system call.
    wake_pending: AtomicBool,
    state: Mutex<LotState>,
    started: Instant,
}

#[derive(Default)]
struct LotState {
    parked: Slab<Parked>,
    /// Ids whose control block was kicked or had deliveries queued.
    woken: Vec<u64>,
    last_generation: u32,
    /// No parked connection has to be resumed before this second (it may be earlier than needed).
    earliest_resume: u32,
}

/// The process's lot, started on first use; `None` if it could not be (logged once).
fn lot() -> Option<&'static Lot> {
    static LOT: OnceLock<Option<&'static Lot>> = OnceLock::new();
    *LOT.get_or_init(|| match start() {
        Ok(lot) => Some(lot),
        Err(error) => {
            warn!(%error, "cannot start the parking lot; idle connections keep their tasks");
            None
        }
    })
}

fn start() -> io::Result<&'static Lot> {
    let poll = Poll::new()?;
    let lot: &'static Lot = Box::leak(Box::new(Lot {
        registry: poll.registry().try_clone()?,
        waker: Waker::new(poll.registry(), WAKER)?,
        wake_pending: AtomicBool::new(false),
        state: Mutex::new(LotState {
            earliest_resume: NEVER,
            ..LotState::default()
        }),
        started: Instant::now(),
    }));
    std::thread::Builder::new()
        .name("tern-park".into())
        .spawn(move || lot.watch(poll))?;
    crate::control::set_parked_wake(wake);
    Ok(lot)
}

/// Parks `connection`, whose socket is `socket`. If the lot cannot take it, the connection goes on
/// in a new task as if it had been woken at once.
pub(super) fn park(mut connection: Box<Connection>, socket: StdTcpStream) {
    let Some(lot) = lot() else {
        return connection.resume(socket);
    };
    let resume_at = connection
        .keep_alive_deadline()
        .and_then(|deadline| deadline.checked_sub(RESUME_BEFORE_DEADLINE))
        .map_or(NEVER, |resume| lot.second_of(resume));
    let control = std::sync::Arc::clone(&connection.control);
    let stats = std::sync::Arc::clone(connection.slot.broker().stats());
    let id = {
        let mut state = lot.state.lock();
        let Ok(key) = u32::try_from(state.parked.vacant_key()) else {
            drop(state);
            return connection.resume(socket);
        };
        let generation = state.next_generation();
        let id = (u64::from(generation) << 32) | u64::from(key);
        let registered = lot.registry.register(
            &mut SourceFd(&socket.as_raw_fd()),
            Token(id as usize),
            Interest::READABLE,
        );
        if let Err(error) = registered {
            drop(state);
            debug!(%error, "cannot park a connection; it keeps its task");
            return connection.resume(socket);
        }
        control.set_parked(id);
        // Shutdown waits for tracked tasks; a parked connection has none, so it holds a place.
        connection.tracked_while_parked = Some(connection.slot.broker().tasks().token());
        state.parked.insert(Parked {
            socket,
            generation,
            resume_at,
            connection,
        });
        state.earliest_resume = state.earliest_resume.min(resume_at);
        // Before the entry can be taken out again, so the gauge never dips below zero.
        stats.connections_parked.inc();
        id
    };
    // A kick or delivery that came before the id was recorded woke the old task, which is gone.
    if control.has_pending() && control.take_parked() == id {
        wake(id);
    }
}

/// Resumes the connection parked under `id` (from its control block's wake-up).
fn wake(id: u64) {
    let Some(lot) = lot() else { return };
    lot.state.lock().woken.push(id);
    if !lot.wake_pending.swap(true, Ordering::AcqRel)
        && let Err(error) = lot.waker.wake()
    {
        warn!(%error, "cannot wake the parking lot");
    }
}

/// The key and generation packed into an id.
fn unpack(id: u64) -> (usize, u32) {
    ((id & u64::from(u32::MAX)) as usize, (id >> 32) as u32)
}

impl LotState {
    fn next_generation(&mut self) -> u32 {
        self.last_generation = self.last_generation.checked_add(1).unwrap_or(1);
        self.last_generation
    }

    /// Removes the connection parked under `id`, unless it already left.
    fn take(&mut self, id: u64) -> Option<Parked> {
        let (key, generation) = unpack(id);
        if self.parked.get(key)?.generation != generation {
            return None;
        }
        self.parked.try_remove(key)
    }

    /// Removes every connection due at `second`, and works out when the next one is.
    fn take_due(&mut self, second: u32, due: &mut Vec<Parked>) {
        if second < self.earliest_resume {
            return;
        }
        let keys: Vec<usize> = self
            .parked
            .iter()
            .filter(|(_, parked)| parked.resume_at <= second)
            .map(|(key, _)| key)
            .collect();
        due.extend(
            keys.into_iter()
                .filter_map(|key| self.parked.try_remove(key)),
        );
        self.earliest_resume = self
            .parked
            .iter()
            .map(|(_, parked)| parked.resume_at)
            .min()
            .unwrap_or(NEVER);
    }
}

impl Lot {
    /// `instant` as whole seconds since the lot started (rounded down, so never late).
    fn second_of(&self, instant: tokio::time::Instant) -> u32 {
        let since = instant.into_std().saturating_duration_since(self.started);
        u32::try_from(since.as_secs()).unwrap_or(NEVER - 1)
    }

    /// The lot's thread: waits for parked sockets and wake-ups, and resumes what they concern.
    fn watch(&'static self, mut poll: Poll) {
        let mut events = Events::with_capacity(1024);
        let mut due = Vec::new();
        loop {
            if let Err(error) = poll.poll(&mut events, Some(SWEEP_EVERY)) {
                if error.kind() != io::ErrorKind::Interrupted {
                    warn!(%error, "parking lot: waiting for sockets failed");
                    std::thread::sleep(SWEEP_EVERY);
                }
                continue;
            }
            self.wake_pending.store(false, Ordering::Release);
            {
                let mut state = self.state.lock();
                for event in events.iter().filter(|event| event.token() != WAKER) {
                    due.extend(state.take(event.token().0 as u64));
                }
                for id in std::mem::take(&mut state.woken) {
                    due.extend(state.take(id));
                }
                state.take_due(self.second_of(tokio::time::Instant::now()), &mut due);
            }
            for parked in due.drain(..) {
                self.resume(parked);
            }
        }
    }

    fn resume(&self, parked: Parked) {
        let Parked {
            socket, connection, ..
        } = parked;
        if let Err(error) = self.registry.deregister(&mut SourceFd(&socket.as_raw_fd())) {
            debug!(%error, "parking lot: deregistering a socket failed");
        }
        // Wake-ups go to the new task from here; it looks at the flags before it waits.
        connection.control.take_parked();
        connection.slot.broker().stats().connections_parked.dec();
        connection.resume(socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_key_and_generation_and_are_never_the_wakers_token() {
        let id = (u64::from(7_u32) << 32) | 42;
        assert_eq!(unpack(id), (42, 7));
        let mut state = LotState::default();
        assert_eq!(state.next_generation(), 1, "generations start at 1");
        state.last_generation = u32::MAX;
        assert_eq!(state.next_generation(), 1, "and skip 0 when they wrap");
    }

    /// A parked connection costs its boxed state plus this entry (in a slab that may hold up to
    /// twice as many entries as connections).
    #[test]
    fn a_parked_entry_stays_small() {
        let size = std::mem::size_of::<Parked>();
        assert!(size <= 24, "a parked entry is {size} bytes");
        // 160 bytes fill jemalloc's 160-byte size class; one byte more costs 32.
        let boxed = std::mem::size_of::<Connection>();
        assert!(boxed <= 160, "a parked connection's state is {boxed} bytes");
    }
}
