//! Step 6: the status. Counts from the pods and the plan, conditions decided from them (plus the
//! tenant's quota fit and the retention governance), a Warning Event when the stack becomes Degraded,
//! one status write (paced when only counts changed), and the tenant's metrics.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::pods::Fleet;
use crate::api::visiocluster::{LiveLoad, SfuCounts, VisioCluster, VisioClusterStatus};
use crate::builders::quota;
use crate::builders::stack::Stack;
use crate::fleet::{self, Figures, PodPhase, PodSnapshot, Snapshot};
use crate::pod_protocol::{self, DRAIN_SINCE};
use crate::runtime::conditions::{self, Convergence, Decided};
use crate::runtime::error::{Error, Result};
use crate::runtime::pods::{annotation, label, pod_load, pod_ready};
use crate::runtime::status::{set_conditions, write_paced};
use crate::runtime::{key_of, Context};

/// Decides and writes the status; returns how long a paced status write waits.
pub async fn update(ctx: &Context, vc: &VisioCluster, stack: &Stack, fleet: &Fleet) -> Result<Option<Duration>> {
    let (ns, name) = (vc.namespace().unwrap_or_default(), vc.name_any());
    let snapshot = &fleet.snapshot;
    let status = build_status(vc, stack, &fleet.pods, fleet.plan.desired, snapshot);
    let lost = snapshot.pods.iter().filter(|p| matches!(p.phase, PodPhase::Serving)).count() as i32 - status.sfu.ready;
    let mut decided = decide_conditions(&status, vc, lost);
    // What the namespace's LimitRange and ResourceQuota (spec.tenant) would refuse of the stack's pods.
    let problems = quota::fit_problems(vc, &quota::stack_needs(vc, stack));
    degrade_for_quota(&mut decided, &problems);
    decided.extend(conditions::convergence(&convergence(&status, vc, &problems)));
    // A Warning Event when the stack becomes Degraded, or Degraded for another reason.
    let was_degraded = vc
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::DEGRADED && c.status == "True"))
        .map(|c| c.reason.clone());
    if let Some(d) = decided.iter().find(|d| d.type_ == conditions::DEGRADED && d.status) {
        if was_degraded.as_deref() != Some(d.reason.as_str()) {
            ctx.event(vc, EventType::Warning, &d.reason, "Observe", d.message.clone()).await;
        }
    }
    let old_conditions = vc.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    // Governance: recordings in a bucket that no RetentionPolicy of the namespace covers.
    decided.extend(crate::retention::governance::missing_condition(
        "spec.recordings",
        vc.spec.recordings.as_ref(),
        &ns,
        &ctx.stores.retention_policies,
        &old_conditions,
    ));
    let autoscaling = fleet::schedule::status(fleet.plan.scheduled.as_ref(), snapshot.startup_lead_ms);
    let mut next = VisioClusterStatus { conditions: old_conditions, autoscaling, ..status };
    set_conditions(&mut next, vc.metadata.generation, &decided);
    let status_wait =
        if vc.status.as_ref() != Some(&next) { write_paced(ctx, vc, vc.status.as_ref(), &next).await? } else { None };
    export_metrics(ctx, &ns, &name, &next, &fleet.plan.figures);
    Ok(status_wait)
}

/// A spec or reference problem: said in status and an Event, then a wait for a change.
pub async fn report_problem(ctx: &Context, vc: &VisioCluster, e: &Error) -> Result<Action> {
    tracing::warn!(object = %key_of(vc), error = %e, label = e.label(), "cannot honour spec");
    let decided = vec![
        Decided::new(conditions::READY, false, reason_of(e), e.to_string()),
        Decided::new(conditions::DEGRADED, true, reason_of(e), e.to_string()),
    ]
    .into_iter()
    .chain(conditions::convergence(&Convergence::Stalled(reason_of(e).into(), e.to_string())))
    .collect::<Vec<_>>();
    let mut status = vc.status.clone().unwrap_or_default();
    if set_conditions(&mut status, vc.metadata.generation, &decided) {
        ctx.event(vc, EventType::Warning, reason_of(e), "Validate", e.to_string()).await;
        write_paced(ctx, vc, vc.status.as_ref(), &status).await?;
    }
    // Referenced objects are not watched: look again now and then, slowly.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// PascalCase reason for a condition or Event from an error label.
fn reason_of(e: &Error) -> &'static str {
    match e.label() {
        "keys_secret_missing" => "KeysSecretMissing",
        "keys_secret_invalid" => "KeysSecretInvalid",
        "redis_secret_missing" => "RedisSecretMissing",
        "conflict" => "Conflict",
        "platform_rule" => "PlatformRule",
        _ => "InvalidSpec",
    }
}

