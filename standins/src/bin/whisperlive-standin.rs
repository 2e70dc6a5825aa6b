//! `whisperlive-standin`: a stand-in for Collabora's WhisperLive (faster-whisper speech-to-text), for the
//! caption tests. Loopback only.
//!
//! It follows WhisperLive 0.10.0 (PyPI `whisper-live`; `run_server.py` of collabora/WhisperLive) where the
//! operator and its agent depend on it. Per behaviour, the upstream file it follows, and whether
//! `operator/tests/whisperlive_conformance.rs` checks it against the real server:
//!
//! | behaviour | upstream (0.10.0) | checked against the real server |
//! |---|---|---|
//! | flags, with run_server.py's names and defaults: `--port` (9090), `--backend` (`faster_whisper`, `tensorrt` or `openvino`, else exit 1), `--faster_whisper_custom_model_path`, `--max_clients` (4, at least 1), `--max_connection_time` (300 s, above 0), `--metrics_port` (0: no metrics), `--api_key`; an unknown flag exits 2 | `run_server.py` (argparse), `server.py` `TranscriptionServer.run` (the `ValueError`s) | yes: the rendered flags start both; `--max_clients 0` stops both |
//! | `--api_key`: a WebSocket handshake without `Authorization: Bearer <key>` or `?token=<key>` is answered 401, and not counted as a rejection | `server.py` `_websocket_auth` | yes |
//! | metrics only with `--metrics_port`: `whisperlive_connections_active` (from 0), `whisperlive_connections_rejected_total{reason}` (no sample before the first rejection), `whisperlive_transcription_latency_seconds` (buckets 0.05 to 10 s) | `whisper_live/metrics.py` | yes: the agent reads both pages the same (0 open, 0 rejected) |
//! | `--max_clients` streams: each holds one slot for its whole life; when full, `{"uid", "status": "WAIT", "message": <minutes until the oldest stream reaches --max_connection_time>}`, counted as `reason="full"`, never queued | `server.py` `ClientManager.is_server_full`, `handle_new_connection` | no: a slot is taken only once a client's model has loaded, which needs weights |
//! | a stream is closed at `--max_connection_time` | `server.py` `ClientManager.is_client_timeout` | no: needs an open stream, so a model |
//! | no drain: SIGTERM or SIGINT exits at once | (no signal handling in `server.py`) | no |
//!
//! The stand-in's latency grows with the open streams (`--base-latency-ms` plus `--latency-ms` per further
//! stream, one observation per stream every 500 ms); that is a model of load, not an upstream behaviour.
//!
//! The harness drives it with the control API of the other stand-ins on the stream port: `POST
//! /standin/rooms` `{"name"}` (201 opened; 503 with WhisperLive's `WAIT` message when full; 200 if already
//! open; 401 without the key when `--api_key` is set), `DELETE /standin/rooms/<name>`, `GET
//! /standin/state`. A WebSocket handshake (`GET` with `Upgrade: websocket`) is answered 101 (or 401); the
//! stand-in speaks no WebSocket frames after it. Slots, histogram and the process's life are shared with
//! `moshi-standin` (`visio_standins`). The harness may place the ports with `--addr` and
//! `--metrics-addr` instead of `--port` and `--metrics_port`.
//!
//! On start it prints one line to stdout: `whisperlive-standin http=<addr> metrics=<addr> pid=<pid>`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use visio_standins::{self as standin, Admit, Histogram, Slots};

