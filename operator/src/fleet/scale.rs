//! Scaling rules: the demand (serving load), the desired count, the scale-down choice and the
//! number of pods to create.

use super::schedule::{Minimum, Window};
use super::{drain, Action, DeleteReason, DrainReason, FleetSpec, PodSnapshot, Scheduled};
use std::cmp::Reverse;

/// The demand: the sum of the reported loads on Serving pods. An unknown load adds no demand.
///
/// Why not read it as a full pod, to be safe? Every pod the planner creates turns Serving with
/// an unknown load until its agent reports. Were that read as full, each new pod would ask for
/// yet another one, and a slow or broken agent (or a cluster whose pods run no agent at all)
/// would grow the fleet to `max` at once. The safety rules still never read an unknown load as
/// empty: such a pod is never drained for a scale-down, and the drain floor reads it as full
/// (`drain::assumed_load`).
pub(super) fn serving_load(serving: &[&PodSnapshot]) -> u64 {
    serving.iter().filter_map(|p| p.load).map(u64::from).sum()
}

/// Serving pods needed for `load`: enough for the load plus the buffer, and enough to keep the
/// utilisation at or under the target, clamped to `min..=max`.
pub(super) fn desired(spec: &FleetSpec, load: u64) -> u32 {
    let cap = u64::from(spec.capacity_per_pod);
    let for_buffer = (load + u64::from(spec.buffer)).div_ceil(cap);
    let for_target = (load * 100).div_ceil(cap * u64::from(spec.target_utilization_percent));
    let want = for_buffer.max(for_target).clamp(u64::from(spec.min), u64::from(spec.max));
    u32::try_from(want).unwrap_or(spec.max)
}

/// The floor the open windows set: the most pods any of them asks for (a load minimum read as that
/// load on the fleet: with the buffer and target utilisation), within `min..=max`. `None` when no
/// window is open.
pub(super) fn scheduled(spec: &FleetSpec, open: &[&Window]) -> Option<Scheduled> {
    let pods = |w: &Window| match w.min {
        Minimum::Pods(n) => n.clamp(spec.min, spec.max),
        Minimum::Load(load) => desired(spec, u64::from(load)),
    };
    // The first of the largest, so the window shown is stable.
    open.iter()
        .map(|w| (pods(w), *w))
        .fold(None, |best: Option<(u32, &Window)>, (n, w)| match best {
            Some((b, _)) if b >= n => best,
            _ => Some((n, w)),
        })
        .map(|(pods, w)| Scheduled { window: w.name.clone(), pods })
}

/// How far ahead a window holds its pods against a scale-down: the drain timeout (the longest a
/// drained pod can keep its meetings, so the longest a drain can run side by side with the window's
/// new pods), at most [`HOLD_AHEAD_MAX_MS`].
pub(super) fn hold_ahead_ms(spec: &FleetSpec) -> i64 {
    spec.drain_timeout_ms.clamp(0, HOLD_AHEAD_MAX_MS)
}

/// The longest hold ahead of a window: an idle pod kept longer costs more than most drains.
pub const HOLD_AHEAD_MAX_MS: i64 = 90 * 60_000;

/// What a scale-down does.
pub(super) struct ScaleDown {
    pub actions: Vec<Action>,
    pub pending_deleted: u32,
    pub drained: u32,
}

/// Removes up to `surplus` pods of the target template: Pending pods first, newest first (they
/// hold nothing and are furthest from ready), then the emptiest Serving pods (least load, then
/// fewest sessions, then name). A Serving pod with unknown load is never chosen (it may be
/// full, although it adds no demand); no drain takes the Serving pods under `desired` (a Pending
/// pod left over is not ready yet) nor their capacity under `floor`.
pub(super) fn scale_down(
    spec: &FleetSpec,
    surplus: u32,
    desired: u32,
    floor: u64,
    pending: &[&PodSnapshot],
    serving: &[&PodSnapshot],
    serving_left: &mut u32,
) -> ScaleDown {
    let mut down = ScaleDown { actions: Vec::new(), pending_deleted: 0, drained: 0 };
    let mut pending: Vec<&PodSnapshot> = pending.iter().copied().filter(|p| !p.reports_activity()).collect();
    pending.sort_by(|a, b| (Reverse(a.created), &a.name).cmp(&(Reverse(b.created), &b.name)));
    for p in pending.into_iter().take(surplus as usize) {
        down.actions.push(Action::Delete { pod: p.name.clone(), reason: DeleteReason::Stale });
        down.pending_deleted += 1;
    }

    let mut candidates: Vec<(u32, u32, &PodSnapshot)> =
        serving.iter().filter_map(|p| Some((p.load?, p.sessions.unwrap_or(u32::MAX), *p))).collect();
    candidates.sort_by(|a, b| (a.0, a.1, &a.2.name).cmp(&(b.0, b.1, &b.2.name)));
    for (_, _, p) in candidates.into_iter().take((surplus - down.pending_deleted) as usize) {
        if *serving_left <= desired || !drain::keeps_floor(spec, *serving_left - 1, floor) {
            break;
        }
        *serving_left -= 1;
        down.actions.push(Action::Drain { pod: p.name.clone(), reason: DrainReason::ScaleDown });
        down.drained += 1;
    }
    down
}