pub fn build_status(
    vc: &VisioCluster,
    stack: &Stack,
    pods: &[Arc<Pod>],
    desired: u32,
    snap: &Snapshot,
) -> VisioClusterStatus {
    let live: Vec<&PodSnapshot> =
        snap.pods.iter().filter(|p| !matches!(p.phase, PodPhase::Terminating | PodPhase::Failed)).collect();
    // Ready means Ready now (what the alerts and `kubectl get vc` show), not the planner's `Serving`,
    // which keeps a pod that lost its readiness.
    let ready_now: BTreeSet<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && annotation(p, DRAIN_SINCE).is_none() && pod_ready(p))
        .map(|p| p.name_any())
        .collect();
    let sfu = SfuCounts {
        desired: desired as i32,
        current: live.len() as i32,
        ready: live.iter().filter(|p| matches!(p.phase, PodPhase::Serving) && ready_now.contains(&p.name)).count()
            as i32,
        updated: live.iter().filter(|p| p.template_hash == stack.sfu.hash).count() as i32,
        draining: live.iter().filter(|p| matches!(p.phase, PodPhase::Draining { .. })).count() as i32,
    };
    let loads: Vec<pod_protocol::Load> = pods.iter().filter_map(|p| pod_load(p)).collect();
    let load = LiveLoad {
        rooms: loads.iter().map(|l| l.rooms as i64).sum(),
        participants: loads.iter().map(|l| l.participants as i64).sum(),
        capacity: sfu.ready as i64 * vc.spec.sfu.capacity.participants_per_pod as i64,
    };
    let versions: BTreeSet<&str> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| label(p, crate::builders::labels::VERSION_LABEL))
        .collect();
    VisioClusterStatus {
        observed_generation: vc.metadata.generation,
        conditions: vec![],
        version: if versions.len() == 1 { versions.into_iter().next().map(str::to_string) } else { None },
        target_version: Some(stack.sfu.version.clone()),
        sfu,
        load,
        endpoints: Some(stack.endpoints.clone()),
        firewall: stack.firewall.clone(),
        // Set by `update`, from the plan.
        autoscaling: None,
    }
}

/// `lost_readiness`: pods that served and are not Ready now (kept: they hold meetings).
fn decide_conditions(status: &VisioClusterStatus, vc: &VisioCluster, lost_readiness: i32) -> Vec<Decided> {
    let c = &status.sfu;
    let upgrading = c.updated < c.current;
    let want = vc.spec.sfu.replicas.min.max(1);
    let ready = c.ready >= want.min(c.desired.max(1));
    let mut out = vec![];
    out.push(if ready {
        Decided::new(conditions::READY, true, "Serving", format!("{}/{} SFU pods serving", c.ready, c.desired))
    } else {
        Decided::new(conditions::READY, false, "PodsNotReady", format!("{}/{} SFU pods serving", c.ready, c.desired))
    });
    let progressing = upgrading || c.current != c.desired + c.draining || !ready;
    out.push(Decided::new(
        conditions::PROGRESSING,
        progressing,
        if progressing { "Reconciling" } else { "Stable" },
        format!("{} current, {} desired, {} draining, {} updated", c.current, c.desired, c.draining, c.updated),
    ));
    out.push(if lost_readiness > 0 && c.ready == 0 {
        Decided::new(
            conditions::DEGRADED,
            true,
            "SfuNotReady",
            format!(
                "{lost_readiness} SFU pod(s) lost readiness and none is ready: LiveKit reports Not Ready when its \
                 Redis stats go stale, so check that Redis is reachable (runbook VisioSfuRedisUnreachable). \
                 The pods are kept and their meetings go on; no new meeting can start."
            ),
        )
    } else {
        Decided::new(conditions::DEGRADED, false, "AsExpected", "no problem detected")
    });
    out.push(Decided::new(
        conditions::UPGRADE_IN_PROGRESS,
        upgrading,
        if upgrading { "RollingUpgrade" } else { "UpToDate" },
        match &status.target_version {
            Some(v) if upgrading => format!("{}/{} SFU pods run {v}", c.updated, c.current),
            Some(v) => format!("every SFU pod runs {v}"),
            None => String::new(),
        },
    ));
    out
}

