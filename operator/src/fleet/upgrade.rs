//! Rolling upgrades: which outdated Serving pods to drain now, and the rollout counts.
//!
//! New pods come first (the creates in `scale::creates`, within `max_surge`), then outdated pods
//! drain. `max_draining` works like a Deployment's `maxUnavailable`, where "unavailable" means
//! draining: the Serving pods may dip at most `max_draining` under the desired count, and an
//! outdated pod replaced by a ready surge pod does not use it. So `max_surge` 0 upgrades by
//! draining alone, `max_draining` 0 by surging alone (the CRD forbids both at 0).
//!
//! Every drain also keeps the capacity floor (`drain::capacity_floor`). With `max_surge` 0 and a
//! fleet whose load needs every pod, no drain is allowed: the upgrade waits until meetings end.

use super::{drain, FleetSpec, PodSnapshot, UpgradeProgress};

/// The outdated Serving pods to drain now, in order: known load first, emptiest first (then
/// fewest sessions, then name), then those with an unknown load (they must go too, and draining
/// never cuts a session; they are just the least likely to empty soon). Stops at the first pod
/// the dip or the floor does not allow.
pub(super) fn drains<'a>(
    spec: &FleetSpec,
    desired: u32,
    floor: u64,
    outdated_serving: &[&'a PodSnapshot],
    serving_left: &mut u32,
) -> Vec<&'a PodSnapshot> {
    let mut order: Vec<&PodSnapshot> = outdated_serving.to_vec();
    order.sort_by(|a, b| {
        let key = |p: &PodSnapshot| (p.load.is_none(), p.load, p.sessions.unwrap_or(u32::MAX));
        (key(a), &a.name).cmp(&(key(b), &b.name))
    });
    let lowest = desired.saturating_sub(spec.max_draining);
    let mut chosen = Vec::new();
    for p in order {
        let Some(after) = serving_left.checked_sub(1) else { break };
        if after < lowest || !drain::keeps_floor(spec, after, floor) {
            break;
        }
        *serving_left = after;
        chosen.push(p);
    }
    chosen
}

/// Rollout counts, present while any Serving, Pending or Draining pod is outdated.
pub(super) fn progress(target_hash: &str, pods: &[&PodSnapshot]) -> Option<UpgradeProgress> {
    use super::PodPhase::*;
    let mut updated = 0;
    let mut outdated = 0;
    for p in pods {
        let current = p.template_hash == target_hash;
        match p.phase {
            Serving | Pending if current => updated += 1,
            Serving | Pending | Draining { .. } if !current => outdated += 1,
            _ => {}
        }
    }
    (outdated > 0).then_some(UpgradeProgress { updated, outdated })
}
