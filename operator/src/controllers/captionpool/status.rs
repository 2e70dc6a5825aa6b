//! Step 7: the status. Slot and pod counts from the backend pods and the plan, rejections counted once
//! across reconciles, conditions decided (plus the retention governance), Warning Events when they turn,
//! one status write (paced when only counts changed), and the pool's metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use super::pods::Backends;
use super::workers::{Observed, Workers};
use super::Pools;
use crate::api::captionpool::{BackendCounts, CaptionPool, CaptionPoolStatus, PodCounts, SlotCounts};
use crate::builders::captions::{self, CaptionStack};
use crate::fleet::{self, PodPhase, Snapshot};
use crate::runtime::conditions::{self, Convergence, Decided};
use crate::runtime::error::Result;
use crate::runtime::pods::pod_load;
use crate::runtime::status::{set_conditions, write_paced};
use crate::runtime::{key_of, Context};

/// How long `Degraded` stays `StreamsRejected` after the last rejection seen.
const REJECTION_MEMORY_MS: i64 = 5 * 60 * 1000;

/// Decides and writes the status; returns how long a paced status write waits.
pub async fn update(
    ctx: &Context,
    pools: &Pools,
    cp: &CaptionPool,
    stack: &CaptionStack,
    observed: &Observed,
    backends: &Backends,
    workers: &Workers,
) -> Result<Option<Duration>> {
    let (ns, name, uid, key) =
        (cp.namespace().unwrap_or_default(), cp.name_any(), cp.uid().unwrap_or_default(), key_of(cp));
    let pods = &observed.backends;
    let now = observed.now;
    let replicas = i32::try_from(workers.plan.replicas).unwrap_or(i32::MAX);
    let load = &workers.load;
    let mut status = build_status(cp, &stack.backend.hash, &backends.snapshot, backends.plan.desired, pods);
    let (new_rejections, recent, total) =
        count_rejections(pools, &key, &uid, status.slots.rejected, pods, now.as_millisecond());
    status.slots.rejected = total;
    status.autoscaling = fleet::schedule::status(backends.plan.scheduled.as_ref(), backends.snapshot.startup_lead_ms);
    ctx.metrics.set_caption_fleet(&ns, &name, backends.plan.desired, &backends.plan.figures);
    status.transcribers = transcriber_counts(ctx, &ns, &captions::transcriber_name(&name), replicas);
    status.transcribers.jobs = (load.reporting > 0).then(|| i64::try_from(load.jobs).unwrap_or(i64::MAX));
    let stuck = unschedulable(pods);
    let mut decided = decide(cp, &status, &stuck, recent);
    let old = cp.status.clone().unwrap_or_default();
    // Governance: stored transcripts in a bucket that no RetentionPolicy of the namespace covers.
    let transcripts = cp.spec.transcripts.as_ref().filter(|t| t.store).and_then(|t| t.bucket.as_ref());
    let missing = crate::retention::governance::missing_condition(
        "spec.transcripts.bucket",
        transcripts,
        &ns,
        &ctx.stores.retention_policies,
        &old.conditions,
    );
    match &missing {
        Some(d) => ctx
            .metrics
            .retention_policy_missing
            .with_label_values(&["CaptionPool", &ns, &name])
            .set(i64::from(d.status)),
        None => {
            let _ = ctx.metrics.retention_policy_missing.remove_label_values(&["CaptionPool", &ns, &name]);
        }
    }
    decided.extend(missing);
    status.conditions = old.conditions.clone();
    let was = |t: &str| old.conditions.iter().find(|c| c.type_ == t).map(|c| c.reason.clone());
    set_conditions(&mut status, cp.metadata.generation, &decided);
    // Events for what changed in a way a person should hear of, published before the status that
    // records the change: if the status write fails, the next reconcile sees the old reason and
    // publishes again (the recorder folds repeats into a count) rather than never.
    let now_reason =
        |t: &str| status.conditions.iter().find(|c| c.type_ == t).map(|c| (c.reason.clone(), c.message.clone()));
    if let Some((reason, msg)) = now_reason(conditions::DEGRADED) {
        if was(conditions::DEGRADED).as_deref() != Some(reason.as_str()) && reason != "AsExpected" {
            ctx.event(cp, EventType::Warning, &reason, "Observe", msg).await;
        }
    }
    if let Some((reason, msg)) = now_reason(conditions::READY) {
        if reason == "Unschedulable" && was(conditions::READY).as_deref() != Some("Unschedulable") {
            ctx.event(cp, EventType::Warning, "Unschedulable", "Schedule", msg).await;
        }
    }
    let status_wait = if cp.status.as_ref() != Some(&status) {
        write_paced(ctx, cp, cp.status.as_ref(), &status).await?
    } else {
        None
    };
    if new_rejections > 0 {
        ctx.metrics.caption_streams_rejected.with_label_values(&[&ns, &name]).inc_by(u64::from(new_rejections));
    }
    export_metrics(ctx, &ns, &name, &status);
    Ok(status_wait)
}

