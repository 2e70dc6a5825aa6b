//! The fleet harness: SFU load on loopback for the pods of one VisioCluster, or caption load for the
//! backend pods of one CaptionPool (`FleetConfig::backend`: [`StandinBackend::Moshi`] runs
//! `moshi-standin`, [`StandinBackend::WhisperLive`] `whisperlive-standin`, and a "meeting" is then one
//! caption stream holding one slot).
//!
//! kwok runs no container, so the harness plays the pod's containers: for every SFU pod of the
//! VisioCluster that kwok marks Running, it starts one `livekit-standin` (LiveKit's metrics, its
//! RoomService and its drain on SIGTERM, on free loopback ports) and one real `visio-operator agent`
//! for that pod (`--pod-name`, the stand-in's `--metrics-url`/`--api-url`, `--backend-pid` of that
//! stand-in, KUBECONFIG of the test cluster, the tenant's API key and secret). Both stop when the pod
//! is deleted (as kubelet would stop them), and every process is killed when the harness drops.
//!
//! Meetings are opened and closed through the stand-ins' control API, on serving pods only: a
//! stand-in that drains refuses new rooms (409), counted as a refused join and retried on another
//! pod. The harness keeps the books of every meeting. A meeting is **cut** when it ends while it had
//! participants without the harness closing it:
//! - its stand-in exited with the meeting's room open (LiveKit exits once no participant is left, so
//!   that only happens on a forced exit);
//! - its pod was deleted while the room was open;
//! - its room disappeared: deleted by the agent's end of sessions when the scenario did not expect
//!   a drain deadline, or gone for any other reason.
//!
//! With [`StandinBackend::RealLivekit`] the pods run the real `livekit-server` instead, with the config
//! the operator wrote into `<cluster>-livekit-config` (bound to a loopback address of its own, see
//! [`crate::livekit::adapt_config`]) and one Redis for the harness, and a meeting is a room of real
//! participants (LiveKit's Go SDK): the room is created on the pod the harness picks (as the signalling
//! Service would send its first participant there), and a meeting is **cut** when any of its
//! participants is disconnected without asking (the reason is LiveKit's), or when its pod is deleted or
//! its LiveKit exits with it open. A room the agent deleted at the drain deadline (`ROOM_DELETED`) is an
//! expected end in scenarios that expect one.
//!
//! Nothing here dials anything but 127.0.0.0/8, and every wait and loop is bounded.
//!
//! The parts, one module each: [`kubelet`] (the loop that starts and stops a pod's processes as kwok
//! runs and deletes it), [`books`] (who is connected where, and what ended how), [`view`] (the pods as
//! the harness last listed them), [`standin`] (the stand-ins' control API), [`real`] (the real LiveKit
//! behind [`StandinBackend::RealLivekit`]),, [`workload`] (the meetings a scenario opens and
//! closes) and [`upgrade`] (a fleet upgrade, waited for while the workload runs).

mod books;
mod kubelet;
mod real;
mod standin;
mod upgrade;
mod view;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use kube::Client;
use serde_json::json;
use visio_operator::pod_protocol::Load;

pub use books::{Join, Meeting, MeetingStatus, Outcome, Sample};
pub use upgrade::Upgrade;
pub use view::{PodView, View};
pub use workload::{Churn, Workload};

use crate::process::{ensure_built, kill_pids, workspace_bin};
use crate::rng::Rng;
use books::{end, opened, vanished};
use kubelet::{monitor, stop_run, Run};
use real::{operator_livekit_config, settle_participants};
use standin::{call, call_with, StandinState};

/// How often the harness lists the pods, starts and stops processes, and reads every stand-in.
pub const TICK: Duration = Duration::from_millis(200);

/// The workspace's binaries the harness runs (the operator and the stand-ins).
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `visio-operator` (its `agent` and `run` commands).
    pub operator: PathBuf,
    /// `livekit-standin`.
    pub standin: PathBuf,
    /// `moshi-standin` (checked when a caption harness starts).
    pub moshi_standin: PathBuf,
    /// `whisperlive-standin` (checked when a caption harness starts).
    pub whisperlive_standin: PathBuf,
    /// `transcriber-standin` (checked when a transcriber harness starts).
    pub transcriber_standin: PathBuf,
}

