//! What `kubectl visio status` shows of one tenant, computed from the objects as the apiserver returns
//! them. Pure: no I/O, the clock is an input, so every line of the screen is unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use visio_operator::api::{CaptionPool, RetentionPolicy, VisioCluster};
use visio_operator::builders::labels::Component;
use visio_operator::builders::labels::{CLUSTER_LABEL, COMPONENT_LABEL, VERSION_LABEL};
use visio_operator::pod_protocol::{self, DRAIN_REQUESTED, DRAIN_SINCE, END_SESSIONS, SERVING, WARN_DEADLINE};

/// How many Warning events the screen shows (the newest).
pub const WARNINGS_SHOWN: usize = 10;

/// One tenant's screen (also what `-o json|yaml` prints).
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub namespace: String,
    pub name: String,
    pub display_name: String,
    /// Ready / Reconciling / Stalled as the operator last wrote them (`status` of each condition).
    pub conditions: BTreeMap<String, ConditionView>,
    pub version: Option<String>,
    /// Present while an upgrade rolls.
    pub upgrade: Option<UpgradeView>,
    pub drain_timeout: String,
    pub rooms: i64,
    pub participants: i64,
    pub capacity: i64,
    pub pods: Vec<PodView>,
    pub caption_pools: Vec<CaptionPoolView>,
    pub retention_policies: Vec<RetentionView>,
    pub firewall: Vec<FirewallView>,
    pub warnings: Vec<WarningView>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeView {
    pub from: String,
    pub to: String,
    pub updated: i32,
    pub total: i32,
}

/// Where an SFU pod is, as the operator's marks say.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum PodState {
    /// Takes new meetings.
    Serving,
    /// Keeps its meetings, takes no new ones.
    Draining,
    /// Not ready yet.
    Pending,
    /// Being deleted.
    Terminating,
}

