//! The RetentionPolicy controller: validates a policy (its credentials Secret, rules, interval),
//! runs a sweep ([`crate::retention::sweep`]) every `spec.interval` in a task of its own (one at a
//! time per policy; other reconciles are never blocked), and records each run in status, an
//! Event and metrics.
//!
//! [`dereference`] (the operator's Secret rights, the credentials Secret) -> [`validate`] (rules,
//! interval, credentials, parsed once) -> [`sweep`] when due (no child to apply, no pod) -> [`status`].
//!
//! Writes: a reconcile that finds nothing due writes nothing. A sweep writes a checkpoint at
//! most every [`sweep::CHECKPOINT_EVERY`] while it runs, and its result once when it ends.
//!
//! Bounds: a due sweep starts only with one of the operator's [`slots`] (at most
//! `--retention-max-concurrent-sweeps` at once, half of them at most for one namespace); a policy
//! without one is requeued, and woken when one is released. Each sweep is bounded in pages, time
//! and answer size ([`crate::retention::limits`]).

pub mod dereference;
pub mod slots;
pub mod status;
pub mod sweep;
pub mod validate;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use crate::api::RetentionPolicy;
use crate::runtime::error::Result;
use crate::runtime::{self, key_of, observe, Context, Memory};

pub use slots::Slots;
pub use sweep::CHECKPOINT_EVERY;
pub use validate::{missing_credential_keys, validate, Validated};

const CONTROLLER: &str = "retentionpolicy";

/// (generation, next run in Unix seconds) of a policy's last sweep.
pub type LastSweep = (Option<i64>, i64);

/// What the RetentionPolicy controller keeps besides the shared [`Context`], per policy
/// (`namespace/name`). The status is the record that survives a restart; this memory only spares
/// reads and keeps one sweep per policy at a time.
pub struct Policies {
    /// Policies whose sweep task runs now.
    pub running: Memory<()>,
    /// Each policy's last sweep, as its task recorded it: the cached status may predate that write.
    pub last: Memory<LastSweep>,
    /// The sweeps that may run at once, across all policies.
    pub slots: Arc<Slots>,
}

impl Policies {
    pub fn new(slots: Slots) -> Policies {
        Policies { running: Memory::default(), last: Memory::default(), slots: Arc::new(slots) }
    }
}

/// The controller future.
pub fn controller(
    client: Client,
    ctx: Arc<Context>,
    platform: futures::stream::BoxStream<
        'static,
        std::result::Result<crate::api::VisioPlatform, kube::runtime::watcher::Error>,
    >,
) -> impl std::future::Future<Output = ()> {
    let (wake, woken) = futures::channel::mpsc::unbounded::<String>();
    let slots =
        Slots::new(ctx.config.retention.max_concurrent_sweeps, Some(ctx.metrics.retention_sweeps.clone()), Some(wake));
    let policies = Arc::new(Policies::new(slots));
    let woken = woken.filter_map(|key| {
        futures::future::ready(key.split_once('/').map(|(ns, name)| ObjectRef::<RetentionPolicy>::new(name).within(ns)))
    });
    let controller = runtime::lenient_controller::<RetentionPolicy>(&client, runtime::watch_config(), &ctx.config);
    let every_policy = controller.store();
    controller
        .reconcile_on(woken)
        // The platform's rules changed: every policy is checked again.
        .watches_stream(platform, move |_| {
            every_policy.state().iter().map(|rp| ObjectRef::from_obj(rp.as_ref())).collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(
            move |rp, ctx| {
                let policies = policies.clone();
                async move { reconcile(rp, ctx, policies).await }
            },
            runtime::error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
}

async fn reconcile(rp: Arc<RetentionPolicy>, ctx: Arc<Context>, policies: Arc<Policies>) -> Result<Action> {
    let started = Instant::now();
    let key = key_of(rp.as_ref());
    if rp.metadata.deletion_timestamp.is_some() {
        ctx.metrics.forget_policy(&rp.namespace().unwrap_or_default(), &rp.name_any());
        policies.last.forget(&key);
        return Ok(Action::await_change());
    }
    let result = runtime::bounded(reconcile_policy(rp, &ctx, &policies, &key)).await;
    observe(&ctx, CONTROLLER, &key, started, &result.as_ref().map(|_| ()));
    result
}

/// The steps, top to bottom.
async fn reconcile_policy(
    rp: Arc<RetentionPolicy>,
    ctx: &Arc<Context>,
    policies: &Arc<Policies>,
    key: &str,
) -> Result<Action> {
    status::export_last_success(ctx, &rp);
    // A sweep runs: it records its own end.
    if policies.running.get(key).is_some() {
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    if !ctx.platform.ready() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // The platform's rules first: a policy outside them reads no Secret and sweeps nothing.
    let platform = match validate::platform(&rp, &ctx.platform.rules()) {
        Ok(p) => p,
        Err((reason, message)) => return status::report_problem(&rp, ctx, reason, &message).await,
    };
    let now = Timestamp::now().as_second();
    let last = policies.last.get(key);
    let due = sweep::due(&rp, last, now);
    // A due sweep needs a slot first: a policy waiting for one costs no read and no write.
    let slot = if due {
        match policies.slots.try_take(key, &rp.namespace().unwrap_or_default(), Instant::now()) {
            Ok(slot) => Some(slot),
            Err(waiting) => {
                if waiting.first {
                    tracing::info!(policy = %key, running = waiting.running, "retention sweep due: waiting for a slot (--retention-max-concurrent-sweeps)");
                }
                return Ok(Action::requeue(slots::WAIT_REQUEUE));
            }
        }
    } else {
        None
    };
    let Some(secret) = dereference::dereference(&rp, ctx).await? else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let valid = match validate::validate(&rp, secret.as_ref(), platform.as_ref()) {
        Ok(v) => v,
        Err((reason, message)) => return status::report_problem(&rp, ctx, reason, &message).await,
    };
    status::export_interval(ctx, &rp, &valid);
    let Some(slot) = slot else {
        let next = last
            .map(|l| l.1)
            .or(rp.status.as_ref().and_then(|s| s.next_run.as_ref()).map(|t| t.0.as_second()))
            .unwrap_or(now + 60);
        return Ok(Action::requeue(Duration::from_secs((next - now).clamp(1, 3600) as u64)));
    };
    sweep::spawn(rp, ctx.clone(), policies.clone(), valid, slot);
    Ok(Action::requeue(Duration::from_secs(60)))
}