impl Binaries {
    /// `target/debug/{visio-operator,livekit-standin}`, or `VISIO_E2E_OPERATOR_BIN` and
    /// `VISIO_E2E_STANDIN_BIN`.
    pub fn find() -> Result<Self> {
        let b = Binaries {
            operator: workspace_bin("VISIO_E2E_OPERATOR_BIN", "visio-operator"),
            standin: workspace_bin("VISIO_E2E_STANDIN_BIN", "livekit-standin"),
            moshi_standin: workspace_bin("VISIO_E2E_MOSHI_STANDIN_BIN", "moshi-standin"),
            whisperlive_standin: workspace_bin("VISIO_E2E_WHISPERLIVE_STANDIN_BIN", "whisperlive-standin"),
            transcriber_standin: workspace_bin("VISIO_E2E_TRANSCRIBER_STANDIN_BIN", "transcriber-standin"),
        };
        for p in [&b.operator, &b.standin] {
            ensure_built(p)?;
        }
        Ok(b)
    }
}

/// Settings of one harness.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub namespace: String,
    /// The VisioCluster's name.
    pub cluster: String,
    /// Kubeconfig of the control plane, given to every agent.
    pub kubeconfig: PathBuf,
    pub seed: u64,
    /// A room deleted by the agent's end of sessions is an expected end at the drain deadline, not a cut.
    pub deadline_ends_expected: bool,
    /// The stand-ins' `--drain-poll-interval` (LiveKit's is 5 s).
    pub drain_poll: String,
    /// Extra flags for every agent.
    pub agent_args: Vec<String>,
    /// `None`: the pods are the VisioCluster's, with the agent beside each stand-in; the operator deletes
    /// a pod once drained, so a deleted pod's processes stop at once. `Some(grace)`: the pods are a
    /// Deployment's (selected by `baseline_selector`): the chart-style LiveKit baseline
    /// ([`crate::baseline`], without agent) or the transcriber workers (with theirs, stopped at the
    /// deletion), and a deleted pod's stand-in gets SIGTERM and up to `grace` to exit, as kubelet
    /// gives a container its termination grace period (kwok removes the pod object at once; the
    /// harness keeps the process, and counts it as a pod, until it exits or is killed at the end of
    /// the grace period, which cuts its meetings).
    pub kubelet_grace: Option<Duration>,
    /// Label selector of the baseline's pods.
    pub baseline_selector: String,
    /// The backend each pod runs.
    pub backend: StandinBackend,
    /// `app.kubernetes.io/component` of the pods followed (`sfu`, `caption-backend`).
    pub component: String,
}

/// The stand-in run for each pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StandinBackend {
    /// `livekit-standin`, credentials from `<cluster>-credentials`.
    Livekit,
    /// The real `livekit-server` (built by `e2e/livekit`), with the operator's config and keys, one Redis
    /// for the harness, and meetings of real participants.
    RealLivekit,
    /// `moshi-standin` with `slots` slots, key from `<pool>-caption-key` (`cluster` is the pool's name).
    Moshi { slots: u32 },
    /// `whisperlive-standin` with `--max_clients` `slots`, its metrics on a port of their own, and no
    /// `--api_key` (the key check is held to the real WhisperLive's in
    /// `operator/tests/whisperlive_conformance.rs`, not here).
    WhisperLive { slots: u32 },
    /// `transcriber-standin` taking `jobs` jobs, for the pool's transcriber Deployment (with
    /// `kubelet_grace`: a deleted worker drains on SIGTERM), with the agent beside it; a "meeting" is one
    /// room's captioning job.
    Transcriber { jobs: u32 },
}

impl StandinBackend {
    /// The caption backend's binary and the agent's `--backend`, `None` for LiveKit.
    fn caption(&self, bins: &Binaries) -> Option<(PathBuf, &'static str, u32)> {
        match self {
            StandinBackend::Livekit | StandinBackend::RealLivekit => None,
            StandinBackend::Moshi { slots } => Some((bins.moshi_standin.clone(), "moshi", *slots)),
            StandinBackend::WhisperLive { slots } => Some((bins.whisperlive_standin.clone(), "whisperlive", *slots)),
            StandinBackend::Transcriber { jobs } => Some((bins.transcriber_standin.clone(), "transcriber", *jobs)),
        }
    }

    /// The pods run the agent beside the stand-in (all but the chart-style LiveKit baseline).
    fn with_agent(&self, cfg: &FleetConfig) -> bool {
        !self.is_livekit() || cfg.kubelet_grace.is_none()
    }

    fn is_livekit(&self) -> bool {
        matches!(self, StandinBackend::Livekit | StandinBackend::RealLivekit)
    }
}

