//! The CaptionPool controller: the speech-to-text backend pool and the transcriber workers of one
//! VisioCluster.
//!
//! dereference (the VisioCluster, the pool's API key) -> validate + build (`builders::captions`) -> apply
//! (Secrets, agent access, Service, PodDisruptionBudget, transcriber Deployment, orphans) -> fleet
//! (`fleet::plan` over the backend pods, capacity in slots) -> status.
//!
//! The backend pool is planned by the SFU fleet's planner: load = used slots (open streams), capacity per
//! pod = `spec.backend.slotsPerPod`, target utilisation = `targetOccupancyPercent`, buffer = `slotBuffer`.
//! Scale-down and upgrades drain (the pod leaves the backend Service, its streams go on) and delete a pod
//! only once it reports no stream, or at `spec.backend.drainTimeout`.
//!
//! The transcriber workers are a Deployment whose replica count follows their active jobs
//! ([`crate::fleet::workers`]): each worker's agent reports its jobs and sets its pod's deletion cost to
//! them, and a removed worker drains by itself (SIGTERM, then up to its grace period).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use rand::distr::{Alphanumeric, SampleString};
use tracing::Instrument;

use super::apply::{self, is_child_of};
use super::conditions::{self, Decided};
use super::error::{Error, Result};
use super::fleet_pods::{execute, pod_load, remember_low_load, snapshot, sync_pod_labels, PodFleet};
use super::{key_of, observe, Context};
use crate::api::captionpool::{BackendCounts, CaptionPool, CaptionPoolStatus, PodCounts, SlotCounts};
use crate::api::VisioCluster;
use crate::builders::captions::{
    self, backend_name, build_captions, key_secret_name, CaptionInputs, CaptionStack, API_KEY, BACKEND_COMPONENT,
};
use crate::builders::labels::{COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
use crate::fleet::workers::{self, WorkerLoad, WorkerSpec};
use crate::fleet::{self, FleetSpec, PodPhase, Snapshot};

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

/// How long `Degraded` stays `StreamsRejected` after the last rejection seen.
const REJECTION_MEMORY_MS: i64 = 5 * 60 * 1000;

/// The controller future. `cordons`: Nodes whose cordon changed (`nodes::CordonChanges`).
pub fn controller(
    client: Client,
    ctx: Arc<Context>,
    cordons: futures::stream::BoxStream<'static, std::result::Result<k8s_openapi::api::core::v1::Node, watcher::Error>>,
) -> impl std::future::Future<Output = ()> {
    // Lenient watches: one stored object we cannot read must not stop the others.
    let ctrl = super::lenient_controller::<CaptionPool>(&client, super::watch_config(), &ctx.config);
    let pools = ctrl.store();
    let clusters = super::lenient_watcher::<VisioCluster>(client.clone(), super::watch_config())
        .backoff(super::WatchBackoff::default())
        .applied_objects();
    // The backend and transcriber pods, in a cache of our own that also triggers the reconciles: a slot or
    // a job taken or freed is a pod event, and the planners must read the pod the event was about.
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let selector = format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL} in ({BACKEND_COMPONENT},{})",
        captions::TRANSCRIBER_COMPONENT
    );
    let pods = watcher(Api::<Pod>::all(client.clone()), super::watch_config().labels(&selector))
        .backoff(super::WatchBackoff::default())
        .modify(super::trim::Trim::trim)
        .reflect(pod_writer)
        .touched_objects();
    // The transcriber Deployments (their status feeds the pool's); read from the shared cache.
    let transcribers = watcher(
        Api::<Deployment>::all(client.clone()),
        super::watch_config()
            .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={}", captions::TRANSCRIBER_COMPONENT)),
    )
    .backoff(super::WatchBackoff::default())
    .touched_objects();
    // A RetentionPolicy that appears, changes or goes re-decides the pools of its namespace.
    let policies = super::lenient_watcher::<crate::api::RetentionPolicy>(client.clone(), super::watch_config())
        .backoff(super::WatchBackoff::default())
        .applied_objects();
    let pools_of_ns = ctrl.store();
    // A pool whose VisioCluster appears or goes must be looked at again.
    // By the pool label: a transcriber pod's owner is its ReplicaSet, not the pool.
    let pods_on_node = pod_store.clone();
    ctrl.watches_stream(super::without_errors(pods), |pod: Pod| {
        let pool = pod.labels().get(captions::POOL_LABEL)?.clone();
        Some(ObjectRef::<CaptionPool>::new(&pool).within(&pod.namespace()?))
    })
    .owns_stream(super::without_errors(transcribers))
    // A node cordoned or uncordoned re-decides the pools with backend pods on it.
    .watches_stream(cordons, move |node| {
        super::nodes::owners_on_node(&pods_on_node.state(), &node.name_any(), "CaptionPool")
            .into_iter()
            .map(|(ns, name)| ObjectRef::<CaptionPool>::new(&name).within(&ns))
            .collect::<Vec<_>>()
    })
    .watches_stream(super::without_errors(policies), move |rp: crate::api::RetentionPolicy| {
        let ns = rp.namespace();
        pools_of_ns
            .state()
            .into_iter()
            .filter(|cp| cp.namespace() == ns)
            .map(|cp| ObjectRef::from_obj(cp.as_ref()))
            .collect::<Vec<_>>()
    })
    .watches_stream(super::without_errors(clusters), move |vc| {
        pools
            .state()
            .into_iter()
            .filter(|cp| cp.namespace() == vc.namespace() && cp.spec.cluster_ref.name == vc.name_any())
            .map(|cp| ObjectRef::from_obj(cp.as_ref()))
            .collect::<Vec<_>>()
    })
    .shutdown_on_signal()
    .run(
        move |cp, ctx| {
            let pods = pod_store.clone();
            async move { reconcile(cp, ctx, pods).await }
        },
        super::error_policy,
        ctx,
    )
    .for_each(|_| futures::future::ready(()))
}

