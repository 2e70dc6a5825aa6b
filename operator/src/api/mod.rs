//! The `visio.io/v1alpha1` API: the three custom resources a tenant applies, and the platform team's
//! `VisioPlatform`.
//! Types only, no I/O.

pub mod captionpool;
pub mod common;
pub mod retentionpolicy;
pub mod schedule;
pub mod visiocluster;
pub mod visioplatform;

pub use captionpool::{CaptionPool, CaptionPoolSpec, CaptionPoolStatus};
pub use retentionpolicy::{RetentionPolicy, RetentionPolicySpec, RetentionPolicyStatus};
pub use visiocluster::{VisioCluster, VisioClusterSpec, VisioClusterStatus};
pub use visioplatform::{VisioPlatform, VisioPlatformSpec};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

/// API group of every custom resource.
pub const GROUP: &str = "visio.io";

/// The CRDs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [with_name_rule(VisioCluster::crd()), CaptionPool::crd(), RetentionPolicy::crd(), VisioPlatform::crd()]
        .into_iter()
        .map(without_control_characters)
        .collect()
}

/// The pattern every string of a `spec` matches: no ASCII control character (C0, including tab and
/// newline, and DEL). Go's regexp (RE2) reads it as the apiserver does.
pub const NO_CONTROL_CHARACTERS: &str = r"^[^\x00-\x1F\x7F]*$";

/// Every string of a CRD's `spec` refuses ASCII control characters, those of upstream Kubernetes types
/// (tolerations, affinity, resources) and map values included: no value a tenant writes can carry a
/// newline into a generated file (moshi-server's TOML, LiveKit's YAML), a terminal escape into an operator's
/// `kubectl` output, or a NUL into a label. None needs one (names, images, paths, URLs, display names).
///
/// A string with no `pattern` of its own gets [`NO_CONTROL_CHARACTERS`]; one with its own gets it as an
/// `allOf` (a schema has one `pattern`), so a pattern such as `^/.*` (`spec.model.path`) cannot let one
/// through. Strings with an `enum` or a `format` are left as they are. The apiserver's message names the
/// field: `spec.tenant.displayName in body should match '^[^\x00-\x1F\x7F]*$'`. A pattern costs nothing
/// against the CEL budget, which rules on every string of unbounded lists would exceed. Map keys are not
/// covered (a schema cannot constrain them without CEL); those of quotas and limits are checked by CEL,
/// and the others (`nodeSelector`, resources) must be valid label keys or resource names in the pods
/// built from them. `status` is left as it is: only the operator writes it.
fn without_control_characters(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let root = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut());
        if let Some(spec) = root.and_then(|r| r.properties.as_mut()).and_then(|p| p.get_mut("spec")) {
            refuse_control_characters(spec);
        }
    }
    crd
}

fn refuse_control_characters(schema: &mut JSONSchemaProps) {
    let string = schema.type_.as_deref() == Some("string") || schema.x_kubernetes_int_or_string == Some(true);
    if string && schema.enum_.is_none() && schema.format.is_none() {
        if schema.pattern.is_none() {
            schema.pattern = Some(NO_CONTROL_CHARACTERS.into());
        } else {
            let rule = JSONSchemaProps { pattern: Some(NO_CONTROL_CHARACTERS.into()), ..JSONSchemaProps::default() };
            schema.all_of.get_or_insert_with(Vec::new).push(rule);
        }
    }
    for property in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        refuse_control_characters(property);
    }
    match &mut schema.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) => refuse_control_characters(items),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter_mut().for_each(refuse_control_characters),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &mut schema.additional_properties {
        refuse_control_characters(values);
    }
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
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}

/// One CRD per file name, for the committed `crds/` directory.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_norway::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
            serde_norway::to_string(&crd).map(|y| (name, y))
        })
        .collect()
}