impl FleetConfig {
    pub fn new(namespace: &str, cluster: &str, kubeconfig: &Path) -> Self {
        FleetConfig {
            namespace: namespace.into(),
            cluster: cluster.into(),
            kubeconfig: kubeconfig.into(),
            seed: 4,
            deadline_ends_expected: false,
            drain_poll: "1s".into(),
            agent_args: Vec::new(),
            kubelet_grace: None,
            baseline_selector: String::new(),
            backend: StandinBackend::Livekit,
            component: "sfu".into(),
        }
    }
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, PodView>,
    first_seen: BTreeMap<String, i64>,
    runs: BTreeMap<String, Run>,
    /// Pods (by uid) whose processes were stopped or could not start: never started again.
    finished: BTreeSet<String>,
    start_failures: BTreeMap<String, u32>,
    meetings: BTreeMap<String, Meeting>,
    outcome: Outcome,
    last_load: BTreeMap<String, Load>,
    rng: Option<Rng>,
    /// Real LiveKit: meetings whose drain warning was recorded (every participant receives it).
    warned_meetings: BTreeSet<String>,
}

struct Shared {
    cfg: FleetConfig,
    bins: Binaries,
    pods: Api<Pod>,
    api_key: String,
    api_secret: String,
    log_dir: PathBuf,
    state: tokio::sync::Mutex<State>,
    /// Pids of every running child, so that a drop can kill them even while the state is locked.
    pids: std::sync::Mutex<BTreeSet<u32>>,
    /// The real-LiveKit parts ([`StandinBackend::RealLivekit`]).
    real: Option<crate::livekit::RealFleet>,
}

