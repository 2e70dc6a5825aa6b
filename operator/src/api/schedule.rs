//! Autoscaling schedules, shared by VisioCluster (`spec.autoscaling`) and CaptionPool
//! (`spec.backend`): windows of the week, in one IANA time zone, during which the fleet is kept at a
//! minimum whatever the load. The planner reads them through `fleet::schedule`.
//!
//! One time zone per resource, not per window: overlapping windows are then refused by CEL on local
//! times alone. A window ends the day it starts (`end` after `start`, `24:00` allowed): a window
//! across midnight is written as two, which keeps the overlap rule a comparison of strings.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::NAME_PATTERN;

/// The time zone schedules are read in when none is given.
pub const DEFAULT_TIME_ZONE: &str = "Europe/Paris";

/// Most windows on one resource (bounds the CEL cost of the overlap rule).
pub const MAX_WINDOWS: u32 = 16;

/// An IANA time zone name as CEL can check it (`Europe/Paris`, `UTC`, `America/Argentina/Buenos_Aires`);
/// whether the zone exists is checked by the controller against its bundled tz database.
pub const TIME_ZONE_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$";

/// `HH:MM`, 00:00 to 23:59.
pub const START_PATTERN: &str = r"^([01][0-9]|2[0-3]):[0-5][0-9]$";
/// `HH:MM`, 00:01 to 24:00 (`24:00`: the end of the day).
pub const END_PATTERN: &str = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$";

pub fn default_time_zone() -> String {
    DEFAULT_TIME_ZONE.into()
}

/// A day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// Monday 0 to Sunday 6.
    pub fn monday_zero(self) -> u8 {
        self as u8
    }
}

/// The CEL rules of the list of windows at `field`.
pub fn list_rules(field: &str) -> serde_json::Value {
    serde_json::json!([
        {"rule": "self.all(a, self.exists_one(b, b.name == a.name))",
         "message": format!("{field}: window names must be unique")},
        // Each window overlaps itself only; a window whose end is not after its start is refused by its own
        // rule, and left out here so that it is not reported twice.
        {"rule": "self.all(a, a.end <= a.start || self.exists_one(b, b.days.exists(d, d in a.days) && b.start < a.end && a.start < b.end))",
         "message": format!("{field}: two windows overlap on a day they share; a window's minimum holds alone, so make them disjoint (end of one <= start of the next)")}
    ])
}

/// The CEL rules of one window of the list at `field`, whose minimum in load units is `load_field`.
pub fn window_rules(field: &str, load_field: &str) -> serde_json::Value {
    serde_json::json!([
        {"rule": "self.end > self.start",
         "message": format!("{field}[].end must be after start the same day (24:00 for midnight); a window across midnight is two windows"),
         "fieldPath": ".end"},
        {"rule": format!("has(self.minPods) != has(self.{load_field})"),
         "message": format!("{field}[]: set exactly one of minPods or {load_field}")}
    ])
}

macro_rules! schedule_window {
    ($(#[$doc:meta])* $name:ident, $field:literal, $load:ident, $load_json:literal, $load_doc:literal) => {
        $(#[$doc])*
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        #[schemars(extend("x-kubernetes-validations" = window_rules($field, $load_json)))]
        pub struct $name {
            /// Name of the window, shown in the status (`kubectl get` column `Window`) while it is active.
            #[schemars(length(min = 1, max = 63), extend("pattern" = NAME_PATTERN))]
            pub name: String,
            /// Days the window opens, in the schedule's time zone (`Mon` .. `Sun`).
            #[schemars(length(min = 1, max = 7), extend("x-kubernetes-list-type" = "set"))]
            pub days: Vec<Weekday>,
            /// Local time the window opens, `HH:MM` (24-hour). The fleet starts growing earlier, by the time
            /// its pods have been measured to take to serve.
            #[schemars(length(min = 5, max = 5), extend("pattern" = START_PATTERN))]
            pub start: String,
            /// Local time the window closes, `HH:MM`, after `start` (`24:00` for midnight). At the end the
            /// minimum is lifted; pods are then removed by the normal scale-down rules (the delay, then drains
            /// that wait for meetings to end), never cut.
            #[schemars(length(min = 5, max = 5), extend("pattern" = END_PATTERN))]
            pub end: String,
            /// Pods kept serving during the window (within the replica bounds).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(range(min = 0, max = 10000))]
            pub min_pods: Option<i32>,
            #[doc = $load_doc]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(range(min = 0, max = 10000000))]
            pub $load: Option<i32>,
        }
    };
}

schedule_window!(
    /// A window of a VisioCluster's schedule: set `minPods`, or `minParticipants`.
    ScheduleWindow,
    "spec.autoscaling.schedules",
    min_participants,
    "minParticipants",
    "Participants to be ready for during the window: pods for that many, with the buffer and target \
     utilisation, as if that load were connected."
);

schedule_window!(
    /// A window of a CaptionPool's backend schedule: set `minPods`, or `minSlots`.
    CaptionScheduleWindow,
    "spec.backend.schedules",
    min_slots,
    "minSlots",
    "Caption slots to be ready for during the window: pods for that many, with the slot buffer and target \
     occupancy, as if that many streams ran."
);

/// A window as the planner reads it, whichever resource it comes from.
pub struct WindowView<'a> {
    pub name: &'a str,
    pub days: &'a [Weekday],
    pub start: &'a str,
    pub end: &'a str,
    pub min_pods: Option<i32>,
    pub min_load: Option<i32>,
}

impl ScheduleWindow {
    pub fn view(&self) -> WindowView<'_> {
        WindowView {
            name: &self.name,
            days: &self.days,
            start: &self.start,
            end: &self.end,
            min_pods: self.min_pods,
            min_load: self.min_participants,
        }
    }
}

impl CaptionScheduleWindow {
    pub fn view(&self) -> WindowView<'_> {
        WindowView {
            name: &self.name,
            days: &self.days,
            start: &self.start,
            end: &self.end,
            min_pods: self.min_pods,
            min_load: self.min_slots,
        }
    }
}

/// What the status shows of the schedule and the start-up time.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// The schedule window holding the fleet up now (opened early by the start-up lead), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_window: Option<String>,
    /// Pods the active window keeps serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_min_pods: Option<i32>,
    /// How long, in seconds, a new pod of this fleet has been measured to take from creation to Ready
    /// (the slowest of its recent pods): windows open this much early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_lead_seconds: Option<i64>,
}
