//! Step 3: a sweep, when one is due, in a task of its own: one at a time per policy, a checkpoint at
//! most every [`CHECKPOINT_EVERY`], its record written once when it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::json;

use super::slots::Slot;
use super::status::{patch_status, problem_conditions, run_event, sweep_conditions};
use super::validate::Validated;
use super::{LastSweep, Policies};
use crate::api::retentionpolicy::{LegalHoldSpec, RetentionMode, SweepCheckpoint, SweepSummary};
use crate::api::RetentionPolicy;
use crate::retention::sweep::{self, Progress, SweepError, Sweeper};
use crate::runtime::conditions;
use crate::runtime::{key_of, Context};

/// How often a running sweep saves its position in status.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// Marks the policy's sweep as running until dropped (the task ends, or panics).
struct RunGuard(Arc<Policies>, String);

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.0.running.forget(&self.1);
    }
}

/// Starts the policy's sweep in a task of its own, holding `slot` until it ends, unless one runs.
pub fn spawn(rp: Arc<RetentionPolicy>, ctx: Arc<Context>, policies: Arc<Policies>, valid: Validated, slot: Slot) {
    let key = key_of(rp.as_ref());
    {
        let mut running = policies.running.lock();
        if running.contains_key(&key) {
            return;
        }
        running.insert(key.clone(), ());
    }
    let guard = RunGuard(policies.clone(), key);
    tokio::spawn(async move {
        let _guard = guard;
        let _slot = slot;
        run_sweep(rp, ctx, &policies, valid).await;
    });
}

/// Whether a sweep is due (pure). `last`: what this process remembers of the policy's last sweep.
pub fn due(rp: &RetentionPolicy, last: Option<LastSweep>, now: i64) -> bool {
    let generation = rp.metadata.generation;
    if let Some((gen, next)) = last {
        return gen != generation || now >= next;
    }
    let status = rp.status.clone().unwrap_or_default();
    status.in_progress.is_some()
        || status.observed_generation != generation
        || status.last_run.is_none()
        || status.next_run.is_none_or(|t| now >= t.0.as_second())
}

pub fn mode_str(m: RetentionMode) -> &'static str {
    match m {
        RetentionMode::Enforce => "Enforce",
        RetentionMode::DryRun => "DryRun",
    }
}

pub(super) fn time(secs: i64) -> Option<Time> {
    Timestamp::from_second(secs).ok().map(Time)
}

