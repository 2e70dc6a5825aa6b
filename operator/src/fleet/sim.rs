//! A small discrete-time fleet simulator for tests, and the safety checks run on every plan.
//!
//! Each step: take a snapshot, `plan`, check the plan against the invariants
//! ([`check_plan`]), apply it, let `step_ms` pass. Applying: `Create` adds Pending pods (Serving
//! one step later, reporting an empty load, or nothing at all if `Sim::new_pods_report` is
//! false: a fleet whose agents never report), `Drain` makes a pod Draining, `Warn` sets `warned`,
//! `ForceEnd` ends the pod's meetings, `Delete` removes the pod. A pod's load is the sum of the
//! participants of its meetings and its sessions their number; a meeting leaves when its end
//! time passes. A pod that does not report shows both as unknown. No meeting ever arrives: a
//! "stable load" is meetings that never end.

use super::drain::DrainClock;
use super::*;
use std::collections::BTreeSet;

pub(crate) const MINUTE: Millis = 60_000;

/// Deterministic pseudo-random numbers (SplitMix64), so table tests need no random crate.
pub(crate) struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), good enough for tests.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meeting {
    pub participants: u32,
    pub ends: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SimPod {
    pub name: String,
    pub hash: String,
    pub phase: PodPhase,
    pub meetings: Vec<Meeting>,
    /// The agent reports load and sessions; `false` shows both as unknown.
    pub reports: bool,
    pub warned: bool,
    pub created: Millis,
    /// Its node is cordoned (pods the simulation creates land on other nodes).
    pub evacuate: bool,
    /// Someone asked for its drain (`visio.io/drain-requested`).
    pub drain_requested: bool,
}

impl SimPod {
    pub fn new(name: impl Into<String>, hash: &str, phase: PodPhase, meetings: Vec<Meeting>) -> SimPod {
        SimPod {
            name: name.into(),
            hash: hash.into(),
            phase,
            meetings,
            reports: true,
            warned: false,
            created: 0,
            evacuate: false,
            drain_requested: false,
        }
    }

    pub fn snapshot(&self) -> PodSnapshot {
        let load = self.meetings.iter().map(|m| m.participants).sum();
        PodSnapshot {
            name: self.name.clone(),
            template_hash: self.hash.clone(),
            phase: self.phase,
            load: self.reports.then_some(load),
            sessions: self.reports.then_some(count(self.meetings.len())),
            warned: self.warned,
            created: self.created,
            evacuate: self.evacuate,
            drain_requested: self.drain_requested,
        }
    }
}

pub(crate) struct Sim {
    pub spec: FleetSpec,
    pub now: Millis,
    pub step_ms: Millis,
    pub target_hash: String,
    pub pods: Vec<SimPod>,
    pub low_load_since: Option<Millis>,
    /// Whether the pods `Create` adds report their load (`SimPod::reports`).
    pub new_pods_report: bool,
    created: u32,
}

impl Sim {
    pub fn new(spec: FleetSpec, now: Millis, target_hash: &str, pods: Vec<SimPod>) -> Sim {
        Sim {
            spec,
            now,
            step_ms: MINUTE,
            target_hash: target_hash.into(),
            pods,
            low_load_since: None,
            new_pods_report: true,
            created: 0,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            now: self.now,
            target_hash: self.target_hash.clone(),
            pods: self.pods.iter().map(SimPod::snapshot).collect(),
            low_load_since: self.low_load_since,
            startup_lead_ms: None,
        }
    }

    /// One reconcile and one time step. Fails if the plan breaks an invariant.
    pub fn step(&mut self) -> Result<Plan, String> {
        let snap = self.snapshot();
        let plan = plan(&self.spec, &snap);
        check_plan(&self.spec, &snap, &plan).map_err(|e| format!("at {}: {e}\n{snap:#?}\n{plan:#?}", self.now))?;
        self.apply(&plan);
        self.advance();
        Ok(plan)
    }

    pub fn apply(&mut self, plan: &Plan) {
        self.low_load_since = plan.low_load_since;
        for action in &plan.actions {
            let pod = |pods: &mut Vec<SimPod>, name: &str| pods.iter().position(|p| p.name == name);
            match action {
                Action::Create { count } => {
                    for _ in 0..*count {
                        let mut p =
                            SimPod::new(format!("n{:04}", self.created), &self.target_hash, PodPhase::Pending, vec![]);
                        p.created = self.now;
                        p.reports = self.new_pods_report;
                        self.pods.push(p);
                        self.created += 1;
                    }
                }
                Action::Drain { pod: name, .. } => {
                    let i = pod(&mut self.pods, name).expect("checked");
                    self.pods[i].phase = PodPhase::Draining { since: self.now };
                }
                Action::Warn { pod: name, .. } => {
                    let i = pod(&mut self.pods, name).expect("checked");
                    self.pods[i].warned = true;
                }
                Action::ForceEnd { pod: name } => {
                    let i = pod(&mut self.pods, name).expect("checked");
                    self.pods[i].meetings.clear();
                }
                Action::Delete { pod: name, .. } => {
                    let i = pod(&mut self.pods, name).expect("checked");
                    self.pods.remove(i);
                }
            }
        }
    }

    /// Lets `step_ms` pass: pods created before this step become ready, meetings past their
    /// end leave, terminating pods go.
    fn advance(&mut self) {
        let before = self.now;
        self.now += self.step_ms;
        self.pods.retain(|p| p.phase != PodPhase::Terminating);
        for p in &mut self.pods {
            if p.phase == PodPhase::Pending && p.created < before {
                p.phase = PodPhase::Serving;
            }
            let now = self.now;
            p.meetings.retain(|m| m.ends > now);
        }
    }

    /// Serving and Pending pods.
    pub fn active(&self) -> usize {
        self.pods.iter().filter(|p| matches!(p.phase, PodPhase::Serving | PodPhase::Pending)).count()
    }

    /// Pods of another template than the target, in any phase.
    pub fn outdated(&self) -> usize {
        self.pods.iter().filter(|p| p.hash != self.target_hash).count()
    }

    /// Pods still on a cordoned node.
    pub fn evacuating(&self) -> usize {
        self.pods.iter().filter(|p| p.evacuate).count()
    }

    /// Pods whose drain was asked for and that are still there.
    pub fn drain_requests(&self) -> usize {
        self.pods.iter().filter(|p| p.drain_requested).count()
    }
}

/// A plan with nothing to do and nothing waiting on time.
pub(crate) fn is_idle(plan: &Plan) -> bool {
    plan.actions.is_empty() && plan.requeue_after_ms.is_none()
}

/// The safety invariants of one plan for one snapshot:
/// 1. a Serving or Terminating pod is never deleted; a Draining pod only when known empty or
///    past its deadline's grace; a Pending pod only when it reports nothing; `Failed` only for
///    failed pods;
/// 2. if the Serving pods held the serving load before the plan's drains, they still do after,
///    unknown loads read as full (they add no demand, but no drain relies on them being 0);
/// 3. a create never takes the non-terminating pods above `max + max_surge`;
/// 4. drains leave at least `desired` Serving pods, or `desired - max_draining` for an
///    upgrade; a scale-down (drain, or delete of a surplus Pending pod) only once the load has
///    been low for the delay;
///
/// and the plan is well formed: one action per pod, existing pods only, drains of Serving pods
/// only (a scale-down never picks an unknown load), warns and force-ends at the right time.
pub(crate) fn check_plan(spec: &FleetSpec, snap: &Snapshot, plan: &Plan) -> Result<(), String> {
    let spec = spec.normalized();
    let now = snap.now;
    let mut touched = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let mut drained = 0u64;
    let mut upgrade_drains = 0u64;
    let mut created = None;
    // Scale-down actions wait until the load has been low for the delay.
    let scale_down_due = snap
        .low_load_since
        .map_or(spec.scale_down_delay_ms == 0, |t| now >= t.saturating_add(spec.scale_down_delay_ms));
    for action in &plan.actions {
        let Some(name) = action.pod() else {
            let Action::Create { count } = action else { unreachable!() };
            if created.replace(*count).is_some() || *count == 0 {
                return Err(format!("bad create: {:?}", plan.actions));
            }
            continue;
        };
        let pod = snap.pods.iter().find(|p| p.name == name).ok_or(format!("{name}: no such pod"))?;
        if !touched.insert(name) {
            return Err(format!("{name}: two actions"));
        }
        let clock = match pod.phase {
            PodPhase::Draining { since } => Some(DrainClock::new(&spec, since)),
            _ => None,
        };
        let ok = match (action, pod.phase, clock) {
            (Action::Drain { reason, .. }, PodPhase::Serving, _) => {
                drained += 1;
                match reason {
                    DrainReason::Upgrade => {
                        upgrade_drains += 1;
                        pod.template_hash != snap.target_hash
                    }
                    DrainReason::ScaleDown => {
                        scale_down_due
                            && pod.load.is_some()
                            && pod.template_hash == snap.target_hash
                            && !pod.evacuate
                            && !pod.drain_requested
                    }
                    DrainReason::NodeCordoned => {
                        upgrade_drains += 1;
                        pod.evacuate && pod.template_hash == snap.target_hash
                    }
                    DrainReason::Requested => {
                        upgrade_drains += 1;
                        pod.drain_requested && !pod.evacuate && pod.template_hash == snap.target_hash
                    }
                }
            }
            (Action::Warn { deadline, .. }, _, Some(c)) => {
                !pod.warned && now >= c.warn_at && now < c.deadline && *deadline == c.deadline
            }
            (Action::ForceEnd { .. }, _, Some(c)) => now >= c.deadline && !pod.is_known_empty(),
            (Action::Delete { reason, .. }, phase, clock) => {
                deleted.insert(name);
                match (reason, phase, clock) {
                    (DeleteReason::Failed, PodPhase::Failed, _) => true,
                    (DeleteReason::Stale, PodPhase::Pending, _) => {
                        !pod.reports_activity()
                            && (pod.template_hash != snap.target_hash
                                || pod.evacuate
                                || pod.drain_requested
                                || scale_down_due)
                    }
                    (DeleteReason::Empty, _, Some(_)) => pod.is_known_empty(),
                    (DeleteReason::DeadlinePassed, _, Some(c)) => now >= c.delete_at,
                    _ => false,
                }
            }
            _ => false,
        };
        if !ok {
            return Err(format!("{name}: {action:?} not allowed for {pod:?}"));
        }
    }

    let cap = u64::from(spec.capacity_per_pod);
    let serving: Vec<&PodSnapshot> = snap.pods.iter().filter(|p| p.phase == PodPhase::Serving).collect();
    let load: u64 = serving.iter().map(|p| u64::from(p.load.unwrap_or(spec.capacity_per_pod))).sum();
    let before = serving.len() as u64 * cap;
    let after = (serving.len() as u64 - drained) * cap;
    if before >= load && after < load {
        return Err(format!("drains leave capacity {after} under the serving load {load}"));
    }
    // Drains never take the Serving pods under the desired count, except by the upgrade's dip.
    let serving_after = serving.len() as u64 - drained;
    let lowest = if upgrade_drains > 0 { plan.desired.saturating_sub(spec.max_draining) } else { plan.desired };
    if drained > 0 && serving_after < u64::from(lowest) {
        return Err(format!("drains leave {serving_after} Serving pods, under {lowest}"));
    }

    if let Some(n) = created {
        let kept = snap
            .pods
            .iter()
            .filter(|p| !matches!(p.phase, PodPhase::Terminating | PodPhase::Failed))
            .filter(|p| !deleted.contains(p.name.as_str()))
            .count() as u64;
        if kept + u64::from(n) > u64::from(spec.max) + u64::from(spec.max_surge) {
            return Err(format!("create {n} on top of {kept} pods exceeds max + max_surge"));
        }
    }

    if !(spec.min..=spec.max).contains(&plan.desired) {
        return Err(format!("desired {} outside {}..={}", plan.desired, spec.min, spec.max));
    }
    if plan.requeue_after_ms.is_some_and(|ms| ms <= 0) {
        return Err(format!("requeue {:?} not in the future", plan.requeue_after_ms));
    }
    Ok(())
}
