//! The VisioCluster controller: one tenant's LiveKit stack.
//!
//! [`dereference`] (the operator's Secret rights, credentials, referenced Secrets) -> [`validate`]
//! (the planner's spec, parsed once) -> build (`builders::stack`) -> [`apply`] (every child, then the
//! orphans) -> [`pods`] (`fleet::plan` over the SFU pods, carried out) -> [`status`].

pub mod apply;
pub mod dereference;
pub mod pods;
pub mod status;
pub mod validate;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::Instrument;

use crate::api::{RetentionPolicy, VisioCluster, VisioPlatform};
use crate::builders::stack::build_stack;
use crate::runtime::children::ChildWatches;
use crate::runtime::error::Result;
use crate::runtime::{self, key_of, observe, Context};

pub use validate::{fleet_spec, Validated};

const CONTROLLER: &str = "visiocluster";

type Watch<K> = BoxStream<'static, std::result::Result<K, watcher::Error>>;

/// What triggers a VisioCluster's reconcile besides its own changes.
pub struct Triggers {
    /// Its children (every kind of the children table) and SFU pods.
    pub children: ChildWatches,
    /// Our Secrets in tenant namespaces (`secrets::SecretCaches`).
    pub secrets: Watch<Secret>,
    /// RetentionPolicies (they decide the `RetentionPolicyMissing` condition).
    pub retention_policies: Watch<RetentionPolicy>,
    /// Nodes whose cordon changed (`nodes::CordonChanges`): their SFU pods are moved off.
    pub nodes: Watch<Node>,
    /// The VisioPlatform, each time it changes: every VisioCluster is checked again.
    pub platform: Watch<VisioPlatform>,
}

/// The controller future.
pub fn controller(client: Client, ctx: Arc<Context>, triggers: Triggers) -> impl std::future::Future<Output = ()> {
    // Not Controller::new: one stored VisioCluster we cannot read must not stop the others.
    let controller = runtime::lenient_controller::<VisioCluster>(&client, runtime::watch_config(), &ctx.config);
    let clusters = controller.store();
    let pods_store = ctx.stores.pods.clone();
    let every_cluster = controller.store();
    let controller = controller
        // A RetentionPolicy that appears, changes or goes re-decides every VisioCluster of its namespace.
        .watches_stream(runtime::without_errors(triggers.retention_policies), move |rp: RetentionPolicy| {
            runtime::watch::in_namespace(&clusters, rp.namespace())
        })
        // A node cordoned or uncordoned re-decides the clusters with SFU pods on it.
        .watches_stream(triggers.nodes, move |node| {
            let pods = pods_store.state();
            runtime::nodes::owners_on_node(&pods, &node.name_any(), "VisioCluster")
                .into_iter()
                .map(|(ns, name)| ObjectRef::<VisioCluster>::new(&name).within(&ns))
                .collect::<Vec<_>>()
        })
        .watches_stream(triggers.platform, move |_| {
            every_cluster.state().iter().map(|vc| ObjectRef::from_obj(vc.as_ref())).collect::<Vec<_>>()
        })
        .owns_stream(triggers.secrets);
    triggers
        .children
        .owned_by(controller)
        .shutdown_on_signal()
        .run(reconcile, runtime::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
}

async fn reconcile(vc: Arc<VisioCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let key = key_of(vc.as_ref());
    if vc.meta().deletion_timestamp.is_some() {
        // Children go with their owner (ownerReferences); only our own series and memories need forgetting.
        ctx.metrics.forget_cluster(&vc.namespace().unwrap_or_default(), &vc.name_any());
        ctx.low_load_since.forget(&key);
        ctx.ready_seen.forget(&key);
        ctx.created.forget(&key);
        ctx.startups.forget(&key);
        return Ok(Action::await_change());
    }
    let span =
        tracing::info_span!("reconcile", controller = CONTROLLER, object = %key, generation = vc.metadata.generation);
    let result = runtime::bounded(reconcile_stack(&vc, &ctx).instrument(span)).await;
    observe(&ctx, CONTROLLER, &key, started, &result.as_ref().map(|_| ()));
    match result {
        Err(e) if e.is_permanent() => status::report_problem(&ctx, &vc, &e).await,
        other => other,
    }
}

/// The steps, top to bottom.
async fn reconcile_stack(vc: &VisioCluster, ctx: &Context) -> Result<Action> {
    // At start the VisioClusters can be listed before the children: never plan from empty caches.
    if !runtime::children::caches_ready(ctx).await {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // The platform's rules before anything is read or written: a tenant outside them gets nothing.
    if !ctx.platform.ready() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let namespace = vc.namespace().unwrap_or_default();
    runtime::platform::check(&ctx.platform.rules(), &namespace, &vc.spec, crate::platform::check_cluster)?;
    let Some(refs) = dereference::dereference(vc, ctx).await? else {
        // The operator's Secret rights in this namespace are not in effect yet.
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let valid = validate::validate(vc, refs)?;
    let stack = build_stack(vc, &valid.credentials, &ctx.config.agent_image)?;
    apply::children(vc, &stack, ctx.operator.as_ref())?.apply(ctx, vc).await?;
    let fleet = pods::reconcile(ctx, vc, &valid, &stack).await?;
    let status_wait = status::update(ctx, vc, &stack, &fleet).await?;
    let requeue = fleet.plan.requeue_after_ms.map(|ms| Duration::from_millis(ms.clamp(1000, 600_000) as u64));
    let requeue = [requeue, status_wait].into_iter().flatten().min();
    Ok(Action::requeue(requeue.unwrap_or(Duration::from_secs(600))))
}