/// The harness of one VisioCluster. Stop it with [`Fleet::stop`]; dropping it kills everything too.
pub struct Fleet {
    shared: Arc<Shared>,
    monitor: Option<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Starts the harness for the VisioCluster `cfg.cluster`: waits (60 s at most) for its credentials
    /// Secret, then follows its SFU pods every [`TICK`].
    pub async fn start(client: Client, cfg: FleetConfig) -> Result<Fleet> {
        let bins = Binaries::find()?;
        if let Some((bin, _, _)) = cfg.backend.caption(&bins) {
            ensure_built(&bin)?;
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
        let (name, key_field, secret_field) = match cfg.backend {
            StandinBackend::Livekit | StandinBackend::RealLivekit => {
                (format!("{}-credentials", cfg.cluster), "apiKey", Some("apiSecret"))
            }
            StandinBackend::Moshi { .. } | StandinBackend::WhisperLive { .. } | StandinBackend::Transcriber { .. } => {
                (format!("{}-caption-key", cfg.cluster), "apiKey", None)
            }
        };
        let secret = crate::wait_for(&format!("Secret {name}"), Duration::from_secs(60), || {
            let secrets = secrets.clone();
            let name = name.clone();
            async move { Ok(secrets.get_opt(&name).await?) }
        })
        .await?;
        let field = |k: &str| -> Result<String> {
            let data = secret.data.as_ref().context("credentials without data")?;
            Ok(String::from_utf8(data.get(k).with_context(|| format!("no {k} in {name}"))?.0.clone())?)
        };
        let log_dir = std::env::temp_dir().join("visio-e2e-fleet").join(&cfg.namespace);
        let _ = std::fs::remove_dir_all(&log_dir);
        std::fs::create_dir_all(&log_dir)?;
        let (api_key, api_secret) = (field(key_field)?, secret_field.map(field).transpose()?.unwrap_or_default());
        let real = match cfg.backend {
            StandinBackend::RealLivekit => {
                let config = operator_livekit_config(&secrets, &cfg.cluster).await?;
                Some(crate::livekit::RealFleet::start(config, api_key.clone(), api_secret.clone(), &log_dir).await?)
            }
            _ => None,
        };
        let pids = real.as_ref().map(|r| r.pids().into_iter().collect()).unwrap_or_default();
        let shared = Arc::new(Shared {
            pods: Api::namespaced(client, &cfg.namespace),
            api_key,
            api_secret,
            real,
            state: tokio::sync::Mutex::new(State { rng: Some(Rng::new(cfg.seed)), ..State::default() }),
            cfg,
            bins,
            log_dir,
            pids: std::sync::Mutex::new(pids),
        });
        let monitor = tokio::spawn(monitor(shared.clone()));
        Ok(Fleet { shared, monitor: Some(monitor) })
    }

    /// Where the processes' logs go.
    pub fn log_dir(&self) -> &Path {
        &self.shared.log_dir
    }

    /// A copy of what the harness knows now.
    pub async fn view(&self) -> View {
        let st = self.shared.state.lock().await;
        View {
            pods: st.pods.clone(),
            live: st.runs.values().filter(|r| r.standin.is_some()).map(|r| r.pod.clone()).collect(),
            meetings: st.meetings.clone(),
            outcome: st.outcome.clone(),
            lingering: st.runs.values().filter(|r| r.terminating_since.is_some() && r.standin.is_some()).count(),
        }
    }

    /// Polls the view every [`TICK`] until `check` returns `Some`, for at most `timeout`.
    pub async fn wait<T>(&self, what: &str, timeout: Duration, mut check: impl FnMut(&View) -> Option<T>) -> Result<T> {
        let start = Instant::now();
        loop {
            let view = self.view().await;
            if let Some(v) = check(&view) {
                return Ok(v);
            }
            if start.elapsed() >= timeout {
                let pods: Vec<String> = view
                    .pods
                    .values()
                    .map(|p| {
                        format!(
                            "{} hash={} serving={} draining={} terminating={} load={:?}",
                            p.name,
                            p.template_hash,
                            p.serving,
                            p.drain_since.is_some(),
                            p.terminating,
                            p.load
                        )
                    })
                    .collect();
                bail!(
                    "timed out after {timeout:?} waiting for {what}; {} open meetings; pods:\n  {}\nproblems: {:?}\ncuts: {:?}",
                    view.open_meetings(),
                    pods.join("\n  "),
                    view.outcome.problems,
                    view.outcome.cuts
                );
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// Waits until `count` pods serve with their stand-in running and their agent's load reported.
    pub async fn wait_serving(&self, count: usize, timeout: Duration) -> Result<()> {
        self.wait(&format!("{count} serving SFU pods with their agent reporting"), timeout, |v| {
            // The baseline has no agent: a running stand-in is all there is to wait for.
            let cfg = &self.shared.cfg;
            let reported = |p: &PodView| p.load.is_some() || !cfg.backend.with_agent(cfg);
            let ready = v.active().filter(|p| p.serving && reported(p) && v.live.contains(&p.name)).count();
            (ready == count && v.active().count() == count).then_some(())
        })
        .await
    }

    /// Opens a meeting on the least-loaded serving pod (ties broken at random); a pod that refuses it
    /// (draining) is counted and the next one is tried.
    pub async fn open(&self, name: &str, participants: u32) -> Result<Join> {
        let mut guard = self.shared.state.lock().await;
        let st = &mut *guard;
        ensure!(!st.meetings.contains_key(name), "meeting {name} opened twice");
        let mut load: BTreeMap<&str, u32> = BTreeMap::new();
        for m in st.meetings.values().filter(|m| m.status == MeetingStatus::Open) {
            *load.entry(m.uid.as_str()).or_insert(0) += m.participants;
        }
        let rng = st.rng.get_or_insert_with(|| Rng::new(1));
        let mut candidates: Vec<(u32, u64, String)> = st
            .runs
            .values()
            .filter(|r| r.standin.is_some() && !r.draining)
            .filter(|r| st.pods.get(&r.pod).is_some_and(|p| p.uid == r.uid && p.serving && !p.terminating))
            .map(|r| (load.get(r.uid.as_str()).copied().unwrap_or(0), rng.next_u64(), r.uid.clone()))
            .collect();
        candidates.sort();
        for (_, _, uid) in candidates.into_iter().take(3) {
            let Some(run) = st.runs.get(&uid) else { continue };
            if let (Some(real), Some(node)) = (&self.shared.real, &run.real) {
                if real.open(node, name, participants).await? {
                    return Ok(opened(st, name, participants, &run.pod.clone(), &uid));
                }
                st.outcome.refused_joins += 1;
                continue;
            }
            let body = json!({"name": name, "participants": participants});
            let key = format!("kyutai-api-key: {}\r\n", self.shared.api_key);
            match call_with(run.http, "POST", "/standin/rooms", Some(&body), &key).await {
                Ok((201, _)) => return Ok(opened(st, name, participants, &run.pod.clone(), &uid)),
                Ok((409, _)) => st.outcome.refused_joins += 1,
                Ok((503, _)) => st.outcome.rejected_full += 1,
                Ok((status, body)) => bail!("opening {name} on {}: {status} {body}", run.pod),
                // The stand-in just exited (its pod drained); the next tick sees it.
                Err(_) => st.outcome.refused_joins += 1,
            }
        }
        st.outcome.no_serving_pod += 1;
        Ok(Join::NoServingPod)
    }

    /// Changes the participants of an open meeting (an existing room admits participants, draining or
    /// not).
    pub async fn set_participants(&self, name: &str, participants: u32) -> Result<()> {
        let mut guard = self.shared.state.lock().await;
        let st = &mut *guard;
        let m = st.meetings.get(name).with_context(|| format!("no meeting {name}"))?;
        ensure!(m.status == MeetingStatus::Open, "meeting {name} is {:?}", m.status);
        ensure!(participants > 0, "a meeting with no participant is a closed one");
        let run = st.runs.get(&m.uid).with_context(|| format!("no processes for {}", m.pod))?;
        if let (Some(real), Some(node)) = (&self.shared.real, &run.real) {
            real.resize(node, name, m.participants, participants).await?;
            if let Some(m) = st.meetings.get_mut(name) {
                m.participants = participants;
            }
            return Ok(());
        }
        let body = json!({"name": name, "participants": participants});
        let (status, body) = call(run.http, "POST", "/standin/rooms", Some(&body)).await?;
        ensure!(status == 200, "setting the participants of {name}: {status} {body}");
        if let Some(m) = st.meetings.get_mut(name) {
            m.participants = participants;
        }
        Ok(())
    }

    /// Closes a meeting (its participants leave). Returns how it ended: `Closed`, or what had
    /// happened to it before.
    pub async fn close(&self, name: &str) -> Result<MeetingStatus> {
        let mut guard = self.shared.state.lock().await;
        let st = &mut *guard;
        let m = st.meetings.get(name).with_context(|| format!("no meeting {name}"))?.clone();
        if m.status != MeetingStatus::Open {
            return Ok(m.status);
        }
        if let Some(real) = &self.shared.real {
            // Whatever happened to its participants before is settled first: a cut stays a cut.
            settle_participants(&self.shared, st);
            if st.meetings[name].status != MeetingStatus::Open {
                return Ok(st.meetings[name].status.clone());
            }
            let node = st.runs.get(&m.uid).filter(|r| r.standin.is_some()).and_then(|r| r.real.clone());
            let Some(node) = node else {
                end(
                    st,
                    &self.shared.cfg,
                    name,
                    MeetingStatus::Cut(format!("its SFU ({}) was gone when it closed", m.pod)),
                );
                return Ok(st.meetings[name].status.clone());
            };
            real.resize(&node, name, m.participants, 0).await?;
            end(st, &self.shared.cfg, name, MeetingStatus::Closed);
            st.outcome.closed += 1;
            return Ok(st.meetings[name].status.clone());
        }
        let http = st.runs.get(&m.uid).filter(|r| r.standin.is_some()).map(|r| r.http);
        let Some(http) = http else {
            end(st, &self.shared.cfg, name, MeetingStatus::Cut(format!("its SFU ({}) was gone when it closed", m.pod)));
            return Ok(st.meetings[name].status.clone());
        };
        match call(http, "DELETE", &format!("/standin/rooms/{name}"), None).await {
            Ok((200, _)) => {
                end(st, &self.shared.cfg, name, MeetingStatus::Closed);
                st.outcome.closed += 1;
            }
            Ok((404, _)) => {
                let state = call(http, "GET", "/standin/state", None).await.and_then(|(_, v)| StandinState::parse(&v));
                let deleted = state.map(|s| s.deleted).unwrap_or_default();
                vanished(st, &self.shared.cfg, name, &deleted);
            }
            Ok((status, body)) => bail!("closing {name}: {status} {body}"),
            Err(e) => end(
                st,
                &self.shared.cfg,
                name,
                MeetingStatus::Cut(format!("its SFU ({}) did not answer when it closed: {e}", m.pod)),
            ),
        }
        Ok(st.meetings[name].status.clone())
    }

    /// Stops following the pods, kills every process, and returns the outcome.
    pub async fn stop(mut self) -> Outcome {
        if let Some(m) = self.monitor.take() {
            m.abort();
            let _ = m.await;
        }
        let mut st = self.shared.state.lock().await;
        let uids: Vec<String> = st.runs.keys().cloned().collect();
        for uid in uids {
            if let Some(run) = st.runs.remove(&uid) {
                stop_run(&self.shared, run).await;
            }
        }
        st.outcome.clone()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(m) = self.monitor.take() {
            m.abort();
        }
        if let Ok(mut st) = self.shared.state.try_lock() {
            for run in st.runs.values_mut() {
                for child in [run.standin.as_mut(), run.agent.as_mut()].into_iter().flatten() {
                    let _ = child.start_kill();
                }
            }
        }
        let pids = self.shared.pids.lock().map(|p| p.clone()).unwrap_or_default();
        kill_pids(&pids);
    }
}
