//! `bench peak`: the Monday 9:00 ramp of 20 tenants (issue #23), played three ways on the same seeded
//! workload: the chart-style baseline (a Deployment scaled by the HPA's algorithm, `visio_e2e::baseline`),
//! the operator's planner reactive only, and the operator's planner with a schedule window.
//!
//! This is the planner-level model of the morning, in simulated time: the operator's own `fleet::plan`
//! (unchanged, every 2 s as the agents report) and the HPA's documented algorithm (`baseline::recommend`
//! and its scale-down stabilisation, every 15 s) decide; the model plays the pods (created, Ready after a
//! stated start-up delay, drained, deleted) and places each meeting on the least-loaded serving pod, as
//! LiveKit's load-based selector does. No apiserver is involved, so every figure is exact and the run
//! is reproducible from its seed.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::jiff::civil::DateTime;
use k8s_openapi::jiff::tz::TimeZone;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use visio_e2e::baseline::{recommend, HpaSpec, Stabiliser};
use visio_e2e::peak_report::{PeakReport, PeakRow};
use visio_operator::api::schedule::{Weekday, WindowView};
use visio_operator::fleet::schedule::Schedule;
use visio_operator::fleet::{self, Action, FleetSpec, PodPhase, PodSnapshot, Snapshot};

/// The model's parameters, printed with the table.
#[derive(Clone, Debug)]
pub struct Params {
    pub seed: u64,
    pub tenants: usize,
    /// Creation to Ready of a new SFU pod (node, pull, start), seconds.
    pub startup_s: u32,
    /// What-if (model only, `--pack`): each meeting on the fullest serving pod it fits under the target,
    /// the least-loaded when none does. LiveKit's selector cannot do this (docs/design.md#scheduled-capacity):
    /// the figure says what packing upstream would be worth.
    pub pack: bool,
}

pub const PER_POD: u32 = 250;
pub const TARGET_PERCENT: u32 = 70;
pub const MIN_PODS: u32 = 2;
pub const MAX_PODS: u32 = 40;
pub const BUFFER: u32 = 100;
/// The morning played: 08:30 to 11:30, Paris time, on Monday 29 March 2027 (the day after the spring
/// DST change: the window must open at 08:40 summer time).
const DAY: &str = "2027-03-29T08:30:00";
pub const HORIZON_S: u32 = 3 * 3600;
/// How often the operator plans (the agent's report interval).
const PLAN_EVERY_S: u32 = 2;
/// A sample of the time series every this many seconds, for the picture.
pub const SAMPLE_EVERY_S: u32 = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Chart,
    Reactive,
    Scheduled,
}

impl System {
    pub fn label(self) -> &'static str {
        match self {
            System::Chart => "chart baseline (Deployment + CPU HPA)",
            System::Reactive => "visio-operator, reactive only",
            System::Scheduled => "visio-operator, with schedules",
        }
    }
}

/// One meeting: its start and end (seconds after 08:30) and its size.
#[derive(Clone, Debug)]
pub struct Meeting {
    pub start: u32,
    pub end: u32,
    pub participants: u32,
}

/// One tenant's morning, and what its schedule was written from: when its two waves open and last
/// week's peak (so not exactly today's).
pub struct Tenant {
    pub meetings: Vec<Meeting>,
    /// Concurrent participants, second by second.
    pub load: Vec<u32>,
    /// Last week's peak of each wave (the most participants connected within 40 minutes of its start).
    pub schedule_participants: [u32; 2],
    /// Seconds after 08:30 at which its waves start opening.
    pub waves: [u32; 2],
}

fn meeting_size(rng: &mut StdRng) -> u32 {
    match rng.random_range(0..100) {
        0..50 => rng.random_range(2..=4),
        50..85 => rng.random_range(5..=10),
        _ => rng.random_range(11..=30),
    }
}

fn meeting_length_s(rng: &mut StdRng) -> u32 {
    let minutes: u32 = match rng.random_range(0..100) {
        0..35 => 30,
        35..55 => 45,
        55..90 => 60,
        _ => 90,
    };
    // Meetings end a little early or late.
    (minutes * 60).saturating_add_signed(rng.random_range(-180i32..=180))
}

