//! Property tests of the planner used as the caption backend pool (CaptionPool): capacity in slots, one
//! slot per stream, a stream held for a whole meeting, no warning channel (`warn_before` 0), one surge pod
//! and one draining pod at a time (what the CaptionPool controller sets).
//!
//! - a steady ramp of at most `buffer` new streams between two reconciles is never refused: the used slots
//!   stay within the serving slots at every step, as long as `max` allows;
//! - no pod with an open stream is deleted before its drain deadline (checked on every plan by
//!   `check_plan`), and when every stream ends before the deadline no stream is ever ended by force;
//! - the pool converges to its floor once the streams are gone, and an image upgrade always finishes.

use super::sim::{check_plan, is_idle, Meeting, Sim, SimPod, MINUTE};
use super::*;
use proptest::prelude::*;

const NOW: Millis = 1_000_000_000_000;

/// What the CaptionPool controller gives the planner (drain timeout long against the streams' lives).
fn caption_spec() -> impl Strategy<Value = FleetSpec> {
    (0u32..=3, 1u32..=64, 0u32..=32, 10u32..=100, 0i64..=5).prop_map(|(min, slots, buffer, target, delay)| FleetSpec {
        min,
        max: min + 40,
        capacity_per_pod: slots,
        buffer,
        target_utilization_percent: target,
        scale_down_delay_ms: delay * MINUTE,
        max_surge: 1,
        max_draining: 1,
        drain_timeout_ms: 240 * MINUTE,
        warn_before_ms: 0,
        schedule: Default::default(),
    })
}

fn stream(ends: Millis) -> Meeting {
    Meeting { participants: 1, ends }
}

/// Free slots on the Serving pods.
fn free_serving(sim: &Sim) -> i64 {
    sim.pods
        .iter()
        .filter(|p| p.phase == PodPhase::Serving)
        .map(|p| i64::from(sim.spec.capacity_per_pod) - p.meetings.len() as i64)
        .sum()
}

/// Opens `n` streams, each on the least-loaded Serving pod with a free slot; returns how many were refused.
fn open_streams(sim: &mut Sim, n: u32, ends: Millis) -> u32 {
    let cap = sim.spec.capacity_per_pod as usize;
    let mut refused = 0;
    for _ in 0..n {
        let target = sim
            .pods
            .iter_mut()
            .filter(|p| p.phase == PodPhase::Serving && p.meetings.len() < cap)
            .min_by_key(|p| p.meetings.len());
        match target {
            Some(p) => p.meetings.push(stream(ends)),
            None => refused += 1,
        }
    }
    refused
}

