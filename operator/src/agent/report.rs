//! When the agent writes its pod's load annotation.
//!
//! Every write is a pod update that every pod watcher in the namespace receives (the operator first), so
//! the agent writes only meaningful changes (participants, rooms, capacity, or the draining flag) and never
//! more often than a floor. Two changes skip the floor, because each one unblocks or protects a decision
//! the operator is waiting for:
//! - a change to exactly zero participants and zero rooms: the operator deletes a drained pod as soon as it
//!   reads it empty;
//! - a change from a reported zero to unknown: a stale zero could let the operator delete a pod that holds
//!   sessions the agent can no longer see.

use std::time::Duration;

use crate::pod_protocol::Load;

/// What the annotation says: a load, or nothing (`None`, load unknown: the annotation is removed).
pub type Report = Option<Load>;

/// Whether two reports differ in a way the operator cares about.
pub fn meaningful_change(prev: &Report, next: &Report) -> bool {
    match (prev, next) {
        (None, None) => false,
        (Some(a), Some(b)) => {
            a.participants != b.participants
                || a.rooms != b.rooms
                || a.capacity != b.capacity
                || a.draining != b.draining
                || a.rejected != b.rejected
                || step_time_moved(a.step_p95_us, b.step_p95_us)
                || slow_share_moved(a.slow_step_permille, b.slow_step_permille)
        }
        _ => true,
    }
}

/// Whether the step time moved enough to be worth a pod write: by more than a quarter and more than 5 ms,
/// or across the 80 ms real-time line (one step is 80 ms of audio), or appeared or vanished. Small jitter
/// of a busy backend is not written.
pub fn step_time_moved(a: Option<u32>, b: Option<u32>) -> bool {
    const REAL_TIME_US: u32 = 80_000;
    match (a, b) {
        (None, None) => false,
        (Some(a), Some(b)) => {
            let diff = a.abs_diff(b);
            (diff > 5_000 && u64::from(diff) * 4 > u64::from(a.max(b))) || ((a > REAL_TIME_US) != (b > REAL_TIME_US))
        }
        _ => true,
    }
}

/// Whether the share of slow steps moved enough to be worth a pod write: by 20 per mille or more, across
/// 50 per mille (the 5 % of steps above which the p95 step is slower than real time), or appeared or
/// vanished.
pub fn slow_share_moved(a: Option<u32>, b: Option<u32>) -> bool {
    const P95_LINE: u32 = 50;
    match (a, b) {
        (None, None) => false,
        (Some(a), Some(b)) => a.abs_diff(b) >= 20 || ((a > P95_LINE) != (b > P95_LINE)),
        _ => true,
    }
}

fn is_zero(r: &Report) -> bool {
    matches!(r, Some(l) if l.participants == 0 && l.rooms == 0)
}