/// A wave of meetings of `participants` in all, opening over `ramp_s` from `from`, the rate rising
/// towards the hour (start = from + ramp * sqrt(u): most join in the last minutes).
fn wave(rng: &mut StdRng, from: u32, ramp_s: u32, participants: u32, out: &mut Vec<Meeting>) {
    let mut placed = 0;
    while placed < participants {
        let size = meeting_size(rng);
        let start = from + (f64::from(ramp_s) * rng.random::<f64>().sqrt()) as u32;
        out.push(Meeting { start, end: start + meeting_length_s(rng), participants: size });
        placed += size;
    }
}

pub fn tenants(p: &Params) -> Vec<Tenant> {
    let mut rng = StdRng::seed_from_u64(p.seed);
    (0..p.tenants)
        .map(|_| {
            let peak = rng.random_range(200..=3000);
            // The ramp to the peak starts between 08:40 and 08:50 and lasts about 10 minutes; a second,
            // smaller wave opens towards 10:00 as the hour-long meetings end.
            let first = 600 + rng.random_range(0..=600);
            let mut meetings = Vec::new();
            wave(&mut rng, first, 600, peak, &mut meetings);
            let second = 5100 + rng.random_range(0..=300);
            wave(&mut rng, second, 600, peak / 2, &mut meetings);
            meetings.sort_by_key(|m| (m.start, m.end));
            let mut load = vec![0u32; HORIZON_S as usize + 1];
            for m in &meetings {
                for l in &mut load[m.start.min(HORIZON_S) as usize..m.end.min(HORIZON_S) as usize] {
                    *l += m.participants;
                }
            }
            // Last week's peaks: within -15 %..+5 % of today's.
            let mut schedule_participants = [0; 2];
            for (s, w) in schedule_participants.iter_mut().zip([first, second]) {
                let today = load[w as usize..(w + 2400).min(HORIZON_S) as usize].iter().copied().max().unwrap_or(0);
                *s = (f64::from(today) * rng.random_range(0.85..1.05)).round() as u32;
            }
            Tenant { meetings, load, schedule_participants, waves: [first, second] }
        })
        .collect()
}

/// One SFU pod in the model.
#[derive(Clone, Debug)]
struct Pod {
    name: String,
    created: u32,
    ready_at: u32,
    load: u32,
    sessions: u32,
    draining_since: Option<u32>,
    /// The baseline's ReplicaSet deleted it: it keeps its meetings (the chart's 5 h grace) and gets no
    /// new ones.
    terminating: bool,
}

impl Pod {
    fn takes_meetings(&self, t: u32) -> bool {
        t >= self.ready_at && self.draining_since.is_none() && !self.terminating
    }
}

/// What one system did for one tenant (or all, summed).
#[derive(Clone, Debug, Default)]
struct Outcome {
    joins_above_capacity: u64,
    participant_s_above_target: u64,
    pod_s: u64,
    ideal_pod_s: u64,
    cut: u64,
    /// Pods of the fleet (all states) at each sample.
    pods: Vec<u32>,
}

struct Model<'a> {
    tenant: &'a Tenant,
    pods: Vec<Pod>,
    next_name: u32,
    /// Meetings live, by pod: (end, participants).
    live: BTreeMap<String, Vec<(u32, u32)>>,
    out: Outcome,
    pack: bool,
}

impl<'a> Model<'a> {
    fn new(tenant: &'a Tenant, pack: bool) -> Self {
        let mut m =
            Model { tenant, pods: Vec::new(), next_name: 0, live: BTreeMap::new(), out: Outcome::default(), pack };
        for _ in 0..MIN_PODS {
            m.create(0, 0);
        }
        m
    }

    fn create(&mut self, t: u32, startup_s: u32) {
        let name = format!("sfu-{}", self.next_name);
        self.next_name += 1;
        self.pods.push(Pod {
            name,
            created: t,
            ready_at: t + startup_s,
            load: 0,
            sessions: 0,
            draining_since: None,
            terminating: false,
        });
    }

