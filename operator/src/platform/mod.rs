//! The platform's rules (`VisioPlatform`) applied to a tenant's spec: pure, no I/O.
//!
//! The chart's ValidatingAdmissionPolicies say the same in CEL at admission (`helm/visio-operator/templates/
//! platform-policies.yaml`); this is the second enforcement, for objects stored before a rule changed or
//! created while the policies were off. Both read the rules alike: `e2e/corpus/platform.yaml` holds cases
//! both must decide the same way (`tests::the_corpus_is_decided_as_the_admission_policies_decide` here,
//! `e2e/tests/hostile_tenant.rs` against the real apiserver).

use std::fmt;

use k8s_openapi::api::core::v1::Toleration;

use crate::api::captionpool::CaptionPoolSpec;
use crate::api::common::{BucketRef, Scheduling};
use crate::api::retentionpolicy::RetentionPolicySpec;
use crate::api::visiocluster::NetworkMode;
use crate::api::visioplatform::{NodePool, TenantClass, VisioPlatformSpec};
use crate::api::VisioClusterSpec;

/// A spec that breaks a platform rule: the field, and what the rule allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for Violation {}

fn violation(field: impl Into<String>, message: impl Into<String>) -> Violation {
    Violation { field: field.into(), message: message.into() }
}

/// The class of `namespace`: the first that lists it, or `*`.
pub fn class_of<'p>(platform: &'p VisioPlatformSpec, namespace: &str) -> Option<&'p TenantClass> {
    platform.tenant_classes.as_ref()?.iter().find(|c| c.namespaces.iter().any(|n| n == "*" || n == namespace))
}

/// The class of `namespace`, or why it is no tenant.
fn tenant<'p>(
    platform: &'p VisioPlatformSpec,
    namespace: &str,
    kind: &str,
) -> Result<Option<&'p TenantClass>, Violation> {
    if platform.tenant_classes.is_none() {
        return Ok(None);
    }
    class_of(platform, namespace).map(Some).ok_or_else(|| {
        violation(
            "metadata.namespace",
            format!(
                "namespace {namespace:?} is not a tenant: no class of the VisioPlatform's spec.tenantClasses lists it, \
                 so no {kind} is deployed here (ask the platform team)"
            ),
        )
    })
}

/// Checks a VisioCluster's spec against the platform.
pub fn check_cluster(platform: &VisioPlatformSpec, namespace: &str, spec: &VisioClusterSpec) -> Result<(), Violation> {
    let class = tenant(platform, namespace, "VisioCluster")?;
    if let Some(image) = &spec.sfu.image {
        image_allowed(
            "spec.sfu.image",
            image,
            platform.images.as_ref().and_then(|i| i.sfu.as_ref()),
            "spec.images.sfu",
        )?;
    }
    let Some(class) = class else { return Ok(()) };
    if class.allow_host_network == Some(false) && spec.sfu.network.mode == NetworkMode::HostNetwork {
        return Err(violation(
            "spec.sfu.network.mode",
            format!("hostNetwork is not allowed to tenant class {:?}: use podNetwork", class.name),
        ));
    }
    scheduling("spec.sfu.scheduling", &spec.sfu.scheduling, platform, class, namespace)?;
    if let Some(max) = class.max_sfu_pods.filter(|max| spec.sfu.replicas.max > *max) {
        return Err(violation(
            "spec.sfu.replicas.max",
            format!("{} is above the {max} SFU pods tenant class {:?} allows", spec.sfu.replicas.max, class.name),
        ));
    }
    if let Some(bucket) = &spec.recordings {
        bucket_allowed("spec.recordings", bucket, bucket.prefix.as_deref(), class)?;
    }
    Ok(())
}

