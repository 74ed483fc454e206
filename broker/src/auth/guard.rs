//! Guards password verification against guessing. Each verification costs tens of milliseconds of
//! a core and, with argon2id, tens of MiB: a burst of wrong passwords would queue in front of every
//! correct one. So verifications waiting or running are bounded per source address and overall,
//! and an address that keeps failing waits before its next try; whatever this refuses is answered
//! at once, without hashing. The [`LoginGuard`] is owned by `FileAuth`, which asks it before each
//! verification and tells it how each ended.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::AuthConfig;

/// Most addresses whose failures are remembered. An attacker with more addresses than this is not
/// tracked one by one beyond it; the overall bound still holds for it.
const MAX_TRACKED: usize = 65_536;

/// Why a verification was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// The address failed `auth.failed_logins_per_address` times and its wait has not run out.
    Backoff,
    /// Too many verifications wait for this address or overall (`auth.max_pending_logins`,
    /// `auth.max_pending_logins_per_address`).
    Busy,
}

/// The guard's settings, from `auth`.
#[derive(Debug, Clone, Copy)]
struct Settings {
    failures_allowed: u32,
    first_wait: Duration,
    max_wait: Duration,
    max_pending: usize,
    max_pending_per_address: u32,
}

/// What is known of one source address.
#[derive(Debug, Clone, Copy)]
struct Address {
    /// Its verifications waiting or running.
    pending: u32,
    /// Failures since its last success.
    failures: u32,
    /// No verification for it before this.
    wait_until: Option<Instant>,
    /// When it last failed, to forget it once its wait could no longer matter.
    last_failure: Instant,
}

#[derive(Debug, Default)]
struct State {
    pending: usize,
    addresses: HashMap<IpAddr, Address>,
}

/// Bounds and failure budgets for password verifications, behind one short lock.
#[derive(Debug)]
pub struct LoginGuard {
    settings: Settings,
    state: Mutex<State>,
}

/// A verification the guard let start; tell it how it ended with [`LoginTicket::finish`]. Dropped
/// unfinished (the connection went away), it only gives its place back.
#[derive(Debug)]
pub struct LoginTicket<'a> {
    guard: &'a LoginGuard,
    address: IpAddr,
}

impl LoginGuard {
    pub fn new(auth: &AuthConfig) -> Self {
        Self {
            settings: Settings {
                failures_allowed: auth.failed_logins_per_address,
                first_wait: Duration::from_secs(auth.login_backoff_secs),
                max_wait: Duration::from_secs(auth.login_backoff_max_secs),
                max_pending: auth.max_pending_logins,
                max_pending_per_address: auth.max_pending_logins_per_address,
            },
            state: Mutex::new(State::default()),
        }
    }

    /// Lets a verification for `address` start, or says why not.
    pub fn begin(&self, address: IpAddr, now: Instant) -> Result<LoginTicket<'_>, LoginRefusal> {
        let settings = self.settings;
        let mut state = self.state.lock();
        if state.pending >= settings.max_pending {
            return Err(LoginRefusal::Busy);
        }
        if state.addresses.len() >= MAX_TRACKED && !state.addresses.contains_key(&address) {
            forget_stale(&mut state.addresses, now, settings.max_wait);
        }
        let record = if state.addresses.len() < MAX_TRACKED {
            Some(state.addresses.entry(address).or_insert(Address {
                pending: 0,
                failures: 0,
                wait_until: None,
                last_failure: now,
            }))
        } else {
            state.addresses.get_mut(&address)
        };
        if let Some(record) = record {
            // Failures older than the longest wait no longer count: a device that mistyped a
            // password last week starts afresh.
            let stale = now.saturating_duration_since(record.last_failure) > settings.max_wait;
            if record.failures > 0 && stale {
                record.failures = 0;
                record.wait_until = None;
            }
            if record.wait_until.is_some_and(|until| now < until) {
                return Err(LoginRefusal::Backoff);
            }
            if record.pending >= settings.max_pending_per_address {
                return Err(LoginRefusal::Busy);
            }
            record.pending += 1;
        }
        state.pending += 1;
        Ok(LoginTicket {
            guard: self,
            address,
        })
    }

    /// Addresses remembered now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state.lock().addresses.len()
    }

    /// Gives back a place; with an outcome, counts a failure or clears the failures.
    fn end(&self, address: IpAddr, verified: Option<bool>, now: Instant) {
        let settings = self.settings;
        let mut state = self.state.lock();
        state.pending = state.pending.saturating_sub(1);
        let Some(record) = state.addresses.get_mut(&address) else {
            return;
        };
        record.pending = record.pending.saturating_sub(1);
        match verified {
            Some(true) => {
                record.failures = 0;
                record.wait_until = None;
            }
            Some(false) => {
                record.failures = record.failures.saturating_add(1);
                record.last_failure = now;
                record.wait_until = settings.wait_after(record.failures).map(|wait| now + wait);
            }
            None => {}
        }
        if record.pending == 0 && record.failures == 0 {
            state.addresses.remove(&address);
        }
    }
}

