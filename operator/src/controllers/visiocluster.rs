//! The VisioCluster controller: one tenant's LiveKit stack.
//!
//! dereference (credentials, referenced Secrets) -> validate + build (`builders::stack`) ->
//! apply (children, orphans) -> fleet (`fleet::plan` over the SFU pods) -> status.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{LimitRange, Pod, ResourceQuota, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use rand::distr::{Alphanumeric, SampleString};
use tracing::Instrument;

use super::apply::{self, is_child_of};
use super::conditions::{self, Decided};
use super::error::{Error, Result};
use super::fleet_pods::{
    annotation, execute, label, pod_load, pod_ready, remember_low_load, snapshot, sync_pod_labels, PodFleet,
};
use super::{key_of, observe, Context};
use crate::api::visiocluster::{LiveLoad, SfuCounts, VisioCluster, VisioClusterStatus};
use crate::api::RetentionPolicy;
use crate::builders::quota;
use crate::builders::stack::{build_stack, Credentials, Stack};
use crate::builders::tenant::operator_secrets_binding;
use crate::fleet::{self, FleetSpec, PodPhase, PodSnapshot, Snapshot};
use crate::pod_protocol;
use crate::pod_protocol::DRAIN_SINCE;

const CONTROLLER: &str = "visiocluster";

/// The child watches, which both fill the caches in `Context::stores` and trigger reconciles.
pub struct ChildStreams {
    pub pods: BoxStream<'static, Result<Pod, watcher::Error>>,
    pub secrets: BoxStream<'static, Result<Secret, watcher::Error>>,
    pub services: BoxStream<'static, Result<Service, watcher::Error>>,
    pub deployments: BoxStream<'static, Result<Deployment, watcher::Error>>,
    pub pdbs: BoxStream<'static, Result<PodDisruptionBudget, watcher::Error>>,
    pub ingresses: BoxStream<'static, Result<Ingress, watcher::Error>>,
    pub service_accounts: BoxStream<'static, Result<ServiceAccount, watcher::Error>>,
    pub roles: BoxStream<'static, Result<Role, watcher::Error>>,
    pub role_bindings: BoxStream<'static, Result<RoleBinding, watcher::Error>>,
    pub network_policies: BoxStream<'static, Result<NetworkPolicy, watcher::Error>>,
    pub resource_quotas: BoxStream<'static, Result<ResourceQuota, watcher::Error>>,
    pub limit_ranges: BoxStream<'static, Result<LimitRange, watcher::Error>>,
    /// RetentionPolicies (they decide the `RetentionPolicyMissing` condition).
    pub retention_policies: BoxStream<'static, Result<RetentionPolicy, watcher::Error>>,
    /// Nodes whose cordon changed (`nodes::CordonChanges`): their SFU pods are moved off.
    pub nodes: BoxStream<'static, Result<k8s_openapi::api::core::v1::Node, watcher::Error>>,
}

