//! Status conditions: building them and merging them into the previous list so that
//! `lastTransitionTime` only moves when a condition's status really changes (a reconcile
//! that changes nothing must write nothing).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types the operator sets.
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const UPGRADE_IN_PROGRESS: &str = "UpgradeInProgress";
pub const RETENTION_POLICY_MISSING: &str = "RetentionPolicyMissing";
/// kstatus's two conditions (sigs.k8s.io/cli-utils/pkg/kstatus, what Flux and other GitOps tools read):
/// `Reconciling=True` reads as InProgress, `Stalled=True` as Failed; both False with
/// `status.observedGeneration == metadata.generation` as Current. See [`convergence`].
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// A condition without its transition time, as a controller decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Decided {
    pub fn new(type_: &'static str, status: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self { type_, status, reason: reason.into(), message: message.into() }
    }
}

fn status_str(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// Where a resource stands against its spec, as kstatus asks it to be said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Convergence {
    /// What the spec asks is there.
    Current,
    /// The controller is still getting there (pods starting, an upgrade, a drain): (reason, message).
    Reconciling(&'static str, String),
    /// The spec cannot converge until a person changes something (a missing Secret, a spec the builders
    /// refuse, a quota too small for the pods): (reason, message). Always an error, never mere slowness.
    Stalled(String, String),
}

/// kstatus's `Reconciling` and `Stalled` conditions for a convergence. kstatus looks at `Reconciling`
/// first in list order, and our lists are sorted by type (`Reconciling` < `Stalled`), so a stalled
/// resource says `Reconciling=False`: it is Failed, not InProgress. Both are abnormal-true, as kstatus's
/// convention asks: False is the healthy value.
pub fn convergence(c: &Convergence) -> [Decided; 2] {
    let settled_reconciling =
        |reason: &str| Decided::new(RECONCILING, false, reason, "nothing left to do for this spec");
    match c {
        Convergence::Current => {
            [settled_reconciling("Reconciled"), Decided::new(STALLED, false, "AsExpected", "no problem detected")]
        }
        Convergence::Reconciling(reason, message) => [
            Decided::new(RECONCILING, true, *reason, message.clone()),
            Decided::new(STALLED, false, "AsExpected", "no problem detected"),
        ],
        Convergence::Stalled(reason, message) => [
            Decided::new(RECONCILING, false, "Stalled", "the spec cannot converge: see the Stalled condition"),
            Decided::new(STALLED, true, reason.clone(), message.clone()),
        ],
    }
}

/// Merges decided conditions into the previous ones. A condition keeps its previous
/// `lastTransitionTime` unless its status changed; conditions not decided this time are dropped.
/// The result is sorted by type, so the same decisions always give the same list.
pub fn merge(previous: &[Condition], decided: &[Decided], generation: Option<i64>, now: Timestamp) -> Vec<Condition> {
    let mut out: Vec<Condition> = decided
        .iter()
        .map(|d| {
            let status = status_str(d.status);
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == d.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: d.type_.to_string(),
                status: status.to_string(),
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect();
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Merges `decided` into a status's conditions and observed generation (now as the transition time of
/// what changed); returns whether anything changed.
pub fn set(
    conditions: &mut Vec<Condition>,
    observed_generation: &mut Option<i64>,
    decided: &[Decided],
    generation: Option<i64>,
) -> bool {
    let merged = merge(conditions, decided, generation, Timestamp::now());
    let changed = merged != *conditions || *observed_generation != generation;
    *conditions = merged;
    *observed_generation = generation;
    changed
}

/// Looks up a condition's status.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn keeps_transition_time_when_status_is_unchanged() {
        let first = merge(&[], &[Decided::new(READY, true, "Serving", "all good")], Some(1), t(100));
        let second = merge(&first, &[Decided::new(READY, true, "Serving", "still good")], Some(2), t(200));
        assert_eq!(second[0].last_transition_time, Time(t(100)));
        assert_eq!(second[0].message, "still good");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn moves_transition_time_when_status_flips() {
        let first = merge(&[], &[Decided::new(READY, true, "Serving", "")], Some(1), t(100));
        let second = merge(&first, &[Decided::new(READY, false, "PodsNotReady", "")], Some(1), t(200));
        assert_eq!(second[0].last_transition_time, Time(t(200)));
        assert_eq!(second[0].status, "False");
    }

    #[test]
    fn same_decisions_give_identical_lists() {
        let d = [Decided::new(READY, true, "A", "a"), Decided::new(DEGRADED, false, "B", "b")];
        let first = merge(&[], &d, Some(3), t(1));
        let second = merge(&first, &d, Some(3), t(99));
        assert_eq!(first, second);
        assert_eq!(first[0].type_, DEGRADED, "sorted by type");
    }

    /// kstatus's reading of a condition list (cli-utils v0.37 `checkGenericProperties`: the first of
    /// `Reconciling=True` / `Stalled=True` in list order, then the `Ready` fallback), mirrored here so
    /// that every convergence is checked to read as meant; e2e/tests/kstatus.rs runs the real library.
    fn kstatus_reads(list: &[Condition]) -> &'static str {
        for c in list {
            if c.type_ == RECONCILING && c.status == "True" {
                return "InProgress";
            }
            if c.type_ == STALLED && c.status == "True" {
                return "Failed";
            }
        }
        match list.iter().find(|c| c.type_ == READY).map(|c| c.status.as_str()) {
            Some("False") | Some("Unknown") => "InProgress",
            _ => "Current",
        }
    }

    #[test]
    fn each_convergence_reads_as_kstatus_means_it_with_any_ready() {
        for ready in [true, false] {
            for (c, want) in [
                (Convergence::Current, if ready { "Current" } else { "InProgress" }),
                (Convergence::Reconciling("RollingUpgrade", "1/2 updated".into()), "InProgress"),
                (Convergence::Stalled("KeysSecretMissing".into(), "spec.keysSecret: not found".into()), "Failed"),
            ] {
                let mut d = vec![Decided::new(READY, ready, "R", "")];
                d.extend(convergence(&c));
                let list = merge(&[], &d, Some(1), t(1));
                assert_eq!(kstatus_reads(&list), want, "{c:?}, Ready={ready}");
            }
        }
    }
}
