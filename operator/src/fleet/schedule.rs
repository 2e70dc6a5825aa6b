//! Scheduled capacity: which window of the week holds the fleet up at an instant, and when that
//! next changes. Pure: the instant is an input, the time zone database is the one bundled in the
//! binary (jiff's), so the answer is the same in tests, in CI and in the image.
//!
//! Windows are local times in one IANA time zone, so a window at 09:00 opens at 09:00 local time on
//! both sides of a daylight-saving change. A local time a change skips (02:30 on the last Sunday of
//! March in Paris) is read as if the clocks had not moved yet (03:30 summer time), one it repeats
//! (02:30 on the last Sunday of October) as its first occurrence: RFC 5545's and Temporal's
//! "compatible" reading. So a window inside the skipped hour opens an hour late that day rather than
//! vanishing, a window across the repeated hour is an hour longer, never shorter, and only a window
//! that is exactly the skipped hour (02:00-03:00) does not open.
//!
//! A window opens early by the lead (the measured time a new pod takes to serve), so its pods are
//! Ready at its start; it closes at its end, after which only the normal scale-down rules remove
//! pods (`scale::scale_down`: the delay, then drains that keep meetings).

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use super::Millis;

/// The longest lead a window opens early by: a measured start-up beyond it is a fault to look at
/// (an image that cannot be pulled), not a figure to plan with.
pub const MAX_LEAD_MS: Millis = 3_600_000;

/// What a window keeps serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Minimum {
    /// Serving pods.
    Pods(u32),
    /// Load units (participants, caption slots) to be ready for: pods for that load with the buffer
    /// and target utilisation, as if it were connected.
    Load(u32),
}

/// One window of the week.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub name: String,
    /// Bit `d` set: opens on day `d` (Monday 0 .. Sunday 6), in the schedule's time zone.
    pub days: u8,
    /// Minutes after local midnight: `start < end <= 1440`.
    pub start_minute: u16,
    pub end_minute: u16,
    pub min: Minimum,
}

/// The windows of one fleet. The default has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub time_zone: TimeZone,
    pub windows: Vec<Window>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule { time_zone: TimeZone::UTC, windows: Vec::new() }
    }
}

