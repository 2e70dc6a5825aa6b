//! The fake kubelet: kwok marks pods Running without running anything, so every [`super::TICK`] this loop
//! lists the followed pods and plays their containers. A pod kwok runs gets its backend (a stand-in, or
//! the real LiveKit) and the real `visio-operator agent`; a deleted pod's processes are stopped, at once
//! or (baseline, transcribers) after SIGTERM and a grace period, as kubelet would. What the processes
//! say about their meetings goes to the books.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::ResourceExt;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, ChildStdout, Command};

use super::books::{end, open_on, record_state, vanished, MeetingStatus, Sample};
use super::real::{settle_participants, start_real_run};
use super::standin::{call, final_state, StandinState};
use super::view::PodView;
use super::{Shared, StandinBackend, State, TICK};
use crate::process::{free_port, sigterm};
use crate::unix_ms;

/// Deadline of one call to the API server.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at starting the processes of one pod before giving up on it.
const START_ATTEMPTS: u32 = 3;

/// The processes playing one pod's containers.
pub(super) struct Run {
    pub(super) pod: String,
    pub(super) uid: String,
    pub(super) standin: Option<Child>,
    pub(super) agent: Option<Child>,
    /// Kept open so the stand-in never writes to a closed pipe; its last line is the final state.
    pub(super) stdout: Option<tokio::io::BufReader<ChildStdout>>,
    pub(super) http: SocketAddr,
    /// The stand-in says it drains (it refuses new rooms).
    pub(super) draining: bool,
    /// Baseline only: when its pod was deleted and the stand-in got SIGTERM (kubelet's role).
    pub(super) terminating_since: Option<Instant>,
    /// The real LiveKit node of this pod ([`StandinBackend::RealLivekit`]).
    pub(super) real: Option<crate::livekit::RealNode>,
}

pub(super) async fn monitor(shared: Arc<Shared>) {
    let mut last_error: Option<String> = None;
    loop {
        let started = Instant::now();
        {
            // The listing is made without the state lock: while the API hangs (etcd down), meetings
            // must still open and close on the stand-ins on time.
            let list = list_pods(&shared).await;
            let mut st = shared.state.lock().await;
            if let Err(e) = async { tick(&shared, &mut st, list?).await }.await {
                let msg = format!("{e:#}");
                if last_error.as_ref() != Some(&msg) {
                    eprintln!("[fleet {}] harness tick: {msg}", shared.cfg.namespace);
                }
                last_error = Some(msg);
            }
        }
        tokio::time::sleep(TICK.saturating_sub(started.elapsed())).await;
    }
}

async fn list_pods(shared: &Shared) -> Result<kube::core::ObjectList<Pod>> {
    let baseline = shared.cfg.kubelet_grace.is_some();
    let selector = if baseline {
        shared.cfg.baseline_selector.clone()
    } else {
        format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component={}",
            shared.cfg.cluster, shared.cfg.component
        )
    };
    Ok(tokio::time::timeout(API_TIMEOUT, shared.pods.list(&ListParams::default().labels(&selector)))
        .await
        .context("listing the pods: no answer")??)
}

