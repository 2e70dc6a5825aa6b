//! Names, labels, annotations and owner references of the children of a `VisioCluster`: what makes every
//! child findable (orphan cleanup by label), owned (garbage collection) and attributable (`kubectl get -l`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use super::meta::{ChildLabels, ChildMeta};
use super::BuildError;
use crate::api::VisioCluster;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "visio-operator";
/// Value of `app.kubernetes.io/managed-by` on every child.
pub const MANAGED_BY: &str = "visio-operator";
/// Value of `app.kubernetes.io/part-of` on every child.
pub const PART_OF: &str = "visio";

/// `app.kubernetes.io/name`: `livekit` or `redis`.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the VisioCluster's name.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`: see [`Component`].
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/managed-by`: [`MANAGED_BY`].
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/part-of`: [`PART_OF`].
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// The VisioCluster a child belongs to (what orphan cleanup selects on, with [`MANAGED_BY_LABEL`]).
pub const CLUSTER_LABEL: &str = "visio.io/cluster";

/// Hash of the SFU pod template a pod was created from; a pod whose hash differs from the desired one is
/// outdated and gets replaced (new pod first, then drain).
pub const TEMPLATE_HASH_LABEL: &str = "visio.io/template-hash";
/// LiveKit version an SFU pod runs.
pub const VERSION_LABEL: &str = "visio.io/livekit-version";
/// The routing labels of the pod protocol (their one home is `pod_protocol`): `visio.io/serving` on pods
/// that take new sessions (the Services select on it), `visio.io/in-use` on pods that hold sessions (the
/// PodDisruptionBudget covers them).
pub use crate::pod_protocol::{IN_USE as IN_USE_LABEL, SERVING as SERVING_LABEL};
/// Value of [`SERVING_LABEL`] and [`IN_USE_LABEL`] when set.
pub const LABEL_TRUE: &str = "true";
/// Hash of the rendered LiveKit config an SFU pod was created with (the config itself is secret).
pub const CONFIG_HASH_ANNOTATION: &str = "visio.io/config-hash";

/// Longest VisioCluster name whose children's names stay valid: Service names are DNS-1035 labels of at
/// most 63 characters, and the longest Service suffix is `-signaling`.
pub use crate::api::MAX_CLUSTER_NAME_LEN;

/// What a child is for (`app.kubernetes.io/component`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    /// SFU pods, their PodDisruptionBudget and the agent's access.
    Sfu,
    /// The managed Redis.
    Redis,
    /// Signalling Service and Ingress.
    Signaling,
    /// TURN Service.
    Turn,
    /// Media Service (pod network mode).
    Media,
    /// The LiveKit config Secret.
    Config,
    /// The Secret of generated credentials.
    Credentials,
    /// The tenant namespace's ResourceQuota and LimitRange.
    Tenant,
}

impl Component {
    /// The `app.kubernetes.io/component` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Sfu => "sfu",
            Component::Redis => "redis",
            Component::Signaling => "signaling",
            Component::Turn => "turn",
            Component::Media => "media",
            Component::Config => "config",
            Component::Credentials => "credentials",
            Component::Tenant => "tenant",
        }
    }

    /// The `app.kubernetes.io/name` value: the application the component belongs to.
    pub fn app(self) -> &'static str {
        match self {
            Component::Redis => "redis",
            _ => "livekit",
        }
    }
}

/// The labels of `vc`'s children.
fn child_labels(vc: &VisioCluster) -> ChildLabels {
    let name = vc.meta().name.clone().unwrap_or_default();
    ChildLabels::new(name.clone()).with(CLUSTER_LABEL, name)
}

/// The labels every child of `vc` carries.
pub fn standard_labels(vc: &VisioCluster, component: Component) -> BTreeMap<String, String> {
    child_labels(vc).all(component.app(), component.as_str())
}

/// The labels that select the pods of one component of `vc`: a stable subset of [`standard_labels`]
/// (a Deployment's selector is immutable, so it must not include anything that may change).
pub fn selector_labels(vc: &VisioCluster, component: Component) -> BTreeMap<String, String> {
    child_labels(vc).selector(component.app(), component.as_str())
}

/// Label selector (`key=value,...`) of every child of the VisioCluster named `cluster_name`, for listing
/// children and deleting the ones no longer desired.
pub fn children_selector(cluster_name: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{CLUSTER_LABEL}={cluster_name}")
}

/// The controller owner reference every child carries, so that deleting the VisioCluster deletes them and
/// that the controller is woken up when they change.
pub fn owner_reference(vc: &VisioCluster) -> Result<OwnerReference, BuildError> {
    super::meta::owner_reference(vc)
}

