//! Step 4: the status, Events and metrics of a policy: problems found by validation, and each sweep's
//! record (written by the sweep's task).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::validate::Validated;
use crate::api::retentionpolicy::RetentionMode;
use crate::api::RetentionPolicy;
use crate::builders::labels::FIELD_MANAGER;
use crate::retention::sweep::Progress;
use crate::runtime::conditions::{self, Convergence, Decided};
use crate::runtime::error::Result;
use crate::runtime::Context;

/// `visio_retention_last_success_timestamp_seconds`: the last success, until the first one the creation
/// time (a policy that never succeeds becomes overdue).
pub fn export_last_success(ctx: &Context, rp: &RetentionPolicy) {
    let (ns, name) = (rp.namespace().unwrap_or_default(), rp.name_any());
    ctx.metrics.init_policy(&ns, &name);
    let last_success = rp
        .status
        .as_ref()
        .and_then(|s| s.last_success.as_ref())
        .or(rp.metadata.creation_timestamp.as_ref())
        .map(|t| t.0.as_second() as f64)
        .unwrap_or(0.0);
    ctx.metrics.retention_last_success.with_label_values(&[&ns, &name]).set(last_success);
}

/// The policy's interval, for the overdue alert.
pub fn export_interval(ctx: &Context, rp: &RetentionPolicy, valid: &Validated) {
    let (ns, name) = (rp.namespace().unwrap_or_default(), rp.name_any());
    ctx.metrics.retention_interval.with_label_values(&[&ns, &name]).set(valid.interval.as_secs_f64());
}

/// The conditions for a problem (pure): a spec or Secret the sweep cannot use, or a sweep that failed.
/// kstatus reads both as Failed (`Stalled`: the controller met an error); a failed sweep is retried,
/// and its success sets `Stalled=False` again.
pub fn problem_conditions(reason: &str, message: &str) -> Vec<Decided> {
    let mut out = vec![
        Decided::new(conditions::READY, false, reason, message),
        Decided::new(conditions::DEGRADED, true, reason, message),
    ];
    out.extend(conditions::convergence(&Convergence::Stalled(reason.into(), message.into())));
    out
}

/// A sweep's counts as the status, its Event and its log say them.
pub fn counts(mode: RetentionMode, p: &Progress) -> String {
    let what = match mode {
        RetentionMode::Enforce => "deleted",
        RetentionMode::DryRun => "would delete (DryRun)",
    };
    format!(
        "{} objects scanned, {} {what} ({} bytes), {} on legal hold, {} errors",
        p.scanned, p.deleted, p.bytes_deleted, p.held, p.errors
    )
}

/// The conditions after a finished sweep (pure).
pub fn sweep_conditions(mode: RetentionMode, p: &Progress) -> Vec<Decided> {
    let summary = format!("last sweep: {}", counts(mode, p));
    vec![
        Decided::new(conditions::READY, true, "Swept", summary.clone()),
        if p.errors > 0 {
            Decided::new(
                conditions::DEGRADED,
                true,
                "ObjectsUnchecked",
                format!(
                    "{} objects were kept because their age or legal hold could not be checked; {summary}",
                    p.errors
                ),
            )
        } else {
            Decided::new(conditions::DEGRADED, false, "AsExpected", "no problem detected")
        },
        // kstatus: a policy is Current once the sweep of its generation has recorded its end (until
        // then `observedGeneration` lags and kstatus reads InProgress); objects left unchecked are
        // Degraded, retried next run, not a spec that cannot converge.
        conditions::convergence(&Convergence::Current)[0].clone(),
        conditions::convergence(&Convergence::Current)[1].clone(),
    ]
}

/// Writes the conditions of a spec or Secret problem (only when they change) and waits.
pub async fn report_problem(rp: &RetentionPolicy, ctx: &Context, reason: &str, msg: &str) -> Result<Action> {
    let decided = problem_conditions(reason, msg);
    let status = rp.status.clone().unwrap_or_default();
    let merged = conditions::merge(&status.conditions, &decided, rp.metadata.generation, Timestamp::now());
    if merged != status.conditions || status.observed_generation != rp.metadata.generation {
        // The Event goes first: a failed status write brings it again; the other order could lose it.
        ctx.event(rp, EventType::Warning, reason, "Validate", msg.to_string()).await;
        patch_status(
            ctx,
            rp,
            json!({"observedGeneration": rp.metadata.generation, "conditions": merged, "nextRun": null}),
        )
        .await?;
    }
    // The Secret is not watched: look again now and then.
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// Publishes one Event for one sweep. Not through the shared Recorder: it folds Events with the
/// same reason and action into one series that keeps the first note, and each run's summary must
/// stay readable. Failing to publish is logged, never fatal.
pub async fn run_event(ctx: &Context, rp: &RetentionPolicy, warning: bool, reason: &str, note: String) {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use kube::Resource;
    let ns = rp.namespace().unwrap_or_default();
    let ev = K8sEvent {
        metadata: ObjectMeta {
            // `<policy>.<time in ns, hex>`, as kube's own event names (a generateName must not end in `.`).
            name: Some(format!("{}.{:x}", rp.name_any(), Timestamp::now().as_nanosecond())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        action: Some("Sweep".into()),
        reason: Some(reason.into()),
        // The API limits a note to 1 kB.
        note: Some(note.chars().take(1000).collect()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        event_time: Some(MicroTime(Timestamp::now())),
        regarding: Some(rp.object_ref(&())),
        reporting_controller: Some("visio-operator".into()),
        reporting_instance: Some(ctx.config.instance.clone()),
        ..Default::default()
    };
    let api: Api<K8sEvent> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(e) = api.create(&kube::api::PostParams::default(), &ev).await {
        tracing::warn!(error = %e, reason, "could not publish the sweep event");
    }
}

/// A JSON merge patch of the status (so fields not named stay as they are, and `null` removes).
pub async fn patch_status(ctx: &Context, rp: &RetentionPolicy, status: serde_json::Value) -> Result<()> {
    let api: Api<RetentionPolicy> = Api::namespaced(ctx.client.clone(), &rp.namespace().unwrap_or_default());
    api.patch_status(&rp.name_any(), &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(&json!({"status": status})))
        .await?;
    ctx.metrics.child_writes.with_label_values(&["RetentionPolicy", "status"]).inc();
    Ok(())
}
