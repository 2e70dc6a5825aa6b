//! `bench fleet`: the SFU fleet scenarios of issue #4, each run twice at the same time in two
//! namespaces: once by the operator (a VisioCluster, the real agent beside every SFU) and once by the
//! chart-style baseline (`visio_e2e::baseline`: a Deployment with the chart's 5-hour grace period and a
//! CPU HPA). Both run the real livekit-server (the operator's config from its Secret; the baseline's
//! rendered by the same builder for the same tenant) with real participants, pods sized for 10
//! participants so that both systems' clients fit two cores. The same seeded workload drives both; the
//! table at the end puts them side by side: meetings cut, upgrade duration, peak pod count, scale-up
//! reaction time. Every run, with the fleet over time, is written to docs/bench/fleet.json
//! (VISIO_BENCH_DOC elsewhere), and the README's block and pictures are rendered from it
//! (`visio_e2e::bench::fleet`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};
use visio_e2e::baseline::{self, Hpa, HpaSpec};
use visio_e2e::bench::fleet::Run as Row;
use visio_e2e::bench::{Doc, Machine};
use visio_e2e::fixtures::{fleet_visio_cluster as visiocluster, NEW_VERSION, OLD_VERSION, VC_NAME};
use visio_e2e::fleet::{Churn, Fleet, FleetConfig, Join, StandinBackend, View, Workload};
use visio_e2e::{client, kubeconfig_path, namespace, unix_ms};
use visio_operator::api::VisioCluster;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Operator,
    Chart,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            System::Operator => "visio-operator",
            System::Chart => "chart baseline",
        }
    }
    fn tag(self) -> &'static str {
        match self {
            System::Operator => "op",
            System::Chart => "chart",
        }
    }
}

/// A fleet under test: the system, its harness, and (baseline) the HPA it may run.
struct Under {
    system: System,
    client: Client,
    ns: String,
    fleet: Fleet,
    hpa: Option<Hpa>,
}

