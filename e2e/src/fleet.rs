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

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _, Result};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdout, Command};
use visio_operator::pod_protocol::{self, Load};

/// How often the harness lists the pods, starts and stops processes, and reads every stand-in.
pub const TICK: Duration = Duration::from_millis(200);
/// Deadline of one call to a stand-in's control API.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of one call to the API server.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at starting the processes of one pod before giving up on it.
const START_ATTEMPTS: u32 = 3;

/// Now, in Unix milliseconds.
pub fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The operator's two binaries the harness runs.
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
        let dir = crate::repo().join("target/debug");
        let pick = |env: &str, name: &str| std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| dir.join(name));
        let b = Binaries {
            operator: pick("VISIO_E2E_OPERATOR_BIN", "visio-operator"),
            standin: pick("VISIO_E2E_STANDIN_BIN", "livekit-standin"),
            moshi_standin: pick("VISIO_E2E_MOSHI_STANDIN_BIN", "moshi-standin"),
            whisperlive_standin: pick("VISIO_E2E_WHISPERLIVE_STANDIN_BIN", "whisperlive-standin"),
            transcriber_standin: pick("VISIO_E2E_TRANSCRIBER_STANDIN_BIN", "transcriber-standin"),
        };
        for p in [&b.operator, &b.standin] {
            ensure!(
                p.exists(),
                "{} not found: build the operator and the stand-ins first (`make build standins`)",
                p.display()
            );
        }
        Ok(b)
    }
}

/// A client for the control plane behind `kubeconfig`, refused unless it is on loopback.
pub async fn client_at(kubeconfig: &Path) -> Result<Client> {
    Ok(Client::try_from(config_at(kubeconfig).await?)?)
}

/// The client configuration of a kubeconfig, on loopback only (see [`client_at`]).
pub async fn config_at(kubeconfig: &Path) -> Result<kube::Config> {
    let kc = Kubeconfig::read_from(kubeconfig).with_context(|| format!("reading {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let host = cfg.cluster_url.host().unwrap_or_default().to_string();
    if host != "127.0.0.1" && host != "localhost" && host != "[::1]" {
        bail!("refusing to test against {host}: the e2e suite only talks to loopback");
    }
    Ok(cfg)
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A small seeded generator (SplitMix64): scenarios are random but repeatable.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform in `lo..=hi`, to the millisecond.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        Duration::from_millis(self.range(lo.as_millis() as u64, hi.as_millis() as u64))
    }
}

/// One SFU pod as the harness last listed it.
#[derive(Clone, Debug)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    /// `metadata.creationTimestamp`, Unix milliseconds (the API gives whole seconds).
    pub created_ms: Option<i64>,
    /// When the harness first listed it, Unix milliseconds.
    pub first_seen_ms: i64,
    /// kwok marked it Running.
    pub running: bool,
    /// It carries a deletionTimestamp.
    pub terminating: bool,
    /// Label `visio.io/serving=true`.
    pub serving: bool,
    /// Annotation `visio.io/drain-since`.
    pub drain_since: Option<String>,
    /// Annotation `visio.io/warn-deadline`.
    pub warn_deadline: Option<String>,
    /// Annotation `visio.io/end-sessions: "true"`.
    pub end_sessions: bool,
    pub template_hash: String,
    pub version: String,
    /// The agent's `visio.io/load`, when present and valid.
    pub load: Option<Load>,
}

