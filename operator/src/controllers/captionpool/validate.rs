//! Step 2: the pool's spec and what was dereferenced, parsed once into [`Validated`]: the backend
//! planner's spec, the worker planner's spec, and the references checked.

use kube::ResourceExt;

use super::dereference::Dereferenced;
use crate::api::captionpool::CaptionPool;
use crate::builders::{duration_millis, BuildError};
use crate::fleet::schedule::Schedule;
use crate::fleet::workers::WorkerSpec;
use crate::fleet::FleetSpec;

/// Everything the later steps need, parsed once.
#[derive(Debug)]
pub struct Validated {
    pub api_key: String,
    pub livekit_keys_secret: String,
    /// The backend planner's spec.
    pub backends: FleetSpec,
    /// The transcriber worker planner's spec.
    pub workers: WorkerSpec,
}

pub fn validate(cp: &CaptionPool, refs: Dereferenced) -> Result<Validated, BuildError> {
    Ok(Validated {
        api_key: refs.api_key,
        livekit_keys_secret: refs.livekit_keys_secret,
        backends: fleet_spec(cp)?,
        workers: worker_spec(cp)?,
    })
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
pub fn fleet_spec(cp: &CaptionPool) -> Result<FleetSpec, BuildError> {
    let b = &cp.spec.backend;
    let drain = duration_millis("spec.backend.drainTimeout", &b.drain_timeout)?;
    Ok(FleetSpec {
        min: b.replicas.min.max(0) as u32,
        max: b.replicas.max.max(0) as u32,
        capacity_per_pod: b.slots_per_pod.max(1) as u32,
        buffer: b.slot_buffer.max(0) as u32,
        target_utilization_percent: b.target_occupancy_percent.clamp(10, 100) as u32,
        scale_down_delay_ms: duration_millis("spec.backend.scaleDownDelay", &b.scale_down_delay)?,
        // One new pod at a time replaces an outdated one, and one outdated pod drains at a time: a backend
        // pod is a GPU, so the surge is what the cluster must have spare during an image upgrade.
        max_surge: 1,
        max_draining: 1,
        drain_timeout_ms: drain,
        // The backends have no channel to warn a stream: no warning before the deadline.
        warn_before_ms: 0,
        schedule: Schedule::parse(
            "spec.backend",
            &b.time_zone,
            &b.schedules.iter().map(|w| w.view()).collect::<Vec<_>>(),
        )?,
    })
}

/// The worker planner's view of `spec.transcribers`.
pub fn worker_spec(cp: &CaptionPool) -> Result<WorkerSpec, BuildError> {
    let t = &cp.spec.transcribers;
    let min = t.replicas.min.max(0) as u32;
    Ok(WorkerSpec {
        min,
        max: (t.replicas.max.max(0) as u32).max(min),
        jobs_per_worker: t.jobs_per_worker.max(1) as u32,
        target_percent: t.target_occupancy_percent.clamp(10, 100) as u32,
        buffer: t.job_buffer.max(0) as u32,
        scale_down_delay_ms: duration_millis("spec.transcribers.scaleDownDelay", &t.scale_down_delay)?,
    })
}