/// Streams open on the backend pods that report their load (deleting pods left out).
pub fn used_slots(pods: &[Arc<Pod>]) -> i64 {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| pod_load(p))
        .map(|l| i64::from(l.participants))
        .sum()
}

/// Pods the scheduler cannot place, with the scheduler's message (pure).
pub fn unschedulable(pods: &[Arc<Pod>]) -> Vec<(String, String)> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let c = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled")?;
            (c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
                .then(|| (p.name_any(), c.message.clone().unwrap_or_default()))
        })
        .collect()
}

/// The status figures from the planner's snapshot and the pods (pure).
pub fn build_status(
    cp: &CaptionPool,
    hash: &str,
    snap: &Snapshot,
    desired: u32,
    pods: &[Arc<Pod>],
) -> CaptionPoolStatus {
    let live: Vec<_> =
        snap.pods.iter().filter(|p| !matches!(p.phase, PodPhase::Terminating | PodPhase::Failed)).collect();
    let slots_per_pod = i64::from(cp.spec.backend.slots_per_pod.max(1));
    let mut used = 0i64;
    let mut total = 0i64;
    let mut step_us: Option<u32> = None;
    let mut slow_permille: Option<u32> = None;
    for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let Some(load) = pod_load(p) else { continue };
        used += i64::from(load.participants);
        step_us = step_us.max(load.step_p95_us);
        // The annotation is the tenant's to write: a share is at most 1000 per mille.
        slow_permille = slow_permille.max(load.slow_step_permille.map(|pm| pm.min(1000)));
    }
    for p in &live {
        if p.phase == PodPhase::Serving {
            let cap = pods
                .iter()
                .find(|q| q.name_any() == p.name)
                .and_then(|q| pod_load(q))
                .and_then(|l| l.capacity)
                .map(i64::from);
            total += cap.unwrap_or(slots_per_pod);
        }
    }
    let count = |f: &dyn Fn(&&fleet::PodSnapshot) -> bool| live.iter().filter(|p| f(p)).count() as i32;
    CaptionPoolStatus {
        observed_generation: cp.metadata.generation,
        conditions: vec![],
        slots: SlotCounts { used, total, rejected: cp.status.as_ref().map(|s| s.slots.rejected).unwrap_or(0) },
        backends: BackendCounts {
            desired: desired as i32,
            ready: count(&|p| p.phase == PodPhase::Serving),
            current: live.len() as i32,
            updated: count(&|p| p.template_hash == hash),
            draining: count(&|p| matches!(p.phase, PodPhase::Draining { .. })),
            unschedulable: unschedulable(pods).len() as i32,
        },
        transcribers: PodCounts::default(),
        step_time_p95_ms: step_us.map(|us| (f64::from(us) / 1000.0 * 10.0).round() / 10.0),
        slow_steps_percent: slow_permille.map(|pm| f64::from(pm) / 10.0),
        // Set by `update`, from the plan.
        autoscaling: None,
    }
}

