//! `whisperlive-standin`: a stand-in for Collabora's WhisperLive (faster-whisper speech-to-text), for the
//! caption tests. Loopback only.
//!
//! It follows WhisperLive's documented behaviour where the operator and its agent depend on it
//! (docs/captions.md, contracts):
//! - `--max_clients` streams per process (WhisperLive's flag, default 4): each stream holds one client slot
//!   for its whole life; when every slot is taken a new stream is answered **`WAIT`** (WhisperLive sends
//!   `{"uid", "status": "WAIT", "message": <minutes until a slot frees>}` and closes it) and counted in
//!   `whisperlive_connections_rejected_total{reason="full"}`, never queued;
//! - metrics on a port of their own (`--metrics-addr`; 9091 in the pod): `whisperlive_connections_active`
//!   (gauge), `whisperlive_connections_rejected_total{reason}` (counter, exposed at 0 from the start so a
//!   reader has a baseline) and `whisperlive_transcription_latency_seconds` (histogram; the stand-in's
//!   latency grows with the open streams: `--base-latency-ms` plus `--latency-ms` per stream, one
//!   observation per stream every 500 ms);
//! - no API key (WhisperLive has none) and no drain: SIGTERM or SIGINT exits at once.
//!
//! The harness drives it with the control API of the other stand-ins: `POST /standin/rooms` `{"name"}`
//! (201 opened; 503 with WhisperLive's `WAIT` message when full; 200 if already open),
//! `DELETE /standin/rooms/<name>`, `GET /standin/state`. Slots, histogram and the process's life are shared
//! with `moshi-standin` (`visio_operator::standin`).
//!
//! On start it prints one line to stdout: `whisperlive-standin http=<addr> metrics=<addr> pid=<pid>`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use visio_operator::standin::{self, Admit, Histogram, Slots};

/// A stand-in for WhisperLive (tests only; loopback only).
#[derive(Parser, Debug)]
#[command(name = "whisperlive-standin")]
struct Args {
    /// Address of the streams and the control API (WhisperLive's WebSocket port). Port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Address of `/metrics`. Port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics_addr: SocketAddr,
    /// Streams per process (WhisperLive's `--max_clients`).
    #[arg(long = "max_clients", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_clients: u32,
    /// Longest a client may stay, in seconds (WhisperLive's `--max_connection_time`): what the `WAIT`
    /// estimate is computed from (the stand-in never disconnects a stream itself).
    #[arg(long = "max_connection_time", default_value_t = 600)]
    max_connection_time: u64,
    /// Transcription latency with one stream, in milliseconds.
    #[arg(long, default_value_t = 300)]
    base_latency_ms: u32,
    /// Latency added by each further open stream, in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    latency_ms: f64,
}

/// Bounds of the latency histogram, in seconds.
const BOUNDS: [f64; 8] = [0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0];

struct State {
    slots: Slots,
    latency: Histogram,
}

struct Server {
    state: Mutex<State>,
    args: Args,
}

type Shared = Arc<Server>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    standin::lock(&s.state)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let state = State { slots: Slots::new(args.max_clients), latency: Histogram::new(&BOUNDS) };
    let (addr, metrics_addr) = (args.addr, args.metrics_addr);
    let server = Arc::new(Server { state: Mutex::new(state), args });
    let (h, m, t, s) = (server.clone(), server.clone(), server.clone(), server);
    standin::run_caption_standin(
        "whisperlive-standin",
        addr,
        Some((
            metrics_addr,
            Arc::new(move |req: Request<Incoming>| {
                let server = m.clone();
                Box::pin(async move {
                    match (req.method(), req.uri().path()) {
                        (&Method::GET, "/metrics") => (StatusCode::OK, metrics(&server)),
                        _ => (StatusCode::NOT_FOUND, "not found\n".into()),
                    }
                })
            }),
        )),
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

/// One transcription per open stream: its latency grows with the streams the process serves.
fn transcribe(server: &Shared) {
    let mut s = lock(server);
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

async fn route(req: Request<Incoming>, server: &Shared) -> (StatusCode, String) {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = match standin::body(req).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    match (&method, path.as_str()) {
        (&Method::GET, "/standin/state") => (StatusCode::OK, lock(server).slots.state().to_string()),
        (&Method::POST, "/standin/rooms") => {
            let mut s = lock(server);
            let admit = s.slots.admit(&body);
            let wait = match &admit {
                Admit::Full(uid) => json!({
                    "uid": uid, "status": "WAIT",
                    "message": wait_minutes(&s.slots, server.args.max_connection_time)
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
    out.push_str("# HELP whisperlive_connections_active Active client connections\n");
    out.push_str("# TYPE whisperlive_connections_active gauge\n");
    out.push_str(&format!("whisperlive_connections_active {}\n", s.slots.streams.len()));
    out.push_str("# HELP whisperlive_connections_rejected_total Client connections refused\n");
    out.push_str("# TYPE whisperlive_connections_rejected_total counter\n");
    out.push_str(&format!("whisperlive_connections_rejected_total{{reason=\"full\"}} {}\n", s.slots.rejected));
    out.push_str(&s.latency.render("whisperlive_transcription_latency_seconds", "Transcription latency"));
    out
}