/// One sweep, start to end, then its record (status, Event, metrics). Never panics; errors are
/// reported, and the checkpoint is kept so the retry continues where this run stopped.
async fn run_sweep(rp: Arc<RetentionPolicy>, ctx: Arc<Context>, policies: &Policies, valid: Validated) {
    let ns = rp.namespace().unwrap_or_default();
    let name = rp.name_any();
    let key = key_of(rp.as_ref());
    let generation = rp.metadata.generation;
    // A namespace the platform holds as a whole deletes nothing: its sweeps report, as a dry run does.
    let mode = if valid.holds.namespace_held { RetentionMode::DryRun } else { rp.spec.mode };
    if valid.holds.namespace_held && rp.spec.mode != RetentionMode::DryRun {
        tracing::info!(policy = %key, "the VisioPlatform holds this namespace (spec.retention.heldNamespaces): the sweep deletes nothing");
    }
    let status = rp.status.clone().unwrap_or_default();
    // Resume an interrupted sweep of the same spec and mode.
    let resumed = status.in_progress.clone().filter(|c| c.generation == generation && c.mode == mode_str(mode));
    let started = resumed.as_ref().and_then(|c| c.started.clone()).unwrap_or(Time(Timestamp::now()));
    let resume = resumed.as_ref().map(|c| c.progress.clone());
    let offset = crate::retention::clock_offset_secs();
    if offset != 0 {
        tracing::warn!(policy = %key, offset_seconds = offset, "{} is set: the sweeper's clock runs ahead (a testing knob)", crate::retention::CLOCK_OFFSET_ENV);
    }
    tracing::info!(policy = %key, bucket = %rp.spec.target.bucket, mode = mode_str(mode), resumed = resume.is_some(), "retention sweep starting");
    let mut progress = resume.clone().unwrap_or_default();
    let m = ctx.metrics.clone();
    let outcome: std::result::Result<(), SweepError> = async {
        let limits = ctx.config.retention;
        let client = sweep::client_with_cap(&rp.spec.target, &valid.credentials, limits.max_response_bytes);
        let mut s = Sweeper::start(
            client,
            &rp.spec.target,
            valid.rules,
            &LegalHoldSpec { object_lock: valid.holds.object_lock, ..rp.spec.legal_hold.clone() },
            mode,
            crate::retention::now_secs(),
            resume,
        )
        .await?
        .holding_also(valid.holds.tags.clone())
        .with_limits(limits);
        let mut saved = Instant::now();
        loop {
            let more = s
                .next_page(|d| {
                    m.retention_deleted_objects.with_label_values(&[&ns, &name, d.data_class]).inc();
                    m.retention_deleted_bytes
                        .with_label_values(&[&ns, &name, d.data_class])
                        .inc_by(d.size.max(0) as u64);
                })
                .await;
            progress = s.progress.clone();
            if !more? {
                return Ok(());
            }
            if saved.elapsed() >= CHECKPOINT_EVERY {
                let ckpt = SweepCheckpoint {
                    started: Some(started.clone()),
                    mode: mode_str(mode).into(),
                    generation,
                    progress: progress.clone(),
                };
                if let Err(e) = patch_status(&ctx, &rp, json!({"inProgress": ckpt})).await {
                    tracing::warn!(policy = %key, error = %e, "could not save the sweep checkpoint (the sweep goes on)");
                }
                saved = Instant::now();
            }
        }
    }
    .await;
    let finished = Timestamp::now();
    let summary = SweepSummary {
        started: Some(started.clone()),
        finished: Some(Time(finished)),
        mode: mode_str(mode).into(),
        scanned: progress.scanned,
        deleted: progress.deleted,
        bytes_deleted: progress.bytes_deleted,
        held: progress.held,
        errors: progress.errors + i64::from(outcome.is_err()),
    };
    let fin = finished.as_second();
    let (decided, next_run, patch_extra) = match &outcome {
        Ok(()) => {
            ctx.succeeded(&format!("{key}#sweep"));
            let next = fin + valid.interval.as_secs() as i64;
            (sweep_conditions(mode, &progress), next, json!({"lastSuccess": Time(finished), "inProgress": null}))
        }
        Err(e) => {
            // A sweep stopped by a cap used what one run may use: the next run, which continues
            // after its checkpoint, comes at the policy's interval, whether the bucket is honest
            // but huge or the endpoint hostile (retried sooner, it would cost that again at once).
            let wait =
                if e.is_cap() { valid.interval } else { ctx.backoff(&format!("{key}#sweep")).min(valid.interval) };
            let ckpt = SweepCheckpoint {
                started: Some(started.clone()),
                mode: mode_str(mode).into(),
                generation,
                progress: progress.clone(),
            };
            // Only a sweep that got going has a position worth resuming.
            let in_progress = if progress.scanned > 0 { json!(ckpt) } else { serde_json::Value::Null };
            (
                problem_conditions(e.reason(), &e.to_string()),
                fin + wait.as_secs() as i64,
                json!({"inProgress": in_progress}),
            )
        }
    };
    let merged = conditions::merge(&status.conditions, &decided, generation, finished);
    // The same failure again, with nothing done: counted and logged, but not written again (an
    // unreachable bucket retried with backoff must not keep writing status and Events).
    let repeated = outcome.is_err() && progress.scanned == 0 && {
        let ready = |cs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
            cs.iter().find(|c| c.type_ == conditions::READY).map(|c| (c.reason.clone(), c.message.clone()))
        };
        ready(&merged) == ready(&status.conditions) && status.observed_generation == generation
    };
    let mut patch = json!({
        "observedGeneration": generation,
        "conditions": merged,
        "lastRun": summary,
        "nextRun": time(next_run),
    });
    if let (Some(p), Some(extra)) = (patch.as_object_mut(), patch_extra.as_object()) {
        p.extend(extra.clone());
    }
    policies.last.set(&key, Some((generation, next_run)));
    if !repeated {
        if let Err(e) = patch_status(&ctx, &rp, patch).await {
            tracing::warn!(policy = %key, error = %e, "could not record the sweep in status");
        }
    }
    let counts = super::status::counts(mode, &Progress { errors: summary.errors, ..progress.clone() });
    match &outcome {
        Ok(()) => {
            m.retention_runs.with_label_values(&[&ns, &name, "success"]).inc();
            m.retention_held_objects.with_label_values(&[&ns, &name]).set(progress.held);
            m.retention_last_success.with_label_values(&[&ns, &name]).set(fin as f64);
            tracing::info!(policy = %key, bucket = %rp.spec.target.bucket, mode = mode_str(mode), scanned = summary.scanned, deleted = summary.deleted, bytes = summary.bytes_deleted, held = summary.held, errors = summary.errors, "retention sweep finished");
            run_event(&ctx, rp.as_ref(), false, "Swept", format!("{}: {counts}", mode_str(mode))).await;
        }
        Err(e) => {
            m.retention_runs.with_label_values(&[&ns, &name, "failure"]).inc();
            tracing::warn!(policy = %key, reason = e.reason(), error = %e, scanned = summary.scanned, deleted = summary.deleted, "retention sweep failed");
            if !repeated {
                run_event(&ctx, rp.as_ref(), true, e.reason(), format!("{e}; so far {counts}")).await;
            }
        }
    }
}