/// Why the pool cannot be deployed, from the reference checks (pure).
pub fn reference_problem(cp: &CaptionPool, cluster_exists: bool) -> Option<(&'static str, String)> {
    let ns = cp.namespace().unwrap_or_default();
    if let Some(other) = cp.spec.cluster_ref.namespace.as_deref().filter(|n| *n != ns) {
        return Some((
            "CrossNamespaceReference",
            format!(
                "spec.clusterRef.namespace: {other:?} is not this CaptionPool's namespace {ns:?}; a CaptionPool serves \
                 a VisioCluster of its own namespace only"
            ),
        ));
    }
    if !cluster_exists {
        return Some((
            "ClusterNotFound",
            format!("spec.clusterRef.name: VisioCluster {:?} not found in namespace {ns}", cp.spec.cluster_ref.name),
        ));
    }
    None
}

/// The planner's view of the pool's backend spec.
pub fn fleet_spec(cp: &CaptionPool) -> Result<FleetSpec> {
    let b = &cp.spec.backend;
    let drain = super::visiocluster::ms(&b.drain_timeout, "spec.backend.drainTimeout")?;
    Ok(FleetSpec {
        min: b.replicas.min.max(0) as u32,
        max: b.replicas.max.max(0) as u32,
        capacity_per_pod: b.slots_per_pod.max(1) as u32,
        buffer: b.slot_buffer.max(0) as u32,
        target_utilization_percent: b.target_occupancy_percent.clamp(10, 100) as u32,
        scale_down_delay_ms: super::visiocluster::ms(&b.scale_down_delay, "spec.backend.scaleDownDelay")?,
        // One new pod at a time replaces an outdated one, and one outdated pod drains at a time: a backend
        // pod is a GPU, so the surge is what the cluster must have spare during an image upgrade.
        max_surge: 1,
        max_draining: 1,
        drain_timeout_ms: drain,
        // The backends have no channel to warn a stream: no warning before the deadline.
        warn_before_ms: 0,
    })
}

/// The worker planner's view of `spec.transcribers`.
pub fn worker_spec(cp: &CaptionPool) -> Result<WorkerSpec> {
    let t = &cp.spec.transcribers;
    let min = t.replicas.min.max(0) as u32;
    Ok(WorkerSpec {
        min,
        max: (t.replicas.max.max(0) as u32).max(min),
        jobs_per_worker: t.jobs_per_worker.max(1) as u32,
        target_percent: t.target_occupancy_percent.clamp(10, 100) as u32,
        buffer: t.job_buffer.max(0) as u32,
        scale_down_delay_ms: super::visiocluster::ms(&t.scale_down_delay, "spec.transcribers.scaleDownDelay")?,
    })
}

/// The jobs the live transcriber pods report (pods being deleted drain their own jobs and take no new
/// one, so they count for nothing) (pure).
pub fn worker_load(workers: &[Arc<Pod>]) -> WorkerLoad {
    let mut load = WorkerLoad::default();
    for p in workers.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        match pod_load(p) {
            Some(l) => {
                load.jobs += u64::from(l.rooms);
                load.reporting += 1;
            }
            None => load.unknown += 1,
        }
    }
    load
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
    out.push(Decided::new(
        conditions::PROGRESSING,
        progressing,
        if progressing { "Reconciling" } else { "Stable" },
        format!("{} current, {} desired, {} draining, {} updated", b.current, b.desired, b.draining, b.updated),
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
    } else if let Some(m) = stuck_msg {
        Decided::new(conditions::DEGRADED, true, "Unschedulable", m)
    } else {
        Decided::new(conditions::DEGRADED, false, "AsExpected", "no problem detected")
    });
    out
}

