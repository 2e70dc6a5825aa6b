//! The fleet planner: from a spec and a snapshot of pods to the next actions. No I/O.
//!
//! Pure and deterministic: no I/O, no clock (`Snapshot::now` is an input), no randomness; the
//! same input gives the same plan whatever the order of `Snapshot::pods`. The controller turns
//! the plan into API calls and carries `Plan::low_load_since` into the next snapshot.
//!
//! Unit-agnostic, so one planner serves both fleets:
//!
//! | fleet | `load` | `sessions` | `capacity_per_pod` |
//! |---|---|---|---|
//! | LiveKit SFU | participants | rooms | `participantsPerPod` |
//! | caption backend | used slots | streams | slots per pod |
//!
//! `plan` applies the rules in this order (each file owns its rules):
//!
//! 1. Failed pods are deleted (`Delete{Failed}`) and count for nothing; Terminating pods count for
//!    nothing and get no action.
//! 2. Draining pods follow their drain clock ([`drain`]): deleted once empty, warned once before
//!    the deadline, their sessions ended at the deadline, deleted [`FORCE_END_GRACE_MS`] later.
//! 3. Pending pods of an outdated template, or on a cordoned node, are deleted (`Delete{Stale}`):
//!    they never became ready, so they hold nothing, and waiting for them only to drain them would
//!    slow the upgrade.
//! 4. The desired serving count comes from the reported load on Serving pods ([`scale`]), raised to
//!    the minimum of the open schedule window ([`schedule`], opened early by
//!    `Snapshot::startup_lead_ms`), all within `min..=max`. A window's end only lowers `desired`:
//!    pods then go by rule 6 alone (the delay, then drains that keep their meetings).
//!    A window about to open (within [`scale::hold_ahead_ms`], opened early as above) does not raise
//!    `desired` but holds its pods against rule 6.
//! 5. Outdated Serving pods (another template, on a cordoned node: `PodSnapshot::evacuate`, or
//!    marked by a person with `visio.io/drain-requested`: `PodSnapshot::drain_requested`) are
//!    drained within `max_draining` and the capacity floor ([`upgrade`]); pods replacing them are
//!    created first, within `max_surge`, as for an upgrade.
//! 6. Surplus pods of the target template are removed once the load has stayed low for
//!    `scale_down_delay_ms` ([`scale`]): surplus Pending pods first, then the emptiest Serving pods.
//! 7. New pods (always of the target template) are created for the demand and for the upgrade.
//!
//! Unknown load (`PodSnapshot::load` is `None`: the pod's agent has not reported, or its report
//! is unreadable) is read one way for growing and the other for shrinking:
//! - it adds no demand: a new pod is Serving with an unknown load until its agent reports, so
//!   reading that as a full pod would make every new pod ask for another one, and a slow or
//!   broken agent (or pods that run no agent, as under kwok) would grow the fleet to `max` at
//!   once. A fleet whose loads are all unknown stays at `min` (or what the buffer needs);
//! - it is never read as empty: such a pod is never drained for a scale-down, never deleted as
//!   empty, and every drain keeps the capacity floor with it read as full, so no drain leaves
//!   the load on the fleet resting on an unknown pod being idle. An upgrade still drains it,
//!   last. It stays a Serving pod, so it still counts as capacity for the creates.
//!
//! Safety invariants, stated as property tests in `props.rs` and checked at every step of the
//! simulations in `sim.rs`:
//! - a Serving pod is never deleted (always drained first); a Draining pod is deleted before its
//!   deadline only when its load and sessions are both known to be 0; a Pending pod is deleted
//!   only if it reports no load and no sessions (not ready: nothing is routed to it);
//! - a drain never takes the non-draining Serving capacity below the serving load, unknown
//!   loads read as full;
//! - a create never takes the non-terminating pods above `max + max_surge`;
//! - with a stable load the plans reach a fixed point (no actions, nothing due) without the pod
//!   count going up and down, and an upgrade always finishes;
//! - with every load unknown the fleet grows to `min` (or what the buffer needs) and no further.

