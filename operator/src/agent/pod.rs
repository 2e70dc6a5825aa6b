//! The agent's own pod: the marks the operator writes on it, and the load annotation the agent writes.
//!
//! [`OwnPod`] is the seam between the agent's loop and Kubernetes. [`KubePod`] is the real one (a watch on
//! the pod by field selector, JSON merge patches of one annotation); tests drive the loop with an in-memory
//! implementation instead.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::json;

use crate::pod_protocol::{self, Load, DRAIN_SINCE, END_SESSIONS, WARN_DEADLINE};

/// Field manager of the agent's writes.
pub const FIELD_MANAGER: &str = "visio-agent";
/// Deadline of one write to the API server.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the operator asks of the pod, read from its annotations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// `visio.io/drain-since`: present once the operator drains the pod.
    pub drain_since: Option<String>,
    /// `visio.io/warn-deadline`: when the remaining sessions will be ended (RFC 3339).
    pub warn_deadline: Option<String>,
    /// `visio.io/end-sessions: "true"`: end the remaining sessions now.
    pub end_sessions: bool,
}

impl Marks {
    /// The marks in a pod's annotations.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        Marks {
            drain_since: annotations.get(DRAIN_SINCE).cloned(),
            warn_deadline: annotations.get(WARN_DEADLINE).cloned(),
            end_sessions: annotations.get(END_SESSIONS).is_some_and(|v| v == "true"),
        }
    }

    /// The marks on `pod`.
    pub fn from_pod(pod: &Pod) -> Self {
        pod.metadata.annotations.as_ref().map(Self::from_annotations).unwrap_or_default()
    }
}

/// Why a write to the pod failed.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("writing the load annotation: {0}")]
    Write(String),
    #[error("writing the load annotation: no answer within {0:?}")]
    Timeout(Duration),
}

/// The agent's view of its own pod.
pub trait OwnPod: Send + Sync {
    /// The marks, each time the pod changes (the first item is the current state). The stream may end (a
    /// test source that has nothing more to say); the agent then keeps the last marks it saw.
    fn marks(&self) -> BoxStream<'static, Marks>;

    /// Writes the load annotation (`Some`), or removes it (`None`: load unknown).
    fn write_load(&self, load: Option<Load>) -> impl Future<Output = Result<(), PodError>> + Send;
}

/// The pod in Kubernetes, reached with the agent's ServiceAccount (get, list, watch, patch on pods).
#[derive(Clone)]
pub struct KubePod {
    api: Api<Pod>,
    name: String,
    deletion_cost: bool,
}

impl KubePod {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self { api: Api::namespaced(client, namespace), name: name.to_string(), deletion_cost: false }
    }

    /// Also sets [`DELETION_COST`] to the load's sessions with each load written (a Deployment's pod).
    pub fn with_deletion_cost(mut self, on: bool) -> Self {
        self.deletion_cost = on;
        self
    }
}

/// The ReplicaSet controller removes the pods with the lowest cost first on a scale-down.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The JSON merge patch that sets (or, with `None`, removes) the load annotation, and with `deletion_cost`
/// sets [`DELETION_COST`] to the sessions of a known load (an unknown load leaves the cost as it was: the
/// pod may be busy).
pub fn load_patch(load: Option<&Load>, deletion_cost: bool) -> serde_json::Value {
    let value = load.map(pod_protocol::render_load);
    let mut annotations = serde_json::Map::new();
    annotations.insert(pod_protocol::LOAD.into(), json!(value));
    if let Some(l) = load.filter(|_| deletion_cost) {
        annotations.insert(DELETION_COST.into(), json!(l.rooms.min(i32::MAX as u32).to_string()));
    }
    json!({"metadata": {"annotations": annotations}})
}

impl OwnPod for KubePod {
    fn marks(&self) -> BoxStream<'static, Marks> {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        watcher(self.api.clone(), config)
            .default_backoff()
            .filter_map(|event| async move {
                match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => Some(Marks::from_pod(&pod)),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the pod failed; retrying with backoff");
                        None
                    }
                }
            })
            .boxed()
    }

    async fn write_load(&self, load: Option<Load>) -> Result<(), PodError> {
        let patch = load_patch(load.as_ref(), self.deletion_cost);
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        match tokio::time::timeout(WRITE_TIMEOUT, self.api.patch(&self.name, &params, &Patch::Merge(&patch))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(PodError::Write(e.to_string())),
            Err(_) => Err(PodError::Timeout(WRITE_TIMEOUT)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_from_annotations() {
        let mut a = BTreeMap::new();
        assert_eq!(Marks::from_annotations(&a), Marks::default());
        a.insert(DRAIN_SINCE.to_string(), "2026-11-27T10:00:00Z".to_string());
        a.insert(END_SESSIONS.to_string(), "yes".to_string());
        let m = Marks::from_annotations(&a);
        assert_eq!(m.drain_since.as_deref(), Some("2026-11-27T10:00:00Z"));
        assert!(!m.end_sessions, "only \"true\" ends sessions");
        a.insert(END_SESSIONS.to_string(), "true".to_string());
        a.insert(WARN_DEADLINE.to_string(), "2026-11-27T13:00:00Z".to_string());
        let m = Marks::from_annotations(&a);
        assert!(m.end_sessions);
        assert_eq!(m.warn_deadline.as_deref(), Some("2026-11-27T13:00:00Z"));
        assert_eq!(Marks::from_pod(&Pod::default()), Marks::default());
    }

    #[test]
    fn patch_touches_one_annotation() {
        let load = Load { participants: 3, rooms: 1, capacity: None, draining: true, ..Load::default() };
        assert_eq!(
            load_patch(Some(&load), false),
            json!({"metadata": {"annotations": {"visio.io/load": "{\"participants\":3,\"rooms\":1,\"draining\":true}"}}})
        );
        assert_eq!(load_patch(None, false), json!({"metadata": {"annotations": {"visio.io/load": null}}}));
    }

    #[test]
    fn a_worker_sets_its_deletion_cost_to_its_jobs() {
        let load = Load { participants: 2, rooms: 2, capacity: Some(20), ..Load::default() };
        let p = load_patch(Some(&load), true);
        assert_eq!(p["metadata"]["annotations"][DELETION_COST], "2");
        // Unknown: the load goes, the cost stays as it was.
        let p = load_patch(None, true);
        assert_eq!(p, json!({"metadata": {"annotations": {"visio.io/load": null}}}));
    }
}
