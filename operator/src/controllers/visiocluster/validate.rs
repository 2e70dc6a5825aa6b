//! Step 2: the spec and what was dereferenced, checked and parsed once into [`Validated`]. What the
//! API server could not refuse (durations' grammar beyond the schema) fails here as a permanent error
//! naming the field; the builders check the rest of the spec in step 3.

use super::dereference::Dereferenced;
use crate::api::VisioCluster;
use crate::builders::stack::Credentials;
use crate::builders::{duration_millis, BuildError};
use crate::fleet::schedule::Schedule;
use crate::fleet::FleetSpec;

/// Everything the later steps need, parsed once.
#[derive(Debug)]
pub struct Validated {
    /// The credentials the stack runs with.
    pub credentials: Credentials,
    /// The planner's view of the spec.
    pub fleet: FleetSpec,
}

pub fn validate(vc: &VisioCluster, refs: Dereferenced) -> Result<Validated, BuildError> {
    Ok(Validated { credentials: refs.credentials, fleet: fleet_spec(vc)? })
}

/// The planner's view of the spec.
pub fn fleet_spec(vc: &VisioCluster) -> Result<FleetSpec, BuildError> {
    let s = &vc.spec;
    Ok(FleetSpec {
        min: s.sfu.replicas.min.max(0) as u32,
        max: s.sfu.replicas.max.max(0) as u32,
        capacity_per_pod: s.sfu.capacity.participants_per_pod.max(1) as u32,
        buffer: s.autoscaling.participant_buffer.max(0) as u32,
        target_utilization_percent: s.autoscaling.target_utilization_percent.clamp(10, 100) as u32,
        scale_down_delay_ms: duration_millis("spec.autoscaling.scaleDownDelay", &s.autoscaling.scale_down_delay)?,
        max_surge: s.upgrade.max_surge.max(0) as u32,
        max_draining: s.upgrade.max_draining.max(0) as u32,
        drain_timeout_ms: duration_millis("spec.upgrade.drainTimeout", &s.upgrade.drain_timeout)?,
        warn_before_ms: duration_millis("spec.upgrade.warnBefore", &s.upgrade.warn_before)?,
        schedule: Schedule::parse(
            "spec.autoscaling",
            &s.autoscaling.time_zone,
            &s.autoscaling.schedules.iter().map(|w| w.view()).collect::<Vec<_>>(),
        )?,
    })
}
