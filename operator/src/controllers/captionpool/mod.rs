//! The CaptionPool controller: the speech-to-text backend pool and the transcriber workers of one
//! VisioCluster.
//!
//! [`dereference`] (the VisioCluster, the pool's API key) -> [`validate`] (both planners' specs, parsed
//! once) -> [`workers`] (how many transcriber workers, `fleet::workers`) -> build (`builders::captions`)
//! -> [`apply`] (every child, then the orphans) -> [`pods`] (`fleet::plan` over the backend pods,
//! capacity in slots) -> [`status`].
//!
//! The backend pool is planned by the SFU fleet's planner: load = used slots (open streams), capacity per
//! pod = `spec.backend.slotsPerPod`, target utilisation = `targetOccupancyPercent`, buffer = `slotBuffer`.
//! Scale-down and upgrades drain (the pod leaves the backend Service, its streams go on) and delete a pod
//! only once it reports no stream, or at `spec.backend.drainTimeout`.
//!
//! The transcriber workers are a Deployment whose replica count follows their active jobs
//! ([`crate::fleet::workers`]): each worker's agent reports its jobs and sets its pod's deletion cost to
//! them, and a removed worker drains by itself (SIGTERM, then up to its grace period).

pub mod apply;
pub mod dereference;
pub mod pods;
pub mod status;
pub mod validate;
pub mod workers;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::Instrument;

use crate::api::captionpool::CaptionPool;
use crate::api::VisioCluster;
use crate::builders::captions::{self, build_captions, CaptionInputs, BACKEND_COMPONENT};
use crate::builders::labels::{COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
use crate::runtime::error::Result;
use crate::runtime::{self, key_of, observe, Context, Memory};

pub use validate::{fleet_spec, reference_problem, worker_spec, Validated};

const CONTROLLER: &str = "captionpool";

/// What the controller remembers about one pool between reconciles (in memory: a restart forgets it).
#[derive(Clone, Debug, Default)]
pub struct PoolMemory {
    /// Each backend pod's rejection counter as last seen (by pod UID).
    pub rejected_seen: HashMap<String, u32>,
    /// When a rejection was last seen.
    pub last_rejection_ms: Option<i64>,
    /// The `status.slots.rejected` this process last computed, with the pool's UID: the pool in the
    /// cache may predate that status write, and adding new rejections to its older total would lose them.
    pub rejected_total: Option<(String, i64)>,
    /// The transcriber replicas last decided: the Deployment in the cache may not show them yet, and
    /// planning from the older count would undo a scale-down.
    pub transcriber_replicas: Option<u32>,
}

/// What the CaptionPool controller keeps besides the shared [`Context`].
pub struct Pools {
    /// The backend and transcriber pods (a cache of the controller's own, see [`controller`]).
    pub pods: Store<Pod>,
    /// Per pool, keyed `namespace/name`.
    pub memory: Memory<PoolMemory>,
}

/// The controller future. `cordons`: Nodes whose cordon changed (`nodes::CordonChanges`).
pub fn controller(
    client: Client,
    ctx: Arc<Context>,
    cordons: futures::stream::BoxStream<'static, std::result::Result<k8s_openapi::api::core::v1::Node, watcher::Error>>,
    platform: futures::stream::BoxStream<'static, std::result::Result<crate::api::VisioPlatform, watcher::Error>>,
) -> impl std::future::Future<Output = ()> {
    // Lenient watches: one stored object we cannot read must not stop the others.
    let ctrl = runtime::lenient_controller::<CaptionPool>(&client, runtime::watch_config(), &ctx.config);
    let pools = ctrl.store();
    let clusters = runtime::lenient_watcher::<VisioCluster>(client.clone(), runtime::watch_config())
        .backoff(runtime::WatchBackoff::default())
        .applied_objects();
    // The backend and transcriber pods, in a cache of our own that also triggers the reconciles: a slot or
    // a job taken or freed is a pod event, and the planners must read the pod the event was about.
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let selector = format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL} in ({BACKEND_COMPONENT},{})",
        captions::TRANSCRIBER_COMPONENT
    );
    let pods = watcher(Api::<Pod>::all(client.clone()), runtime::watch_config().labels(&selector))
        .backoff(runtime::WatchBackoff::default())
        .modify(runtime::trim::Trim::trim)
        .reflect(pod_writer)
        .touched_objects();
    // The transcriber Deployments (their status feeds the pool's); read from the shared cache.
    let transcribers = watcher(
        Api::<Deployment>::all(client.clone()),
        runtime::watch_config()
            .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={}", captions::TRANSCRIBER_COMPONENT)),
    )
    .backoff(runtime::WatchBackoff::default())
    .touched_objects();
    // A RetentionPolicy that appears, changes or goes re-decides the pools of its namespace.
    let policies = runtime::lenient_watcher::<crate::api::RetentionPolicy>(client.clone(), runtime::watch_config())
        .backoff(runtime::WatchBackoff::default())
        .applied_objects();
    let pools_of_ns = ctrl.store();
    let every_pool = ctrl.store();
    // A pool whose VisioCluster appears or goes must be looked at again.
    // By the pool label: a transcriber pod's owner is its ReplicaSet, not the pool.
    let pods_on_node = pod_store.clone();
    let pools_state = Arc::new(Pools { pods: pod_store, memory: Memory::default() });
    ctrl.watches_stream(runtime::without_errors(pods), |pod: Pod| {
        let pool = pod.labels().get(captions::POOL_LABEL)?.clone();
        Some(ObjectRef::<CaptionPool>::new(&pool).within(&pod.namespace()?))
    })
    .owns_stream(runtime::without_errors(transcribers))
    // A node cordoned or uncordoned re-decides the pools with backend pods on it.
    .watches_stream(cordons, move |node| {
        runtime::nodes::owners_on_node(&pods_on_node.state(), &node.name_any(), "CaptionPool")
            .into_iter()
            .map(|(ns, name)| ObjectRef::<CaptionPool>::new(&name).within(&ns))
            .collect::<Vec<_>>()
    })
    .watches_stream(runtime::without_errors(policies), move |rp: crate::api::RetentionPolicy| {
        runtime::watch::in_namespace(&pools_of_ns, rp.namespace())
    })
    .watches_stream(runtime::without_errors(clusters), move |vc| {
        pools
            .state()
            .into_iter()
            .filter(|cp| cp.namespace() == vc.namespace() && cp.spec.cluster_ref.name == vc.name_any())
            .map(|cp| ObjectRef::from_obj(cp.as_ref()))
            .collect::<Vec<_>>()
    })
    // The platform's rules changed: every pool is checked again.
    .watches_stream(platform, move |_| {
        every_pool.state().iter().map(|cp| ObjectRef::from_obj(cp.as_ref())).collect::<Vec<_>>()
    })
    .shutdown_on_signal()
    .run(
        move |cp, ctx| {
            let pools = pools_state.clone();
            async move { reconcile(cp, ctx, pools).await }
        },
        runtime::error_policy,
        ctx,
    )
    .for_each(|_| futures::future::ready(()))
}