async fn reconcile(cp: Arc<CaptionPool>, ctx: Arc<Context>, pods: Store<Pod>) -> Result<Action> {
    let started = Instant::now();
    let key = key_of(cp.as_ref());
    let ns = cp.namespace().unwrap_or_default();
    if cp.meta().deletion_timestamp.is_some() {
        ctx.metrics.forget_pool(&ns, &cp.name_any());
        forget(&ctx, &key);
        return Ok(Action::await_change());
    }
    let span =
        tracing::info_span!("reconcile", controller = CONTROLLER, object = %key, generation = cp.metadata.generation);
    let result = super::bounded(reconcile_pool(&cp, &ctx, &pods).instrument(span)).await;
    observe(&ctx, CONTROLLER, &key, started, &result.as_ref().map(|_| ()));
    match result {
        Ok(action) => Ok(action),
        Err(e) if e.is_permanent() => {
            let reason = match e.label() {
                "invalid_duration" => "InvalidDuration",
                "missing_credentials" => "MissingCredentials",
                "conflict" => "Conflict",
                _ => "InvalidSpec",
            };
            report_problem(&cp, &ctx, reason, e.to_string()).await?;
            Ok(Action::requeue(Duration::from_secs(300)))
        }
        Err(e) => Err(e),
    }
}

/// A spec or reference problem: `Ready=False` and `Degraded=True` with the reason, and an Event when the
/// condition changes.
async fn report_problem(cp: &CaptionPool, ctx: &Context, reason: &str, message: String) -> Result<()> {
    tracing::warn!(object = %key_of(cp), reason, %message, "cannot deploy the caption pool");
    let decided = vec![
        Decided::new(conditions::READY, false, reason, message.clone()),
        Decided::new(conditions::DEGRADED, true, reason, message.clone()),
    ];
    let mut status = cp.status.clone().unwrap_or_default();
    if set_conditions(&mut status, cp, &decided) {
        ctx.event(cp, EventType::Warning, reason, "Validate", message).await;
        write_status(ctx, cp, &status).await?;
    }
    let ready = &ctx.metrics.ready;
    ready.with_label_values(&["CaptionPool", &cp.namespace().unwrap_or_default(), &cp.name_any()]).set(0.0);
    Ok(())
}

fn forget(ctx: &Context, key: &str) {
    ctx.captions.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    remember_low_load(ctx, &fleet_key(key), None);
    remember_low_load(ctx, &format!("{}/transcribers", fleet_key(key)), None);
}

fn fleet_key(key: &str) -> String {
    format!("CaptionPool/{key}")
}

/// Polls (10 s at most) until the pool's caches have their first full list: never plan from empty caches.
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

