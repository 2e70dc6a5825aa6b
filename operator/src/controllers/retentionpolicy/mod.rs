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

pub mod dereference;
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
use kube::{Client, ResourceExt};

use crate::api::RetentionPolicy;
use crate::runtime::error::Result;
use crate::runtime::{self, key_of, observe, Context, Memory};

pub use sweep::CHECKPOINT_EVERY;
pub use validate::{missing_credential_keys, validate, Validated};

const CONTROLLER: &str = "retentionpolicy";

/// (generation, next run in Unix seconds) of a policy's last sweep.
pub type LastSweep = (Option<i64>, i64);

/// What the RetentionPolicy controller keeps besides the shared [`Context`], per policy
/// (`namespace/name`). The status is the record that survives a restart; this memory only spares
/// reads and keeps one sweep per policy at a time.
#[derive(Default)]
pub struct Policies {
    /// Policies whose sweep task runs now.
    pub running: Memory<()>,
    /// Each policy's last sweep, as its task recorded it: the cached status may predate that write.
    pub last: Memory<LastSweep>,
}

/// The controller future.
pub fn controller(client: Client, ctx: Arc<Context>) -> impl std::future::Future<Output = ()> {
    let policies = Arc::new(Policies::default());
    runtime::lenient_controller::<RetentionPolicy>(&client, runtime::watch_config(), &ctx.config)
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
    let Some(secret) = dereference::dereference(&rp, ctx).await? else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let valid = match validate::validate(&rp, secret.as_ref()) {
        Ok(v) => v,
        Err((reason, message)) => return status::report_problem(&rp, ctx, reason, &message).await,
    };
    status::export_interval(ctx, &rp, &valid);
    let now = Timestamp::now().as_second();
    let last = policies.last.get(key);
    if !sweep::due(&rp, last, now) {
        let next = last
            .map(|l| l.1)
            .or(rp.status.as_ref().and_then(|s| s.next_run.as_ref()).map(|t| t.0.as_second()))
            .unwrap_or(now + 60);
        return Ok(Action::requeue(Duration::from_secs((next - now).clamp(1, 3600) as u64)));
    }
    sweep::spawn(rp, ctx.clone(), policies.clone(), valid);
    Ok(Action::requeue(Duration::from_secs(60)))
}