/// Checks a CaptionPool's spec against the platform.
pub fn check_pool(platform: &VisioPlatformSpec, namespace: &str, spec: &CaptionPoolSpec) -> Result<(), Violation> {
    let class = tenant(platform, namespace, "CaptionPool")?;
    let images = platform.images.as_ref();
    if let Some(image) = &spec.image {
        image_allowed(
            "spec.image",
            image,
            images.and_then(|i| i.caption_backends.as_ref()),
            "spec.images.captionBackends",
        )?;
    }
    if let Some(image) = &spec.transcribers.image {
        image_allowed(
            "spec.transcribers.image",
            image,
            images.and_then(|i| i.transcribers.as_ref()),
            "spec.images.transcribers",
        )?;
    }
    let Some(class) = class else { return Ok(()) };
    scheduling("spec.backend.scheduling", &spec.backend.scheduling, platform, class, namespace)?;
    let b = &spec.backend;
    let gpus = i64::from(b.replicas.max) * i64::from(b.gpu.count);
    if let Some(max) = class.max_gpus.filter(|max| gpus > i64::from(*max)) {
        return Err(violation(
            "spec.backend.gpu.count",
            format!(
                "{} pods of {} GPUs (spec.backend.replicas.max x spec.backend.gpu.count) is {gpus} GPUs, above the {max} \
                 tenant class {:?} allows",
                b.replicas.max, b.gpu.count, class.name
            ),
        ));
    }
    if let Some(bucket) = spec.transcripts.as_ref().and_then(|t| t.bucket.as_ref()) {
        bucket_allowed("spec.transcripts.bucket", bucket, bucket.prefix.as_deref(), class)?;
    }
    Ok(())
}

/// Checks a RetentionPolicy's spec against the platform: its bucket, then each rule's prefix in it.
pub fn check_policy(
    platform: &VisioPlatformSpec,
    namespace: &str,
    spec: &RetentionPolicySpec,
) -> Result<(), Violation> {
    let Some(class) = tenant(platform, namespace, "RetentionPolicy")? else { return Ok(()) };
    let Some(allowed) = &class.buckets else { return Ok(()) };
    let target = BucketRef { endpoint: spec.target.endpoint.clone(), bucket: spec.target.bucket.clone(), prefix: None };
    if !allowed.iter().any(|a| a.endpoint == target.endpoint && a.bucket == target.bucket) {
        return Err(bucket_refused("spec.target", &target, None, class));
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        bucket_allowed(&format!("spec.rules[{i}].prefix"), &target, Some(&rule.prefix), class)?;
    }
    Ok(())
}

/// Whether `image` is under one of `allowed` (left out: any).
fn image_allowed(field: &str, image: &str, allowed: Option<&Vec<String>>, rule: &str) -> Result<(), Violation> {
    let Some(allowed) = allowed else { return Ok(()) };
    let fits = |entry: &String| {
        image == entry
            || image.starts_with(&format!("{entry}:"))
            || image.starts_with(&format!("{entry}@"))
            || (entry.ends_with('/') && image.starts_with(entry.as_str()))
    };
    if allowed.iter().any(fits) {
        return Ok(());
    }
    Err(violation(field, format!("{image:?} is not an image the VisioPlatform allows ({rule}: {})", list(allowed))))
}

/// Whether a component's scheduling fits its class: a PriorityClass it lists, and one of its node pools.
fn scheduling(
    field: &str,
    s: &Scheduling,
    platform: &VisioPlatformSpec,
    class: &TenantClass,
    namespace: &str,
) -> Result<(), Violation> {
    if let (Some(pc), Some(allowed)) = (&s.priority_class_name, &class.priority_classes) {
        if !allowed.contains(pc) {
            return Err(violation(
                format!("{field}.priorityClassName"),
                format!("{pc:?} is not a PriorityClass tenant class {:?} allows ({})", class.name, list(allowed)),
            ));
        }
    }
    let Some(names) = &class.node_pools else { return Ok(()) };
    let pools: Vec<&NodePool> = platform.node_pools.iter().flatten().filter(|p| names.contains(&p.name)).collect();
    if pools.iter().any(|p| fits_pool(s, p, namespace)) {
        return Ok(());
    }
    Err(violation(
        field,
        format!(
            "the node selector and tolerations fit none of the node pools tenant class {:?} may use ({}): a pod's \
             nodeSelector must hold every label of one pool's, and each toleration must be one of that pool's",
            class.name,
            list(names)
        ),
    ))
}