async fn tick(shared: &Shared, st: &mut State, list: kube::core::ObjectList<Pod>) -> Result<()> {
    let baseline = shared.cfg.kubelet_grace.is_some();
    let now = unix_ms();
    let mut views = BTreeMap::new();
    for p in &list.items {
        let uid = p.uid().unwrap_or_default();
        if !st.first_seen.contains_key(&uid) {
            let hash = p
                .labels()
                .get("visio.io/template-hash")
                .or_else(|| p.labels().get("pod-template-hash"))
                .cloned()
                .unwrap_or_default();
            st.outcome.pods_seen.push((now, p.name_any(), hash));
        }
        let first = *st.first_seen.entry(uid).or_insert(now);
        let v = PodView::of(p, first, baseline);
        views.insert(v.name.clone(), v);
    }
    // Baseline: a deleted pod whose process still runs holds its node like a Terminating pod.
    let lingering = st.runs.values().filter(|r| r.terminating_since.is_some() && r.standin.is_some()).count();
    let active = views.values().filter(|v| !v.terminating).count() + lingering;
    if active > st.outcome.peak_pods {
        st.outcome.peak_pods = active;
        let listing = views
            .values()
            .map(|v| {
                let state = match (v.terminating, v.drain_since.is_some(), v.serving) {
                    (true, _, _) => "terminating",
                    (_, true, _) => "draining",
                    (_, _, true) => "serving",
                    _ => "not serving",
                };
                format!("{} {} {state} {:?}", v.name, v.template_hash, v.load)
            })
            .collect();
        st.outcome.peak_listing = (now, listing);
    }
    st.outcome.peak_pods_all = st.outcome.peak_pods_all.max(views.len());
    let open = st.meetings.values().filter(|m| m.status == MeetingStatus::Open);
    let (meetings, participants) = open.fold((0, 0), |(n, p), m| (n + 1, p + m.participants));
    let sample = Sample {
        at_ms: now,
        pods: active,
        leaving: views.values().filter(|v| !v.terminating && v.drain_since.is_some()).count() + lingering,
        meetings,
        participants,
    };
    if st.outcome.timeline.last().is_none_or(|last| !last.same_figures(&sample)) {
        st.outcome.timeline.push(sample);
    }
    for v in views.values() {
        if let Some(load) = v.load {
            if st.last_load.get(&v.uid) != Some(&load) {
                st.last_load.insert(v.uid.clone(), load);
                st.outcome.loads.push((v.name.clone(), now, load));
            }
        }
    }
    let alive: BTreeMap<&str, &PodView> =
        views.values().filter(|v| !v.terminating).map(|v| (v.uid.as_str(), v)).collect();
    settle_participants(shared, st);

    // Pods deleted (or being deleted): stop their processes, as kubelet would.
    let gone: Vec<String> = st.runs.keys().filter(|uid| !alive.contains_key(uid.as_str())).cloned().collect();
    if let Some(grace) = shared.cfg.kubelet_grace {
        let alive = alive_uids(&alive);
        kubelet_terminates(shared, st, &gone, grace).await;
        let uids: Vec<String> = st.runs.keys().cloned().collect();
        for uid in uids {
            check_run(shared, st, &uid).await;
        }
        return start_new(shared, st, views, &alive).await;
    }
    for uid in gone {
        let Some(run) = st.runs.remove(&uid) else { continue };
        if run.real.is_some() {
            for name in open_on(st, &uid) {
                end(
                    st,
                    &shared.cfg,
                    &name,
                    MeetingStatus::Cut(format!("pod {} was deleted while the meeting was live", run.pod)),
                );
            }
        } else if run.standin.is_some() {
            let state = call(run.http, "GET", "/standin/state", None).await.and_then(|(_, v)| StandinState::parse(&v));
            record_state(st, &run.pod, state.as_ref().ok());
            for name in open_on(st, &uid) {
                match &state {
                    Ok(s) if s.rooms.contains(&name) => end(
                        st,
                        &shared.cfg,
                        &name,
                        MeetingStatus::Cut(format!("pod {} was deleted while the meeting was live", run.pod)),
                    ),
                    Ok(s) => vanished(st, &shared.cfg, &name, &s.deleted),
                    Err(e) => end(
                        st,
                        &shared.cfg,
                        &name,
                        MeetingStatus::Cut(format!("pod {} was deleted; its SFU did not answer: {e}", run.pod)),
                    ),
                }
            }
        }
        st.finished.insert(uid);
        st.outcome.pods_stopped += 1;
        stop_run(shared, run).await;
    }

    let alive = alive_uids(&alive);
    let uids: Vec<String> = st.runs.keys().cloned().collect();
    for uid in uids {
        check_run(shared, st, &uid).await;
    }
    start_new(shared, st, views, &alive).await
}