impl Settings {
    /// How long an address waits after its `failures`-th failure: nothing within the budget, then
    /// the first wait, doubled with each further failure up to the longest.
    fn wait_after(&self, failures: u32) -> Option<Duration> {
        if self.failures_allowed == 0 || failures < self.failures_allowed {
            return None;
        }
        let doublings = (failures - self.failures_allowed).min(16);
        Some(
            self.first_wait
                .saturating_mul(1 << doublings)
                .min(self.max_wait),
        )
    }
}

/// Drops addresses with nothing pending whose last failure is longer ago than the longest wait.
fn forget_stale(addresses: &mut HashMap<IpAddr, Address>, now: Instant, max_wait: Duration) {
    addresses.retain(|_, record| {
        record.pending > 0 || now.saturating_duration_since(record.last_failure) <= max_wait
    });
}

impl LoginTicket<'_> {
    /// Reports how the verification ended.
    pub fn finish(self, verified: bool, now: Instant) {
        let ticket = std::mem::ManuallyDrop::new(self);
        ticket.guard.end(ticket.address, Some(verified), now);
    }
}

impl Drop for LoginTicket<'_> {
    fn drop(&mut self) {
        self.guard.end(self.address, None, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(failures: u32, pending: usize, per_address: u32) -> LoginGuard {
        LoginGuard::new(&AuthConfig {
            failed_logins_per_address: failures,
            login_backoff_secs: 1,
            login_backoff_max_secs: 8,
            max_pending_logins: pending,
            max_pending_logins_per_address: per_address,
            ..AuthConfig::default()
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn fail(guard: &LoginGuard, address: IpAddr, now: Instant) {
        guard
            .begin(address, now)
            .expect("may try")
            .finish(false, now);
    }

    #[test]
    fn an_address_past_its_failure_budget_waits_doubling_up_to_the_longest() {
        let guard = guard(3, 64, 4);
        let start = Instant::now();
        for _ in 0..2 {
            fail(&guard, ip(1), start);
        }
        assert!(guard.begin(ip(1), start).is_ok(), "within the budget");
        fail(&guard, ip(1), start);
        assert_eq!(guard.begin(ip(1), start).err(), Some(LoginRefusal::Backoff));
        assert!(guard.begin(ip(2), start).is_ok(), "other addresses go on");
        let later = start + Duration::from_secs(1);
        fail(&guard, ip(1), later);
        let refused = |at: Duration| guard.begin(ip(1), later + at).err();
        assert_eq!(
            refused(Duration::from_millis(1_999)),
            Some(LoginRefusal::Backoff)
        );
        assert_eq!(
            refused(Duration::from_secs(2)),
            None,
            "2 s after the fourth failure"
        );
        assert_eq!(
            guard.settings.wait_after(40),
            Some(Duration::from_secs(8)),
            "capped at the longest wait"
        );
        // Once the longest wait has passed since its last failure, the address starts afresh.
        let much_later = later + Duration::from_secs(9);
        fail(&guard, ip(1), much_later);
        assert!(
            guard.begin(ip(1), much_later).is_ok(),
            "one failure, not five"
        );
    }

    #[test]
    fn a_success_clears_the_address_and_an_unfinished_ticket_counts_nothing() {
        let guard = guard(2, 64, 4);
        let now = Instant::now();
        fail(&guard, ip(1), now);
        guard.begin(ip(1), now).expect("may try").finish(true, now);
        fail(&guard, ip(1), now);
        assert!(
            guard.begin(ip(1), now).is_ok(),
            "one failure since the success"
        );
        drop(guard.begin(ip(3), now).expect("may try"));
        assert!(guard.begin(ip(3), now).is_ok());
        assert_eq!(guard.state.lock().pending, 0, "every place given back");
    }

    #[test]
    fn pending_verifications_are_bounded_per_address_and_overall() {
        let guard = guard(5, 3, 2);
        let now = Instant::now();
        let first = guard.begin(ip(1), now).expect("first");
        let _second = guard.begin(ip(1), now).expect("second");
        assert_eq!(guard.begin(ip(1), now).err(), Some(LoginRefusal::Busy));
        let _third = guard.begin(ip(2), now).expect("another address");
        assert_eq!(guard.begin(ip(3), now).err(), Some(LoginRefusal::Busy));
        first.finish(false, now);
        assert!(guard.begin(ip(3), now).is_ok(), "a place came free");
    }

    #[test]
    fn zero_failures_allowed_turns_the_budget_off() {
        let guard = guard(0, 64, 4);
        let now = Instant::now();
        for _ in 0..100 {
            fail(&guard, ip(1), now);
        }
        assert!(guard.begin(ip(1), now).is_ok());
    }

    #[test]
    fn the_table_of_addresses_stays_bounded() {
        let guard = guard(1, usize::MAX, 4);
        let now = Instant::now();
        for n in 0..MAX_TRACKED as u32 + 10 {
            let address = IpAddr::from(n.to_be_bytes());
            fail(&guard, address, now);
        }
        assert_eq!(guard.tracked(), MAX_TRACKED);
        // Once the old failures no longer matter, they make room.
        let later = now + Duration::from_secs(9);
        fail(&guard, ip(200), later);
        assert_eq!(guard.tracked(), 1);
    }
}