/// The VisioCluster's name, checked to be a usable stem for its children's names (DNS-1035 label, short
/// enough for the longest suffix).
pub fn cluster_name(vc: &VisioCluster) -> Result<&str, BuildError> {
    let name = vc.meta().name.as_deref().filter(|n| !n.is_empty()).ok_or(BuildError::MissingName)?;
    let invalid = |reason: String| BuildError::InvalidName { name: name.to_string(), reason };
    if name.len() > MAX_CLUSTER_NAME_LEN {
        return Err(invalid(format!(
            "is longer than {MAX_CLUSTER_NAME_LEN} characters: the names of its Services (`{name}-signaling`) would \
             exceed 63"
        )));
    }
    let bytes = name.as_bytes();
    let first_ok = bytes[0].is_ascii_lowercase();
    let last_ok = bytes[bytes.len() - 1].is_ascii_lowercase() || bytes[bytes.len() - 1].is_ascii_digit();
    let all_ok = bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !(first_ok && last_ok && all_ok) {
        return Err(invalid(
            "must start with a lowercase letter, end with a letter or digit and hold only lowercase letters, digits \
             and '-': it is the stem of Service names (DNS-1035 labels)"
                .into(),
        ));
    }
    Ok(name)
}

/// The VisioCluster's namespace, where all its children live.
pub fn cluster_namespace(vc: &VisioCluster) -> Result<&str, BuildError> {
    vc.meta().namespace.as_deref().filter(|n| !n.is_empty()).ok_or(BuildError::MissingNamespace)
}

/// Metadata of a child named `name`: namespace of `vc`, standard labels, controller owner reference.
pub fn child_metadata(vc: &VisioCluster, name: String, component: Component) -> Result<ObjectMeta, BuildError> {
    Ok(ChildMeta::new(vc, child_labels(vc))?.meta(name, component.app(), component.as_str()))
}