fn alive_uids(alive: &BTreeMap<&str, &PodView>) -> Vec<PodView> {
    alive.values().map(|v| (*v).clone()).collect()
}

/// The baseline's kubelet: a deleted pod's stand-in gets SIGTERM (LiveKit drains: no new room, exit
/// once empty) and `grace` to exit; then SIGKILL, which cuts the meetings still on it.
async fn kubelet_terminates(shared: &Shared, st: &mut State, gone: &[String], grace: Duration) {
    for uid in gone {
        let Some(run) = st.runs.get_mut(uid) else { continue };
        match (run.terminating_since, run.standin.as_ref().and_then(Child::id)) {
            (None, Some(pid)) => {
                run.terminating_since = Some(Instant::now());
                // kubelet stops every container: the agent beside a draining worker exits at once.
                if let Some(mut agent) = run.agent.take() {
                    let agent_pid = agent.id();
                    let _ = agent.start_kill();
                    forget_pid(shared, agent_pid);
                }
                let _ = sigterm(pid);
            }
            (Some(since), Some(_)) if since.elapsed() >= grace => {
                let pod = run.pod.clone();
                for name in open_on(st, uid) {
                    end(
                        st,
                        &shared.cfg,
                        &name,
                        MeetingStatus::Cut(format!("pod {pod} was killed at the end of its grace period")),
                    );
                }
                if let Some(run) = st.runs.remove(uid) {
                    st.finished.insert(uid.clone());
                    st.outcome.pods_stopped += 1;
                    stop_run(shared, run).await;
                }
            }
            (_, None) => {
                // Exited (check_run recorded how): the pod is gone for good.
                if let Some(run) = st.runs.remove(uid) {
                    st.finished.insert(uid.clone());
                    st.outcome.pods_stopped += 1;
                    stop_run(shared, run).await;
                }
            }
            _ => {}
        }
    }
}

/// New Running pods: start their containers' processes.
async fn start_new(shared: &Shared, st: &mut State, views: BTreeMap<String, PodView>, alive: &[PodView]) -> Result<()> {
    let new: Vec<PodView> = alive
        .iter()
        .filter(|v| v.running && !st.runs.contains_key(&v.uid) && !st.finished.contains(&v.uid))
        .cloned()
        .collect();
    for v in new {
        match start_run(shared, &v).await {
            Ok(run) => {
                st.runs.insert(v.uid.clone(), run);
                st.outcome.pods_started += 1;
            }
            Err(e) => {
                let n = st.start_failures.entry(v.uid.clone()).or_insert(0);
                *n += 1;
                if *n >= START_ATTEMPTS {
                    st.outcome.problems.push(format!("could not start the processes of {}: {e:#}", v.name));
                    st.finished.insert(v.uid.clone());
                }
            }
        }
    }

    st.pods = views;
    Ok(())
}

