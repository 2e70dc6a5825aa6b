//! Step 5: the SFU fleet. The planner (`fleet::plan`, pure) decides over the pods as cached; its
//! actions are carried out (`runtime::pods`), and the routing labels follow what the pods report.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::validate::Validated;
use crate::api::VisioCluster;
use crate::builders::stack::Stack;
use crate::fleet::{self, Plan, Snapshot};
use crate::runtime::apply::is_child_of;
use crate::runtime::error::Result;
use crate::runtime::pods::{execute, remember_low_load, snapshot, sync_pod_labels, PodFleet};
use crate::runtime::{key_of, Context};

/// The fleet as this reconcile saw and planned it, for the status.
pub struct Fleet {
    /// The cluster's SFU pods, as cached.
    pub pods: Vec<Arc<Pod>>,
    /// The planner's view of them.
    pub snapshot: Snapshot,
    pub plan: Plan,
}

pub async fn reconcile(ctx: &Context, vc: &VisioCluster, valid: &Validated, stack: &Stack) -> Result<Fleet> {
    let (ns, name, uid) = (vc.namespace().unwrap_or_default(), vc.name_any(), vc.uid().unwrap_or_default());
    let now = Timestamp::now();
    let pods: Vec<Arc<Pod>> = ctx
        .stores
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && is_child_of(p.as_ref(), &name, &uid))
        .collect();
    let snapshot = snapshot(ctx, &key_of(vc), &stack.sfu.hash, &pods, now);
    let plan = fleet::plan(&valid.fleet, &snapshot);
    remember_low_load(ctx, &key_of(vc), plan.low_load_since);
    let sfu = PodFleet {
        owner: vc,
        template: &stack.sfu.pod,
        prefix: crate::builders::labels::sfu_name(&name),
        key: key_of(vc),
        noun: "SFU pod",
        holds: "meetings",
    };
    execute(ctx, &sfu, &pods, &plan.actions, now).await?;
    sync_pod_labels(ctx, &pods).await?;
    Ok(Fleet { pods, snapshot, plan })
}
