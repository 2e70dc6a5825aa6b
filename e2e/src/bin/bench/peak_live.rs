//! `bench peak` on the local control plane: the morning of `peak.rs` played by the real parts, three
//! systems at once, one namespace per tenant and system:
//! - the chart-style baseline: a Deployment per tenant (`visio_e2e::baseline`), run by the real
//!   Deployment and ReplicaSet controllers, scaled by the HPA's documented algorithm
//!   (`baseline::recommend` and its stabilisation) from the pods' load as metrics-server would sample it;
//! - the operator process (`e2e/bench` starts it) with a VisioCluster per tenant, reactive only;
//! - the same with a schedule window over each wave.
//!
//! kwok runs the pods and makes each one Ready a stated start-up time after it is scheduled (its Ready
//! stage is delayed, see `e2e/bench`); the operator measures that delay itself, as it would a real
//! pull and start. Time is compressed: one wall-clock second is `compression` seconds of the morning;
//! the operator's durations (scale-down delay, drain timeout, warning) and the HPA's clocks are divided
//! by it, and the schedule windows are written in wall-clock minutes, so the compression is also the
//! number of morning minutes a schedule's minute stands for.
//!
//! The harness plays what is not there: LiveKit's placement (each meeting on the least-loaded serving
//! pod, where it stays), the participants, and the in-pod agent (it writes `visio.io/load` of each
//! operator pod every `REPORT` of wall clock when it changed, `draining` once the pod is drained, and
//! ends a pod's meetings when the operator asks at a drain deadline). A meeting on a pod the API
//! deleted is cut (the chart's pods are kept in the books as Terminating until their meetings end:
//! its 5 h grace period outlasts the morning). Nothing is dialled; every loop is bounded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{tz::TimeZone, Timestamp, ToSpan};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Client;
use serde_json::{json, Value};
use visio_e2e::baseline::{self, recommend, HpaSpec, Stabiliser};
use visio_e2e::fixtures::{fleet_visio_cluster, OLD_VERSION, VC_NAME};
use visio_e2e::peak_report::{PeakReport, PeakRow};
use visio_operator::api::VisioCluster;
use visio_operator::pod_protocol::{render_load, Load, DRAIN_SINCE, END_SESSIONS, LOAD, SERVING};

use crate::peak::{
    tenants, windows_for, Params, System, Tenant, BUFFER, HORIZON_S, MAX_PODS, MIN_PODS, PER_POD, SAMPLE_EVERY_S,
    TARGET_PERCENT,
};

/// How often the harness looks, places meetings and accounts (wall clock).
const TICK: Duration = Duration::from_millis(250);
/// The agent's report interval (wall clock, like the real agent's 2 s; not compressed).
const REPORT: Duration = Duration::from_secs(2);
/// Patches in flight at once.
const IN_FLIGHT: usize = 24;

const SYSTEMS: [System; 3] = [System::Chart, System::Reactive, System::Scheduled];

fn tag(s: System) -> &'static str {
    match s {
        System::Chart => "chart",
        System::Reactive => "reactive",
        System::Scheduled => "sched",
    }
}

/// One pod in the books.
#[derive(Default)]
struct PodBook {
    name: String,
    /// (end, participants), seconds of the morning.
    meetings: Vec<(u32, u32)>,
    load: u32,
    ready: bool,
    /// Gone from the API (the chart's pods only: Terminating with their meetings).
    terminating: bool,
    reported: Option<(Load, Instant)>,
}

/// One tenant under one system.
struct Fleet<'a> {
    system: System,
    tenant: &'a Tenant,
    ns: String,
    pods: BTreeMap<String, PodBook>,
    next_meeting: usize,
    joins_above: u64,
    above_target_s: f64,
    pod_s: f64,
    cut: u64,
    ended_at_deadline: u64,
    /// The HPA (chart only): its sample, its stabiliser, the replicas it last set.
    sample: Vec<f64>,
    stabiliser: Stabiliser,
    replicas: u32,
}

/// What the harness reads of a pod from its watch.
struct Seen {
    uid: String,
    name: String,
    ready: bool,
    deleting: bool,
    drained: bool,
    end_sessions: bool,
}