async fn reconcile_pool(cp: &CaptionPool, ctx: &Context, pod_store: &Store<Pod>) -> Result<Action> {
    let ns = cp.namespace().unwrap_or_default();
    let name = cp.name_any();
    let uid = cp.uid().unwrap_or_default();
    let key = key_of(cp);
    if !super::visiocluster::caches_ready(ctx).await || !pods_ready(pod_store).await {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    // dereference
    let clusters: Api<VisioCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let vc = clusters.get_opt(&cp.spec.cluster_ref.name).await?;
    if let Some((reason, message)) = reference_problem(cp, vc.is_some()) {
        report_problem(cp, ctx, reason, message).await?;
        // The VisioCluster watch brings the pool back when the cluster appears.
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let vc =
        vc.ok_or_else(|| Error::Reference { reason: "cluster_missing", message: "VisioCluster vanished".into() })?;
    // Our Secret rights in this namespace come from the cluster's binding, which the VisioCluster's
    // reconcile writes. A pool applied with its cluster would race that write into a 403 (seen in
    // CI), so while the binding or the cluster is new, read no Secret until the namespace's Secret
    // cache has listed, which proves the binding is in force at the apiserver's authorizer, not only
    // written. Past 30 s the reads below go ahead, and a 403 then (the ClusterRole missing) is
    // logged and retried with backoff, not waited on in silence.
    if let (Some(me), false) = (&ctx.operator, ctx.secrets.is_ready(&ns)) {
        let binding = crate::builders::tenant::operator_secrets_binding(&vc, me)?;
        let cached = ctx.stores.role_bindings.get(&ObjectRef::from_obj(&binding));
        if cached.is_some() {
            ctx.secrets.watch(&ns);
        }
        let since = cached.as_ref().and_then(|b| b.creation_timestamp()).or_else(|| vc.creation_timestamp());
        if since.is_none_or(|t| Timestamp::now().as_second() - t.0.as_second() < 30) {
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
    }
    let livekit_keys = match &vc.spec.keys {
        Some(k) => k.secret_name.clone(),
        None => crate::builders::labels::credentials_secret_name(&vc.name_any()),
    };
    let api_key = api_key(cp, ctx).await?;

    // build (pure); transcriber replicas are set once the streams are known
    let inputs = CaptionInputs {
        api_key: &api_key,
        livekit_keys_secret: &livekit_keys,
        agent_image: &ctx.config.agent_image,
        transcriber_replicas: 0,
    };
    let mut stack = build_captions(cp, &inputs)?;
    let spec = fleet_spec(cp)?;

    // fleet
    let now = Timestamp::now();
    let pods: Vec<Arc<Pod>> = pod_store
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && is_child_of(p.as_ref(), &name, &uid))
        .collect();
    let snap = snapshot(ctx, &fleet_key(&key), &stack.backend.hash, &pods, now);
    let plan = fleet::plan(&spec, &snap);
    remember_low_load(ctx, &fleet_key(&key), plan.low_load_since);
    let mut status = build_status(cp, &stack.backend.hash, &snap, plan.desired, &pods);
    let workers: Vec<Arc<Pod>> = pod_store
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| {
            let l = p.labels();
            l.get(captions::POOL_LABEL) == Some(&name)
                && l.get(COMPONENT_LABEL).map(String::as_str) == Some(captions::TRANSCRIBER_COMPONENT)
        })
        .collect();
    let load = worker_load(&workers);
    let deployment_key = ObjectRef::new(&captions::transcriber_name(&name)).within(&ns);
    let decided = ctx.captions.lock().unwrap_or_else(|p| p.into_inner()).get(&key).and_then(|m| m.transcriber_replicas);
    let current = decided.or_else(|| {
        ctx.stores.deployments.get(&deployment_key).and_then(|d| d.spec.as_ref()?.replicas).map(|r| r.max(0) as u32)
    });
    let workers_key = format!("{}/transcribers", fleet_key(&key));
    let low = ctx.low_load_since.lock().unwrap_or_else(|p| p.into_inner()).get(&workers_key).copied();
    let streams = u64::try_from(status.slots.used).unwrap_or(0);
    let worker_plan = workers::plan_workers(&worker_spec(cp)?, &load, streams, current, low, now.as_millisecond());
    remember_low_load(ctx, &workers_key, worker_plan.low_since);
    ctx.captions.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default().transcriber_replicas =
        Some(worker_plan.replicas);
    let replicas = i32::try_from(worker_plan.replicas).unwrap_or(i32::MAX);
    if let Some(d) = stack.transcribers.spec.as_mut() {
        d.replicas = Some(replicas);
    }

    // apply
    apply_children(cp, ctx, &stack, &ns, &name, &uid).await?;
    let backends = PodFleet {
        owner: cp,
        template: &stack.backend.pod,
        prefix: backend_name(&name),
        noun: "caption backend pod",
        holds: "streams",
    };
    execute(ctx, &backends, &pods, &plan.actions, now).await?;
    sync_pod_labels(ctx, &pods).await?;
    if let Some(c) = current.filter(|c| *c != worker_plan.replicas) {
        let basis = match worker_plan.basis {
            workers::Basis::Jobs(j) => format!("{j} active jobs"),
            workers::Basis::Streams(s) => format!("{s} open streams (no worker reports its jobs)"),
        };
        let note = format!(
            "transcriber workers {c} -> {}: {basis}, {} jobs per worker at {}%",
            worker_plan.replicas, cp.spec.transcribers.jobs_per_worker, cp.spec.transcribers.target_occupancy_percent
        );
        ctx.event(cp, EventType::Normal, "TranscribersScaled", "Scale", note).await;
    }

    // status
    let (new_rejections, recent, total) =
        count_rejections(ctx, &key, &uid, status.slots.rejected, &pods, now.as_millisecond());
    status.slots.rejected = total;
    status.transcribers = transcriber_counts(ctx, &ns, &captions::transcriber_name(&name), replicas);
    status.transcribers.jobs = (load.reporting > 0).then(|| i64::try_from(load.jobs).unwrap_or(i64::MAX));
    let stuck = unschedulable(&pods);
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
    set_conditions(&mut status, cp, &decided);
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
    let status_wait = if cp.status.as_ref() != Some(&status) { write_status(ctx, cp, &status).await? } else { None };
    if new_rejections > 0 {
        ctx.metrics.caption_streams_rejected.with_label_values(&[&ns, &name]).inc_by(u64::from(new_rejections));
    }
    export_metrics(ctx, &ns, &name, &status);
    let requeue = match (plan.requeue_after_ms, worker_plan.requeue_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let requeue = requeue.map(|ms| Duration::from_millis(ms.clamp(1000, 600_000) as u64));
    let requeue =
        if stuck.is_empty() { requeue } else { Some(requeue.unwrap_or(Duration::MAX).min(Duration::from_secs(30))) };
    let requeue = [requeue, status_wait].into_iter().flatten().min();
    Ok(Action::requeue(requeue.unwrap_or(Duration::from_secs(600))))
}

/// The pool's backend API key: read from the owned `<pool>-caption-key` Secret, or generated the first time.
/// Asks the API before generating, so that a lagging cache can never make a second key (and roll the pods).
async fn api_key(cp: &CaptionPool, ctx: &Context) -> Result<String> {
    let owned = apply::owned_secret(ctx, cp, &key_secret_name(&cp.name_any())).await?;
    let existing = owned
        .as_ref()
        .and_then(|s| s.data.as_ref()?.get(API_KEY).and_then(|v| String::from_utf8(v.0.clone()).ok()))
        .filter(|k| !k.is_empty());
    Ok(existing.unwrap_or_else(|| format!("stt_{}", Alphanumeric.sample_string(&mut rand::rng(), 40))))
}

async fn apply_children(
    cp: &CaptionPool,
    ctx: &Context,
    stack: &CaptionStack,
    ns: &str,
    name: &str,
    uid: &str,
) -> Result<()> {
    let s = &ctx.stores;
    let secrets = [stack.key_secret.clone(), stack.config_secret.clone()];
    for secret in &secrets {
        super::secrets::ensure_secret(ctx, secret.clone()).await?;
    }
    let agent = &stack.agent;
    super::fleet_pods::ensure_agent_access(ctx, agent).await?;
    apply::ensure(ctx, &s.services, stack.service.clone()).await?;
    apply::ensure(ctx, &s.pdbs, stack.pdb.clone()).await?;
    let mut transcribers = stack.transcribers.clone();
    let current = s.deployments.get(&ObjectRef::from_obj(&transcribers));
    keep_running_agent_image(&mut transcribers, current.as_deref())?;
    apply::ensure(ctx, &s.deployments, transcribers).await?;
    let secret_orphans = if ctx.secrets.is_ready(ns) {
        apply::delete_orphans(ctx, ctx.secrets.store(), ns, name, uid, &apply::names(&secrets)).await?
    } else {
        0
    };
    let pruned = secret_orphans
        + apply::delete_orphans(ctx, &s.services, ns, name, uid, &apply::names([&stack.service])).await?
        + apply::delete_orphans(ctx, &s.pdbs, ns, name, uid, &apply::names([&stack.pdb])).await?
        + apply::delete_orphans(ctx, &s.deployments, ns, name, uid, &apply::names([&stack.transcribers])).await?
        + apply::delete_orphans(ctx, &s.service_accounts, ns, name, uid, &apply::names([&agent.service_account]))
            .await?
        + apply::delete_orphans(ctx, &s.roles, ns, name, uid, &apply::names([&agent.role])).await?
        + apply::delete_orphans(ctx, &s.role_bindings, ns, name, uid, &apply::names([&agent.role_binding])).await?;
    if pruned > 0 {
        let note = format!("deleted {pruned} objects the spec no longer asks for");
        ctx.event(cp, EventType::Normal, "ChildrenPruned", "Prune", note).await;
    }
    Ok(())
}

/// The agent image in a pod template, if it has the agent.
fn agent_image_mut(d: &mut Deployment) -> Option<&mut Option<String>> {
    let spec = d.spec.as_mut()?.template.spec.as_mut()?;
    Some(&mut spec.containers.iter_mut().find(|c| c.name == crate::builders::sfu::AGENT_CONTAINER)?.image)
}

/// An operator upgrade alone must not replace the transcriber workers (each would drain for up to an hour
/// while a new one starts): when `current` was applied from this very template but for the agent image
/// (and the replica count, which the planner changes), its agent image is kept. Workers created later get
/// the new agent with the next real template change (pure).
pub fn keep_running_agent_image(desired: &mut Deployment, current: Option<&Deployment>) -> Result<()> {
    let Some(current) = current else { return Ok(()) };
    let Some(applied) = current.annotations().get(apply::APPLIED_HASH) else { return Ok(()) };
    let Some(running) = current
        .clone()
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().find(|c| c.name == crate::builders::sfu::AGENT_CONTAINER))
        .and_then(|c| c.image)
    else {
        return Ok(());
    };
    let mut as_applied = desired.clone();
    if let Some(image) = agent_image_mut(&mut as_applied) {
        *image = Some(running.clone());
    }
    if let Some(spec) = as_applied.spec.as_mut() {
        spec.replicas = current.spec.as_ref().and_then(|s| s.replicas);
    }
    // Hashed as `apply::ensure` stamps what it applies.
    if &apply::stamp(&mut as_applied)? == applied {
        if let Some(image) = agent_image_mut(desired) {
            *image = Some(running);
        }
    }
    Ok(())
}

/// New rejections since the last reconcile (per pod counters; a pod first seen sets its baseline),
/// whether one was seen in the last [`REJECTION_MEMORY_MS`], and the pool's total: the new ones added
/// to the larger of the total in the cached status (`cached`) and the one this process last computed
/// for the same pool, which the cache may not show yet (both only grow, so the larger is the newer).
fn count_rejections(
    ctx: &Context,
    key: &str,
    pool_uid: &str,
    cached: i64,
    pods: &[Arc<Pod>],
    now_ms: i64,
) -> (u32, bool, i64) {
    let mut all = ctx.captions.lock().unwrap_or_else(|p| p.into_inner());
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

fn set_conditions(status: &mut CaptionPoolStatus, cp: &CaptionPool, decided: &[Decided]) -> bool {
    conditions::set(&mut status.conditions, &mut status.observed_generation, decided, cp.metadata.generation)
}

/// Writes the pool's status; a count-only change may wait (see `status_pace`), and then the wait is
/// returned for the reconcile to come back after it.
async fn write_status(ctx: &Context, cp: &CaptionPool, status: &CaptionPoolStatus) -> Result<Option<Duration>> {
    let old = cp.status.as_ref().map(|s| (s.conditions.as_slice(), s.observed_generation));
    let urgent = super::status_pace::urgent(old, (&status.conditions, status.observed_generation));
    super::write_status(ctx, cp, status, urgent).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::PodSnapshot;
    use serde_json::json;

    fn pool(spec: serde_json::Value) -> CaptionPool {
        let mut base = json!({"clusterRef": {"name": "visio"}});
        crate::builders::testing::merge_json(&mut base, spec);
        let mut cp: CaptionPool =
            serde_json::from_value(json!({"apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool",
            "metadata": {"name": "captions", "namespace": "minsante", "uid": "u1"}, "spec": base}))
            .unwrap();
        cp.metadata.generation = Some(1);
        cp
    }

    fn pod(name: &str, hash: &str, phase: PodPhase) -> PodSnapshot {
        PodSnapshot {
            name: name.into(),
            template_hash: hash.into(),
            phase,
            load: Some(0),
            sessions: Some(0),
            warned: false,
            created: 0,
            evacuate: false,
        }
    }

    #[test]
    fn a_missing_or_foreign_cluster_is_named_in_the_condition() {
        let (reason, msg) = reference_problem(&pool(json!({})), false).unwrap();
        assert_eq!(reason, "ClusterNotFound");
        assert!(msg.contains("spec.clusterRef.name") && msg.contains("\"visio\""));
        let (reason, msg) = reference_problem(&pool(json!({"clusterRef": {"namespace": "minarmees"}})), true).unwrap();
        assert_eq!(reason, "CrossNamespaceReference");
        assert!(msg.contains("spec.clusterRef.namespace"));
        assert_eq!(reference_problem(&pool(json!({"clusterRef": {"namespace": "minsante"}})), true), None);
        assert_eq!(reference_problem(&pool(json!({})), true), None);
    }

    #[test]
    fn the_planner_reads_slots() {
        let s = fleet_spec(&pool(json!({"backend": {"slotsPerPod": 48, "targetOccupancyPercent": 70, "slotBuffer": 8,
            "replicas": {"min": 1, "max": 6}, "drainTimeout": "2h"}})))
        .unwrap();
        assert_eq!((s.capacity_per_pod, s.target_utilization_percent, s.buffer, s.min, s.max), (48, 70, 8, 1, 6));
        assert_eq!(s.drain_timeout_ms, 2 * 3600 * 1000);
        assert_eq!(s.warn_before_ms, 0);
        assert!(fleet_spec(&pool(json!({"backend": {"drainTimeout": "forever"}}))).is_err());
    }

    #[test]
    fn transcribers_are_planned_on_their_reported_jobs() {
        let cp = pool(json!({"transcribers": {"jobsPerWorker": 10, "targetOccupancyPercent": 80, "jobBuffer": 3,
            "scaleDownDelay": "2m", "replicas": {"min": 1, "max": 4}}}));
        let s = worker_spec(&cp).unwrap();
        assert_eq!((s.min, s.max, s.jobs_per_worker, s.target_percent, s.buffer), (1, 4, 10, 80, 3));
        assert_eq!(s.scale_down_delay_ms, 120_000);
        assert!(worker_spec(&pool(json!({"transcribers": {"scaleDownDelay": "later"}}))).is_err());
        let worker = |name: &str, load: Option<&str>, deleting: bool| {
            let mut meta = json!({"name": name});
            if let Some(l) = load {
                meta["annotations"] = json!({"visio.io/load": l});
            }
            if deleting {
                meta["deletionTimestamp"] = json!("2026-11-28T10:00:00Z");
            }
            let agent = json!({"name": crate::builders::sfu::AGENT_CONTAINER, "image": "a", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}}});
            let pod = json!({"metadata": meta, "status": {"containerStatuses": [agent]}});
            Arc::new(serde_json::from_value::<Pod>(pod).unwrap())
        };
        let pods = [
            worker("w-0", Some(r#"{"participants":4,"rooms":4,"capacity":10}"#), false),
            worker("w-1", Some(r#"{"participants":2,"rooms":2,"capacity":10}"#), false),
            worker("w-2", None, false),
            worker("w-3", Some(r#"{"participants":9,"rooms":9,"capacity":10}"#), true),
            worker("w-4", Some("garbage"), false),
        ];
        assert_eq!(worker_load(&pods), WorkerLoad { jobs: 6, reporting: 2, unknown: 2 });
    }

    #[test]
    fn an_operator_upgrade_keeps_the_workers_agent_image() {
        let cp = pool(json!({}));
        let build = |agent_image: &str, replicas: i32| {
            let inputs = CaptionInputs {
                api_key: "k",
                livekit_keys_secret: "visio-credentials",
                agent_image,
                transcriber_replicas: replicas,
            };
            build_captions(&cp, &inputs).unwrap().transcribers
        };
        let image = |d: &Deployment| agent_image_mut(&mut d.clone()).and_then(|i| i.clone());
        let mut old = build("agent:1", 2);
        apply::stamp(&mut old).unwrap();
        // Same template, new agent image, new replica count: the running image stays.
        let mut next = build("agent:2", 3);
        keep_running_agent_image(&mut next, Some(&old)).unwrap();
        assert_eq!(image(&next).as_deref(), Some("agent:1"));
        assert_eq!(next.spec.as_ref().unwrap().replicas, Some(3));
        // Another change to the template: the workers roll anyway, with the new agent.
        let mut changed = build("agent:2", 2);
        changed.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].image = Some("worker:2".into());
        keep_running_agent_image(&mut changed, Some(&old)).unwrap();
        assert_eq!(image(&changed).as_deref(), Some("agent:2"));
        // Nothing applied yet: the new image.
        let mut fresh = build("agent:2", 1);
        keep_running_agent_image(&mut fresh, None).unwrap();
        assert_eq!(image(&fresh).as_deref(), Some("agent:2"));
    }

    #[test]
    fn rejections_count_increases_only() {
        assert_eq!(rejection_increase(None, 7), 0, "first sighting is a baseline");
        assert_eq!(rejection_increase(Some(7), 9), 2);
        assert_eq!(rejection_increase(Some(9), 9), 0);
        assert_eq!(rejection_increase(Some(9), 2), 2, "restarted backend");
    }

    #[test]
    fn a_stale_cached_status_loses_no_rejection() {
        // Reconcile 1 counts 6 and writes 6; reconcile 2 runs on a cache that still shows 0.
        let first = rejected_total(0, None, 6);
        assert_eq!(first, 6);
        assert_eq!(rejected_total(0, Some(first), 0), 6, "the older cached total must not win");
        assert_eq!(rejected_total(6, Some(first), 2), 8);
        // After a restart the cached status is all there is.
        assert_eq!(rejected_total(8, None, 0), 8);
    }

    proptest::proptest! {
        /// Whatever order the cache shows our writes in, the total never goes down and counts every
        /// rejection once.
        #[test]
        fn rejection_totals_count_each_rejection_once(
            steps in proptest::collection::vec((0u32..5, 0usize..4), 1..40)
        ) {
            let mut written: Vec<i64> = vec![0];
            let mut remembered = None;
            let mut counted = 0i64;
            for (new, lag) in steps {
                // The cache shows one of the last few totals we wrote.
                let cached = written[written.len().saturating_sub(1 + lag)];
                let total = rejected_total(cached, remembered, new);
                counted += i64::from(new);
                proptest::prop_assert_eq!(total, counted);
                written.push(total);
                remembered = Some(total);
            }
        }
    }

    #[test]
    fn unschedulable_pods_are_named_with_the_scheduler_message() {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "captions-backend-0"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}}))
        .unwrap();
        let stuck = unschedulable(&[Arc::new(p)]);
        assert_eq!(
            stuck,
            vec![(
                "captions-backend-0".to_string(),
                "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".to_string()
            )]
        );
        let cp = pool(json!({}));
        let status = CaptionPoolStatus {
            backends: BackendCounts { desired: 1, current: 1, updated: 1, unschedulable: 1, ..Default::default() },
            ..Default::default()
        };
        let d = decide(&cp, &status, &stuck, false);
        assert_eq!((d[0].type_, d[0].status, d[0].reason.as_str()), (conditions::READY, false, "Unschedulable"));
        assert!(d[0].message.contains("Insufficient nvidia.com/gpu") && d[0].message.contains("spec.backend.gpu"));
        assert_eq!(d[2].reason, "Unschedulable");
    }

    #[test]
    fn degraded_when_rejecting_or_full() {
        let cp = pool(json!({}));
        let mut status = CaptionPoolStatus {
            slots: SlotCounts { used: 10, total: 64, rejected: 0 },
            backends: BackendCounts { desired: 1, ready: 1, current: 1, updated: 1, ..Default::default() },
            ..Default::default()
        };
        let d = decide(&cp, &status, &[], false);
        assert_eq!((d[0].status, d[0].reason.as_str()), (true, "Serving"));
        assert_eq!((d[1].status, d[2].status), (false, false));
        assert_eq!(decide(&cp, &status, &[], true)[2].reason, "StreamsRejected");
        status.slots.used = 64;
        assert_eq!(decide(&cp, &status, &[], false)[2].reason, "SlotsExhausted");
    }

    #[test]
    fn status_shows_the_worst_share_of_slow_steps_bounded() {
        let backend = |name: &str, load: &str| {
            let agent = json!({"name": crate::builders::sfu::AGENT_CONTAINER, "image": "a", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}}});
            Arc::new(
                serde_json::from_value::<Pod>(
                    json!({"metadata": {"name": name, "annotations": {"visio.io/load": load}},
                    "status": {"containerStatuses": [agent]}}),
                )
                .unwrap(),
            )
        };
        let cp = pool(json!({}));
        let snap = Snapshot { now: 0, target_hash: "h".into(), pods: vec![], low_load_since: None };
        let pods = [
            backend("a", r#"{"participants":3,"rooms":3,"stepP95Us":80000,"slowStepPermille":125}"#),
            backend("b", r#"{"participants":1,"rooms":1,"stepP95Us":40000,"slowStepPermille":4}"#),
        ];
        let s = build_status(&cp, "h", &snap, 1, &pods);
        assert_eq!((s.step_time_p95_ms, s.slow_steps_percent), (Some(80.0), Some(12.5)));
        // The annotation is the tenant's to write: a share above the whole is read as the whole.
        let hostile = [backend("c", r#"{"participants":1,"rooms":1,"slowStepPermille":4294967295}"#)];
        assert_eq!(build_status(&cp, "h", &snap, 1, &hostile).slow_steps_percent, Some(100.0));
    }

    #[test]
    fn status_counts_slots_of_serving_pods_and_streams_of_all() {
        let cp = pool(json!({"backend": {"slotsPerPod": 8}}));
        let snap = Snapshot {
            now: 0,
            target_hash: "new".into(),
            pods: vec![
                pod("a", "new", PodPhase::Serving),
                pod("b", "old", PodPhase::Draining { since: 0 }),
                pod("c", "new", PodPhase::Pending),
            ],
            low_load_since: None,
        };
        let s = build_status(&cp, "new", &snap, 2, &[]);
        assert_eq!(s.slots.total, 8, "serving pods only, spec slots when unreported");
        assert_eq!((s.step_time_p95_ms, s.slow_steps_percent), (None, None));
        assert_eq!(
            (s.backends.desired, s.backends.ready, s.backends.current, s.backends.updated, s.backends.draining),
            (2, 1, 3, 2, 1)
        );
    }
}