mod drain;
mod scale;
pub mod schedule;
mod upgrade;
pub mod workers;

#[cfg(test)]
mod props;
#[cfg(test)]
mod props_captions;
#[cfg(test)]
mod props_schedule;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

/// Unix time in milliseconds. Always an input, never read from a clock.
pub type Millis = i64;

/// How long after its drain deadline a pod whose sessions were ended (`ForceEnd`) is deleted
/// even if it still reports sessions or no load at all: the backend had that long to close
/// them, and a drain must end in bounded time.
pub const FORCE_END_GRACE_MS: Millis = 30_000;

/// What the fleet should look like, in the units of its load (see the module doc).
///
/// `plan` is total: out-of-range values are read as the nearest sane one (capacity at least 1,
/// target utilisation within 10..=100, `max` at least `min`, negative durations as 0, `warn_before`
/// at most `drain_timeout`). The CRD's validation keeps real specs in range anyway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSpec {
    pub min: u32,
    pub max: u32,
    pub capacity_per_pod: u32,
    /// Free load units kept ready above the serving load (Agones' buffer policy).
    pub buffer: u32,
    /// Highest share of the serving capacity in use before more pods are added.
    pub target_utilization_percent: u32,
    /// How long the fleet must be larger than needed before it shrinks.
    pub scale_down_delay_ms: i64,
    /// Pods that may run above the desired count to replace outdated ones.
    pub max_surge: u32,
    /// How far below the desired count the Serving pods may dip while outdated ones drain.
    pub max_draining: u32,
    /// Longest a draining pod keeps its sessions before they are ended.
    pub drain_timeout_ms: i64,
    /// How long before the drain deadline the sessions are warned.
    pub warn_before_ms: i64,
    /// Windows of the week with a minimum (none by default).
    pub schedule: schedule::Schedule,
}

/// Where a pod is in its life, as the controller classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    /// Created, never ready yet: nothing is routed to it, it is not capacity.
    Pending,
    /// Ready and accepting new sessions. A ready pod that loses readiness stays `Serving` (it may
    /// hold sessions); only a pod that never was ready is `Pending`.
    Serving,
    /// Told to drain at `since`: keeps its sessions, takes no new ones.
    Draining { since: Millis },
    /// Being deleted: counts for nothing.
    Terminating,
    /// Exited (Kubernetes phase Failed or Succeeded): holds nothing.
    Failed,
}

/// One pod as the planner sees it. Pod names are unique (one namespace, one fleet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSnapshot {
    pub name: String,
    pub template_hash: String,
    pub phase: PodPhase,
    /// Reported load (participants or used slots). `None` = unknown: adds no demand (else each
    /// new pod, unknown until its agent reports, would ask for another one), but is never read as
    /// empty: never drained for a scale-down, read as full by the drain floor (module doc).
    pub load: Option<u32>,
    /// Reported sessions (rooms or streams). `None` = unknown. A pod is empty only when `load`
    /// and `sessions` are both known to be 0, so the agent must report both.
    pub sessions: Option<u32>,
    /// The sessions were already warned of the drain deadline.
    pub warned: bool,
    pub created: Millis,
    /// Its node is cordoned (what `kubectl drain` does before it evicts): the pod is replaced like
    /// one of an outdated template (a new pod first, then a drain within `max_draining` and the
    /// capacity floor), so the node empties by itself without cutting a meeting.
    pub evacuate: bool,
    /// Someone asked for this pod to be drained (`kubectl visio drain`, the `visio.io/drain-requested`
    /// annotation): replaced exactly like a pod on a cordoned node, so the request gets the same
    /// guarantees (a new pod first within `max_surge`, then a drain within `max_draining` and the
    /// capacity floor, the warning and the deadline of `drain_timeout`). A request never cuts a
    /// meeting sooner than an upgrade would.
    pub drain_requested: bool,
}

/// Everything `plan` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub now: Millis,
    /// Template hash of the current pod template; pods with another hash are outdated.
    pub target_hash: String,
    pub pods: Vec<PodSnapshot>,
    /// `Plan::low_load_since` of the previous plan (the planner's only memory).
    pub low_load_since: Option<Millis>,
    /// How long a new pod has been measured to take to serve (`None`: not measured yet): schedule
    /// windows open this much early (at most [`schedule::MAX_LEAD_MS`]).
    pub startup_lead_ms: Option<Millis>,
}