fn seen(p: &Pod) -> Option<(String, Seen)> {
    let m = &p.metadata;
    let ann = m.annotations.clone().unwrap_or_default();
    let labels = m.labels.clone().unwrap_or_default();
    // The SFU pods only: the operator's (a tenant's Redis runs beside them) and the baseline's.
    let sfu = labels.get("app.kubernetes.io/component").is_some_and(|c| c == "sfu")
        || labels.get("app").is_some_and(|a| a == "livekit-baseline");
    if !sfu {
        return None;
    }
    let ready = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some((
        m.namespace.clone()?,
        Seen {
            uid: m.uid.clone()?,
            name: m.name.clone()?,
            ready,
            deleting: m.deletion_timestamp.is_some(),
            drained: ann.contains_key(DRAIN_SINCE) || labels.get(SERVING).is_some_and(|v| v == "false"),
            end_sessions: ann.contains_key(END_SESSIONS),
        },
    ))
}

/// A duration of the morning as the operator's spec writes it on the compressed clock.
fn compressed(seconds: u32, compression: u32) -> String {
    format!("{}s", seconds.div_ceil(compression))
}

/// The tenant's VisioCluster: pods of `PER_POD`, the model's bounds, target, buffer and delays
/// compressed; schedules added later (they are written in wall-clock minutes once the start is known).
fn visio_cluster(i: usize, compression: u32) -> Value {
    fleet_visio_cluster(
        &format!("Ministère {i:02} du Lundi matin"),
        json!({
            "sfu": {"capacity": {"participantsPerPod": PER_POD}, "replicas": {"min": MIN_PODS, "max": MAX_PODS}},
            "autoscaling": {"participantBuffer": BUFFER, "targetUtilizationPercent": TARGET_PERCENT,
                            "scaleDownDelay": compressed(300, compression), "timeZone": "Europe/Paris"},
            "upgrade": {"drainTimeout": compressed(3 * 3600, compression),
                        "warnBefore": compressed(600, compression), "maxSurge": 1, "maxDraining": 1}
        }),
    )
}

