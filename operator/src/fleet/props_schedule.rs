//! Property tests of scheduled capacity in the planner: a window's minimum is a floor within
//! `min..=max` under the reactive demand, it never adds a scale-down drain, and its end drains
//! nothing before the normal scale-down delay, and no pod's meetings are ever cut by it.

use super::schedule::{Minimum, Schedule, Window};
use super::sim::MINUTE;
use super::*;
use jiff::tz::TimeZone;
use proptest::prelude::*;

/// Monday 2026-12-07 08:00 UTC.
const MONDAY_8: Millis = 1_796_630_400_000;

fn spec(min: u32, extra: u32, cap: u32, buffer: u32, delay_min: i64, schedule: Schedule) -> FleetSpec {
    FleetSpec {
        min,
        max: min + extra,
        capacity_per_pod: cap,
        buffer,
        target_utilization_percent: 80,
        scale_down_delay_ms: delay_min * MINUTE,
        max_surge: 1,
        max_draining: 1,
        drain_timeout_ms: 60 * MINUTE,
        warn_before_ms: 5 * MINUTE,
        schedule,
    }
}

/// Every day, 08:30 to 10:00 UTC, with `min`.
fn morning(min: Minimum) -> Schedule {
    Schedule {
        time_zone: TimeZone::UTC,
        windows: vec![Window { name: "morning".into(), days: 0x7f, start_minute: 510, end_minute: 600, min }],
    }
}

fn serving(name: &str, load: u32, sessions: u32) -> PodSnapshot {
    PodSnapshot {
        name: name.into(),
        template_hash: "t".into(),
        phase: PodPhase::Serving,
        load: Some(load),
        sessions: Some(sessions),
        warned: false,
        created: 0,
        evacuate: false,
        drain_requested: false,
    }
}

fn snap(now: Millis, pods: Vec<PodSnapshot>, low: Option<Millis>, lead: Option<Millis>) -> Snapshot {
    Snapshot { now, target_hash: "t".into(), pods, low_load_since: low, startup_lead_ms: lead }
}

fn minimum() -> impl Strategy<Value = Minimum> {
    prop_oneof![(0u32..=20).prop_map(Minimum::Pods), (0u32..=5000).prop_map(Minimum::Load)]
}

fn scale_down_drains(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Drain { pod, reason: DrainReason::ScaleDown } => Some(pod.clone()),
            _ => None,
        })
        .collect()
}

