//! Pure builders: from a custom resource (and what was dereferenced) to the desired child objects. No I/O,
//! no clock, no randomness: the same input always gives the same objects, so a reconcile that changes
//! nothing writes nothing.
//!
//! The entry point for a `VisioCluster` is [`stack::build_stack`]; each concern has its own module:
//! [`labels`] (names, labels, owner references), [`livekit_config`] (the LiveKit server YAML), [`sfu`] (the
//! SFU pod template the controller creates pods from), [`redis`] (the managed Redis), [`services`]
//! (Services, PodDisruptionBudget, Ingress, endpoints and firewall openings), [`network`] (NetworkPolicies).

pub mod captions;
pub mod labels;
pub mod livekit_config;
pub mod network;
pub mod redis;
pub mod services;
pub mod sfu;
pub mod stack;
pub mod tenant;

pub use labels::{owner_reference, selector_labels, standard_labels, Component, FIELD_MANAGER, MANAGED_BY};
pub use livekit_config::{render, LiveKitConfig};
pub use sfu::{sfu_template, AgentAccess, SfuTemplate};
pub use stack::{build_stack, Credentials, Stack};

use sha2::{Digest, Sha256};

use crate::duration::DurationError;

/// Why the desired objects of a custom resource could not be built. Every variant names the field at fault,
/// so the message can go into a condition and an Event as is; [`BuildError::label`] is the short stable form
/// for metrics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// The object has no `metadata.name` (never the case for objects read from the API).
    #[error("metadata.name: the object has no name")]
    MissingName,
    /// The object has no `metadata.namespace`; every child lives in the namespace of its owner.
    #[error("metadata.namespace: the object has no namespace; children are created in the namespace of their owner")]
    MissingNamespace,
    /// The object has no `metadata.uid`, so no owner reference can point at it.
    #[error("metadata.uid: the object has no uid, so its children cannot be owned by it")]
    MissingUid,
    /// The object's name cannot be the stem of its children's names.
    #[error("metadata.name: {name:?} {reason}")]
    InvalidName { name: String, reason: String },
    /// A duration field does not parse.
    #[error("{field}: {source}")]
    InvalidDuration { field: &'static str, source: DurationError },
    /// A field holds a value the builders cannot turn into a working object.
    #[error("{field}: {message}")]
    InvalidValue { field: &'static str, message: String },
    /// Two listeners of one SFU pod would bind the same port.
    #[error("{field}: {message}")]
    PortConflict { field: &'static str, message: String },
    /// A combination of fields the operator cannot run.
    #[error("{field}: {message}")]
    Unsupported { field: &'static str, message: String },
    /// A credential the controller dereferenced is empty.
    #[error("{field}: must not be empty")]
    MissingCredential { field: &'static str },
    /// A desired object could not be serialized (a bug, never a user error).
    #[error("{what}: could not serialize: {message}")]
    Serialization { what: &'static str, message: String },
}

impl BuildError {
    /// Short, stable label for metrics and Event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            BuildError::MissingName => "missing_name",
            BuildError::MissingNamespace => "missing_namespace",
            BuildError::MissingUid => "missing_uid",
            BuildError::InvalidName { .. } => "invalid_name",
            BuildError::InvalidDuration { .. } => "invalid_duration",
            BuildError::InvalidValue { .. } => "invalid_value",
            BuildError::PortConflict { .. } => "port_conflict",
            BuildError::Unsupported { .. } => "unsupported",
            BuildError::MissingCredential { .. } => "missing_credentials",
            BuildError::Serialization { .. } => "serialization",
        }
    }
}

/// The first `len` hex characters of the SHA-256 of `bytes`: short content hashes for labels and annotations.
pub(crate) fn short_hash(bytes: &[u8], len: usize) -> String {
    let mut hex = hex::encode(Sha256::digest(bytes));
    hex.truncate(len);
    hex
}

/// Whole seconds of a duration field, rounded up so that a non-zero duration never becomes 0 (which LiveKit
/// reads as "close at once" or "use the default", depending on the key).
pub(crate) fn duration_seconds(field: &'static str, value: &str) -> Result<u64, BuildError> {
    let d = crate::duration::parse(value).map_err(|source| BuildError::InvalidDuration { field, source })?;
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Ok(secs)
}

/// A port field as a `u16`, refusing 0 and anything above 65535.
pub(crate) fn port(field: &'static str, value: i32) -> Result<u16, BuildError> {
    match u16::try_from(value) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(BuildError::InvalidValue { field, message: format!("{value} is not a port number (1-65535)") }),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared fixtures for the builder tests.

    use crate::api::VisioCluster;

    /// A VisioCluster `visio` in namespace `mininterieur`, with the API defaults and `patch` merged over a
    /// minimal spec (JSON merge: objects merge, anything else replaces).
    pub fn cluster_with(patch: serde_json::Value) -> VisioCluster {
        let mut spec = serde_json::json!({
            "tenant": {"displayName": "Ministère de l'Intérieur"},
            "signaling": {"host": "visio.interieur.gouv.fr"},
        });
        merge(&mut spec, patch);
        let mut vc: VisioCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "visio.io/v1alpha1",
            "kind": "VisioCluster",
            "metadata": {"name": "visio", "namespace": "mininterieur", "uid": "0b6c1a52-5f3c-4a8e-9d57-3c2f1e0a9b11"},
            "spec": spec,
        }))
        .expect("test spec deserializes");
        vc.metadata.generation = Some(1);
        vc
    }

    /// The default test cluster.
    pub fn test_cluster() -> VisioCluster {
        cluster_with(serde_json::json!({}))
    }

    /// JSON merge of `patch` into `base` (objects merge, anything else replaces).
    pub fn merge_json(base: &mut serde_json::Value, patch: serde_json::Value) {
        merge(base, patch)
    }

    fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
        match (base, patch) {
            (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
                for (k, v) in p {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, p) => *b = p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_and_stable() {
        let errors = [
            BuildError::MissingName,
            BuildError::MissingNamespace,
            BuildError::MissingUid,
            BuildError::InvalidName { name: "x".into(), reason: "r".into() },
            BuildError::InvalidDuration { field: "spec.rooms.emptyTimeout", source: DurationError::Empty },
            BuildError::InvalidValue { field: "f", message: "m".into() },
            BuildError::PortConflict { field: "f", message: "m".into() },
            BuildError::Unsupported { field: "f", message: "m".into() },
            BuildError::MissingCredential { field: "f" },
            BuildError::Serialization { what: "w", message: "m".into() },
        ];
        let labels: Vec<_> = errors.iter().map(BuildError::label).collect();
        assert_eq!(
            labels,
            [
                "missing_name",
                "missing_namespace",
                "missing_uid",
                "invalid_name",
                "invalid_duration",
                "invalid_value",
                "port_conflict",
                "unsupported",
                "missing_credentials",
                "serialization"
            ]
        );
        for l in labels {
            assert!(l.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{l}");
        }
    }

    #[test]
    fn messages_name_the_field() {
        let e = BuildError::InvalidDuration { field: "spec.rooms.emptyTimeout", source: DurationError::Empty };
        assert_eq!(e.to_string(), "spec.rooms.emptyTimeout: empty duration");
        assert!(BuildError::MissingNamespace.to_string().starts_with("metadata.namespace: "));
    }

    #[test]
    fn short_hash_is_a_hex_prefix_of_sha256() {
        assert_eq!(short_hash(b"", 10), "e3b0c44298");
        assert_eq!(short_hash(b"abc", 64).len(), 64);
        assert_eq!(short_hash(b"abc", 100).len(), 64);
    }

    #[test]
    fn duration_seconds_rounds_up_fractions() {
        assert_eq!(duration_seconds("f", "5m"), Ok(300));
        assert_eq!(duration_seconds("f", "1h30m"), Ok(5400));
        assert_eq!(duration_seconds("f", "250ms"), Ok(1));
        assert_eq!(duration_seconds("f", "1.5s"), Ok(2));
        assert_eq!(duration_seconds("f", "0s"), Ok(0));
        let err = duration_seconds("spec.rooms.emptyTimeout", "5 minutes").unwrap_err();
        assert_eq!(err.label(), "invalid_duration");
        assert!(err.to_string().starts_with("spec.rooms.emptyTimeout: "));
    }

    #[test]
    fn port_refuses_out_of_range() {
        assert_eq!(port("f", 7880), Ok(7880));
        assert_eq!(port("f", 65535), Ok(65535));
        for bad in [0, -1, 65536, i32::MAX, i32::MIN] {
            assert_eq!(port("spec.x", bad).unwrap_err().label(), "invalid_value");
        }
    }
}
