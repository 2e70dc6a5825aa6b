//! The pace of status writes: a change of counts waits, a change of state does not.
//!
//! A status carries two kinds of fields: conditions (Ready, Degraded, ...) and observedGeneration,
//! which people and alerts act on, and counts (pods ready, slots used), which move with every pod
//! transition. Written on every change, the counts cost one status write per pod transition: on the
//! way to Ready a CaptionPool was written 4.2 times and a VisioCluster 3.7 times (`e2e/bench tenants
//! 10`), and a morning rush of meetings would write each tenant's status as often as its pods change.
//! So a status whose conditions and observedGeneration are as before is written at most once per
//! [`COUNTS_INTERVAL`] per object; the reconcile asks to be called again when the interval ends, so
//! the counts are never more than that late. A change of conditions or generation is written at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// How late a count-only status change may be written.
pub const COUNTS_INTERVAL: Duration = Duration::from_secs(2);

/// When each object's status was last written, by key (`Kind/namespace/name/status`).
#[derive(Debug, Default)]
pub struct StatusPace {
    written: Mutex<HashMap<String, Instant>>,
}

impl StatusPace {
    /// How long a count-only write of `key` must still wait; `None` if it may go now.
    pub fn wait(&self, key: &str) -> Option<Duration> {
        self.wait_at(key, Instant::now())
    }

    fn wait_at(&self, key: &str, now: Instant) -> Option<Duration> {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let since = now.saturating_duration_since(*written.get(key)?);
        COUNTS_INTERVAL.checked_sub(since).filter(|d| !d.is_zero())
    }

    /// Records a status write of `key`.
    pub fn wrote(&self, key: &str) {
        self.wrote_at(key, Instant::now());
    }

    fn wrote_at(&self, key: &str, now: Instant) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: an entry older than the interval holds nothing back; drop those when the map grows.
        if written.len() > 4096 {
            written.retain(|_, at| now.saturating_duration_since(*at) < COUNTS_INTERVAL);
        }
        written.insert(key.to_string(), now);
    }
}

/// Whether a status change must be written at once (pure): there was no status, observedGeneration
/// changed, or a condition appeared, went, or changed its status or reason. Messages and
/// transition times alone do not count: messages may quote counts.
pub fn urgent(old: Option<(&[Condition], Option<i64>)>, new: (&[Condition], Option<i64>)) -> bool {
    let Some((old_conditions, old_generation)) = old else { return true };
    let key = |cs: &[Condition]| {
        let mut v: Vec<(String, String, String)> =
            cs.iter().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone())).collect();
        v.sort();
        v
    };
    old_generation != new.1 || key(old_conditions) != key(new.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        }
    }

    #[test]
    fn only_state_changes_are_urgent() {
        let ready = [cond("Ready", "True", "Ready", "2 of 2 pods ready")];
        let ready_other_message = [cond("Ready", "True", "Ready", "3 of 3 pods ready")];
        let not_ready = [cond("Ready", "False", "Progressing", "1 of 2 pods ready")];
        assert!(urgent(None, (&ready, Some(1))));
        assert!(!urgent(Some((&ready, Some(1))), (&ready_other_message, Some(1))));
        assert!(urgent(Some((&ready, Some(1))), (&not_ready, Some(1))));
        assert!(urgent(Some((&ready, Some(1))), (&ready, Some(2))));
        let degraded = [cond("Ready", "True", "Ready", ""), cond("Degraded", "True", "StreamsRejected", "")];
        assert!(urgent(Some((&ready, Some(1))), (&degraded, Some(1))));
        assert!(urgent(Some((&degraded, Some(1))), (&ready, Some(1))));
        // Order does not matter.
        let swapped = [degraded[1].clone(), degraded[0].clone()];
        assert!(!urgent(Some((&degraded, Some(1))), (&swapped, Some(1))));
    }

    #[test]
    fn counts_wait_out_the_interval_per_object() {
        let p = StatusPace::default();
        let t0 = Instant::now();
        assert_eq!(p.wait_at("a", t0), None);
        p.wrote_at("a", t0);
        assert_eq!(p.wait_at("a", t0 + Duration::from_millis(500)), Some(COUNTS_INTERVAL - Duration::from_millis(500)));
        assert_eq!(p.wait_at("b", t0), None);
        assert_eq!(p.wait_at("a", t0 + COUNTS_INTERVAL), None);
    }

    proptest! {
        /// Whatever the sequence of attempts, two count-only writes of one object are at least the
        /// interval apart, and a count-only change is never held back longer than the interval.
        #[test]
        fn writes_are_spaced_and_never_held_longer_than_the_interval(
            steps in proptest::collection::vec(0u64..3000, 1..80)
        ) {
            let p = StatusPace::default();
            let mut now = Instant::now();
            let mut last: Option<Instant> = None;
            for ms in steps {
                now += Duration::from_millis(ms);
                match p.wait_at("k", now) {
                    None => {
                        if let Some(l) = last {
                            prop_assert!(now.duration_since(l) >= COUNTS_INTERVAL);
                        }
                        p.wrote_at("k", now);
                        last = Some(now);
                    }
                    Some(w) => {
                        prop_assert!(w <= COUNTS_INTERVAL);
                        prop_assert_eq!(Some(now + w), last.map(|l| l + COUNTS_INTERVAL));
                    }
                }
            }
        }
    }
}
