//! `kubectl visio drain POD`: asks the operator to drain one SFU pod. The plugin only writes the
//! request (`visio.io/drain-requested`); the operator carries it out as it does for a pod on a cordoned
//! node (a replacement first, then the drain with its warning and `drainTimeout` deadline), so a
//! request never cuts a meeting sooner than an upgrade would.

use anyhow::{bail, Result};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use visio_operator::api::VisioCluster;
use visio_operator::builders::labels::CLUSTER_LABEL;
use visio_operator::pod_protocol::{DRAIN_REQUESTED, DRAIN_SINCE};

use crate::view::is_sfu_pod_of;

/// What a drain request of `pod` would do.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write the request; the pod is an SFU pod of this VisioCluster.
    Request {
        cluster: String,
        drain_timeout: String,
    },
    /// Already draining or already asked: nothing to write.
    AlreadyDraining {
        since: String,
    },
    AlreadyRequested,
}

/// Refuses any pod that is not an SFU pod of a VisioCluster of its namespace (a Redis pod, a caption
/// backend, a tenant's own pod, a pod that only copies the labels), with a message that says why.
pub fn check(pod: &Pod, clusters: &[VisioCluster]) -> Result<Verdict> {
    let name = pod.name_any();
    let ns = pod.namespace().unwrap_or_default();
    let Some(vc) = clusters.iter().find(|vc| is_sfu_pod_of(pod, vc)) else {
        let claimed = pod.labels().get(CLUSTER_LABEL).map(|c| format!(" (it is labelled for VisioCluster {c:?})"));
        bail!(
            "refused: pod {ns}/{name} is not an SFU pod of a VisioCluster in namespace {ns}{}; \
             only the SFU pods the operator runs can be drained this way",
            claimed.unwrap_or_default()
        );
    };
    if pod.metadata.deletion_timestamp.is_some() {
        bail!("refused: pod {ns}/{name} is being deleted already");
    }
    let annotations = pod.annotations();
    if let Some(since) = annotations.get(DRAIN_SINCE) {
        return Ok(Verdict::AlreadyDraining { since: since.clone() });
    }
    if annotations.contains_key(DRAIN_REQUESTED) {
        return Ok(Verdict::AlreadyRequested);
    }
    Ok(Verdict::Request { cluster: vc.name_any(), drain_timeout: vc.spec.upgrade.drain_timeout.clone() })
}

/// Checks the pod and writes the request; returns what to tell the user.
pub async fn run(client: &Client, ns: &str, pod: &str) -> Result<String> {
    // `pod/NAME`, as kubectl prints names, is accepted too.
    let pod = pod.strip_prefix("pod/").or_else(|| pod.strip_prefix("pods/")).unwrap_or(pod);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let Some(p) = pods.get_opt(pod).await? else { bail!("refused: no pod {pod} in namespace {ns}") };
    let clusters = Api::<VisioCluster>::namespaced(client.clone(), ns).list(&Default::default()).await?.items;
    match check(&p, &clusters)? {
        Verdict::AlreadyDraining { since } => Ok(format!("pod {ns}/{pod} is draining already (since {since})")),
        Verdict::AlreadyRequested => Ok(format!(
            "pod {ns}/{pod}: a drain was requested already; the operator starts it when a replacement serves"
        )),
        Verdict::Request { cluster, drain_timeout } => {
            // A merge patch of this one annotation: the chart's admission policy lets a tenant admin write
            // nothing else on the operator's pods.
            let patch = json!({"metadata": {"annotations": {DRAIN_REQUESTED: Timestamp::now().to_string()}}});
            pods.patch(pod, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            Ok(format!(
                "drain requested for SFU pod {ns}/{pod} of VisioCluster {cluster}: the operator starts a replacement if \
                 the fleet needs one, then drains the pod (no new meetings; the meetings on it go on, participants are \
                 warned before the deadline, drainTimeout {drain_timeout}). Follow it with `kubectl visio status -n {ns} {cluster}`."
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc(name: &str, uid: &str) -> VisioCluster {
        serde_json::from_value(json!({
            "apiVersion": "visio.io/v1alpha1", "kind": "VisioCluster",
            "metadata": {"name": name, "namespace": "t", "uid": uid},
            "spec": {"tenant": {"displayName": "T"}, "signaling": {"host": "t.example"}}
        }))
        .unwrap()
    }

    fn pod(component: &str, cluster: &str, owner_uid: &str, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "p", "namespace": "t", "annotations": annotations,
                "labels": {"app.kubernetes.io/component": component, CLUSTER_LABEL: cluster},
                "ownerReferences": [{"apiVersion": "visio.io/v1alpha1", "kind": "VisioCluster", "name": cluster,
                                     "uid": owner_uid, "controller": true}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn only_sfu_pods_of_a_visiocluster_of_the_namespace() {
        let clusters = [vc("a", "uid-a")];
        let ok = check(&pod("sfu", "a", "uid-a", json!({})), &clusters).unwrap();
        assert!(matches!(ok, Verdict::Request { ref cluster, .. } if cluster == "a"), "{ok:?}");
        for refused in [
            pod("redis", "a", "uid-a", json!({})),   // not an SFU pod
            pod("sfu", "a", "uid-other", json!({})), // labels copied, another owner
            pod("sfu", "b", "uid-b", json!({})),     // a VisioCluster not in this namespace
        ] {
            let e = check(&refused, &clusters).unwrap_err().to_string();
            assert!(e.starts_with("refused:"), "{e}");
        }
        let mut other_ns = pod("sfu", "a", "uid-a", json!({}));
        other_ns.metadata.namespace = Some("u".into());
        assert!(check(&other_ns, &clusters).is_err());
        assert!(check(&pod("sfu", "a", "uid-a", json!({})), &[]).is_err());
    }

    #[test]
    fn a_draining_or_asked_pod_is_not_asked_again() {
        let clusters = [vc("a", "uid-a")];
        let since = "2026-12-05T03:00:00Z";
        assert_eq!(
            check(&pod("sfu", "a", "uid-a", json!({DRAIN_SINCE: since})), &clusters).unwrap(),
            Verdict::AlreadyDraining { since: since.into() }
        );
        assert_eq!(
            check(&pod("sfu", "a", "uid-a", json!({DRAIN_REQUESTED: since})), &clusters).unwrap(),
            Verdict::AlreadyRequested
        );
    }
}
