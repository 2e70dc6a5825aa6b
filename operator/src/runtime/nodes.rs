//! Cordoned nodes: the fleets move their pods off a node that takes no new pods, by their own drain.
//!
//! `kubectl drain` cordons a node, then evicts its pods through the eviction API. The disruption
//! budget refuses to evict a pod in use (docs/design.md, "Node drains") until its meetings end; but a
//! pod of a cordoned node that still serves keeps taking new meetings, so that wait could last for
//! ever. A pod whose node is cordoned is therefore replaced like one of an outdated template
//! (`fleet::PodSnapshot::evacuate`): a new pod elsewhere first, then this one drained (no new
//! meeting; the running ones go on to their end or to the drain deadline, warned before it), then
//! deleted once empty, and the node's drain has nothing left to wait for.
//!
//! One cluster-wide watch of Nodes (list and watch, read only), trimmed to what says "cordoned"
//! (`trim.rs`). Each controller subscribes to the cordon changes: a node that becomes cordoned or
//! uncordoned re-decides the fleets with pods on it. The watch is optional: if it is refused (an
//! RBAC without nodes, as before this feature), it says so once, retries with backoff, and the
//! fleets plan as if no node were cordoned.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};

use super::{watch_config, WatchBackoff};

/// Taints that say a node takes no new pods: the cordon itself (set by the node lifecycle controller
/// with `spec.unschedulable`), and the ones the cluster autoscaler and Karpenter put on a node they are
/// about to remove, before they evict its pods.
pub const NO_NEW_PODS_TAINTS: [&str; 3] =
    ["node.kubernetes.io/unschedulable", "ToBeDeletedByClusterAutoscaler", "karpenter.sh/disrupted"];

/// Whether a node takes no new pods (pure).
pub fn cordoned(n: &Node) -> bool {
    let Some(spec) = n.spec.as_ref() else { return false };
    spec.unschedulable == Some(true)
        || spec
            .taints
            .iter()
            .flatten()
            .any(|t| t.effect == "NoSchedule" && NO_NEW_PODS_TAINTS.contains(&t.key.as_str()))
}

/// The node `p` is bound to, if any.
fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref()?.node_name.as_deref()
}

/// Whether `p` runs on a node the cache knows as cordoned (an unknown node is not).
pub fn on_cordoned_node(nodes: &Store<Node>, p: &Pod) -> bool {
    let Some(node) = node_of(p) else { return false };
    nodes.get(&ObjectRef::new(node)).is_some_and(|n| cordoned(&n))
}

/// The cache of Nodes and the subscribers to their cordon changes.
#[derive(Default)]
pub struct CordonChanges {
    changed: super::fanout::Fanout<Node>,
}

impl CordonChanges {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A stream of every Node whose cordon state changes (or that is first seen cordoned), for a
    /// controller's `watches_stream`. Subscribe before [`CordonChanges::run`] starts.
    pub fn subscribe(&self) -> impl futures::Stream<Item = std::result::Result<Node, watcher::Error>> + Send + 'static {
        self.changed.subscribe()
    }

    /// Watches every Node into `writer`'s store and tells the subscribers of each cordon change.
    /// Runs until the operator stops.
    pub async fn run(self: Arc<Self>, client: Client, writer: Writer<Node>) {
        let api: Api<Node> = Api::all(client);
        let mut events = watcher(api, watch_config())
            .backoff(WatchBackoff::default())
            .modify(super::trim::Trim::trim)
            .reflect(writer)
            .touched_objects()
            .boxed();
        let mut last: HashMap<String, bool> = HashMap::new();
        let mut refused_said = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(node) => {
                    let now = cordoned(&node);
                    if last.insert(node.name_any(), now).unwrap_or(false) != now {
                        tracing::info!(node = %node.name_any(), cordoned = now, "node cordon changed: re-deciding the fleets on it");
                        self.changed.send(std::slice::from_ref(&node));
                    }
                }
                Err(e) if super::secrets::forbidden(&e) && !refused_said => {
                    refused_said = true;
                    tracing::warn!(error = %e, "cannot watch Nodes (the operator's ClusterRole lacks nodes list/watch): \
                        pods on cordoned nodes are not moved off them; their meetings are still protected by the disruption budget");
                }
                Err(e) => tracing::debug!(error = %e, "Node watch error (it retries by itself)"),
            }
        }
    }
}

/// The owners (`kind`, namespace, name) of the pods in `pods` that run on `node`, each once (pure).
pub fn owners_on_node(pods: &[Arc<Pod>], node: &str, kind: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pods
        .iter()
        .filter(|p| node_of(p) == Some(node))
        .filter_map(|p| {
            let owner = p.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == kind)?;
            Some((p.namespace()?, owner.name.clone()))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(spec: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": spec})).unwrap()
    }

    #[test]
    fn a_node_is_cordoned_by_its_flag_or_a_no_new_pods_taint() {
        assert!(!cordoned(&node(json!({}))));
        assert!(!cordoned(&serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap()));
        assert!(cordoned(&node(json!({"unschedulable": true}))));
        assert!(!cordoned(&node(json!({"unschedulable": false}))));
        for key in NO_NEW_PODS_TAINTS {
            assert!(cordoned(&node(json!({"taints": [{"key": key, "effect": "NoSchedule"}]}))), "{key}");
            assert!(!cordoned(&node(json!({"taints": [{"key": key, "effect": "PreferNoSchedule"}]}))), "{key}");
        }
        // A dedicated-node taint is not a cordon: the pods that tolerate it belong there.
        assert!(!cordoned(&node(json!({"taints": [{"key": "visio.io/dedicated", "effect": "NoSchedule"}]}))));
    }

    #[test]
    fn the_owners_on_a_node_are_found_once_each() {
        let pod = |name: &str, ns: &str, node: Option<&str>, owner: &str, kind: &str, controller: bool| -> Arc<Pod> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": ns, "ownerReferences": [
                        {"apiVersion": "visio.io/v1alpha1", "kind": kind, "name": owner, "uid": "u", "controller": controller}]},
                    "spec": {"containers": [], "nodeName": node}
                }))
                .unwrap(),
            )
        };
        let pods = vec![
            pod("a-0", "t1", Some("n1"), "a", "VisioCluster", true),
            pod("a-1", "t1", Some("n1"), "a", "VisioCluster", true),
            pod("b-0", "t2", Some("n1"), "b", "VisioCluster", true),
            pod("c-0", "t2", Some("n2"), "c", "VisioCluster", true),
            pod("d-0", "t3", None, "d", "VisioCluster", true),
            pod("e-0", "t3", Some("n1"), "e", "CaptionPool", true),
            pod("f-0", "t3", Some("n1"), "f", "VisioCluster", false),
        ];
        assert_eq!(
            owners_on_node(&pods, "n1", "VisioCluster"),
            vec![("t1".to_string(), "a".to_string()), ("t2".to_string(), "b".to_string())]
        );
        assert_eq!(owners_on_node(&pods, "n1", "CaptionPool"), vec![("t3".to_string(), "e".to_string())]);
        assert!(owners_on_node(&pods, "n9", "VisioCluster").is_empty());
    }
}