async fn reconcile(cp: Arc<CaptionPool>, ctx: Arc<Context>, pools: Arc<Pools>) -> Result<Action> {
    let started = Instant::now();
    let key = key_of(cp.as_ref());
    if cp.meta().deletion_timestamp.is_some() {
        ctx.metrics.forget_pool(&cp.namespace().unwrap_or_default(), &cp.name_any());
        forget(&ctx, &pools, &key);
        return Ok(Action::await_change());
    }
    let span =
        tracing::info_span!("reconcile", controller = CONTROLLER, object = %key, generation = cp.metadata.generation);
    let result = runtime::bounded(reconcile_pool(&cp, &ctx, &pools).instrument(span)).await;
    observe(&ctx, CONTROLLER, &key, started, &result.as_ref().map(|_| ()));
    match result {
        Err(e) if e.is_permanent() => {
            let reason = match e.label() {
                "invalid_duration" => "InvalidDuration",
                "missing_credentials" => "MissingCredentials",
                "conflict" => "Conflict",
                "platform_rule" => "PlatformRule",
                _ => "InvalidSpec",
            };
            status::report_problem(&cp, &ctx, reason, e.to_string()).await?;
            Ok(Action::requeue(Duration::from_secs(300)))
        }
        other => other,
    }
}

/// The steps, top to bottom.
async fn reconcile_pool(cp: &CaptionPool, ctx: &Context, pools: &Pools) -> Result<Action> {
    if !runtime::children::caches_ready(ctx).await || !pods_ready(&pools.pods).await {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // The platform's rules before anything is read or written: a pool outside them gets nothing.
    if !ctx.platform.ready() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let namespace = cp.namespace().unwrap_or_default();
    runtime::platform::check(&ctx.platform.rules(), &namespace, &cp.spec, crate::platform::check_pool)?;
    let refs = match dereference::dereference(cp, ctx).await? {
        dereference::Outcome::Ready(refs) => refs,
        dereference::Outcome::Problem { reason, message } => {
            status::report_problem(cp, ctx, reason, message).await?;
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
        dereference::Outcome::Wait(wait) => return Ok(Action::requeue(wait)),
    };
    let valid = validate::validate(cp, refs)?;
    let observed = workers::observe(cp, &pools.pods);
    let workers = workers::plan(ctx, pools, cp, &valid, &observed);
    let inputs = CaptionInputs {
        api_key: &valid.api_key,
        livekit_keys_secret: &valid.livekit_keys_secret,
        agent_image: &ctx.config.agent_image,
        transcriber_replicas: i32::try_from(workers.plan.replicas).unwrap_or(i32::MAX),
    };
    let stack = build_captions(cp, &inputs)?;
    apply::children(&stack, ctx)?.apply(ctx, cp).await?;
    let backends = pods::reconcile(ctx, cp, &valid, &stack, &observed).await?;
    workers::announce(ctx, cp, &workers).await;
    let status_wait = status::update(ctx, pools, cp, &stack, &observed, &backends, &workers).await?;
    let requeue = match (backends.plan.requeue_after_ms, workers.plan.requeue_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let requeue = requeue.map(|ms| Duration::from_millis(ms.clamp(1000, 600_000) as u64));
    let stuck = !status::unschedulable(&observed.backends).is_empty();
    let requeue = if stuck { Some(requeue.unwrap_or(Duration::MAX).min(Duration::from_secs(30))) } else { requeue };
    let requeue = [requeue, status_wait].into_iter().flatten().min();
    Ok(Action::requeue(requeue.unwrap_or(Duration::from_secs(600))))
}

fn forget(ctx: &Context, pools: &Pools, key: &str) {
    pools.memory.forget(key);
    ctx.low_load_since.forget(&fleet_key(key));
    ctx.ready_seen.forget(&fleet_key(key));
    ctx.created.forget(&fleet_key(key));
    ctx.startups.forget(&fleet_key(key));
    ctx.low_load_since.forget(&workers::memory_key(key));
}

/// The key of the backend fleet in the planner's memories.
fn fleet_key(key: &str) -> String {
    format!("CaptionPool/{key}")
}

/// Waits (10 s at most) for the pool pods' cache to hold its first full list.
async fn pods_ready(pods: &Store<Pod>) -> bool {
    use futures::FutureExt;
    for _ in 0..100 {
        if pods.wait_until_ready().now_or_never().is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