/// `<vc>-credentials`: generated API key and secret, managed Redis password.
pub fn credentials_secret_name(cluster: &str) -> String {
    format!("{cluster}-credentials")
}
/// `<vc>-livekit-config`: the rendered LiveKit config (a Secret: it holds the keys).
pub fn config_secret_name(cluster: &str) -> String {
    format!("{cluster}-livekit-config")
}
/// `<vc>-redis`: the managed Redis Deployment and Service.
pub fn redis_name(cluster: &str) -> String {
    format!("{cluster}-redis")
}
/// `<vc>-signaling`: the signalling Service and Ingress.
pub fn signaling_name(cluster: &str) -> String {
    format!("{cluster}-signaling")
}
/// `<vc>-turn`: the TURN Service.
pub fn turn_name(cluster: &str) -> String {
    format!("{cluster}-turn")
}
/// `<vc>-media`: the media Service (pod network mode).
pub fn media_name(cluster: &str) -> String {
    format!("{cluster}-media")
}
/// `<vc>-sfu`: the SFU PodDisruptionBudget, and the prefix of SFU pod names.
pub fn sfu_name(cluster: &str) -> String {
    format!("{cluster}-sfu")
}
/// `<vc>-sfu-agent`: ServiceAccount, Role and RoleBinding of the in-pod agent.
pub fn agent_name(cluster: &str) -> String {
    format!("{cluster}-sfu-agent")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testing::{cluster_with, test_cluster};

    #[test]
    fn standard_labels_are_the_documented_six() {
        let labels = standard_labels(&test_cluster(), Component::Sfu);
        let expected: BTreeMap<String, String> = [
            ("app.kubernetes.io/name", "livekit"),
            ("app.kubernetes.io/instance", "visio"),
            ("app.kubernetes.io/component", "sfu"),
            ("app.kubernetes.io/managed-by", "visio-operator"),
            ("app.kubernetes.io/part-of", "visio"),
            ("visio.io/cluster", "visio"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(labels, expected);
    }

    #[test]
    fn redis_is_its_own_application() {
        let labels = standard_labels(&test_cluster(), Component::Redis);
        assert_eq!(labels[NAME_LABEL], "redis");
        assert_eq!(labels[COMPONENT_LABEL], "redis");
        for c in [
            Component::Sfu,
            Component::Signaling,
            Component::Turn,
            Component::Media,
            Component::Config,
            Component::Credentials,
            Component::Tenant,
        ] {
            assert_eq!(c.app(), "livekit", "{c:?}");
        }
    }

    #[test]
    fn component_values() {
        let all = [
            (Component::Sfu, "sfu"),
            (Component::Redis, "redis"),
            (Component::Signaling, "signaling"),
            (Component::Turn, "turn"),
            (Component::Media, "media"),
            (Component::Config, "config"),
            (Component::Credentials, "credentials"),
            (Component::Tenant, "tenant"),
        ];
        for (c, s) in all {
            assert_eq!(c.as_str(), s);
        }
    }

    #[test]
    fn selector_labels_are_a_stable_subset_of_standard_labels() {
        let vc = test_cluster();
        let selector = selector_labels(&vc, Component::Sfu);
        let standard = standard_labels(&vc, Component::Sfu);
        assert_eq!(selector.len(), 3);
        for (k, v) in &selector {
            assert_eq!(standard.get(k), Some(v), "{k}");
        }
        assert!(!selector.contains_key(TEMPLATE_HASH_LABEL));
        assert!(!selector.contains_key(VERSION_LABEL));
    }

    #[test]
    fn owner_reference_is_a_blocking_controller_reference() {
        let owner = owner_reference(&test_cluster()).unwrap();
        assert_eq!(owner.api_version, "visio.io/v1alpha1");
        assert_eq!(owner.kind, "VisioCluster");
        assert_eq!(owner.name, "visio");
        assert_eq!(owner.uid, "0b6c1a52-5f3c-4a8e-9d57-3c2f1e0a9b11");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
    }

    #[test]
    fn owner_reference_needs_name_and_uid() {
        let mut vc = test_cluster();
        vc.metadata.uid = None;
        assert_eq!(owner_reference(&vc), Err(BuildError::MissingUid));
        vc.metadata.uid = Some(String::new());
        assert_eq!(owner_reference(&vc), Err(BuildError::MissingUid));
        let mut vc = test_cluster();
        vc.metadata.name = None;
        assert_eq!(owner_reference(&vc), Err(BuildError::MissingName));
    }

    #[test]
    fn child_metadata_has_namespace_labels_owner() {
        let vc = test_cluster();
        let meta = child_metadata(&vc, "visio-turn".into(), Component::Turn).unwrap();
        assert_eq!(meta.name.as_deref(), Some("visio-turn"));
        assert_eq!(meta.namespace.as_deref(), Some("mininterieur"));
        assert_eq!(meta.labels, Some(standard_labels(&vc, Component::Turn)));
        assert_eq!(meta.owner_references, Some(vec![owner_reference(&vc).unwrap()]));
        assert!(meta.annotations.is_none());
    }

    #[test]
    fn child_metadata_without_namespace_is_an_error() {
        let mut vc = test_cluster();
        vc.metadata.namespace = None;
        let err = child_metadata(&vc, "x".into(), Component::Sfu).unwrap_err();
        assert_eq!(err, BuildError::MissingNamespace);
        assert_eq!(err.label(), "missing_namespace");
        vc.metadata.namespace = Some(String::new());
        assert_eq!(cluster_namespace(&vc), Err(BuildError::MissingNamespace));
    }

    #[test]
    fn cluster_name_accepts_dns_1035_labels_up_to_53() {
        let mut vc = cluster_with(serde_json::json!({}));
        for ok in ["visio", "a", "v2", "mi-interieur", &"a".repeat(MAX_CLUSTER_NAME_LEN)] {
            vc.metadata.name = Some(ok.to_string());
            assert_eq!(cluster_name(&vc), Ok(ok), "{ok}");
        }
        for bad in ["2visio", "visio-", "Visio", "visio.prod", "vi_sio", &"a".repeat(MAX_CLUSTER_NAME_LEN + 1)] {
            vc.metadata.name = Some(bad.to_string());
            let err = cluster_name(&vc).unwrap_err();
            assert_eq!(err.label(), "invalid_name", "{bad}");
            assert!(err.to_string().starts_with("metadata.name: "), "{err}");
        }
        vc.metadata.name = Some(String::new());
        assert_eq!(cluster_name(&vc), Err(BuildError::MissingName));
        vc.metadata.name = None;
        assert_eq!(cluster_name(&vc), Err(BuildError::MissingName));
    }

    #[test]
    fn longest_child_names_fit() {
        let stem = "a".repeat(MAX_CLUSTER_NAME_LEN);
        for name in [signaling_name(&stem), turn_name(&stem), media_name(&stem), redis_name(&stem)] {
            assert!(name.len() <= 63, "{name}");
        }
        assert_eq!(MAX_CLUSTER_NAME_LEN, 53);
    }

    #[test]
    fn child_names() {
        assert_eq!(credentials_secret_name("visio"), "visio-credentials");
        assert_eq!(config_secret_name("visio"), "visio-livekit-config");
        assert_eq!(redis_name("visio"), "visio-redis");
        assert_eq!(signaling_name("visio"), "visio-signaling");
        assert_eq!(turn_name("visio"), "visio-turn");
        assert_eq!(media_name("visio"), "visio-media");
        assert_eq!(sfu_name("visio"), "visio-sfu");
        assert_eq!(agent_name("visio"), "visio-sfu-agent");
    }

    #[test]
    fn children_selector_selects_managed_children_of_one_cluster() {
        assert_eq!(children_selector("visio"), "app.kubernetes.io/managed-by=visio-operator,visio.io/cluster=visio");
    }

    #[test]
    fn constants() {
        assert_eq!(TEMPLATE_HASH_LABEL, "visio.io/template-hash");
        assert_eq!(VERSION_LABEL, "visio.io/livekit-version");
        assert_eq!(MANAGED_BY, "visio-operator");
        assert_eq!(FIELD_MANAGER, "visio-operator");
        assert_eq!(SERVING_LABEL, "visio.io/serving");
        assert_eq!(IN_USE_LABEL, "visio.io/in-use");
        assert_eq!(CONFIG_HASH_ANNOTATION, "visio.io/config-hash");
    }
}
