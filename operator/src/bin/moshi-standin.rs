//! `moshi-standin`: a stand-in for Kyutai's moshi-server (speech-to-text), for the caption tests. Loopback only.
//!
//! It follows moshi-server's documented behaviour where the operator and its agent depend on it
//! (docs/captions.md, contracts):
//! - a fixed number of slots (`--batch-size`, moshi-server's `batch_size`): each stream holds one slot for
//!   its whole life; when every slot is taken a new stream is **refused** ("no free channels"), never queued;
//! - streams need the `kyutai-api-key` header to match the key (`--api-key` / `MOSHI_API_KEY`, moshi-server's
//!   `authorized_ids`);
//! - `GET /metrics`: `asr_open_channels` (gauge), `asr_connect` (counter), `asr_model_step_duration`
//!   (histogram, seconds; the stand-in's step time grows with the open streams, `--step-ms` per stream on
//!   top of a base) and `asr_connection_num_steps`;
//! - `GET /api/build_info` answers without a key; `GET /api/modules_info` gives used and total slots;
//! - no drain: SIGTERM or SIGINT exits at once, cutting every open stream (the operator never signals a
//!   caption backend; it stops routing to it and waits for its streams to close).
//!
//! The test harness opens and closes streams with a control API shaped like the LiveKit stand-in's, so one
//! harness drives both: `POST /standin/rooms` `{"name"}` opens the stream `name` (201; 503 when every slot
//! is taken; 401 without the key; 200 if it is already open), `DELETE /standin/rooms/<name>` closes it,
//! `GET /standin/state` returns the open streams (as `rooms`), the rejections and `draining: false`.
//!
//! On start it prints one line to stdout: `moshi-standin http=<addr> metrics=<addr> pid=<pid>`.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use visio_operator::agent::prometheus::render_sample;
use visio_operator::standin;

/// A stand-in for moshi-server (tests only; loopback only).
#[derive(Parser, Debug)]
#[command(name = "moshi-standin")]
struct Args {
    /// HTTP address (streams, metrics, control API). Port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Slots (moshi-server's `batch_size`).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_size: u32,
    /// The key streams must present in `kyutai-api-key`.
    #[arg(long, env = "MOSHI_API_KEY", default_value = "public_token")]
    api_key: String,
    /// Step time with no stream, in milliseconds.
    #[arg(long, default_value_t = 20)]
    base_step_ms: u32,
    /// Step time added by each open stream, in milliseconds (batching is not free).
    #[arg(long, default_value_t = 0.5)]
    step_ms: f64,
}

/// Bounds of the step-time histogram, in seconds.
const BOUNDS: [f64; 8] = [0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.2, 0.5];

#[derive(Default, Debug)]
struct State {
    streams: BTreeSet<String>,
    connects: u64,
    rejected: u64,
    steps: u64,
    /// Cumulative counts per bound, plus +Inf last.
    buckets: [u64; BOUNDS.len() + 1],
    step_sum: f64,
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
    if !args.addr.ip().is_loopback() {
        eprintln!("moshi-standin: {} is not a loopback address", args.addr);
        return std::process::ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("moshi-standin: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let server = Arc::new(Server { state: Mutex::new(State::default()), args });
    std::process::ExitCode::from(rt.block_on(serve(server)))
}

async fn serve(server: Shared) -> u8 {
    let listener = match tokio::net::TcpListener::bind(server.args.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("moshi-standin: bind: {e}");
            return 2;
        }
    };
    let Ok(addr) = listener.local_addr() else { return 2 };
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        eprintln!("moshi-standin: cannot install signal handlers");
        return 2;
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "moshi-standin http={addr} metrics={addr} pid={}", std::process::id());
        let _ = out.flush();
    }
    let handler_server = server.clone();
    tokio::spawn(standin::accept(listener, move |req| {
        let server = handler_server.clone();
        async move { route(req, &server).await }
    }));
    tokio::spawn(steps(server.clone()));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // moshi-server has no drain: a stop signal ends the process and every stream with it.
    let open = lock(&server).streams.len();
    eprintln!("moshi-standin: stop signal: exiting at once with {open} open stream(s)");
    0
}

