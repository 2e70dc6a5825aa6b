//! How long a fleet's new pods take to serve: creation to first Ready, measured on its own pods and
//! remembered per fleet, so that schedule windows open early by that much (`fleet::schedule`).
//!
//! The lead is the slowest of the fleet's last [`KEPT`] pods: a window must find its pods Ready, so
//! the figure errs long (a cold image pull on a fresh node is what the next window will meet too).
//! Each pod is measured once, when it is first seen Ready, from its Ready condition's transition time,
//! so a pod that later flaps is not measured again. After an operator restart the pods already Ready
//! are measured the same way (their transition time may be a later flap: the figure errs long again).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::pods::pod_ready;

/// Pods remembered per fleet.
pub const KEPT: usize = 10;

/// Per fleet: pod UID -> (creation, start-up), Unix ms.
pub type Startups = BTreeMap<String, (i64, i64)>;

/// Creation to Ready of a Ready pod (`None` if not Ready or the times are missing or inverted).
pub fn startup_ms(p: &Pod) -> Option<i64> {
    if !pod_ready(p) {
        return None;
    }
    let created = p.metadata.creation_timestamp.as_ref()?.0.as_millisecond();
    let ready = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    let at = ready.last_transition_time.as_ref()?.0.as_millisecond();
    (at >= created).then_some(at - created)
}

/// Adds the pods of `pods` not measured yet to `kept` (the [`KEPT`] most recently created stay) and
/// returns the lead: the slowest start-up kept, `None` if none was measured.
pub fn record(kept: &mut Startups, pods: &[std::sync::Arc<Pod>]) -> Option<i64> {
    for p in pods {
        let Some(uid) = p.uid() else { continue };
        if kept.contains_key(&uid) {
            continue;
        }
        if let (Some(ms), Some(created)) = (startup_ms(p), p.metadata.creation_timestamp.as_ref()) {
            kept.insert(uid, (created.0.as_millisecond(), ms));
        }
    }
    while kept.len() > KEPT {
        let oldest = kept.iter().min_by_key(|(uid, (created, _))| (*created, (*uid).clone())).map(|(u, _)| u.clone());
        match oldest {
            Some(uid) => kept.remove(&uid),
            None => break,
        };
    }
    kept.values().map(|(_, ms)| *ms).max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn pod(uid: &str, created: &str, ready_at: Option<&str>) -> Arc<Pod> {
        let conditions = match ready_at {
            Some(t) => json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]),
            None => json!([{"type": "Ready", "status": "False", "lastTransitionTime": created}]),
        };
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": uid, "uid": uid, "creationTimestamp": created},
                "status": {"conditions": conditions}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn measures_creation_to_ready() {
        assert_eq!(startup_ms(&pod("a", "2026-12-07T08:00:00Z", Some("2026-12-07T08:01:30Z"))), Some(90_000));
        assert_eq!(startup_ms(&pod("a", "2026-12-07T08:00:00Z", None)), None);
        // A clock skew that puts Ready before creation is no figure.
        assert_eq!(startup_ms(&pod("a", "2026-12-07T08:00:00Z", Some("2026-12-07T07:59:00Z"))), None);
    }

    #[test]
    fn keeps_the_slowest_of_the_recent_pods_measured_once() {
        let mut kept = Startups::new();
        assert_eq!(record(&mut kept, &[pod("p", "2026-12-07T08:00:00Z", None)]), None);
        let first = pod("a", "2026-12-07T08:00:00Z", Some("2026-12-07T08:02:00Z"));
        assert_eq!(record(&mut kept, &[first]), Some(120_000));
        // A later flap of the same pod (new transition time) is not measured again.
        let flapped = pod("a", "2026-12-07T08:00:00Z", Some("2026-12-07T09:00:00Z"));
        assert_eq!(record(&mut kept, &[flapped]), Some(120_000));
        // Ten faster pods created later push the slow one out.
        let fast: Vec<Arc<Pod>> = (0..KEPT)
            .map(|i| {
                pod(&format!("f{i}"), &format!("2026-12-07T10:0{i}:00Z"), Some(&format!("2026-12-07T10:0{i}:20Z")))
            })
            .collect();
        assert_eq!(record(&mut kept, &fast), Some(20_000));
        assert_eq!(kept.len(), KEPT);
    }
}
