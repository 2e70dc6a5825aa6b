//! What the fleet controllers share about their pods: reading a pod into the planner's
//! [`PodSnapshot`] (phase from readiness and the drain mark, load from the agent's annotation),
//! carrying out the planner's actions (create, drain, warn, end, delete), and keeping the routing
//! labels (`visio.io/serving`, `visio.io/in-use`) in line with what the pods report. Used by the
//! SFU fleet (VisioCluster) and the caption backend pool (CaptionPool).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::apply;
use super::error::{Error, Result};
use super::Context;
use crate::builders::labels::TEMPLATE_HASH_LABEL;
use crate::builders::sfu::AGENT_CONTAINER;
use crate::fleet::{self, Action as FleetAction, PodPhase, PodSnapshot, Snapshot};
use crate::pod_protocol::{self, DRAIN_SINCE, END_SESSIONS, IN_USE, SERVING, WARN_DEADLINE};

pub fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

pub fn label<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata.labels.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

pub fn parse_time(s: &str) -> Option<i64> {
    s.parse::<Timestamp>().ok().map(|t| t.as_millisecond())
}

pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the pod's agent container runs. The load annotation carries no timestamp, so a figure
/// written just before the agent died must not be read as current.
pub fn agent_running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| {
        cs.iter().any(|c| c.name == AGENT_CONTAINER && c.state.as_ref().is_some_and(|st| st.running.is_some()))
    })
}

/// The pod's reported load; an unparsable one, or one whose agent is not running, is unknown.
pub fn pod_load(p: &Pod) -> Option<pod_protocol::Load> {
    if !agent_running(p) {
        return None;
    }
    let text = annotation(p, pod_protocol::LOAD)?;
    match pod_protocol::parse_load(text) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(pod = %p.name_any(), error = %e, "ignoring load annotation: load unknown");
            None
        }
    }
}

/// The planner's view of one pod. `was_ready`: the pod was seen Ready before (see
/// [`remember_ready`]); such a pod that is not Ready now stays `Serving`, as the planner expects.
pub fn pod_snapshot(p: &Pod, was_ready: bool) -> PodSnapshot {
    let load = pod_load(p);
    let phase = if p.metadata.deletion_timestamp.is_some() {
        PodPhase::Terminating
    } else if matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed") | Some("Succeeded")) {
        PodPhase::Failed
    } else if let Some(since) = annotation(p, DRAIN_SINCE).and_then(parse_time) {
        PodPhase::Draining { since }
    } else if pod_ready(p) || was_ready {
        PodPhase::Serving
    } else {
        PodPhase::Pending
    };
    // A draining pod's load counts only once its agent reports it as draining (`draining: true`,
    // read after it told the backend to drain, which then takes no new session). A figure written
    // before the drain is stale by up to the agent's interval and report floor, and may miss the
    // sessions placed on the pod meanwhile: read as empty, it would have the pod deleted with them.
    let load = match phase {
        PodPhase::Draining { .. } => load.filter(|l| l.draining),
        _ => load,
    };
    PodSnapshot {
        name: p.name_any(),
        template_hash: label(p, TEMPLATE_HASH_LABEL).unwrap_or_default().to_string(),
        phase,
        load: load.map(|l| l.participants),
        sessions: load.map(|l| l.rooms),
        warned: annotation(p, WARN_DEADLINE).is_some(),
        created: p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_millisecond()).unwrap_or(0),
        // Set by `snapshot`, which knows the nodes.
        evacuate: false,
        drain_requested: annotation(p, pod_protocol::DRAIN_REQUESTED).is_some(),
    }
}

/// The pods a fleet created, by name: the template hash each was created with, and when (Unix ms).
///
/// Why: a reconcile that starts before the cache shows the pods the previous one created would plan
/// them again. Their names stop most such creates (`AlreadyExists`), but not when a name was freed in
/// between (a drained pod deleted): seen in the fleet suite as one pod over `maxSurge`. So until the
/// cache shows a created pod, or [`CREATED_TTL_MS`] passes, the planner sees it as Pending and no new
/// pod takes its name (Kubernetes' own ReplicaSet controller keeps "expectations" for the same reason).
pub type Created = BTreeMap<String, (String, i64)>;

/// How long a created pod the cache does not show is still counted (a watch that lags longer has
/// failed, and the next relist brings the pod anyway).
pub const CREATED_TTL_MS: i64 = 30_000;

/// The fleet's created pods the cache does not show yet (the others are forgotten).
fn expected(ctx: &Context, key: &str, pods: &[Arc<Pod>], now_ms: i64) -> Created {
    let cached: BTreeSet<String> = pods.iter().map(|p| p.name_any()).collect();
    ctx.created.update(key, |created| {
        created.retain(|name, (_, at)| !cached.contains(name) && now_ms.saturating_sub(*at) < CREATED_TTL_MS);
        created.clone()
    })
}

