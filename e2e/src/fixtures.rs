//! Shared fixtures of the scenarios: the VisioCluster manifests they apply, and the waits on them.

use serde_json::{json, Value};

/// The LiveKit version the fleet scenarios start from, and the one they upgrade to.
pub const OLD_VERSION: &str = "v1.9.4";
pub const NEW_VERSION: &str = "v1.9.5";
/// The VisioCluster of every fleet scenario.
pub const VC_NAME: &str = "visio";

/// The VisioCluster of the fleet scenarios: pod network mode (no node per pod), without TURN, with a
/// one-minute drain timeout (the least the CRD allows) and `spec` merged over that.
pub fn fleet_visio_cluster(display: &str, spec: Value) -> Value {
    let mut vc = json!({
        "apiVersion": "visio.io/v1alpha1", "kind": "VisioCluster", "metadata": {"name": VC_NAME},
        "spec": {
            "version": OLD_VERSION,
            "tenant": {"displayName": display},
            "signaling": {"host": "visio.example.gouv.fr"},
            "sfu": {"network": {"mode": "podNetwork"}, "capacity": {"participantsPerPod": 100}},
            "turn": {"enabled": false},
            "upgrade": {"drainTimeout": "1m", "warnBefore": "20s"}
        }
    });
    crate::merge_patch(&mut vc["spec"], &spec);
    vc
}
