//! Names, labels and owner references of every child, for the three resources: one builder.
//!
//! Every child carries the recommended labels (`app.kubernetes.io/{name,instance,component,managed-by,
//! part-of}`) plus what its owner adds (the VisioCluster's name, the CaptionPool's name), and a
//! controller owner reference to its owner: deleting the owner deletes it, and its changes wake the
//! owner's controller. A selector is the stable subset (name, instance, component): a Deployment's
//! selector is immutable.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use super::labels::{
    COMPONENT_LABEL, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL, PART_OF, PART_OF_LABEL,
};
use super::BuildError;

/// The labels of one owner's children.
#[derive(Clone, Debug)]
pub struct ChildLabels {
    instance: String,
    extra: Vec<(&'static str, String)>,
}

impl ChildLabels {
    /// Labels of the children of the object named `instance`.
    pub fn new(instance: impl Into<String>) -> Self {
        ChildLabels { instance: instance.into(), extra: Vec::new() }
    }

    /// Adds a label every child carries (not part of selectors).
    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((key, value.into()));
        self
    }

    /// The labels selecting the pods of one component (`app` is the application it belongs to).
    pub fn selector(&self, app: &str, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (NAME_LABEL.to_string(), app.to_string()),
            (INSTANCE_LABEL.to_string(), self.instance.clone()),
            (COMPONENT_LABEL.to_string(), component.to_string()),
        ])
    }

    /// Every label of a child of one component.
    pub fn all(&self, app: &str, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector(app, component);
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        labels.insert(PART_OF_LABEL.into(), PART_OF.into());
        labels.extend(self.extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        labels
    }
}

/// The metadata of one owner's children: its namespace, its children's labels, a controller owner
/// reference to it.
#[derive(Clone, Debug)]
pub struct ChildMeta {
    pub labels: ChildLabels,
    namespace: String,
    owner: OwnerReference,
}

impl ChildMeta {
    /// For the children of `owner`, labelled with `labels`. An owner without a name, namespace or UID
    /// (never the case for objects read from the API) cannot own children.
    pub fn new<K: Resource<DynamicType = ()>>(owner: &K, labels: ChildLabels) -> Result<Self, BuildError> {
        let namespace = owner.meta().namespace.clone().filter(|n| !n.is_empty()).ok_or(BuildError::MissingNamespace)?;
        Ok(ChildMeta { labels, namespace, owner: owner_reference(owner)? })
    }

    /// For the children of `owner`, with no label beyond the recommended ones.
    pub fn of<K: Resource<DynamicType = ()>>(owner: &K) -> Result<Self, BuildError> {
        let name = owner.meta().name.clone().unwrap_or_default();
        Self::new(owner, ChildLabels::new(name))
    }

    /// Metadata of the child `name` of one component.
    pub fn meta(&self, name: String, app: &str, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels.all(app, component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// The controller owner reference to `owner`: deleting it deletes the child (in the foreground, the
/// child first), and the child's changes wake its controller.
pub fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference, BuildError> {
    Ok(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().filter(|n| !n.is_empty()).ok_or(BuildError::MissingName)?,
        uid: owner.meta().uid.clone().filter(|u| !u.is_empty()).ok_or(BuildError::MissingUid)?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testing::test_cluster;

    #[test]
    fn selectors_are_a_subset_of_the_labels() {
        let l = ChildLabels::new("visio").with("visio.io/cluster", "visio");
        let all = l.all("livekit", "sfu");
        for (k, v) in l.selector("livekit", "sfu") {
            assert_eq!(all.get(&k), Some(&v));
        }
        assert_eq!(all.get(MANAGED_BY_LABEL).map(String::as_str), Some(MANAGED_BY));
        assert!(!l.selector("livekit", "sfu").contains_key("visio.io/cluster"), "extras never select");
    }

    #[test]
    fn an_owner_without_uid_or_namespace_owns_nothing() {
        let mut vc = test_cluster();
        let meta = ChildMeta::of(&vc).unwrap().meta("visio-x".into(), "livekit", "sfu");
        assert_eq!(meta.owner_references.unwrap()[0].uid, vc.metadata.uid.clone().unwrap());
        vc.metadata.uid = None;
        assert_eq!(ChildMeta::of(&vc).unwrap_err(), BuildError::MissingUid);
        vc.metadata.namespace = None;
        assert_eq!(ChildMeta::of(&vc).unwrap_err(), BuildError::MissingNamespace);
    }
}