/// A tenant's scheduling narrows `pool`: every label of the pool's selector, and only the pool's tolerations.
/// [`NAMESPACE_PLACEHOLDER`] in a pool's label or toleration value stands for the tenant's namespace.
pub fn fits_pool(s: &Scheduling, pool: &NodePool, namespace: &str) -> bool {
    let value = |v: &str| if v == NAMESPACE_PLACEHOLDER { namespace.to_string() } else { v.to_string() };
    pool.node_selector.iter().all(|(k, v)| s.node_selector.get(k) == Some(&value(v)))
        && s.tolerations.iter().all(|t| pool.tolerations.iter().any(|q| same_toleration(q, t, &value)))
}

/// Stands for the tenant's namespace in a node pool's values: a pool `{key: visio.io/dedicated, value:
/// $(namespace)}` lets each ministry tolerate its own dedicated nodes, never another's.
pub const NAMESPACE_PLACEHOLDER: &str = "$(namespace)";

/// Whether toleration `t` is the pool's `q` (an unset operator is `Equal`, as the apiserver reads it).
fn same_toleration(q: &Toleration, t: &Toleration, value: &impl Fn(&str) -> String) -> bool {
    let or_empty = |o: &Option<String>| o.clone().unwrap_or_default();
    let operator = |o: &Option<String>| o.clone().filter(|o| !o.is_empty()).unwrap_or_else(|| "Equal".into());
    or_empty(&q.key) == or_empty(&t.key)
        && operator(&q.operator) == operator(&t.operator)
        && value(&or_empty(&q.value)) == or_empty(&t.value)
        && or_empty(&q.effect) == or_empty(&t.effect)
        && q.toleration_seconds == t.toleration_seconds
}

/// Whether `bucket` (with `prefix`, when the use names one) is one the class allows.
fn bucket_allowed(field: &str, bucket: &BucketRef, prefix: Option<&str>, class: &TenantClass) -> Result<(), Violation> {
    let Some(allowed) = &class.buckets else { return Ok(()) };
    let fits = allowed.iter().any(|a| {
        a.endpoint == bucket.endpoint
            && a.bucket == bucket.bucket
            && a.prefix.as_deref().is_none_or(|p| prefix.is_some_and(|q| q.starts_with(p)))
    });
    if fits {
        return Ok(());
    }
    Err(bucket_refused(field, bucket, prefix, class))
}

fn bucket_refused(field: &str, bucket: &BucketRef, prefix: Option<&str>, class: &TenantClass) -> Violation {
    let shown: Vec<String> = class
        .buckets
        .iter()
        .flatten()
        .map(|a| format!("{} {}/{}", a.endpoint, a.bucket, a.prefix.as_deref().unwrap_or("")))
        .collect();
    violation(
        field,
        format!(
            "{} bucket {:?}{} is not one tenant class {:?} may use ({})",
            bucket.endpoint,
            bucket.bucket,
            prefix.map(|p| format!(" prefix {p:?}")).unwrap_or_default(),
            class.name,
            if shown.is_empty() { "none".into() } else { shown.join(", ") }
        ),
    )
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// What holds an object in a namespace's bucket: the policy's own tag and the platform's, which the policy
/// cannot drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holds {
    /// `(key, value)` tags, any of which holds an object.
    pub tags: Vec<(String, String)>,
    /// Honour S3 Object Lock legal holds.
    pub object_lock: bool,
    /// The platform holds the whole namespace: delete nothing.
    pub namespace_held: bool,
}

/// The holds of a policy in `namespace`, under `platform` (if any).
pub fn holds(
    platform: Option<&VisioPlatformSpec>,
    namespace: &str,
    own: &crate::api::retentionpolicy::LegalHoldSpec,
) -> Holds {
    let mut tags = vec![(own.tag_key.clone(), own.tag_value.clone())];
    let retention = platform.and_then(|p| p.retention.as_ref());
    for t in retention.map(|r| r.hold_tags.as_slice()).unwrap_or_default() {
        let pair = (t.key.clone(), t.value.clone());
        if !tags.contains(&pair) {
            tags.push(pair);
        }
    }
    Holds {
        tags,
        object_lock: own.object_lock || retention.is_some_and(|r| r.object_lock),
        namespace_held: retention.is_some_and(|r| r.held_namespaces.iter().any(|n| n == namespace)),
    }
}

#[cfg(test)]
mod tests;
