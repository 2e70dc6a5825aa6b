//! `VisioPlatform`: what the platform team allows its tenants (cluster-scoped, one per installation).
//!
//! A tenant's VisioCluster, CaptionPool and RetentionPolicy may only narrow it: run images from the
//! repositories it lists, on the node pools and with the PriorityClasses its tenant class lists, within
//! its replica and GPU limits, against its buckets; and the holds it declares cannot be lifted from a
//! namespace. The chart's ValidatingAdmissionPolicies refuse what breaks it at admission (the object is
//! their `params`), and the operator checks it again before it builds anything (`crate::platform`).
//! docs/security.md has the design.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::NAME_PATTERN;

/// The rules of one installation: which images, nodes, PriorityClasses, buckets and sizes each tenant
/// namespace may use, and the legal holds no tenant can lift. A rule left out does not restrict; the
/// chart sets every one.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "visio.io",
    version = "v1alpha1",
    kind = "VisioPlatform",
    plural = "visioplatforms",
    shortname = "vp",
    category = "visio",
    printcolumn = r#"{"name":"Tenant-Classes","type":"string","jsonPath":".spec.tenantClasses[*].name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.tenantClasses) || self.tenantClasses.all(c, !has(c.nodePools) || c.nodePools.all(p, has(self.nodePools) && self.nodePools.exists(q, q.name == p)))",
     "message": "spec.tenantClasses[].nodePools: every name must be one of spec.nodePools", "fieldPath": ".tenantClasses"}
]))]
pub struct VisioPlatformSpec {
    /// Image repositories tenants may name, per component. Images the operator chooses itself (its defaults,
    /// the managed Redis, its own agent) are not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<AllowedImages>,
    /// Placements tenant classes may use: a node selector a tenant's may only add to, and the tolerations a
    /// tenant may choose from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub node_pools: Option<Vec<NodePool>>,
    /// Which namespaces are tenants, and what each may use: the first class that lists a namespace (or `*`)
    /// is its class. A namespace no class lists is no tenant: nothing is deployed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // At most 64: the apiserver costs the CEL rule that checks each class's node pools against
    // `spec.nodePools` at classes x pools x pools; 256 classes put it 3.5x over the budget (CRD refused).
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tenant_classes: Option<Vec<TenantClass>>,
    /// Legal holds the operator honours for every RetentionPolicy, whatever the policy says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<PlatformRetention>,
}

/// Image repositories, per component. An entry ending in `/` allows every repository under it
/// (`registry.gouv.fr/visio/`); any other entry is one repository (`registry.gouv.fr/livekit/livekit-server`),
/// with any tag or digest. A list left out allows any image; an empty list allows none but the operator's
/// defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedImages {
    /// For `VisioCluster.spec.sfu.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 512)))]
    pub sfu: Option<Vec<String>>,
    /// For `CaptionPool.spec.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 512)))]
    pub caption_backends: Option<Vec<String>>,
    /// For `CaptionPool.spec.transcribers.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 512)))]
    pub transcribers: Option<Vec<String>>,
}

/// A set of nodes a tenant class may place pods on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePool {
    /// Name tenant classes use.
    #[schemars(length(min = 1, max = 63), extend("pattern" = NAME_PATTERN))]
    pub name: String,
    /// Labels a pod's node selector must hold (a tenant may add more, never drop or change one). Empty: any
    /// node without a taint the pool's tolerations do not cover.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// The only tolerations a pod on this pool may carry (each as written here; an unset operator is `Equal`).
    /// `$(namespace)` as a value (here or in `nodeSelector`) stands for the tenant's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
}

/// What the namespaces of one class may use.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantClass {
    /// Name (for messages and `kubectl get vp`).
    #[schemars(length(min = 1, max = 63), extend("pattern" = NAME_PATTERN))]
    pub name: String,
    /// Namespaces of this class; `*` is every namespace no earlier class lists.
    #[schemars(
        length(min = 1, max = 1024),
        inner(length(min = 1, max = 63), regex(pattern = r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"))
    )]
    pub namespaces: Vec<String>,
    /// Node pools (names of `spec.nodePools`) the class's SFU and caption backend pods may use: their
    /// scheduling must fit one. Left out: any placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63)))]
    pub node_pools: Option<Vec<String>>,
    /// PriorityClasses the class's pods may name. Left out: any; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub priority_classes: Option<Vec<String>>,
    /// Whether the class's SFU pods may use the node's network (`spec.sfu.network.mode: hostNetwork`, LiveKit's
    /// production mode, which bypasses NetworkPolicies). Left out: allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_host_network: Option<bool>,
    /// Most SFU pods one VisioCluster may ask for (`spec.sfu.replicas.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_sfu_pods: Option<i32>,
    /// Most GPUs one CaptionPool may ask for (`spec.backend.replicas.max` x `spec.backend.gpu.count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_gpus: Option<i32>,
    /// The S3 buckets (and prefixes) the class's recordings, transcripts and RetentionPolicies may name.
    /// Left out: any; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub buckets: Option<Vec<AllowedBucket>>,
}

/// One bucket a tenant class may use.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedBucket {
    /// S3 endpoint URL, exactly as tenants write it (`https://s3.interieur.gouv.fr`).
    #[schemars(length(min = 1, max = 2048), extend("pattern" = r"^https?://[^\s/]+(/.*)?$"))]
    pub endpoint: String,
    /// Bucket name.
    #[schemars(length(min = 3, max = 63), extend("pattern" = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix every prefix a tenant names must start with (`mininterieur/`). Left out: the whole bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub prefix: Option<String>,
}

/// Legal holds of the platform: a namespace's RetentionPolicy cannot lift them by editing its own
/// `spec.legalHold`, nor by being deleted and created again.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformRetention {
    /// Object tags that put an object on hold in every tenant's bucket, besides the policy's own tag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub hold_tags: Vec<HoldTag>,
    /// Honour S3 Object Lock legal holds whatever `spec.legalHold.objectLock` says.
    #[serde(default)]
    pub object_lock: bool,
    /// Namespaces whose data is held as a whole (an inquiry): their RetentionPolicies delete nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(min = 1, max = 63), regex(pattern = NAME_PATTERN)))]
    pub held_namespaces: Vec<String>,
}

/// An object tag meaning "on hold".
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HoldTag {
    /// Tag key.
    #[schemars(length(min = 1, max = 128))]
    pub key: String,
    /// Tag value meaning "on hold".
    #[schemars(length(min = 1, max = 256))]
    pub value: String,
}