/// Why a pod is drained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainReason {
    ScaleDown,
    Upgrade,
    /// The pod's node is cordoned.
    NodeCordoned,
    /// Someone asked for the pod to be drained (`PodSnapshot::drain_requested`).
    Requested,
}

/// Why a pod is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// A draining pod whose load and sessions are both known to be 0.
    Empty,
    /// A draining pod `FORCE_END_GRACE_MS` past its deadline.
    DeadlinePassed,
    /// The pod exited; it holds nothing.
    Failed,
    /// A Pending pod no longer wanted: outdated template, or surplus at a scale-down.
    Stale,
}

/// One step for the controller. Actions on different pods are independent; `Create` comes last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create `count` pods of the target template.
    Create {
        count: u32,
    },
    /// Stop routing new sessions to the pod; its sessions continue.
    Drain {
        pod: String,
        reason: DrainReason,
    },
    /// Tell the pod's sessions they end at `deadline` (emitted once: until `warned` is set).
    Warn {
        pod: String,
        deadline: Millis,
    },
    /// The drain deadline passed: end the pod's sessions. Repeated on every plan until the pod is
    /// empty or deleted, so the controller must make it idempotent.
    ForceEnd {
        pod: String,
    },
    Delete {
        pod: String,
        reason: DeleteReason,
    },
}

impl Action {
    /// The pod the action is about (`None` for `Create`).
    pub fn pod(&self) -> Option<&str> {
        match self {
            Action::Create { .. } => None,
            Action::Drain { pod, .. }
            | Action::Warn { pod, .. }
            | Action::ForceEnd { pod }
            | Action::Delete { pod, .. } => Some(pod),
        }
    }
}

/// Rollout counts observed in the snapshot, present while any pod is outdated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpgradeProgress {
    /// Serving or Pending pods of the target template.
    pub updated: u32,
    /// Serving, Pending or Draining pods of another template.
    pub outdated: u32,
}

/// What the fleet's metrics show, as the planner read the snapshot: the alerts compare headroom with
/// the buffer and the oldest drain with the drain timeout, so they must be the planner's own figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Capacity of the Serving pods minus the load they report. An unreported load counts as 0, as
    /// in the demand (`scale::serving_load`); `load_unknown_pods` says how far to trust it. Draining
    /// pods are left out: their meetings need no serving capacity.
    pub serving_headroom: i64,
    /// The spec's buffer.
    pub buffer: i64,
    /// The spec's drain timeout.
    pub drain_timeout_ms: Millis,
    /// When the oldest drain started, `None` if no pod drains.
    pub oldest_drain_since: Option<Millis>,
    /// Serving pods with an unknown load (no `visio.io/load`, or an unreadable one).
    pub load_unknown_pods: i64,
    /// The spec's `max`, and whether a schedule window is open: the alert on a fleet held at its max
    /// during a window compares `desired` with them.
    pub max: i64,
    pub window_open: bool,
    /// The snapshot's measured start-up time of a pod.
    pub startup_lead_ms: Option<Millis>,
}

/// The schedule window holding the fleet up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub window: String,
    /// Serving pods it asks for (within `min..=max`).
    pub pods: u32,
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Serving pods the reported load and the open schedule window need (within `min..=max`).
    pub desired: u32,
    /// The open schedule window (the one asking for the most pods), if any.
    pub scheduled: Option<Scheduled>,
    /// In order: failed deletes, drain-clock actions, deletes of outdated Pending pods, upgrade
    /// drains, scale-down (surplus Pending deletes, then drains), create. Pods by name within each.
    pub actions: Vec<Action>,
    /// Carry into the next `Snapshot::low_load_since`.
    pub low_load_since: Option<Millis>,
    pub upgrade: Option<UpgradeProgress>,
    /// When the next time-based decision is due (warn time, deadline, end of the force-end grace,
    /// end of the scale-down delay), relative to `now`; `None` when nothing waits on time.
    pub requeue_after_ms: Option<i64>,
    /// For the metrics.
    pub figures: Figures,
}

