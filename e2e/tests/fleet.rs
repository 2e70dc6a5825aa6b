//! Issue #4 on the local control plane: the fleet autoscales and upgrades without cutting a meeting.
//!
//! SFU load comes from processes run on loopback by the harness (`visio_e2e::fleet`, backend
//! `RealLivekit`): for every SFU pod kwok runs, the real `livekit-server` with the config the operator
//! wrote into the tenant's Secret (all pods of a tenant sharing one Redis, as in a cluster) and the real
//! `visio-operator agent` beside it, writing that pod's load and carrying out its drain marks. Meetings
//! are rooms of real participants (LiveKit's Go SDK, WebRTC over loopback); a meeting is cut when any
//! participant is disconnected without asking, or its pod or its LiveKit goes while it is open (see the
//! harness's doc).
//!
//! Pods hold 10 participants here (`participantsPerPod: 10`) and meetings have one to a few
//! participants: the same fleet decisions as with hundreds, within what two cores carry as real
//! WebRTC clients.
//!
//! 1. load rises: the fleet grows within seconds of the agent reporting it;
//! 2. load falls: the fleet shrinks to `min`, deleting only empty pods;
//! 3. a version upgrade of 10 pods holding 40 meetings that end at random (seeded) times while more
//!    arrive: no meeting cut, the upgrade completes, the pod count stays within desired + maxSurge;
//! 4. a meeting that never ends: warned, then ended at the drain deadline, and the upgrade completes;
//! 5. the operator SIGKILLed in the middle of an upgrade (in a control plane of its own, with its own
//!    operator process): the restarted operator finishes it without cutting a meeting;
//! 6. the API server, then etcd, down for 30 s in the middle of an upgrade: no meeting cut;
//! 7. a node drain (own control plane): the idle pod is evicted, the busy pod's evictions are
//!    refused, and the operator moves it off the cordoned node by its own drain.
//!
//! Each scenario has its own namespace, deleted (and waited for) at the end so no drain of this file
//! is still running when the next test binary counts the operator's writes (`idle.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use visio_e2e::fixtures::{fleet_visio_cluster as visiocluster, NEW_VERSION as NEW, OLD_VERSION as OLD, VC_NAME as VC};
use visio_e2e::fleet::{Binaries, Churn, Fleet, FleetConfig, Join, MeetingStatus, StandinBackend, Upgrade, Workload};
use visio_e2e::own::OwnCluster;
use visio_e2e::ports;
use visio_e2e::{client, events, kubeconfig_path, namespace, Tenant};
use visio_e2e::{client_at, unix_ms};
use visio_operator::api::VisioCluster;
use visio_operator::pod_protocol::{self, Load};

/// The harness settings of every scenario: the real LiveKit.
fn real(cfg: FleetConfig) -> FleetConfig {
    FleetConfig { backend: StandinBackend::RealLivekit, ..cfg }
}

async fn apply(client: &Client, ns: &str, vc: &Value) -> Result<()> {
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), ns);
    visio_e2e::fixtures::apply(&vcs, "e2e-fleet", vc).await?;
    Ok(())
}

/// What a watch on the SFU pods of a namespace delivered: (when, pod, its load annotation).
type Seen = Arc<Mutex<Vec<(i64, String, Option<Load>)>>>;

/// Watches the SFU pods of `ns` until the handle is aborted (or the test's runtime ends).
fn watch_pods(client: &Client, ns: &str) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let config = watcher::Config::default().labels("app.kubernetes.io/component=sfu");
        let mut stream = watcher(api, config).applied_objects().boxed();
        while let Some(event) = stream.next().await {
            if let Ok(p) = event {
                let load = p
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(pod_protocol::LOAD))
                    .and_then(|t| pod_protocol::parse_load(t).ok());
                if let Ok(mut seen) = out.lock() {
                    seen.push((unix_ms(), p.name_any(), load));
                }
            }
        }
    });
    (seen, task)
}

fn summary(name: &str, lines: &[String]) {
    eprintln!("=== fleet scenario: {name}");
    for l in lines {
        eprintln!("    {l}");
    }
}

fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

// ---------------------------------------------------------------------------------------------
// 1. Scale-up