pub fn snapshot(ctx: &Context, key: &str, target_hash: &str, pods: &[Arc<Pod>], now: Timestamp) -> Snapshot {
    let low = ctx.low_load_since.get(key);
    let seen = remember_ready(ctx, key, pods);
    let created = expected(ctx, key, pods, now.as_millisecond());
    let lead = ctx.startups.update(key, |kept| super::startup::record(kept, pods));
    let mut pods: Vec<PodSnapshot> = pods
        .iter()
        .map(|p| PodSnapshot {
            evacuate: super::nodes::on_cordoned_node(&ctx.stores.nodes, p),
            ..pod_snapshot(p, seen.contains(p.uid().as_deref().unwrap_or_default()))
        })
        .collect();
    // Created by us, not in the cache yet: Pending, as the apiserver holds them.
    pods.extend(created.into_iter().map(|(name, (hash, at))| PodSnapshot {
        name,
        template_hash: hash,
        phase: PodPhase::Pending,
        load: None,
        sessions: None,
        warned: false,
        created: at,
        evacuate: false,
        drain_requested: false,
    }));
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    Snapshot {
        now: now.as_millisecond(),
        target_hash: target_hash.to_string(),
        pods,
        low_load_since: low,
        startup_lead_ms: lead,
    }
}

/// Records which of the fleet's pods are Ready now and returns every current pod seen Ready at least
/// once (the memory keeps only current pods). After an operator restart the memory is empty: a pod
/// that holds sessions (its agent says so) has served, whatever its readiness now.
fn remember_ready(ctx: &Context, key: &str, pods: &[Arc<Pod>]) -> std::collections::BTreeSet<String> {
    let mut all = ctx.ready_seen.lock();
    let before = all.remove(key).unwrap_or_default();
    let seen: std::collections::BTreeSet<String> = pods
        .iter()
        .filter_map(|p| {
            let uid = p.uid()?;
            let held = pod_load(p).is_some_and(|l| l.participants > 0 || l.rooms > 0);
            (pod_ready(p) || held || before.contains(&uid)).then_some(uid)
        })
        .collect();
    if !seen.is_empty() {
        all.insert(key.to_string(), seen.clone());
    }
    seen
}

pub fn remember_low_load(ctx: &Context, key: &str, since: Option<i64>) {
    ctx.low_load_since.set(key, since);
}

/// Lowest free pod indexes: pod names are `<prefix>-<n>` (`<cluster>-sfu-<n>`), so a create retried
/// after a crash or a lagging cache hits AlreadyExists instead of making a duplicate.
pub fn free_names(prefix: &str, pods: &[Arc<Pod>], taken: &[String], count: u32) -> Vec<String> {
    let used: BTreeSet<String> = pods.iter().map(|p| p.name_any()).chain(taken.iter().cloned()).collect();
    (0..).map(|i| format!("{prefix}-{i}")).filter(|n| !used.contains(n)).take(count as usize).collect()
}

/// Whether `pod`'s agent can be asked to end the sessions left on it: always, unless the fleet's template
/// says its agents end only their own rooms ([`pod_protocol::AGENT_ENDS`]) and this pod, made by an earlier
/// release, does not.
pub fn ends_own_sessions(pod: &Pod, template: &Pod) -> bool {
    let ends = |p: &Pod| annotation(p, pod_protocol::AGENT_ENDS).map(str::to_owned);
    match ends(template) {
        None => true,
        Some(required) => ends(pod).as_deref() == Some(required.as_str()),
    }
}

pub async fn patch_pod_meta(ctx: &Context, ns: &str, name: &str, patch: serde_json::Value) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    ctx.metrics.child_writes.with_label_values(&["Pod", "patch"]).inc();
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The pods of one fleet, as [`execute`] creates and names them.
pub struct PodFleet<'a, K> {
    /// The custom resource owning the pods.
    pub owner: &'a K,
    /// The pod to create (no name; the owner reference is set here).
    pub template: &'a Pod,
    /// Pod names are `<prefix>-<n>`.
    pub prefix: String,
    /// The fleet's key in the planner's memories (the one its snapshot was taken with).
    pub key: String,
    /// What a pod is, for Events (`SFU pod`, `caption backend pod`).
    pub noun: &'static str,
    /// What a pod holds, for Events (`meetings`, `streams`).
    pub holds: &'static str,
}