/// The conditions of a deployed pool (pure). `stuck` lists unschedulable backend pods with the scheduler's
/// message; `recent_rejection` says whether a backend refused a stream in the last few minutes.
pub fn decide(
    cp: &CaptionPool,
    status: &CaptionPoolStatus,
    stuck: &[(String, String)],
    recent_rejection: bool,
) -> Vec<Decided> {
    let b = &status.backends;
    let s = &status.slots;
    let want = cp.spec.backend.replicas.min.max(1).min(b.desired.max(1));
    let ready = b.ready >= want;
    let summary = format!(
        "{}/{} backend pods serving, {}/{} slots used, {} draining",
        b.ready, b.desired, s.used, s.total, b.draining
    );
    let mut out = vec![];
    let gpu = &cp.spec.backend.gpu;
    let stuck_msg = stuck.first().map(|(pod, msg)| {
        let gpu_note = if gpu.count > 0 {
            format!(" (spec.backend.gpu asks {} {} per pod)", gpu.count, gpu.resource_name)
        } else {
            String::new()
        };
        format!("{} backend pod(s) Pending, e.g. {pod}: {msg}{gpu_note}", stuck.len())
    });
    out.push(match (&stuck_msg, ready) {
        (Some(m), false) => Decided::new(conditions::READY, false, "Unschedulable", m.clone()),
        (_, true) => Decided::new(conditions::READY, true, "Serving", summary.clone()),
        (None, false) => Decided::new(conditions::READY, false, "PodsNotReady", summary.clone()),
    });
    let progressing = b.updated < b.current || b.current != b.desired + b.draining || !ready;
    let counts =
        format!("{} current, {} desired, {} draining, {} updated", b.current, b.desired, b.draining, b.updated);
    out.push(Decided::new(
        conditions::PROGRESSING,
        progressing,
        if progressing { "Reconciling" } else { "Stable" },
        counts.clone(),
    ));
    let exhausted = s.total > 0 && s.used >= s.total;
    out.push(if recent_rejection {
        Decided::new(
            conditions::DEGRADED,
            true,
            "StreamsRejected",
            format!(
                "a backend refused caption streams because every slot was taken ({} since creation); {summary}",
                s.rejected
            ),
        )
    } else if exhausted {
        Decided::new(
            conditions::DEGRADED,
            true,
            "SlotsExhausted",
            format!("every serving slot is taken: the next stream will be refused until a backend is added; {summary}"),
        )
    } else if let Some(m) = stuck_msg.clone() {
        Decided::new(conditions::DEGRADED, true, "Unschedulable", m)
    } else {
        Decided::new(conditions::DEGRADED, false, "AsExpected", "no problem detected")
    });
    // kstatus: an unschedulable backend pod is InProgress, not Failed: a node with the GPU may be on its
    // way (an autoscaler), and the pool converges then without a change of spec.
    out.extend(conditions::convergence(&match (stuck_msg, progressing) {
        (Some(m), _) if !ready => Convergence::Reconciling("Unschedulable", m),
        (_, false) => Convergence::Current,
        _ if b.updated < b.current => Convergence::Reconciling("RollingUpgrade", counts),
        _ if !ready => Convergence::Reconciling("PodsNotReady", summary.clone()),
        _ => Convergence::Reconciling("Scaling", counts),
    }));
    out
}

/// A spec or reference problem: `Ready=False` and `Degraded=True` with the reason, and an Event when the
/// condition changes.
pub async fn report_problem(cp: &CaptionPool, ctx: &Context, reason: &str, message: String) -> Result<()> {
    tracing::warn!(object = %key_of(cp), reason, %message, "cannot deploy the caption pool");
    let decided = vec![
        Decided::new(conditions::READY, false, reason, message.clone()),
        Decided::new(conditions::DEGRADED, true, reason, message.clone()),
    ]
    .into_iter()
    .chain(conditions::convergence(&Convergence::Stalled(reason.into(), message.clone())))
    .collect::<Vec<_>>();
    let mut status = cp.status.clone().unwrap_or_default();
    if set_conditions(&mut status, cp.metadata.generation, &decided) {
        ctx.event(cp, EventType::Warning, reason, "Validate", message).await;
        write_paced(ctx, cp, cp.status.as_ref(), &status).await?;
    }
    let ready = &ctx.metrics.ready;
    ready.with_label_values(&["CaptionPool", &cp.namespace().unwrap_or_default(), &cp.name_any()]).set(0.0);
    Ok(())
}