/// One model step every 80 ms while a stream is open, as moshi-server batches them.
async fn steps(server: Shared) {
    let mut tick = tokio::time::interval(Duration::from_millis(80));
    loop {
        tick.tick().await;
        let mut s = lock(&server);
        if s.streams.is_empty() {
            continue;
        }
        let secs = (f64::from(server.args.base_step_ms) + server.args.step_ms * s.streams.len() as f64) / 1000.0;
        s.steps += 1;
        s.step_sum += secs;
        for (i, b) in BOUNDS.iter().enumerate() {
            if secs <= *b {
                s.buckets[i] += 1;
            }
        }
        s.buckets[BOUNDS.len()] += 1;
    }
}

async fn route(req: Request<Incoming>, server: &Shared) -> (StatusCode, String) {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let key = req.headers().get("kyutai-api-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n".into()),
    };
    match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, metrics(server)),
        (&Method::GET, "/api/build_info") => (StatusCode::OK, json!({"build": "moshi-standin"}).to_string()),
        (&Method::GET, "/api/modules_info") => {
            let used = lock(server).streams.len();
            let total = server.args.batch_size;
            (StatusCode::OK, json!([{"name": "asr", "used_slots": used, "total_slots": total}]).to_string())
        }
        (&Method::GET, "/standin/state") => (StatusCode::OK, state_json(server).to_string()),
        (&Method::POST, "/standin/rooms") => {
            if key.as_deref() != Some(server.args.api_key.as_str()) {
                return (StatusCode::UNAUTHORIZED, json!({"error": "invalid kyutai-api-key"}).to_string());
            }
            open_stream(server, &body)
        }
        (&Method::DELETE, p) if p.starts_with("/standin/rooms/") => {
            let name = &p["/standin/rooms/".len()..];
            if lock(server).streams.remove(name) {
                (StatusCode::OK, "{}".into())
            } else {
                (StatusCode::NOT_FOUND, json!({"error": "no such stream"}).to_string())
            }
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn open_stream(server: &Shared, body: &[u8]) -> (StatusCode, String) {
    let name = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["name"].as_str().map(str::to_string));
    let Some(name) = name.filter(|n| !n.is_empty() && !n.contains('/') && n.len() <= 253) else {
        return (StatusCode::BAD_REQUEST, json!({"error": "expected {\"name\": ...}"}).to_string());
    };
    let mut s = lock(server);
    if s.streams.contains(&name) {
        return (StatusCode::OK, json!({"room": name}).to_string());
    }
    if s.streams.len() >= server.args.batch_size as usize {
        s.rejected += 1;
        return (StatusCode::SERVICE_UNAVAILABLE, json!({"error": "no free channels"}).to_string());
    }
    s.connects += 1;
    s.streams.insert(name.clone());
    (StatusCode::CREATED, json!({"room": name}).to_string())
}

fn metrics(server: &Shared) -> String {
    let s = lock(server);
    let mut out = String::new();
    out.push_str("# HELP asr_open_channels Open ASR channels\n# TYPE asr_open_channels gauge\n");
    out.push_str(&format!("asr_open_channels {}\n", s.streams.len()));
    out.push_str("# HELP asr_connect Connections\n# TYPE asr_connect counter\n");
    out.push_str(&format!("asr_connect {}\n", s.connects));
    out.push_str("# HELP asr_model_step_duration Model step duration\n# TYPE asr_model_step_duration histogram\n");
    for (i, b) in BOUNDS.iter().enumerate() {
        out.push_str(&render_sample(
            "asr_model_step_duration_bucket",
            &[("le", &b.to_string())],
            &s.buckets[i].to_string(),
        ));
        out.push('\n');
    }
    out.push_str(&format!("asr_model_step_duration_bucket{{le=\"+Inf\"}} {}\n", s.buckets[BOUNDS.len()]));
    out.push_str(&format!("asr_model_step_duration_sum {}\nasr_model_step_duration_count {}\n", s.step_sum, s.steps));
    out.push_str("# HELP asr_connection_num_steps Steps per connection\n# TYPE asr_connection_num_steps gauge\n");
    out.push_str(&format!("asr_connection_num_steps {}\n", s.steps));
    out
}

fn state_json(server: &Shared) -> Value {
    let s = lock(server);
    json!({
        "rooms": s.streams.iter().map(|n| json!({"name": n, "participants": 1})).collect::<Vec<_>>(),
        "participants": s.streams.len(),
        "slots": server.args.batch_size,
        "rejected": s.rejected,
        "draining": false,
        "warnings": [],
        "deleted": [],
    })
}
