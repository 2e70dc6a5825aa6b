//! The transcriber worker planner: how many LiveKit Agents workers the active jobs need. No I/O.
//!
//! A worker is a Deployment's pod, not a pod of the fleet planner: it drains by itself on SIGTERM (it
//! takes no new room and finishes its rooms' captions within its grace period), so removing one never
//! cuts a caption and the planner only decides the replica count. The Deployment removes the pods with
//! the lowest `controller.kubernetes.io/pod-deletion-cost` first, which each worker's agent sets to its
//! active jobs: the emptiest workers go.
//!
//! - Demand: the active jobs (`lk_agents_active_job_count`) on the live workers that report them. The
//!   count is the SFU fleet's rule ([`super::scale`]): enough workers for the jobs plus `buffer`, and
//!   for the jobs at `target_percent` of `jobs_per_worker`, within `min..=max`.
//! - Grow at once; shrink only once the demand has stayed lower for `scale_down_delay_ms`, and never
//!   while some workers report and another's jobs are unknown (it may be full: a new worker before its
//!   first report, or one whose agent fails).
//! - No worker reports (an image without the metrics, or none started yet): the demand falls back to
//!   the open caption streams, one job per stream at most (every captioned room holds at least one
//!   stream), which is never too few; it shrinks with them.

use super::FleetSpec;

/// The worker pool's settings (`spec.transcribers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSpec {
    pub min: u32,
    pub max: u32,
    pub jobs_per_worker: u32,
    pub target_percent: u32,
    pub buffer: u32,
    pub scale_down_delay_ms: i64,
}

/// What the live workers (not being deleted) report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerLoad {
    /// Active jobs on the workers that report.
    pub jobs: u64,
    /// Workers that report their jobs.
    pub reporting: u32,
    /// Workers whose jobs are unknown (no or unreadable report).
    pub unknown: u32,
}

/// What the demand was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// The workers' active jobs.
    Jobs(u64),
    /// No worker reports: the open caption streams.
    Streams(u64),
}

/// The replica count and what to remember until the next plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerPlan {
    pub replicas: u32,
    /// What the count was read from.
    pub basis: Basis,
    /// Since when the demand has been under the current count (carried into the next plan).
    pub low_since: Option<i64>,
    /// Plan again after this long (the scale-down delay's end).
    pub requeue_ms: Option<i64>,
}

/// Workers needed for `jobs` (pure).
pub fn needed(spec: &WorkerSpec, jobs: u64) -> u32 {
    let fleet = FleetSpec {
        min: spec.min,
        max: spec.max.max(spec.min),
        capacity_per_pod: spec.jobs_per_worker.max(1),
        buffer: spec.buffer,
        target_utilization_percent: spec.target_percent.clamp(10, 100),
        // Not read by the count.
        scale_down_delay_ms: 0,
        max_surge: 0,
        max_draining: 0,
        drain_timeout_ms: 0,
        warn_before_ms: 0,
        schedule: Default::default(),
    };
    super::scale::desired(&fleet, jobs)
}

