//! The RetentionPolicy controller: validates a policy (its credentials Secret, rules, interval),
//! runs a sweep ([`crate::retention::sweep`]) every `spec.interval` in a task of its own (one at a
//! time per policy; other reconciles are never blocked), and records each run in status, an
//! Event and metrics.
//!
//! Writes: a reconcile that finds nothing due writes nothing. A sweep writes a checkpoint at
//! most every [`CHECKPOINT_EVERY`] while it runs, and its result once when it ends.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::conditions::{self, Decided};
use super::error::Result;
use super::{key_of, observe, Context};
use crate::api::retentionpolicy::{RetentionMode, SweepCheckpoint, SweepSummary};
use crate::api::RetentionPolicy;
use crate::builders::labels::FIELD_MANAGER;
use crate::retention::decide::{self, Rule};
use crate::retention::sweep::{self, Progress, S3Credentials, SweepError, Sweeper};

const CONTROLLER: &str = "retentionpolicy";
/// How often a running sweep saves where it is.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// Policies whose sweep runs now (in this process).
static RUNNING: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
/// What the last sweep of a policy left (generation it ran, next run in Unix seconds): the
/// reconcile that follows a sweep may still see the policy as it was before the sweep's status
/// write, and must not start another sweep because of that.
static LAST: LazyLock<Mutex<HashMap<String, LastSweep>>> = LazyLock::new(Default::default);

/// The generation a sweep ran and its next run (Unix seconds).
type LastSweep = (Option<i64>, i64);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes its policy from [`RUNNING`] when the sweep task ends, however it ends.
struct RunGuard(String);
impl Drop for RunGuard {
    fn drop(&mut self) {
        lock(&RUNNING).remove(&self.0);
    }
}

pub fn controller(client: Client, ctx: Arc<Context>) -> impl std::future::Future<Output = ()> {
    // Lenient watch: one stored policy we cannot read must not stop the others.
    super::lenient_controller::<RetentionPolicy>(&client, super::watch_config(), &ctx.config)
        .shutdown_on_signal()
        .run(reconcile, super::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
}

/// Which of the credentials Secret's required keys are missing (`None`: the Secret itself is missing).
pub fn missing_credential_keys(secret: Option<&Secret>) -> Option<Vec<&'static str>> {
    let data = secret?.data.clone().unwrap_or_default();
    Some(
        ["accessKeyId", "secretAccessKey"]
            .into_iter()
            .filter(|k| data.get(*k).is_none_or(|v| v.0.is_empty()))
            .collect(),
    )
}

/// The access keys in the Secret (`None` when a key is missing or not UTF-8).
fn credentials_of(secret: &Secret) -> Option<S3Credentials> {
    let data = secret.data.as_ref()?;
    let get = |k: &str| data.get(k).and_then(|v| String::from_utf8(v.0.clone()).ok()).filter(|s| !s.is_empty());
    Some(S3Credentials {
        access_key_id: get("accessKeyId")?.trim().to_string(),
        secret_access_key: get("secretAccessKey")?.trim().to_string(),
    })
}

/// A valid policy, ready to sweep.
#[derive(Debug)]
pub struct Valid {
    pub rules: Vec<Rule>,
    pub interval: Duration,
}

/// Validates a policy (pure): its rules, interval and credentials Secret. The error is the
/// `(reason, message)` of the conditions, with the message naming the field.
pub fn validate(
    rp: &RetentionPolicy,
    missing: Option<Vec<&'static str>>,
) -> std::result::Result<Valid, (&'static str, String)> {
    let rules = decide::compile(&rp.spec.rules).map_err(|m| ("InvalidSpec", m))?;
    let interval = crate::duration::parse(&rp.spec.interval)
        .map_err(|e| ("InvalidSpec", format!("spec.interval: {e}")))
        .and_then(|d| {
            if d < Duration::from_secs(60) {
                Err(("InvalidSpec", format!("spec.interval: {:?} is shorter than the 1m minimum", rp.spec.interval)))
            } else {
                Ok(d)
            }
        })?;
    let secret = &rp.spec.target.credentials_secret;
    match missing {
        None => Err(("CredentialsNotFound", format!("spec.target.credentialsSecret: Secret {secret:?} not found"))),
        Some(keys) if !keys.is_empty() => Err((
            "CredentialsInvalid",
            format!("spec.target.credentialsSecret: Secret {secret:?} lacks {}", keys.join(", ")),
        )),
        Some(_) => Ok(Valid { rules, interval }),
    }
}

/// The conditions for a problem (pure).
pub fn problem_conditions(reason: &str, message: &str) -> Vec<Decided> {
    vec![
        Decided::new(conditions::READY, false, reason, message),
        Decided::new(conditions::DEGRADED, true, reason, message),
    ]
}

/// The conditions after a finished sweep (pure).
pub fn sweep_conditions(mode: RetentionMode, p: &Progress) -> Vec<Decided> {
    let what = match mode {
        RetentionMode::Enforce => "deleted",
        RetentionMode::DryRun => "would delete (DryRun)",
    };
    let summary = format!(
        "last sweep: {} objects scanned, {} {what} ({} bytes), {} on legal hold, {} errors",
        p.scanned, p.deleted, p.bytes_deleted, p.held, p.errors
    );
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
    ]
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

