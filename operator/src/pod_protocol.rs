//! The contract between the operator and the in-pod agent, written on the pod itself.
//!
//! The agent reports load in an annotation; the operator marks drains, warnings and forced
//! ends in annotations and routes traffic with labels. The operator never dials a pod:
//! everything it knows about a pod's load arrives through the pod watch.

use serde::{Deserialize, Serialize};

/// Annotation the agent writes: the pod's live load as JSON ([`Load`]).
pub const LOAD: &str = "visio.io/load";
/// Annotation the operator writes when it starts draining a pod (RFC 3339).
pub const DRAIN_SINCE: &str = "visio.io/drain-since";
/// Annotation a person writes (`kubectl visio drain POD`) to ask the operator to drain one pod of its
/// fleet. Any value counts. The operator treats the pod like one on a cordoned node: a replacement
/// first within `maxSurge`, then a drain within `maxDraining` and the capacity floor, with the warning
/// and the `drainTimeout` deadline of every drain (`fleet::PodSnapshot::drain_requested`). Read only
/// on pods the operator owns; on any other pod it means nothing. The chart lets tenant admins write
/// this one annotation on their pods and no other operator mark (docs/design.md, "Drains asked for").
pub const DRAIN_REQUESTED: &str = "visio.io/drain-requested";
/// Annotation the operator writes when participants must be warned of a forced end (RFC 3339 deadline).
pub const WARN_DEADLINE: &str = "visio.io/warn-deadline";
/// Annotation the operator writes when the drain deadline passed: the agent ends the sessions left.
pub const END_SESSIONS: &str = "visio.io/end-sessions";
/// Annotation on SFU pods whose agent ends only the rooms hosted on its own pod (`"own-rooms"`, from 0.2 on).
/// Pods made by earlier releases lack it: their agent ended every room LiveKit listed, which with Redis is
/// every room of the tenant, so the operator never asks them to end sessions (see
/// `runtime::pods::ends_own_sessions`).
pub const AGENT_ENDS: &str = "visio.io/agent-ends";
/// The value of [`AGENT_ENDS`].
pub const AGENT_ENDS_OWN_ROOMS: &str = "own-rooms";
/// Label: `"true"` while the pod takes new sessions. The signalling and TURN Services select only these
/// pods, so a draining pod gets no new sessions while its meetings go on.
pub const SERVING: &str = "visio.io/serving";
/// Label: `"true"` while the pod holds sessions. The PodDisruptionBudget covers only these pods, so a node
/// drain cannot evict a meeting; empty pods stay freely evictable.
pub const IN_USE: &str = "visio.io/in-use";

/// Load an agent reports for its pod.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Load {
    /// Participants (SFU) or open streams (caption backend).
    pub participants: u32,
    /// Rooms (SFU) or sessions (caption backend).
    pub rooms: u32,
    /// Capacity reported by the backend itself (caption slots), when it knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// The backend itself says it is draining.
    #[serde(default)]
    pub draining: bool,
    /// Caption backends: streams the backend refused because it was full, since it started (when the
    /// backend counts them: WhisperLive does, moshi-server does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<u32>,
    /// Caption backends: 95th percentile of the model step time (moshi-server) or of the transcription
    /// latency (WhisperLive), in microseconds, over the agent's last readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_p95_us: Option<u32>,
    /// Caption backends: per mille of the model steps slower than real time (moshi-server: above 80 ms)
    /// over the agent's last readings. moshi-server's step histogram stops at 80 ms, so its p95 cannot
    /// show a slow step: this share can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_step_permille: Option<u32>,
}

/// Why a load annotation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoadError {
    #[error("load annotation is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("load annotation is too large ({0} bytes)")]
    TooLarge(usize),
}

/// Parses the load annotation. Anything else than the exact shape (negative numbers,
/// strings, unknown fields) is refused: a pod with an unparsable load is treated as
/// "load unknown", never as empty.
pub fn parse_load(text: &str) -> Result<Load, LoadError> {
    if text.len() > 1024 {
        return Err(LoadError::TooLarge(text.len()));
    }
    serde_json::from_str(text).map_err(|e| LoadError::Malformed(e.to_string()))
}

/// Serialises a load for the annotation.
pub fn render_load(load: &Load) -> String {
    serde_json::to_string(load).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_what_the_agent_writes() {
        let l = Load { participants: 12, rooms: 3, ..Load::default() };
        assert_eq!(parse_load(&render_load(&l)), Ok(l));
        assert_eq!(
            parse_load(r#"{"participants":1,"rooms":1,"capacity":64,"draining":true}"#),
            Ok(Load { participants: 1, rooms: 1, capacity: Some(64), draining: true, ..Load::default() })
        );
        assert_eq!(
            parse_load(r#"{"participants":3,"rooms":3,"capacity":64,"rejected":2,"stepP95Us":41000}"#),
            Ok(Load {
                participants: 3,
                rooms: 3,
                capacity: Some(64),
                rejected: Some(2),
                step_p95_us: Some(41000),
                draining: false,
                slow_step_permille: None,
            })
        );
        assert_eq!(
            parse_load(r#"{"participants":3,"rooms":3,"slowStepPermille":120}"#).map(|l| l.slow_step_permille),
            Ok(Some(120))
        );
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "",
            "{}",
            "null",
            r#"{"participants":-1,"rooms":0}"#,
            r#"{"participants":"3","rooms":0}"#,
            r#"{"participants":1.5,"rooms":0}"#,
            r#"{"participants":1,"rooms":0,"extra":1}"#,
            r#"{"participants":99999999999,"rooms":0}"#,
        ] {
            assert!(parse_load(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(matches!(parse_load(&" ".repeat(2000)), Err(LoadError::TooLarge(2000))));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse_load(&s);
        }

        #[test]
        fn round_trips(p in any::<u32>(), r in any::<u32>(), c in proptest::option::of(any::<u32>()), d in any::<bool>(),
                       rej in proptest::option::of(any::<u32>()), step in proptest::option::of(any::<u32>()),
                       slow in proptest::option::of(any::<u32>())) {
            let l = Load { participants: p, rooms: r, capacity: c, draining: d, rejected: rej, step_p95_us: step,
                           slow_step_permille: slow };
            prop_assert_eq!(parse_load(&render_load(&l)), Ok(l));
        }
    }
}
