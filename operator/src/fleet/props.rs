//! Property tests of the planner's invariants over generated specs and fleets: safety of one
//! plan, determinism, no demand from unknown loads, convergence under a stable load (and with no
//! load reported at all), and termination of upgrades.

use super::sim::{check_plan, is_idle, Meeting, Sim, SimPod, MINUTE};
use super::*;
use proptest::prelude::*;

const NOW: Millis = 1_000_000_000_000;

/// A spec the CRD would accept: `max_surge` and `max_draining` not both 0, `warn_before`
/// shorter than `drain_timeout`, durations of minutes so simulations stay short.
fn spec() -> impl Strategy<Value = FleetSpec> {
    (0u32..=4, 0u32..=8, 1u32..=200, 0u32..=300, 10u32..=100, 0i64..=10, 0u32..=3, 0u32..=3, 1i64..=30, 0i64..=30)
        .prop_map(|(min, extra, cap, buffer, target, delay, surge, draining, timeout, warn)| FleetSpec {
            min,
            max: min + extra,
            capacity_per_pod: cap,
            buffer,
            target_utilization_percent: target,
            scale_down_delay_ms: delay * MINUTE,
            max_surge: surge,
            max_draining: if surge == 0 { draining.max(1) } else { draining },
            drain_timeout_ms: timeout * MINUTE,
            warn_before_ms: warn.min(timeout - 1) * MINUTE,
            schedule: Default::default(),
        })
}

fn phase() -> impl Strategy<Value = PodPhase> {
    prop_oneof![
        4 => Just(PodPhase::Serving),
        2 => Just(PodPhase::Pending),
        3 => (0i64..=40 * MINUTE).prop_map(|ago| PodPhase::Draining { since: NOW - ago }),
        1 => Just(PodPhase::Terminating),
        1 => Just(PodPhase::Failed),
    ]
}

/// A drain start that puts `NOW` anywhere on the drain clock: before the warning, around the
/// warning, within the force-end grace, past it.
fn drain_since(spec: &FleetSpec) -> impl Strategy<Value = PodPhase> {
    let (timeout, warn) = (spec.drain_timeout_ms, spec.warn_before_ms);
    prop_oneof![
        (0..=timeout + 2 * FORCE_END_GRACE_MS),
        (timeout - warn - 2..=timeout - warn + 2),
        (timeout..=timeout + FORCE_END_GRACE_MS),
    ]
    .prop_map(|ago| PodPhase::Draining { since: NOW - ago })
}

/// Any fleet for `spec`, reports as the agent might send them (load and sessions independent:
/// reports race). Loads are scaled to the capacity so that every rule gets its turn.
fn snapshot(spec: &FleetSpec) -> impl Strategy<Value = Snapshot> {
    let cap = spec.capacity_per_pod;
    let phase = prop_oneof![
        4 => Just(PodPhase::Serving),
        2 => Just(PodPhase::Pending),
        3 => drain_since(spec),
        1 => Just(PodPhase::Terminating),
        1 => Just(PodPhase::Failed),
    ];
    let load = prop_oneof![3 => Just(Some(0)), 4 => (0..=cap / 2).prop_map(Some), 2 => (0..=cap + cap / 5).prop_map(Some), 1 => Just(None)];
    let sessions = prop_oneof![3 => Just(Some(0)), 3 => (0u32..=5).prop_map(Some), 1 => Just(None)];
    let pod = (
        phase,
        prop::bool::weighted(0.7),
        load,
        sessions,
        any::<bool>(),
        0i64..=1000,
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
    );
    let low = prop::option::weighted(0.6, 0..=spec.scale_down_delay_ms + 2 * MINUTE);
    (prop::collection::vec(pod, 0..=14), low).prop_map(|(pods, low)| Snapshot {
        now: NOW,
        target_hash: "new".into(),
        pods: pods
            .into_iter()
            .enumerate()
            .map(|(i, (phase, current, load, sessions, warned, created, evacuate, drain_requested))| PodSnapshot {
                name: format!("p{i:02}"),
                template_hash: if current { "new" } else { "old" }.into(),
                phase,
                load,
                sessions,
                warned,
                created: NOW - created * MINUTE,
                evacuate,
                drain_requested,
            })
            .collect(),
        low_load_since: low.map(|ago| NOW - ago),
        startup_lead_ms: None,
    })
}