/// A stand-in for WhisperLive (tests only; loopback only).
#[derive(Parser, Debug)]
#[command(name = "whisperlive-standin")]
struct Args {
    /// WhisperLive's WebSocket port (on 127.0.0.1). Overrides `--addr`.
    #[arg(long)]
    port: Option<u16>,
    /// Address of the streams and the control API, for a harness that picks ports (port 0: a free one).
    #[arg(long, default_value = "127.0.0.1:9090")]
    addr: SocketAddr,
    /// WhisperLive's metrics port (on 127.0.0.1); 0, the default, serves no metrics, as WhisperLive.
    #[arg(long = "metrics_port", default_value_t = 0)]
    metrics_port: u16,
    /// Address of `/metrics`, for a harness that picks ports (port 0: a free one).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// WhisperLive's backend.
    #[arg(long, default_value = "faster_whisper")]
    backend: String,
    /// WhisperLive's local model (accepted; the stand-in loads nothing).
    #[arg(long = "faster_whisper_custom_model_path")]
    faster_whisper_custom_model_path: Option<String>,
    /// Streams per process (WhisperLive's `--max_clients`).
    #[arg(long = "max_clients", default_value_t = 4)]
    max_clients: i64,
    /// Longest a client may stay, in seconds (WhisperLive's `--max_connection_time`).
    #[arg(long = "max_connection_time", default_value_t = 300)]
    max_connection_time: i64,
    /// The key streams must present (`Authorization: Bearer <key>` or `?token=<key>`).
    #[arg(long = "api_key")]
    api_key: Option<String>,
    /// Transcription latency with one stream, in milliseconds.
    #[arg(long, default_value_t = 300)]
    base_latency_ms: u32,
    /// Latency added by each further open stream, in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    latency_ms: f64,
}

/// Bounds of the latency histogram, in seconds (`whisper_live/metrics.py`).
const BOUNDS: [f64; 8] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// WhisperLive's backends (`server.py` `BackendType`).
const BACKENDS: [&str; 3] = ["faster_whisper", "tensorrt", "openvino"];

struct State {
    slots: Slots,
    latency: Histogram,
}

struct Server {
    state: Mutex<State>,
    max_connection_time: u64,
    api_key: Option<String>,
    args: Args,
}

type Shared = Arc<Server>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    standin::lock(&s.state)
}