/// Pod counts once this plan's deletes and drains are applied.
pub(super) struct Totals {
    pub serving: u32,
    pub pending: u32,
    pub draining: u32,
    pub outdated_draining: u32,
    /// Serving or Pending pods of the target template.
    pub target_active: u32,
}

/// Pods to create: the larger of
/// - the demand: Serving + Pending up to `desired`, within `max + max_surge` pods in all
///   (Draining pods included: they still hold a node). During an upgrade up to `max_draining`
///   draining outdated pods count as still serving: that dip is what `max_draining` allows, so
///   it is not refilled beyond the surge;
/// - the upgrade: target-template pods up to `desired`, within `desired + max_surge` in all.
pub(super) fn creates(spec: &FleetSpec, desired: u32, t: &Totals) -> u32 {
    let active = t.serving.saturating_add(t.pending);
    let total = active.saturating_add(t.draining);
    let dip = t.outdated_draining.min(spec.max_draining);
    let deficit = desired.saturating_sub(active.saturating_add(dip));
    let for_demand = deficit.min(spec.max.saturating_add(spec.max_surge).saturating_sub(total));
    let for_upgrade = desired.saturating_sub(t.target_active);
    let for_upgrade = for_upgrade.min(desired.saturating_add(spec.max_surge).saturating_sub(total));
    for_demand.max(for_upgrade)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min: u32, max: u32, cap: u32, buffer: u32, target: u32) -> FleetSpec {
        FleetSpec {
            min,
            max,
            capacity_per_pod: cap,
            buffer,
            target_utilization_percent: target,
            scale_down_delay_ms: 0,
            max_surge: 1,
            max_draining: 1,
            drain_timeout_ms: 60_000,
            warn_before_ms: 0,
            schedule: Default::default(),
        }
    }

    #[test]
    fn desired_table() {
        // (min, max, cap, buffer, target%, load) -> desired
        let table = [
            ((0, 10, 100, 0, 100, 0), 0),
            ((0, 10, 100, 0, 100, 1), 1),
            ((0, 10, 100, 0, 100, 100), 1),
            ((0, 10, 100, 0, 100, 101), 2),
            ((0, 10, 100, 50, 100, 100), 2), // buffer
            ((0, 10, 100, 50, 100, 50), 1),  // buffer fits exactly
            ((0, 10, 100, 0, 50, 100), 2),   // target utilisation
            ((0, 10, 100, 0, 70, 300), 5),   // 300 / 70 = 4.3
            ((0, 10, 100, 250, 70, 300), 6), // the larger of the two
            ((3, 10, 100, 0, 100, 0), 3),    // min clamp
            ((0, 4, 100, 0, 100, 900), 4),   // max clamp
            ((0, 10, 1, 0, 100, 7), 7),      // capacity 1
        ];
        for ((min, max, cap, buffer, target, load), want) in table {
            assert_eq!(
                desired(&spec(min, max, cap, buffer, target), load),
                want,
                "{min} {max} {cap} {buffer} {target} {load}"
            );
        }
    }

    #[test]
    fn desired_survives_huge_loads() {
        let s = spec(0, u32::MAX, 1, u32::MAX, 10);
        assert_eq!(desired(&s, u64::from(u32::MAX) * 1000), u32::MAX);
    }

    #[test]
    fn creates_survive_huge_specs() {
        let s = FleetSpec { max_surge: u32::MAX, ..spec(0, u32::MAX, 1, 0, 100) };
        let t = Totals { serving: 1, pending: 0, draining: 0, outdated_draining: 0, target_active: 1 };
        assert_eq!(creates(&s, u32::MAX, &t), u32::MAX - 1);
    }

    #[test]
    fn creates_table() {
        let s = FleetSpec { max_surge: 2, max_draining: 1, ..spec(0, 10, 100, 0, 100) };
        let t = |serving, pending, draining, outdated_draining, target_active| Totals {
            serving,
            pending,
            draining,
            outdated_draining,
            target_active,
        };
        // (desired, totals) -> creates
        let table = [
            (5, t(5, 0, 0, 0, 5), 0),  // steady
            (7, t(5, 0, 0, 0, 5), 2),  // demand
            (7, t(5, 1, 0, 0, 6), 1),  // pending counts
            (10, t(5, 0, 6, 0, 5), 1), // draining pods hold places: 5 + 6 + 1 = max + surge
            (5, t(5, 0, 0, 0, 0), 2),  // upgrade: within the surge
            (5, t(4, 0, 1, 1, 0), 2),  // upgrade dip not refilled beyond the surge
            (5, t(4, 0, 3, 3, 0), 0),  // surge used up by draining pods
            (6, t(4, 0, 4, 4, 0), 1),  // demand beyond the dip is refilled, within max + surge
        ];
        for (d, totals, want) in table {
            assert_eq!(
                creates(&s, d, &totals),
                want,
                "desired {d}, {} {} {} {} {}",
                totals.serving,
                totals.pending,
                totals.draining,
                totals.outdated_draining,
                totals.target_active
            );
        }
    }
}
