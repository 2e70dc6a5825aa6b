//! Errors of the controllers. Each has a short stable label used in metrics and Events.

use crate::builders::BuildError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or failed a request: transient, retried with backoff.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The spec cannot be honoured as written: permanent until the spec changes.
    #[error("{0}")]
    Build(#[from] BuildError),
    /// Something the spec refers to is missing or unusable (a Secret, a VisioCluster):
    /// permanent until that object appears or changes.
    #[error("{message}")]
    Reference { reason: &'static str, message: String },
    /// An object could not be serialised (a bug, reported rather than panicking).
    #[error("serialisation: {0}")]
    Serialization(#[from] serde_json::Error),
    /// A reconcile did not finish in time (an API call that never answered): transient.
    #[error("reconcile did not finish within {0:?}; retrying")]
    Timeout(std::time::Duration),
}

impl Error {
    /// Stable label for metrics and Event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 403 => "forbidden",
            Error::Kube(kube::Error::Api(s)) if s.code == 422 => "invalid",
            Error::Kube(kube::Error::Api(_)) => "api_error",
            Error::Kube(_) => "api_unreachable",
            Error::Build(e) => e.label(),
            Error::Reference { reason, .. } => reason,
            Error::Serialization(_) => "serialization",
            Error::Timeout(_) => "timeout",
        }
    }

    /// Permanent errors wait for a change of the spec (or the referenced object) instead of retrying fast.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::Build(_) | Error::Reference { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
