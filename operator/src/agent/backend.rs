//! What the agent asks of the backend it sits next to, whatever that backend is.
//!
//! Implementations: LiveKit ([`super::livekit`]) and the caption backends ([`super::captions`]: moshi-server,
//! WhisperLive), which read their load from their own endpoint and answer "unsupported" where they have no
//! warning channel or no sessions to end.

use std::future::Future;

use k8s_openapi::jiff::Timestamp;

use crate::pod_protocol::Load;

/// Why a backend call failed. Any failure to read the load means "load unknown".
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend unreachable: {0}")]
    Unreachable(String),
    #[error("{call} answered {status}: {message}")]
    Status { call: &'static str, status: u16, message: String },
    #[error("{call}: not found")]
    NotFound { call: &'static str },
    #[error("unexpected answer: {0}")]
    Malformed(String),
    #[error("no API credentials (LIVEKIT_API_KEY and LIVEKIT_API_SECRET are not both set)")]
    NoCredentials,
    #[error("{0}")]
    Process(String),
    #[error("the backend cannot {0}")]
    Unsupported(&'static str),
}

impl BackendError {
    /// Short stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            BackendError::Unreachable(_) => "unreachable",
            BackendError::Status { .. } => "status",
            BackendError::NotFound { .. } => "not_found",
            BackendError::Malformed(_) => "malformed",
            BackendError::NoCredentials => "no_credentials",
            BackendError::Process(_) => "process",
            BackendError::Unsupported(_) => "unsupported",
        }
    }
}

/// What a drain request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainStatus {
    /// The backend process was just told to drain.
    Signalled(i32),
    /// This process was told already (it is never told twice: LiveKit exits at once on a second signal).
    AlreadySignalled(i32),
    /// No backend process right now (not started yet, or exited after draining).
    NotFound,
    /// Several processes match: the agent does not guess.
    Ambiguous(Vec<i32>),
    /// The backend has no drain of its own (the caption backends): the pod's readiness fails, so no new
    /// session is routed to it, and its open sessions continue. `first` on the first call.
    Unrouted { first: bool },
}

/// The backend the agent reports and drains.
pub trait Backend: Send {
    /// The current load. An error means unknown (never zero).
    fn read_load(&mut self) -> impl Future<Output = Result<Load, BackendError>> + Send;

    /// Makes sure the backend is draining (idempotent: called every interval while the pod drains).
    fn drain(&mut self) -> Result<DrainStatus, BackendError>;

    /// Warns every session that it will be ended at `deadline`. `Ok(true)` once every session known to the
    /// backend was warned; a session is warned at most once.
    fn warn(&mut self, deadline: Timestamp) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Ends the sessions left. Returns how many there were at the start of this round (0: nothing left).
    fn end_sessions(&mut self) -> impl Future<Output = Result<usize, BackendError>> + Send;
}