impl FleetSpec {
    /// The spec as `plan` reads it (see the type's doc).
    fn normalized(&self) -> FleetSpec {
        let drain_timeout_ms = self.drain_timeout_ms.max(0);
        FleetSpec {
            min: self.min,
            max: self.max.max(self.min),
            capacity_per_pod: self.capacity_per_pod.max(1),
            buffer: self.buffer,
            target_utilization_percent: self.target_utilization_percent.clamp(10, 100),
            scale_down_delay_ms: self.scale_down_delay_ms.max(0),
            max_surge: self.max_surge,
            max_draining: self.max_draining,
            drain_timeout_ms,
            warn_before_ms: self.warn_before_ms.clamp(0, drain_timeout_ms),
            schedule: self.schedule.clone(),
        }
    }
}

impl PodSnapshot {
    /// Load and sessions both known to be 0.
    fn is_known_empty(&self) -> bool {
        self.load == Some(0) && self.sessions == Some(0)
    }

    /// Reports some load or some session (a Pending pod that does is not deleted: it may in
    /// fact be serving).
    fn reports_activity(&self) -> bool {
        self.load.is_some_and(|l| l > 0) || self.sessions.is_some_and(|s| s > 0)
    }
}

/// The earliest instant after `now` at which a decision is due.
struct NextDue {
    now: Millis,
    at: Option<Millis>,
}

impl NextDue {
    fn consider(&mut self, at: Option<Millis>) {
        if let Some(at) = at.filter(|&t| t > self.now) {
            self.at = Some(self.at.map_or(at, |cur| cur.min(at)));
        }
    }

    fn after_ms(&self) -> Option<i64> {
        self.at.map(|at| at.saturating_sub(self.now))
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Plans the next actions for the fleet. See the module doc for the rules.
pub fn plan(spec: &FleetSpec, snap: &Snapshot) -> Plan {
    let spec = spec.normalized();
    let now = snap.now;
    // A pod on a cordoned node, or one whose drain was asked for, is replaced as if its template
    // were outdated.
    let outdated = |p: &PodSnapshot| p.template_hash != snap.target_hash || p.evacuate || p.drain_requested;
    // Sorting once makes every later choice deterministic: ties are broken by name.
    let mut pods: Vec<&PodSnapshot> = snap.pods.iter().collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));

    let mut actions = Vec::new();
    let mut next_due = NextDue { now, at: None };

    // 1. Failed pods.
    for p in pods.iter().filter(|p| p.phase == PodPhase::Failed) {
        actions.push(Action::Delete { pod: p.name.clone(), reason: DeleteReason::Failed });
    }

    // 2. The drain clock of each draining pod.
    let mut draining_left = 0u32;
    let mut outdated_draining_left = 0u32;
    for p in &pods {
        if let PodPhase::Draining { since } = p.phase {
            let step = drain::step(&spec, now, p, since);
            next_due.consider(step.next_due);
            actions.extend(step.action);
            if !step.deletes {
                draining_left += 1;
                outdated_draining_left += u32::from(outdated(p));
            }
        }
    }

    // 3. Pending pods of an outdated template.
    let mut pending: Vec<&PodSnapshot> = Vec::new();
    for p in pods.iter().copied().filter(|p| p.phase == PodPhase::Pending) {
        if outdated(p) && !p.reports_activity() {
            actions.push(Action::Delete { pod: p.name.clone(), reason: DeleteReason::Stale });
        } else {
            pending.push(p);
        }
    }