async fn check_run(shared: &Shared, st: &mut State, uid: &str) {
    let cfg = &shared.cfg;
    let Some(run) = st.runs.get_mut(uid) else { return };
    let pod = run.pod.clone();
    if let Some(agent) = run.agent.as_mut() {
        let pid = agent.id();
        if let Ok(Some(status)) = agent.try_wait() {
            forget_pid(shared, pid);
            run.agent = None;
            st.outcome.problems.push(format!("the agent of {pod} exited by itself ({status})"));
        }
    }
    let Some(run) = st.runs.get_mut(uid) else { return };
    let Some(standin) = run.standin.as_mut() else { return };
    let pid = standin.id();
    if let Ok(Some(status)) = standin.try_wait() {
        forget_pid(shared, pid);
        run.standin = None;
        // A stand-in exits within one drain poll of its last room going: when the agent ended the
        // sessions at the deadline, that can fall between two ticks. Its final state says which
        // rooms were deleted through the API, so such a meeting is not mistaken for a cut.
        if run.real.is_some() {
            // LiveKit exits once no participant is left: what its participants said comes first.
            settle_participants(shared, st);
        }
        let Some(run) = st.runs.get_mut(uid) else { return };
        let last = match run.stdout.take() {
            Some(reader) => final_state(reader).await,
            None => None,
        };
        if let Some(state) = last {
            record_state(st, &pod, Some(&state));
            for name in open_on(st, uid) {
                if !state.rooms.contains(&name) {
                    vanished(st, cfg, &name, &state.deleted);
                }
            }
        }
        for name in open_on(st, uid) {
            end(
                st,
                cfg,
                &name,
                MeetingStatus::Cut(format!("the SFU process of {pod} exited ({status}) with the meeting live")),
            );
        }
        return;
    }
    if run.real.is_some() {
        // Its participants say what happened to its meetings (settle_participants).
        return;
    }
    let http = run.http;
    let state = match call(http, "GET", "/standin/state", None).await.and_then(|(_, v)| StandinState::parse(&v)) {
        Ok(s) => s,
        // It may be exiting; the next tick sees the exit.
        Err(_) => return,
    };
    if let Some(run) = st.runs.get_mut(uid) {
        run.draining = state.draining;
    }
    record_state(st, &pod, Some(&state));
    for name in open_on(st, uid) {
        if !state.rooms.contains(&name) {
            vanished(st, cfg, &name, &state.deleted);
        }
    }
}

fn forget_pid(shared: &Shared, pid: Option<u32>) {
    if let (Some(pid), Ok(mut pids)) = (pid, shared.pids.lock()) {
        pids.remove(&pid);
    }
}

pub(super) async fn stop_run(shared: &Shared, mut run: Run) {
    for child in [run.standin.as_mut(), run.agent.as_mut()].into_iter().flatten() {
        let pid = child.id();
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        forget_pid(shared, pid);
    }
}

