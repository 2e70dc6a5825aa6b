//! What the operator tells the outside: metrics ([`metrics`]), logs ([`logging`]) and the HTTP
//! endpoint that serves the metrics and the health probes ([`http`]).

pub mod http;
pub mod logging;
pub mod metrics;

pub use http::{serve, Readiness};
pub use logging::{init_logging, LogFormat};
pub use metrics::Metrics;