    fn remove(&mut self, name: &str) {
        if let Some(meetings) = self.live.remove(name) {
            self.out.cut += meetings.len() as u64;
        }
        self.pods.retain(|p| p.name != name);
    }

    /// Ends the meetings due at `t`, then opens those starting at `t` on the least-loaded serving pod.
    fn meetings(&mut self, t: u32, starting: &[Meeting]) {
        for p in &mut self.pods {
            if let Some(list) = self.live.get_mut(&p.name) {
                list.retain(|&(end, n)| {
                    if end <= t {
                        p.load -= n;
                        p.sessions -= 1;
                    }
                    end > t
                });
            }
        }
        for m in starting {
            let target = PER_POD * TARGET_PERCENT / 100;
            let packed = if self.pack {
                self.pods
                    .iter()
                    .filter(|p| p.takes_meetings(t) && p.load + m.participants <= target)
                    .max_by_key(|p| (p.load, std::cmp::Reverse(p.name.clone())))
                    .map(|p| p.name.clone())
            } else {
                None
            };
            let Some(p) = self
                .pods
                .iter_mut()
                .filter(|p| p.takes_meetings(t))
                .min_by_key(|p| (packed.as_ref() != Some(&p.name), p.load, p.name.clone()))
            else {
                // No pod to take it: every participant lands on nothing (never happens with min >= 1).
                self.out.joins_above_capacity += u64::from(m.participants);
                continue;
            };
            for _ in 0..m.participants {
                if p.load >= PER_POD {
                    self.out.joins_above_capacity += 1;
                }
                p.load += 1;
            }
            p.sessions += 1;
            self.live.entry(p.name.clone()).or_default().push((m.end, m.participants));
        }
    }

    fn account(&mut self, t: u32) {
        self.out.pod_s += self.pods.len() as u64;
        let target = PER_POD * TARGET_PERCENT / 100;
        self.out.participant_s_above_target +=
            self.pods.iter().map(|p| u64::from(p.load.saturating_sub(target))).sum::<u64>();
        let need = self.tenant.load[t as usize].div_ceil(target).max(MIN_PODS);
        self.out.ideal_pod_s += u64::from(need);
        if t.is_multiple_of(SAMPLE_EVERY_S) {
            self.out.pods.push(self.pods.len() as u32);
        }
    }
}

fn operator_spec(schedule: Schedule) -> FleetSpec {
    FleetSpec {
        min: MIN_PODS,
        max: MAX_PODS,
        capacity_per_pod: PER_POD,
        buffer: BUFFER,
        target_utilization_percent: TARGET_PERCENT,
        scale_down_delay_ms: 5 * 60_000,
        max_surge: 1,
        max_draining: 1,
        drain_timeout_ms: 3 * 3_600_000,
        warn_before_ms: 10 * 60_000,
        schedule,
    }
}

/// The windows a platform team would write for this tenant from last week's graphs, in minutes after
/// 08:30 rounded to `step` minutes (as a person writes a schedule: 5 in the model; on the control plane,
/// the compression, so that each window falls on a wall-clock minute): one over each wave's ramp, from
/// its first meetings to 25 minutes later (when the load itself holds the fleet up), ready for last
/// week's peak. (name, start, end, participants).
pub fn windows_for(tenant: &Tenant, step: u32) -> Vec<(&'static str, u32, u32, u32)> {
    ["first-wave", "second-wave"]
        .into_iter()
        .zip(tenant.waves.iter().zip(tenant.schedule_participants))
        .map(|(name, (&w, n))| {
            let start = w / 60 / step * step;
            (name, start, start + 25u32.div_ceil(step) * step, n)
        })
        .collect()
}