async fn start_run(shared: &Shared, v: &PodView) -> Result<Run> {
    let cfg = &shared.cfg;
    let short = &v.uid[..v.uid.len().min(8)];
    let log = |what: &str| -> Result<std::fs::File> {
        Ok(std::fs::File::create(shared.log_dir.join(format!("{}-{short}-{what}.log", v.name)))?)
    };
    if let Some(real) = &shared.real {
        return start_real_run(shared, real, v, log("agent")?).await;
    }
    let mut standin = match cfg.backend {
        StandinBackend::RealLivekit => bail!("the real LiveKit runs without a stand-in"),
        StandinBackend::Livekit => {
            let mut c = Command::new(&shared.bins.standin);
            c.args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
                .args(["--drain-poll-interval", &cfg.drain_poll, "--node-id", &format!("ND_{}", v.name)])
                .env("LIVEKIT_API_KEY", &shared.api_key)
                .env("LIVEKIT_API_SECRET", &shared.api_secret);
            c
        }
        StandinBackend::Moshi { slots } => {
            let mut c = Command::new(&shared.bins.moshi_standin);
            c.args(["--addr", "127.0.0.1:0", "--batch-size", &slots.to_string()]).env("MOSHI_API_KEY", &shared.api_key);
            c
        }
        StandinBackend::WhisperLive { slots } => {
            let mut c = Command::new(&shared.bins.whisperlive_standin);
            c.args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--max_clients", &slots.to_string()]);
            c
        }
        StandinBackend::Transcriber { jobs } => {
            let mut c = Command::new(&shared.bins.transcriber_standin);
            c.args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--jobs", &jobs.to_string()])
                .args(["--nodename", &v.name])
                .env_remove("JOBS_PER_WORKER");
            c
        }
    };
    let mut standin = standin
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log("standin")?)
        .kill_on_drop(true)
        .spawn()
        .context("starting the stand-in")?;
    let standin_pid = standin.id().context("stand-in pid")?;
    let stdout = standin.stdout.take().context("stand-in stdout")?;
    let mut reader = tokio::io::BufReader::new(stdout);
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        let _ = standin.start_kill();
        bail!("the stand-in for {} printed no address line", v.name);
    }
    let field = |k: &str| -> Result<String> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string))
            .with_context(|| format!("{k}= in {line:?}"))
    };
    let http: SocketAddr = field("http")?.parse()?;
    let metrics: SocketAddr = field("metrics")?.parse()?;
    ensure!(http.ip().is_loopback() && metrics.ip().is_loopback(), "stand-in not on loopback: {line}");
    if !cfg.backend.with_agent(cfg) {
        // The chart-style baseline has no agent: LiveKit alone, drained by SIGTERM.
        if let Ok(mut pids) = shared.pids.lock() {
            pids.insert(standin_pid);
        }
        return Ok(Run {
            pod: v.name.clone(),
            uid: v.uid.clone(),
            standin: Some(standin),
            agent: None,
            stdout: Some(reader),
            http,
            draining: false,
            terminating_since: None,
            real: None,
        });
    }
    let agent_log = log("agent")?;
    let backend_args: Vec<String> = match cfg.backend {
        StandinBackend::RealLivekit => bail!("the real LiveKit's agent starts in start_real_run"),
        StandinBackend::Livekit => ["--api-url", &format!("http://{http}"), "--backend-process", "livekit-standin"]
            .into_iter()
            .map(String::from)
            .chain(["--backend-pid".to_string(), standin_pid.to_string()])
            .collect(),
        // The agent never signals a caption backend: no process flags.
        StandinBackend::Moshi { .. } | StandinBackend::WhisperLive { .. } | StandinBackend::Transcriber { .. } => {
            let (_, backend, slots) = cfg.backend.caption(&shared.bins).unwrap_or_default();
            ["--backend", backend, "--slots"].into_iter().map(String::from).chain([slots.to_string()]).collect()
        }
    };
    let metrics_flag = ["--metrics-url".to_string(), format!("http://{metrics}/metrics")];
    let agent = spawn_agent(shared, &v.name, metrics_flag.into_iter().chain(backend_args), agent_log);
    let agent = match agent {
        Ok(a) => a,
        Err(e) => {
            let _ = standin.start_kill();
            return Err(e).context("starting the agent");
        }
    };
    // Registered once both run (a failed start kills what it started, and kill_on_drop reaps it):
    // the registry never holds a pid that is not a running child of this harness.
    if let Ok(mut pids) = shared.pids.lock() {
        pids.insert(standin_pid);
        pids.extend(agent.id());
    }
    Ok(Run {
        pod: v.name.clone(),
        uid: v.uid.clone(),
        standin: Some(standin),
        agent: Some(agent),
        stdout: Some(reader),
        http,
        draining: false,
        terminating_since: None,
        real: None,
    })
}

/// `visio-operator agent` for pod `pod` with its backend's `args`, against the test cluster, its log in
/// `log`.
pub(super) fn spawn_agent(
    shared: &Shared,
    pod: &str,
    args: impl IntoIterator<Item = String>,
    log: std::fs::File,
) -> Result<Child> {
    let cfg = &shared.cfg;
    let health = free_port()?;
    Ok(Command::new(&shared.bins.operator)
        .arg("agent")
        .args(["--pod-name", pod, "--pod-namespace", &cfg.namespace])
        .args(args)
        .args(["--health-addr", &format!("127.0.0.1:{health}"), "--log-format", "text"])
        .args(&cfg.agent_args)
        .env("KUBECONFIG", &cfg.kubeconfig)
        .env("LIVEKIT_API_KEY", &shared.api_key)
        .env("LIVEKIT_API_SECRET", &shared.api_secret)
        .env_remove("RUST_LOG")
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?)
}
