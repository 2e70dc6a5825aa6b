//! The in-pod agent against `livekit-standin` (a LiveKit stand-in, loopback only, from `standins/`): its
//! backend client, the `agent` command's flags, and the whole drain path driven from an in-memory pod instead
//! of Kubernetes. The stand-in's own drain semantics are checked in `standins/tests/livekit_standin.rs`.
//!
//! Every wait is bounded in time, every stand-in is killed when its handle drops, and the tests that start
//! stand-ins run one at a time: the agent finds the stand-in among this process's children, and refuses to
//! choose when there are two.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use visio_operator::agent::backend::{Backend, BackendError, DrainStatus};
use visio_operator::agent::control::{self, Settings};
use visio_operator::agent::health::{self, Health};
use visio_operator::agent::http::{self, LoopbackUrl};
use visio_operator::agent::jwt::{ApiCredentials, VideoGrant};
use visio_operator::agent::livekit::{LiveKit, LiveKitConfig};
use visio_operator::agent::pod::{Marks, OwnPod, PodError};
use visio_operator::agent::process::Scope;
use visio_operator::agent::prometheus::{sum_metric, Sum};
use visio_operator::pod_protocol::Load;

mod common;

const KEY: &str = "APIvisiotest";
const SECRET: &str = "visio-test-secret-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(15);

/// Stand-ins are found among this process's children: one at a time.
static ONE_STANDIN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn load(participants: u32, rooms: u32, draining: bool) -> Load {
    Load { participants, rooms, capacity: None, draining, ..Load::default() }
}

/// A running `livekit-standin`, killed on drop.
struct Standin {
    child: tokio::process::Child,
    http: SocketAddr,
    metrics: SocketAddr,
}

impl Standin {
    async fn start(drain_poll: &str) -> Standin {
        let mut child = tokio::process::Command::new(common::standin("livekit-standin"))
            .args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--drain-poll-interval", drain_poll])
            .env("LIVEKIT_API_KEY", KEY)
            .env("LIVEKIT_API_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("livekit-standin starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        tokio::time::timeout(WAIT, tokio::io::BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("livekit-standin prints its addresses in time")
            .expect("stdout readable");
        let field = |k: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string))
                .unwrap_or_else(|| panic!("{k}= in {line:?}"))
        };
        Standin { http: field("http").parse().unwrap(), metrics: field("metrics").parse().unwrap(), child }
    }

    fn url(&self, path: &str) -> LoopbackUrl {
        LoopbackUrl::parse(&format!("http://{}{path}", self.http)).unwrap()
    }

    fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let body = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
        let resp = http::call(method, &self.url(path), &[], body, Duration::from_secs(5), 1 << 20)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        (resp.status, serde_json::from_slice(&resp.body).unwrap_or(Value::Null))
    }

    async fn open_room(&self, name: &str, participants: u32) -> StatusCode {
        self.call(Method::POST, "/standin/rooms", json!({"name": name, "participants": participants})).await.0
    }

    async fn state(&self) -> Value {
        self.call(Method::GET, "/standin/state", Value::Null).await.1
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("stand-in exits in time").unwrap()
    }

    fn config(&self, credentials: Option<ApiCredentials>) -> LiveKitConfig {
        let metrics = LoopbackUrl::parse(&format!("http://{}/metrics", self.metrics)).unwrap();
        let mut c = LiveKitConfig::new(metrics, self.url(""), credentials);
        c.process_name = "livekit-standin".into();
        c.scope = Scope::ChildrenOf(std::process::id() as i32);
        c
    }

    fn livekit(&self) -> LiveKit {
        LiveKit::new(self.config(Some(ApiCredentials::new(KEY, SECRET)))).unwrap()
    }
}

/// Polls `cond` every 25 ms until it holds, for at most [`WAIT`].
async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The pod in memory: marks set by the test, load writes recorded. The agent sees it through the same
/// trait as the real pod (a watch and a merge patch).
struct MemoryPod {
    marks: tokio::sync::watch::Sender<Marks>,
    writes: Mutex<Vec<Option<Load>>>,
    /// Refuse writes (as a missing pod or a denied patch would), counting the attempts.
    refuse: AtomicBool,
    refused: AtomicUsize,
}

