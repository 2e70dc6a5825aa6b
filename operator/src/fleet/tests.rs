//! Table tests of `plan`, one group per rule.

use super::sim::{check_plan, is_idle, Meeting, Sim, SimPod, SplitMix, MINUTE};
use super::*;

const T0: Millis = 1_000_000_000_000;

/// Capacity 100, no buffer, 100 % target, 5 min scale-down delay, surge 1, draining 1,
/// 60 min drain timeout, warned 10 min before.
fn spec() -> FleetSpec {
    FleetSpec {
        min: 1,
        max: 10,
        capacity_per_pod: 100,
        buffer: 0,
        target_utilization_percent: 100,
        scale_down_delay_ms: 5 * MINUTE,
        max_surge: 1,
        max_draining: 1,
        drain_timeout_ms: 60 * MINUTE,
        warn_before_ms: 10 * MINUTE,
        schedule: Default::default(),
    }
}

fn pod(name: &str, phase: PodPhase, load: Option<u32>) -> PodSnapshot {
    PodSnapshot {
        name: name.into(),
        template_hash: "v2".into(),
        phase,
        load,
        // One session per started 50 load units: enough to tell empty from busy.
        sessions: load.map(|l| l.div_ceil(50)),
        warned: false,
        created: T0 - 60 * MINUTE,
        evacuate: false,
        drain_requested: false,
    }
}

fn serving(name: &str, load: u32) -> PodSnapshot {
    pod(name, PodPhase::Serving, Some(load))
}

fn unknown(name: &str) -> PodSnapshot {
    pod(name, PodPhase::Serving, None)
}

fn pending(name: &str) -> PodSnapshot {
    pod(name, PodPhase::Pending, None)
}

fn draining(name: &str, since: Millis, load: Option<u32>) -> PodSnapshot {
    pod(name, PodPhase::Draining { since }, load)
}

fn old(mut p: PodSnapshot) -> PodSnapshot {
    p.template_hash = "v1".into();
    p
}

fn snap(pods: Vec<PodSnapshot>) -> Snapshot {
    Snapshot { now: T0, target_hash: "v2".into(), pods, low_load_since: None, startup_lead_ms: None }
}

/// Plans and checks the plan against the invariants.
fn run(spec: &FleetSpec, snap: &Snapshot) -> Plan {
    let plan = plan(spec, snap);
    if let Err(e) = check_plan(spec, snap, &plan) {
        panic!("{e}\n{snap:#?}\n{plan:#?}");
    }
    plan
}

fn create(count: u32) -> Action {
    Action::Create { count }
}
fn drain(pod: &str, reason: DrainReason) -> Action {
    Action::Drain { pod: pod.into(), reason }
}
fn delete(pod: &str, reason: DeleteReason) -> Action {
    Action::Delete { pod: pod.into(), reason }
}
fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

// ---- scaling up -------------------------------------------------------------------------

