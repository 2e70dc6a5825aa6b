//! WhisperLive as the operator runs it: the `stt` container's command line, rendered by the builder, started
//! against the real WhisperLive server (PyPI `whisper-live`, pinned in `e2e/whisperlive/setup`) and against
//! `whisperlive-standin`, with the same checks on both: flags accepted, metrics on the port given and read by
//! the agent, WebSocket handshakes without the key refused, with it (header or `?token=`) accepted, and a
//! flag value WhisperLive refuses stopping both.
//!
//! The real server runs here without model weights (and with import-only stubs of torch and faster-whisper,
//! see `e2e/whisperlive/setup`), so what needs a loaded model is not checked: a stream holding a slot, the
//! `WAIT` answer of a full server (a slot is taken only once a client's model has loaded), transcription
//! latency. The venv is installed by `e2e/whisperlive/setup` (about 260 MB, from PyPI); when it is missing
//! these tests say so and pass, unless `CONFORMANCE=1`, which installs it (and fails if it cannot).
//! Loopback only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use visio_operator::agent::captions::{parse_metrics, Engine};
use visio_operator::api::CaptionPool;
use visio_operator::builders::captions::{build_captions, CaptionInputs, BACKEND_CONTAINER};

mod common;

const KEY: &str = "wl-conformance-key-0123456789";
/// The servers bind ports picked here: one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The venv's python, installing it when `CONFORMANCE=1`; `None` (with a message) when it is not there.
fn real_python() -> Option<PathBuf> {
    let setup = repo().join("e2e/whisperlive/setup");
    let run = |args: &[&str]| {
        Command::new(&setup).args(args).stderr(Stdio::inherit()).output().ok().filter(|o| o.status.success())
    };
    let requested = std::env::var("CONFORMANCE").is_ok_and(|v| v == "1");
    let out = match run(&["--check"]) {
        Some(o) => o,
        None if requested => run(&[]).expect("CONFORMANCE=1: e2e/whisperlive/setup could not install WhisperLive"),
        None => {
            eprintln!(
                "SKIPPED: the real WhisperLive is not installed (run e2e/whisperlive/setup, or CONFORMANCE=1); \
                 only the stand-in was checked"
            );
            return None;
        }
    };
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The `stt` container's command and arguments for a WhisperLive pool, as the operator renders them.
fn rendered(slots: i32) -> (Vec<String>, Vec<String>) {
    let cp: CaptionPool = serde_json::from_value(json!({
        "apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool",
        "metadata": {"name": "captions", "namespace": "minsante", "uid": "4b1c0e2a-0000-4000-8000-000000000009"},
        "spec": {"clusterRef": {"name": "visio"}, "engine": "whisperlive", "backend": {"slotsPerPod": slots}},
    }))
    .expect("a valid pool");
    let inputs = CaptionInputs {
        api_key: KEY,
        livekit_keys_secret: "visio-credentials",
        agent_image: "visio-operator:test",
        transcriber_replicas: 1,
    };
    let stack = build_captions(&cp, &inputs).expect("the pool builds");
    let spec = stack.backend.pod.spec.expect("a pod spec");
    let c = spec.containers.into_iter().find(|c| c.name == BACKEND_CONTAINER).expect("the stt container");
    (c.command.unwrap_or_default(), c.args.unwrap_or_default())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The rendered arguments with this machine's ports and the key the kubelet would expand.
fn localise(args: &[String], ws: u16, metrics: u16) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(args.len());
    for a in args {
        let value = match out.last().map(String::as_str) {
            Some("--port") => ws.to_string(),
            Some("--metrics_port") => metrics.to_string(),
            _ => a.replace("$(CAPTION_API_KEY)", KEY),
        };
        out.push(value);
    }
    out
}

/// The server under test; killed when dropped.
struct Server {
    child: Child,
    ws: SocketAddr,
    metrics: SocketAddr,
    name: &'static str,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Real,
    Standin,
}

fn command(kind: Kind, python: Option<&PathBuf>, args: &[String]) -> Command {
    let mut c = match kind {
        // The upstream image runs `python run_server.py`; the wheel has no run_server.py, so the project's
        // launcher takes its place with the same flags (e2e/whisperlive/serve.py).
        Kind::Real => {
            let mut c = Command::new(python.expect("the venv's python"));
            c.arg(repo().join("e2e/whisperlive/serve.py"));
            c
        }
        Kind::Standin => Command::new(common::standin("whisperlive-standin")),
    };
    c.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn start(kind: Kind, python: Option<&PathBuf>, args: &[String], ws: u16, metrics: u16) -> Server {
    let child = command(kind, python, args).spawn().expect("the server starts");
    let name = match kind {
        Kind::Real => "real WhisperLive",
        Kind::Standin => "whisperlive-standin",
    };
    let mut s = Server { child, ws: ([127, 0, 0, 1], ws).into(), metrics: ([127, 0, 0, 1], metrics).into(), name };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = s.child.try_wait() {
            let mut err = String::new();
            let _ = s.child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("{name} exited at start ({status}) with the operator's flags {args:?}: {err}");
        }
        if TcpStream::connect_timeout(&s.ws, Duration::from_millis(200)).is_ok()
            && TcpStream::connect_timeout(&s.metrics, Duration::from_millis(200)).is_ok()
        {
            return s;
        }
        assert!(Instant::now() < deadline, "{name} did not bind {} and {} within 60 s", s.ws, s.metrics);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request on loopback; the status code and the body.
fn http(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(head.as_bytes()).expect("send");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // Read until the peer closes or the head and a body arrived (a 101 leaves the socket open).
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok());
        if head.starts_with("HTTP/1.1 101") || length.is_some_and(|l| body.len() >= l) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

fn handshake(addr: SocketAddr, path: &str, auth: Option<&str>) -> u16 {
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
    );
    http(addr, &head).0
}

fn metrics(addr: SocketAddr) -> String {
    let (code, body) = http(addr, &format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"));
    assert_eq!(code, 200, "GET /metrics on {addr}");
    body
}

/// The checks both servers must pass the same way.
fn check_server(kind: Kind, python: Option<&PathBuf>) {
    let (program, args) = rendered(4);
    assert_eq!(program, ["python", "run_server.py"]);
    let (ws, mp) = (free_port(), free_port());
    let args = localise(&args, ws, mp);
    let s = start(kind, python, &args, ws, mp);
    let name = s.name;

    // Metrics on the port the operator gives, read by the agent: no stream, no rejection yet.
    let reading = parse_metrics(Engine::WhisperLive, &metrics(s.metrics)).expect("the agent reads the metrics");
    assert_eq!((reading.open, reading.rejected), (0, Some(0)), "{name}");

    // The API key the way WhisperLive reads it: a header or the `token` query parameter.
    assert_eq!(handshake(s.ws, "/", None), 401, "{name}: no key");
    assert_eq!(handshake(s.ws, "/", Some("Bearer not-the-key")), 401, "{name}: a wrong key");
    assert_eq!(handshake(s.ws, "/?token=not-the-key", None), 401, "{name}: a wrong token");
    assert_eq!(handshake(s.ws, "/", Some(&format!("Bearer {KEY}"))), 101, "{name}: the key");
    assert_eq!(handshake(s.ws, &format!("/?token={KEY}"), None), 101, "{name}: the token");

    // A refused key is not a full server: the agent's rejection count stays 0.
    let reading = parse_metrics(Engine::WhisperLive, &metrics(s.metrics)).expect("the agent reads the metrics");
    assert_eq!(reading.rejected, Some(0), "{name}: refused keys are not counted as rejections");
    drop(s);

    // A value WhisperLive refuses stops it at start (TranscriptionServer.run's checks).
    let mut bad = localise(&rendered(4).1, free_port(), free_port());
    let i = bad.iter().position(|a| a == "--max_clients").expect("--max_clients rendered");
    bad[i + 1] = "0".into();
    let mut child = command(kind, python, &bad).spawn().expect("starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} kept running with --max_clients 0");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "{name}: --max_clients 0 must stop it");
}

#[test]
fn the_standin_answers_as_whisperlive_does() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    check_server(Kind::Standin, None);
}

#[test]
fn real_whisperlive_accepts_the_rendered_flags_and_enforces_the_key() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let Some(python) = real_python() else { return };
    check_server(Kind::Real, Some(&python));
}

#[test]
fn whisperlive_without_its_metrics_port_serves_none() {
    // WhisperLive serves metrics only with --metrics_port: the operator must render it (the builder's test
    // checks it does); here the stand-in is held to the same rule, so the e2e cannot pass on metrics the
    // real server would not have.
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let ws = free_port();
    let mut c = command(Kind::Standin, None, &["--port".into(), ws.to_string()]).spawn().expect("starts");
    let addr: SocketAddr = ([127, 0, 0, 1], ws).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "the stand-in did not bind {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _) = http(addr, &format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"));
    let _ = c.kill();
    let _ = c.wait();
    assert_eq!(code, 404, "no metrics on the stream port");
}