fn step_checked(sim: &mut Sim) -> Result<Plan, TestCaseError> {
    let plan = sim.step().map_err(TestCaseError::fail)?;
    for a in &plan.actions {
        prop_assert!(!matches!(a, Action::ForceEnd { .. }), "a stream ended by force: {a:?}");
    }
    Ok(plan)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A steady ramp (at most `buffer` new streams over a pod's start-up time) is never refused.
    #[test]
    fn a_steady_ramp_is_never_refused(spec in caption_spec(), per_step in 1u32..=32, steps in 1usize..=40) {
        // A new pod serves one reconcile after the one that created it (the simulator's start-up time):
        // the buffer must cover the streams arriving over two reconciles.
        let mut spec = spec;
        spec.buffer = spec.buffer.max(2 * per_step);
        // ... and `max` must allow what the whole ramp needs.
        let total = u64::from(per_step) * steps as u64;
        let cap = u64::from(spec.capacity_per_pod);
        let need = (total + u64::from(spec.buffer)).div_ceil(cap).max((total * 100).div_ceil(cap * u64::from(spec.target_utilization_percent)));
        spec.max = spec.max.max(need as u32 + 1);
        let mut sim = Sim::new(spec.clone(), NOW, "new", vec![]);
        // Start from a settled pool.
        for _ in 0..3 {
            step_checked(&mut sim)?;
        }
        let mut refused = 0;
        for _ in 0..steps {
            step_checked(&mut sim)?;
            refused += open_streams(&mut sim, per_step, Millis::MAX);
            prop_assert!(free_serving(&sim) >= 0, "used slots above the serving slots");
        }
        prop_assert_eq!(refused, 0, "streams refused during a ramp of {} per step", per_step);
    }

    /// Streams end at random times (all before the drain deadline): every plan is safe (`check_plan`: no
    /// pod with a stream deleted before its deadline), no stream is ended by force, and the pool rests at
    /// its floor once the streams are gone.
    #[test]
    fn leaving_participants_never_cut_a_stream(spec in caption_spec(), load in 0u32..=300, seed in any::<u64>()) {
        let mut sim = Sim::new(spec.clone(), NOW, "new", vec![]);
        let mut rng = super::sim::SplitMix(seed);
        // Ramp up to `load` streams, ending 10 to 120 minutes from now.
        let mut left = load;
        for _ in 0..200 {
            if left == 0 {
                break;
            }
            step_checked(&mut sim)?;
            let n = left.min(spec.buffer.max(1));
            let ends = sim.now + (10 + rng.below(110) as i64) * MINUTE;
            left -= n - open_streams(&mut sim, n, ends);
        }
        let mut idle = false;
        for _ in 0..400 {
            // Idle on a snapshot that already had no stream left.
            let empty = sim.pods.iter().all(|p| p.meetings.is_empty());
            if is_idle(&step_checked(&mut sim)?) && empty {
                idle = true;
                break;
            }
        }
        prop_assert!(idle, "no rest once the streams ended");
        let want = spec.min.max(spec.buffer.div_ceil(spec.capacity_per_pod)).min(spec.max) as usize;
        prop_assert_eq!(sim.active(), want);
    }

    /// An image upgrade with open streams (ending within two hours, the deadline is four) finishes, never
    /// ends a stream by force, and keeps at most one pod above the pool.
    #[test]
    fn an_upgrade_finishes_without_cutting(spec in caption_spec(), pods in prop::collection::vec(prop::collection::vec(1i64..=120, 0..=16), 1..=6)) {
        let mut spec = spec;
        spec.capacity_per_pod = spec.capacity_per_pod.max(16);
        let pods: Vec<SimPod> = pods
            .into_iter()
            .enumerate()
            .map(|(i, ends)| SimPod::new(format!("p{i:02}"), "old", PodPhase::Serving, ends.into_iter().map(|m| stream(NOW + m * MINUTE)).collect()))
            .collect();
        let n = pods.len() as u32;
        let mut sim = Sim::new(spec.clone(), NOW, "new", pods);
        let ceiling = plan(&spec, &sim.snapshot()).desired.max(n) + 1;
        let mut steps = 0;
        while sim.outdated() > 0 {
            prop_assert!(steps < 600, "upgrade not done: {} outdated", sim.outdated());
            step_checked(&mut sim)?;
            let placed = sim.pods.len() as u32;
            prop_assert!(placed <= ceiling, "{placed} pods above {ceiling}");
            steps += 1;
        }
    }

    /// One plan over any caption pool is safe.
    #[test]
    fn every_caption_plan_is_safe(spec in caption_spec(), loads in prop::collection::vec((0u32..=64, any::<bool>(), 0i64..=300), 0..=10)) {
        let pods: Vec<PodSnapshot> = loads
            .iter()
            .enumerate()
            .map(|(i, (used, old, drain_ago))| PodSnapshot {
                name: format!("p{i:02}"),
                template_hash: if *old { "old" } else { "new" }.into(),
                phase: if *drain_ago > 200 { PodPhase::Draining { since: NOW - drain_ago * MINUTE } } else { PodPhase::Serving },
                load: Some(*used.min(&spec.capacity_per_pod)),
                sessions: Some(*used.min(&spec.capacity_per_pod)),
                warned: false,
                created: NOW - MINUTE,
                evacuate: false,
                drain_requested: false,
            })
            .collect();
        let snap = Snapshot { now: NOW, target_hash: "new".into(), pods, low_load_since: None, startup_lead_ms: None };
        let p = plan(&spec, &snap);
        check_plan(&spec, &snap, &p).map_err(TestCaseError::fail)?;
        for a in &p.actions {
            if let Action::Delete { pod, reason: DeleteReason::Empty } = a {
                let s = snap.pods.iter().find(|s| &s.name == pod).expect("planned pods exist");
                prop_assert_eq!(s.sessions, Some(0), "{} deleted with streams", pod);
            }
        }
    }
}