impl MemoryPod {
    fn new() -> Self {
        Self {
            marks: tokio::sync::watch::channel(Marks::default()).0,
            writes: Mutex::new(Vec::new()),
            refuse: AtomicBool::new(false),
            refused: AtomicUsize::new(0),
        }
    }
    fn mark(&self, f: impl FnOnce(&mut Marks)) {
        self.marks.send_modify(f);
    }
    fn writes(&self) -> Vec<Option<Load>> {
        self.writes.lock().unwrap().clone()
    }
    fn last(&self) -> Option<Option<Load>> {
        self.writes().last().copied()
    }
}

impl OwnPod for MemoryPod {
    fn marks(&self) -> BoxStream<'static, Marks> {
        futures::stream::unfold((self.marks.subscribe(), true), |(mut rx, first)| async move {
            if !first {
                rx.changed().await.ok()?;
            }
            let m = rx.borrow_and_update().clone();
            Some((m, (rx, false)))
        })
        .boxed()
    }

    async fn write_load(&self, load: Option<Load>) -> Result<(), PodError> {
        if self.refuse.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(PodError::Write("pods \"visio-sfu-0\" not found".into()));
        }
        self.writes.lock().unwrap().push(load);
        Ok(())
    }
}

fn fast() -> Settings {
    Settings { interval: Duration::from_millis(100), min_report_interval: Duration::from_millis(300) }
}

#[tokio::test]
async fn reads_the_load_from_livekit_metrics() {
    let _one = ONE_STANDIN.lock().await;
    let standin = Standin::start("5s").await;
    let mut lk = standin.livekit();
    assert_eq!(lk.read_load().await.unwrap(), load(0, 0, false), "an idle node reads zero: it was read");
    assert_eq!(standin.open_room("weekly", 3).await, StatusCode::CREATED);
    assert_eq!(standin.open_room("budget", 2).await, StatusCode::CREATED);
    assert_eq!(lk.read_load().await.unwrap(), load(5, 2, false));

    // The stand-in's exposition looks like LiveKit's: node_id/node_type labels, HELP/TYPE lines.
    let url = LoopbackUrl::parse(&format!("http://{}/metrics", standin.metrics)).unwrap();
    let text = http::call(Method::GET, &url, &[], Bytes::new(), Duration::from_secs(2), 1 << 20).await.unwrap().body;
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("livekit_participant_total{node_id=\"ND_standin\",node_type=\"SERVER\"} 5"), "{text}");
    assert!(text.contains("# TYPE livekit_room_total gauge"));
    assert_eq!(sum_metric(&text, "livekit_room_total"), Sum::Known(2));
}

#[tokio::test]
async fn an_unreachable_backend_is_unknown_never_zero() {
    let _one = ONE_STANDIN.lock().await;
    let mut standin = Standin::start("5s").await;
    let mut lk = standin.livekit();
    assert_eq!(lk.read_load().await.unwrap(), load(0, 0, false));
    standin.child.start_kill().unwrap();
    standin.wait_exit().await;
    assert!(matches!(lk.read_load().await, Err(BackendError::Unreachable(_))));
    // Not told to drain: the process being gone says nothing about sessions.
    assert!(lk.read_load().await.is_err());
}

