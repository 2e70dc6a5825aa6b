//! What the caches keep of each child: the fields a reconcile reads, nothing more.
//!
//! The operator caches every child it owns (at 300 tenants, some 7,800 objects). Kept whole, their pod
//! specs, container templates, service ports and role rules were the larger part of its heap, and no
//! reconcile reads them: a child is compared with what we want by the hash annotation it was applied
//! with (`apply::APPLIED_HASH`) and, for Roles and RoleBindings, a digest of their content (`drift`). So each watch trims an object before it enters
//! the cache (pure, below), and what stays is:
//! - for every kind: the metadata (name, namespace, uid, resourceVersion, labels, annotations, owner
//!   references, deletion and creation timestamps), without `managedFields`;
//! - Pods: `status.phase`, `status.conditions` (Ready, and PodScheduled's reason and message for the
//!   Unschedulable report) and each container's name, readiness and state (the agent must run for its
//!   load to count); of the spec only `nodeName` (a pod on a cordoned node is replaced);
//! - Deployments: `spec.replicas`, each template container's name and image (an operator upgrade keeps
//!   the transcribers' running agent image, see `captionpool::keep_running_agent_image`), and the status;
//! - Nodes: the name, resourceVersion and uid, `spec.unschedulable` and the taints (what says a node is
//!   cordoned, see `nodes::cordoned`); not their labels, annotations or status (images, conditions);
//! - Roles and RoleBindings: the metadata, with the digest of their rules, role and subjects in the
//!   annotation `drift::OBSERVED` (an edit of them is repaired, see `drift`);
//! - the other kinds: the metadata alone.
//!
//! A new reconcile that reads another field of a cached child must keep it here; the tests below list
//! what is kept, so that such a change is deliberate.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, LimitRange, Node, NodeSpec, Pod, PodSpec, PodStatus, PodTemplateSpec, ResourceQuota,
    Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Drops what no reconcile reads from an object about to be cached.
pub trait Trim {
    fn trim(&mut self);
}

fn trim_meta(m: &mut ObjectMeta) {
    m.managed_fields = None;
}

impl Trim for Pod {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        let node_name = self.spec.take().and_then(|s| s.node_name);
        self.spec = node_name.map(|n| PodSpec { node_name: Some(n), ..Default::default() });
        if let Some(s) = self.status.take() {
            self.status = Some(PodStatus {
                phase: s.phase,
                conditions: s.conditions,
                container_statuses: s.container_statuses.map(|cs| {
                    cs.into_iter()
                        .map(|c| ContainerStatus { name: c.name, ready: c.ready, state: c.state, ..Default::default() })
                        .collect()
                }),
                ..Default::default()
            });
        }
    }
}

impl Trim for Node {
    fn trim(&mut self) {
        let m = std::mem::take(&mut self.metadata);
        self.metadata =
            ObjectMeta { name: m.name, resource_version: m.resource_version, uid: m.uid, ..Default::default() };
        self.spec = self.spec.take().map(|s| NodeSpec {
            unschedulable: s.unschedulable,
            taints: s.taints,
            ..Default::default()
        });
        self.status = None;
    }
}

impl Trim for Deployment {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        if let Some(spec) = self.spec.take() {
            let containers = spec
                .template
                .spec
                .map(|s| {
                    s.containers
                        .into_iter()
                        .map(|c| Container { name: c.name, image: c.image, ..Default::default() })
                        .collect()
                })
                .unwrap_or_default();
            self.spec = Some(DeploymentSpec {
                replicas: spec.replicas,
                template: PodTemplateSpec { metadata: None, spec: Some(PodSpec { containers, ..Default::default() }) },
                ..Default::default()
            });
        }
    }
}

impl Trim for Role {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        super::drift::remember(self);
        self.rules = None;
    }
}

impl Trim for RoleBinding {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        super::drift::remember(self);
        self.subjects = None;
        self.role_ref = RoleRef::default();
    }
}

impl Trim for ServiceAccount {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.secrets = None;
        self.image_pull_secrets = None;
    }
}