/// Why a spec's schedule cannot be read; the message names the field (under `field`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("{field}.timeZone: {zone:?} is not a time zone of the IANA database (such as Europe/Paris or UTC)")]
    UnknownTimeZone { field: &'static str, zone: String },
    #[error("{field}.schedules[{index}].{part}: {value:?} is not a time HH:MM")]
    BadTime { field: &'static str, index: usize, part: &'static str, value: String },
    #[error("{field}.schedules[{index}]: end must be after start")]
    Empty { field: &'static str, index: usize },
    #[error("{field}.schedules[{index}]: set exactly one of minPods or the minimum load")]
    Minimum { field: &'static str, index: usize },
    #[error("{field}.schedules[{index}] and [{other}] overlap on a day they share")]
    Overlap { field: &'static str, index: usize, other: usize },
}

/// `HH:MM` as minutes after midnight (`24:00` is 1440).
pub fn parse_minute(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    let minute = h.checked_mul(60)?.checked_add(m)?;
    (m < 60 && minute <= 1440).then_some(minute)
}

impl Schedule {
    /// Reads a spec's schedule. The apiserver refuses all of this but an unknown time zone (CEL has no
    /// tz database); the rest is checked again so that an object written before the rules is still read
    /// safely. `field` is where the schedule lives (`spec.autoscaling`, `spec.backend`).
    pub fn parse(
        field: &'static str,
        time_zone: &str,
        windows: &[crate::api::schedule::WindowView<'_>],
    ) -> Result<Schedule, ScheduleError> {
        let tz = jiff::tz::db()
            .get(time_zone)
            .map_err(|_| ScheduleError::UnknownTimeZone { field, zone: time_zone.into() })?;
        let mut out = Vec::with_capacity(windows.len());
        for (index, w) in windows.iter().enumerate() {
            let time = |part, value: &str| {
                parse_minute(value).ok_or(ScheduleError::BadTime { field, index, part, value: value.into() })
            };
            let (start_minute, end_minute) = (time("start", w.start)?, time("end", w.end)?);
            if end_minute <= start_minute || start_minute >= 1440 {
                return Err(ScheduleError::Empty { field, index });
            }
            let min = match (w.min_pods, w.min_load) {
                (Some(p), None) => Minimum::Pods(p.max(0) as u32),
                (None, Some(l)) => Minimum::Load(l.max(0) as u32),
                _ => return Err(ScheduleError::Minimum { field, index }),
            };
            let days = w.days.iter().fold(0u8, |acc, d| acc | 1 << d.monday_zero());
            out.push(Window { name: w.name.to_string(), days, start_minute, end_minute, min });
        }
        for (i, a) in out.iter().enumerate() {
            if let Some(j) = out[..i].iter().position(|b| overlap(a, b)) {
                return Err(ScheduleError::Overlap { field, index: j, other: i });
            }
        }
        Ok(Schedule { time_zone: tz, windows: out })
    }

    /// The windows open at `now` (each opened `lead_ms` early) and the next instant after `now` at
    /// which a window opens (early) or closes. Windows never overlap, but a window opened early may
    /// overlap the end of the one before it: both are then open.
    pub fn at(&self, now: Millis, lead_ms: Millis) -> Reading<'_> {
        let mut reading = Reading { open: Vec::new(), next_change: None };
        let lead = lead_ms.max(0);
        // Yesterday's windows may still be open (none crosses midnight, but an end at 24:00 is today's
        // 00:00); a week ahead covers every next change, the lead included (it is bounded by a day).
        for (w, start, end) in self.occurrences(now, -1..=8) {
            let opens = start.saturating_sub(lead);
            if start >= end {
                continue; // exactly the hour a change skips: not open that day
            }
            if opens <= now && now < end {
                reading.open.push(w);
            }
            for t in [opens, end] {
                if t > now {
                    reading.next_change = Some(reading.next_change.map_or(t, |n: Millis| n.min(t)));
                }
            }
        }
        reading
    }

    /// The windows that open (early by `lead_ms`) after `now` and at most `horizon_ms` later: a
    /// scale-down keeps the pods they will ask for (`scale::held`), rather than draining pods whose
    /// meetings would still hold them when new ones are created for the window.
    pub fn opening_within(&self, now: Millis, lead_ms: Millis, horizon_ms: Millis) -> Vec<&Window> {
        let mut out: Vec<&Window> = Vec::new();
        let (lead, until) = (lead_ms.max(0), now.saturating_add(horizon_ms.max(0)));
        // The horizon is bounded by the drain timeout (24 h at most): two days ahead cover it.
        for (w, start, end) in self.occurrences(now, 0..=2) {
            let opens = start.saturating_sub(lead);
            if start < end && now < opens && opens <= until && !out.iter().any(|o| std::ptr::eq(*o, w)) {
                out.push(w);
            }
        }
        out
    }

    /// Each window on each of the local days `days` (offsets from `now`'s date) it falls on, with its
    /// start and end instants (a day whose times do not exist in the zone is left out).
    fn occurrences(
        &self,
        now: Millis,
        days: std::ops::RangeInclusive<i64>,
    ) -> impl Iterator<Item = (&Window, Millis, Millis)> + '_ {
        let today = Timestamp::from_millisecond(now).ok().map(|t| t.to_zoned(self.time_zone.clone()).date());
        days.filter_map(move |offset| today?.checked_add(offset.days()).ok()).flat_map(move |date| {
            let day_bit = 1u8 << date.weekday().to_monday_zero_offset();
            self.windows
                .iter()
                .filter(move |w| w.days & day_bit != 0)
                .filter_map(move |w| Some((w, self.instant(date, w.start_minute)?, self.instant(date, w.end_minute)?)))
        })
    }

    /// The instant of `minute` after local midnight of `date` (1440: the next midnight).
    fn instant(&self, date: Date, minute: u16) -> Option<Millis> {
        let (date, minute) = if minute >= 1440 { (date.tomorrow().ok()?, 0) } else { (date, minute) };
        let time = Time::new((minute / 60) as i8, (minute % 60) as i8, 0, 0).ok()?;
        let ts = self.time_zone.to_ambiguous_timestamp(DateTime::from_parts(date, time)).compatible().ok()?;
        Some(ts.as_millisecond())
    }
}

/// What the status shows (`status.autoscaling`): the window holding the fleet up and the lead; `None`
/// when there is neither.
pub fn status(
    scheduled: Option<&super::Scheduled>,
    lead_ms: Option<Millis>,
) -> Option<crate::api::schedule::ScheduleStatus> {
    (scheduled.is_some() || lead_ms.is_some()).then(|| crate::api::schedule::ScheduleStatus {
        active_window: scheduled.map(|s| s.window.clone()),
        scheduled_min_pods: scheduled.map(|s| i32::try_from(s.pods).unwrap_or(i32::MAX)),
        // Whole seconds, rounded up: the status changes only when the figure does by a second.
        startup_lead_seconds: lead_ms.map(|ms| (ms.max(0) + 999) / 1000),
    })
}

/// Two windows share a day and their times intersect.
fn overlap(a: &Window, b: &Window) -> bool {
    a.days & b.days != 0 && a.start_minute < b.end_minute && b.start_minute < a.end_minute
}

/// What [`Schedule::at`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Reading<'a> {
    pub open: Vec<&'a Window>,
    pub next_change: Option<Millis>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::schedule::{Weekday, WindowView};
    use proptest::prelude::*;

    const ALL: [Weekday; 7] =
        [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];

    fn view<'a>(name: &'a str, days: &'a [Weekday], start: &'a str, end: &'a str) -> WindowView<'a> {
        WindowView { name, days, start, end, min_pods: Some(5), min_load: None }
    }

    fn paris(windows: &[WindowView<'_>]) -> Schedule {
        Schedule::parse("spec.autoscaling", "Europe/Paris", windows).unwrap()
    }

    /// Unix ms of a Paris local time (compatible reading).
    fn local(s: &str) -> Millis {
        let dt: DateTime = s.parse().unwrap();
        dt.to_zoned(TimeZone::get("Europe/Paris").unwrap()).unwrap().timestamp().as_millisecond()
    }

    fn utc(s: &str) -> Millis {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn open_names(s: &Schedule, now: Millis, lead: Millis) -> Vec<String> {
        s.at(now, lead).open.iter().map(|w| w.name.clone()).collect()
    }

    const MIN: Millis = 60_000;

    #[test]
    fn times_parse() {
        let table = [
            ("00:00", Some(0)),
            ("08:45", Some(525)),
            ("23:59", Some(1439)),
            ("24:00", Some(1440)),
            ("24:01", None),
            ("9:00", None),
            ("09:60", None),
            ("0900", None),
            ("", None),
            ("+9:00", None),
            ("ab:cd", None),
        ];
        for (s, want) in table {
            assert_eq!(parse_minute(s), want, "{s}");
        }
    }

    #[test]
    fn parse_refuses_with_the_field() {
        let week = [Weekday::Mon];
        let err =
            |tz: &str, ws: &[WindowView<'_>]| Schedule::parse("spec.autoscaling", tz, ws).unwrap_err().to_string();
        assert_eq!(
            err("Europe/Pariss", &[]),
            "spec.autoscaling.timeZone: \"Europe/Pariss\" is not a time zone of the IANA database (such as Europe/Paris or UTC)"
        );
        assert_eq!(
            err("Europe/Paris", &[view("a", &week, "10:00", "10:00")]),
            "spec.autoscaling.schedules[0]: end must be after start"
        );
        assert_eq!(
            err("Europe/Paris", &[view("a", &week, "10:00", "9:00")]),
            "spec.autoscaling.schedules[0].end: \"9:00\" is not a time HH:MM"
        );
        assert_eq!(
            err(
                "Europe/Paris",
                &[view("a", &week, "08:00", "10:00"), view("b", &[Weekday::Mon, Weekday::Tue], "09:59", "11:00")]
            ),
            "spec.autoscaling.schedules[0] and [1] overlap on a day they share"
        );
        let both = WindowView { min_load: Some(1), ..view("a", &week, "08:00", "09:00") };
        assert_eq!(
            err("UTC", &[both]),
            "spec.autoscaling.schedules[0]: set exactly one of minPods or the minimum load"
        );
        // Touching windows, or the same hours on other days, are fine.
        Schedule::parse("f", "UTC", &[view("a", &week, "08:00", "10:00"), view("b", &week, "10:00", "11:00")]).unwrap();
        Schedule::parse(
            "f",
            "UTC",
            &[view("a", &week, "08:00", "10:00"), view("b", &[Weekday::Tue], "08:00", "10:00")],
        )
        .unwrap();
    }

    #[test]
    fn a_weekday_morning() {
        let s = paris(&[view("morning", &ALL[..5], "08:45", "10:00")]);
        // Monday 2026-12-07.
        assert_eq!(open_names(&s, local("2026-12-07T08:44:59"), 0), Vec::<String>::new());
        assert_eq!(open_names(&s, local("2026-12-07T08:45"), 0), ["morning"]);
        assert_eq!(open_names(&s, local("2026-12-07T09:59:59"), 0), ["morning"]);
        assert_eq!(open_names(&s, local("2026-12-07T10:00"), 0), Vec::<String>::new());
        // Saturday: closed; the next change is Monday's opening.
        let sat = s.at(local("2026-12-12T09:00"), 0);
        assert!(sat.open.is_empty());
        assert_eq!(sat.next_change, Some(local("2026-12-14T08:45")));
        // Winter: Paris is UTC+1.
        assert_eq!(local("2026-12-07T08:45"), utc("2026-12-07T07:45:00Z"));
    }

    #[test]
    fn the_lead_opens_early() {
        let s = paris(&[view("morning", &ALL[..5], "08:45", "10:00")]);
        let lead = 3 * MIN;
        assert!(open_names(&s, local("2026-12-07T08:41:59"), lead).is_empty());
        assert_eq!(open_names(&s, local("2026-12-07T08:42"), lead), ["morning"]);
        assert_eq!(s.at(local("2026-12-07T08:00"), lead).next_change, Some(local("2026-12-07T08:42")));
        // The end is not moved by the lead.
        assert_eq!(s.at(local("2026-12-07T09:00"), lead).next_change, Some(local("2026-12-07T10:00")));
        // A window at midnight Monday opens on Sunday evening.
        let s = paris(&[view("night", &[Weekday::Mon], "00:00", "01:00")]);
        assert_eq!(open_names(&s, local("2026-12-06T23:58"), lead), ["night"]);
        assert!(open_names(&s, local("2026-12-06T23:56"), lead).is_empty());
    }

    #[test]
    fn windows_opening_within_a_horizon() {
        let s = paris(&[view("morning", &ALL, "09:00", "10:00"), view("noon", &ALL, "12:00", "13:00")]);
        let names = |now, lead, horizon| -> Vec<String> {
            s.opening_within(now, lead, horizon).iter().map(|w| w.name.clone()).collect()
        };
        let lead = 3 * MIN;
        // Opens (early) within the horizon: counted; already open or beyond the horizon: not.
        assert_eq!(names(local("2026-12-07T08:00"), lead, 57 * MIN), ["morning"]);
        assert!(names(local("2026-12-07T08:00"), lead, 56 * MIN).is_empty());
        assert!(names(local("2026-12-07T08:57"), lead, 60 * MIN).is_empty());
        assert_eq!(names(local("2026-12-07T10:00"), 0, 120 * MIN), ["noon"]);
        // Across midnight: tomorrow's morning.
        assert_eq!(names(local("2026-12-07T23:00"), 0, 10 * 60 * MIN), ["morning"]);
        assert!(names(local("2026-12-07T08:00"), lead, -5).is_empty());
    }

    #[test]
    fn ending_at_midnight() {
        let s = paris(&[view("evening", &[Weekday::Mon], "22:00", "24:00")]);
        assert_eq!(open_names(&s, local("2026-12-07T23:59:59"), 0), ["evening"]);
        assert!(open_names(&s, local("2026-12-08T00:00"), 0).is_empty());
        assert_eq!(s.at(local("2026-12-07T23:00"), 0).next_change, Some(local("2026-12-08T00:00")));
    }

    /// Last Sunday of March 2027 (the 28th): at 02:00 CET the clocks go to 03:00 CEST.
    #[test]
    fn spring_forward_day() {
        let sunday = [Weekday::Sun];
        let s = paris(&[
            view("before", &sunday, "00:30", "01:30"),
            view("across", &sunday, "01:30", "03:30"),
            view("inside", &sunday, "03:30", "04:00"),
            view("morning", &sunday, "09:00", "10:00"),
        ]);
        // 09:00 local is 07:00 UTC once in summer time (08:00 UTC the Sunday before).
        assert_eq!(open_names(&s, utc("2027-03-28T07:00:00Z"), 0), ["morning"]);
        assert!(open_names(&s, utc("2027-03-28T06:59:59Z"), 0).is_empty());
        assert_eq!(open_names(&s, utc("2027-03-21T08:00:00Z"), 0), ["morning"]);
        // "across" (01:30 CET = 00:30 UTC to 03:30 CEST = 01:30 UTC) lasts one hour that day, not two.
        assert_eq!(open_names(&s, utc("2027-03-28T00:30:00Z"), 0), ["across"]);
        assert_eq!(open_names(&s, utc("2027-03-28T01:29:59Z"), 0), ["across"]);
        assert_eq!(open_names(&s, utc("2027-03-28T01:30:00Z"), 0), ["inside"]);
    }

    #[test]
    fn a_window_in_the_skipped_hour() {
        // 02:00-02:59 does not exist on 2027-03-28 in Paris: 02:10-02:50 is read as 03:10-03:50 summer time
        // (01:10-01:50 UTC), the same 40 minutes an hour late, rather than not at all.
        let s = paris(&[view("gap", &[Weekday::Sun], "02:10", "02:50")]);
        let sunday = utc("2027-03-28T00:00:00Z");
        for m in 0..=180 {
            let want: &[&str] = if (70..110).contains(&m) { &["gap"] } else { &[] };
            assert_eq!(open_names(&s, sunday + m * MIN, 0), want, "{m}");
        }
        assert_eq!(open_names(&s, local("2027-03-21T02:30"), 0), ["gap"]);
        assert_eq!(open_names(&s, local("2027-04-04T02:30"), 0), ["gap"]);
        // Exactly the skipped hour does not open that day, and is no change to wake for.
        let s = paris(&[view("hour", &[Weekday::Sun], "02:00", "03:00")]);
        for m in 0..=180 {
            assert!(open_names(&s, sunday + m * MIN, 0).is_empty(), "{m}");
        }
        assert_eq!(s.at(sunday, 0).next_change, Some(local("2027-04-04T02:00")));
    }

    /// Last Sunday of October 2027 (the 31st): at 03:00 CEST the clocks go back to 02:00 CET.
    #[test]
    fn fall_back_day() {
        let sunday = [Weekday::Sun];
        let s = paris(&[view("fold", &sunday, "02:00", "03:00"), view("morning", &sunday, "09:00", "10:00")]);
        // 09:00 local is 08:00 UTC once back in winter time (07:00 UTC the Sunday before).
        assert_eq!(open_names(&s, utc("2027-10-31T08:00:00Z"), 0), ["morning"]);
        assert!(open_names(&s, utc("2027-10-31T07:59:59Z"), 0).is_empty());
        assert_eq!(open_names(&s, utc("2027-10-24T07:00:00Z"), 0), ["morning"]);
        // 02:00-03:00 is read from the first 02:00 (00:00 UTC) to 03:00 CET (02:00 UTC): two hours.
        assert!(open_names(&s, utc("2027-10-30T23:59:59Z"), 0).is_empty());
        assert_eq!(open_names(&s, utc("2027-10-31T00:00:00Z"), 0), ["fold"]);
        assert_eq!(open_names(&s, utc("2027-10-31T01:59:59Z"), 0), ["fold"]);
        assert!(open_names(&s, utc("2027-10-31T02:00:00Z"), 0).is_empty());
    }

    #[test]
    fn a_week_across_both_changes_opens_at_local_nine() {
        let s = paris(&[view("morning", &ALL, "09:00", "09:30")]);
        for day in ["2027-03-27", "2027-03-28", "2027-03-29", "2027-10-30", "2027-10-31", "2027-11-01"] {
            let nine = local(&format!("{day}T09:00"));
            assert!(open_names(&s, nine - 1, 0).is_empty(), "{day}");
            assert_eq!(open_names(&s, nine, 0), ["morning"], "{day}");
            assert_eq!(s.at(nine - 10 * MIN, 0).next_change, Some(nine), "{day}");
        }
    }

    #[test]
    fn an_early_opening_may_overlap_the_previous_window() {
        let mon = [Weekday::Mon];
        let s = paris(&[view("a", &mon, "08:00", "09:00"), view("b", &mon, "09:00", "10:00")]);
        assert_eq!(open_names(&s, local("2026-12-07T08:58"), 5 * MIN), ["a", "b"]);
    }

    #[test]
    fn out_of_range_instants_open_nothing() {
        let s = paris(&[view("all", &ALL, "00:00", "24:00")]);
        assert_eq!(s.at(Millis::MAX, 0), Reading { open: vec![], next_change: None });
        assert_eq!(s.at(Millis::MIN, Millis::MAX).open.len(), 0);
    }

    fn arb_windows() -> impl Strategy<Value = Vec<(u8, u16, u16)>> {
        prop::collection::vec((1u8..128, 0u16..1440, 1u16..=240), 0..5)
    }

    fn build(raw: &[(u8, u16, u16)]) -> Schedule {
        let mut windows: Vec<Window> = Vec::new();
        for (i, &(days, start, len)) in raw.iter().enumerate() {
            let w = Window {
                name: format!("w{i}"),
                days,
                start_minute: start,
                end_minute: (start + len).min(1440),
                min: Minimum::Pods(1),
            };
            if !windows.iter().any(|o| overlap(o, &w)) {
                windows.push(w);
            }
        }
        Schedule { time_zone: TimeZone::get("Europe/Paris").unwrap(), windows }
    }

    proptest! {
        /// Between `now` and the next change, what is open does not change; at the change it may.
        #[test]
        fn nothing_changes_before_next_change(raw in arb_windows(), start in 1_790_000_000_000i64..1_830_000_000_000, lead in 0i64..3_600_000, step in 1i64..600_000) {
            let s = build(&raw);
            let r = s.at(start, lead);
            let names = |r: &Reading<'_>| r.open.iter().map(|w| w.name.clone()).collect::<Vec<_>>();
            if let Some(next) = r.next_change {
                prop_assert!(next > start);
                let probe = (start + step).min(next - 1);
                prop_assert_eq!(names(&s.at(probe, lead)), names(&r));
            } else {
                prop_assert!(s.windows.is_empty());
            }
        }

        /// Without a lead, a window is open exactly when the local weekday and time are inside it
        /// (outside the hours a DST change skips or repeats).
        #[test]
        fn open_means_local_time_inside(raw in arb_windows(), now in 1_790_000_000_000i64..1_830_000_000_000) {
            let s = build(&raw);
            let z = Timestamp::from_millisecond(now).unwrap().to_zoned(s.time_zone.clone());
            prop_assume!(!(1..=3).contains(&z.hour()));
            let minute = z.hour() as u16 * 60 + z.minute() as u16;
            let bit = 1u8 << z.weekday().to_monday_zero_offset();
            let want: Vec<String> = s.windows.iter()
                .filter(|w| w.days & bit != 0 && w.start_minute <= minute && minute < w.end_minute)
                .map(|w| w.name.clone()).collect();
            prop_assert_eq!(open_names(&s, now, 0), want);
        }

        /// A lead only opens windows earlier: whatever is open without it is open with it.
        #[test]
        fn a_lead_only_adds(raw in arb_windows(), now in 1_790_000_000_000i64..1_830_000_000_000, lead in 0i64..7_200_000) {
            let s = build(&raw);
            let with = open_names(&s, now, lead);
            for name in open_names(&s, now, 0) {
                prop_assert!(with.contains(&name));
            }
        }
    }
}