pub(super) fn spec_and_snapshot() -> impl Strategy<Value = (FleetSpec, Snapshot)> {
    spec().prop_flat_map(|spec| {
        let snap = snapshot(&spec);
        (Just(spec), snap)
    })
}

/// A fleet of the target template for the simulator. Pending pods hold nothing (not ready).
fn sim_pods() -> impl Strategy<Value = Vec<SimPod>> {
    let pod = (phase(), prop::collection::vec(1u32..=120, 0..=3), prop::bool::weighted(0.85));
    prop::collection::vec(pod, 0..=12).prop_map(|pods| {
        pods.into_iter()
            .enumerate()
            .map(|(i, (phase, participants, reports))| {
                let pending = phase == PodPhase::Pending;
                let meetings = if pending { vec![] } else { participants };
                let meetings =
                    meetings.into_iter().map(|participants| Meeting { participants, ends: Millis::MAX }).collect();
                SimPod {
                    reports: reports || pending,
                    created: NOW - MINUTE,
                    ..SimPod::new(format!("p{i:02}"), "new", phase, meetings)
                }
            })
            .collect()
    })
}

/// Serving pods a fleet with no reported load needs: `min`, or what the buffer alone needs if
/// it does not fit in `min` pods, within `max`.
fn idle_count(spec: &FleetSpec) -> u32 {
    spec.min.max(spec.buffer.div_ceil(spec.capacity_per_pod)).min(spec.max)
}

/// A spec and a fleet whose agents never report: at most `idle_count` Serving or Pending pods,
/// and any Draining, Terminating or Failed ones.
fn unreported_case() -> impl Strategy<Value = (FleetSpec, Vec<SimPod>)> {
    let others = prop_oneof![
        3 => (0i64..=40 * MINUTE).prop_map(|ago| PodPhase::Draining { since: NOW - ago }),
        1 => Just(PodPhase::Terminating),
        1 => Just(PodPhase::Failed),
    ];
    spec()
        .prop_flat_map(move |spec| {
            let active = prop::collection::vec(any::<bool>(), 0..=idle_count(&spec) as usize);
            (Just(spec), active, prop::collection::vec(others.clone(), 0..=4))
        })
        .prop_map(|(spec, active, others)| {
            let phases = active.into_iter().map(|serving| if serving { PodPhase::Serving } else { PodPhase::Pending });
            let pods = phases
                .chain(others)
                .enumerate()
                .map(|(i, phase)| SimPod {
                    reports: false,
                    created: NOW - MINUTE,
                    ..SimPod::new(format!("p{i:02}"), "new", phase, vec![])
                })
                .collect();
            (spec, pods)
        })
}