impl PodView {
    fn of(p: &Pod, first_seen_ms: i64, baseline: bool) -> Self {
        let ann = |k: &str| p.metadata.annotations.as_ref().and_then(|a| a.get(k)).cloned();
        let label = |k: &str| p.metadata.labels.as_ref().and_then(|a| a.get(k)).cloned();
        PodView {
            name: p.name_any(),
            uid: p.uid().unwrap_or_default(),
            created_ms: p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_millisecond()),
            first_seen_ms,
            running: p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
            terminating: p.metadata.deletion_timestamp.is_some(),
            serving: if baseline {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            } else {
                label(pod_protocol::SERVING).as_deref() == Some("true")
            },
            drain_since: ann(pod_protocol::DRAIN_SINCE),
            warn_deadline: ann(pod_protocol::WARN_DEADLINE),
            end_sessions: ann(pod_protocol::END_SESSIONS).as_deref() == Some("true"),
            template_hash: label("visio.io/template-hash").or_else(|| label("pod-template-hash")).unwrap_or_default(),
            version: label("visio.io/livekit-version").unwrap_or_default(),
            load: ann(pod_protocol::LOAD).and_then(|t| pod_protocol::parse_load(&t).ok()),
        }
    }
}

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
}

/// A copy of the harness's view at one instant.
#[derive(Clone, Debug)]
pub struct View {
    /// The SFU pods of the last listing, by name.
    pub pods: BTreeMap<String, PodView>,
    /// Pods whose stand-in runs (by name).
    pub live: BTreeSet<String>,
    pub meetings: BTreeMap<String, Meeting>,
    pub outcome: Outcome,
    /// Baseline: processes of deleted pods still running (Terminating pods, in a real cluster).
    pub lingering: usize,
}

impl View {
    /// Pods without a deletionTimestamp.
    pub fn active(&self) -> impl Iterator<Item = &PodView> {
        self.pods.values().filter(|p| !p.terminating)
    }

    pub fn open_meetings(&self) -> usize {
        self.meetings.values().filter(|m| m.status == MeetingStatus::Open).count()
    }

    /// Participants of open meetings on each pod.
    pub fn participants_by_pod(&self) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for m in self.meetings.values().filter(|m| m.status == MeetingStatus::Open) {
            *out.entry(m.pod.clone()).or_insert(0) += m.participants;
        }
        out
    }
}

impl View {
    /// The one template hash of the active pods (an error if they run several).
    pub fn only_hash(&self) -> Result<String> {
        let hashes: BTreeSet<&str> = self.active().map(|p| p.template_hash.as_str()).collect();
        ensure!(hashes.len() == 1, "pods of several templates: {hashes:?}");
        Ok(hashes.into_iter().next().unwrap_or_default().to_string())
    }
}

/// The LiveKit version the scenarios start from, and the one they upgrade to.
pub const OLD_VERSION: &str = "v1.9.4";
pub const NEW_VERSION: &str = "v1.9.5";
/// The VisioCluster of every fleet scenario.
pub const VC_NAME: &str = "visio";

/// A VisioCluster in pod network mode (no node per pod), without TURN, with a one-minute drain
/// timeout (the least the CRD allows) and `spec` merged over that.
pub fn visiocluster(display: &str, spec: Value) -> Value {
    let mut vc = json!({
        "apiVersion": "visio.io/v1alpha1", "kind": "VisioCluster", "metadata": {"name": VC_NAME},
        "spec": {
            "version": OLD_VERSION,
            "tenant": {"displayName": display},
            "signaling": {"host": "visio.example.gouv.fr"},
            "sfu": {"network": {"mode": "podNetwork"}, "capacity": {"participantsPerPod": 100}},
            "turn": {"enabled": false},
            "upgrade": {"drainTimeout": "1m", "warnBefore": "20s"}
        }
    });
    crate::merge_patch(&mut vc["spec"], &spec);
    vc
}

/// What happened to a join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Join {
    /// Opened on this pod.
    Joined(String),
    /// No serving pod would take it.
    NoServingPod,
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

