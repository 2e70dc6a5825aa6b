//! Edits of the operator's children: the content a tenant (or anyone) could change without touching the
//! `visio.io/applied-hash` annotation the idle check compares.
//!
//! The hash says what the operator applied; it does not say the object still holds it. For the kinds whose
//! content decides what a tenant's stack does or may do — Secrets (the LiveKit config: keys, TURN, Redis),
//! Roles and RoleBindings (who may do what) — the content itself is compared on every reconcile, from a
//! digest of what the apiserver stores against the same digest of what the operator wants. These kinds are
//! stored as written (no server defaults but the few normalised below), so the digests agree exactly when
//! nobody edited the object, and an idle reconcile still writes nothing.
//!
//! The caches keep Roles and RoleBindings trimmed (`trim.rs`): before their rules and subjects are dropped,
//! their digest is kept in the cached object's annotations under [`OBSERVED`] (in memory only: the cache is
//! never written back). Secrets are cached whole.
//!
//! The other kinds are not writable by tenant admins (the `visio-tenant-admin` ClusterRole reads them only);
//! an edit by a cluster administrator is repaired at the next change of the spec, as the hash says.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, Subject};
use kube::ResourceExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Annotation of a trimmed cached object: the digest of its content before trimming (never sent to the API).
pub const OBSERVED: &str = "visio.io/observed-content";

/// The content of an object that an edit must not change, as a digest; `None` for kinds not compared.
pub trait Content {
    fn content_digest(&self) -> Option<String> {
        None
    }
}

fn digest<T: Serialize>(value: &T) -> Option<String> {
    let bytes = serde_json::to_vec(value).ok()?;
    Some(hex::encode(&Sha256::digest(&bytes)[..8]))
}

impl Content for Secret {
    fn content_digest(&self) -> Option<String> {
        // The apiserver stores a Secret with no type as Opaque, and no data as none.
        let type_ = self.type_.clone().unwrap_or_else(|| "Opaque".into());
        let data = self.data.clone().filter(|d| !d.is_empty());
        digest(&(type_, data))
    }
}

impl Content for Role {
    fn content_digest(&self) -> Option<String> {
        digest(&self.rules.clone().filter(|r| !r.is_empty()))
    }
}

impl Content for RoleBinding {
    fn content_digest(&self) -> Option<String> {
        // The apiserver defaults a User's or Group's apiGroup to rbac.authorization.k8s.io.
        let subjects: Option<Vec<Subject>> = self.subjects.clone().filter(|s| !s.is_empty()).map(|s| {
            s.into_iter()
                .map(|mut s| {
                    if s.api_group.as_deref().unwrap_or_default().is_empty() && (s.kind == "User" || s.kind == "Group")
                    {
                        s.api_group = Some("rbac.authorization.k8s.io".into());
                    }
                    s
                })
                .collect()
        });
        digest(&(&self.role_ref, subjects))
    }
}

/// Kinds whose content is not compared (see the module's doc).
macro_rules! not_compared {
    ($($kind:ty),*) => {$( impl Content for $kind {} )*};
}
not_compared!(
    k8s_openapi::api::core::v1::LimitRange,
    k8s_openapi::api::core::v1::ResourceQuota,
    k8s_openapi::api::core::v1::ServiceAccount,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::core::v1::Pod,
    k8s_openapi::api::apps::v1::Deployment,
    k8s_openapi::api::policy::v1::PodDisruptionBudget,
    k8s_openapi::api::networking::v1::NetworkPolicy,
    k8s_openapi::api::networking::v1::Ingress
);

/// Keeps the content digest in the annotations of an object about to be trimmed.
pub fn remember<K: Content + kube::Resource>(obj: &mut K) {
    if let Some(d) = obj.content_digest() {
        obj.annotations_mut().insert(OBSERVED.into(), d);
    }
}

/// Whether `current` (cached or read) no longer holds the content of `desired`: `None` when the kind is
/// not compared or the cached object carries no digest.
pub fn edited<K: Content + kube::Resource>(current: &K, desired: &K) -> bool {
    let Some(want) = desired.content_digest() else { return false };
    let have = current.annotations().get(OBSERVED).cloned().or_else(|| current.content_digest());
    have.is_some_and(|have| have != want)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};
    use k8s_openapi::ByteString;

    use super::*;

    fn secret(turn_udp: &str) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                "livekit.yaml".into(),
                ByteString(format!("turn:\n  udp: {turn_udp}\n").into()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn a_secret_as_stored_matches_and_an_edited_one_does_not() {
        let desired = secret("false");
        let mut stored = desired.clone();
        stored.type_ = Some("Opaque".into());
        stored.metadata.resource_version = Some("7".into());
        assert!(!edited(&stored, &desired), "the apiserver's Opaque default is no edit");
        assert!(edited(&secret("true"), &desired), "TURN over UDP switched back on");
        let mut emptied = desired.clone();
        emptied.data = None;
        assert!(edited(&emptied, &desired));
    }

    fn binding(kind: &str, api_group: Option<&str>) -> RoleBinding {
        RoleBinding {
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "r".into(),
            },
            subjects: Some(vec![Subject {
                kind: kind.into(),
                name: "x".into(),
                api_group: api_group.map(Into::into),
                namespace: None,
            }]),
            ..RoleBinding::default()
        }
    }

    #[test]
    fn a_binding_as_defaulted_by_the_apiserver_matches_and_a_new_subject_does_not() {
        let desired = binding("User", None);
        assert!(!edited(&binding("User", Some("rbac.authorization.k8s.io")), &desired));
        let mut widened = binding("User", None);
        widened.subjects.as_mut().unwrap().push(Subject {
            kind: "Group".into(),
            name: "system:authenticated".into(),
            ..Subject::default()
        });
        assert!(edited(&widened, &desired), "a subject added by hand");
    }

    #[test]
    fn a_trimmed_role_keeps_its_digest_and_is_compared_by_it() {
        let desired = Role {
            rules: Some(vec![PolicyRule {
                verbs: vec!["get".into()],
                resources: Some(vec!["pods".into()]),
                ..PolicyRule::default()
            }]),
            ..Role::default()
        };
        let mut widened = desired.clone();
        widened.rules.as_mut().unwrap()[0].verbs.push("delete".into());
        let mut cached = widened.clone();
        remember(&mut cached);
        cached.rules = None; // what trim.rs does
        assert!(edited(&cached, &desired), "the digest remembered before trimming says the rules changed");
        let mut same = desired.clone();
        remember(&mut same);
        same.rules = None;
        assert!(!edited(&same, &desired));
    }

    #[test]
    fn kinds_not_compared_are_never_edited() {
        let a = k8s_openapi::api::core::v1::Service::default();
        assert!(!edited(&a, &a.clone()));
    }
}