proptest! {
    /// Inside the window, desired is the larger of the reactive demand and the window's pods, within
    /// `min..=max`; outside it, the reactive demand alone.
    #[test]
    fn the_window_is_a_floor_within_the_bounds(
        (min, extra, cap, buffer) in (0u32..=4, 0u32..=12, 1u32..=500, 0u32..=300),
        m in minimum(),
        loads in prop::collection::vec(0u32..=600, 0..8),
        minute in 0i64..=180,
        lead in prop::option::of(0i64..=20 * MINUTE),
    ) {
        let with = spec(min, extra, cap, buffer, 5, morning(m));
        let without = FleetSpec { schedule: Schedule::default(), ..with.clone() };
        let pods: Vec<PodSnapshot> = loads.iter().enumerate().map(|(i, &l)| serving(&format!("p{i}"), l, l.min(3))).collect();
        let now = MONDAY_8 + minute * MINUTE;
        let s = snap(now, pods, None, lead);
        let (p, reactive) = (plan(&with, &s), plan(&without, &s).desired);
        prop_assert!(p.desired >= reactive);
        prop_assert!(p.desired >= with.min && p.desired <= with.max);
        let open = now >= MONDAY_8 + 30 * MINUTE - lead.unwrap_or(0) && now < MONDAY_8 + 120 * MINUTE;
        prop_assert_eq!(p.scheduled.is_some(), open);
        prop_assert_eq!(p.figures.window_open, open);
        match &p.scheduled {
            Some(sch) => {
                let floor = match m {
                    Minimum::Pods(n) => n.clamp(with.min, with.max),
                    Minimum::Load(l) => scale::desired(&with, u64::from(l)),
                };
                prop_assert_eq!(sch.pods, floor);
                prop_assert_eq!(p.desired, reactive.max(floor));
            }
            None => prop_assert_eq!(p.desired, reactive),
        }
        // The planner wakes for the window's next opening or close.
        prop_assert!(p.requeue_after_ms.is_some());
    }

    /// A window never adds a scale-down drain: what is drained with it is drained without it too
    /// (a floor only lowers the surplus).
    #[test]
    fn a_window_never_adds_a_drain(
        (sp, s) in super::props::spec_and_snapshot(),
        m in minimum(),
        minute in 0i64..=180,
    ) {
        let with = FleetSpec { schedule: morning(m), ..sp.clone() };
        let s = Snapshot { now: MONDAY_8 + minute * MINUTE, ..s };
        let drained_with = scale_down_drains(&plan(&with, &s));
        let drained_without = scale_down_drains(&plan(&sp, &s));
        for d in &drained_with {
            prop_assert!(drained_without.contains(d), "{d} drained only with the window");
        }
    }

    /// Before a window that opens within the hold ahead, a scale-down keeps the pods it will ask for:
    /// no drain takes the serving pods under its floor, nothing is created for it yet (desired is the
    /// reactive demand), every drain is one the planner without the window makes too, and no
    /// Serving pod is deleted.
    #[test]
    fn a_window_ahead_holds_its_pods(
        pods_n in 1u32..=12,
        load in 0u32..=30,
        m in minimum(),
        before_min in 1i64..=120,
        drain_min in 1i64..=240,
    ) {
        let s = FleetSpec { drain_timeout_ms: drain_min * MINUTE, ..spec(1, 11, 100, 0, 0, morning(m)) };
        let without = FleetSpec { schedule: Schedule::default(), ..s.clone() };
        let pods: Vec<PodSnapshot> = (0..pods_n).map(|i| serving(&format!("p{i:02}"), load, load.min(1))).collect();
        let now = MONDAY_8 + 30 * MINUTE - before_min * MINUTE;
        let sn = snap(now, pods, Some(now - 60 * MINUTE), None);
        let (p, reactive) = (plan(&s, &sn), plan(&without, &sn));
        prop_assert_eq!(p.desired, reactive.desired);
        prop_assert!(p.scheduled.is_none());
        let floor = match m {
            Minimum::Pods(n) => n.clamp(s.min, s.max),
            Minimum::Load(l) => scale::desired(&s, u64::from(l)),
        };
        let drained = scale_down_drains(&p);
        let held = before_min * MINUTE <= scale::hold_ahead_ms(&s);
        if held {
            prop_assert!(pods_n - drained.len() as u32 >= floor.min(pods_n), "drained {drained:?} under the floor {floor}");
        } else {
            prop_assert_eq!(&drained, &scale_down_drains(&reactive));
        }
        for d in &drained {
            prop_assert!(scale_down_drains(&reactive).contains(d));
        }
        for a in &p.actions {
            prop_assert!(matches!(a, Action::Drain { reason: DrainReason::ScaleDown, .. }), "only drains: {a:?}");
        }
    }

    /// At a window's end with meetings on every pod: no pod is drained before the scale-down delay has
    /// run from the end, drains are only ever drains (no Serving pod is deleted, no meeting ended) and
    /// one at a time within the capacity floor.
    #[test]
    fn a_windows_end_waits_for_the_scale_down_rules(
        pods_n in 2u32..=10,
        load in 1u32..=50,
        delay_min in 0i64..=15,
        step_s in 10i64..=120,
    ) {
        let s = spec(1, 11, 100, 0, delay_min, morning(Minimum::Pods(pods_n)));
        let pods: Vec<PodSnapshot> = (0..pods_n).map(|i| serving(&format!("p{i:02}"), load, 1)).collect();
        let end = MONDAY_8 + 120 * MINUTE;
        let mut low = None;
        let mut t = end - 5 * MINUTE;
        while t < end + (delay_min + 5) * MINUTE {
            let p = plan(&s, &snap(t, pods.clone(), low, None));
            for a in &p.actions {
                match a {
                    Action::Drain { reason: DrainReason::ScaleDown, .. } => {
                        prop_assert!(t >= end + delay_min * MINUTE, "drained at {} before the delay ran from the end", t - end);
                    }
                    Action::Create { .. } => prop_assert!(false, "nothing to create: {a:?}"),
                    other => prop_assert!(false, "only drains at a window's end, got {other:?}"),
                }
            }
            low = p.low_load_since;
            t += step_s * 1000;
        }
    }
}

/// The two Paris DST Sundays of 2027, as the controller would read a Paris schedule: the window
/// holds at 09:00 local time each side of the change, opened early by the lead.
#[test]
fn paris_mornings_across_both_changes() {
    use crate::api::schedule::{Weekday, WindowView};
    let days = [Weekday::Sat, Weekday::Sun, Weekday::Mon];
    let schedule = Schedule::parse(
        "spec.autoscaling",
        "Europe/Paris",
        &[WindowView { name: "peak", days: &days, start: "09:00", end: "10:00", min_pods: Some(6), min_load: None }],
    )
    .unwrap();
    let s = spec(2, 10, 100, 0, 5, schedule);
    let utc = |t: &str| t.parse::<jiff::Timestamp>().unwrap().as_millisecond();
    let lead = Some(2 * MINUTE);
    for (nine_local, summer) in [
        ("2027-03-27T08:00:00Z", false), // Saturday, still CET (UTC+1)
        ("2027-03-28T07:00:00Z", true),  // Sunday, CEST (UTC+2) since 02:00
        ("2027-10-30T07:00:00Z", true),  // Saturday, still CEST
        ("2027-10-31T08:00:00Z", false), // Sunday, CET since 03:00
    ] {
        let nine = utc(nine_local);
        let at = |t| plan(&s, &snap(t, vec![], None, lead));
        assert_eq!(at(nine - 2 * MINUTE - 1).desired, 2, "{nine_local} (summer {summer}): closed before the lead");
        assert_eq!(at(nine - 2 * MINUTE).desired, 6, "{nine_local}: open from the lead");
        assert_eq!(at(nine - 2 * MINUTE).scheduled.unwrap().window, "peak");
        assert_eq!(at(nine + 60 * MINUTE - 1).desired, 6, "{nine_local}: open until 10:00");
        assert_eq!(at(nine + 60 * MINUTE).desired, 2, "{nine_local}: closed at 10:00");
    }
}
