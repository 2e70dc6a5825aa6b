//! Issue #5 on the local control plane: the CaptionPool scales on slots and never cuts a stream.
//!
//! Backend load comes from the fleet harness (`visio_e2e::fleet`) in its caption mode: for every caption
//! backend pod kwok runs, a `moshi-standin` (moshi-server's slots: hard rejection when full, its metrics,
//! its API key check, no drain) and the real `visio-operator agent --backend moshi` writing that pod's
//! load. A "meeting" of the harness is one caption stream (one captioned participant, one slot). The
//! harness opens each stream on the least-loaded serving pod, as the backend Service would spread them;
//! a stream is counted **rejected** when the pod answered "no free channels", and **cut** when it ended
//! without the harness closing it (its pod deleted, or its backend gone, with the stream open).
//!
//! 1. `captions_scale_on_slots_and_never_cut_a_stream`, one pool on the fake GPU node (4 GPUs, one per
//!    backend pod): a steady ramp of captioned participants (rejected streams must be 0, and the free
//!    slots never run out), participants leaving (only empty pods are deleted, busy draining pods wait for
//!    their streams), a backend image upgrade with streams open (no stream cut, the upgrade completes);
//! 2. `whisperlive_pool_scales_on_slots_and_counts_rejections`, engine `whisperlive` with the harness's
//!    `whisperlive-standin` (`--max_clients` slots, `WAIT` when full, counted in
//!    `whisperlive_connections_rejected_total`) and the real agent with `--backend whisperlive`: a steady
//!    ramp is never refused, then a burst beyond the pool's `max` is, and the refusals reach the status
//!    (`slots.rejected`), the `Degraded=StreamsRejected` condition, its Event and the operator's counter;
//! 3. `transcribers_scale_on_active_jobs_and_drain_when_removed`: the transcriber workers (a Deployment)
//!    with the harness's `transcriber-standin` (a LiveKit Agents worker: jobs up to `jobsPerWorker`,
//!    `lk_agents_active_job_count`, drain on SIGTERM) and the real agent with `--backend transcriber`: a
//!    steady ramp of rooms is never refused, a scale-down removes the empty workers (the agent's deletion
//!    cost), and a worker removed with a job drains it to its end;
//! 4. `a_schedule_window_holds_the_backends_up`: a window of `spec.backend.schedules` holds the backends at
//!    its minimum, shown in the status and in the metrics of `VisioCaptionAtMaxDuringWindow`;
//! 5. `bad_input_is_reported`: a pool naming a VisioCluster that does not exist, one asking for a GPU no
//!    node has (pods Pending, `Unschedulable` quoting the scheduler), and what the schema refuses.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kube::api::Api;
use kube::Client;
use serde_json::{json, Value};
use visio_e2e::fixtures::visio_cluster;
use visio_e2e::fleet::{Fleet, FleetConfig, Join, StandinBackend, View, Workload};
use visio_e2e::unix_ms;
use visio_e2e::{client, events, kubeconfig_path, wait_for, Tenant};
use visio_operator::api::{CaptionPool, VisioCluster};

const POOL: &str = "captions";
const SLOTS: u32 = 16;

/// The two load scenarios run one after the other: the first one's "no write at rest" check counts every
/// write of the operator, and two harnesses at once would share the 2 cores of the machine.
static LOAD_SCENARIO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The VisioCluster every pool refers to: one SFU pod, on the pod network, without TURN.
fn visiocluster() -> Value {
    visio_cluster("visio")
        .ministry("Ministère de la Santé", "visio.sante.gouv.fr")
        .pod_network()
        .replicas(1, 1)
        .no_turn()
        .value()
}

fn pool(name: &str, spec: Value) -> Value {
    let mut cp = json!({
        "apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool", "metadata": {"name": name},
        "spec": {"clusterRef": {"name": "visio"}}
    });
    visio_e2e::merge_patch(&mut cp["spec"], &spec);
    cp
}

async fn apply<K>(client: &Client, ns: &str, obj: &Value) -> Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    visio_e2e::fixtures::apply(&api, "e2e-captions", obj).await?;
    Ok(())
}

async fn status(client: &Client, ns: &str, name: &str) -> Result<Option<visio_operator::api::CaptionPoolStatus>> {
    let api: Api<CaptionPool> = Api::namespaced(client.clone(), ns);
    Ok(api.get(name).await?.status)
}