    // 4. Desired count, from the reported load on Serving pods only: draining pods keep their
    // sessions (LiveKit keeps a draining node's rooms), so their load needs no serving capacity,
    // and an unknown load adds no demand (see "Unknown load" above). The drain floor, though,
    // reads an unknown load as full.
    let serving: Vec<&PodSnapshot> = pods.iter().copied().filter(|p| p.phase == PodPhase::Serving).collect();
    let serving_load = scale::serving_load(&serving);
    let lead = snap.startup_lead_ms.unwrap_or(0).clamp(0, schedule::MAX_LEAD_MS);
    let reading = spec.schedule.at(now, lead);
    next_due.consider(reading.next_change);
    let scheduled = scale::scheduled(&spec, &reading.open);
    let desired = scale::desired(&spec, serving_load).max(scheduled.as_ref().map_or(0, |s| s.pods));
    let figures = Figures {
        serving_headroom: count(serving.len()) as i64 * i64::from(spec.capacity_per_pod)
            - i64::try_from(serving_load).unwrap_or(i64::MAX),
        buffer: i64::from(spec.buffer),
        drain_timeout_ms: spec.drain_timeout_ms,
        oldest_drain_since: pods
            .iter()
            .filter_map(|p| match p.phase {
                PodPhase::Draining { since } => Some(since),
                _ => None,
            })
            .min(),
        load_unknown_pods: serving.iter().filter(|p| p.load.is_none()).count() as i64,
        max: i64::from(spec.max),
        window_open: scheduled.is_some(),
        startup_lead_ms: snap.startup_lead_ms,
    };
    let floor = drain::capacity_floor(&spec, drain::assumed_load(&spec, &serving));
    let mut serving_left = count(serving.len());

    // 5. Upgrade drains.
    let outdated_serving: Vec<&PodSnapshot> = serving.iter().copied().filter(|p| outdated(p)).collect();
    for p in upgrade::drains(&spec, desired, floor, &outdated_serving, &mut serving_left) {
        let reason = if p.template_hash != snap.target_hash {
            DrainReason::Upgrade
        } else if p.evacuate {
            DrainReason::NodeCordoned
        } else {
            DrainReason::Requested
        };
        actions.push(Action::Drain { pod: p.name.clone(), reason });
        draining_left += 1;
        outdated_draining_left += 1;
    }

    // 6. Scale-down of the target template's surplus, once the load has stayed low long enough. The
    // pods a window opening within the hold ahead will ask for are kept: a pod drained now keeps its
    // meetings (never cut) until they end, so drained pods and the window's new ones would run side by
    // side (the pod-minutes `e2e/bench peak` measured).
    let ahead = spec.schedule.opening_within(now, lead, scale::hold_ahead_ms(&spec));
    let keep = desired.max(scale::scheduled(&spec, &ahead).map_or(0, |s| s.pods));
    let target_serving: Vec<&PodSnapshot> = serving.iter().copied().filter(|p| !outdated(p)).collect();
    let target_pending: Vec<&PodSnapshot> = pending.iter().copied().filter(|p| !outdated(p)).collect();
    let mut target_active = count(target_serving.len() + target_pending.len());
    let mut pending_left = count(pending.len());
    let low_since = (target_active > keep).then(|| snap.low_load_since.unwrap_or(now));
    if let Some(since) = low_since {
        let due_at = since.saturating_add(spec.scale_down_delay_ms);
        if now >= due_at {
            let down = scale::scale_down(
                &spec,
                target_active - keep,
                keep,
                floor,
                &target_pending,
                &target_serving,
                &mut serving_left,
            );
            pending_left -= down.pending_deleted;
            draining_left += down.drained;
            target_active -= down.pending_deleted + down.drained;
            actions.extend(down.actions);
        } else {
            next_due.consider(Some(due_at));
        }
    }

    // 7. Creates.
    let totals = scale::Totals {
        serving: serving_left,
        pending: pending_left,
        draining: draining_left,
        outdated_draining: outdated_draining_left,
        target_active,
    };
    let create = scale::creates(&spec, desired, &totals);
    if create > 0 {
        actions.push(Action::Create { count: create });
    }

    Plan {
        desired,
        scheduled,
        actions,
        // Kept only while the surplus remains, so a later dip starts a fresh delay.
        low_load_since: low_since.filter(|_| target_active > keep),
        upgrade: upgrade::progress(&snap.target_hash, &pods),
        requeue_after_ms: next_due.after_ms(),
        figures,
    }
}