#[test]
fn scale_up_table() {
    let s = spec;
    /// (name, spec, pods) -> (desired, actions)
    type Row = (&'static str, FleetSpec, Vec<PodSnapshot>, u32, Vec<Action>);
    let table: Vec<Row> = vec![
        ("fits", s(), vec![serving("a", 90), serving("b", 90)], 2, vec![]),
        ("one over", s(), vec![serving("a", 100), serving("b", 101)], 3, vec![create(1)]),
        ("buffer", FleetSpec { buffer: 50, ..s() }, vec![serving("a", 100), serving("b", 100)], 3, vec![create(1)]),
        ("buffer fits", FleetSpec { buffer: 50, ..s() }, vec![serving("a", 100), serving("b", 50)], 2, vec![]),
        (
            "target utilisation",
            FleetSpec { target_utilization_percent: 70, ..s() },
            vec![serving("a", 80), serving("b", 80)],
            3,
            vec![create(1)],
        ),
        ("min clamp", FleetSpec { min: 3, ..s() }, vec![serving("a", 0)], 3, vec![create(2)]),
        ("min clamp from nothing", FleetSpec { min: 2, ..s() }, vec![], 2, vec![create(2)]),
        ("max clamp", FleetSpec { max: 3, ..s() }, vec![serving("a", 200), serving("b", 200)], 3, vec![create(1)]),
        (
            "pending pods count toward the desired count",
            FleetSpec { buffer: 50, ..s() },
            vec![serving("a", 100), serving("b", 100), pending("c")],
            3,
            vec![],
        ),
        ("pending pods are no demand", s(), vec![serving("a", 50), pod("c", PodPhase::Pending, Some(400))], 1, vec![]),
        ("unknown load is no demand", FleetSpec { buffer: 1, ..s() }, vec![unknown("a"), unknown("b")], 1, vec![]),
        (
            "unknown load next to a reported one",
            FleetSpec { buffer: 1, ..s() },
            vec![serving("a", 100), unknown("b")],
            2,
            vec![],
        ),
        ("draining load is no demand", s(), vec![serving("a", 10), draining("b", T0, Some(500))], 1, vec![]),
        (
            "draining pods hold places within max + surge",
            FleetSpec { max: 4, buffer: 100, ..s() },
            vec![
                serving("a", 100),
                serving("b", 100),
                serving("c", 100),
                draining("d", T0, Some(5)),
                draining("e", T0, Some(5)),
            ],
            4,
            vec![],
        ),
        (
            "scale-up ignores the upgrade surge bound",
            FleetSpec { max_surge: 0, buffer: 1, ..s() },
            vec![serving("a", 100), serving("b", 100), draining("c", T0, Some(5))],
            3,
            vec![create(1)],
        ),
    ];
    for (name, spec, pods, desired, actions) in table {
        let plan = run(&spec, &snap(pods));
        assert_eq!((plan.desired, &plan.actions), (desired, &actions), "{name}");
    }
}

#[test]
fn scale_up_is_immediate_and_clears_the_low_mark() {
    let mut s = snap(vec![serving("a", 100), serving("b", 100)]);
    s.low_load_since = Some(T0 - 60 * MINUTE);
    let plan = run(&FleetSpec { buffer: 1, ..spec() }, &s);
    assert_eq!(plan.actions, vec![create(1)]);
    assert_eq!(plan.low_load_since, None);
    assert_eq!(plan.requeue_after_ms, None);
}

#[test]
fn unknown_loads_at_min_create_nothing() {
    let s = || FleetSpec { min: 3, ..spec() };
    // (name, spec, pods): each plans desired = min and no action (no runaway to max).
    let table: Vec<(&str, FleetSpec, Vec<PodSnapshot>)> = vec![
        ("all serving", s(), vec![unknown("a"), unknown("b"), unknown("c")]),
        ("serving and pending", s(), vec![unknown("a"), unknown("b"), pending("c")]),
        (
            "a buffer that fits in min pods",
            FleetSpec { buffer: 300, ..s() },
            vec![unknown("a"), unknown("b"), unknown("c")],
        ),
        (
            "a low target",
            FleetSpec { target_utilization_percent: 10, ..s() },
            vec![unknown("a"), unknown("b"), unknown("c")],
        ),
    ];
    for (name, spec, pods) in table {
        let plan = run(&spec, &snap(pods));
        assert_eq!((plan.desired, &plan.actions), (3, &vec![]), "{name}");
        assert!(is_idle(&plan), "{name}");
    }
}

#[test]
fn reported_load_scales_up_after_unknown() {
    let s = FleetSpec { min: 3, buffer: 50, ..spec() };
    let plan = run(&s, &snap(vec![unknown("a"), unknown("b"), unknown("c")]));
    assert!(plan.actions.is_empty());
    // The agents report: 285 + buffer 50 needs 4 pods, created at once.
    let plan = run(&s, &snap(vec![serving("a", 95), serving("b", 95), serving("c", 95)]));
    assert_eq!((plan.desired, plan.actions), (4, vec![create(1)]));
    // Some report, one still does not: the reported load alone decides (190 + 50: 3 pods).
    let plan = run(&s, &snap(vec![serving("a", 95), serving("b", 95), unknown("c")]));
    assert_eq!((plan.desired, plan.actions), (3, vec![]));
}

/// A fleet whose agents never report (new pods included) grows to `min` once and stays there;
/// once they report a high load it grows to what that load needs, and no further: the new pods,
/// unreported, ask for nothing.
#[test]
fn unreported_fleet_holds_min_then_scales_up_on_reports() {
    fn creates_over(sim: &mut Sim, steps: usize) -> Vec<Action> {
        let plans: Vec<Plan> = (0..steps).map(|_| sim.step().unwrap()).collect();
        plans.into_iter().flat_map(|p| p.actions).filter(|a| matches!(a, Action::Create { .. })).collect()
    }
    let mut sim = Sim::new(FleetSpec { min: 2, buffer: 50, ..spec() }, T0, "v2", vec![]);
    sim.new_pods_report = false;
    assert_eq!(creates_over(&mut sim, 30), vec![create(2)]);
    assert_eq!(sim.active(), 2);
    assert!(sim.pods.iter().all(|p| p.phase == PodPhase::Serving && p.snapshot().load.is_none()));
    assert!(is_idle(&plan(&sim.spec, &sim.snapshot())));
    // The agents report 95 each: 190 + buffer 50 needs 3 pods.
    for p in &mut sim.pods {
        p.reports = true;
        p.meetings = vec![Meeting { participants: 95, ends: Millis::MAX }];
    }
    assert_eq!(creates_over(&mut sim, 30), vec![create(1)]);
    assert_eq!(sim.active(), 3);
    assert!(is_idle(&plan(&sim.spec, &sim.snapshot())));
}

// ---- scaling down -----------------------------------------------------------------------

#[test]
fn scale_down_waits_for_the_delay() {
    let pods = vec![serving("a", 0), serving("b", 0), serving("c", 0), serving("d", 10)];
    let at = |now: Millis, low: Option<Millis>| {
        let mut s = snap(pods.clone());
        s.now = now;
        s.low_load_since = low;
        run(&spec(), &s)
    };
    // First seen low: the mark is set, nothing drains, the end of the delay is due.
    let first = at(T0, None);
    assert_eq!((first.desired, first.low_load_since, first.requeue_after_ms), (1, Some(T0), Some(5 * MINUTE)));
    assert!(first.actions.is_empty());
    // Still within the delay.
    let within = at(T0 + 5 * MINUTE - 1, Some(T0));
    assert!(within.actions.is_empty());
    assert_eq!((within.low_load_since, within.requeue_after_ms), (Some(T0), Some(1)));
    // Delay over: the three empty pods drain, never the busy one; the mark is cleared.
    let due = at(T0 + 5 * MINUTE, Some(T0));
    assert_eq!(
        due.actions,
        vec![
            drain("a", DrainReason::ScaleDown),
            drain("b", DrainReason::ScaleDown),
            drain("c", DrainReason::ScaleDown)
        ]
    );
    assert_eq!(due.low_load_since, None);
    // Load back up within the delay: the mark is cleared, so a later dip waits a full delay.
    let mut busy = snap(vec![serving("a", 90), serving("b", 90), serving("c", 90), serving("d", 90)]);
    busy.low_load_since = Some(T0 - MINUTE);
    let back = run(&spec(), &busy);
    assert_eq!((back.low_load_since, back.actions.len()), (None, 0));
}

#[test]
fn scale_down_drains_the_emptiest_first() {
    // Load 50 (the unknown pod adds no demand): 1 pod needed, 4 surplus. But the floor reads e
    // as full (150): a stays, so the load never rests on e being idle, and the fleet keeps a pod
    // that reports its load.
    let mut pods = vec![serving("a", 30), serving("b", 10), serving("c", 10), serving("d", 0), unknown("e")];
    pods[1].sessions = Some(2); // b: as loaded as c but more sessions
    let mut s = snap(pods);
    s.low_load_since = Some(T0 - 5 * MINUTE);
    let plan = run(&FleetSpec { min: 0, ..spec() }, &s);
    assert_eq!(plan.desired, 1);
    assert_eq!(
        plan.actions,
        vec![
            drain("d", DrainReason::ScaleDown),
            drain("c", DrainReason::ScaleDown),
            drain("b", DrainReason::ScaleDown)
        ]
    );
}

#[test]
fn scale_down_ties_break_by_name() {
    let mut s = snap(vec![serving("c", 0), serving("a", 0), serving("b", 0)]);
    s.low_load_since = Some(T0 - 5 * MINUTE);
    let plan = run(&FleetSpec { min: 2, ..spec() }, &s);
    assert_eq!(plan.actions, vec![drain("a", DrainReason::ScaleDown)]);
}

#[test]
fn unknown_load_is_never_drained_for_a_scale_down() {
    let mut s = snap(vec![unknown("a"), unknown("b"), unknown("c")]);
    s.low_load_since = Some(T0 - 60 * MINUTE);
    let plan = run(&FleetSpec { max: 2, ..spec() }, &s);
    assert_eq!(plan.desired, 1); // no demand: min
    assert!(plan.actions.is_empty());
    // Still low: the mark stays, so the scale-down happens as soon as a report arrives.
    assert_eq!(plan.low_load_since, Some(T0 - 60 * MINUTE));
}

#[test]
fn scale_down_removes_surplus_pending_pods_first() {
    let mut newest = pending("z");
    newest.created = T0 - MINUTE;
    let mut reporting = pending("y"); // reports sessions: maybe serving after all, kept
    reporting.created = T0;
    reporting.sessions = Some(1);
    let mut s = snap(vec![serving("a", 0), serving("b", 0), pending("x"), newest, reporting]);
    s.low_load_since = Some(T0 - 5 * MINUTE);
    let plan = run(&FleetSpec { min: 2, ..spec() }, &s);
    // y still counts as surplus, but the Serving pods are not drained under desired for it.
    assert_eq!(plan.actions, vec![delete("z", DeleteReason::Stale), delete("x", DeleteReason::Stale)]);
    assert_eq!(plan.low_load_since, Some(T0 - 5 * MINUTE));
}

#[test]
fn scale_down_above_max_never_drains_under_the_load() {
    // max lowered to 3 under a fleet of 5 busy pods: desired 3, but 3 pods cannot hold 450.
    let mut s = snap((0..5).map(|i| serving(&format!("p{i}"), 90)).collect());
    s.low_load_since = Some(T0 - 60 * MINUTE);
    let plan = run(&FleetSpec { max: 3, ..spec() }, &s);
    assert_eq!(plan.desired, 3);
    assert!(plan.actions.is_empty());
    // Once the load allows it, it shrinks to max.
    let mut s = snap((0..5).map(|i| serving(&format!("p{i}"), 60)).collect());
    s.low_load_since = Some(T0 - 60 * MINUTE);
    let plan = run(&FleetSpec { max: 3, ..spec() }, &s);
    assert_eq!(plan.actions, vec![drain("p0", DrainReason::ScaleDown), drain("p1", DrainReason::ScaleDown)]);
}

#[test]
fn zero_delay_scales_down_at_once() {
    let plan = run(&FleetSpec { scale_down_delay_ms: 0, ..spec() }, &snap(vec![serving("a", 0), serving("b", 0)]));
    assert_eq!(plan.actions, vec![drain("a", DrainReason::ScaleDown)]);
    assert_eq!(plan.low_load_since, None);
}

// ---- draining ---------------------------------------------------------------------------

#[test]
fn drain_clock_table() {
    use DeleteReason::*;
    let since = T0 - 30 * MINUTE; // deadline at T0 + 30 min, warn at T0 + 20 min
    let deadline = since + 60 * MINUTE;
    let grace_end = deadline + FORCE_END_GRACE_MS;
    let busy = Some(40);
    let empty = Some(0);
    /// (now, load, warned) -> (actions, requeue)
    type Row = (Millis, Option<u32>, bool, Vec<Action>, Option<i64>);
    let table: Vec<Row> = vec![
        (T0, busy, false, vec![], Some(20 * MINUTE)),
        (T0 + 20 * MINUTE, busy, false, vec![Action::Warn { pod: "d".into(), deadline }], Some(10 * MINUTE)),
        (T0 + 21 * MINUTE, busy, true, vec![], Some(9 * MINUTE)),
        (deadline, busy, true, vec![Action::ForceEnd { pod: "d".into() }], Some(FORCE_END_GRACE_MS)),
        (grace_end - 1, busy, true, vec![Action::ForceEnd { pod: "d".into() }], Some(1)),
        (grace_end, busy, true, vec![delete("d", DeadlinePassed)], None),
        (T0, empty, false, vec![delete("d", Empty)], None),
        (deadline + 1, empty, true, vec![delete("d", Empty)], None),
        (T0 + 29 * MINUTE, None, true, vec![], Some(MINUTE)), // unknown: kept until the deadline
        (grace_end, None, true, vec![delete("d", DeadlinePassed)], None),
    ];
    for (now, load, warned, actions, requeue) in table {
        let mut d = draining("d", since, load);
        d.warned = warned;
        let mut s = snap(vec![serving("a", 10), d]);
        s.now = now;
        let plan = run(&spec(), &s);
        assert_eq!((&plan.actions, plan.requeue_after_ms), (&actions, requeue), "now T0{:+} load {load:?}", now - T0);
    }
}

#[test]
fn warn_is_emitted_once_through_a_drain() {
    let mut sim = Sim::new(
        FleetSpec { min: 0, ..spec() },
        T0,
        "v2",
        vec![SimPod::new(
            "a",
            "v2",
            PodPhase::Draining { since: T0 },
            vec![Meeting { participants: 5, ends: Millis::MAX }],
        )],
    );
    let mut warns = vec![];
    let mut force_ends = vec![];
    while !sim.pods.is_empty() {
        let at = sim.now;
        for action in sim.step().unwrap().actions {
            match action {
                Action::Warn { .. } => warns.push(at),
                Action::ForceEnd { .. } => force_ends.push(at),
                _ => {}
            }
        }
    }
    assert_eq!(warns, vec![T0 + 50 * MINUTE]);
    assert_eq!(force_ends, vec![T0 + 60 * MINUTE]); // the sessions end, the pod is then empty
}

#[test]
fn sessions_without_load_keep_a_pod() {
    // Participants gone but a room still open: not empty.
    let mut d = draining("d", T0 - MINUTE, Some(0));
    d.sessions = Some(1);
    assert!(run(&spec(), &snap(vec![serving("a", 0), d])).actions.is_empty());
}

// ---- failed and terminating pods --------------------------------------------------------

#[test]
fn failed_pods_are_deleted_and_replaced() {
    let failed = pod("b", PodPhase::Failed, Some(80));
    let plan = run(&FleetSpec { min: 2, ..spec() }, &snap(vec![serving("a", 10), failed]));
    assert_eq!(plan.actions, vec![delete("b", DeleteReason::Failed), create(1)]);
}

#[test]
fn terminating_pods_count_for_nothing() {
    let term = pod("b", PodPhase::Terminating, Some(80));
    let plan = run(&FleetSpec { min: 2, ..spec() }, &snap(vec![serving("a", 10), term]));
    assert_eq!(plan.actions, vec![create(1)]);
}

// ---- upgrades ---------------------------------------------------------------------------

#[test]
fn upgrade_surges_first_then_drains() {
    let s = FleetSpec { min: 4, max_surge: 2, max_draining: 0, ..spec() };
    let olds = || (0..4).map(|i| old(serving(&format!("o{i}"), 10 * (4 - i)))).collect::<Vec<_>>();
    // Within the surge: 2 new pods, no drain yet (max_draining 0: no dip).
    let plan = run(&s, &snap(olds()));
    assert_eq!(plan.actions, vec![create(2)]);
    assert_eq!(plan.upgrade, Some(UpgradeProgress { updated: 0, outdated: 4 }));
    // Pending new pods are no capacity yet.
    let plan = run(&s, &snap([olds(), vec![pending("n0"), pending("n1")]].concat()));
    assert!(plan.actions.is_empty());
    assert_eq!(plan.upgrade, Some(UpgradeProgress { updated: 2, outdated: 4 }));
    // Ready: the two emptiest outdated pods drain; the surge is used up, so no create.
    let plan = run(&s, &snap([olds(), vec![serving("n0", 0), serving("n1", 0)]].concat()));
    assert_eq!(plan.actions, vec![drain("o3", DrainReason::Upgrade), drain("o2", DrainReason::Upgrade)]);
}

#[test]
fn a_pod_on_a_cordoned_node_is_replaced_first_then_drained() {
    let s = FleetSpec { min: 2, max_surge: 1, max_draining: 0, ..spec() };
    let cordoned = |p: PodSnapshot| PodSnapshot { evacuate: true, ..p };
    let busy = || cordoned(serving("a", 40));
    // The busy pod's node is cordoned: a replacement first (no dip allowed), and no upgrade shown.
    let plan = run(&s, &snap(vec![busy(), serving("b", 10)]));
    assert_eq!(plan.actions, vec![create(1)]);
    assert_eq!(plan.upgrade, None);
    // The replacement serves: the pod drains (its meetings go on), for the cordon.
    let plan = run(&s, &snap(vec![busy(), serving("b", 10), serving("c", 0)]));
    assert_eq!(plan.actions, vec![drain("a", DrainReason::NodeCordoned)]);
    // Drained and empty: deleted, and nothing more is created.
    let emptied = cordoned(draining("a", T0 - MINUTE, Some(0)));
    let plan = run(&s, &snap(vec![PodSnapshot { sessions: Some(0), ..emptied }, serving("b", 10), serving("c", 0)]));
    assert_eq!(plan.actions, vec![delete("a", DeleteReason::Empty)]);
    // A pod that never became ready on a cordoned node holds nothing: deleted at once.
    let plan = run(&s, &snap(vec![cordoned(pending("p")), serving("b", 10), serving("c", 0)]));
    assert_eq!(plan.actions, vec![delete("p", DeleteReason::Stale)]);
    // Uncordoned before the drain: nothing to do (the surplus waits for the scale-down delay).
    let plan = run(&s, &snap(vec![serving("a", 40), serving("b", 10), serving("c", 0)]));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
}

#[test]
fn a_requested_drain_replaces_the_pod_first_then_drains_it_with_the_normal_deadline() {
    let s = FleetSpec { min: 2, max_surge: 1, max_draining: 0, ..spec() };
    let asked = |p: PodSnapshot| PodSnapshot { drain_requested: true, ..p };
    let busy = || asked(serving("a", 40));
    // Asked to drain while the fleet needs it: a replacement first, nothing drains yet, no upgrade shown.
    let plan = run(&s, &snap(vec![busy(), serving("b", 10)]));
    assert_eq!(plan.actions, vec![create(1)]);
    assert_eq!(plan.upgrade, None);
    // The replacement serves: the pod drains for the request; its meetings go on.
    let plan = run(&s, &snap(vec![busy(), serving("b", 10), serving("c", 0)]));
    assert_eq!(plan.actions, vec![drain("a", DrainReason::Requested)]);
    // Draining, still busy: the same clock as any drain (warned before the deadline, no earlier end).
    let drained = || asked(draining("a", T0 - 55 * MINUTE, Some(40)));
    let plan = run(&s, &snap(vec![drained(), serving("b", 10), serving("c", 0)]));
    assert_eq!(plan.actions, vec![Action::Warn { pod: "a".into(), deadline: T0 + 5 * MINUTE }]);
    // A request on a cordoned node is the cordon's drain; on an outdated pod, the upgrade's.
    let both = PodSnapshot { evacuate: true, ..busy() };
    let plan = run(&s, &snap(vec![both, serving("b", 10), serving("c", 0)]));
    assert_eq!(plan.actions, vec![drain("a", DrainReason::NodeCordoned)]);
    // With no surge allowed and no room to dip, the request waits: it never cuts capacity.
    let tight = FleetSpec { min: 1, max: 1, max_surge: 0, max_draining: 1, ..spec() };
    let plan = run(&tight, &snap(vec![asked(serving("a", 90))]));
    assert!(plan.actions.iter().all(|a| !matches!(a, Action::Drain { .. })), "{:?}", plan.actions);
    // A Pending pod asked to drain holds nothing: deleted at once.
    let plan = run(&s, &snap(vec![asked(pending("p")), serving("b", 10), serving("c", 0)]));
    assert_eq!(plan.actions, vec![delete("p", DeleteReason::Stale)]);
}

#[test]
fn upgrade_surge_bound_counts_draining_pods() {
    let s = FleetSpec { min: 3, max_surge: 1, max_draining: 1, ..spec() };
    let pods = vec![old(draining("o0", T0, Some(5))), old(serving("o1", 5)), serving("n0", 0), serving("n1", 0)];
    // 4 pods = desired 3 + surge 1: no create; serving 3 may dip to 2: one more drain.
    let plan = run(&s, &snap(pods));
    assert_eq!(plan.actions, vec![drain("o1", DrainReason::Upgrade)]);
}

#[test]
fn upgrade_draining_bound() {
    let s = FleetSpec { min: 5, max_surge: 0, max_draining: 2, ..spec() };
    let olds: Vec<PodSnapshot> = (0..5).map(|i| old(serving(&format!("o{i}"), 10 * (i + 1)))).collect();
    let plan = run(&s, &snap(olds.clone()));
    assert_eq!(plan.actions, vec![drain("o0", DrainReason::Upgrade), drain("o1", DrainReason::Upgrade)]);
    // Two draining already: the dip is used up; no surge: no create.
    let mut pods = olds;
    pods[0].phase = PodPhase::Draining { since: T0 };
    pods[1].phase = PodPhase::Draining { since: T0 };
    let plan = run(&s, &snap(pods.clone()));
    assert!(plan.actions.is_empty());
    // One of them empties: deleted, and a new pod takes its place (still within the dip).
    pods[0].load = Some(0);
    pods[0].sessions = Some(0);
    let plan = run(&s, &snap(pods));
    assert_eq!(plan.actions, vec![delete("o0", DeleteReason::Empty), create(1)]);
}

#[test]
fn upgrade_keeps_the_capacity_floor() {
    // Load 270 needs 3 pods of 100: of 4 outdated pods only the empty one may drain now,
    // although max_draining would allow 3.
    let s = FleetSpec { min: 0, max_surge: 0, max_draining: 3, ..spec() };
    let pods = vec![old(serving("a", 90)), old(serving("b", 90)), old(serving("c", 90)), old(serving("d", 0))];
    let plan = run(&s, &snap(pods));
    assert_eq!(plan.desired, 3);
    assert_eq!(plan.actions, vec![drain("d", DrainReason::Upgrade)]);
}

#[test]
fn upgrade_with_buffer_keeps_the_buffer() {
    let s = FleetSpec { min: 0, buffer: 150, max_surge: 0, max_draining: 3, ..spec() };
    // Load 100 + buffer 150 = 250: 3 pods of 100 must stay serving.
    let pods: Vec<PodSnapshot> = (0..4).map(|i| old(serving(&format!("p{i}"), 25))).collect();
    let plan = run(&s, &snap(pods));
    assert_eq!(plan.actions, vec![drain("p0", DrainReason::Upgrade)]);
}

#[test]
fn surge_zero_on_a_full_fleet_waits() {
    let s = FleetSpec { min: 0, max_surge: 0, max_draining: 1, ..spec() };
    let pods = vec![old(serving("a", 100)), old(serving("b", 100)), old(serving("c", 100))];
    let plan = run(&s, &snap(pods));
    assert!(plan.actions.is_empty(), "documented stall: {plan:?}");
    assert_eq!(plan.upgrade, Some(UpgradeProgress { updated: 0, outdated: 3 }));
}

#[test]
fn surge_zero_progresses_by_draining() {
    let s = FleetSpec { min: 3, max_surge: 0, max_draining: 1, ..spec() };
    let plan = run(&s, &snap(vec![old(serving("a", 0)), old(serving("b", 0)), old(serving("c", 0))]));
    assert_eq!(plan.actions, vec![drain("a", DrainReason::Upgrade)]);
}

#[test]
fn upgrade_drains_unknown_load_last() {
    let s = FleetSpec { min: 1, max_surge: 0, max_draining: 5, ..spec() };
    let plan = run(&s, &snap(vec![old(unknown("a")), old(serving("b", 40)), serving("n", 0)]));
    // No demand beyond b's 40, but the floor reads a as full (140): 2 pods must stay, so only
    // b drains.
    assert_eq!(plan.actions, vec![drain("b", DrainReason::Upgrade)]);
    let plan = run(&s, &snap(vec![old(unknown("a")), serving("n", 0), serving("m", 0)]));
    assert_eq!(plan.actions, vec![drain("a", DrainReason::Upgrade)]);
}

#[test]
fn outdated_pending_pods_are_replaced() {
    let mut reporting = old(pending("r"));
    reporting.load = Some(3);
    let plan = run(&FleetSpec { min: 2, ..spec() }, &snap(vec![serving("a", 10), old(pending("b")), reporting]));
    // b never became ready: deleted. r reports load: kept (it may in fact be serving).
    assert_eq!(plan.actions, vec![delete("b", DeleteReason::Stale), create(1)]);
}

#[test]
fn upgrade_and_scale_up_together() {
    // Load jumps during an upgrade: the demand (2 more pods: n has not reported, so it adds
    // nothing but counts as serving) is met at once, plus the surge.
    let s = FleetSpec { max_surge: 1, buffer: 0, ..spec() };
    let pods = vec![old(serving("a", 100)), old(serving("b", 100)), old(serving("c", 100)), unknown("n")];
    let plan = run(&FleetSpec { buffer: 300, ..s }, &snap(pods));
    assert_eq!(plan.desired, 6);
    assert_eq!(plan.actions, vec![create(3)]);
}

#[test]
fn no_upgrade_progress_when_current() {
    let plan = run(&spec(), &snap(vec![serving("a", 10), pod("b", PodPhase::Failed, None)]));
    assert_eq!(plan.upgrade, None);
}

/// Ten busy outdated pods, meetings ending at random times within three hours: the upgrade
/// finishes, with every plan safe, no meeting cut (the drain timeout exceeds the meetings),
/// and ends at a fixed point.
#[test]
fn upgrade_of_ten_pods_with_random_meeting_ends_completes() {
    for seed in 0..20 {
        let mut rng = SplitMix(seed);
        let pods: Vec<SimPod> = (0..10)
            .map(|i| {
                let meetings = (0..1 + rng.below(4))
                    .map(|_| Meeting {
                        participants: 1 + rng.below(30) as u32,
                        ends: T0 + rng.below(180) as i64 * MINUTE,
                    })
                    .collect();
                SimPod::new(format!("p{i}"), "v1", PodPhase::Serving, meetings)
            })
            .collect();
        let s = FleetSpec { min: 2, buffer: 50, drain_timeout_ms: 240 * MINUTE, warn_before_ms: 10 * MINUTE, ..spec() };
        let mut sim = Sim::new(s, T0, "v2", pods);
        let mut steps = 0;
        let mut cut = 0;
        while sim.outdated() > 0 {
            assert!(steps < 400, "seed {seed}: upgrade stuck with {} outdated pods", sim.outdated());
            let plan = sim.step().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            cut += plan.actions.iter().filter(|a| matches!(a, Action::ForceEnd { .. })).count();
            steps += 1;
        }
        assert_eq!(cut, 0, "seed {seed}: a meeting was ended");
        for _ in 0..30 {
            if is_idle(&sim.step().unwrap()) {
                break;
            }
        }
        assert!(is_idle(&plan(&sim.spec, &sim.snapshot())), "seed {seed}: no fixed point after the upgrade");
        assert!(sim.pods.iter().all(|p| p.hash == "v2"));
    }
}

// ---- the rest ---------------------------------------------------------------------------

#[test]
fn requeue_is_the_earliest_due_time() {
    let mut s = snap(vec![serving("a", 0), serving("b", 0), draining("d", T0 - 45 * MINUTE, Some(5))]);
    s.low_load_since = Some(T0 - 2 * MINUTE);
    let plan = run(&spec(), &s);
    // Warn of d at T0 + 5 min, end of the delay at T0 + 3 min.
    assert_eq!(plan.requeue_after_ms, Some(3 * MINUTE));
    assert!(plan.actions.is_empty());
}

#[test]
fn nothing_to_do_means_no_requeue() {
    let plan = run(&spec(), &snap(vec![serving("a", 50)]));
    assert!(is_idle(&plan));
    assert_eq!(plan.desired, 1);
}

#[test]
fn out_of_range_specs_are_read_sanely() {
    let s = FleetSpec {
        min: 3,
        max: 1,
        capacity_per_pod: 0,
        target_utilization_percent: 0,
        scale_down_delay_ms: -5,
        drain_timeout_ms: -1,
        warn_before_ms: 99,
        ..spec()
    };
    let plan = run(&s, &snap(vec![serving("a", 2)]));
    // max raised to min; capacity 1 at 10 %: 2 / 0.1 = 20 pods, clamped to 3.
    assert_eq!(plan.desired, 3);
    assert_eq!(plan.actions, vec![create(2)]);
    // Drain timeout 0: a draining busy pod is forced at once.
    let plan = run(&s, &snap(vec![serving("a", 0), serving("b", 0), serving("c", 0), draining("d", T0, Some(1))]));
    assert_eq!(plan.actions, vec![Action::ForceEnd { pod: "d".into() }]);
}

#[test]
fn the_same_input_gives_the_same_plan() {
    let pods: Vec<PodSnapshot> = names("p", 8)
        .iter()
        .enumerate()
        .map(|(i, n)| if i % 3 == 0 { old(serving(n, i as u32 * 7)) } else { serving(n, 0) })
        .collect();
    let mut reversed = pods.clone();
    reversed.reverse();
    let s = FleetSpec { min: 0, scale_down_delay_ms: 0, max_draining: 2, ..spec() };
    assert_eq!(plan(&s, &snap(pods)), plan(&s, &snap(reversed)));
}

#[test]
fn the_plans_figures_are_what_the_planner_read() {
    let snap = Snapshot {
        now: T0,
        target_hash: "v2".into(),
        pods: vec![
            pod("a", PodPhase::Serving, Some(40)),
            pod("b", PodPhase::Serving, None),
            pod("c", PodPhase::Serving, Some(100)),
            pod("d", PodPhase::Draining { since: T0 - MINUTE }, Some(30)),
            pod("e", PodPhase::Draining { since: T0 - 2 * MINUTE }, None),
            pod("f", PodPhase::Pending, None),
            pod("g", PodPhase::Terminating, Some(5)),
            pod("h", PodPhase::Failed, None),
        ],
        low_load_since: None,
        startup_lead_ms: None,
    };
    let spec = FleetSpec { buffer: 50, ..spec() };
    assert_eq!(
        plan(&spec, &snap).figures,
        Figures {
            // 3 serving pods of 100, reporting 40 + unknown (0) + 100; draining load left out.
            serving_headroom: 160,
            buffer: 50,
            drain_timeout_ms: 60 * MINUTE,
            oldest_drain_since: Some(T0 - 2 * MINUTE),
            load_unknown_pods: 1,
            max: 10,
            window_open: false,
            startup_lead_ms: None,
        }
    );
    let idle = Snapshot { pods: vec![serving("a", 0)], ..snap };
    let f = plan(&spec, &idle).figures;
    assert_eq!((f.serving_headroom, f.oldest_drain_since, f.load_unknown_pods), (100, None, 0));
    let overfull = Snapshot { pods: vec![serving("a", 130)], ..idle };
    assert_eq!(plan(&spec, &overfull).figures.serving_headroom, -30);
}
