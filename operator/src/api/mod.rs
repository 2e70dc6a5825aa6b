//! The `visio.io/v1alpha1` API: the three custom resources a tenant applies.
//! Types only, no I/O.

pub mod captionpool;
pub mod common;
pub mod retentionpolicy;
pub mod visiocluster;

pub use captionpool::{CaptionPool, CaptionPoolSpec, CaptionPoolStatus};
pub use retentionpolicy::{RetentionPolicy, RetentionPolicySpec, RetentionPolicyStatus};
pub use visiocluster::{VisioCluster, VisioClusterSpec, VisioClusterStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every custom resource.
pub const GROUP: &str = "visio.io";

/// The CRDs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![VisioCluster::crd(), CaptionPool::crd(), RetentionPolicy::crd()]
}

/// The CRDs as one multi-document YAML stream (what `visio-operator crds` prints and `crds/` holds).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// One CRD per file name, for the committed `crds/` directory.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
            serde_yaml::to_string(&crd).map(|y| (name, y))
        })
        .collect()
}
