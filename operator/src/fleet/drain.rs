//! Draining: the drain clock of one draining pod (delete when empty, warn, force-end, delete
//! after the deadline) and the capacity floor every new drain must respect.

use super::{Action, DeleteReason, FleetSpec, Millis, PodSnapshot, FORCE_END_GRACE_MS};

/// The instants of one pod's drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DrainClock {
    /// When the sessions are warned (`deadline - warn_before`).
    pub warn_at: Millis,
    /// When the sessions are ended (`since + drain_timeout`).
    pub deadline: Millis,
    /// When the pod is deleted even if it still reports sessions or no load.
    pub delete_at: Millis,
}

impl DrainClock {
    pub fn new(spec: &FleetSpec, since: Millis) -> DrainClock {
        let deadline = since.saturating_add(spec.drain_timeout_ms);
        DrainClock {
            warn_at: deadline.saturating_sub(spec.warn_before_ms),
            deadline,
            delete_at: deadline.saturating_add(FORCE_END_GRACE_MS),
        }
    }
}

/// What the drain clock says for one pod now.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DrainStep {
    pub action: Option<Action>,
    /// The action deletes the pod.
    pub deletes: bool,
    /// The next instant at which this pod needs a decision.
    pub next_due: Option<Millis>,
}

/// The drain clock of a pod draining since `since`:
/// - empty (load and sessions both known 0): `Delete{Empty}`, at any time;
/// - from `delete_at`: `Delete{DeadlinePassed}`, whatever it reports (unknown included);
/// - from `deadline`: `ForceEnd` (repeated until it is empty or `delete_at`);
/// - from `warn_at`, if not `warned`: `Warn` once. A pod that reaches its deadline unwarned (for
///   instance `warn_before` 0, or the operator was down) is not warned late: the deadline holds.
pub(super) fn step(spec: &FleetSpec, now: Millis, pod: &PodSnapshot, since: Millis) -> DrainStep {
    let clock = DrainClock::new(spec, since);
    let delete = |reason| DrainStep {
        action: Some(Action::Delete { pod: pod.name.clone(), reason }),
        deletes: true,
        next_due: None,
    };
    if pod.is_known_empty() {
        delete(DeleteReason::Empty)
    } else if now >= clock.delete_at {
        delete(DeleteReason::DeadlinePassed)
    } else if now >= clock.deadline {
        DrainStep {
            action: Some(Action::ForceEnd { pod: pod.name.clone() }),
            deletes: false,
            next_due: Some(clock.delete_at),
        }
    } else if pod.warned {
        DrainStep { action: None, deletes: false, next_due: Some(clock.deadline) }
    } else if now >= clock.warn_at {
        DrainStep {
            action: Some(Action::Warn { pod: pod.name.clone(), deadline: clock.deadline }),
            deletes: false,
            next_due: Some(clock.deadline),
        }
    } else {
        DrainStep { action: None, deletes: false, next_due: Some(clock.warn_at) }
    }
}

/// The load every drain must assume the Serving pods carry: the reported loads, and a full pod
/// for each unknown one. Unlike the demand (`scale::serving_load`, where an unknown load counts
/// for nothing so that new pods do not ask for more pods), a drain never relies on an unknown
/// pod being empty: if its agent broke under load, the pods left serving must still hold it.
pub(super) fn assumed_load(spec: &FleetSpec, serving: &[&PodSnapshot]) -> u64 {
    serving.iter().map(|p| u64::from(p.load.unwrap_or(spec.capacity_per_pod))).sum()
}

/// The Serving capacity no drain may go under: the assumed load ([`assumed_load`]) plus the
/// buffer. When that is more than `max` pods hold, the floor is what `max` pods hold (a fleet
/// above `max` may shrink to it) but never less than the load itself: a drain never leaves the
/// remaining Serving pods too small for the load they serve now.
///
/// The load includes the load of the pod about to drain, although its sessions stay on it: a
/// drain is safe even if those sessions came back as new ones.
pub(super) fn capacity_floor(spec: &FleetSpec, load: u64) -> u64 {
    let at_max = u64::from(spec.max) * u64::from(spec.capacity_per_pod);
    (load + u64::from(spec.buffer)).min(at_max.max(load))
}

