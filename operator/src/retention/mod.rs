//! Meeting-data retention: the pure rules and decisions ([`decide`]), the governance check
//! ([`governance`]) and the sweeper that applies them to an S3-compatible bucket ([`sweep`]).
//!
//! The split keeps every "may this object go?" question in pure functions with property tests;
//! the sweeper only lists, asks about holds, deletes what the pure code allows, and records it.
//! What one sweep may cost the operator is bounded ([`limits`], [`bounded`]).

pub mod bounded;
pub mod decide;
pub mod governance;
pub mod limits;
pub mod sweep;

use std::sync::OnceLock;

/// Testing knob: `VISIO_RETENTION_CLOCK_OFFSET` (a duration such as `2000h`) moves the sweeper's
/// clock forward, so an end-to-end test can make freshly written objects look old. Unset in
/// production; the operator logs a warning at every sweep while it is set.
pub const CLOCK_OFFSET_ENV: &str = "VISIO_RETENTION_CLOCK_OFFSET";

/// The clock offset from [`CLOCK_OFFSET_ENV`], in seconds (0 when unset or unreadable).
pub fn clock_offset_secs() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| match std::env::var(CLOCK_OFFSET_ENV) {
        Ok(v) if !v.is_empty() => match crate::duration::parse(&v) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => {
                tracing::error!(error = %e, "{CLOCK_OFFSET_ENV} is not a duration: ignored");
                0
            }
        },
        _ => 0,
    })
}

/// The sweeper's notion of now, in Unix seconds: the wall clock plus the testing offset.
pub fn now_secs() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second() + clock_offset_secs()
}
