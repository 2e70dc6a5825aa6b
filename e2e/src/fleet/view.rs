//! The pods as the harness last listed them ([`PodView`]), and a copy of everything the harness knows
//! at one instant ([`View`]), for the scenarios to wait on and assert.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{ensure, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use visio_operator::pod_protocol::{self, Load};

use super::books::{Meeting, MeetingStatus, Outcome};

/// One SFU pod as the harness last listed it.
#[derive(Clone, Debug)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    /// `metadata.creationTimestamp`, Unix milliseconds (the API gives whole seconds).
    pub created_ms: Option<i64>,
    /// When the harness first listed it, Unix milliseconds.
    pub first_seen_ms: i64,
    /// kwok marked it Running.
    pub running: bool,
    /// It carries a deletionTimestamp.
    pub terminating: bool,
    /// Label `visio.io/serving=true`.
    pub serving: bool,
    /// Annotation `visio.io/drain-since`.
    pub drain_since: Option<String>,
    /// Annotation `visio.io/warn-deadline`.
    pub warn_deadline: Option<String>,
    /// Annotation `visio.io/end-sessions: "true"`.
    pub end_sessions: bool,
    pub template_hash: String,
    pub version: String,
    /// The agent's `visio.io/load`, when present and valid.
    pub load: Option<Load>,
}

impl PodView {
    pub(super) fn of(p: &Pod, first_seen_ms: i64, baseline: bool) -> Self {
        let ann = |k: &str| p.metadata.annotations.as_ref().and_then(|a| a.get(k)).cloned();
        let label = |k: &str| p.metadata.labels.as_ref().and_then(|a| a.get(k)).cloned();
        PodView {
            name: p.name_any(),
            uid: p.uid().unwrap_or_default(),
            created_ms: p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_millisecond()),
            first_seen_ms,
            running: p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
            terminating: p.metadata.deletion_timestamp.is_some(),
            serving: if baseline {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            } else {
                label(pod_protocol::SERVING).as_deref() == Some("true")
            },
            drain_since: ann(pod_protocol::DRAIN_SINCE),
            warn_deadline: ann(pod_protocol::WARN_DEADLINE),
            end_sessions: ann(pod_protocol::END_SESSIONS).as_deref() == Some("true"),
            template_hash: label("visio.io/template-hash").or_else(|| label("pod-template-hash")).unwrap_or_default(),
            version: label("visio.io/livekit-version").unwrap_or_default(),
            load: ann(pod_protocol::LOAD).and_then(|t| pod_protocol::parse_load(&t).ok()),
        }
    }
}

/// A copy of the harness's view at one instant.
#[derive(Clone, Debug)]
pub struct View {
    /// The SFU pods of the last listing, by name.
    pub pods: BTreeMap<String, PodView>,
    /// Pods whose stand-in runs (by name).
    pub live: BTreeSet<String>,
    pub meetings: BTreeMap<String, Meeting>,
    pub outcome: Outcome,
    /// Baseline: processes of deleted pods still running (Terminating pods, in a real cluster).
    pub lingering: usize,
}

impl View {
    /// Pods without a deletionTimestamp.
    pub fn active(&self) -> impl Iterator<Item = &PodView> {
        self.pods.values().filter(|p| !p.terminating)
    }

    pub fn open_meetings(&self) -> usize {
        self.meetings.values().filter(|m| m.status == MeetingStatus::Open).count()
    }

    /// Participants of open meetings on each pod.
    pub fn participants_by_pod(&self) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for m in self.meetings.values().filter(|m| m.status == MeetingStatus::Open) {
            *out.entry(m.pod.clone()).or_insert(0) += m.participants;
        }
        out
    }
}

impl View {
    /// The one template hash of the active pods (an error if they run several).
    pub fn only_hash(&self) -> Result<String> {
        let hashes: BTreeSet<&str> = self.active().map(|p| p.template_hash.as_str()).collect();
        ensure!(hashes.len() == 1, "pods of several templates: {hashes:?}");
        Ok(hashes.into_iter().next().unwrap_or_default().to_string())
    }
}
