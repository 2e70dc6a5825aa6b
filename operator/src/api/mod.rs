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
    vec![with_name_rule(VisioCluster::crd()), CaptionPool::crd(), RetentionPolicy::crd()]
}

/// Longest VisioCluster name: its Services are `<name>-signaling` and the like, DNS labels of 63 at most.
pub const MAX_CLUSTER_NAME_LEN: usize = 63 - "-signaling".len();

/// The VisioCluster's name becomes part of its children's names (Services: DNS labels) and of a label
/// value: the apiserver refuses one that cannot be (the controller checks it again, for objects stored
/// before this rule). A root-level rule, since schemars derives none for `metadata`.
fn with_name_rule(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;
    for version in &mut crd.spec.versions {
        if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            schema.x_kubernetes_validations.get_or_insert_with(Vec::new).push(ValidationRule {
                rule: format!(
                    "size(self.metadata.name) <= {MAX_CLUSTER_NAME_LEN} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
                ),
                message: Some(format!(
                    "metadata.name: a VisioCluster name is a DNS label of at most {MAX_CLUSTER_NAME_LEN} characters \
                     (lower-case letters, digits, '-', starting with a letter): its Services are named after it"
                )),
                ..ValidationRule::default()
            });
        }
    }
    crd
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