/// Runs the morning on the control plane and returns the report.
pub async fn run(p: &Params, compression: u32, command: String, commit: String, date: String) -> Result<PeakReport> {
    ensure!((2..=60).contains(&compression), "--compression between 2 and 60, not {compression}");
    ensure!(3 * 3600 / compression >= 60, "the drain timeout (3 h / compression) must be at least the CRD's 1 min");
    let client = visio_e2e::client().await?;
    let ts = tenants(p);
    let f = f64::from(compression);

    // The watch of every pod, before anything is created.
    let pods_api: Api<Pod> = Api::all(client.clone());
    let (store, writer) = reflector::store();
    let watch = tokio::spawn(
        watcher(pods_api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects()
            .for_each(|_| async {}),
    );
    store.wait_until_ready().await.context("the pod watch")?;

    // The tenants: a namespace per tenant and system, two pods each to start with.
    let mut fleets: Vec<Fleet<'_>> = Vec::new();
    for (i, t) in ts.iter().enumerate() {
        for system in SYSTEMS {
            let ns = format!("peak-{}-{i:02}", tag(system));
            visio_e2e::namespace(&client, &ns).await?;
            let vc = visio_cluster(i, compression);
            match system {
                System::Chart => {
                    baseline::deploy(&client, &ns, MIN_PODS, OLD_VERSION, &serde_json::from_value(vc)?).await?
                }
                _ => {
                    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), &ns);
                    visio_e2e::fixtures::apply(&vcs, "e2e-bench", &vc).await?;
                }
            }
            let hpa = hpa_spec(compression);
            fleets.push(Fleet {
                system,
                tenant: t,
                ns,
                pods: BTreeMap::new(),
                next_meeting: 0,
                joins_above: 0,
                above_target_s: 0.0,
                pod_s: 0.0,
                cut: 0,
                ended_at_deadline: 0,
                sample: Vec::new(),
                stabiliser: Stabiliser::new(hpa.scale_down_window),
                replicas: MIN_PODS,
            });
        }
    }
    // Every fleet at its min, Ready; the operator's pods measured (their start-up is the lead).
    let t0 = Instant::now();
    loop {
        let by_ns = by_namespace(&store);
        let ready = fleets
            .iter()
            .filter(|fl| by_ns.get(&fl.ns).is_some_and(|v| v.iter().filter(|s| s.ready).count() >= MIN_PODS as usize))
            .count();
        let leads = measured_leads(&client, &fleets).await?;
        if ready == fleets.len() && leads.len() == ts.len() * 2 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!(
                "after 300 s, {ready} of {} fleets at their min and Ready, {} operator leads measured",
                fleets.len(),
                leads.len()
            );
        }
        // Report the initial pods' (empty) load, as their agents would.
        report(&client, &mut fleets, &by_ns).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("bench peak: {} fleets at their min after {:.0} s", fleets.len(), t0.elapsed().as_secs_f64());

    // 08:30 of the morning is the next wall-clock minute at least 15 s away: the windows are written
    // in wall-clock minutes from it, and the run must not cross midnight in Paris.
    let paris = TimeZone::get("Europe/Paris")?;
    let now = Timestamp::now();
    let start_s = (now.as_second() + 15 + 59) / 60 * 60;
    let start = Timestamp::from_second(start_s)?;
    let end = start.checked_add((i64::from(HORIZON_S / compression) + 60).seconds())?;
    ensure!(
        start.to_zoned(paris.clone()).date() == end.to_zoned(paris.clone()).date(),
        "the run would cross midnight in Paris: try again after midnight"
    );
    let local = |m: u32| -> String {
        let real_min = i64::from(m / compression);
        let z = start.to_zoned(paris.clone()).checked_add(real_min.minutes()).expect("within the day");
        format!("{:02}:{:02}", z.hour(), z.minute())
    };
    for fl in fleets.iter().filter(|fl| fl.system == System::Scheduled) {
        let windows: Vec<Value> = windows_for(fl.tenant, compression)
            .into_iter()
            .map(|(name, s, e, n)| {
                json!({"name": name, "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
                       "start": local(s), "end": local(e), "minParticipants": n})
            })
            .collect();
        let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), &fl.ns);
        let patch = json!({"spec": {"autoscaling": {"schedules": windows}}});
        vcs.patch(VC_NAME, &PatchParams::default(), &Patch::Merge(&patch)).await.context("the schedules")?;
    }
    let wait = start_s - Timestamp::now().as_second();
    tokio::time::sleep(Duration::from_secs(u64::try_from(wait).unwrap_or(0))).await;
    eprintln!("bench peak: 08:30 of the morning is {} Paris; 1 s = {compression} s", local(0));

    // The morning.
    let began = Instant::now();
    let mut last_t = 0.0f64;
    let mut next_sample = 0u32;
    let mut next_hpa = 0u32;
    let mut participants = Vec::new();
    let mut pods_series: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    let mut late_ticks = 0u32;
    loop {
        let t_f = began.elapsed().as_secs_f64() * f;
        let t = (t_f as u32).min(HORIZON_S);
        let dt = t_f.min(f64::from(HORIZON_S)) - last_t;
        last_t = t_f.min(f64::from(HORIZON_S));
        let by_ns = by_namespace(&store);
        for fl in fleets.iter_mut() {
            fl.step(t, dt, by_ns.get(&fl.ns).map(Vec::as_slice).unwrap_or_default());
        }
        // The HPA: metrics-server's sample and the controller's sync, every 15 s of the morning.
        if t >= next_hpa {
            next_hpa = t + 15;
            for fl in fleets.iter_mut().filter(|fl| fl.system == System::Chart) {
                fl.hpa_step(&client, t, compression).await?;
            }
        }
        report(&client, &mut fleets, &by_ns).await;
        while next_sample <= t {
            participants.push(ts.iter().map(|x| x.load[next_sample as usize]).sum());
            for system in SYSTEMS {
                let n = fleets.iter().filter(|fl| fl.system == system).map(Fleet::pod_count).sum();
                pods_series.entry(system.label()).or_default().push(n);
            }
            next_sample += SAMPLE_EVERY_S;
        }
        if t >= HORIZON_S {
            break;
        }
        let spent = began.elapsed().as_secs_f64() * f - t_f;
        if spent > TICK.as_secs_f64() * f {
            late_ticks += 1;
        }
        tokio::time::sleep(TICK).await;
    }
    watch.abort();
    let leads = measured_leads(&client, &fleets).await?;
    let mut sorted = leads.clone();
    sorted.sort_unstable();
    let lead = sorted.get(sorted.len() / 2).copied().context("no measured start-up")?;
    let ideal_s: u64 = ts
        .iter()
        .map(|x| {
            (0..HORIZON_S as usize)
                .map(|s| u64::from(x.load[s].div_ceil(PER_POD * TARGET_PERCENT / 100).max(MIN_PODS)))
                .sum::<u64>()
        })
        .sum();
    let meetings: usize = ts.iter().map(|x| x.meetings.len()).sum();
    let rows = SYSTEMS
        .iter()
        .map(|&system| {
            let of: Vec<&Fleet<'_>> = fleets.iter().filter(|fl| fl.system == system).collect();
            let pods = pods_series.remove(system.label()).unwrap_or_default();
            PeakRow {
                system: system.label().into(),
                joins_above_capacity: of.iter().map(|fl| fl.joins_above).sum(),
                participant_seconds_above_target: of.iter().map(|fl| fl.above_target_s).sum::<f64>().round() as u64,
                peak_pods: pods.iter().copied().max().unwrap_or(0),
                pod_minutes: (of.iter().map(|fl| fl.pod_s).sum::<f64>() / 60.0).round(),
                meetings_cut: of.iter().map(|fl| fl.cut).sum(),
                pods,
            }
        })
        .collect();
    let deadline_ends: u64 = fleets.iter().map(|fl| fl.ended_at_deadline).sum();
    Ok(PeakReport {
        mode: "control-plane".into(),
        command,
        commit,
        date,
        setting: format!(
            "the local control plane (kube-apiserver, controllers, scheduler, kwok pods), the operator process and the \
             Deployments at once, time x{compression} (08:30-11:30 in {} min); {} tenants, {meetings} meetings, {} \
             participants at the peak; seed {}; kwok makes a pod Ready {:.1} s after it is scheduled ({} s of the \
             morning), the operator measured {lead} s (median over its {} fleets, x{compression} = {} s); pods of \
             {PER_POD} participants, target {TARGET_PERCENT} %, min {MIN_PODS}, max {MAX_PODS}; {deadline_ends} meetings \
             ended at a drain deadline; {late_ticks} harness ticks late.",
            HORIZON_S / compression / 60,
            p.tenants,
            participants.iter().max().unwrap_or(&0),
            p.seed,
            f64::from(p.startup_s) / f,
            p.startup_s,
            leads.len(),
            lead * i64::from(compression),
        ),
        compression: f,
        start_hour: 8.5,
        sample_every_s: SAMPLE_EVERY_S,
        participants,
        ideal_pod_minutes: (ideal_s as f64 / 60.0).round(),
        rows,
    })
}