#[tokio::test]
async fn room_service_checks_tokens_and_grants() {
    let _one = ONE_STANDIN.lock().await;
    let standin = Standin::start("5s").await;
    standin.open_room("weekly", 3).await;
    let lk = standin.livekit();
    let rooms = lk.list_rooms(&[]).await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!((rooms[0].name.as_str(), rooms[0].num_participants), ("weekly", 3));

    for creds in [ApiCredentials::new(KEY, "not-the-secret"), ApiCredentials::new("APIother", SECRET)] {
        let other = LiveKit::new(standin.config(Some(creds))).unwrap();
        match other.list_rooms(&[]).await {
            Err(BackendError::Status { status: 401, message, .. }) => assert!(message.starts_with("unauthenticated")),
            other => panic!("expected 401, got {other:?}"),
        }
    }
    let no_creds = LiveKit::new(standin.config(None)).unwrap();
    assert!(matches!(no_creds.list_rooms(&[]).await, Err(BackendError::NoCredentials)));
    // A token for listing does not delete; an admin token for one room does not send to another.
    match lk.twirp("DeleteRoom", VideoGrant::list(), json!({"room": "weekly"})).await {
        Err(BackendError::Status { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    match lk.twirp("SendData", VideoGrant::admin("other"), json!({"room": "weekly", "data": ""})).await {
        Err(BackendError::Status { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    assert_eq!(standin.state().await["rooms"].as_array().unwrap().len(), 1, "nothing was deleted");
}

#[tokio::test]
async fn warns_every_room_once_then_ends_them() {
    let _one = ONE_STANDIN.lock().await;
    let standin = Standin::start("5s").await;
    standin.open_room("weekly", 3).await;
    standin.open_room("budget", 2).await;
    let mut lk = standin.livekit();
    let deadline = "2026-11-27T13:00:00Z".parse().unwrap();
    assert!(lk.warn(deadline).await.unwrap());
    assert!(lk.warn(deadline).await.unwrap(), "a second call warns nobody twice");
    let state = standin.state().await;
    let warnings = state["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{state}");
    for (w, room) in warnings.iter().zip(["budget", "weekly"]) {
        assert_eq!(w["room"], room);
        assert_eq!(w["topic"], "visio.system");
        assert_eq!(w["kind"], "RELIABLE");
        let payload: Value = serde_json::from_str(w["data"].as_str().unwrap()).unwrap();
        assert_eq!(payload, json!({"type": "visio.drain-warning", "deadline": "2026-11-27T13:00:00Z"}));
    }

    assert_eq!(lk.end_sessions().await.unwrap(), 2);
    assert_eq!(lk.end_sessions().await.unwrap(), 0);
    let state = standin.state().await;
    assert_eq!(state["rooms"], json!([]));
    assert_eq!(state["deleted"], json!(["budget", "weekly"]));
    assert!(lk.delete_room("weekly").await.is_ok(), "a room already gone is not an error");
}

#[tokio::test]
async fn drain_signals_the_backend_once() {
    let _one = ONE_STANDIN.lock().await;
    let standin = Standin::start("5s").await;
    standin.open_room("weekly", 1).await;
    let mut lk = standin.livekit();
    assert_eq!(lk.drain().unwrap(), DrainStatus::Signalled(standin.pid()));
    assert_eq!(lk.drain().unwrap(), DrainStatus::AlreadySignalled(standin.pid()));
    wait_until("draining", || async { standin.state().await["draining"] == true }).await;
    assert_eq!(standin.state().await["signals"], 1);
    assert_eq!(lk.read_load().await.unwrap(), load(1, 1, true), "the load says the backend drains");

    // Two candidates: no guess.
    let second = Standin::start("5s").await;
    let mut fresh = LiveKit::new(second.config(None)).unwrap();
    assert!(matches!(fresh.drain().unwrap(), DrainStatus::Ambiguous(pids) if pids.len() == 2));
    assert_eq!(second.state().await["signals"], 0);
}

#[tokio::test]
async fn the_whole_drain_path_without_kubernetes() {
    let _one = ONE_STANDIN.lock().await;
    let mut standin = Standin::start("200ms").await;
    standin.open_room("weekly", 3).await;
    standin.open_room("budget", 2).await;
    let pod = MemoryPod::new();
    let mut backend = standin.livekit();
    let health = Health::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = control::run(&pod, &mut backend, fast(), health.clone(), async {
        let _ = stopped.await;
    });

    let scenario = async {
        // Load reported.
        wait_until("the first report", || async { pod.last() == Some(Some(load(5, 2, false))) }).await;

        // Drain: readyz fails, the stand-in gets one SIGTERM, refuses new rooms, existing ones continue.
        pod.mark(|m| m.drain_since = Some("2026-11-27T10:00:00Z".into()));
        wait_until("the stand-in drains", || async { standin.state().await["draining"] == true }).await;
        assert!(health.draining());
        assert_eq!(health::route("/readyz", &health).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(standin.open_room("new", 1).await, StatusCode::CONFLICT);
        assert_eq!(standin.open_room("weekly", 4).await, StatusCode::OK);
        wait_until("the draining load", || async { pod.last() == Some(Some(load(6, 2, true))) }).await;

        // Warn: every room gets the warning, once.
        pod.mark(|m| m.warn_deadline = Some("2026-11-27T13:00:00Z".into()));
        wait_until("warnings", || async { standin.state().await["warnings"].as_array().unwrap().len() == 2 }).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let state = standin.state().await;
        let rooms: Vec<&str> =
            state["warnings"].as_array().unwrap().iter().map(|w| w["room"].as_str().unwrap()).collect();
        assert_eq!(rooms, ["budget", "weekly"], "each room warned once");
        assert_eq!(state["signals"], 1, "signalled once");

        // End sessions: the rooms are deleted, the stand-in (draining, now empty) exits on its own.
        pod.mark(|m| m.end_sessions = true);
        let status = standin.wait_exit().await;
        assert_eq!(status.code(), Some(0), "exited drained, never signalled twice");
        wait_until("the zero report", || async { pod.last() == Some(Some(load(0, 0, true))) }).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(pod.last(), Some(Some(load(0, 0, true))), "a drained, exited backend stays reported empty");

        let writes = pod.writes();
        assert!(!writes.contains(&None), "the backend was never unknown: {writes:?}");
        let first_zero = writes.iter().position(|w| *w == Some(load(0, 0, true))).unwrap();
        assert!(writes[..first_zero].iter().all(|w| w.is_some_and(|l| l.participants > 0)), "{writes:?}");
        stop.send(()).unwrap();
    };
    let (_, ()) = tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(agent, scenario) })
        .await
        .expect("the scenario ends in time");
}

#[tokio::test]
async fn an_idle_pod_is_written_once_and_a_lost_backend_is_unreported() {
    let _one = ONE_STANDIN.lock().await;
    let mut standin = Standin::start("5s").await;
    standin.open_room("weekly", 2).await;
    let pod = MemoryPod::new();
    let mut backend = standin.livekit();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let settings = Settings { interval: Duration::from_millis(100), min_report_interval: Duration::from_secs(1) };
    let agent = control::run(&pod, &mut backend, settings, Health::default(), async {
        let _ = stopped.await;
    });
    let scenario = async {
        wait_until("the first report", || async { pod.last() == Some(Some(load(2, 1, false))) }).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(pod.writes().len(), 1, "nothing changed, nothing written (12 readings)");

        // Changes within the floor are coalesced: the first one is written, the last one a floor later.
        for n in 3..=6 {
            standin.open_room("weekly", n).await;
        }
        wait_until("the new load", || async { pod.last() == Some(Some(load(6, 1, false))) }).await;
        assert!(pod.writes().len() <= 3, "{:?}", pod.writes());

        // The backend dies: the annotation is removed, never replaced by a zero nobody read.
        standin.child.start_kill().unwrap();
        standin.wait_exit().await;
        wait_until("the removal", || async { pod.last() == Some(None) }).await;
        assert!(pod.writes().iter().flatten().all(|l| l.participants > 0));
        stop.send(()).unwrap();
    };
    tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(agent, scenario) })
        .await
        .expect("the scenario ends in time");
}

#[tokio::test]
async fn agent_command_refuses_a_remote_backend() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_visio-operator"))
        .args(["agent", "--backend", "livekit", "--metrics-url", "http://10.0.0.7:6789/metrics"])
        .args(["--pod-name", "visio-sfu-0", "--pod-namespace", "mininterieur"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[tokio::test]
async fn agent_probe_follows_readyz() {
    let listener = health::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let h = Health::default();
    let server = tokio::spawn(health::serve(listener, h.clone()));
    let probe = |which: &'static str| {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_visio-operator"))
            .args(["agent", "--probe", which, "--health-addr", &addr.to_string(), "--log-format", "text"])
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .kill_on_drop(true)
            .output();
        async move { tokio::time::timeout(WAIT, out).await.unwrap().unwrap().status.success() }
    };
    assert!(probe("readyz").await);
    h.set_draining();
    assert!(!probe("readyz").await, "readyz fails once draining");
    assert!(probe("healthz").await, "healthz does not");
    server.abort();
}

#[tokio::test]
async fn failed_writes_are_retried_no_faster_than_the_floor() {
    let _one = ONE_STANDIN.lock().await;
    let standin = Standin::start("5s").await;
    standin.open_room("weekly", 2).await;
    let pod = MemoryPod::new();
    pod.refuse.store(true, Ordering::SeqCst);
    let mut backend = standin.livekit();
    let settings = Settings { interval: Duration::from_millis(20), min_report_interval: Duration::from_millis(400) };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = control::run(&pod, &mut backend, settings, Health::default(), async {
        let _ = stopped.await;
    });
    let scenario = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let attempts = pod.refused.load(Ordering::SeqCst);
        assert!((2..=4).contains(&attempts), "{attempts} attempts in 1 s (50 readings, floor 400 ms)");
        pod.refuse.store(false, Ordering::SeqCst);
        wait_until("the write once the pod takes it", || async { pod.last() == Some(Some(load(2, 1, false))) }).await;
        stop.send(()).unwrap();
    };
    tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(agent, scenario) })
        .await
        .expect("the scenario ends in time");
}