/// The controller future.
pub fn controller(client: Client, ctx: Arc<Context>, streams: ChildStreams) -> impl std::future::Future<Output = ()> {
    // Not Controller::new: one stored VisioCluster we cannot read must not stop the others.
    let controller = super::lenient_controller::<VisioCluster>(&client, super::watch_config(), &ctx.config);
    let clusters = controller.store();
    let pods_store = ctx.stores.pods.clone();
    controller
        // A RetentionPolicy that appears, changes or goes re-decides every VisioCluster of its namespace.
        .watches_stream(super::without_errors(streams.retention_policies), move |rp: RetentionPolicy| {
            let ns = rp.namespace();
            clusters
                .state()
                .into_iter()
                .filter(|vc| vc.namespace() == ns)
                .map(|vc| ObjectRef::from_obj(vc.as_ref()))
                .collect::<Vec<_>>()
        })
        // A node cordoned or uncordoned re-decides the clusters with SFU pods on it.
        .watches_stream(streams.nodes, move |node| {
            let pods = pods_store.state();
            super::nodes::owners_on_node(&pods, &node.name_any(), "VisioCluster")
                .into_iter()
                .map(|(ns, name)| ObjectRef::<VisioCluster>::new(&name).within(&ns))
                .collect::<Vec<_>>()
        })
        .owns_stream(streams.pods)
        .owns_stream(streams.secrets)
        .owns_stream(streams.services)
        .owns_stream(streams.deployments)
        .owns_stream(streams.pdbs)
        .owns_stream(streams.ingresses)
        .owns_stream(streams.service_accounts)
        .owns_stream(streams.roles)
        .owns_stream(streams.role_bindings)
        .owns_stream(streams.network_policies)
        .owns_stream(streams.resource_quotas)
        .owns_stream(streams.limit_ranges)
        .shutdown_on_signal()
        .run(reconcile, super::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
}

async fn reconcile(vc: Arc<VisioCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let key = key_of(vc.as_ref());
    let ns = vc.namespace().unwrap_or_default();
    if vc.meta().deletion_timestamp.is_some() {
        // Children go with their owner (ownerReferences); only our own series need forgetting.
        ctx.metrics.forget_cluster(&ns, &vc.name_any());
        return Ok(Action::await_change());
    }
    let span =
        tracing::info_span!("reconcile", controller = CONTROLLER, object = %key, generation = vc.metadata.generation);
    let result = super::bounded(reconcile_stack(&vc, &ctx).instrument(span)).await;
    observe(&ctx, CONTROLLER, &key, started, &result.as_ref().map(|_| ()));
    match result {
        Ok(action) => Ok(action),
        Err(e) if e.is_permanent() => {
            // A spec or reference problem: say so in status and an Event, then wait for a change.
            tracing::warn!(object = %key, error = %e, label = e.label(), "cannot honour spec");
            let decided = vec![
                Decided::new(conditions::READY, false, reason_of(&e), e.to_string()),
                Decided::new(conditions::DEGRADED, true, reason_of(&e), e.to_string()),
            ];
            let mut status = vc.status.clone().unwrap_or_default();
            let changed = set_conditions(&mut status, &vc, &decided);
            if changed {
                ctx.event(vc.as_ref(), EventType::Warning, reason_of(&e), "Validate", e.to_string()).await;
                write_status(&ctx, &vc, &status).await?;
            }
            // Referenced objects are not watched: look again now and then, slowly.
            Ok(Action::requeue(Duration::from_secs(300)))
        }
        Err(e) => Err(e),
    }
}

/// PascalCase reason for a condition or Event from an error label.
fn reason_of(e: &Error) -> &'static str {
    match e.label() {
        "keys_secret_missing" => "KeysSecretMissing",
        "keys_secret_invalid" => "KeysSecretInvalid",
        "redis_secret_missing" => "RedisSecretMissing",
        "conflict" => "Conflict",
        _ => "InvalidSpec",
    }
}