/// kstatus's reading of the stack: Stalled while the tenant's quota or LimitRange cannot admit the pods
/// (nothing the operator does fixes that), Reconciling while the fleet is not what the spec asks (an
/// upgrade, a scale, pods not ready: also a Redis outage, which ends without a change of spec).
fn convergence(status: &VisioClusterStatus, vc: &VisioCluster, problems: &[quota::Problem]) -> Convergence {
    if let Some(first) = problems.first() {
        let message = problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ");
        return Convergence::Stalled(first.reason.into(), message);
    }
    let c = &status.sfu;
    let want = vc.spec.sfu.replicas.min.max(1);
    let ready = c.ready >= want.min(c.desired.max(1));
    let counts =
        format!("{} current, {} desired, {} draining, {} updated", c.current, c.desired, c.draining, c.updated);
    if c.updated < c.current {
        let target = status.target_version.as_deref().unwrap_or("the target version");
        Convergence::Reconciling(
            "RollingUpgrade",
            format!("{}/{} SFU pods run {target}; {counts}", c.updated, c.current),
        )
    } else if !ready {
        Convergence::Reconciling("PodsNotReady", format!("{}/{} SFU pods serving; {counts}", c.ready, c.desired))
    } else if c.current != c.desired + c.draining {
        Convergence::Reconciling("Scaling", counts)
    } else {
        Convergence::Current
    }
}

/// `Degraded` (`QuotaTooSmall`, `LimitRangeRefusesPods`) when the tenant's quota or LimitRange cannot admit
/// the stack's pods at `spec.sfu.replicas.min`, unless the stack is already degraded for a more urgent
/// reason (no SFU pod ready). Every problem is in the message; the reason is the first one's.
fn degrade_for_quota(decided: &mut [Decided], problems: &[quota::Problem]) {
    let Some(first) = problems.first() else { return };
    if let Some(d) = decided.iter_mut().find(|d| d.type_ == conditions::DEGRADED && !d.status) {
        let message = problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ");
        *d = Decided::new(conditions::DEGRADED, true, first.reason, message);
    }
}

/// The tenant's series: pod counts and load from the status, and the figures the alerts compare
/// (headroom against buffer, drain age against drain timeout, unreported loads) from the
/// planner's spec and snapshot.
fn export_metrics(ctx: &Context, ns: &str, name: &str, status: &VisioClusterStatus, figures: &Figures) {
    let m = &ctx.metrics;
    let c = &status.sfu;
    for (state, v) in [
        ("desired", c.desired),
        ("current", c.current),
        ("ready", c.ready),
        ("updated", c.updated),
        ("draining", c.draining),
    ] {
        m.sfu_pods.with_label_values(&[ns, name, state]).set(v as i64);
    }
    m.participants.with_label_values(&[ns, name]).set(status.load.participants);
    m.rooms.with_label_values(&[ns, name]).set(status.load.rooms);
    m.set_fleet(ns, name, figures);
    let ready = conditions::is_true(&status.conditions, conditions::READY);
    m.ready.with_label_values(&["VisioCluster", ns, name]).set(if ready { 1.0 } else { 0.0 });
    // Follows the RetentionPolicyMissing condition once the controller sets it.
    let missing = status.conditions.iter().find(|c| c.type_ == conditions::RETENTION_POLICY_MISSING);
    match missing {
        Some(c) => {
            m.retention_policy_missing.with_label_values(&["VisioCluster", ns, name]).set(i64::from(c.status == "True"))
        }
        None => {
            let _ = m.retention_policy_missing.remove_label_values(&["VisioCluster", ns, name]);
        }
    }
}

