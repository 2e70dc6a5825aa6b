//! Types shared by the three custom resources: references, replica bounds,
//! scheduling, bucket targets and the duration format.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Go-style duration as Kubernetes CEL's `duration()` understands it: `90s`, `5m`, `3h`, `1h30m`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// DNS-1123 label (names of Secrets, VisioClusters, ...).
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A reference to an object in the same namespace. There is deliberately no
/// `namespace` field: a tenant can never point at another ministry's objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the object, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 63), extend("pattern" = NAME_PATTERN))]
    pub name: String,
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253), extend("pattern" = NAME_PATTERN))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Lower and upper bound of a replica count.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.min <= self.max", "message": "min must be less than or equal to max", "fieldPath": ".min"}
]))]
pub struct ReplicaBounds {
    /// Fewest pods kept running, whatever the load.
    #[schemars(range(min = 0, max = 1000))]
    pub min: i32,
    /// Most pods the autoscaler may run.
    #[schemars(range(min = 1, max = 1000))]
    pub max: i32,
}

/// Where the pods of a component may run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// Node labels a pod's node must carry (for example the ministry's dedicated node pool).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations, typically for the taint of dedicated nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
    /// Affinity rules. When unset, pods of one component prefer distinct nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Priority class of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// An S3-compatible bucket that holds meeting data.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketRef {
    /// S3 endpoint URL, for example `https://s3.interieur.gouv.fr`.
    #[schemars(length(min = 1, max = 2048), extend("pattern" = r"^https?://[^\s/]+(/.*)?$"))]
    pub endpoint: String,
    /// Bucket name.
    #[schemars(length(min = 3, max = 63), extend("pattern" = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix under which this component writes (for example `recordings/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub prefix: Option<String>,
}