/// `HH:MM` of `m` minutes after 08:30.
fn local_time(m: u32) -> String {
    let minutes = 8 * 60 + 30 + m;
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The tenant's schedule in the model: weekdays, Paris time, windows rounded to 5 minutes.
fn schedule_for(tenant: &Tenant) -> Result<Schedule> {
    let days = [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri];
    let times: Vec<(&str, String, String, Option<i32>)> = windows_for(tenant, 5)
        .into_iter()
        .map(|(name, start, end, n)| (name, local_time(start), local_time(end), i32::try_from(n).ok()))
        .collect();
    let windows: Vec<WindowView<'_>> = times
        .iter()
        .map(|(name, start, end, n)| WindowView { name, days: &days, start, end, min_pods: None, min_load: *n })
        .collect();
    Ok(Schedule::parse("spec.autoscaling", "Europe/Paris", &windows)?)
}

fn play(system: System, tenant: &Tenant, p: &Params, day_ms: i64) -> Result<Outcome> {
    let mut m = Model::new(tenant, p.pack);
    let spec = operator_spec(if system == System::Scheduled { schedule_for(tenant)? } else { Schedule::default() });
    let hpa = HpaSpec::new(MIN_PODS, MAX_PODS, f64::from(TARGET_PERCENT), PER_POD);
    let mut stabiliser = Stabiliser::new(hpa.scale_down_window);
    let mut sample: Vec<f64> = Vec::new();
    let mut low_load_since = None;
    let mut next = 0usize;
    for t in 0..=HORIZON_S {
        let from = next;
        while next < tenant.meetings.len() && tenant.meetings[next].start <= t {
            next += 1;
        }
        m.meetings(t, &tenant.meetings[from..next]);
        match system {
            System::Chart => {
                // metrics-server samples the serving pods' CPU; the HPA syncs on its own 15 s clock.
                if t % hpa.resolution.as_secs() as u32 == 7 {
                    sample = m
                        .pods
                        .iter()
                        .filter(|p| t >= p.ready_at && !p.terminating)
                        .map(|p| 100.0 * f64::from(p.load) / f64::from(PER_POD))
                        .collect();
                }
                if t.is_multiple_of(hpa.sync.as_secs() as u32) {
                    let current = m.pods.iter().filter(|p| !p.terminating).count() as u32;
                    let rec = recommend(&hpa, current, &sample);
                    let want = stabiliser.stabilise(u64::from(t) * 1000, current, rec);
                    for _ in current..want {
                        m.create(t, p.startup_s);
                    }
                    // The ReplicaSet deletes not-ready pods first, then the newest.
                    let mut victims: Vec<&mut Pod> = m.pods.iter_mut().filter(|p| !p.terminating).collect();
                    victims.sort_by_key(|p| (t >= p.ready_at, std::cmp::Reverse(p.created)));
                    for v in victims.into_iter().take(current.saturating_sub(want) as usize) {
                        v.terminating = true;
                    }
                }
                // A terminating pod goes when its last meeting ends (its grace period outlasts the morning).
                let gone: Vec<String> =
                    m.pods.iter().filter(|p| p.terminating && p.sessions == 0).map(|p| p.name.clone()).collect();
                for g in gone {
                    m.remove(&g);
                }
            }
            System::Reactive | System::Scheduled if t.is_multiple_of(PLAN_EVERY_S) => {
                let now = day_ms + i64::from(t) * 1000;
                let snap = Snapshot {
                    now,
                    target_hash: "v1".into(),
                    pods: m
                        .pods
                        .iter()
                        .map(|q| {
                            let ready = t >= q.ready_at;
                            PodSnapshot {
                                name: q.name.clone(),
                                template_hash: "v1".into(),
                                phase: match q.draining_since {
                                    Some(s) => PodPhase::Draining { since: day_ms + i64::from(s) * 1000 },
                                    None if ready => PodPhase::Serving,
                                    None => PodPhase::Pending,
                                },
                                load: ready.then_some(q.load),
                                sessions: ready.then_some(q.sessions),
                                warned: false,
                                created: day_ms + i64::from(q.created) * 1000,
                                evacuate: false,
                                drain_requested: false,
                            }
                        })
                        .collect(),
                    low_load_since,
                    // What runtime/startup.rs measures: the pods' creation to Ready.
                    startup_lead_ms: Some(i64::from(p.startup_s) * 1000),
                };
                let plan = fleet::plan(&spec, &snap);
                low_load_since = plan.low_load_since;
                for a in plan.actions {
                    match a {
                        Action::Create { count } => (0..count).for_each(|_| m.create(t, p.startup_s)),
                        Action::Drain { pod, .. } => {
                            if let Some(q) = m.pods.iter_mut().find(|q| q.name == pod) {
                                q.draining_since = Some(t);
                            }
                        }
                        Action::Delete { pod, .. } | Action::ForceEnd { pod } => m.remove(&pod),
                        Action::Warn { .. } => {}
                    }
                }
            }
            _ => {}
        }
        m.account(t);
    }
    Ok(m.out)
}

/// Runs the three systems over the same tenants in model time, and returns the report.
pub fn run(p: &Params, command: String, commit: String, date: String) -> Result<PeakReport> {
    let tz = TimeZone::get("Europe/Paris")?;
    let day_ms = DAY.parse::<DateTime>()?.to_zoned(tz)?.timestamp().as_millisecond();
    let tenants = tenants(p);
    let participants: Vec<u32> = (0..=HORIZON_S)
        .step_by(SAMPLE_EVERY_S as usize)
        .map(|t| tenants.iter().map(|x| x.load[t as usize]).sum())
        .collect();
    let meetings: usize = tenants.iter().map(|t| t.meetings.len()).sum();
    let mut rows = Vec::new();
    let mut ideal = 0;
    for system in [System::Chart, System::Reactive, System::Scheduled] {
        let mut total = Outcome { pods: vec![0; participants.len()], ..Outcome::default() };
        for t in &tenants {
            let o = play(system, t, p, day_ms).with_context(|| system.label())?;
            total.joins_above_capacity += o.joins_above_capacity;
            total.participant_s_above_target += o.participant_s_above_target;
            total.pod_s += o.pod_s;
            total.ideal_pod_s += o.ideal_pod_s;
            total.cut += o.cut;
            for (a, b) in total.pods.iter_mut().zip(&o.pods) {
                *a += b;
            }
        }
        ideal = total.ideal_pod_s;
        rows.push(PeakRow {
            system: system.label().into(),
            joins_above_capacity: total.joins_above_capacity,
            participant_seconds_above_target: total.participant_s_above_target,
            peak_pods: total.pods.iter().copied().max().unwrap_or(0),
            pod_minutes: (total.pod_s as f64 / 60.0).round(),
            meetings_cut: total.cut,
            pods: total.pods,
        });
    }
    Ok(PeakReport {
        mode: "model".into(),
        command,
        commit,
        date,
        setting: format!(
            "the planners in model time (no wall clock, no apiserver): Monday 29 March 2027 (Paris, the day after the spring \
             change), {} tenants, {meetings} meetings, {} participants at the peak; seed {}; pod start-up {} s (stated); \
             pods of {PER_POD} participants, target {TARGET_PERCENT} %, min {MIN_PODS}, max {MAX_PODS}.",
            p.tenants,
            participants.iter().max().unwrap_or(&0),
            p.seed,
            p.startup_s
        ),
        compression: 1.0,
        start_hour: 8.5,
        sample_every_s: SAMPLE_EVERY_S,
        participants,
        ideal_pod_minutes: (ideal as f64 / 60.0).round(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_the_seeds() {
        let p = Params { seed: 7, tenants: 3, startup_s: 90, pack: false };
        let (a, b) = (tenants(&p), tenants(&p));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.load, y.load);
            assert_eq!(x.schedule_participants, y.schedule_participants);
            assert_eq!(x.waves, y.waves);
        }
        // Windows fall on their step (5 minutes in the model, the compression on the control plane), open
        // by each wave's first meetings and last at least 25 minutes.
        for step in [5, 10, 15, 20] {
            for t in &a {
                for ((_, start, end, n), &wave) in windows_for(t, step).iter().zip(&t.waves) {
                    assert!(start % step == 0 && end % step == 0 && end - start >= 25, "{step}: {start}..{end}");
                    assert!(start * 60 <= wave && wave < (start + step) * 60, "{step}: {start} for a wave at {wave} s");
                    assert!(*n > 0);
                }
            }
        }
        // Each tenant ramps from nothing at 08:30.
        assert!(a.iter().all(|t| t.load[0] == 0 && t.load.iter().max() > Some(&100)));
    }
}
