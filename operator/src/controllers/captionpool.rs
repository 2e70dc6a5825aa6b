//! The CaptionPool controller. This release validates a pool and reports what it found;
//! deploying the caption backends and transcribers is the next step (see the README's roadmap).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::conditions::{self, Decided};
use super::error::Result;
use super::{key_of, observe, Context};
use crate::api::{CaptionPool, VisioCluster};
use crate::builders::labels::FIELD_MANAGER;

const CONTROLLER: &str = "captionpool";

pub fn controller(client: Client, ctx: Arc<Context>) -> impl std::future::Future<Output = ()> {
    // Lenient watches: one stored object we cannot read must not stop the others.
    let ctrl = super::lenient_controller::<CaptionPool>(&client, watcher::Config::default().any_semantic());
    let pools = ctrl.store();
    let clusters = super::lenient_watcher::<VisioCluster>(client, watcher::Config::default().any_semantic())
        .default_backoff()
        .applied_objects();
    // A pool whose VisioCluster appears or goes must be looked at again.
    ctrl.watches_stream(clusters, move |vc| {
        pools
            .state()
            .into_iter()
            .filter(|cp| cp.namespace() == vc.namespace() && cp.spec.cluster_ref.name == vc.name_any())
            .map(|cp| ObjectRef::from_obj(cp.as_ref()))
            .collect::<Vec<_>>()
    })
    .shutdown_on_signal()
    .run(reconcile, super::error_policy, ctx)
    .for_each(|_| futures::future::ready(()))
}

/// What the controller decides from the pool and whether its cluster exists (pure).
pub fn decide(cp: &CaptionPool, cluster_exists: bool) -> Vec<Decided> {
    if !cluster_exists {
        let msg = format!(
            "spec.clusterRef.name: VisioCluster {:?} not found in namespace {}",
            cp.spec.cluster_ref.name,
            cp.namespace().unwrap_or_default()
        );
        return vec![
            Decided::new(conditions::READY, false, "ClusterNotFound", msg.clone()),
            Decided::new(conditions::DEGRADED, true, "ClusterNotFound", msg),
        ];
    }
    vec![
        Decided::new(
            conditions::READY,
            false,
            "BackendsNotDeployed",
            "the spec is valid; this operator release does not deploy caption backends yet",
        ),
        Decided::new(conditions::DEGRADED, false, "AsExpected", "no problem detected"),
    ]
}

async fn reconcile(cp: Arc<CaptionPool>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let key = key_of(cp.as_ref());
    let result = super::bounded(reconcile_pool(&cp, &ctx)).await;
    observe(&ctx, CONTROLLER, &key, started, &result.as_ref().map(|_| ()));
    result
}

async fn reconcile_pool(cp: &CaptionPool, ctx: &Context) -> Result<Action> {
    let ns = cp.namespace().unwrap_or_default();
    let clusters: Api<VisioCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let exists = clusters.get_opt(&cp.spec.cluster_ref.name).await?.is_some();
    let decided = decide(cp, exists);
    let mut status = cp.status.clone().unwrap_or_default();
    let merged = conditions::merge(&status.conditions, &decided, cp.metadata.generation, Timestamp::now());
    if merged != status.conditions || status.observed_generation != cp.metadata.generation {
        let was_ready = conditions::is_true(&status.conditions, conditions::READY);
        status.conditions = merged;
        status.observed_generation = cp.metadata.generation;
        let api: Api<CaptionPool> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool", "status": status});
        api.patch_status(&cp.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        ctx.metrics.child_writes.with_label_values(&["CaptionPool", "status"]).inc();
        if !exists {
            let msg = decided[0].message.clone();
            ctx.event(cp, EventType::Warning, "ClusterNotFound", "Validate", msg).await;
        } else if was_ready {
            ctx.event(cp, EventType::Normal, "Validated", "Validate", "spec accepted".into()).await;
        }
    }
    Ok(Action::requeue(Duration::from_secs(600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> CaptionPool {
        let mut cp: CaptionPool =
            serde_json::from_value(json!({"apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool",
                "metadata": {"name": "captions", "namespace": "minsante"},
                "spec": {"clusterRef": {"name": "visio"}}}))
            .unwrap();
        cp.metadata.generation = Some(1);
        cp
    }

    #[test]
    fn a_missing_cluster_is_named_in_the_condition() {
        let d = decide(&pool(), false);
        assert_eq!(d[0].reason, "ClusterNotFound");
        assert!(d[0].message.contains("spec.clusterRef.name") && d[0].message.contains("\"visio\""));
        assert!(d[1].status, "Degraded");
    }

    #[test]
    fn a_valid_pool_says_what_is_not_deployed_yet() {
        let d = decide(&pool(), true);
        assert!(!d[0].status);
        assert_eq!(d[0].reason, "BackendsNotDeployed");
        assert!(!d[1].status);
    }
}