/// The processes playing one pod's containers.
struct Run {
    pod: String,
    uid: String,
    standin: Option<Child>,
    agent: Option<Child>,
    /// Kept open so the stand-in never writes to a closed pipe; its last line is the final state.
    stdout: Option<tokio::io::BufReader<ChildStdout>>,
    http: SocketAddr,
    /// The stand-in says it drains (it refuses new rooms).
    draining: bool,
    /// Baseline only: when its pod was deleted and the stand-in got SIGTERM (kubelet's role).
    terminating_since: Option<Instant>,
    /// The real LiveKit node of this pod ([`StandinBackend::RealLivekit`]).
    real: Option<crate::livekit::RealNode>,
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

/// The stand-in's `GET /standin/state`, as far as the harness reads it.
struct StandinState {
    rooms: BTreeSet<String>,
    draining: bool,
    warnings: Vec<Value>,
    deleted: Vec<String>,
}

impl StandinState {
    fn parse(v: &Value) -> Result<Self> {
        let rooms = v["rooms"]
            .as_array()
            .context("state without rooms")?
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        Ok(StandinState {
            rooms,
            draining: v["draining"].as_bool().unwrap_or(false),
            warnings: v["warnings"].as_array().cloned().unwrap_or_default(),
            deleted: v["deleted"]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
        })
    }
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

/// A minimal HTTP/1.0 call to a loopback address: the status and the JSON body (`Null` if none).
async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    call_with(addr, method, path, body, "").await
}

/// [`call`] with extra header lines (each ending in CRLF).
async fn call_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &str,
) -> Result<(u16, Value)> {
    ensure!(addr.ip().is_loopback(), "refusing to dial {addr}: loopback only");
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(4 << 20).read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
        let status: u16 = head.split_whitespace().nth(1).context("no status")?.parse()?;
        anyhow::Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{method} http://{addr}{path}: no answer within {CALL_TIMEOUT:?}"))?
}