fn hpa_spec(compression: u32) -> HpaSpec {
    let base = HpaSpec::new(MIN_PODS, MAX_PODS, f64::from(TARGET_PERCENT), PER_POD);
    HpaSpec { scale_down_window: base.scale_down_window / compression, ..base }
}

/// The pods the watch shows, by namespace.
fn by_namespace(store: &reflector::Store<Pod>) -> BTreeMap<String, Vec<Seen>> {
    let mut out: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
    for p in store.state() {
        if let Some((ns, s)) = seen(&p) {
            out.entry(ns).or_default().push(s);
        }
    }
    out
}

/// `status.autoscaling.startupLeadSeconds` of every operator fleet that has measured one.
async fn measured_leads(client: &Client, fleets: &[Fleet<'_>]) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for fl in fleets.iter().filter(|fl| fl.system != System::Chart) {
        let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), &fl.ns);
        let vc = vcs.get(VC_NAME).await?;
        if let Some(s) = vc.status.and_then(|s| s.autoscaling).and_then(|a| a.startup_lead_seconds) {
            out.push(s);
        }
    }
    Ok(out)
}

/// The agents' reports: each operator pod's load when it changed and `REPORT` has passed since the last.
async fn report(client: &Client, fleets: &mut [Fleet<'_>], by_ns: &BTreeMap<String, Vec<Seen>>) {
    let mut patches: Vec<(String, String, String)> = Vec::new();
    for fl in fleets.iter_mut().filter(|fl| fl.system != System::Chart) {
        let Some(seen) = by_ns.get(&fl.ns) else { continue };
        for s in seen.iter().filter(|s| s.ready && !s.deleting) {
            let book =
                fl.pods.entry(s.uid.clone()).or_insert_with(|| PodBook { name: s.name.clone(), ..PodBook::default() });
            let load = Load {
                participants: book.load,
                rooms: book.meetings.len() as u32,
                draining: s.drained,
                ..Load::default()
            };
            let due = match &book.reported {
                None => true,
                Some((last, at)) => *last != load && at.elapsed() >= REPORT,
            };
            if due {
                book.reported = Some((load, Instant::now()));
                patches.push((fl.ns.clone(), s.name.clone(), render_load(&load)));
            }
        }
    }
    futures::stream::iter(patches)
        .map(|(ns, name, load)| {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            async move {
                let patch = json!({"metadata": {"annotations": {LOAD: load}}});
                // A pod deleted meanwhile: nothing to report.
                let _ = pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
}

impl Fleet<'_> {
    /// Pods of the fleet: in the API (every state), and the chart's Terminating ones.
    fn pod_count(&self) -> u32 {
        self.pods.len() as u32
    }

    /// One tick at `t` (seconds of the morning), `dt` seconds of the morning after the last.
    fn step(&mut self, t: u32, dt: f64, seen: &[Seen]) {
        // The books follow the API: new pods in; pods gone are cut (the operator's) or Terminating (the chart's).
        for s in seen.iter().filter(|s| !s.deleting) {
            self.pods.entry(s.uid.clone()).or_insert_with(|| PodBook { name: s.name.clone(), ..PodBook::default() });
        }
        let alive: BTreeMap<&str, &Seen> = seen.iter().filter(|s| !s.deleting).map(|s| (s.uid.as_str(), s)).collect();
        for (uid, b) in self.pods.iter_mut() {
            b.ready = alive.get(uid.as_str()).is_some_and(|s| s.ready);
        }
        let gone: Vec<String> = self.pods.keys().filter(|uid| !alive.contains_key(uid.as_str())).cloned().collect();
        for uid in gone {
            if self.system == System::Chart {
                if let Some(b) = self.pods.get_mut(&uid) {
                    b.terminating = true;
                }
            } else if let Some(b) = self.pods.remove(&uid) {
                if !b.meetings.is_empty() {
                    eprintln!("bench peak: {} pod {} deleted with {} meetings", self.ns, b.name, b.meetings.len());
                }
                self.cut += b.meetings.len() as u64;
            }
        }
        // Meetings end; the operator's deadline ends them; the chart's Terminating pods go once empty.
        for (uid, b) in self.pods.iter_mut() {
            if alive.get(uid.as_str()).is_some_and(|s| s.end_sessions) {
                self.ended_at_deadline += b.meetings.len() as u64;
                b.meetings.clear();
            }
            b.meetings.retain(|&(end, _)| end > t);
            b.load = b.meetings.iter().map(|&(_, n)| n).sum();
        }
        self.pods.retain(|_, b| !(b.terminating && b.meetings.is_empty()));
        // New meetings on the least-loaded serving pod, as LiveKit places them.
        while let Some(m) = self.tenant.meetings.get(self.next_meeting).filter(|m| m.start <= t) {
            self.next_meeting += 1;
            let target = self
                .pods
                .iter_mut()
                .filter(|(uid, b)| !b.terminating && alive.get(uid.as_str()).is_some_and(|s| s.ready && !s.drained))
                .min_by_key(|(_, b)| (b.load, b.name.clone()));
            let Some((_, b)) = target else {
                self.joins_above += u64::from(m.participants);
                continue;
            };
            let free = PER_POD.saturating_sub(b.load);
            self.joins_above += u64::from(m.participants.saturating_sub(free));
            b.load += m.participants;
            b.meetings.push((m.end, m.participants));
        }
        // Accounting.
        let target = PER_POD * TARGET_PERCENT / 100;
        self.pod_s += self.pods.len() as f64 * dt;
        self.above_target_s += self.pods.values().map(|b| f64::from(b.load.saturating_sub(target))).sum::<f64>() * dt;
    }

    /// The chart's HPA: metrics-server's sample of the Ready pods' CPU (participants over capacity), then
    /// the controller's recommendation, stabilised, written to the Deployment.
    async fn hpa_step(&mut self, client: &Client, t: u32, compression: u32) -> Result<()> {
        let spec = hpa_spec(compression);
        self.sample = self
            .pods
            .values()
            .filter(|b| b.ready && !b.terminating)
            .map(|b| 100.0 * f64::from(b.load) / f64::from(PER_POD))
            .collect();
        let rec = recommend(&spec, self.replicas, &self.sample);
        // The stabiliser's clock is the morning's, in milliseconds of the compressed window.
        let want = self.stabiliser.stabilise(u64::from(t) * 1000 / u64::from(compression), self.replicas, rec);
        if want != self.replicas {
            let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), &self.ns);
            let patch = json!({"spec": {"replicas": want}});
            deployments.patch(baseline::NAME, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            self.replicas = want;
        }
        Ok(())
    }
}