/// Spec and outdated fleet for an upgrade that must finish. With `max_surge` 0 the upgrade can
/// only progress if `min` pods can lose one and still hold the buffer once the load is gone
/// (the documented stall otherwise), so such specs keep `min > ceil(buffer / capacity)`.
fn upgrade_case() -> impl Strategy<Value = (FleetSpec, Vec<SimPod>)> {
    let meetings = prop::collection::vec((1u32..=120, 0i64..=120), 0..=4);
    (spec(), prop::collection::vec(meetings, 1..=10), 0u32..=2).prop_map(|(mut spec, pods, extra)| {
        if spec.max_surge == 0 {
            spec.min = spec.buffer.div_ceil(spec.capacity_per_pod) + 1 + extra;
            spec.max = spec.max.max(spec.min);
        }
        let pods = pods
            .into_iter()
            .enumerate()
            .map(|(i, ms)| {
                let meetings =
                    ms.into_iter().map(|(participants, end)| Meeting { participants, ends: NOW + end * MINUTE });
                SimPod::new(format!("p{i:02}"), "old", PodPhase::Serving, meetings.collect())
            })
            .collect();
        (spec, pods)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Invariants 1-4 (see `sim::check_plan`) for any single plan.
    #[test]
    fn every_plan_is_safe((spec, snap) in spec_and_snapshot()) {
        let plan = plan(&spec, &snap);
        prop_assert!(check_plan(&spec, &snap, &plan).is_ok(), "{:?}\n{snap:#?}\n{plan:#?}", check_plan(&spec, &snap, &plan));
    }

    /// Same input, same plan, whatever the order of the pods.
    #[test]
    fn plans_ignore_pod_order((spec, snap) in spec_and_snapshot(), rotate in 0usize..14) {
        let mut shuffled = snap.clone();
        shuffled.pods.reverse();
        let n = shuffled.pods.len();
        shuffled.pods.rotate_left(rotate % n.max(1));
        prop_assert_eq!(plan(&spec, &snap), plan(&spec, &shuffled));
    }

    /// A Serving pod with unknown load is never drained for a scale-down, and a pod with
    /// sessions or unknown load is never deleted before its deadline (also in check_plan,
    /// stated here on its own).
    #[test]
    fn unknown_or_busy_pods_are_kept((spec, snap) in spec_and_snapshot()) {
        let plan = plan(&spec, &snap);
        for action in &plan.actions {
            let pod = snap.pods.iter().find(|p| Some(p.name.as_str()) == action.pod());
            match (action, pod) {
                (Action::Drain { reason: DrainReason::ScaleDown, .. }, Some(p)) => prop_assert!(p.load.is_some()),
                (Action::Delete { reason, .. }, Some(p)) if *reason != DeleteReason::DeadlinePassed && p.phase != PodPhase::Failed => {
                    prop_assert!(!p.reports_activity(), "{action:?} {p:?}");
                    if matches!(p.phase, PodPhase::Draining { .. }) {
                        prop_assert!(p.is_known_empty(), "{action:?} {p:?}");
                    }
                }
                _ => {}
            }
        }
    }
}

/// The same snapshot with every unknown load of a Serving pod reported as 0.
fn unknown_as_zero(snap: &Snapshot) -> Snapshot {
    let mut zero = snap.clone();
    for p in zero.pods.iter_mut().filter(|p| p.phase == PodPhase::Serving) {
        p.load = p.load.or(Some(0));
    }
    zero
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// An unknown load adds no demand: the desired count is the one it would be if the pod
    /// reported no load at all.
    #[test]
    fn unknown_loads_add_no_demand((spec, snap) in spec_and_snapshot()) {
        prop_assert_eq!(plan(&spec, &snap).desired, plan(&spec, &unknown_as_zero(&snap)).desired);
    }
}

/// Pods that hold a place: all but Terminating and Failed ones.
fn placed_pods(sim: &Sim) -> u32 {
    sim.pods.iter().filter(|p| !matches!(p.phase, PodPhase::Terminating | PodPhase::Failed)).count() as u32
}

/// Steps `pods` until `left` counts none (pods to replace: outdated, or on a cordoned node), within a
/// bound, every plan checked against the invariants and the pods never above the surge on top of
/// the fleet it started from (meetings only end, so the replacement needs no more).
fn replace_all(spec: FleetSpec, pods: Vec<SimPod>, what: &str, left: fn(&Sim) -> usize) -> Result<(), TestCaseError> {
    let n = pods.len() as i64;
    let mut sim = Sim::new(spec.clone(), NOW, "new", pods);
    let bound = 120 + (spec.drain_timeout_ms + FORCE_END_GRACE_MS) / MINUTE + 6 * (n + i64::from(spec.max) + 3);
    let start = plan(&spec, &sim.snapshot()).desired.max(placed_pods(&sim));
    let ceiling = start + spec.max_surge;
    let mut steps = 0;
    while left(&sim) > 0 {
        prop_assert!(steps < bound, "not done in {bound} steps: {} pods {what}", left(&sim));
        sim.step().map_err(TestCaseError::fail)?;
        prop_assert!(placed_pods(&sim) <= ceiling, "{} pods above {ceiling}", placed_pods(&sim));
        steps += 1;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Invariant 4: with meetings that never end, the plans reach a fixed point (no action,
    /// nothing due) within a bound, the Serving + Pending count moves in one direction only,
    /// and every plan on the way is safe.
    #[test]
    fn stable_load_converges(spec in spec(), pods in sim_pods()) {
        let n = pods.len() as i64;
        let mut sim = Sim::new(spec.clone(), NOW, "new", pods);
        let delay_steps = spec.scale_down_delay_ms / MINUTE + 2;
        let drain_steps = (spec.drain_timeout_ms + FORCE_END_GRACE_MS) / MINUTE + 2;
        let bound = (n + i64::from(spec.max) + 3) * delay_steps + drain_steps + 10;
        let mut counts = vec![sim.active()];
        let mut idle = false;
        for _ in 0..bound {
            let plan = sim.step().map_err(TestCaseError::fail)?;
            counts.push(sim.active());
            if is_idle(&plan) {
                idle = true;
                break;
            }
        }
        prop_assert!(idle, "no fixed point within {bound} steps: {counts:?}");
        let ups = counts.windows(2).any(|w| w[1] > w[0]);
        let downs = counts.windows(2).any(|w| w[1] < w[0]);
        prop_assert!(!(ups && downs), "the pod count went both ways: {counts:?}");
        // A fixed point stays one, however long nothing happens.
        let mut later = sim.snapshot();
        later.now += 24 * 60 * MINUTE;
        prop_assert!(is_idle(&plan(&spec, &later)));
    }

    /// No runaway: when no agent ever reports (new pods included), the fleet grows to `min` pods
    /// (`idle_count`: more only if the buffer needs more) with one create per missing pod, never
    /// goes above, and rests there at a fixed point once the Draining pods are gone.
    #[test]
    fn unknown_loads_hold_the_fleet_at_min((spec, pods) in unreported_case()) {
        let want = idle_count(&spec) as usize;
        let start = pods.iter().filter(|p| matches!(p.phase, PodPhase::Serving | PodPhase::Pending)).count();
        let mut sim = Sim::new(spec.clone(), NOW, "new", pods);
        sim.new_pods_report = false;
        let bound = (spec.drain_timeout_ms + FORCE_END_GRACE_MS) / MINUTE + 10;
        let mut created = 0;
        let mut idle = false;
        for _ in 0..bound {
            let plan = sim.step().map_err(TestCaseError::fail)?;
            prop_assert!(sim.active() <= want, "{} Serving or Pending pods, above {want}", sim.active());
            for action in &plan.actions {
                if let Action::Create { count } = action {
                    created += *count as usize;
                }
            }
            if is_idle(&plan) {
                idle = true;
                break;
            }
        }
        prop_assert!(idle, "no fixed point within {bound} steps");
        prop_assert_eq!(sim.active(), want);
        prop_assert_eq!(placed_pods(&sim) as usize, want);
        prop_assert_eq!(created, want - start);
        let mut later = sim.snapshot();
        later.now += 24 * 60 * MINUTE;
        prop_assert!(is_idle(&plan(&spec, &later)));
    }

    /// Invariant 5: meetings end at random times, and every pod ends on the target template
    /// within a bound, no plan on the way breaking an invariant (in particular no pod with
    /// sessions deleted before its deadline).
    #[test]
    fn upgrades_finish((spec, pods) in upgrade_case()) {
        replace_all(spec, pods, "outdated", Sim::outdated)?;
    }

    /// Cordoned nodes empty like an upgrade: the pods on them (already of the target template) are
    /// replaced within the surge and drained, every plan on the way keeps the invariants (no pod
    /// with sessions deleted before its deadline), and none is left within the same bound.
    #[test]
    fn cordoned_nodes_empty((spec, pods) in upgrade_case(), cordoned in prop::collection::vec(any::<bool>(), 10)) {
        let pods: Vec<SimPod> = pods
            .into_iter()
            .zip(cordoned)
            .map(|(p, evacuate)| SimPod { hash: "new".into(), evacuate, ..p })
            .collect();
        replace_all(spec, pods, "on a cordoned node", Sim::evacuating)?;
    }

    /// A drain someone asked for (`kubectl visio drain`) follows the same rules: every requested pod
    /// is replaced within the surge and drained, no plan on the way breaks an invariant (no pod with
    /// sessions deleted before its deadline: the request cuts no meeting), and none is left within
    /// the same bound.
    #[test]
    fn requested_drains_finish((spec, pods) in upgrade_case(), requested in prop::collection::vec(any::<bool>(), 10)) {
        let pods: Vec<SimPod> = pods
            .into_iter()
            .zip(requested)
            .map(|(p, drain_requested)| SimPod { hash: "new".into(), drain_requested, ..p })
            .collect();
        replace_all(spec, pods, "asked to drain", Sim::drain_requests)?;
    }
}