impl PodState {
    pub fn as_str(self) -> &'static str {
        match self {
            PodState::Serving => "serving",
            PodState::Draining => "draining",
            PodState::Pending => "pending",
            PodState::Terminating => "terminating",
        }
    }
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    pub name: String,
    pub state: PodState,
    pub version: Option<String>,
    pub node: Option<String>,
    /// `None` while the agent has not reported (or its report is unreadable).
    pub rooms: Option<u32>,
    pub participants: Option<u32>,
    pub drain_since: Option<String>,
    /// When the meetings left are ended: drain start + drainTimeout.
    pub drain_deadline: Option<String>,
    /// The participants were warned (the deadline they were told).
    pub warned_deadline: Option<String>,
    pub sessions_ended: bool,
    /// Someone asked for its drain (`kubectl visio drain`) and the operator has not started it yet.
    pub drain_requested: bool,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaptionPoolView {
    pub name: String,
    pub slots_used: i64,
    pub slots_total: i64,
    pub slots_rejected: i64,
    pub backends_ready: i32,
    pub backends_desired: i32,
    pub backends_draining: i32,
    pub backends_unschedulable: i32,
    pub ready: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionView {
    pub name: String,
    pub mode: String,
    pub last_run_finished: Option<String>,
    pub last_run_deleted: Option<i64>,
    pub last_run_errors: Option<i64>,
    pub last_success: Option<String>,
    pub next_run: Option<String>,
    pub in_progress: bool,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FirewallView {
    pub purpose: String,
    pub protocol: String,
    pub port: i32,
    pub from: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WarningView {
    pub last_seen: Option<String>,
    pub object: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
}

/// Whether `pod` is an SFU pod of the VisioCluster `vc`: the SFU component label, and `vc` as its
/// controlling owner (its uid, so a pod that only copies the labels is not one).
pub fn is_sfu_pod_of(pod: &Pod, vc: &VisioCluster) -> bool {
    let label = |k: &str| pod.labels().get(k).map(String::as_str);
    let uid = vc.metadata.uid.as_deref().unwrap_or_default();
    label(COMPONENT_LABEL) == Some(Component::Sfu.as_str())
        && label(CLUSTER_LABEL) == vc.metadata.name.as_deref()
        && pod.owner_references().iter().any(|o| o.controller == Some(true) && o.kind == "VisioCluster" && o.uid == uid)
        && pod.namespace() == vc.namespace()
}

fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.annotations().get(key).map(String::as_str)
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn deadline(since: &str, timeout: &str) -> Option<String> {
    let since: Timestamp = since.parse().ok()?;
    let timeout = visio_operator::duration::parse(timeout).ok()?;
    let ms = i64::try_from(timeout.as_millis()).ok()?;
    Timestamp::from_millisecond(since.as_millisecond().checked_add(ms)?).ok().map(|t| t.to_string())
}

/// One SFU pod.
pub fn pod_view(p: &Pod, drain_timeout: &str) -> PodView {
    let since = annotation(p, DRAIN_SINCE).map(str::to_owned);
    let state = if p.metadata.deletion_timestamp.is_some() {
        PodState::Terminating
    } else if since.is_some() {
        PodState::Draining
    } else if ready(p) && p.labels().get(SERVING).map(String::as_str) != Some("false") {
        PodState::Serving
    } else {
        PodState::Pending
    };
    let load = annotation(p, pod_protocol::LOAD).and_then(|t| pod_protocol::parse_load(t).ok());
    PodView {
        name: p.name_any(),
        state,
        version: p.labels().get(VERSION_LABEL).cloned(),
        node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
        rooms: load.map(|l| l.rooms),
        participants: load.map(|l| l.participants),
        drain_deadline: since.as_deref().and_then(|s| deadline(s, drain_timeout)),
        drain_since: since,
        warned_deadline: annotation(p, WARN_DEADLINE).map(str::to_owned),
        sessions_ended: annotation(p, END_SESSIONS) == Some("true"),
        drain_requested: annotation(p, DRAIN_REQUESTED).is_some() && annotation(p, DRAIN_SINCE).is_none(),
    }
}

fn time_string(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<String> {
    t.as_ref().map(|t| t.0.to_string())
}

/// The Warning events about the tenant's objects, newest first, at most [`WARNINGS_SHOWN`].
pub fn warnings(events: &[Event]) -> Vec<WarningView> {
    let when = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or(e.event_time.as_ref().map(|t| t.0))
            .or(e.first_timestamp.as_ref().map(|t| t.0))
            .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    let mut shown: Vec<&Event> = events.iter().filter(|e| e.type_.as_deref() == Some("Warning")).collect();
    shown.sort_by_key(|e| std::cmp::Reverse(when(e)));
    shown
        .into_iter()
        .take(WARNINGS_SHOWN)
        .map(|e| WarningView {
            last_seen: when(e).map(|t| t.to_string()),
            object: format!(
                "{}/{}",
                e.involved_object.kind.as_deref().unwrap_or_default(),
                e.involved_object.name.as_deref().unwrap_or_default()
            ),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            count: e.count.unwrap_or(1),
        })
        .collect()
}

/// The tenant screen of `vc`: its SFU pods among `pods`, the caption pools that use it, the namespace's
/// retention policies, and the Warning events of the namespace.
pub fn tenant_view(
    vc: &VisioCluster,
    pods: &[Pod],
    pools: &[CaptionPool],
    policies: &[RetentionPolicy],
    events: &[Event],
) -> TenantView {
    let status = vc.status.clone().unwrap_or_default();
    let drain_timeout = vc.spec.upgrade.drain_timeout.clone();
    let mut sfu: Vec<PodView> =
        pods.iter().filter(|p| is_sfu_pod_of(p, vc)).map(|p| pod_view(p, &drain_timeout)).collect();
    sfu.sort_by(|a, b| a.name.cmp(&b.name));
    // Mid-upgrade the operator's `status.version` is empty (the pods run two versions): the versions being
    // replaced are read from the pods' version labels.
    let upgrade = status.target_version.as_ref().and_then(|to| {
        let old: std::collections::BTreeSet<&str> =
            sfu.iter().filter_map(|p| p.version.as_deref()).filter(|v| *v != to.as_str()).collect();
        let from = match (old.is_empty(), &status.version) {
            (false, _) => old.into_iter().collect::<Vec<_>>().join(","),
            (true, Some(v)) if v != to => v.clone(),
            (true, None) if status.sfu.updated < status.sfu.current => "?".into(),
            _ => return None,
        };
        Some(UpgradeView { from, to: to.clone(), updated: status.sfu.updated, total: status.sfu.current })
    });
    let name = vc.name_any();
    TenantView {
        namespace: vc.namespace().unwrap_or_default(),
        name: name.clone(),
        display_name: vc.spec.tenant.display_name.clone(),
        conditions: status
            .conditions
            .iter()
            .map(|c| {
                (
                    c.type_.clone(),
                    ConditionView { status: c.status.clone(), reason: c.reason.clone(), message: c.message.clone() },
                )
            })
            .collect(),
        version: status.version.clone(),
        upgrade,
        drain_timeout,
        rooms: status.load.rooms,
        participants: status.load.participants,
        capacity: status.load.capacity,
        pods: sfu,
        caption_pools: pools
            .iter()
            .filter(|p| p.spec.cluster_ref.name == name)
            .map(|p| {
                let s = p.status.clone().unwrap_or_default();
                CaptionPoolView {
                    name: p.name_any(),
                    slots_used: s.slots.used,
                    slots_total: s.slots.total,
                    slots_rejected: s.slots.rejected,
                    backends_ready: s.backends.ready,
                    backends_desired: s.backends.desired,
                    backends_draining: s.backends.draining,
                    backends_unschedulable: s.backends.unschedulable,
                    ready: s.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone()),
                }
            })
            .collect(),
        retention_policies: policies
            .iter()
            .map(|p| {
                let s = p.status.clone().unwrap_or_default();
                RetentionView {
                    name: p.name_any(),
                    mode: serde_json::to_value(p.spec.mode)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    last_run_finished: s.last_run.as_ref().and_then(|r| time_string(&r.finished)),
                    last_run_deleted: s.last_run.as_ref().map(|r| r.deleted),
                    last_run_errors: s.last_run.as_ref().map(|r| r.errors),
                    last_success: time_string(&s.last_success),
                    next_run: time_string(&s.next_run),
                    in_progress: s.in_progress.is_some(),
                }
            })
            .collect(),
        firewall: status
            .firewall
            .iter()
            .map(|f| FirewallView {
                purpose: f.purpose.clone(),
                protocol: f.protocol.clone(),
                port: f.port,
                from: f.from.clone(),
            })
            .collect(),
        warnings: warnings(events),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn mid_upgrade() -> TenantView {
        let vc: VisioCluster = serde_json::from_value(json!({
            "apiVersion": "visio.io/v1alpha1", "kind": "VisioCluster",
            "metadata": {"name": "vc", "namespace": "t", "uid": "u1"},
            "spec": {"version": "v1.9.12", "tenant": {"displayName": "Ministry"}, "signaling": {"host": "t.example"},
                     "upgrade": {"drainTimeout": "30m"}},
            "status": {"version": "v1.9.11", "targetVersion": "v1.9.12",
                       "sfu": {"desired": 2, "current": 3, "ready": 3, "updated": 1, "draining": 1},
                       "load": {"rooms": 4, "participants": 9, "capacity": 200},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                                       "lastTransitionTime": "2026-12-05T03:00:00Z"}],
                       "firewall": [{"purpose": "media", "protocol": "UDP", "port": 7882, "from": "0.0.0.0/0"}]}
        }))
        .unwrap();
        let pod = |name: &str, version: &str, ann: serde_json::Value, ready: bool, owner: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "t", "annotations": ann,
                             "labels": {COMPONENT_LABEL: "sfu", CLUSTER_LABEL: "vc", VERSION_LABEL: version},
                             "ownerReferences": [{"apiVersion": "visio.io/v1alpha1", "kind": "VisioCluster", "name": "vc",
                                                  "uid": owner, "controller": true}]},
                "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .unwrap()
        };
        let load = r#"{"participants":5,"rooms":2,"draining":true}"#;
        let pods = [
            pod(
                "vc-sfu-0",
                "v1.9.11",
                json!({DRAIN_SINCE: "2026-12-05T03:00:00Z", pod_protocol::LOAD: load}),
                true,
                "u1",
            ),
            pod("vc-sfu-1", "v1.9.11", json!({DRAIN_REQUESTED: "x"}), true, "u1"),
            pod("vc-sfu-2", "v1.9.12", json!({}), false, "u1"),
            pod("intruder", "v1.9.12", json!({}), true, "someone-else"),
        ];
        let warning: Event = serde_json::from_value(json!({
            "metadata": {"name": "e"}, "type": "Warning", "reason": "DrainDeadlineNear", "message": "warned", "count": 2,
            "involvedObject": {"kind": "VisioCluster", "name": "vc"}, "lastTimestamp": "2026-12-05T03:20:00Z"
        }))
        .unwrap();
        let normal: Event = serde_json::from_value(json!({
            "metadata": {"name": "n"}, "type": "Normal", "reason": "ScaledUp", "involvedObject": {}
        }))
        .unwrap();
        tenant_view(&vc, &pods, &[], &[], &[warning, normal])
    }

    #[test]
    fn a_tenant_mid_upgrade() {
        let t = mid_upgrade();
        assert_eq!(t.upgrade, Some(UpgradeView { from: "v1.9.11".into(), to: "v1.9.12".into(), updated: 1, total: 3 }));
        let states: Vec<(&str, PodState)> = t.pods.iter().map(|p| (p.name.as_str(), p.state)).collect();
        assert_eq!(
            states,
            [("vc-sfu-0", PodState::Draining), ("vc-sfu-1", PodState::Serving), ("vc-sfu-2", PodState::Pending)],
            "a pod another owner holds is not the tenant's"
        );
        let draining = &t.pods[0];
        assert_eq!(draining.drain_deadline.as_deref(), Some("2026-12-05T03:30:00Z"));
        assert_eq!((draining.rooms, draining.participants), (Some(2), Some(5)));
        assert!(t.pods[1].drain_requested && !t.pods[0].drain_requested);
        assert_eq!((t.pods[2].rooms, t.pods[2].participants), (None, None));
        assert_eq!(t.warnings.len(), 1);
        assert_eq!(t.warnings[0].reason, "DrainDeadlineNear");
        assert_eq!(t.firewall[0].port, 7882);
    }

    #[test]
    fn the_text_screen() {
        let text = crate::render::tenant(&mid_upgrade());
        let plain = anstream::adapter::strip_str(&text).to_string();
        for want in [
            "VisioCluster t/vc (Ministry)  Ready",
            "upgrade      v1.9.11 -> v1.9.12, 1/3 pods updated",
            "vc-sfu-0  draining",
            "2026-12-05T03:30:00Z",
            "drain requested",
            "media    UDP       7882  0.0.0.0/0",
            "DrainDeadlineNear  warned (x2)",
        ] {
            assert!(plain.contains(want), "{want:?} not in\n{plain}");
        }
        assert!(!plain.contains("intruder"));
        assert!(text.contains('\u{1b}'), "styles are written; anstream strips them off a terminal");
    }

    #[test]
    fn a_tenant_cannot_write_to_the_terminal() {
        let mut t = mid_upgrade();
        t.display_name = "Min\u{1b}[2J\u{1b}]0;pwned\u{7}istère".into();
        t.warnings[0].message = "line\r\nFAKE  serving".into();
        let plain = anstream::adapter::strip_str(&crate::render::tenant(&t)).to_string();
        assert!(plain.contains("Min\\u{1b}[2J\\u{1b}]0;pwned\\u{7}istère"), "{plain}");
        assert!(plain.contains("line\\r\\nFAKE"), "{plain}");
        assert!(!plain.contains('\r') && !plain.contains('\u{7}'));
    }
}
