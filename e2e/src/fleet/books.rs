//! The meeting books: which meeting is open on which pod with how many participants, how each one
//! ended (closed by the harness, cut, or ended at a drain deadline), and the [`Outcome`] the scenario
//! reads at the end.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use visio_operator::pod_protocol::Load;

use super::standin::StandinState;
use super::{FleetConfig, State};
use crate::unix_ms;

/// Where a meeting is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeetingStatus {
    Open,
    /// Closed by the harness.
    Closed,
    /// Ended without the harness closing it (the reason says how).
    Cut(String),
    /// Ended by the agent at the drain deadline, in a scenario that expects it.
    EndedAtDeadline,
}

/// One simulated meeting (one room on one stand-in).
#[derive(Clone, Debug)]
pub struct Meeting {
    pub name: String,
    pub pod: String,
    pub uid: String,
    pub participants: u32,
    pub opened_ms: i64,
    pub ended_ms: Option<i64>,
    pub status: MeetingStatus,
}

/// What the harness saw, for the scenario to assert and print.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub opened: u32,
    pub closed: u32,
    /// Joins a draining stand-in refused (409); each was retried on another pod.
    pub refused_joins: u32,
    /// Joins for which no serving pod was found at all.
    pub no_serving_pod: u32,
    /// Streams a caption backend refused because every slot was taken (503: moshi-server's "no free
    /// channels", WhisperLive's `WAIT`); each was
    /// retried on the next least-loaded pod.
    pub rejected_full: u32,
    /// Every cut meeting, with how it was cut.
    pub cuts: Vec<String>,
    /// Meetings ended by the agent at the drain deadline (scenarios that expect it): (meeting, pod, when).
    pub ended_at_deadline: Vec<(String, String, i64)>,
    /// Most SFU pods without a deletionTimestamp in one listing.
    pub peak_pods: usize,
    /// Most SFU pods in one listing, terminating ones included.
    pub peak_pods_all: usize,
    /// The listing of the peak (`peak_pods`): when, and each pod with its state.
    pub peak_listing: (i64, Vec<String>),
    /// Every pod listed, in the order first seen: (when first seen, name, template hash).
    pub pods_seen: Vec<(i64, String, String)>,
    /// Pods for which a stand-in and an agent were started.
    pub pods_started: u32,
    /// Pods whose processes were stopped because the pod was deleted.
    pub pods_stopped: u32,
    /// Harness or agent trouble (an agent that exited by itself, a pod whose processes did not start).
    pub problems: Vec<String>,
    /// Data packets each stand-in received (the agent's drain warnings), by pod.
    pub warnings: BTreeMap<String, Vec<Value>>,
    /// Rooms each stand-in saw deleted through the RoomService (the agent's end of sessions), by pod.
    pub forced_ends: BTreeMap<String, Vec<String>>,
    /// Every distinct load annotation the harness saw, in order: (pod, when first seen, load).
    pub loads: Vec<(String, i64, Load)>,
    /// The fleet over time: a sample at each tick where one of its figures changed.
    pub timeline: Vec<Sample>,
}

/// The fleet at one instant, as the harness saw it (the pictures of `e2e/bench fleet`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Pods holding a node: listed without a deletionTimestamp, plus (baseline) deleted pods whose
    /// process still runs, as in `peak_pods`.
    pub pods: usize,
    /// Of those, the pods on their way out: draining (`visio.io/drain-since`) or Terminating.
    pub leaving: usize,
    /// Meetings open, and their participants.
    pub meetings: usize,
    pub participants: u32,
}

impl Sample {
    /// The same figures (the instant apart).
    pub fn same_figures(&self, other: &Sample) -> bool {
        Sample { at_ms: 0, ..*self } == Sample { at_ms: 0, ..*other }
    }
}

/// What happened to a join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Join {
    /// Opened on this pod.
    Joined(String),
    /// No serving pod would take it.
    NoServingPod,
}

/// Books a meeting the pod `pod` (`uid`) took.
pub(super) fn opened(st: &mut State, name: &str, participants: u32, pod: &str, uid: &str) -> Join {
    st.meetings.insert(
        name.to_string(),
        Meeting {
            name: name.to_string(),
            pod: pod.to_string(),
            uid: uid.to_string(),
            participants,
            opened_ms: unix_ms(),
            ended_ms: None,
            status: MeetingStatus::Open,
        },
    );
    st.outcome.opened += 1;
    Join::Joined(pod.to_string())
}

/// Ends a meeting with `status`.
pub(super) fn end(st: &mut State, cfg: &FleetConfig, name: &str, status: MeetingStatus) {
    let now = unix_ms();
    let Some(m) = st.meetings.get_mut(name) else { return };
    if m.status != MeetingStatus::Open {
        return;
    }
    match &status {
        MeetingStatus::Cut(why) => {
            let line = format!("{name} ({} participants) on {} cut: {why}", m.participants, m.pod);
            eprintln!("[fleet {}] {line}", cfg.namespace);
            st.outcome.cuts.push(line);
        }
        MeetingStatus::EndedAtDeadline => st.outcome.ended_at_deadline.push((name.to_string(), m.pod.clone(), now)),
        _ => {}
    }
    m.status = status;
    m.ended_ms = Some(now);
}

/// A meeting whose room is no longer on its stand-in, which the harness did not close.
pub(super) fn vanished(st: &mut State, cfg: &FleetConfig, name: &str, deleted: &[String]) {
    let status = if deleted.iter().any(|d| d == name) {
        if cfg.deadline_ends_expected {
            MeetingStatus::EndedAtDeadline
        } else {
            MeetingStatus::Cut("its room was deleted by the agent's end of sessions (drain deadline)".into())
        }
    } else {
        MeetingStatus::Cut("its room disappeared from the SFU".into())
    };
    end(st, cfg, name, status);
}

pub(super) fn open_on(st: &State, uid: &str) -> Vec<String> {
    st.meetings.values().filter(|m| m.uid == uid && m.status == MeetingStatus::Open).map(|m| m.name.clone()).collect()
}

pub(super) fn record_state(st: &mut State, pod: &str, state: Option<&StandinState>) {
    if let Some(s) = state {
        st.outcome.warnings.insert(pod.to_string(), s.warnings.clone());
        st.outcome.forced_ends.insert(pod.to_string(), s.deleted.clone());
    }
}
