//! How long a failing object waits before its next reconcile: [`FIRST`] after its first failure,
//! doubling with each failure in a row up to [`MAX`], and back to [`FIRST`] once a reconcile of it
//! succeeds. Counted per object, so one broken cluster does not slow the others down.

use std::collections::HashMap;
use std::time::Duration;

use kube::api::DynamicObject;
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;

/// The wait after the first failure.
pub const FIRST: Duration = Duration::from_secs(5);
/// The longest wait: a failure that lasts is still retried every few minutes.
pub const MAX: Duration = Duration::from_secs(5 * 60);

/// The wait after `failures` failures in a row (at least one).
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    FIRST.saturating_mul(1 << doublings).min(MAX)
}

/// Failures in a row by object (of any kind). An object leaves the map when a reconcile of it
/// succeeds; one deleted while failing stays until the operator restarts, a few bytes each.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<ObjectRef<DynamicObject>, u32>>,
}

impl Backoff {
    /// Counts a failure of `object` and returns how long to wait before the next try.
    pub fn failed(&self, object: ObjectRef<DynamicObject>) -> Duration {
        let mut failures = self.failures.lock();
        let count = failures.entry(object).or_insert(0);
        *count = count.saturating_add(1);
        delay(*count)
    }

    /// Forgets `object`'s failures after a successful reconcile.
    pub fn succeeded(&self, object: &ObjectRef<DynamicObject>) {
        self.failures.lock().remove(object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MqttCluster, MqttUser};

    #[test]
    fn the_wait_doubles_from_five_seconds_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|n| delay(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(delay(0), FIRST, "never less than the first wait");
        assert_eq!(delay(u32::MAX), MAX, "no overflow however long it fails");
    }

    #[test]
    fn failures_count_per_object_and_a_success_resets_them() {
        let backoff = Backoff::default();
        let demo = ObjectRef::<MqttCluster>::new("demo").within("iot").erase();
        let other = ObjectRef::<MqttCluster>::new("other").within("iot").erase();
        // A user of the same name is another object.
        let user = ObjectRef::<MqttUser>::new("demo").within("iot").erase();
        assert_eq!(backoff.failed(demo.clone()), Duration::from_secs(5));
        assert_eq!(backoff.failed(demo.clone()), Duration::from_secs(10));
        assert_eq!(backoff.failed(demo.clone()), Duration::from_secs(20));
        assert_eq!(backoff.failed(other.clone()), Duration::from_secs(5));
        assert_eq!(backoff.failed(user), Duration::from_secs(5));
        backoff.succeeded(&demo);
        assert_eq!(backoff.failed(demo), Duration::from_secs(5));
        assert_eq!(backoff.failed(other), Duration::from_secs(10));
    }
}
