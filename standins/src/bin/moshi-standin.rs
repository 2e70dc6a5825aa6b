//! `moshi-standin`: a stand-in for Kyutai's moshi-server (speech-to-text), for the caption tests. Loopback only.
//!
//! It follows moshi-server 0.6.4 (crate `moshi-server`, kyutai-labs/moshi `rust/moshi-server/src/`) where
//! the operator and its agent depend on it. Per behaviour, the upstream file it follows; none is compared
//! with the real server here (it needs the model's weights to serve: `worker` fails at once on a missing
//! weight file), see docs/captions.md for what a team with weights runs:
//!
//! | behaviour | upstream (0.6.4) |
//! |---|---|
//! | a fixed number of slots (`--batch-size`, the config's `batch_size`); each stream holds one for its whole life; when every slot is taken a new stream is **refused** ("no free channels"), never queued | `batched_asr.rs` |
//! | streams need the `kyutai-api-key` header to match the key (`--api-key` / `MOSHI_API_KEY`, the config's `authorized_ids`) | `main.rs`, `utils.rs` |
//! | `GET /metrics`: `asr_open_channels{handler="all"}` (gauge), `asr_connect{handler="all"}` (counter), `asr_model_step_duration` (histogram, seconds, buckets 20 to 80 ms: a slower step is only in `+Inf`), `asr_connection_num_steps` | `metrics.rs` |
//! | `GET /api/build_info` answers without a key; `GET /api/modules_info` gives used and total slots | `main.rs` |
//! | the port is bound only once the model is loaded (`--load-delay-ms` before binding) | `main.rs` (`Worker`: `AppStateInner::new` loads the modules, then the listener) |
//! | no drain: SIGTERM or SIGINT exits at once, cutting every open stream | (no signal handling) |
//! | not modelled: audio, and the close of a stream after 120 s without audio | `batched_asr.rs` |
//!
//! The step time is a model of load, not an upstream behaviour: it grows with the open streams
//! (`--step-ms` per stream on top of `--base-step-ms`), one step every 80 ms while a stream is open.
//!
//! The test harness opens and closes streams with a control API shaped like the LiveKit stand-in's, so one
//! harness drives both: `POST /standin/rooms` `{"name"}` opens the stream `name` (201; 503 when every slot
//! is taken; 401 without the key; 200 if it is already open), `DELETE /standin/rooms/<name>` closes it,
//! `GET /standin/state` returns the open streams (as `rooms`), the rejections and `draining: false`.
//! Slots, histogram and the process's life are shared with `whisperlive-standin` (`visio_standins`).
//!
//! On start it prints one line to stdout: `moshi-standin http=<addr> metrics=<addr> pid=<pid>`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use visio_standins::{self as standin, Histogram, Slots};

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
    /// Time the model takes to load before the port is bound, in milliseconds.
    #[arg(long, default_value_t = 0)]
    load_delay_ms: u64,
}

/// Bounds of the step-time histogram, in seconds: moshi-server's (`metrics.rs`), which stop at 80 ms.
const BOUNDS: [f64; 7] = [0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08];

struct State {
    slots: Slots,
    steps: Histogram,
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
    // moshi-server loads its modules (the weights) before it binds: nothing answers until then.
    std::thread::sleep(Duration::from_millis(args.load_delay_ms));
    let state = State { slots: Slots::new(args.batch_size), steps: Histogram::new(&BOUNDS) };
    let addr = args.addr;
    let server = Arc::new(Server { state: Mutex::new(state), args });
    let (h, t, s) = (server.clone(), server.clone(), server);
    standin::run_caption_standin(
        "moshi-standin",
        addr,
        None,
        Arc::new(move |req| {
            let server = h.clone();
            Box::pin(async move { route(req, &server).await })
        }),
        // One model step every 80 ms while a stream is open, as moshi-server batches them.
        Duration::from_millis(80),
        move || step(&t),
        None,
        // moshi-server has no drain: a stop signal ends the process and every stream with it.
        move || format!("stop signal: exiting at once with {} open stream(s)", lock(&s).slots.streams.len()),
    )
}

fn step(server: &Shared) {
    let mut s = lock(server);
    let open = s.slots.streams.len();
    if open == 0 {
        return;
    }
    let secs = (f64::from(server.args.base_step_ms) + server.args.step_ms * open as f64) / 1000.0;
    s.steps.observe(secs);
}

async fn route(req: Request<Incoming>, server: &Shared) -> (StatusCode, String) {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let key = req.headers().get("kyutai-api-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = match standin::body(req).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, metrics(server)),
        (&Method::GET, "/api/build_info") => (StatusCode::OK, json!({"build": "moshi-standin"}).to_string()),
        (&Method::GET, "/api/modules_info") => {
            let used = lock(server).slots.streams.len();
            let total = server.args.batch_size;
            (StatusCode::OK, json!([{"name": "asr", "used_slots": used, "total_slots": total}]).to_string())
        }
        (&Method::GET, "/standin/state") => (StatusCode::OK, lock(server).slots.state().to_string()),
        (&Method::POST, "/standin/rooms") => {
            if key.as_deref() != Some(server.args.api_key.as_str()) {
                return (StatusCode::UNAUTHORIZED, json!({"error": "invalid kyutai-api-key"}).to_string());
            }
            let admit = lock(server).slots.admit(&body);
            Slots::answer(&admit, json!({"error": "no free channels"}))
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
    out.push_str("# HELP asr_open_channels Open ASR channels\n# TYPE asr_open_channels gauge\n");
    out.push_str(&format!("asr_open_channels{{handler=\"all\"}} {}\n", s.slots.streams.len()));
    out.push_str("# HELP asr_connect Connections\n# TYPE asr_connect counter\n");
    out.push_str(&format!("asr_connect{{handler=\"all\"}} {}\n", s.slots.connects));
    out.push_str(&s.steps.render("asr_model_step_duration", "Model step duration"));
    out.push_str("# HELP asr_connection_num_steps Steps per connection\n# TYPE asr_connection_num_steps gauge\n");
    out.push_str(&format!("asr_connection_num_steps {}\n", s.steps.count()));
    out
}
