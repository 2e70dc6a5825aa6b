//! Step 6: the backend pool. The fleet planner (`fleet::plan`, pure) decides over the backend pods in
//! slots; its actions are carried out (`runtime::pods`), and the routing labels follow what the pods
//! report.

use kube::ResourceExt;

use super::fleet_key;
use super::validate::Validated;
use super::workers::Observed;
use crate::api::captionpool::CaptionPool;
use crate::builders::captions::{backend_name, CaptionStack};
use crate::fleet::{self, Plan, Snapshot};
use crate::runtime::error::Result;
use crate::runtime::pods::{execute, remember_low_load, snapshot, sync_pod_labels, PodFleet};
use crate::runtime::{key_of, Context};

/// The backend pool as this reconcile saw and planned it, for the status.
pub struct Backends {
    pub snapshot: Snapshot,
    pub plan: Plan,
}

pub async fn reconcile(
    ctx: &Context,
    cp: &CaptionPool,
    valid: &Validated,
    stack: &CaptionStack,
    observed: &Observed,
) -> Result<Backends> {
    let key = fleet_key(&key_of(cp));
    let snapshot = snapshot(ctx, &key, &stack.backend.hash, &observed.backends, observed.now);
    let plan = fleet::plan(&valid.backends, &snapshot);
    remember_low_load(ctx, &key, plan.low_load_since);
    let fleet = PodFleet {
        owner: cp,
        template: &stack.backend.pod,
        prefix: backend_name(&cp.name_any()),
        key: key.clone(),
        noun: "caption backend pod",
        holds: "streams",
    };
    execute(ctx, &fleet, &observed.backends, &plan.actions, observed.now).await?;
    sync_pod_labels(ctx, &observed.backends).await?;
    Ok(Backends { snapshot, plan })
}