/// The next replica count. `current` is the Deployment's count (`None`: not created yet), `streams` the
/// open caption streams, `low_since` the previous plan's, `now_ms` the clock.
pub fn plan_workers(
    spec: &WorkerSpec,
    load: &WorkerLoad,
    streams: u64,
    current: Option<u32>,
    low_since: Option<i64>,
    now_ms: i64,
) -> WorkerPlan {
    let (need, basis) = if load.reporting > 0 {
        (needed(spec, load.jobs), Basis::Jobs(load.jobs))
    } else {
        // One stream per job at most, and no buffer on top: the streams already over-count the jobs.
        let bare = WorkerSpec { buffer: 0, target_percent: 100, ..spec.clone() };
        (needed(&bare, streams), Basis::Streams(streams))
    };
    let hold = |low_since, requeue_ms, replicas| WorkerPlan { replicas, basis, low_since, requeue_ms };
    let Some(current) = current else { return hold(None, None, need) };
    let current = current.clamp(spec.min, spec.max.max(spec.min));
    if need >= current {
        return hold(None, None, need);
    }
    if load.reporting > 0 && load.unknown > 0 {
        return hold(None, None, current);
    }
    let since = low_since.unwrap_or(now_ms).min(now_ms);
    let waited = now_ms - since;
    if waited >= spec.scale_down_delay_ms {
        hold(None, None, need)
    } else {
        hold(Some(since), Some(spec.scale_down_delay_ms - waited), current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> WorkerSpec {
        WorkerSpec { min: 1, max: 6, jobs_per_worker: 4, target_percent: 75, buffer: 1, scale_down_delay_ms: 60_000 }
    }

    fn jobs(jobs: u64, reporting: u32) -> WorkerLoad {
        WorkerLoad { jobs, reporting, unknown: 0 }
    }

    #[test]
    fn grows_before_the_workers_are_full() {
        // 3 jobs per worker at 75% of 4; one free job kept above the load.
        assert_eq!(needed(&spec(), 0), 1);
        assert_eq!(needed(&spec(), 3), 1);
        assert_eq!(needed(&spec(), 4), 2, "4 jobs + 1 free need 5 places");
        assert_eq!(needed(&spec(), 7), 3);
        assert_eq!(needed(&spec(), 100), 6, "max");
        let p = plan_workers(&spec(), &jobs(4, 1), 0, Some(1), None, 0);
        assert_eq!((p.replicas, p.basis, p.low_since), (2, Basis::Jobs(4), None));
    }

    #[test]
    fn shrinks_only_after_the_delay() {
        let s = spec();
        let p = plan_workers(&s, &jobs(1, 3), 0, Some(3), None, 1_000);
        assert_eq!((p.replicas, p.low_since, p.requeue_ms), (3, Some(1_000), Some(60_000)));
        let p = plan_workers(&s, &jobs(1, 3), 0, Some(3), Some(1_000), 31_000);
        assert_eq!((p.replicas, p.requeue_ms), (3, Some(30_000)));
        let p = plan_workers(&s, &jobs(1, 3), 0, Some(3), Some(1_000), 61_000);
        assert_eq!((p.replicas, p.low_since), (1, None));
        // A rise in between resets the clock.
        let p = plan_workers(&s, &jobs(10, 3), 0, Some(3), Some(1_000), 61_000);
        assert_eq!((p.replicas, p.low_since), (4, None));
    }

    #[test]
    fn an_unknown_worker_holds_the_count() {
        let load = WorkerLoad { jobs: 0, reporting: 2, unknown: 1 };
        let p = plan_workers(&spec(), &load, 0, Some(3), Some(0), 10_000_000);
        assert_eq!((p.replicas, p.low_since), (3, None));
        // It still grows.
        let load = WorkerLoad { jobs: 10, reporting: 2, unknown: 1 };
        assert_eq!(plan_workers(&spec(), &load, 0, Some(3), None, 0).replicas, 4);
    }

    #[test]
    fn without_reports_the_streams_decide() {
        let none = WorkerLoad { jobs: 0, reporting: 0, unknown: 2 };
        let p = plan_workers(&spec(), &none, 9, Some(2), None, 0);
        assert_eq!((p.replicas, p.basis), (3, Basis::Streams(9)), "ceil(9 / 4)");
        let p = plan_workers(&spec(), &none, 0, None, None, 0);
        assert_eq!(p.replicas, 1, "a new pool starts at min");
        // And shrinks with the streams.
        assert_eq!(plan_workers(&spec(), &none, 2, Some(3), Some(0), 60_000).replicas, 1);
    }

    proptest! {
        #[test]
        fn plans_are_bounded_and_never_shrink_early(
            min in 0u32..5, extra in 0u32..8, per in 1u32..50, target in 10u32..=100, buffer in 0u32..20,
            delay in 0i64..600_000, load_jobs in 0u64..500, reporting in 0u32..8, unknown in 0u32..3,
            streams in 0u64..500, current in proptest::option::of(0u32..20),
            low in proptest::option::of(0i64..1_000_000), now in 0i64..1_000_000,
        ) {
            let spec = WorkerSpec { min, max: min + extra, jobs_per_worker: per, target_percent: target, buffer, scale_down_delay_ms: delay };
            let load = WorkerLoad { jobs: load_jobs, reporting, unknown };
            let p = plan_workers(&spec, &load, streams, current, low, now);
            prop_assert!(p.replicas >= spec.min && p.replicas <= spec.max);
            // Enough places for the reported jobs plus the buffer, unless at max.
            if reporting > 0 && p.replicas < spec.max {
                prop_assert!(u64::from(p.replicas) * u64::from(per) >= load_jobs + u64::from(buffer));
                prop_assert!(u64::from(p.replicas) * u64::from(per) * u64::from(target) >= load_jobs * 100);
            }
            if let Some(c) = current.map(|c| c.clamp(spec.min, spec.max)) {
                if p.replicas < c {
                    // Only with every live worker known (or none), and once the delay has passed.
                    prop_assert!(unknown == 0 || reporting == 0);
                    let since = low.unwrap_or(now).min(now);
                    prop_assert!(now - since >= delay);
                }
            }
            if let Some(r) = p.requeue_ms {
                prop_assert!(r > 0 && r <= delay);
            }
        }
    }
}