/// WhisperLive's own checks of its flags (`TranscriptionServer.run`), which stop it at start.
fn check(args: &Args) -> Result<(u32, u64), String> {
    let clients = u32::try_from(args.max_clients)
        .ok()
        .filter(|c| (1..=10_000).contains(c))
        .ok_or(format!("max_clients must be >= 1, got {}", args.max_clients))?;
    let time = u64::try_from(args.max_connection_time)
        .ok()
        .filter(|t| *t > 0)
        .ok_or(format!("max_connection_time must be > 0, got {}", args.max_connection_time))?;
    if !BACKENDS.contains(&args.backend.as_str()) {
        return Err(format!("{} is not a valid backend type. Choose backend from {BACKENDS:?}", args.backend));
    }
    Ok((clients, time))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let (clients, max_connection_time) = match check(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("whisperlive-standin: ValueError: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let addr = args.port.map(local).unwrap_or(args.addr);
    let metrics_addr = match (args.metrics_port, args.metrics_addr) {
        (0, a) => a,
        (p, _) => Some(local(p)),
    };
    let state = State { slots: Slots::new(clients), latency: Histogram::new(&BOUNDS) };
    let api_key = args.api_key.clone().filter(|k| !k.is_empty());
    let server = Arc::new(Server { state: Mutex::new(state), max_connection_time, api_key, args });
    let (h, m, t, s) = (server.clone(), server.clone(), server.clone(), server);
    standin::run_caption_standin(
        "whisperlive-standin",
        addr,
        metrics_addr.map(|a| {
            let handler: standin::Handler = Arc::new(move |req: Request<Incoming>| {
                let server = m.clone();
                Box::pin(async move {
                    match (req.method(), req.uri().path()) {
                        (&Method::GET, "/metrics") => (StatusCode::OK, metrics(&server)),
                        _ => (StatusCode::NOT_FOUND, "not found\n".into()),
                    }
                })
            });
            (a, handler)
        }),
        Arc::new(move |req| {
            let server = h.clone();
            Box::pin(async move { route(req, &server).await })
        }),
        Duration::from_millis(500),
        move || transcribe(&t),
        // WhisperLive has no drain.
        None,
        move || format!("stop signal: exiting at once with {} open stream(s)", lock(&s).slots.streams.len()),
    )
}

/// One transcription per open stream (its latency grows with the streams the process serves), and the
/// streams past `--max_connection_time` closed (`ClientManager.is_client_timeout`).
fn transcribe(server: &Shared) {
    let mut s = lock(server);
    let limit = Duration::from_secs(server.max_connection_time);
    s.slots.streams.retain(|_, opened| opened.elapsed() < limit);
    let open = s.slots.streams.len();
    let secs =
        (f64::from(server.args.base_latency_ms) + server.args.latency_ms * open.saturating_sub(1) as f64) / 1000.0;
    for _ in 0..open {
        s.latency.observe(secs);
    }
}

/// WhisperLive's estimate in its `WAIT` answer: minutes until the oldest client reaches the longest
/// connection time.
fn wait_minutes(slots: &Slots, max_connection_time: u64) -> f64 {
    let oldest = slots.streams.values().map(|t| t.elapsed().as_secs()).max().unwrap_or(0);
    let left = max_connection_time.saturating_sub(oldest);
    (left as f64 / 60.0 * 10.0).round() / 10.0
}

/// The key check of WhisperLive's WebSocket handshake: the `Authorization: Bearer` header or the `token`
/// query parameter.
fn authorized(req: &Request<Incoming>, key: Option<&str>) -> bool {
    let Some(key) = key else { return true };
    let bearer = req.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {key}"));
    let token = req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.split_once('='))
        .any(|(k, v)| k == "token" && v == key);
    bearer || token
}

async fn route(req: Request<Incoming>, server: &Shared) -> (StatusCode, String) {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let upgrade = req.headers().get("upgrade").and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
    let allowed = authorized(&req, server.api_key.as_deref());
    let body = match standin::body(req).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    if (upgrade.is_some() || method == Method::POST) && !allowed {
        return (StatusCode::UNAUTHORIZED, "Unauthorized\n".into());
    }
    match (&method, path.as_str()) {
        (&Method::GET, _) if upgrade.as_deref() == Some("websocket") => {
            (StatusCode::SWITCHING_PROTOCOLS, String::new())
        }
        (&Method::GET, "/standin/state") => (StatusCode::OK, lock(server).slots.state().to_string()),
        (&Method::POST, "/standin/rooms") => {
            let mut s = lock(server);
            let admit = s.slots.admit(&body);
            let wait = match &admit {
                Admit::Full(uid) => json!({
                    "uid": uid, "status": "WAIT",
                    "message": wait_minutes(&s.slots, server.max_connection_time)
                }),
                _ => json!({}),
            };
            Slots::answer(&admit, wait)
        }
        (&Method::DELETE, p) if p.starts_with("/standin/rooms/") => {
            lock(server).slots.close(&p["/standin/rooms/".len()..])
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn metrics(server: &Shared) -> String {
    let s = lock(server);
    let mut out = String::new();
    out.push_str("# HELP whisperlive_connections_active Currently active WebSocket connections\n");
    out.push_str("# TYPE whisperlive_connections_active gauge\n");
    out.push_str(&format!("whisperlive_connections_active {}.0\n", s.slots.streams.len()));
    out.push_str("# HELP whisperlive_connections_rejected_total Connections rejected (server full or auth failure)\n");
    out.push_str("# TYPE whisperlive_connections_rejected_total counter\n");
    // A labelled counter: no sample before the first rejection.
    if s.slots.rejected > 0 {
        out.push_str(&format!("whisperlive_connections_rejected_total{{reason=\"full\"}} {}.0\n", s.slots.rejected));
    }
    out.push_str(
        &s.latency.render("whisperlive_transcription_latency_seconds", "Time to transcribe a single audio chunk"),
    );
    out
}