fn condition(s: &visio_operator::api::CaptionPoolStatus, type_: &str) -> Option<(String, String, String)> {
    s.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Free slots on the serving pods whose stand-in runs, by the harness's books.
fn free_slots(v: &View) -> i64 {
    let by_pod = v.participants_by_pod();
    v.active()
        .filter(|p| p.serving && p.drain_since.is_none() && v.live.contains(&p.name))
        .map(|p| i64::from(SLOTS) - i64::from(by_pod.get(&p.name).copied().unwrap_or(0)))
        .sum()
}

fn summary(name: &str, lines: &[String]) {
    eprintln!("=== caption scenario: {name}");
    for l in lines {
        eprintln!("    {l}");
    }
}

#[tokio::test]
async fn captions_scale_on_slots_and_never_cut_a_stream() -> Result<()> {
    let _serial = LOAD_SCENARIO.lock().await;
    let ns = "e2e-captions";
    let client = client().await?;
    let _tenant = Tenant::create(&client, ns).await?;
    apply::<VisioCluster>(&client, ns, &visiocluster()).await?;
    let spec = json!({
        "engine": "kyutai",
        "backend": {
            "slotsPerPod": SLOTS, "gpu": {"count": 1, "resourceName": "nvidia.com/gpu"},
            "replicas": {"min": 1, "max": 4}, "targetOccupancyPercent": 70, "slotBuffer": 8,
            "drainTimeout": "10m", "scaleDownDelay": "5s",
            "scheduling": {"nodeSelector": {"visio.io/gpu": "true"}}
        },
        "transcribers": {"replicas": {"min": 1, "max": 5}, "jobsPerWorker": 10}
    });
    apply::<CaptionPool>(&client, ns, &pool(POOL, spec.clone())).await?;
    let mut cfg = FleetConfig::new(ns, POOL, &kubeconfig_path()?);
    cfg.backend = StandinBackend::Moshi { slots: SLOTS };
    cfg.component = "caption-backend".into();
    cfg.agent_args = ["--interval", "500ms", "--min-report-interval", "1s"].map(String::from).to_vec();
    let fleet = Fleet::start(client.clone(), cfg).await?;
    fleet.wait_serving(1, Duration::from_secs(90)).await?;

    // 1. A steady ramp: 40 captioned participants, one every 700 ms. At 70 % of 16 slots plus a buffer
    // of 8, the pool needs 4 backends for 40 streams.
    let ramp_started = unix_ms();
    let mut min_free = i64::MAX;
    let mut streams_at_new_pod: Vec<(String, usize, i64)> = Vec::new();
    let mut known: std::collections::BTreeSet<String> = fleet.view().await.pods.keys().cloned().collect();
    for i in 0..40 {
        let view = fleet.view().await;
        min_free = min_free.min(free_slots(&view));
        for p in view.pods.keys() {
            if known.insert(p.clone()) {
                streams_at_new_pod.push((p.clone(), view.open_meetings(), unix_ms() - ramp_started));
            }
        }
        let joined = fleet.open(&format!("s{i}"), 1).await?;
        ensure!(matches!(joined, Join::Joined(_)), "stream s{i} found no serving backend");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let ramp_view = fleet.view().await;
    // Scale-up reaction: from the agent's load report that preceded a new backend to the harness first
    // listing that backend (its harness tick is 200 ms).
    let reactions: Vec<(String, i64)> = ramp_view
        .outcome
        .pods_seen
        .iter()
        .skip(1)
        .filter_map(|(seen, pod, _)| {
            let report = ramp_view.outcome.loads.iter().filter(|(_, at, _)| at < seen).map(|(_, at, _)| *at).max()?;
            Some((pod.clone(), seen - report))
        })
        .collect();
    min_free = min_free.min(free_slots(&ramp_view));
    fleet.wait_serving(4, Duration::from_secs(60)).await?;
    let rejected_in_ramp = ramp_view.outcome.rejected_full + ramp_view.outcome.no_serving_pod;
    ensure!(rejected_in_ramp == 0, "streams rejected during a steady ramp: {rejected_in_ramp}");
    let st = wait_for("the status to count 40 streams on 4 backends", Duration::from_secs(30), || async {
        Ok(status(&client, ns, POOL).await?.filter(|s| s.slots.used == 40 && s.backends.ready == 4))
    })
    .await?;
    ensure!(st.slots.total == i64::from(4 * SLOTS), "total slots {}", st.slots.total);
    ensure!(condition(&st, "Ready").is_some_and(|c| c.0 == "True"), "Ready: {:?}", condition(&st, "Ready"));
    ensure!(st.transcribers.desired == 4, "transcribers for 40 streams at 10 jobs each: {}", st.transcribers.desired);
    let scaled = events(&client, ns, "ScaledUp").await?;
    ensure!(!scaled.is_empty(), "ScaledUp Events");
    summary(
        "ramp",
        &[
            format!("40 streams, one every 700 ms, {SLOTS} slots per backend, target 70 %, buffer 8"),
            format!("streams rejected: {rejected_in_ramp}; fewest free serving slots before a join: {min_free}"),
            format!("backends appeared (pod, open streams then, ms into the ramp): {streams_at_new_pod:?}"),
            format!("scale-up reaction, load report seen -> new backend listed, both at the harness 200 ms tick (ms): {reactions:?}"),
        ],
    );

    // 2. Participants leave: 32 of 40 streams close. One backend is enough for 8 (16 slots, 70 %, buffer
    // 8); the three emptiest drain, and a draining pod is deleted only once its last stream is closed.
    let keep: Vec<String> = (0..40).map(|i| format!("s{i}")).filter(|s| s.ends_with('0') || s.ends_with('5')).collect();
    for i in 0..40 {
        let name = format!("s{i}");
        if !keep.contains(&name) {
            fleet.close(&name).await?;
        }
    }
    let draining = fleet
        .wait("three backends draining", Duration::from_secs(60), |v| {
            let d: Vec<String> = v.active().filter(|p| p.drain_since.is_some()).map(|p| p.name.clone()).collect();
            (d.len() == 3).then_some(d)
        })
        .await?;
    // Streams still open on the draining pods keep them; close those streams now (their speakers leave).
    let view = fleet.view().await;
    let on_draining: Vec<String> = view
        .meetings
        .values()
        .filter(|m| m.status == visio_e2e::fleet::MeetingStatus::Open && draining.contains(&m.pod))
        .map(|m| m.name.clone())
        .collect();
    if !on_draining.is_empty() {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let v = fleet.view().await;
        let busy: std::collections::BTreeSet<&str> = v
            .meetings
            .values()
            .filter(|m| m.status == visio_e2e::fleet::MeetingStatus::Open)
            .map(|m| m.pod.as_str())
            .collect();
        for pod in draining.iter().filter(|p| busy.contains(p.as_str())) {
            ensure!(v.active().any(|p| &p.name == pod), "draining pod {pod} was deleted with open streams");
        }
    }
    for s in &on_draining {
        fleet.close(s).await?;
    }
    fleet
        .wait("the pool back to 1 backend", Duration::from_secs(60), |v| (v.active().count() == 1).then_some(()))
        .await?;

    // 3. A backend image upgrade with streams open: new pods first, old ones drain and go once their
    // streams end (each closes 3 to 12 s from now), new streams go to serving pods meanwhile.
    let old_hash = {
        let v = fleet.view().await;
        let hashes: std::collections::BTreeSet<String> = v.active().map(|p| p.template_hash.clone()).collect();
        ensure!(hashes.len() == 1, "one template before the upgrade: {hashes:?}");
        hashes.into_iter().next().unwrap_or_default()
    };
    // Participants in meetings when the upgrade starts: their streams are on the outdated backend.
    let mut work = Workload::new(5);
    let at_upgrade = work.open_many(&fleet, "p", 6, (1, 1)).await?.len() + fleet.view().await.open_meetings() - 6;
    let upgrade_started = Instant::now();
    let mut upgraded = spec.clone();
    upgraded["image"] = json!("registry.visio.local/kyutai/moshi-server:0.6.5");
    apply::<CaptionPool>(&client, ns, &pool(POOL, upgraded)).await?;
    let open_now: Vec<String> = fleet
        .view()
        .await
        .meetings
        .values()
        .filter(|m| m.status == visio_e2e::fleet::MeetingStatus::Open)
        .map(|m| m.name.clone())
        .collect();
    work.end_between(&open_now, Instant::now(), Duration::from_secs(3), Duration::from_secs(12));
    // New participants join during the upgrade: they land on whichever pod serves, and leave later.
    let extra = work.open_many(&fleet, "u", 4, (1, 1)).await?;
    work.end_between(&extra, Instant::now(), Duration::from_secs(5), Duration::from_secs(15));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        work.step(&fleet).await?;
        let v = fleet.view().await;
        let done =
            v.active().count() >= 1 && v.active().all(|p| p.template_hash != old_hash && p.drain_since.is_none());
        if done {
            break;
        }
        let pods: Vec<String> = v
            .pods
            .values()
            .map(|p| {
                format!(
                    "{} hash={} drain={:?} terminating={} load={:?}",
                    p.name, p.template_hash, p.drain_since, p.terminating, p.load
                )
            })
            .collect();
        ensure!(Instant::now() < deadline, "the upgrade from {old_hash} did not finish in 90 s: {pods:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let upgrade_took = upgrade_started.elapsed();
    work.close_all(&fleet).await?;
    let outcome = fleet.stop().await;
    ensure!(outcome.cuts.is_empty(), "streams cut: {:?}", outcome.cuts);
    ensure!(outcome.problems.is_empty(), "harness problems: {:?}", outcome.problems);
    // At rest, the operator writes nothing (its own write counter, all kinds; the other test of this
    // file has finished and deleted its namespace by now).
    let settled = wait_for("the pool at rest", Duration::from_secs(60), || async {
        Ok(status(&client, ns, POOL).await?.filter(|s| s.backends.current == s.backends.desired && s.slots.used == 0))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes_before = visio_e2e::metric_sum("visio_child_writes_total").await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_writes = visio_e2e::metric_sum("visio_child_writes_total").await? - writes_before;
    ensure!(idle_writes == 0.0, "{idle_writes} writes in 10 s at rest ({} backends)", settled.backends.current);
    let used = visio_e2e::metric(&format!("visio_caption_slots{{namespace=\"{ns}\",pool=\"{POOL}\",state=\"total\"}}"))
        .await?;
    ensure!(used.is_some(), "visio_caption_slots exported");
    summary(
        "scale on slots, scale down, upgrade",
        &[
            format!("ramp: 40 streams, one every 700 ms, {SLOTS} slots per backend, target 70 %, buffer 8"),
            format!(
                "streams rejected during the ramp: {rejected_in_ramp} (rejected_full {}, no serving pod {})",
                ramp_view.outcome.rejected_full, ramp_view.outcome.no_serving_pod
            ),
            format!("fewest free serving slots seen before a join: {min_free}"),
            format!("backends appeared (pod, open streams then, ms into the ramp): {streams_at_new_pod:?}"),
            format!(
                "scale-down drained {draining:?}, {} stream(s) still open on them were waited for",
                on_draining.len()
            ),
            format!(
                "upgrade of the backend with {at_upgrade} stream(s) open on it, 4 more joining, took {:.1} s",
                upgrade_took.as_secs_f64()
            ),
            format!("streams opened {}, closed {}, cut {}", outcome.opened, outcome.closed, outcome.cuts.len()),
            format!(
                "pods started {}, stopped {}, peak {}",
                outcome.pods_started, outcome.pods_stopped, outcome.peak_pods_all
            ),
            format!("operator writes in 10 s at rest: {idle_writes}"),
        ],
    );
    Ok(())
}

/// Open jobs on each worker, by the harness's books.
fn jobs_by_worker(v: &View) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for p in v.active() {
        out.entry(p.name.clone()).or_default();
    }
    for m in v.meetings.values().filter(|m| m.status == visio_e2e::fleet::MeetingStatus::Open) {
        out.entry(m.pod.clone()).or_default().push(m.name.clone());
    }
    out
}

#[tokio::test]
async fn transcribers_scale_on_active_jobs_and_drain_when_removed() -> Result<()> {
    const TX_POOL: &str = "tx";
    const JOBS: u32 = 4;
    let _serial = LOAD_SCENARIO.lock().await;
    let ns = "e2e-captions-tx";
    let client = client().await?;
    let _tenant = Tenant::create(&client, ns).await?;
    apply::<VisioCluster>(&client, ns, &visiocluster()).await?;
    // 4 jobs per worker, a 75 % target and 2 free jobs: 10 jobs need 4 workers.
    let spec = json!({
        "engine": "whisperlive",
        "backend": {"gpu": {"count": 0}, "replicas": {"min": 1, "max": 1}},
        "transcribers": {"replicas": {"min": 1, "max": 5}, "jobsPerWorker": JOBS, "targetOccupancyPercent": 75,
            "jobBuffer": 2, "scaleDownDelay": "5s", "drainTimeout": "30s"}
    });
    apply::<CaptionPool>(&client, ns, &pool(TX_POOL, spec)).await?;
    let mut cfg = FleetConfig::new(ns, TX_POOL, &kubeconfig_path()?);
    cfg.backend = StandinBackend::Transcriber { jobs: JOBS };
    cfg.component = "transcriber".into();
    // The workers are a Deployment's pods: a deleted one gets SIGTERM and its grace period (30 s + 1 min).
    cfg.kubelet_grace = Some(Duration::from_secs(90));
    cfg.baseline_selector = format!("app.kubernetes.io/instance={TX_POOL},app.kubernetes.io/component=transcriber");
    cfg.agent_args = ["--interval", "500ms", "--min-report-interval", "1s"].map(String::from).to_vec();
    let fleet = Fleet::start(client.clone(), cfg).await?;
    fleet.wait_serving(1, Duration::from_secs(60)).await?;

    // 1. A steady ramp: 10 rooms ask for captions, one every 2 s. Workers are added before the last free
    // job is taken: no job is refused.
    let mut workers_at_job = Vec::new();
    for i in 0..10 {
        let joined = fleet.open(&format!("room{i}"), 1).await?;
        ensure!(matches!(joined, Join::Joined(_)), "room{i} found no worker with a free job");
        tokio::time::sleep(Duration::from_secs(2)).await;
        workers_at_job.push(fleet.view().await.active().count());
    }
    let ramp = fleet.view().await;
    let refused = ramp.outcome.rejected_full + ramp.outcome.no_serving_pod;
    ensure!(refused == 0, "jobs refused during a steady ramp: {refused}");
    fleet.wait_serving(4, Duration::from_secs(60)).await?;
    let st = wait_for("the status to count 10 jobs on 4 workers", Duration::from_secs(30), || async {
        Ok(status(&client, ns, TX_POOL)
            .await?
            .filter(|s| s.transcribers.jobs == Some(10) && s.transcribers.desired == 4))
    })
    .await?;
    let scaled = events(&client, ns, "TranscribersScaled").await?;
    ensure!(!scaled.is_empty(), "TranscribersScaled Events");
    // Each worker's deletion cost is its jobs, so the ReplicaSet removes the emptiest first.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let by_worker = jobs_by_worker(&fleet.view().await);
    wait_for("every worker's deletion cost to be its jobs", Duration::from_secs(20), || {
        let (pods, by_worker) = (pods.clone(), by_worker.clone());
        async move {
            for (worker, jobs) in &by_worker {
                let p = pods.get(worker).await?;
                let cost =
                    p.metadata.annotations.as_ref().and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"));
                if cost.map(String::as_str) != Some(jobs.len().to_string().as_str()) {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        }
    })
    .await?;

    // 2. Rooms end: keep up to 3 jobs on each of the two busiest workers (they hold 5 or more of the 10, and
    // 4 to 6 jobs need 2 workers). After the 5 s delay the two others go, and they are the empty ones.
    let mut busiest: Vec<(usize, String)> = by_worker.iter().map(|(w, j)| (j.len(), w.clone())).collect();
    busiest.sort_by(|a, b| b.cmp(a));
    let kept: std::collections::BTreeSet<String> = busiest.iter().take(2).map(|(_, w)| w.clone()).collect();
    for (worker, jobs) in &by_worker {
        let keep = if kept.contains(worker) { 3 } else { 0 };
        for j in jobs.iter().skip(keep) {
            fleet.close(j).await?;
        }
    }
    let left = fleet
        .wait("the workers down to 2", Duration::from_secs(60), |v| {
            let names: std::collections::BTreeSet<String> = v.active().map(|p| p.name.clone()).collect();
            (names.len() == 2).then_some(names)
        })
        .await?;
    ensure!(left == kept, "the busy workers {kept:?} were kept, not {left:?}");

    // 3. One job left on each: one worker is enough, and the one removed still holds a job. It drains: its
    // job goes on until the room ends, then the worker exits.
    let by_worker = jobs_by_worker(&fleet.view().await);
    for jobs in by_worker.values() {
        for j in jobs.iter().skip(1) {
            fleet.close(j).await?;
        }
    }
    let removed = fleet
        .wait("one worker removed", Duration::from_secs(60), |v| {
            let active: Vec<String> = v.active().map(|p| p.name.clone()).collect();
            (active.len() == 1).then(|| kept.iter().find(|w| !active.contains(w)).cloned()).flatten()
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let v = fleet.view().await;
    let draining_job = v
        .meetings
        .values()
        .find(|m| m.pod == removed && m.status == visio_e2e::fleet::MeetingStatus::Open)
        .map(|m| m.name.clone())
        .context("the removed worker's job is still open")?;
    ensure!(v.lingering == 1, "the removed worker still runs while it drains: {} lingering", v.lingering);
    let ended = fleet.close(&draining_job).await?;
    ensure!(ended == visio_e2e::fleet::MeetingStatus::Closed, "the draining worker's job ended as {ended:?}");
    fleet.wait("the drained worker to exit", Duration::from_secs(20), |v| (v.lingering == 0).then_some(())).await?;
    let last = wait_for("the status to count 1 job on 1 worker", Duration::from_secs(30), || async {
        Ok(status(&client, ns, TX_POOL)
            .await?
            .filter(|s| s.transcribers.jobs == Some(1) && s.transcribers.desired == 1))
    })
    .await?;
    let outcome = fleet.stop().await;
    ensure!(outcome.cuts.is_empty(), "jobs cut: {:?}", outcome.cuts);
    ensure!(outcome.problems.is_empty(), "harness problems: {:?}", outcome.problems);
    summary(
        "transcribers on active jobs",
        &[
            format!("ramp: 10 rooms, one every 2 s, {JOBS} jobs per worker, target 75 %, 2 free jobs"),
            format!("jobs refused during the ramp: {refused}; workers after each job: {workers_at_job:?}"),
            format!(
                "status at the peak: {} jobs, {} workers wanted",
                st.transcribers.jobs.unwrap_or(0),
                st.transcribers.desired
            ),
            format!("scale-down kept the busiest workers {kept:?}; then {removed} was removed with 1 job and drained"),
            format!(
                "at the end: {:?} job(s), {} worker(s); jobs opened {}, closed {}, cut {}",
                last.transcribers.jobs,
                last.transcribers.desired,
                outcome.opened,
                outcome.closed,
                outcome.cuts.len()
            ),
        ],
    );
    Ok(())
}

#[tokio::test]
async fn whisperlive_pool_scales_on_slots_and_counts_rejections() -> Result<()> {
    const WL_POOL: &str = "wl";
    const WL_SLOTS: u32 = 4; // WhisperLive's default --max_clients
    let _serial = LOAD_SCENARIO.lock().await;
    let started = Instant::now();
    let ns = "e2e-captions-wl";
    let client = client().await?;
    let _tenant = Tenant::create(&client, ns).await?;
    apply::<VisioCluster>(&client, ns, &visiocluster()).await?;
    // On CPU (no GPU asked), at most 3 backends of 4 slots: 12 streams in all.
    let spec = json!({
        "engine": "whisperlive",
        "backend": {
            "slotsPerPod": WL_SLOTS, "gpu": {"count": 0},
            "replicas": {"min": 1, "max": 3}, "targetOccupancyPercent": 70, "slotBuffer": 3,
            "drainTimeout": "10m", "scaleDownDelay": "10m"
        },
        "transcribers": {"replicas": {"min": 1, "max": 2}, "jobsPerWorker": 10}
    });
    apply::<CaptionPool>(&client, ns, &pool(WL_POOL, spec)).await?;
    let mut cfg = FleetConfig::new(ns, WL_POOL, &kubeconfig_path()?);
    cfg.backend = StandinBackend::WhisperLive { slots: WL_SLOTS };
    cfg.component = "caption-backend".into();
    cfg.agent_args = ["--interval", "500ms", "--min-report-interval", "1s"].map(String::from).to_vec();
    let fleet = Fleet::start(client.clone(), cfg).await?;
    fleet.wait_serving(1, Duration::from_secs(60)).await?;

    // 1. A steady ramp of 8 streams, one every 2 s: with 4 slots, a 70 % target and a buffer of 3, the
    // pool grows to 3 backends (a second at 2 streams, a third at 6), and no stream is refused.
    let mut backends_at: Vec<(usize, usize)> = Vec::new();
    for i in 0..8 {
        let view = fleet.view().await;
        let pods = view.active().count();
        if backends_at.last().map(|b| b.1) != Some(pods) {
            backends_at.push((view.open_meetings(), pods));
        }
        let joined = fleet.open(&format!("w{i}"), 1).await?;
        ensure!(matches!(joined, Join::Joined(_)), "stream w{i} found no serving backend");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let ramp = fleet.view().await.outcome;
    ensure!(
        ramp.rejected_full == 0 && ramp.no_serving_pod == 0,
        "streams refused during a steady ramp: {} WAIT, {} without a serving backend",
        ramp.rejected_full,
        ramp.no_serving_pod
    );
    fleet.wait_serving(3, Duration::from_secs(30)).await?;
    let st = wait_for("the status to count 8 streams on 3 backends", Duration::from_secs(30), || async {
        Ok(status(&client, ns, WL_POOL).await?.filter(|s| s.slots.used == 8 && s.backends.ready == 3))
    })
    .await?;
    ensure!(st.slots.total == i64::from(3 * WL_SLOTS), "total slots {}", st.slots.total);
    ensure!(st.slots.rejected == 0, "rejections counted during the ramp: {}", st.slots.rejected);
    ensure!(
        condition(&st, "Degraded").is_some_and(|c| c.0 == "False"),
        "Degraded after a steady ramp: {:?}",
        condition(&st, "Degraded")
    );

    // 2. A burst of 6 streams at once: 4 free slots, the pool is at its max. The last 2 find every
    // backend full: each backend answers WAIT and counts it; the operator adds them up.
    let mut joined = 0;
    for i in 0..6 {
        if matches!(fleet.open(&format!("b{i}"), 1).await?, Join::Joined(_)) {
            joined += 1;
        }
    }
    let burst = fleet.view().await.outcome;
    ensure!(joined == 4, "{joined} of 6 burst streams joined (4 slots were free)");
    ensure!(burst.no_serving_pod == 2 && burst.rejected_full >= 2, "burst: {burst:?}");
    let refused = i64::from(burst.rejected_full);
    let st = wait_for("the status to count every WAIT", Duration::from_secs(30), || async {
        Ok(status(&client, ns, WL_POOL).await?.filter(|s| {
            s.slots.rejected == refused && condition(s, "Degraded").is_some_and(|c| c.1 == "StreamsRejected")
        }))
    })
    .await?;
    let degraded = condition(&st, "Degraded").context("Degraded")?;
    ensure!(degraded.0 == "True" && degraded.2.contains("refused"), "{degraded:?}");
    wait_for("a StreamsRejected Event", Duration::from_secs(15), || async {
        Ok(Some(events(&client, ns, "StreamsRejected").await?).filter(|e| !e.is_empty()))
    })
    .await?;
    let series = format!("visio_caption_streams_rejected_total{{namespace=\"{ns}\",pool=\"{WL_POOL}\"}}");
    let counted = visio_e2e::metric(&series).await?;
    ensure!(counted == Some(refused as f64), "{series} = {counted:?}, want {refused}");

    let names: Vec<String> = fleet.view().await.meetings.keys().cloned().collect();
    for n in &names {
        fleet.close(n).await?;
    }
    let outcome = fleet.stop().await;
    ensure!(outcome.cuts.is_empty(), "streams cut: {:?}", outcome.cuts);
    ensure!(outcome.problems.is_empty(), "harness problems: {:?}", outcome.problems);
    summary(
        "whisperlive: scale on slots, count rejections",
        &[
            format!(
                "ramp: 8 streams, one every 2 s, {WL_SLOTS} slots (max_clients) per backend, target 70 %, buffer 3"
            ),
            format!("backends as the ramp went (open streams, backends): {backends_at:?}; refused in the ramp: 0"),
            format!("burst of 6 with 4 free slots at max 3 backends: {joined} joined, {refused} WAIT answers"),
            format!("status.slots.rejected {}, Degraded {:?}", st.slots.rejected, degraded.1),
            format!("took {:.1} s", started.elapsed().as_secs_f64()),
        ],
    );
    Ok(())
}

/// A schedule window (`spec.backend.schedules`) holds the pool's backends at its minimum above the load's
/// need, shows in the status (the window, its pods, the measured start-up) and in the metrics the
/// `VisioCaptionAtMaxDuringWindow` alert reads: here the window asks for the pool's max, the alert's case.
#[tokio::test]
async fn a_schedule_window_holds_the_backends_up() -> Result<()> {
    let ns = "e2e-captions-schedule";
    let client = client().await?;
    let _tenant = Tenant::create(&client, ns).await?;
    apply::<VisioCluster>(&client, ns, &visiocluster()).await?;
    let always = json!({"backend": {"replicas": {"min": 1, "max": 2}, "timeZone": "UTC", "schedules": [
        {"name": "all-week", "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], "start": "00:00", "end": "24:00", "minPods": 2}
    ]}});
    apply::<CaptionPool>(&client, ns, &pool(POOL, always)).await?;
    let st = wait_for("2 backends ready under the window", Duration::from_secs(90), || async {
        Ok(status(&client, ns, POOL).await?.filter(|s| s.backends.ready == 2))
    })
    .await?;
    ensure!(st.backends.desired == 2, "the window's minPods, above min 1 and the (unreported) load: {:?}", st.backends);
    let auto = st.autoscaling.clone().context("status.autoscaling")?;
    ensure!(auto.active_window.as_deref() == Some("all-week"), "{auto:?}");
    ensure!(auto.scheduled_min_pods == Some(2), "{auto:?}");
    let labels = format!("{{namespace=\"{ns}\",pool=\"{POOL}\"}}");
    for (name, want) in [
        ("visio_caption_schedule_window_open", 1.0),
        ("visio_caption_backends_desired", 2.0),
        ("visio_caption_max_backends", 2.0),
    ] {
        let series = format!("{name}{labels}");
        wait_for(&format!("{series} = {want}"), Duration::from_secs(15), || async {
            Ok((visio_e2e::metric(&series).await? == Some(want)).then_some(()))
        })
        .await?;
    }
    // The start-up of the backends, once measured (the lead the window opens early by).
    let measured = wait_for("the backends' start-up measured", Duration::from_secs(30), || async {
        Ok(status(&client, ns, POOL).await?.and_then(|s| s.autoscaling?.startup_lead_seconds))
    })
    .await?;
    let startup = visio_e2e::metric(&format!("visio_caption_backend_startup_seconds{labels}")).await?;
    ensure!(startup.is_some_and(|s| s >= 0.0 && s <= measured as f64), "{startup:?} against {measured} s");
    summary("schedule", &[format!("window all-week: 2 backends of max 2, start-up {measured} s")]);
    Ok(())
}

#[tokio::test]
async fn bad_input_is_reported() -> Result<()> {
    let ns = "e2e-captions-bad";
    let client = client().await?;
    let _tenant = Tenant::create(&client, ns).await?;

    // A VisioCluster that does not exist.
    apply::<CaptionPool>(&client, ns, &pool("orphan", json!({"clusterRef": {"name": "nowhere"}}))).await?;
    let st = wait_for("ClusterNotFound", Duration::from_secs(30), || async {
        Ok(status(&client, ns, "orphan")
            .await?
            .filter(|s| condition(s, "Ready").is_some_and(|c| c.1 == "ClusterNotFound")))
    })
    .await?;
    let (_, _, msg) = condition(&st, "Ready").context("Ready")?;
    ensure!(msg.contains("spec.clusterRef.name") && msg.contains("nowhere"), "{msg}");
    wait_for("ClusterNotFound Event", Duration::from_secs(15), || async {
        Ok(Some(events(&client, ns, "ClusterNotFound").await?).filter(|e| !e.is_empty()))
    })
    .await?;

    // A GPU no node offers: the pod stays Pending and the status quotes the scheduler.
    apply::<VisioCluster>(&client, ns, &visiocluster()).await?;
    let gpu =
        json!({"backend": {"gpu": {"count": 2, "resourceName": "example.com/tpu"}, "replicas": {"min": 1, "max": 2}}});
    apply::<CaptionPool>(&client, ns, &pool("tpu", gpu)).await?;
    let st = wait_for("Unschedulable", Duration::from_secs(60), || async {
        Ok(status(&client, ns, "tpu").await?.filter(|s| condition(s, "Ready").is_some_and(|c| c.1 == "Unschedulable")))
    })
    .await?;
    let (_, _, msg) = condition(&st, "Ready").context("Ready")?;
    ensure!(msg.contains("example.com/tpu") && msg.contains("Pending"), "{msg}");
    ensure!(st.backends.unschedulable >= 1, "unschedulable count {}", st.backends.unschedulable);
    wait_for("Unschedulable Event", Duration::from_secs(15), || async {
        Ok(Some(events(&client, ns, "Unschedulable").await?).filter(|e| !e.is_empty()))
    })
    .await?;

    // What the schema refuses, with the field named.
    for (patch, expect) in [
        (json!({"clusterRef": {"name": "visio", "namespace": "minarmees"}}), "spec.clusterRef.namespace"),
        (json!({"engine": "vosk"}), "spec.engine"),
    ] {
        let obj = pool("refused", patch).to_string();
        let err = visio_e2e::kubectl(&["create", "-n", ns, "-f", "-"], Some(&obj)).err().context("refused")?;
        ensure!(err.to_string().contains(expect), "{err}");
    }
    summary("bad input", &[format!("Unschedulable: {msg}")]);
    Ok(())
}