/// Carries out the planner's actions on the pods of `fleet`.
pub async fn execute<K>(
    ctx: &Context,
    fleet: &PodFleet<'_, K>,
    pods: &[Arc<Pod>],
    actions: &[FleetAction],
    now: Timestamp,
) -> Result<()>
where
    K: Resource<DynamicType = ()>,
{
    let owner = fleet.owner;
    let (noun, holds) = (fleet.noun, fleet.holds);
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let find = |name: &str| pods.iter().find(|p| p.name_any() == name);
    for action in actions {
        match action {
            FleetAction::Create { count } => {
                let taken: Vec<String> = ctx.created.get(&fleet.key).unwrap_or_default().into_keys().collect();
                for name in free_names(&fleet.prefix, pods, &taken, *count) {
                    let mut pod = fleet.template.clone();
                    pod.metadata.name = Some(name.clone());
                    pod.metadata.generate_name = None;
                    pod.metadata.namespace = Some(ns.clone());
                    pod.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap_or_default()]);
                    // Born serving and in use: no load is known yet, and unknown load counts as in use
                    // (`sync_pod_labels`), so the disruption budget covers the pod from its first
                    // meeting on, and no label patch follows its creation.
                    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
                    labels.insert(SERVING.into(), "true".into());
                    labels.insert(IN_USE.into(), "true".into());
                    match apply::create(ctx, &pod).await {
                        Ok(true) => {
                            tracing::info!(pod = %name, "created {noun}");
                            let hash = label(&pod, TEMPLATE_HASH_LABEL).unwrap_or_default().to_string();
                            let at = now.as_millisecond();
                            ctx.created.update(&fleet.key, |c| c.insert(name.clone(), (hash, at)));
                        }
                        Ok(false) => {}
                        // The namespace's quota or LimitRange refuses the pod: say so and go on with the
                        // other actions (drains, status), and try again on the next reconcile.
                        Err(Error::Kube(kube::Error::Api(s))) if apply::refused_by_quota_or_limits(&s) => {
                            tracing::warn!(pod = %name, message = %s.message, "{noun} refused by the namespace's quota or LimitRange");
                            let note = format!("cannot create {noun} {name}: {}", s.message);
                            ctx.event(owner, EventType::Warning, "PodRefusedByQuota", "Scale", note).await;
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                ctx.event(owner, EventType::Normal, "ScaledUp", "Scale", format!("creating {count} {noun}(s)")).await;
            }
            FleetAction::Drain { pod, reason } => {
                patch_pod_meta(
                    ctx,
                    &ns,
                    pod,
                    json!({"metadata": {"annotations": {DRAIN_SINCE: now.to_string()}, "labels": {SERVING: "false"}}}),
                )
                .await?;
                ctx.event(
                    owner,
                    EventType::Normal,
                    "DrainStarted",
                    "Drain",
                    format!("draining {noun} {pod} ({reason:?}): no new {holds}, existing ones continue"),
                )
                .await;
            }
            FleetAction::Warn { pod, deadline } => {
                let deadline = Timestamp::from_millisecond(*deadline).unwrap_or(now);
                patch_pod_meta(
                    ctx,
                    &ns,
                    pod,
                    json!({"metadata": {"annotations": {WARN_DEADLINE: deadline.to_string()}}}),
                )
                .await?;
                ctx.event(
                    owner,
                    EventType::Warning,
                    "DrainDeadlineNear",
                    "Warn",
                    format!("{noun} {pod} still holds {holds}; participants warned, sessions end at {deadline}"),
                )
                .await;
            }
            FleetAction::ForceEnd { pod } => {
                if let Some(p) = find(pod).filter(|p| !ends_own_sessions(p, fleet.template)) {
                    // An agent from before 0.2 would end every room of the tenant. Deleting the pod ends
                    // only its own: kubelet's SIGTERM is the second one for the draining LiveKit, which
                    // then disconnects its own participants and exits.
                    apply::delete(ctx, p.as_ref(), Some(30)).await?;
                    ctx.event(
                        owner,
                        EventType::Warning,
                        "DrainDeadlinePassed",
                        "Delete",
                        format!("{noun} {pod} passed its drain deadline; its agent predates 0.2: deleting the pod ends its {holds}"),
                    )
                    .await;
                    continue;
                }
                // The planner repeats ForceEnd until the pod is empty; the mark is written once.
                if find(pod).is_some_and(|p| annotation(p, END_SESSIONS) == Some("true")) {
                    continue;
                }
                patch_pod_meta(ctx, &ns, pod, json!({"metadata": {"annotations": {END_SESSIONS: "true"}}})).await?;
                ctx.event(
                    owner,
                    EventType::Warning,
                    "DrainDeadlinePassed",
                    "EndSessions",
                    format!("{noun} {pod} passed its drain deadline: ending its remaining sessions"),
                )
                .await;
            }
            FleetAction::Delete { pod, reason } => {
                if let Some(p) = find(pod) {
                    // Past its deadline the pod's sessions were ended: do not grant it the long grace
                    // period (drainTimeout + 60 s) a second time.
                    let grace = matches!(reason, fleet::DeleteReason::DeadlinePassed).then_some(30);
                    apply::delete(ctx, p.as_ref(), grace).await?;
                    ctx.event(
                        owner,
                        EventType::Normal,
                        "PodDeleted",
                        "Delete",
                        format!("deleted {noun} {pod} ({reason:?})"),
                    )
                    .await;
                }
            }
        }
    }
    Ok(())
}

/// Keeps the routing labels in line with what the pods report: `serving` follows draining,
/// `in-use` follows the reported load (unknown load counts as in use, so a node drain cannot evict it).
pub async fn sync_pod_labels(ctx: &Context, pods: &[Arc<Pod>]) -> Result<()> {
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let serving = if annotation(p, DRAIN_SINCE).is_some() { "false" } else { "true" };
        let in_use = match pod_load(p) {
            Some(l) if l.participants == 0 && l.rooms == 0 => "false",
            _ => "true",
        };
        if label(p, SERVING) != Some(serving) || label(p, IN_USE) != Some(in_use) {
            let ns = p.namespace().unwrap_or_default();
            patch_pod_meta(
                ctx,
                &ns,
                &p.name_any(),
                json!({"metadata": {"labels": {SERVING: serving, IN_USE: in_use}}}),
            )
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Ready SFU pod whose agent runs, with these annotations.
    fn pod(annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "visio-sfu-0", "annotations": annotations},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": AGENT_CONTAINER, "image": "a", "imageID": "", "ready": true,
                                       "restartCount": 0, "state": {"running": {}}}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn an_agent_from_before_0_2_is_never_asked_to_end_sessions() {
        let sfu_template = pod(json!({pod_protocol::AGENT_ENDS: pod_protocol::AGENT_ENDS_OWN_ROOMS}));
        let current = pod(json!({pod_protocol::AGENT_ENDS: "own-rooms", DRAIN_SINCE: "2026-11-27T10:00:00Z"}));
        let earlier = pod(json!({DRAIN_SINCE: "2026-11-27T10:00:00Z"}));
        let unknown_kind = pod(json!({pod_protocol::AGENT_ENDS: "every-room"}));
        assert!(ends_own_sessions(&current, &sfu_template));
        assert!(!ends_own_sessions(&earlier, &sfu_template));
        assert!(!ends_own_sessions(&unknown_kind, &sfu_template));
        // Fleets whose template does not say (caption backends) are asked as before.
        let caption_template = pod(json!({}));
        assert!(ends_own_sessions(&earlier, &caption_template));
    }

    #[test]
    fn a_drain_request_is_read_from_its_annotation() {
        assert!(!pod_snapshot(&pod(json!({})), true).drain_requested);
        let asked = pod_snapshot(&pod(json!({pod_protocol::DRAIN_REQUESTED: "kubectl-visio"})), true);
        assert!(asked.drain_requested);
        assert_eq!(asked.phase, PodPhase::Serving, "a request alone does not drain: the planner decides when");
    }

    #[test]
    fn a_draining_pod_is_empty_only_once_its_agent_reports_the_drain() {
        let since = "2026-11-27T10:00:00Z";
        let before = r#"{"participants":0,"rooms":0,"draining":false}"#;
        let after = r#"{"participants":0,"rooms":0,"draining":true}"#;
        // Serving: the report counts as it is.
        let s = pod_snapshot(&pod(json!({pod_protocol::LOAD: before})), false);
        assert_eq!((s.phase, s.load, s.sessions), (PodPhase::Serving, Some(0), Some(0)));
        // Draining, with a figure written before the drain: unknown, so never deleted as empty.
        let s = pod_snapshot(&pod(json!({pod_protocol::LOAD: before, DRAIN_SINCE: since})), false);
        assert!(matches!(s.phase, PodPhase::Draining { .. }));
        assert_eq!((s.load, s.sessions), (None, None));
        // Draining, and the agent says its backend drains: the figure counts.
        let s = pod_snapshot(&pod(json!({pod_protocol::LOAD: after, DRAIN_SINCE: since})), false);
        assert_eq!((s.load, s.sessions), (Some(0), Some(0)));
    }

    #[test]
    fn a_pod_that_lost_readiness_still_serves() {
        let mut p = pod(json!({pod_protocol::LOAD: r#"{"participants":12,"rooms":2,"draining":false}"#}));
        if let Some(c) = p.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c[0].status = "False".into();
        }
        // Never seen ready: not capacity yet.
        assert_eq!(pod_snapshot(&p, false).phase, PodPhase::Pending);
        // Seen ready before (Redis went away): still serving its meetings, still capacity.
        assert_eq!(pod_snapshot(&p, true).phase, PodPhase::Serving);
    }
}