/// New rejections since the last reconcile (per pod counters; a pod first seen sets its baseline),
/// whether one was seen in the last [`REJECTION_MEMORY_MS`], and the pool's total: the new ones added
/// to the larger of the total in the cached status (`cached`) and the one this process last computed
/// for the same pool, which the cache may not show yet (both only grow, so the larger is the newer).
fn count_rejections(
    pools: &Pools,
    key: &str,
    pool_uid: &str,
    cached: i64,
    pods: &[Arc<Pod>],
    now_ms: i64,
) -> (u32, bool, i64) {
    let mut all = pools.memory.lock();
    let mem = all.entry(key.to_string()).or_default();
    let mut new = 0u32;
    let mut live = HashMap::new();
    for p in pods {
        let (Some(uid), Some(r)) = (p.uid(), pod_load(p).and_then(|l| l.rejected)) else { continue };
        let prev = mem.rejected_seen.get(&uid).copied();
        new = new.saturating_add(rejection_increase(prev, r));
        live.insert(uid, r);
    }
    mem.rejected_seen = live;
    if new > 0 {
        mem.last_rejection_ms = Some(now_ms);
    }
    let recent = mem.last_rejection_ms.is_some_and(|t| now_ms.saturating_sub(t) < REJECTION_MEMORY_MS);
    let remembered = mem.rejected_total.as_ref().filter(|(u, _)| u == pool_uid).map(|(_, t)| *t);
    let total = rejected_total(cached, remembered, new);
    mem.rejected_total = Some((pool_uid.to_string(), total));
    (new, recent, total)
}

/// `status.slots.rejected` after `new` rejections (pure): see [`count_rejections`].
pub fn rejected_total(cached: i64, remembered: Option<i64>, new: u32) -> i64 {
    cached.max(remembered.unwrap_or(0)).saturating_add(i64::from(new))
}

/// Rejections to count when a pod's counter goes from `prev` (`None`: first seen by this process) to `now`
/// (pure). A first sighting is a baseline (it may have been counted before a restart); a counter that went
/// down belongs to a restarted backend and counts whole.
pub fn rejection_increase(prev: Option<u32>, now: u32) -> u32 {
    match prev {
        None => 0,
        Some(p) if now >= p => now - p,
        Some(_) => now,
    }
}

fn transcriber_counts(ctx: &Context, ns: &str, name: &str, desired: i32) -> PodCounts {
    let key = ObjectRef::new(name).within(ns);
    let ready = ctx.stores.deployments.get(&key).and_then(|d| d.status.as_ref()?.ready_replicas).unwrap_or(0);
    PodCounts { desired, ready, jobs: None }
}

fn export_metrics(ctx: &Context, ns: &str, name: &str, status: &CaptionPoolStatus) {
    let m = &ctx.metrics;
    m.init_pool(ns, name);
    m.caption_slots.with_label_values(&[ns, name, "used"]).set(status.slots.used);
    m.caption_slots.with_label_values(&[ns, name, "total"]).set(status.slots.total);
    match status.step_time_p95_ms {
        Some(ms) => m.caption_step_time_p95.with_label_values(&[ns, name]).set(ms / 1000.0),
        None => {
            let _ = m.caption_step_time_p95.remove_label_values(&[ns, name]);
        }
    }
    match status.slow_steps_percent {
        Some(pct) => m.caption_slow_steps.with_label_values(&[ns, name]).set(pct / 100.0),
        None => {
            let _ = m.caption_slow_steps.remove_label_values(&[ns, name]);
        }
    }
    let ready = conditions::is_true(&status.conditions, conditions::READY);
    m.ready.with_label_values(&["CaptionPool", ns, name]).set(if ready { 1.0 } else { 0.0 });
}

crate::conditioned!(CaptionPoolStatus);
