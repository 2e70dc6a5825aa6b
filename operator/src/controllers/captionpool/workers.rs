//! Step 3: how many transcriber workers the pool runs (`fleet::workers::plan_workers`, pure), decided
//! before the build so the Deployment is built with its count. The workers' reported jobs are the load;
//! with no worker reporting, the open streams stand in for them.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;

use super::validate::Validated;
use super::{fleet_key, Pools};
use crate::api::captionpool::CaptionPool;
use crate::builders::captions;
use crate::builders::labels::COMPONENT_LABEL;
use crate::fleet::workers::{self, WorkerLoad, WorkerPlan};
use crate::runtime::apply::is_child_of;
use crate::runtime::pods::pod_load;
use crate::runtime::{key_of, Context};

/// The pool's pods as cached, read once for the whole reconcile.
pub struct Observed {
    /// The backend pods (owned by the pool).
    pub backends: Vec<Arc<Pod>>,
    /// The transcriber worker pods (owned by their ReplicaSet, found by the pool label).
    pub workers: Vec<Arc<Pod>>,
    /// The time the reconcile plans at.
    pub now: Timestamp,
}

pub fn observe(cp: &CaptionPool, pods: &Store<Pod>) -> Observed {
    let (ns, name, uid) = (cp.namespace().unwrap_or_default(), cp.name_any(), cp.uid().unwrap_or_default());
    let all = pods.state();
    let in_ns = |p: &&Arc<Pod>| p.namespace().as_deref() == Some(ns.as_str());
    let backends = all.iter().filter(in_ns).filter(|p| is_child_of(p.as_ref(), &name, &uid)).cloned().collect();
    let workers = all
        .iter()
        .filter(in_ns)
        .filter(|p| {
            let l = p.labels();
            l.get(captions::POOL_LABEL) == Some(&name)
                && l.get(COMPONENT_LABEL).map(String::as_str) == Some(captions::TRANSCRIBER_COMPONENT)
        })
        .cloned()
        .collect();
    Observed { backends, workers, now: Timestamp::now() }
}

/// The worker decision of this reconcile.
pub struct Workers {
    /// What the workers report.
    pub load: WorkerLoad,
    /// The replica count before this decision (the last decided, else the Deployment's).
    pub current: Option<u32>,
    pub plan: WorkerPlan,
}

/// The key of the transcriber workers in the planner's memories.
pub fn memory_key(key: &str) -> String {
    format!("{}/transcribers", fleet_key(key))
}

/// Plans the worker count and remembers it (the Deployment in the cache may not show it yet, and
/// planning from the older count would undo a scale-down).
pub fn plan(ctx: &Context, pools: &Pools, cp: &CaptionPool, valid: &Validated, observed: &Observed) -> Workers {
    let key = key_of(cp);
    let load = worker_load(&observed.workers);
    let deployment =
        ObjectRef::new(&captions::transcriber_name(&cp.name_any())).within(&cp.namespace().unwrap_or_default());
    let decided = pools.memory.get(&key).and_then(|m| m.transcriber_replicas);
    let current = decided.or_else(|| {
        ctx.stores.deployments.get(&deployment).and_then(|d| d.spec.as_ref()?.replicas).map(|r| r.max(0) as u32)
    });
    let low = ctx.low_load_since.get(&memory_key(&key));
    let streams = super::status::used_slots(&observed.backends).max(0) as u64;
    let plan = workers::plan_workers(&valid.workers, &load, streams, current, low, observed.now.as_millisecond());
    ctx.low_load_since.set(&memory_key(&key), plan.low_since);
    pools.memory.update(&key, |m| m.transcriber_replicas = Some(plan.replicas));
    Workers { load, current, plan }
}

/// A Normal Event when the worker count changes, saying on what basis.
pub async fn announce(ctx: &Context, cp: &CaptionPool, w: &Workers) {
    let Some(c) = w.current.filter(|c| *c != w.plan.replicas) else { return };
    let basis = match w.plan.basis {
        workers::Basis::Jobs(j) => format!("{j} active jobs"),
        workers::Basis::Streams(s) => format!("{s} open streams (no worker reports its jobs)"),
    };
    let note = format!(
        "transcriber workers {c} -> {}: {basis}, {} jobs per worker at {}%",
        w.plan.replicas, cp.spec.transcribers.jobs_per_worker, cp.spec.transcribers.target_occupancy_percent
    );
    ctx.event(cp, EventType::Normal, "TranscribersScaled", "Scale", note).await;
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