/// Kinds of which the cache keeps the metadata alone.
macro_rules! metadata_only {
    ($($kind:ty),*) => {$(
        impl Trim for $kind {
            fn trim(&mut self) {
                trim_meta(&mut self.metadata);
                self.spec = None;
                self.status = None;
            }
        }
    )*};
}
metadata_only!(Service, PodDisruptionBudget, Ingress, ResourceQuota);

impl Trim for NetworkPolicy {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.spec = None;
    }
}

impl Trim for LimitRange {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.spec = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The object as JSON, without the `apiVersion` and `kind` k8s-openapi always writes.
    fn fields<K: serde::Serialize>(k: &K) -> serde_json::Value {
        let mut v = serde_json::to_value(k).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("apiVersion");
        o.remove("kind");
        v
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "sfu-a", "namespace": "t", "uid": "u1", "resourceVersion": "7",
                "creationTimestamp": "2026-11-28T10:00:00Z", "deletionTimestamp": "2026-11-28T11:00:00Z",
                "labels": {"app": "x"}, "annotations": {"visio.io/load": "{}"},
                "ownerReferences": [{"apiVersion": "visio.io/v1alpha1", "kind": "VisioCluster", "name": "v", "uid": "o"}],
                "managedFields": [{"manager": "kubectl"}]
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "livekit", "image": "lk:1", "env": [{"name": "A", "value": "b"}]}]},
            "status": {
                "phase": "Pending", "podIP": "10.0.0.1", "hostIP": "10.0.0.2", "qosClass": "Burstable",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}],
                "containerStatuses": [{"name": "agent", "ready": true, "restartCount": 2, "image": "a:1", "imageID": "sha",
                                       "state": {"running": {"startedAt": "2026-11-28T10:00:01Z"}},
                                       "lastState": {"terminated": {"exitCode": 1}}}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_keeps_its_metadata_phase_conditions_and_container_states() {
        let mut p = pod();
        p.trim();
        let v = serde_json::to_value(&p).unwrap();
        let mut want = serde_json::to_value(pod()).unwrap();
        let m = want["metadata"].as_object_mut().unwrap();
        m.remove("managedFields");
        assert_eq!(v["metadata"], want["metadata"]);
        assert_eq!(v["spec"], json!({"containers": [], "nodeName": "n1"}));
        assert_eq!(
            v["status"],
            json!({
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}],
                "containerStatuses": [{"name": "agent", "ready": true, "restartCount": 0, "image": "", "imageID": "",
                                       "state": {"running": {"startedAt": "2026-11-28T10:00:01Z"}}}]
            })
        );
    }

    #[test]
    fn what_the_pod_readers_see_is_unchanged_by_the_trim() {
        use crate::runtime::pods::{agent_running, pod_ready, pod_snapshot};
        let mut p = pod();
        p.trim();
        let full = pod();
        assert_eq!(agent_running(&p), agent_running(&full));
        assert_eq!(pod_ready(&p), pod_ready(&full));
        assert_eq!(format!("{:?}", pod_snapshot(&p, true)), format!("{:?}", pod_snapshot(&full, true)));
    }

    #[test]
    fn a_node_keeps_what_says_it_is_cordoned() {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "uid": "u", "resourceVersion": "9", "labels": {"zone": "a"},
                         "annotations": {"a": "b"}, "managedFields": [{"manager": "kubelet"}]},
            "spec": {"unschedulable": true, "podCIDR": "10.0.0.0/24", "providerID": "kwok://n1",
                     "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]},
            "status": {"capacity": {"cpu": "64"}, "images": [{"names": ["livekit"], "sizeBytes": 1}]}
        }))
        .unwrap();
        let cordoned = crate::runtime::nodes::cordoned(&n);
        n.trim();
        assert_eq!(
            fields(&n),
            json!({
                "metadata": {"name": "n1", "uid": "u", "resourceVersion": "9"},
                "spec": {"unschedulable": true, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}
            })
        );
        assert!(cordoned && crate::runtime::nodes::cordoned(&n));
    }

    #[test]
    fn a_deployment_keeps_its_replicas_container_images_and_status() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "w", "annotations": {"visio.io/applied-hash": "h"}, "managedFields": [{"manager": "x"}]},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "w"}},
                "template": {
                    "metadata": {"labels": {"app": "w"}},
                    "spec": {"terminationGracePeriodSeconds": 3600,
                             "containers": [{"name": "agent", "image": "op:2", "args": ["agent"]},
                                            {"name": "worker", "image": "w:1", "env": [{"name": "K", "value": "v"}]}]}
                }
            },
            "status": {"replicas": 3, "readyReplicas": 2}
        }))
        .unwrap();
        d.trim();
        assert_eq!(
            fields(&d),
            json!({
                "metadata": {"name": "w", "annotations": {"visio.io/applied-hash": "h"}},
                "spec": {
                    "replicas": 3,
                    "selector": {},
                    "template": {"spec": {"containers": [{"name": "agent", "image": "op:2"}, {"name": "worker", "image": "w:1"}]}}
                },
                "status": {"replicas": 3, "readyReplicas": 2}
            })
        );
    }

    #[test]
    fn the_other_kinds_keep_their_metadata_alone() {
        let meta =
            json!({"name": "n", "namespace": "t", "labels": {"a": "b"}, "annotations": {"visio.io/applied-hash": "h"}});
        let with_fields = |extra: serde_json::Value| {
            let mut v = extra;
            v["metadata"] = meta.clone();
            v["metadata"]["managedFields"] = json!([{"manager": "x"}]);
            v
        };
        fn trimmed<K: Trim + serde::de::DeserializeOwned + serde::Serialize>(
            v: serde_json::Value,
        ) -> serde_json::Value {
            let mut k: K = serde_json::from_value(v).unwrap();
            k.trim();
            fields(&k)
        }
        let svc = trimmed::<Service>(with_fields(json!({"spec": {"ports": [{"port": 7880}]}, "status": {}})));
        assert_eq!(svc, json!({"metadata": meta}));
        let pdb = trimmed::<PodDisruptionBudget>(with_fields(json!({"spec": {"maxUnavailable": 0}})));
        assert_eq!(pdb, json!({"metadata": meta}));
        let np = trimmed::<NetworkPolicy>(with_fields(json!({"spec": {"podSelector": {}}})));
        assert_eq!(np, json!({"metadata": meta}));
        // Roles and RoleBindings keep the digest of their rules and subjects (drift.rs) in its stead.
        let role = trimmed::<Role>(with_fields(json!({"rules": [{"verbs": ["get"], "resources": ["pods"]}]})));
        let digest = role["metadata"]["annotations"][super::super::drift::OBSERVED].clone();
        assert!(digest.is_string(), "{role}");
        let mut with_digest = meta.clone();
        with_digest["annotations"][super::super::drift::OBSERVED] = digest;
        assert_eq!(role, json!({"metadata": with_digest}));
        let rb = trimmed::<RoleBinding>(with_fields(
            json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [{"kind": "User", "name": "u"}]}),
        ));
        assert!(rb["metadata"]["annotations"][super::super::drift::OBSERVED].is_string());
        assert!(rb.get("subjects").is_none());
        let sa = trimmed::<ServiceAccount>(with_fields(json!({"secrets": [{"name": "s"}]})));
        assert_eq!(sa, json!({"metadata": meta}));
        let rq = trimmed::<ResourceQuota>(with_fields(json!({"spec": {"hard": {"pods": "10"}}})));
        assert_eq!(rq, json!({"metadata": meta}));
        let lr = trimmed::<LimitRange>(with_fields(json!({"spec": {"limits": []}})));
        assert_eq!(lr, json!({"metadata": meta}));
        let ing = trimmed::<Ingress>(with_fields(json!({"spec": {"rules": []}})));
        assert_eq!(ing, json!({"metadata": meta}));
    }
}