crate::conditioned!(VisioClusterStatus);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testing::test_cluster;

    #[test]
    fn every_serving_pod_losing_readiness_degrades_the_tenant() {
        let vc = test_cluster();
        let mut status = VisioClusterStatus::default();
        status.sfu.desired = 2;
        status.sfu.current = 2;
        status.sfu.updated = 2;
        let degraded = |d: &[Decided]| d.iter().find(|d| d.type_ == conditions::DEGRADED).cloned().unwrap();
        let d = decide_conditions(&status, &vc, 2);
        assert!(degraded(&d).status);
        assert_eq!(degraded(&d).reason, "SfuNotReady");
        assert!(degraded(&d).message.contains("Redis"), "{}", degraded(&d).message);
        // Pods that never were ready (a rollout still starting) are not a Redis outage.
        assert!(!degraded(&decide_conditions(&status, &vc, 0)).status);
        // One pod ready is enough for new meetings: not degraded.
        status.sfu.ready = 1;
        assert!(!degraded(&decide_conditions(&status, &vc, 1)).status);
    }

    #[test]
    fn kstatus_reads_upgrades_and_scaling_as_reconciling_and_a_small_quota_as_stalled() {
        let vc = test_cluster();
        let mut status = VisioClusterStatus::default();
        let want = vc.spec.sfu.replicas.min.max(1);
        (status.sfu.desired, status.sfu.current, status.sfu.updated, status.sfu.ready) = (want, want, want, want);
        assert_eq!(convergence(&status, &vc, &[]), Convergence::Current);
        status.sfu.updated = 0;
        assert!(matches!(convergence(&status, &vc, &[]), Convergence::Reconciling("RollingUpgrade", _)));
        status.sfu.updated = want;
        status.sfu.ready = 0;
        assert!(matches!(convergence(&status, &vc, &[]), Convergence::Reconciling("PodsNotReady", _)));
        status.sfu.ready = want;
        (status.sfu.current, status.sfu.updated) = (want + 1, want + 1);
        assert!(matches!(convergence(&status, &vc, &[]), Convergence::Reconciling("Scaling", _)));
        // A draining pod is counted in current until it goes: that is the plan, not a scale.
        status.sfu.draining = 1;
        assert_eq!(convergence(&status, &vc, &[]), Convergence::Current);
        let problems =
            [quota::Problem { reason: "QuotaTooSmall", message: "spec.tenant.quota.hard[pods]: too few".into() }];
        match convergence(&status, &vc, &problems) {
            Convergence::Stalled(reason, message) => {
                assert_eq!(reason, "QuotaTooSmall");
                assert!(message.starts_with("spec.tenant.quota.hard[pods]"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_quota_too_small_degrades_the_tenant_naming_the_field() {
        let vc = test_cluster();
        let mut status = VisioClusterStatus::default();
        status.sfu.desired = 2;
        status.sfu.ready = 1;
        let degraded = |d: &[Decided]| d.iter().find(|d| d.type_ == conditions::DEGRADED).cloned().unwrap();
        let problems = [quota::Problem {
            reason: "QuotaTooSmall",
            message: "spec.tenant.quota.hard[pods]: 2 SFU pods need 2 and the quota allows 1".into(),
        }];
        let mut d = decide_conditions(&status, &vc, 0);
        degrade_for_quota(&mut d, &[]);
        assert!(!degraded(&d).status, "no problem, no change");
        degrade_for_quota(&mut d, &problems);
        assert!(degraded(&d).status);
        assert_eq!(degraded(&d).reason, "QuotaTooSmall");
        assert!(degraded(&d).message.starts_with("spec.tenant.quota.hard[pods]"));
        // No SFU pod ready at all stays the reason: it is what the on-call engineer must fix first.
        status.sfu.ready = 0;
        status.sfu.current = 2;
        let mut d = decide_conditions(&status, &vc, 2);
        degrade_for_quota(&mut d, &problems);
        assert_eq!(degraded(&d).reason, "SfuNotReady");
    }
}