fn mode_str(m: RetentionMode) -> &'static str {
    match m {
        RetentionMode::Enforce => "Enforce",
        RetentionMode::DryRun => "DryRun",
    }
}

fn time(secs: i64) -> Option<Time> {
    Timestamp::from_second(secs).ok().map(Time)
}

async fn reconcile(rp: Arc<RetentionPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let key = key_of(rp.as_ref());
    if rp.metadata.deletion_timestamp.is_some() {
        ctx.metrics.forget_policy(&rp.namespace().unwrap_or_default(), &rp.name_any());
        lock(&LAST).remove(&key);
        return Ok(Action::await_change());
    }
    let result = super::bounded(reconcile_policy(rp, &ctx, &key)).await;
    observe(&ctx, CONTROLLER, &key, started, &result.as_ref().map(|_| ()));
    result
}

async fn reconcile_policy(rp: Arc<RetentionPolicy>, ctx: &Arc<Context>, key: &str) -> Result<Action> {
    let ns = rp.namespace().unwrap_or_default();
    let name = rp.name_any();
    let m = &ctx.metrics;
    m.init_policy(&ns, &name);
    let status = rp.status.clone().unwrap_or_default();
    // Until the first success, the creation time: a policy that never succeeds becomes overdue.
    let last_success = status
        .last_success
        .as_ref()
        .or(rp.metadata.creation_timestamp.as_ref())
        .map(|t| t.0.as_second() as f64)
        .unwrap_or(0.0);
    m.retention_last_success.with_label_values(&[&ns, &name]).set(last_success);

    if lock(&RUNNING).contains(key) {
        // The running sweep writes its result, which triggers the next reconcile.
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    // Our right to read the credentials, in this namespace only, before reading them.
    if let Some(me) = &ctx.operator {
        if !super::secrets::ensure_rights(ctx, secrets_binding(&rp, me)).await? {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = secrets.get_opt(&rp.spec.target.credentials_secret).await?;
    let valid = validate(&rp, missing_credential_keys(secret.as_ref()));
    let creds = secret.as_ref().and_then(credentials_of);
    let (valid, creds) = match (valid, creds) {
        (Ok(v), Some(c)) => (v, c),
        (Err((reason, msg)), _) => return report_problem(&rp, ctx, reason, &msg).await,
        (Ok(_), None) => {
            let msg = format!(
                "spec.target.credentialsSecret: Secret {:?} has keys that are not UTF-8 text",
                rp.spec.target.credentials_secret
            );
            return report_problem(&rp, ctx, "CredentialsInvalid", &msg).await;
        }
    };
    m.retention_interval.with_label_values(&[&ns, &name]).set(valid.interval.as_secs_f64());

    let now = Timestamp::now().as_second();
    let last = lock(&LAST).get(key).copied();
    if !due(&rp, last, now) {
        let next = last.map(|l| l.1).or(status.next_run.map(|t| t.0.as_second())).unwrap_or(now + 60);
        return Ok(Action::requeue(Duration::from_secs((next - now).clamp(1, 3600) as u64)));
    }
    {
        let mut running = lock(&RUNNING);
        if !running.insert(key.to_string()) {
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
    }
    let guard = RunGuard(key.to_string());
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _guard = guard;
        run_sweep(rp, ctx, valid, creds).await;
    });
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// Writes the conditions of a spec or Secret problem (only when they change) and waits.
async fn report_problem(rp: &RetentionPolicy, ctx: &Context, reason: &str, msg: &str) -> Result<Action> {
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
async fn run_event(ctx: &Context, rp: &RetentionPolicy, warning: bool, reason: &str, note: String) {
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
async fn patch_status(ctx: &Context, rp: &RetentionPolicy, status: serde_json::Value) -> Result<()> {
    let api: Api<RetentionPolicy> = Api::namespaced(ctx.client.clone(), &rp.namespace().unwrap_or_default());
    api.patch_status(&rp.name_any(), &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(&json!({"status": status})))
        .await?;
    ctx.metrics.child_writes.with_label_values(&["RetentionPolicy", "status"]).inc();
    Ok(())
}

/// One sweep, start to end, then its record (status, Event, metrics). Never panics; errors are
/// reported, and the checkpoint is kept so the retry continues where this run stopped.
async fn run_sweep(rp: Arc<RetentionPolicy>, ctx: Arc<Context>, valid: Valid, creds: S3Credentials) {
    let ns = rp.namespace().unwrap_or_default();
    let name = rp.name_any();
    let key = key_of(rp.as_ref());
    let generation = rp.metadata.generation;
    let mode = rp.spec.mode;
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
        let client = sweep::client(&rp.spec.target, &creds);
        let mut s = Sweeper::start(
            client,
            &rp.spec.target,
            valid.rules,
            &rp.spec.legal_hold,
            mode,
            crate::retention::now_secs(),
            resume,
        )
        .await?;
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
            let wait = ctx.backoff(&format!("{key}#sweep")).min(valid.interval);
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
    lock(&LAST).insert(key.clone(), (generation, next_run));
    if !repeated {
        if let Err(e) = patch_status(&ctx, &rp, patch).await {
            tracing::warn!(policy = %key, error = %e, "could not record the sweep in status");
        }
    }
    let what = match mode {
        RetentionMode::Enforce => "deleted",
        RetentionMode::DryRun => "would delete (DryRun)",
    };
    let counts = format!(
        "{} objects scanned, {} {what} ({} bytes), {} on legal hold, {} errors",
        summary.scanned, summary.deleted, summary.bytes_deleted, summary.held, summary.errors
    );
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

/// `<policy>-retention-secrets`: the operator's Secret rights in the policy's namespace, owned by the
/// policy (a namespace may hold a RetentionPolicy and no VisioCluster).
fn secrets_binding(
    rp: &RetentionPolicy,
    operator: &k8s_openapi::api::rbac::v1::Subject,
) -> k8s_openapi::api::rbac::v1::RoleBinding {
    use crate::builders::labels::{
        COMPONENT_LABEL, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, PART_OF, PART_OF_LABEL,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let name = rp.name_any();
    let meta = ObjectMeta {
        name: Some(format!("{name}-retention-secrets")),
        namespace: rp.namespace(),
        labels: Some(
            [
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (PART_OF_LABEL.to_string(), PART_OF.to_string()),
                (INSTANCE_LABEL.to_string(), name.clone()),
                (COMPONENT_LABEL.to_string(), "retention".to_string()),
            ]
            .into(),
        ),
        owner_references: kube::Resource::controller_owner_ref(rp, &()).map(|r| vec![r]),
        ..Default::default()
    };
    crate::builders::tenant::secrets_binding(meta, operator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn policy() -> RetentionPolicy {
        serde_json::from_value(json!({"apiVersion": "visio.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": "meetings", "namespace": "minsante", "generation": 2},
            "spec": {"mode": "DryRun", "target": {"endpoint": "https://s3.example", "bucket": "meet", "credentialsSecret": "s3"},
                     "rules": [{"dataClass": "recordings", "prefix": "recordings/", "maxAge": "720h"}]}}))
        .unwrap()
    }

    #[test]
    fn missing_and_incomplete_credentials_are_named() {
        assert_eq!(missing_credential_keys(None), None);
        let (reason, msg) = validate(&policy(), None).unwrap_err();
        assert_eq!(reason, "CredentialsNotFound");
        assert!(msg.contains("spec.target.credentialsSecret"));
        let s = Secret {
            data: Some([("accessKeyId".to_string(), ByteString(b"x".to_vec()))].into()),
            ..Default::default()
        };
        let missing = missing_credential_keys(Some(&s));
        assert_eq!(missing, Some(vec!["secretAccessKey"]));
        assert_eq!(validate(&policy(), missing).unwrap_err().0, "CredentialsInvalid");
        assert!(credentials_of(&s).is_none());
    }

    #[test]
    fn malformed_durations_are_named() {
        let mut p = policy();
        p.spec.rules[0].max_age = "thirty days".into();
        let (reason, msg) = validate(&p, Some(vec![])).unwrap_err();
        assert_eq!(reason, "InvalidSpec");
        assert!(msg.starts_with("spec.rules[recordings/].maxAge: "), "{msg}");
        let mut p = policy();
        p.spec.interval = "soon".into();
        assert!(validate(&p, Some(vec![])).unwrap_err().1.starts_with("spec.interval: "));
        let v = validate(&policy(), Some(vec![])).unwrap();
        assert_eq!(v.interval, Duration::from_secs(3600));
    }

    #[test]
    fn due_follows_generation_schedule_and_checkpoint() {
        let mut p = policy();
        assert!(due(&p, None, 100), "never swept");
        p.status = Some(crate::api::RetentionPolicyStatus {
            observed_generation: Some(2),
            last_run: Some(SweepSummary::default()),
            next_run: time(200),
            ..Default::default()
        });
        assert!(!due(&p, None, 100));
        assert!(due(&p, None, 200));
        p.metadata.generation = Some(3);
        assert!(due(&p, None, 100), "spec changed");
        p.metadata.generation = Some(2);
        p.status.as_mut().unwrap().in_progress = Some(SweepCheckpoint::default());
        assert!(due(&p, None, 100), "an interrupted sweep resumes");
        // This process's memory wins over a status it may not have seen written yet.
        assert!(!due(&p, Some((Some(2), 500)), 100));
        assert!(due(&p, Some((Some(1), 500)), 100));
    }

    #[test]
    fn sweep_conditions_report_counts() {
        let p = Progress { scanned: 10, deleted: 3, bytes_deleted: 30, held: 1, errors: 0, start_after: None };
        let d = sweep_conditions(RetentionMode::DryRun, &p);
        assert!(d[0].status && d[0].message.contains("3 would delete (DryRun)"), "{}", d[0].message);
        assert!(!d[1].status);
        let d = sweep_conditions(RetentionMode::Enforce, &Progress { errors: 2, ..p });
        assert!(d[1].status && d[1].reason == "ObjectsUnchecked");
    }
}