fn kill_pids(pids: &BTreeSet<u32>) {
    if pids.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Fleet {
    /// Starts the harness for the VisioCluster `cfg.cluster`: waits (60 s at most) for its credentials
    /// Secret, then follows its SFU pods every [`TICK`].
    pub async fn start(client: Client, cfg: FleetConfig) -> Result<Fleet> {
        let bins = Binaries::find()?;
        if let Some((bin, _, _)) = cfg.backend.caption(&bins) {
            ensure!(bin.exists(), "{} not found: `make standins`", bin.display());
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

/// Books a meeting the pod `pod` (`uid`) took.
fn opened(st: &mut State, name: &str, participants: u32, pod: &str, uid: &str) -> Join {
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
fn end(st: &mut State, cfg: &FleetConfig, name: &str, status: MeetingStatus) {
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
fn vanished(st: &mut State, cfg: &FleetConfig, name: &str, deleted: &[String]) {
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

fn open_on(st: &State, uid: &str) -> Vec<String> {
    st.meetings.values().filter(|m| m.uid == uid && m.status == MeetingStatus::Open).map(|m| m.name.clone()).collect()
}

async fn monitor(shared: Arc<Shared>) {
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
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
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

fn record_state(st: &mut State, pod: &str, state: Option<&StandinState>) {
    if let Some(s) = state {
        st.outcome.warnings.insert(pod.to_string(), s.warnings.clone());
        st.outcome.forced_ends.insert(pod.to_string(), s.deleted.clone());
    }
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

/// The `{"final": <state>}` line an exited stand-in printed last, if any (bounded: the pipe is closed).
async fn final_state(mut reader: tokio::io::BufReader<ChildStdout>) -> Option<StandinState> {
    let mut rest = String::new();
    let read = tokio::time::timeout(Duration::from_secs(2), reader.read_to_string(&mut rest)).await;
    if !matches!(read, Ok(Ok(_))) {
        return None;
    }
    rest.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| StandinState::parse(&v["final"]).ok())
}

fn forget_pid(shared: &Shared, pid: Option<u32>) {
    if let (Some(pid), Ok(mut pids)) = (pid, shared.pids.lock()) {
        pids.remove(&pid);
    }
}

async fn stop_run(shared: &Shared, mut run: Run) {
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

/// The operator's `livekit.yaml` from `<cluster>-livekit-config`.
async fn operator_livekit_config(secrets: &Api<Secret>, cluster: &str) -> Result<String> {
    let name = format!("{cluster}-livekit-config");
    let secret = crate::wait_for(&format!("Secret {name}"), Duration::from_secs(60), || async {
        Ok(secrets.get_opt(&name).await?)
    })
    .await?;
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get("livekit.yaml"))
        .with_context(|| format!("no livekit.yaml in {name}"))?;
    Ok(String::from_utf8(data.0.clone())?)
}

/// `visio-operator agent` for pod `pod` with its backend's `args`, against the test cluster, its log in
/// `log`.
fn spawn_agent(
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

/// One pod's real LiveKit and its agent, as the pod spec says: the agent reads the same config. The
/// chart-style baseline runs LiveKit alone.
async fn start_real_run(
    shared: &Shared,
    real: &crate::livekit::RealFleet,
    v: &PodView,
    agent_log: std::fs::File,
) -> Result<Run> {
    let cfg = &shared.cfg;
    let (mut node_child, node) = real.start_node().await.with_context(|| format!("livekit-server for {}", v.name))?;
    let node_pid = node_child.id().context("livekit-server pid")?;
    let agent = if cfg.backend.with_agent(cfg) {
        let args = [
            "--metrics-url".to_string(),
            node.addr.metrics_url(),
            "--api-url".into(),
            node.addr.api_url(),
            "--backend-process".into(),
            "livekit-server".into(),
            "--backend-pid".into(),
            node_pid.to_string(),
            "--livekit-config".into(),
            node.config_path.display().to_string(),
        ];
        let spawned = spawn_agent(shared, &v.name, args, agent_log);
        match spawned {
            Ok(a) => Some(a),
            Err(e) => {
                let _ = node_child.start_kill();
                return Err(e).context("starting the agent");
            }
        }
    } else {
        None
    };
    if let Ok(mut pids) = shared.pids.lock() {
        pids.insert(node_pid);
        pids.extend(agent.as_ref().and_then(Child::id));
    }
    Ok(Run {
        pod: v.name.clone(),
        uid: v.uid.clone(),
        standin: Some(node_child),
        agent,
        stdout: None,
        http: SocketAddr::new(node.addr.ip.into(), node.addr.http_port),
        draining: false,
        terminating_since: None,
        real: Some(node),
    })
}

/// Real LiveKit: what the participants said since the last call. A drain warning is recorded once per
/// meeting; a participant disconnected without asking cuts its meeting, unless the agent deleted the
/// room at the drain deadline in a scenario that expects it.
fn settle_participants(shared: &Shared, st: &mut State) {
    let Some(real) = &shared.real else { return };
    for e in real.new_events() {
        let meeting = crate::livekit::meeting_of(&e.id).to_string();
        let Some(m) = st.meetings.get(&meeting).cloned() else { continue };
        match e.event.as_str() {
            "data" if e.topic == "visio.system" && st.warned_meetings.insert(meeting.clone()) => {
                st.outcome.warnings.entry(m.pod.clone()).or_default().push(json!({
                    "room": meeting, "topic": e.topic, "data": e.payload
                }));
            }
            "disconnected" if m.status == MeetingStatus::Open => {
                if e.reason == "ROOM_DELETED" {
                    st.outcome.forced_ends.entry(m.pod.clone()).or_default().push(meeting.clone());
                    vanished(st, &shared.cfg, &meeting, std::slice::from_ref(&meeting));
                } else {
                    let why = format!("participant {} was disconnected ({})", e.id, e.reason);
                    end(st, &shared.cfg, &meeting, MeetingStatus::Cut(why));
                }
            }
            _ => {}
        }
    }
}

/// Meetings opened in bulk, closed at planned times, and a stream of short meetings arriving: the
/// load a scenario drives through a [`Fleet`]. Every step does a bounded amount of work.
pub struct Workload {
    rng: Rng,
    /// Open meetings the workload will close, and when.
    planned: BTreeMap<String, Instant>,
    churn: Option<Churn>,
    next_churn: Option<Instant>,
    counter: u64,
    /// Meetings that found no serving pod (the churn only; bulk opens fail instead).
    pub unplaced: u32,
}

/// Short meetings arriving one every `every`, each lasting between `lasting.0` and `lasting.1`.
#[derive(Clone, Debug)]
pub struct Churn {
    pub prefix: String,
    pub every: Duration,
    pub participants: (u32, u32),
    pub lasting: (Duration, Duration),
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        Workload {
            rng: Rng::new(seed),
            planned: BTreeMap::new(),
            churn: None,
            next_churn: None,
            counter: 0,
            unplaced: 0,
        }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Opens `count` meetings named `<prefix>-<n>`, each with `participants.0..=participants.1`
    /// participants; fails if one finds no serving pod.
    pub async fn open_many(
        &mut self,
        fleet: &Fleet,
        prefix: &str,
        count: usize,
        participants: (u32, u32),
    ) -> Result<Vec<String>> {
        let mut names = Vec::with_capacity(count);
        for i in 0..count {
            let name = format!("{prefix}-{i}");
            let n = self.rng.range(u64::from(participants.0), u64::from(participants.1)) as u32;
            match fleet.open(&name, n).await? {
                Join::Joined(_) => names.push(name),
                Join::NoServingPod => bail!("no serving pod for meeting {name}"),
            }
        }
        Ok(names)
    }

    /// Plans the end of each of `names` at a random instant between `from + lo` and `from + hi`.
    pub fn end_between(&mut self, names: &[String], from: Instant, lo: Duration, hi: Duration) {
        for name in names {
            let at = from + self.rng.duration(lo, hi);
            self.planned.insert(name.clone(), at);
        }
    }

    /// Starts (or, with `None`, stops) the stream of short meetings.
    pub fn churn(&mut self, churn: Option<Churn>) {
        self.next_churn = churn.as_ref().map(|_| Instant::now());
        self.churn = churn;
    }

    /// Meetings still planned to close.
    pub fn planned(&self) -> usize {
        self.planned.len()
    }

    /// Closes the meetings that are due and opens the short meeting that is due, if any.
    pub async fn step(&mut self, fleet: &Fleet) -> Result<()> {
        let now = Instant::now();
        let due: Vec<String> = self.planned.iter().filter(|(_, at)| **at <= now).map(|(n, _)| n.clone()).collect();
        for name in due {
            self.planned.remove(&name);
            fleet.close(&name).await?;
        }
        if let (Some(churn), Some(next)) = (self.churn.clone(), self.next_churn) {
            if next <= now {
                self.next_churn = Some(next + churn.every);
                self.counter += 1;
                let name = format!("{}-{}", churn.prefix, self.counter);
                let n = self.rng.range(u64::from(churn.participants.0), u64::from(churn.participants.1)) as u32;
                match fleet.open(&name, n).await? {
                    Join::Joined(_) => {
                        let at = now + self.rng.duration(churn.lasting.0, churn.lasting.1);
                        self.planned.insert(name, at);
                    }
                    Join::NoServingPod => self.unplaced += 1,
                }
            }
        }
        Ok(())
    }

    /// Runs [`Workload::step`] every 100 ms for `duration`.
    pub async fn run_for(&mut self, fleet: &Fleet, duration: Duration) -> Result<()> {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            self.step(fleet).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Stops the stream and closes every meeting still planned.
    pub async fn close_all(&mut self, fleet: &Fleet) -> Result<()> {
        self.churn(None);
        let names: Vec<String> = self.planned.keys().cloned().collect();
        self.planned.clear();
        for name in names {
            fleet.close(&name).await?;
        }
        Ok(())
    }
}