/// `serving` non-draining Serving pods hold at least `floor`.
pub(super) fn keeps_floor(spec: &FleetSpec, serving: u32, floor: u64) -> bool {
    u64::from(serving) * u64::from(spec.capacity_per_pod) >= floor
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::PodPhase;

    const MIN: Millis = 60_000;

    fn spec() -> FleetSpec {
        FleetSpec {
            min: 0,
            max: 10,
            capacity_per_pod: 100,
            buffer: 50,
            target_utilization_percent: 100,
            scale_down_delay_ms: 0,
            max_surge: 1,
            max_draining: 1,
            drain_timeout_ms: 60 * MIN,
            warn_before_ms: 10 * MIN,
            schedule: Default::default(),
        }
    }

    fn pod(load: Option<u32>, sessions: Option<u32>, warned: bool) -> PodSnapshot {
        PodSnapshot {
            name: "p".into(),
            template_hash: "h".into(),
            phase: PodPhase::Draining { since: 0 },
            load,
            sessions,
            warned,
            created: 0,
            evacuate: false,
            drain_requested: false,
        }
    }

    fn warn() -> Option<Action> {
        Some(Action::Warn { pod: "p".into(), deadline: 60 * MIN })
    }
    fn force() -> Option<Action> {
        Some(Action::ForceEnd { pod: "p".into() })
    }
    fn delete(reason: DeleteReason) -> Option<Action> {
        Some(Action::Delete { pod: "p".into(), reason })
    }

    #[test]
    fn drain_clock_table() {
        use DeleteReason::*;
        let busy = (Some(10), Some(2));
        let unknown = (None, None);
        let grace_end = 60 * MIN + FORCE_END_GRACE_MS;
        // (now, (load, sessions), warned) -> (action, next due)
        let table = [
            (0, busy, false, None, Some(50 * MIN)),
            (50 * MIN - 1, busy, false, None, Some(50 * MIN)),
            (50 * MIN, busy, false, warn(), Some(60 * MIN)),
            (55 * MIN, busy, false, warn(), Some(60 * MIN)), // late but before the deadline
            (55 * MIN, busy, true, None, Some(60 * MIN)),    // only once
            (60 * MIN - 1, busy, true, None, Some(60 * MIN)),
            (60 * MIN, busy, true, force(), Some(grace_end)),
            (60 * MIN, busy, false, force(), Some(grace_end)), // never warned late
            (grace_end - 1, busy, true, force(), Some(grace_end)),
            (grace_end, busy, true, delete(DeadlinePassed), None),
            (0, (Some(0), Some(0)), false, delete(Empty), None),
            (61 * MIN, (Some(0), Some(0)), true, delete(Empty), None),
            (0, (Some(0), Some(1)), false, None, Some(50 * MIN)), // an empty room is a session
            (0, (Some(1), Some(0)), false, None, Some(50 * MIN)),
            (0, (Some(0), None), false, None, Some(50 * MIN)), // unknown sessions: not empty
            (0, (None, Some(0)), false, None, Some(50 * MIN)),
            (0, unknown, false, None, Some(50 * MIN)),
            (59 * MIN, unknown, true, None, Some(60 * MIN)),
            (60 * MIN, unknown, true, force(), Some(grace_end)),
            (grace_end, unknown, true, delete(DeadlinePassed), None),
        ];
        for (now, (load, sessions), warned, action, next_due) in table {
            let got = step(&spec(), now, &pod(load, sessions, warned), 0);
            assert_eq!(got.action, action, "now {now} load {load:?} sessions {sessions:?} warned {warned}");
            assert_eq!(got.next_due, next_due, "now {now} load {load:?} sessions {sessions:?} warned {warned}");
            assert_eq!(got.deletes, matches!(action, Some(Action::Delete { .. })));
        }
    }

    #[test]
    fn warn_before_zero_never_warns() {
        let s = FleetSpec { warn_before_ms: 0, ..spec() };
        let p = pod(Some(3), Some(1), false);
        assert_eq!(step(&s, 60 * MIN - 1, &p, 0).action, None);
        assert_eq!(step(&s, 60 * MIN, &p, 0).action, force());
    }

    #[test]
    fn floor_table() {
        // (load, max) -> floor, with capacity 100 and buffer 50
        let table = [
            (0, 1, 50),
            (120, 2, 170),
            (120, 10, 170),
            (180, 2, 200), // 2 pods cannot hold the buffer: keep what max pods hold
            (350, 2, 350), // above max: never under the load itself
        ];
        for (load, max, want) in table {
            assert_eq!(capacity_floor(&FleetSpec { max, ..spec() }, load), want, "load {load} max {max}");
        }
        assert!(keeps_floor(&spec(), 2, 200));
        assert!(!keeps_floor(&spec(), 1, 101));
        assert!(keeps_floor(&spec(), 0, 0));
    }

    #[test]
    fn assumed_load_reads_unknown_as_full() {
        let serving = |load| PodSnapshot { phase: PodPhase::Serving, ..pod(load, None, false) };
        let pods = [serving(Some(30)), serving(None), serving(Some(0))];
        let pods: Vec<&PodSnapshot> = pods.iter().collect();
        assert_eq!(assumed_load(&spec(), &pods), 130);
        assert_eq!(assumed_load(&spec(), &[]), 0);
    }
}
