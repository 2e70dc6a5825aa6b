//! visio-operator: runs a sovereign videoconferencing stack (LiveKit SFU fleet,
//! real-time captions, meeting-data retention) for isolated tenants.

pub mod agent;
pub mod api;
pub mod builders;
pub mod controllers;
pub mod duration;
pub mod fleet;
pub mod leader;
pub mod platform;
pub mod pod_protocol;
pub mod retention;
pub mod runtime;
pub mod telemetry;