/// Waits (30 s at most) until every child cache holds its first full list. Until then a cache
/// reads empty: the planner, seeing no pod, would create a whole fleet next to the running one (the
/// pod names only stop the creates whose name is taken), and every child would look missing.
///
/// The stores are polled, not awaited: a store's readiness signal keeps a single waker, so a
/// reconcile awaiting it alongside the operator's readiness probe could sleep through it.
pub(super) async fn caches_ready(ctx: &Context) -> bool {
    use futures::FutureExt;
    let s = &ctx.stores;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = s.pods.wait_until_ready().now_or_never().is_some()
            && s.services.wait_until_ready().now_or_never().is_some()
            && s.deployments.wait_until_ready().now_or_never().is_some()
            && s.pdbs.wait_until_ready().now_or_never().is_some()
            && s.ingresses.wait_until_ready().now_or_never().is_some()
            && s.service_accounts.wait_until_ready().now_or_never().is_some()
            && s.roles.wait_until_ready().now_or_never().is_some()
            && s.role_bindings.wait_until_ready().now_or_never().is_some()
            && s.network_policies.wait_until_ready().now_or_never().is_some()
            && s.resource_quotas.wait_until_ready().now_or_never().is_some()
            && s.limit_ranges.wait_until_ready().now_or_never().is_some();
        if ready {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn reconcile_stack(vc: &VisioCluster, ctx: &Context) -> Result<Action> {
    let ns = vc.namespace().unwrap_or_default();
    let name = vc.name_any();
    let uid = vc.uid().unwrap_or_default();
    // At start the VisioClusters can be listed before the children: never plan from empty caches.
    if !caches_ready(ctx).await {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    // Our Secret rights in this namespace before any Secret is read.
    if let Some(me) = &ctx.operator {
        if !super::secrets::ensure_rights(ctx, operator_secrets_binding(vc, me)?).await? {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    ctx.secrets.watch(&ns);
    // dereference
    let creds = credentials(vc, ctx).await?;
    // validate + build (pure)
    let stack = build_stack(vc, &creds, &ctx.config.agent_image)?;
    // apply
    apply_children(vc, ctx, &stack, &ns, &name, &uid).await?;
    // fleet
    let now = Timestamp::now();
    let pods: Vec<Arc<Pod>> = ctx
        .stores
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && is_child_of(p.as_ref(), &name, &uid))
        .collect();
    let spec = fleet_spec(vc)?;
    let snapshot = snapshot(ctx, &key_of(vc), &stack.sfu.hash, &pods, now);
    let plan = fleet::plan(&spec, &snapshot);
    remember_low_load(ctx, &key_of(vc), plan.low_load_since);
    let sfu = PodFleet {
        owner: vc,
        template: &stack.sfu.pod,
        prefix: crate::builders::labels::sfu_name(&name),
        noun: "SFU pod",
        holds: "meetings",
    };
    execute(ctx, &sfu, &pods, &plan.actions, now).await?;
    sync_pod_labels(ctx, &pods).await?;
    // status
    let status = build_status(vc, &stack, &pods, plan.desired, &snapshot);
    let mut next = vc.status.clone().unwrap_or_default();
    let lost = snapshot.pods.iter().filter(|p| matches!(p.phase, PodPhase::Serving)).count() as i32 - status.sfu.ready;
    let mut decided = decide_conditions(&status, vc, lost);
    // What the namespace's LimitRange and ResourceQuota (spec.tenant) would refuse of the stack's pods.
    let problems = quota::fit_problems(vc, &quota::stack_needs(vc, &stack));
    degrade_for_quota(&mut decided, &problems);
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
    let old_conditions = std::mem::take(&mut next.conditions);
    // Governance: recordings in a bucket that no RetentionPolicy of the namespace covers.
    decided.extend(crate::retention::governance::missing_condition(
        "spec.recordings",
        vc.spec.recordings.as_ref(),
        &ns,
        &ctx.stores.retention_policies,
        &old_conditions,
    ));
    next = VisioClusterStatus { conditions: old_conditions, ..status };
    set_conditions(&mut next, vc, &decided);
    let status_wait = if vc.status.as_ref() != Some(&next) { write_status(ctx, vc, &next).await? } else { None };
    export_metrics(ctx, &ns, &name, &next, &spec, &snapshot);
    let requeue = plan.requeue_after_ms.map(|ms| Duration::from_millis(ms.clamp(1000, 600_000) as u64));
    let requeue = [requeue, status_wait].into_iter().flatten().min();
    Ok(Action::requeue(requeue.unwrap_or(Duration::from_secs(600))))
}

/// Reads (or, the first time, generates) the tenant's credentials. Generated values live in the
/// owned `<name>-credentials` Secret, so they survive operator restarts and are never logged.
async fn credentials(vc: &VisioCluster, ctx: &Context) -> Result<Credentials> {
    let ns = vc.namespace().unwrap_or_default();
    let owned = apply::owned_secret(ctx, vc, &format!("{}-credentials", vc.name_any())).await?;
    let existing = |key: &str| -> Option<String> {
        owned.as_ref()?.data.as_ref()?.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let random = |n: usize| Alphanumeric.sample_string(&mut rand::rng(), n);
    let mut creds = Credentials {
        api_key: existing("apiKey").unwrap_or_else(|| format!("API{}", random(12))),
        api_secret: existing("apiSecret").unwrap_or_else(|| random(48)),
        redis_password: existing("redisPassword").unwrap_or_else(|| random(32)),
    };
    if let Some(keys) = &vc.spec.keys {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let secret = api.get_opt(&keys.secret_name).await?.ok_or_else(|| Error::Reference {
            reason: "keys_secret_missing",
            message: format!("spec.keys.secretName: Secret {:?} not found in namespace {ns}", keys.secret_name),
        })?;
        let field =
            |k: &str| secret.data.as_ref().and_then(|d| d.get(k)).and_then(|v| String::from_utf8(v.0.clone()).ok());
        match (field("apiKey"), field("apiSecret")) {
            (Some(k), Some(s)) if !k.is_empty() && s.len() >= 32 => {
                creds.api_key = k;
                creds.api_secret = s;
            }
            _ => {
                return Err(Error::Reference {
                    reason: "keys_secret_invalid",
                    message: format!(
                        "spec.keys.secretName: Secret {:?} must hold apiKey and apiSecret (at least 32 characters)",
                        keys.secret_name
                    ),
                })
            }
        }
    }
    if let Some(ext) = vc.spec.redis.external.as_ref() {
        if let Some(r) = &ext.password_secret {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            let secret = api.get_opt(&r.name).await?;
            let value = secret
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.get(&r.key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok());
            creds.redis_password = value.ok_or_else(|| Error::Reference {
                reason: "redis_secret_missing",
                message: format!(
                    "spec.redis.external.passwordSecret: key {:?} of Secret {:?} not found in namespace {ns}",
                    r.key, r.name
                ),
            })?;
        } else {
            creds.redis_password.clear();
        }
    }
    Ok(creds)
}

async fn apply_children(
    vc: &VisioCluster,
    ctx: &Context,
    stack: &Stack,
    ns: &str,
    name: &str,
    uid: &str,
) -> Result<()> {
    let s = &ctx.stores;
    // The LimitRange first: its defaults only reach pods created after it.
    let limit_ranges: Vec<LimitRange> = stack.limit_range.iter().cloned().collect();
    let quotas: Vec<ResourceQuota> = stack.resource_quota.iter().cloned().collect();
    for l in &limit_ranges {
        apply::ensure(ctx, &s.limit_ranges, l.clone()).await?;
    }
    for q in &quotas {
        apply::ensure(ctx, &s.resource_quotas, q.clone()).await?;
    }
    let mut secrets = vec![stack.config_secret.clone()];
    secrets.extend(stack.credentials_secret.clone());
    for secret in &secrets {
        super::secrets::ensure_secret(ctx, secret.clone()).await?;
    }
    // The agent's identity before any pod that runs as it.
    let agent = &stack.agent;
    super::fleet_pods::ensure_agent_access(ctx, agent).await?;
    let mut bindings = vec![agent.role_binding.clone()];
    if let Some(me) = &ctx.operator {
        bindings.push(operator_secrets_binding(vc, me)?);
    }
    if let Some(admins) = &stack.admin_binding {
        apply::ensure(ctx, &s.role_bindings, admins.clone()).await?;
        bindings.push(admins.clone());
    }
    let mut deployments = vec![];
    let mut services = stack.services.clone();
    if let Some((deploy, svc)) = &stack.redis {
        deployments.push(deploy.clone());
        services.push(svc.clone());
    }
    for d in &deployments {
        apply::ensure(ctx, &s.deployments, d.clone()).await?;
    }
    for svc in &services {
        apply::ensure(ctx, &s.services, svc.clone()).await?;
    }
    apply::ensure(ctx, &s.pdbs, stack.pdb.clone()).await?;
    for p in &stack.network_policies {
        apply::ensure(ctx, &s.network_policies, p.clone()).await?;
    }
    let ingresses: Vec<Ingress> = stack.ingress.iter().cloned().collect();
    for i in &ingresses {
        apply::ensure(ctx, &s.ingresses, i.clone()).await?;
    }
    // Children the spec no longer asks for (TURN switched off, Redis made external, ...).
    // Secrets only once the namespace's cache is full (an absent Secret is not an orphan).
    let secret_orphans = if ctx.secrets.is_ready(ns) {
        apply::delete_orphans(ctx, ctx.secrets.store(), ns, name, uid, &apply::names(&secrets)).await?
    } else {
        0
    };
    let pruned = secret_orphans
        + apply::delete_orphans(ctx, &s.deployments, ns, name, uid, &apply::names(&deployments)).await?
        + apply::delete_orphans(ctx, &s.services, ns, name, uid, &apply::names(&services)).await?
        + apply::delete_orphans(ctx, &s.pdbs, ns, name, uid, &apply::names([&stack.pdb])).await?
        + apply::delete_orphans(ctx, &s.ingresses, ns, name, uid, &apply::names(&ingresses)).await?
        + apply::delete_orphans(ctx, &s.service_accounts, ns, name, uid, &apply::names([&agent.service_account]))
            .await?
        + apply::delete_orphans(ctx, &s.roles, ns, name, uid, &apply::names([&agent.role])).await?
        + apply::delete_orphans(ctx, &s.role_bindings, ns, name, uid, &apply::names(&bindings)).await?
        + apply::delete_orphans(ctx, &s.network_policies, ns, name, uid, &apply::names(&stack.network_policies))
            .await?
        + apply::delete_orphans(ctx, &s.resource_quotas, ns, name, uid, &apply::names(&quotas)).await?
        + apply::delete_orphans(ctx, &s.limit_ranges, ns, name, uid, &apply::names(&limit_ranges)).await?;
    if pruned > 0 {
        ctx.event(
            vc,
            EventType::Normal,
            "ChildrenPruned",
            "Prune",
            format!("deleted {pruned} objects the spec no longer asks for"),
        )
        .await;
    }
    Ok(())
}

pub(super) fn ms(s: &str, field: &str) -> Result<i64> {
    crate::duration::parse(s)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| Error::Reference { reason: "invalid_duration", message: format!("{field}: {e}") })
}

/// The planner's view of the spec.
pub fn fleet_spec(vc: &VisioCluster) -> Result<FleetSpec> {
    let s = &vc.spec;
    Ok(FleetSpec {
        min: s.sfu.replicas.min.max(0) as u32,
        max: s.sfu.replicas.max.max(0) as u32,
        capacity_per_pod: s.sfu.capacity.participants_per_pod.max(1) as u32,
        buffer: s.autoscaling.participant_buffer.max(0) as u32,
        target_utilization_percent: s.autoscaling.target_utilization_percent.clamp(10, 100) as u32,
        scale_down_delay_ms: ms(&s.autoscaling.scale_down_delay, "spec.autoscaling.scaleDownDelay")?,
        max_surge: s.upgrade.max_surge.max(0) as u32,
        max_draining: s.upgrade.max_draining.max(0) as u32,
        drain_timeout_ms: ms(&s.upgrade.drain_timeout, "spec.upgrade.drainTimeout")?,
        warn_before_ms: ms(&s.upgrade.warn_before, "spec.upgrade.warnBefore")?,
    })
}

fn build_status(
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

/// Merges the decided conditions into `status`; returns whether anything changed.
fn set_conditions(status: &mut VisioClusterStatus, vc: &VisioCluster, decided: &[Decided]) -> bool {
    conditions::set(&mut status.conditions, &mut status.observed_generation, decided, vc.metadata.generation)
}

/// Writes the cluster's status; a count-only change may wait (see `status_pace`), and then the wait
/// is returned for the reconcile to come back after it.
async fn write_status(ctx: &Context, vc: &VisioCluster, status: &VisioClusterStatus) -> Result<Option<Duration>> {
    let old = vc.status.as_ref().map(|s| (s.conditions.as_slice(), s.observed_generation));
    let urgent = super::status_pace::urgent(old, (&status.conditions, status.observed_generation));
    super::write_status(ctx, vc, status, urgent).await
}

/// The tenant's series: pod counts and load from the status, and the figures the alerts compare
/// (headroom against buffer, drain age against drain timeout, unreported loads) from the
/// planner's spec and snapshot.
fn export_metrics(ctx: &Context, ns: &str, name: &str, status: &VisioClusterStatus, spec: &FleetSpec, snap: &Snapshot) {
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
    m.set_fleet(ns, name, &crate::telemetry::FleetFigures::of(spec, snap));
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