/// Whether to write `next`, given the last report written (`None`: nothing written since the agent
/// started, so the annotation may be stale) and the time since that write.
pub fn should_report(prev: Option<&Report>, next: &Report, elapsed: Duration, floor: Duration) -> bool {
    let Some(prev) = prev else {
        return true;
    };
    if !meaningful_change(prev, next) {
        return false;
    }
    let urgent = (is_zero(next) && !is_zero(prev)) || (next.is_none() && is_zero(prev));
    urgent || elapsed >= floor
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FLOOR: Duration = Duration::from_secs(5);

    fn load(participants: u32, rooms: u32) -> Report {
        Some(Load { participants, rooms, capacity: None, draining: false, ..Load::default() })
    }
    fn draining(participants: u32, rooms: u32) -> Report {
        Some(Load { participants, rooms, capacity: None, draining: true, ..Load::default() })
    }

    #[test]
    fn table() {
        let s = Duration::from_secs;
        // (prev, next, elapsed) -> write?
        let cases: [(Option<Report>, Report, Duration, bool); 18] = [
            (None, load(3, 1), s(0), true),               // first report, at once
            (None, None, s(0), true),                     // first: clear a stale annotation
            (Some(load(3, 1)), load(3, 1), s(60), false), // nothing changed: never
            (Some(None), None, s(60), false),
            (Some(load(3, 1)), load(4, 1), s(1), false), // changed, under the floor
            (Some(load(3, 1)), load(4, 1), s(5), true),  // changed, at the floor
            (Some(load(3, 1)), load(3, 2), s(6), true),
            (Some(load(3, 1)), draining(3, 1), s(4), false), // draining flip waits for the floor
            (Some(load(3, 1)), draining(3, 1), s(5), true),
            (Some(load(3, 1)), load(0, 0), s(0), true), // to zero: at once
            (Some(draining(1, 1)), draining(0, 0), s(0), true),
            (Some(load(3, 1)), load(0, 1), s(1), false), // an empty room is not zero
            (Some(load(0, 0)), draining(0, 0), s(1), false), // zero to zero is not urgent
            (Some(load(0, 0)), None, s(0), true),        // a stale zero is removed at once
            (Some(load(3, 1)), None, s(1), false),       // unknown after busy: the floor holds
            (Some(load(3, 1)), None, s(5), true),
            (Some(None), load(2, 1), s(1), false),
            (Some(None), load(0, 0), s(0), true),
        ];
        for (prev, next, elapsed, want) in cases {
            assert_eq!(
                should_report(prev.as_ref(), &next, elapsed, FLOOR),
                want,
                "{prev:?} -> {next:?} after {elapsed:?}"
            );
        }
    }

    #[test]
    fn capacity_is_meaningful() {
        let a = Load { participants: 1, rooms: 1, capacity: Some(64), draining: false, ..Load::default() };
        let b = Load { capacity: Some(32), ..a };
        assert!(meaningful_change(&Some(a), &Some(b)));
        let c = Load { rejected: Some(1), ..a };
        assert!(meaningful_change(&Some(a), &Some(c)));
    }

    #[test]
    fn step_time_jitter_is_not_written() {
        let at = |us| Some(Load { participants: 1, rooms: 1, step_p95_us: Some(us), ..Load::default() });
        assert!(!meaningful_change(&at(40_000), &at(42_000)));
        assert!(!meaningful_change(&at(40_000), &at(49_000)), "under a quarter");
        assert!(meaningful_change(&at(40_000), &at(60_000)));
        assert!(meaningful_change(&at(79_000), &at(81_000)), "crossing real time");
        assert!(!meaningful_change(&at(1_000), &at(2_500)), "under 5 ms");
        let none = Some(Load { participants: 1, rooms: 1, ..Load::default() });
        assert!(meaningful_change(&none, &at(40_000)));
    }

    #[test]
    fn slow_step_share_is_written_when_it_matters() {
        let at = |pm| Some(Load { participants: 1, rooms: 1, slow_step_permille: Some(pm), ..Load::default() });
        assert!(!meaningful_change(&at(10), &at(25)), "jitter");
        assert!(meaningful_change(&at(45), &at(55)), "crossing 5 %: the p95 step leaves real time");
        assert!(meaningful_change(&at(100), &at(300)));
        let none = Some(Load { participants: 1, rooms: 1, ..Load::default() });
        assert!(meaningful_change(&none, &at(0)));
    }

    fn report() -> impl Strategy<Value = Report> {
        proptest::option::of((0u32..4, 0u32..4, any::<bool>()).prop_map(|(p, r, d)| Load {
            participants: p,
            rooms: r,
            capacity: None,
            draining: d,
            ..Load::default()
        }))
    }

    proptest! {
        /// Never a write without a change, never a write under the floor unless it reports zero or clears a zero.
        #[test]
        fn invariants(prev in report(), next in report(), ms in 0u64..20_000) {
            let elapsed = Duration::from_millis(ms);
            let write = should_report(Some(&prev), &next, elapsed, FLOOR);
            if !meaningful_change(&prev, &next) {
                prop_assert!(!write);
            }
            if write && elapsed < FLOOR {
                prop_assert!(is_zero(&next) || (next.is_none() && is_zero(&prev)));
            }
            if meaningful_change(&prev, &next) && elapsed >= FLOOR {
                prop_assert!(write);
            }
        }
    }
}