impl Under {
    /// Deploys `pods` SFU pods (the operator: `spec` merged over the bench's VisioCluster) and starts
    /// the harness; waits until they serve.
    async fn start(system: System, scenario: &str, pods: u32, spec: Value, seed: u64) -> Result<Under> {
        let client = client().await?;
        let ns = format!("bench-{scenario}-{}", system.tag());
        let _ = visio_e2e::kubectl(&["delete", "namespace", &ns, "--ignore-not-found", "--timeout=120s"], None);
        namespace(&client, &ns).await?;
        let kubeconfig = kubeconfig_path()?;
        let mut spec = spec;
        visio_e2e::merge_patch(&mut spec, &json!({"sfu": {"capacity": {"participantsPerPod": PER_POD}}}));
        let vc = visiocluster("Ministère du Banc d'essai", spec);
        let cfg = match system {
            System::Operator => {
                let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), &ns);
                visio_e2e::fixtures::apply(&vcs, "e2e-bench", &vc).await?;
                FleetConfig {
                    seed,
                    deadline_ends_expected: true,
                    backend: StandinBackend::RealLivekit,
                    ..FleetConfig::new(&ns, VC_NAME, &kubeconfig)
                }
            }
            System::Chart => {
                baseline::deploy(&client, &ns, pods, OLD_VERSION, &serde_json::from_value(vc)?).await?;
                FleetConfig {
                    backend: StandinBackend::RealLivekit,
                    seed,
                    kubelet_grace: Some(baseline::CHART_GRACE),
                    baseline_selector: baseline::SELECTOR.into(),
                    ..FleetConfig::new(&ns, baseline::NAME, &kubeconfig)
                }
            }
        };
        let fleet = Fleet::start(client.clone(), cfg).await?;
        fleet.wait_serving(pods as usize, Duration::from_secs(120)).await?;
        Ok(Under { system, client, ns, fleet, hpa: None })
    }

    /// One step of the baseline's HPA, if it runs.
    async fn step(&mut self) -> Result<()> {
        if let Some(hpa) = self.hpa.as_mut() {
            hpa.step(&self.fleet).await?;
        }
        Ok(())
    }

    async fn upgrade(&self) -> Result<()> {
        match self.system {
            System::Operator => {
                let vcs: Api<VisioCluster> = Api::namespaced(self.client.clone(), &self.ns);
                let patch = json!({"spec": {"version": NEW_VERSION}});
                vcs.patch(VC_NAME, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
            System::Chart => baseline::set_version(&self.client, &self.ns, NEW_VERSION).await?,
        }
        Ok(())
    }

    /// Every pod runs the new template, `pods` of them, none draining, and no process of a deleted pod
    /// still runs (a Terminating pod, in a real cluster).
    fn upgraded(view: &View, old_hash: &str, pods: usize) -> bool {
        view.active().count() == pods
            && view.active().all(|p| p.template_hash != old_hash && p.running && p.drain_since.is_none())
            && view.lingering == 0
    }

    async fn finish(self, mut row: Row) -> Row {
        let outcome = self.fleet.stop().await;
        row.system = self.system.label().into();
        row.meetings = outcome.opened as usize;
        row.cut = outcome.cuts.len();
        row.ended_at_deadline = outcome.ended_at_deadline.len();
        row.peak_pods = outcome.peak_pods;
        row.timeline = outcome.timeline;
        for c in &outcome.cuts {
            eprintln!("[bench {}] cut: {c}", self.ns);
        }
        for p in &outcome.problems {
            eprintln!("[bench {}] harness problem: {p}", self.ns);
        }
        let _ = visio_e2e::kubectl(&["delete", "namespace", &self.ns, "--ignore-not-found", "--wait=false"], None);
        row
    }
}

/// Participants one SFU pod is sized for in every scenario (the HPA's CPU is participants over this).
const PER_POD: u32 = 10;

/// Scenario 1: load rises over the threshold (70 % of 10 participants on the only pod): time from the
/// meeting that crosses it to the new pod's creation.
async fn scale_up(system: System) -> Result<Row> {
    let spec = json!({"sfu": {"replicas": {"min": 1, "max": 3}},
                      "autoscaling": {"participantBuffer": 0, "targetUtilizationPercent": 70, "scaleDownDelay": "10m"}});
    let mut u = Under::start(system, "scaleup", 1, spec, 1).await?;
    if system == System::Chart {
        u.hpa = Some(Hpa::new(u.client.clone(), &u.ns, HpaSpec::new(1, 3, 70.0, PER_POD)));
    }
    let first = u.fleet.view().await.active().next().context("one pod")?.name.clone();
    for i in 0..6 {
        u.fleet.open(&format!("m{i}"), 1).await?;
    }
    // Let the systems settle under the threshold (a full HPA period and more), then cross it at an
    // instant that falls anywhere in the HPA's 15 s cycle, as a real load change would.
    let settle = Instant::now();
    let jitter = Duration::from_millis(unix_ms().rem_euclid(15_000) as u64);
    while settle.elapsed() < Duration::from_secs(20) + jitter {
        u.step().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 6..8 {
        u.fleet.open(&format!("m{i}"), 1).await?;
    }
    let crossed = unix_ms();
    let t0 = Instant::now();
    let reaction = loop {
        if t0.elapsed() > Duration::from_secs(180) {
            break None;
        }
        u.step().await?;
        let view = u.fleet.view().await;
        if let Some(p) = view.pods.values().find(|p| p.name != first) {
            break Some(p.first_seen_ms - crossed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let row = Row {
        scenario: "1. load rises".into(),
        setting: "8 of 10 participants on one pod, threshold 70 %".into(),
        measures_reaction: true,
        reaction_ms: reaction,
        action_ms: crossed,
        ..Row::default()
    };
    Ok(u.finish(row).await)
}

/// Scenario 2: load falls: three pods with 28 meetings (about 20 participants); autoscaling down to one pod;
/// 23 meetings end within 10 s, the other 5 within 30 s. Done when one pod is left and no process of a
/// removed pod still runs. The baseline's HPA gets the same 30 s scale-down window as the operator's
/// scaleDownDelay (its default is 300 s).
async fn scale_down(system: System) -> Result<Row> {
    let spec = json!({"sfu": {"replicas": {"min": 3, "max": 4}},
                      "autoscaling": {"participantBuffer": 0, "targetUtilizationPercent": 70, "scaleDownDelay": "30s"}});
    let mut u = Under::start(system, "scaledown", 3, spec, 2).await?;
    let mut work = Workload::new(2);
    let long = work.open_many(&u.fleet, "long", 28, (1, 1)).await?;
    match system {
        System::Operator => {
            let vcs: Api<VisioCluster> = Api::namespaced(u.client.clone(), &u.ns);
            let patch = json!({"spec": {"sfu": {"replicas": {"min": 1}}}});
            vcs.patch(VC_NAME, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        System::Chart => {
            let spec = HpaSpec { scale_down_window: Duration::from_secs(30), ..HpaSpec::new(1, 4, 70.0, PER_POD) };
            u.hpa = Some(Hpa::new(u.client.clone(), &u.ns, spec));
        }
    }
    let (t0, action_ms) = (Instant::now(), unix_ms());
    work.end_between(&long[5..], t0, Duration::ZERO, Duration::from_secs(10));
    work.end_between(&long[..5], t0, Duration::from_secs(10), Duration::from_secs(30));
    let mut at_one_in_api = None;
    let done = loop {
        if t0.elapsed() > Duration::from_secs(240) {
            break None;
        }
        work.step(&u.fleet).await?;
        u.step().await?;
        let view = u.fleet.view().await;
        if view.active().count() == 1 && at_one_in_api.is_none() {
            at_one_in_api = Some(t0.elapsed());
        }
        if view.active().count() == 1 && view.lingering == 0 && work.planned() == 0 {
            break Some(t0.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let row = Row {
        scenario: "2. load falls".into(),
        setting: "28 participants on 3 pods, then 1 pod; the HPA with a 30 s window".into(),
        done_s: done,
        note: format!(
            "the API showed 1 pod after {}",
            at_one_in_api.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()))
        ),
        action_ms,
        ..Row::default()
    };
    Ok(u.finish(row).await)
}

/// Scenario 3: upgrade of 10 pods holding 40 meetings that end at random within 35 s, new meetings arriving
/// two a second.
async fn upgrade(system: System) -> Result<Row> {
    const PODS: usize = 10;
    let spec = json!({"sfu": {"replicas": {"min": PODS, "max": PODS}},
                      "autoscaling": {"participantBuffer": 0, "targetUtilizationPercent": 100, "scaleDownDelay": "0s"},
                      "upgrade": {"maxSurge": 2, "maxDraining": 2}});
    let u = Under::start(system, "upgrade", PODS as u32, spec, 3).await?;
    let old_hash = u.fleet.view().await.only_hash()?;
    let mut work = Workload::new(3);
    let first = work.open_many(&u.fleet, "meeting", 40, (1, 2)).await?;
    let (t0, action_ms) = (Instant::now(), unix_ms());
    u.upgrade().await?;
    work.end_between(&first, t0, Duration::from_secs(3), Duration::from_secs(35));
    work.churn(Some(Churn {
        prefix: "later".into(),
        every: Duration::from_millis(500),
        participants: (1, 2),
        lasting: (Duration::from_secs(2), Duration::from_secs(12)),
    }));
    let mut rollout_said_done = None;
    let done = loop {
        if t0.elapsed() > Duration::from_secs(240) {
            break None;
        }
        work.step(&u.fleet).await?;
        let view = u.fleet.view().await;
        if system == System::Chart
            && rollout_said_done.is_none()
            && baseline::rollout_complete(&u.client, &u.ns).await.unwrap_or(false)
        {
            rollout_said_done = Some(t0.elapsed());
        }
        if Under::upgraded(&view, &old_hash, PODS) {
            break Some(t0.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    work.churn(None);
    work.close_all(&u.fleet).await?;
    let note = match rollout_said_done {
        Some(d) => format!("`kubectl rollout status` said done after {:.1} s", d.as_secs_f64()),
        None => String::new(),
    };
    let row = Row {
        scenario: "3. upgrade".into(),
        setting: "10 pods, 40 meetings + 2/s, maxSurge 2, maxDraining 2".into(),
        done_s: done,
        note,
        action_ms,
        ..Row::default()
    };
    Ok(u.finish(row).await)
}

/// Scenario 4: a meeting that never ends, on a fleet of two pods being upgraded. Bounded at 150 s.
async fn never_ending(system: System) -> Result<Row> {
    let spec = json!({"sfu": {"replicas": {"min": 2, "max": 2}},
                      "autoscaling": {"participantBuffer": 0, "targetUtilizationPercent": 100, "scaleDownDelay": "0s"},
                      "upgrade": {"maxSurge": 1, "maxDraining": 1}});
    let u = Under::start(system, "forever", 2, spec, 4).await?;
    let old_hash = u.fleet.view().await.only_hash()?;
    let Join::Joined(_) = u.fleet.open("forever", 3).await? else { bail!("no pod for the meeting") };
    let mut work = Workload::new(4);
    let short = work.open_many(&u.fleet, "short", 3, (2, 3)).await?;
    let (t0, action_ms) = (Instant::now(), unix_ms());
    u.upgrade().await?;
    work.end_between(&short, t0, Duration::from_secs(2), Duration::from_secs(6));
    let done = loop {
        if t0.elapsed() > Duration::from_secs(150) {
            break None;
        }
        work.step(&u.fleet).await?;
        if Under::upgraded(&u.fleet.view().await, &old_hash, 2) {
            break Some(t0.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let view = u.fleet.view().await;
    let fate = match view.meetings.get("forever").map(|m| m.status.clone()) {
        Some(visio_e2e::fleet::MeetingStatus::EndedAtDeadline) => {
            "warned 20 s ahead, ended at the 60 s drain deadline".to_string()
        }
        Some(visio_e2e::fleet::MeetingStatus::Open) if view.lingering > 0 => {
            "still on a Terminating pod: cut without warning when the 5 h grace ends".to_string()
        }
        other => format!("{other:?}"),
    };
    let row = Row {
        scenario: "4. upgrade with a never-ending meeting".into(),
        setting: "2 pods, drain deadline 60 s".into(),
        done_s: done,
        note: fate,
        action_ms,
        ..Row::default()
    };
    Ok(u.finish(row).await)
}

async fn both<F, Fut>(scenario: F) -> Result<Vec<Row>>
where
    F: Fn(System) -> Fut,
    Fut: std::future::Future<Output = Result<Row>>,
{
    let (a, b) = tokio::join!(scenario(System::Operator), scenario(System::Chart));
    Ok(vec![a.context("visio-operator")?, b.context("chart baseline")?])
}

/// Runs every scenario `runs` times, writes every run to the results document and renders the README's
/// block and pictures from it (medians; cuts and peaks: the worst run).
pub async fn run(runs: usize) -> Result<()> {
    let env = |k: &str| std::env::var(k).with_context(|| format!("{k} (set by e2e/bench)"));
    let mut doc = Doc {
        bench: "fleet".into(),
        commit: env("VISIO_BENCH_COMMIT")?,
        date: env("VISIO_BENCH_DATE")?,
        command: env("VISIO_BENCH_COMMAND")?,
        machine: Machine::read()?,
        load: format!(
            "load average at the start {}",
            std::fs::read_to_string("/proc/loadavg")?.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        ),
        runs: Vec::new(),
    };
    let started = Instant::now();
    for n in 1..=runs {
        eprintln!("bench fleet: run {n} of {runs}");
        for mut row in [both(scale_up).await?, both(scale_down).await?, both(upgrade).await?, both(never_ending).await?]
            .into_iter()
            .flatten()
        {
            row.repetition = n;
            doc.runs.push(row);
        }
    }
    let repo = visio_e2e::repo();
    let path = std::env::var_os("VISIO_BENCH_DOC").map_or_else(|| repo.join("docs/bench/fleet.json"), Into::into);
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("\n{}", visio_e2e::bench::fleet::markdown("fleet", &doc)?);
    println!("(bench fleet took {:.0} s; written: {})", started.elapsed().as_secs_f64(), path.display());
    if path.starts_with(repo.join("docs/bench")) {
        visio_e2e::bench::write_all(&repo)?;
        println!("rendered: the README's block and the pictures (docs/bench/fleet-*.svg)");
    }
    Ok(())
}