#[tokio::test]
async fn rising_load_adds_a_pod_within_seconds() -> Result<()> {
    let ns = "e2e-fleet-scaleup";
    let client = client().await?;
    let _tenant = Tenant::create(&client, ns).await?;
    // One pod holds 10 participants and should run at 70 % at most: a second pod from 8.
    let vc = visiocluster(
        "Ministère de l'Agriculture",
        json!({"sfu": {"replicas": {"min": 1, "max": 3}, "capacity": {"participantsPerPod": 10}},
               "autoscaling": {"participantBuffer": 0, "targetUtilizationPercent": 70, "scaleDownDelay": "10m"}}),
    );
    apply(&client, ns, &vc).await?;
    let fleet = Fleet::start(client.clone(), real(FleetConfig::new(ns, VC, &kubeconfig_path()?))).await?;
    fleet.wait_serving(1, Duration::from_secs(90)).await?;
    let first = fleet.view().await.active().next().context("one pod")?.name.clone();

    // 6 participants: under the threshold, and the fleet stays as it is.
    for i in 0..6 {
        ensure!(fleet.open(&format!("m{i}"), 1).await? == Join::Joined(first.clone()), "m{i} on {first}");
    }
    fleet
        .wait("the agent reporting 6 participants", Duration::from_secs(30), |v| {
            v.pods.get(&first).and_then(|p| p.load).is_some_and(|l| l.participants == 6).then_some(())
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(fleet.view().await.pods.len() == 1, "no scale-up under the threshold");

    // 8 participants: over it. Timed by a watch on the pods, from the event that shows the
    // agent's report to the one that shows the new pod (and by its creationTimestamp).
    let (events, watch) = watch_pods(&client, ns);
    for i in 6..8 {
        ensure!(fleet.open(&format!("m{i}"), 1).await? == Join::Joined(first.clone()), "m{i} on {first}");
    }
    let second = fleet
        .wait("a second SFU pod", Duration::from_secs(30), |v| v.pods.values().find(|p| p.name != first).cloned())
        .await?;
    watch.abort();
    let seen = events.lock().map(|e| e.clone()).unwrap_or_default();
    let crossed = seen
        .iter()
        .find(|(_, pod, load)| *pod == first && load.is_some_and(|l| l.participants > 7))
        .map(|(at, _, _)| *at)
        .context("the watch saw the agent's report")?;
    let created = seen.iter().find(|(_, pod, _)| *pod == second.name).map(|(at, _, _)| *at).context("watch")?;
    let by_watch = created - crossed;
    let by_creation = second.created_ms.context("creationTimestamp")? - crossed;

    // The new pod serves, and the fleet stays at two (no runaway towards max).
    fleet.wait_serving(2, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let view = fleet.view().await;
    ensure!(view.pods.len() == 2, "the fleet stays at two pods: {:?}", view.pods.keys());
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), ns);
    let desired = vcs.get(VC).await?.status.map(|s| s.sfu.desired);
    ensure!(desired == Some(2), "desired {desired:?}");
    for i in 0..8 {
        fleet.close(&format!("m{i}")).await?;
    }
    let outcome = fleet.stop().await;
    summary(
        "scale-up",
        &[
            "threshold: 70 % of 10 participants per pod; the agent reported 8 (real participants) on the only pod"
                .into(),
            format!(
                "new pod {} seen by a pod watch {by_watch} ms after the report; its creationTimestamp (whole \
                 seconds) is {} s after the report's second",
                second.name,
                second.created_ms.unwrap_or_default() / 1000 - crossed / 1000
            ),
            format!("meetings: {} opened, {} cut", outcome.opened, outcome.cuts.len()),
        ],
    );
    ensure!(outcome.cuts.is_empty(), "meetings cut: {:#?}", outcome.cuts);
    ensure!(outcome.problems.is_empty(), "harness problems: {:#?}", outcome.problems);
    ensure!(by_watch <= 5_000, "the new pod came {} after the load crossed the threshold", seconds(by_watch));
    ensure!(
        by_creation <= 5_000,
        "the new pod was created {} after the load crossed the threshold",
        seconds(by_creation)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Scale-down

#[tokio::test]
async fn falling_load_shrinks_the_fleet_deleting_only_empty_pods() -> Result<()> {
    let ns = "e2e-fleet-scaledown";
    let client = client().await?;
    let _tenant = Tenant::create(&client, ns).await?;
    let vc = visiocluster(
        "Ministère de la Transition écologique",
        json!({"sfu": {"replicas": {"min": 1, "max": 4}, "capacity": {"participantsPerPod": 10}},
               "autoscaling": {"participantBuffer": 0, "targetUtilizationPercent": 70, "scaleDownDelay": "5s"}}),
    );
    apply(&client, ns, &vc).await?;
    let fleet =
        Fleet::start(client.clone(), real(FleetConfig { seed: 2, ..FleetConfig::new(ns, VC, &kubeconfig_path()?) }))
            .await?;
    fleet.wait_serving(1, Duration::from_secs(90)).await?;
    let mut work = Workload::new(2);

    // Load rises: 28 meetings of one participant (28: four pods at 70 %), opened as pods arrive.
    let mut long = Vec::new();
    let rise = Instant::now();
    while long.len() < 28 {
        ensure!(rise.elapsed() < Duration::from_secs(120), "could only place {} meetings", long.len());
        let name = format!("long-{}", long.len());
        match fleet.open(&name, 1).await? {
            Join::Joined(_) => long.push(name),
            Join::NoServingPod => tokio::time::sleep(Duration::from_millis(500)).await,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fleet.wait_serving(4, Duration::from_secs(90)).await?;

    // Load falls: 23 meetings end within 10 s, the last 5 between 10 s and 30 s; meanwhile short
    // meetings keep arriving (one a second for 25 s, 2 to 6 s long each).
    let fall = Instant::now();
    let fall_ms = unix_ms();
    work.end_between(&long[5..], fall, Duration::ZERO, Duration::from_secs(10));
    work.end_between(&long[..5], fall, Duration::from_secs(10), Duration::from_secs(30));
    work.churn(Some(Churn {
        prefix: "short".into(),
        every: Duration::from_secs(1),
        participants: (1, 1),
        lasting: (Duration::from_secs(2), Duration::from_secs(6)),
    }));
    work.run_for(&fleet, Duration::from_secs(25)).await?;
    work.churn(None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while work.planned() > 0 && Instant::now() < deadline {
        work.step(&fleet).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(work.planned() == 0, "{} meetings still planned", work.planned());

    // The fleet shrinks to min.
    fleet
        .wait("the fleet back to one serving pod", Duration::from_secs(90), |v| {
            (v.pods.len() == 1 && v.active().all(|p| p.serving && p.drain_since.is_none())).then_some(())
        })
        .await?;
    let shrunk = unix_ms() - fall_ms;
    let outcome = fleet.stop().await;
    let forced: usize = outcome.forced_ends.values().map(Vec::len).sum();
    let warned: usize = outcome.warnings.values().map(Vec::len).sum();
    let passed = events(&client, ns, "DrainDeadlinePassed").await?.len();
    summary(
        "scale-down",
        &[
            format!("fleet 1 -> {} pods under 28 participants (10 per pod), back to 1 {} after the load fell", outcome.peak_pods, seconds(shrunk)),
            format!(
                "meetings: {} opened, {} closed by their participants, {} cut, {} joins refused by a draining pod (retried)",
                outcome.opened,
                outcome.closed,
                outcome.cuts.len(),
                outcome.refused_joins
            ),
            format!("pods stopped (deleted): {}; warnings sent: {warned}; sessions ended by force: {forced}", outcome.pods_stopped),
        ],
    );
    ensure!(outcome.cuts.is_empty(), "meetings cut: {:#?}", outcome.cuts);
    ensure!(outcome.problems.is_empty(), "harness problems: {:#?}", outcome.problems);
    ensure!(forced == 0 && passed == 0, "a scale-down waited for meetings to end, it never ended one");
    ensure!(outcome.peak_pods <= 4, "peak {} pods over max 4", outcome.peak_pods);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Upgrade

#[tokio::test]
async fn upgrading_ten_pods_holding_meetings_cuts_none() -> Result<()> {
    let ns = "e2e-fleet-upgrade";
    let client = client().await?;
    let _tenant = Tenant::create(&client, ns).await?;
    const PODS: usize = 10;
    const SURGE: usize = 2;
    let vc = visiocluster(
        "Ministère de l'Éducation nationale",
        json!({"sfu": {"replicas": {"min": PODS, "max": PODS}, "capacity": {"participantsPerPod": 10}},
               "autoscaling": {"participantBuffer": 0, "targetUtilizationPercent": 100, "scaleDownDelay": "0s"},
               "upgrade": {"maxSurge": SURGE, "maxDraining": 2}}),
    );
    apply(&client, ns, &vc).await?;
    let fleet =
        Fleet::start(client.clone(), real(FleetConfig { seed: 3, ..FleetConfig::new(ns, VC, &kubeconfig_path()?) }))
            .await?;
    fleet.wait_serving(PODS, Duration::from_secs(120)).await?;
    let old_hash = fleet.view().await.only_hash()?;
    let mut work = Workload::new(3);
    let first = work.open_many(&fleet, "meeting", 40, (1, 2)).await?;
    let per_pod = fleet.view().await.participants_by_pod();
    ensure!(per_pod.len() == PODS, "meetings on every pod: {per_pod:?}");

    // The upgrade, while the 40 meetings (about 60 participants: every pod holds several) end at
    // random times within 35 s and new meetings keep arriving (two a second, 2 to 12 s long).
    let t0 = Instant::now();
    let upgrade = Upgrade { client: &client, ns, old_hash: &old_hash, pods: PODS, version: NEW };
    upgrade.start().await?;
    work.end_between(&first, t0, Duration::from_secs(3), Duration::from_secs(35));
    work.churn(Some(Churn {
        prefix: "later".into(),
        every: Duration::from_millis(500),
        participants: (1, 2),
        lasting: (Duration::from_secs(2), Duration::from_secs(12)),
    }));
    let took = upgrade.wait(&mut work, &fleet, t0, Duration::from_secs(240)).await?;
    work.close_all(&fleet).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcome = fleet.stop().await;
    let forced: usize = outcome.forced_ends.values().map(Vec::len).sum();
    summary(
        "upgrade",
        &[
            format!("{PODS} pods {OLD} -> {NEW} (maxSurge {SURGE}, maxDraining 2) in {:.1} s", took.as_secs_f64()),
            format!(
                "meetings: {} opened (40 before the upgrade), {} closed, {} cut, {} joins refused by a draining pod (retried), {} found no pod",
                outcome.opened,
                outcome.closed,
                outcome.cuts.len(),
                outcome.refused_joins,
                outcome.no_serving_pod
            ),
            format!("peak pod count {} (limit {}), {} pods run in all", outcome.peak_pods, PODS + SURGE, outcome.pods_started),
            format!("sessions ended by force: {forced}"),
        ],
    );
    ensure!(outcome.cuts.is_empty(), "meetings cut: {:#?}", outcome.cuts);
    ensure!(outcome.problems.is_empty(), "harness problems: {:#?}", outcome.problems);
    ensure!(outcome.opened >= 60, "40 meetings before the upgrade and at least 20 more during it");
    ensure!(forced == 0, "no meeting was ended by force");
    ensure!(
        outcome.peak_pods <= PODS + SURGE,
        "peak {} pods over desired + maxSurge: {:#?}",
        outcome.peak_pods,
        outcome.peak_listing
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. A meeting that never ends

#[tokio::test]
async fn a_meeting_that_never_ends_is_warned_then_ended_at_the_deadline() -> Result<()> {
    let ns = "e2e-fleet-deadline";
    let client = client().await?;
    let _tenant = Tenant::create(&client, ns).await?;
    let vc = visiocluster(
        "Ministère de la Mer",
        json!({"sfu": {"replicas": {"min": 2, "max": 2}},
               "autoscaling": {"participantBuffer": 0, "targetUtilizationPercent": 100, "scaleDownDelay": "0s"},
               "upgrade": {"maxSurge": 1, "maxDraining": 1}}),
    );
    apply(&client, ns, &vc).await?;
    let cfg = real(FleetConfig { deadline_ends_expected: true, ..FleetConfig::new(ns, VC, &kubeconfig_path()?) });
    let fleet = Fleet::start(client.clone(), cfg).await?;
    fleet.wait_serving(2, Duration::from_secs(90)).await?;
    let old_hash = fleet.view().await.only_hash()?;
    let Join::Joined(pod) = fleet.open("forever", 5).await? else { anyhow::bail!("no pod for the meeting") };
    let mut work = Workload::new(4);
    let short = work.open_many(&fleet, "short", 3, (2, 3)).await?;

    let t0 = Instant::now();
    let upgrade = Upgrade { client: &client, ns, old_hash: &old_hash, pods: 2, version: NEW };
    upgrade.start().await?;
    work.end_between(&short, t0, Duration::from_secs(2), Duration::from_secs(6));
    // The pod holding the meeting drains, and is warned 20 s before its deadline.
    let p = work
        .run_until(&fleet, &format!("pod {pod} warned (120 s)"), t0 + Duration::from_secs(120), |v| {
            v.pods.get(&pod).filter(|p| p.warn_deadline.is_some()).cloned()
        })
        .await?;
    let since = p.drain_since.clone().context("a warned pod drains")?;
    let warn_deadline = p.warn_deadline.clone().context("warn deadline")?;
    let since_ms = since.parse::<k8s_openapi::jiff::Timestamp>()?.as_millisecond();
    let deadline_ms = warn_deadline.parse::<k8s_openapi::jiff::Timestamp>()?.as_millisecond();
    ensure!(deadline_ms - since_ms == 60_000, "deadline {warn_deadline} is drainTimeout after {since}");
    let warned_at = unix_ms();
    ensure!(deadline_ms - warned_at <= 21_000, "warned {} before the deadline", seconds(deadline_ms - warned_at));

    // The stand-in received the warning, with the deadline.
    let packet = fleet
        .wait("the drain warning on the meeting's SFU", Duration::from_secs(15), |v| {
            v.outcome.warnings.get(&pod).and_then(|w| w.iter().find(|d| d["room"] == "forever")).cloned()
        })
        .await?;
    let data: Value = serde_json::from_str(packet["data"].as_str().unwrap_or_default())?;
    ensure!(packet["topic"] == "visio.system", "{packet}");
    ensure!(data == json!({"type": "visio.drain-warning", "deadline": warn_deadline}), "{data}");
    let warning_seen = unix_ms();
    visio_e2e::wait_for("Event DrainDeadlineNear", Duration::from_secs(15), || async {
        Ok((!events(&client, ns, "DrainDeadlineNear").await?.is_empty()).then_some(()))
    })
    .await?;

    // At the deadline its session is ended (not before), and the upgrade completes.
    let (_, _, ended_ms) = fleet
        .wait("the meeting ended at the drain deadline", Duration::from_secs(90), |v| {
            v.outcome.ended_at_deadline.iter().find(|(m, _, _)| m == "forever").cloned()
        })
        .await?;
    visio_e2e::wait_for("Event DrainDeadlinePassed", Duration::from_secs(15), || async {
        Ok((!events(&client, ns, "DrainDeadlinePassed").await?.is_empty()).then_some(()))
    })
    .await?;
    // Done within 120 s of the forced end.
    upgrade.wait(&mut work, &fleet, Instant::now(), Duration::from_secs(120)).await?;
    let took = t0.elapsed();
    let outcome = fleet.stop().await;
    summary(
        "never-ending meeting",
        &[
            format!(
                "pod {pod} drained at {since}, warned {} before its deadline {warn_deadline}",
                seconds(deadline_ms - warned_at)
            ),
            format!("warning received by the SFU {} before the deadline", seconds(deadline_ms - warning_seen)),
            format!(
                "session ended {} after the deadline; upgrade done in {:.1} s",
                seconds(ended_ms - deadline_ms),
                took.as_secs_f64()
            ),
            format!(
                "meetings: {} opened, {} cut, {} ended at the deadline",
                outcome.opened,
                outcome.cuts.len(),
                outcome.ended_at_deadline.len()
            ),
        ],
    );
    ensure!(outcome.cuts.is_empty(), "meetings cut: {:#?}", outcome.cuts);
    ensure!(outcome.problems.is_empty(), "harness problems: {:#?}", outcome.problems);
    ensure!(ended_ms >= deadline_ms, "ended {} before the deadline", seconds(deadline_ms - ended_ms));
    ensure!(ended_ms - deadline_ms <= 10_000, "ended {} after the deadline", seconds(ended_ms - deadline_ms));
    ensure!(outcome.ended_at_deadline.len() == 1, "only the never-ending meeting: {:?}", outcome.ended_at_deadline);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. The operator killed in the middle of an upgrade

#[tokio::test]
async fn an_operator_killed_mid_upgrade_finishes_it_after_restart() -> Result<()> {
    const PODS: usize = 6;
    let ns = "e2e-fleet-restart";
    let mut cluster = OwnCluster::up(ports::FLEET_RESTART)?;
    let bin = Binaries::find()?.operator;
    cluster.start_operator(&bin, "fleet-restart-1")?;
    let result = killed_mid_upgrade(&mut cluster, ns, PODS).await;
    cluster.on_failure(result)
}

/// On a control plane of the test's own: a fleet of exactly `pods` SFU pods (surge and drain one at a
/// time), its harness started, and every pod serving.
async fn serving_fleet(
    cluster: &OwnCluster,
    ns: &str,
    display: &str,
    pods: usize,
    seed: u64,
) -> Result<(Client, Fleet)> {
    let client = client_at(&cluster.kubeconfig).await?;
    namespace(&client, ns).await?;
    let vc = visiocluster(
        display,
        json!({"sfu": {"replicas": {"min": pods, "max": pods}, "capacity": {"participantsPerPod": 10}},
               "autoscaling": {"participantBuffer": 0, "targetUtilizationPercent": 100, "scaleDownDelay": "0s"},
               "upgrade": {"maxSurge": 1, "maxDraining": 1}}),
    );
    apply(&client, ns, &vc).await?;
    let fleet =
        Fleet::start(client.clone(), real(FleetConfig { seed, ..FleetConfig::new(ns, VC, &cluster.kubeconfig) }))
            .await?;
    fleet.wait_serving(pods, Duration::from_secs(120)).await?;
    Ok((client, fleet))
}

async fn killed_mid_upgrade(cluster: &mut OwnCluster, ns: &str, pods: usize) -> Result<()> {
    let (client, fleet) = serving_fleet(cluster, ns, "Ministère de l'Intérieur", pods, 5).await?;
    let old_hash = fleet.view().await.only_hash()?;
    let mut work = Workload::new(5);
    let first = work.open_many(&fleet, "meeting", 24, (1, 2)).await?;

    let t0 = Instant::now();
    let t0_ms = unix_ms();
    let upgrade = Upgrade { client: &client, ns, old_hash: &old_hash, pods, version: NEW };
    upgrade.start().await?;
    work.end_between(&first, t0, Duration::from_secs(4), Duration::from_secs(40));
    work.churn(Some(Churn {
        prefix: "later".into(),
        every: Duration::from_secs(1),
        participants: (1, 2),
        lasting: (Duration::from_secs(2), Duration::from_secs(8)),
    }));

    // Mid-upgrade: old pods already replaced, one draining, one still serving. Then SIGKILL.
    work.run_until(&fleet, "the upgrade under way", t0 + Duration::from_secs(90), |v| {
        let old_left = v.active().filter(|p| p.template_hash == old_hash).count();
        let old_draining = v.active().filter(|p| p.template_hash == old_hash && p.drain_since.is_some()).count();
        let old_serving = v.active().filter(|p| p.template_hash == old_hash && p.serving).count();
        (old_left <= pods - 2 && old_draining >= 1 && old_serving >= 1).then_some(())
    })
    .await?;
    let killed_after = t0.elapsed();
    cluster.kill_operator();
    let before = fleet.view().await;
    let old_draining = before.active().filter(|p| p.template_hash == old_hash && p.drain_since.is_some()).count();
    // Meetings go on (and end) with no operator for 8 s.
    work.run_for(&fleet, Duration::from_secs(8)).await?;
    cluster.start_operator(&Binaries::find()?.operator, "fleet-restart-2")?;

    let took = upgrade.wait(&mut work, &fleet, t0, Duration::from_secs(240)).await?;
    work.close_all(&fleet).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcome = fleet.stop().await;
    let forced: usize = outcome.forced_ends.values().map(Vec::len).sum();
    let old_left = before.active().filter(|p| p.template_hash == old_hash).count();
    summary(
        "operator killed mid-upgrade",
        &[
            format!(
                "SIGKILL {:.1} s into the upgrade ({old_left} of {pods} old pods left, {old_draining} draining), restarted 8 s later; upgrade done {:.1} s after it began",
                killed_after.as_secs_f64(),
                took.as_secs_f64()
            ),
            format!(
                "meetings: {} opened, {} closed, {} cut, {} joins refused by a draining pod (retried)",
                outcome.opened,
                outcome.closed,
                outcome.cuts.len(),
                outcome.refused_joins
            ),
            format!("peak pod count {} (limit {}); sessions ended by force: {forced}", outcome.peak_pods, pods + 1),
        ],
    );
    ensure!(outcome.cuts.is_empty(), "meetings cut: {:#?}", outcome.cuts);
    ensure!(outcome.problems.is_empty(), "harness problems: {:#?}", outcome.problems);
    ensure!(forced == 0, "no meeting was ended by force");
    ensure!(
        outcome.peak_pods <= pods + 1,
        "peak {} pods over desired + maxSurge, {:.1} s into the upgrade (operator killed at {:.1} s): {:#?}\npods seen: {:#?}",
        outcome.peak_pods,
        (outcome.peak_listing.0 - t0_ms) as f64 / 1000.0,
        killed_after.as_secs_f64(),
        outcome.peak_listing.1,
        outcome.pods_seen.iter().map(|(at, n, h)| format!("{:.1} s {n} {h}", (at - t0_ms) as f64 / 1000.0)).collect::<Vec<_>>()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 6. The API server, then etcd, down for 30 s in the middle of an upgrade (issue #10)

#[tokio::test]
async fn an_api_server_or_etcd_outage_mid_upgrade_cuts_no_meeting() -> Result<()> {
    let mut cluster = OwnCluster::up(ports::API_OUTAGE)?;
    cluster.start_operator(&Binaries::find()?.operator, "api-outage")?;
    let result = outages_mid_upgrade(&mut cluster, "e2e-fleet-outage", 4).await;
    cluster.on_failure(result)
}

async fn outages_mid_upgrade(cluster: &mut OwnCluster, ns: &str, pods: usize) -> Result<()> {
    let (client, fleet) = serving_fleet(cluster, ns, "Ministère des Outre-mer", pods, 6).await?;
    let mut work = Workload::new(6);
    let mut lines = Vec::new();
    // First the API server during the upgrade to NEW, then etcd during the rollback to OLD.
    for (round, (component, to)) in [("kube-apiserver", NEW), ("etcd", OLD)].into_iter().enumerate() {
        let old_hash = fleet.view().await.only_hash()?;
        let meetings = work.open_many(&fleet, &format!("round{round}"), 16, (1, 2)).await?;
        let t0 = Instant::now();
        let upgrade = Upgrade { client: &client, ns, old_hash: &old_hash, pods, version: to };
        upgrade.start().await?;
        work.end_between(&meetings, t0, Duration::from_secs(5), Duration::from_secs(40));
        work.churn(Some(Churn {
            prefix: format!("later{round}"),
            every: Duration::from_secs(1),
            participants: (1, 2),
            lasting: (Duration::from_secs(2), Duration::from_secs(8)),
        }));
        // Under way: a new pod serves and an old one drains.
        work.run_until(&fleet, &format!("the {to} upgrade under way"), t0 + Duration::from_secs(90), |v| {
            let draining = v.active().filter(|p| p.template_hash == old_hash && p.drain_since.is_some()).count();
            let new_serving = v.active().filter(|p| p.template_hash != old_hash && p.serving).count();
            (draining >= 1 && new_serving >= 1).then_some(())
        })
        .await?;
        let at = t0.elapsed();
        cluster.stop_component(component)?;
        // 30 s without it: meetings go on and end on the stand-ins; nobody can write to the API.
        work.run_for(&fleet, Duration::from_secs(30)).await?;
        cluster.start_component(component)?;
        // Done within 180 s of its return.
        let took = upgrade.wait(&mut work, &fleet, Instant::now(), Duration::from_secs(180)).await?;
        work.churn(None);
        ensure!(cluster.operator_running(), "the operator exited during the {component} outage");
        lines.push(format!(
            "{component} down for 30 s from {:.1} s into the upgrade to {to}; upgrade done {:.1} s after it came back",
            at.as_secs_f64(),
            took.as_secs_f64()
        ));
    }
    work.close_all(&fleet).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcome = fleet.stop().await;
    let forced: usize = outcome.forced_ends.values().map(Vec::len).sum();
    lines.push(format!(
        "meetings: {} opened, {} closed, {} cut; sessions ended by force: {forced}; peak pods {} (limit {})",
        outcome.opened,
        outcome.closed,
        outcome.cuts.len(),
        outcome.peak_pods,
        pods + 1
    ));
    summary("API server and etcd outages mid-upgrade", &lines);
    ensure!(outcome.cuts.is_empty(), "meetings cut: {:#?}", outcome.cuts);
    ensure!(outcome.problems.is_empty(), "harness problems: {:#?}", outcome.problems);
    ensure!(forced == 0, "no meeting was ended by force");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 7. A node drain: `kubectl drain` cordons the node, then evicts its pods through the eviction
// API, which the disruption budget answers. An idle SFU pod is evicted at once (and replaced); a
// busy one is refused however often the drain retries, and the operator, seeing the node
// cordoned, replaces it elsewhere and drains it, so the drain finishes once its meeting ends.
// Own control plane: cordoning a node of the shared one would starve the other scenarios.

#[tokio::test]
async fn a_node_drain_evicts_idle_pods_and_moves_busy_ones_without_cutting_a_meeting() -> Result<()> {
    let mut cluster = OwnCluster::up(ports::NODE_DRAIN)?;
    cluster.start_operator(&Binaries::find()?.operator, "node-drain")?;
    let result = node_drain(&cluster, "e2e-fleet-node-drain").await;
    cluster.on_failure(result)
}

async fn node_drain(cluster: &OwnCluster, ns: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::EvictParams;
    // Two pods, one replaced at a time; a drain deadline far beyond the test (the meeting must end
    // by itself, not be ended for the drain).
    let client = client_at(&cluster.kubeconfig).await?;
    namespace(&client, ns).await?;
    let vc = visiocluster(
        "Ministère des Armées",
        json!({"sfu": {"replicas": {"min": 2, "max": 2}},
               "autoscaling": {"participantBuffer": 0, "targetUtilizationPercent": 100, "scaleDownDelay": "0s"},
               "upgrade": {"maxSurge": 1, "maxDraining": 0, "drainTimeout": "30m", "warnBefore": "5m"}}),
    );
    apply(&client, ns, &vc).await?;
    let fleet =
        Fleet::start(client.clone(), real(FleetConfig { seed: 7, ..FleetConfig::new(ns, VC, &cluster.kubeconfig) }))
            .await?;
    fleet.wait_serving(2, Duration::from_secs(120)).await?;
    const MEETING: &str = "conseil-de-defense";
    let busy = match fleet.open(MEETING, 3).await? {
        Join::Joined(pod) => pod,
        Join::NoServingPod => anyhow::bail!("no serving pod took the meeting"),
    };
    // Pods are born `in-use=true` (no load known yet); the agents' reports turn the idle one to false.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // Evictions as `kubectl drain` sends them: one request each (kube's client would retry a 429
    // itself, for up to minutes), the drain retrying every few seconds.
    let mut cfg = visio_e2e::config_at(&cluster.kubeconfig).await?;
    cfg.default_retry = false;
    let evictions: Api<Pod> = Api::namespaced(Client::try_from(cfg)?, ns);
    let in_use = |p: &Pod| p.labels().get(pod_protocol::IN_USE).cloned();
    let (idle, idle_uid) =
        visio_e2e::wait_for("the busy pod in use, the idle one not", Duration::from_secs(60), || {
            let (pods, busy) = (pods.clone(), busy.clone());
            async move {
                let list = pods.list(&Default::default()).await?;
                let busy_in_use =
                    list.items.iter().any(|p| p.name_any() == busy && in_use(p).as_deref() == Some("true"));
                let idle = list.items.iter().find(|p| {
                    p.name_any() != busy
                        && p.metadata.deletion_timestamp.is_none()
                        && in_use(p).as_deref() == Some("false")
                });
                Ok(idle.filter(|_| busy_in_use).map(|p| (p.name_any(), p.uid().unwrap_or_default())))
            }
        })
        .await?;
    let node_of = |p: Option<Pod>| p.and_then(|p| p.spec?.node_name);
    let node = node_of(pods.get_opt(&busy).await?).context("the busy pod has no node")?;

    // `kubectl drain`, step 1: cordon.
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.patch(&node, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": true}}))).await?;
    let cordoned = Instant::now();
    // Step 2: evictions. The busy pod's are refused (429), however often they are retried.
    let mut refusals = 0;
    for _ in 0..5 {
        match evictions.evict(&busy, &EvictParams::default()).await {
            Err(kube::Error::Api(s)) if s.code == 429 => refusals += 1,
            other => anyhow::bail!("evicting busy pod {busy}: expected 429 from the disruption budget, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The idle pod goes at once.
    evictions.evict(&idle, &EvictParams::default()).await.with_context(|| format!("evicting idle pod {idle}"))?;

    // The operator: replacements serve elsewhere, and the busy pod drains (its meeting goes on).
    let busy_uid = fleet.view().await.pods.get(&busy).map(|p| p.uid.clone()).context("busy pod not listed")?;
    fleet
        .wait("two serving replacements and the busy pod draining", Duration::from_secs(90), |v| {
            let fresh = v.active().filter(|p| p.serving && p.uid != idle_uid && p.uid != busy_uid).count();
            let draining = v.active().any(|p| p.uid == busy_uid && p.drain_since.is_some() && !p.serving);
            (fresh == 2 && draining).then_some(())
        })
        .await?;
    let moved = cordoned.elapsed();
    let view = fleet.view().await;
    for p in view.active().filter(|p| p.uid != busy_uid) {
        let on = node_of(pods.get_opt(&p.name).await?);
        ensure!(on.as_deref() != Some(node.as_str()), "replacement {} placed on the cordoned node {node}", p.name);
    }
    let notes: Vec<String> = events(&client, ns, "DrainStarted").await?.into_iter().filter_map(|e| e.message).collect();
    ensure!(
        notes.iter().any(|n| n.contains(&busy) && n.contains("NodeCordoned")),
        "no DrainStarted event naming {busy} and the cordon: {notes:#?}"
    );
    ensure!(
        view.meetings.get(MEETING).is_some_and(|m| m.pod == busy && m.status == MeetingStatus::Open),
        "the meeting did not stay where it was"
    );

    // The meeting ends by itself; the operator deletes the emptied pod: the node is empty.
    let ended = fleet.close(MEETING).await?;
    fleet
        .wait("the drained pod gone", Duration::from_secs(60), |v| v.active().all(|p| p.uid != busy_uid).then_some(()))
        .await?;
    let outcome = fleet.stop().await;
    summary(
        "node drain (cordon, then the eviction API)",
        &[
            format!("busy pod {busy}: {refusals} of {refusals} evictions refused (429) while its meeting ran"),
            format!("idle pod {idle}: evicted at once"),
            format!(
                "{:.1} s after the cordon: two serving pods on other nodes, {busy} draining; deleted once its meeting ended",
                moved.as_secs_f64()
            ),
            format!("meetings: {} opened, {} closed, {} cut", outcome.opened, outcome.closed, outcome.cuts.len()),
        ],
    );
    ensure!(ended == MeetingStatus::Closed, "the meeting ended as {ended:?}, not closed by its participants");
    ensure!(outcome.cuts.is_empty(), "meetings cut: {:#?}", outcome.cuts);
    ensure!(outcome.problems.is_empty(), "harness problems: {:#?}", outcome.problems);
    Ok(())
}
