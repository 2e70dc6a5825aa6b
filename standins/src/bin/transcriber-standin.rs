//! `transcriber-standin`: a stand-in for a caption transcriber worker (a LiveKit Agents worker, as the
//! French `meet` project runs them), for the caption tests. Loopback only.
//!
//! It follows `livekit-agents` (livekit/agents, `livekit-agents/livekit/agents/`) where the operator and
//! its agent depend on it. Per behaviour, the upstream file and version it follows (no real worker runs
//! here: it needs a LiveKit server to register with and the worker image's Python stack):
//!
//! | behaviour | upstream |
//! |---|---|
//! | one job per room being captioned, at most `--jobs` at once (`JOBS_PER_WORKER`); a worker at capacity takes no new job (LiveKit dispatches it to another worker; here it is refused with 503 and counted) | the transcriber image's `load_fnc`/`load_threshold` (`worker.py`) |
//! | `lk_agents_active_job_count{nodename}` (or `--jobs-metric lk_agents_running_jobs`, its name before the rename): **no sample until the first job**, then the running jobs (0 again once they end) | `telemetry/metrics.py` (`RUNNING_JOB_GAUGE`, labelled; `job_started` in `ipc/job_proc_executor.py` `launch_job`), 1.2.0 and later |
//! | `lk_agents_worker_load{nodename}`: the CPU-based load (`--cpu-load`, fixed), never jobs per slot, with a sample from the start | `telemetry/metrics.py` `_update_worker_load`, set by `worker.py`'s load loop every 0.5 s (`UPDATE_LOAD_INTERVAL`), 1.3.3 and later |
//! | metrics on a port of their own (`--metrics-addr`; `PROMETHEUS_PORT`, 8082 in the pod), health on `GET /` of `--addr` (8081 in the pod) | `worker.py` (`prometheus_port`, `health_check`) |
//! | on SIGTERM it **drains**: it takes no new job (409) and exits (0) once its last job has ended, or when `--drain-timeout` (3600 s, `drain_timeout`) has passed with jobs left ("drain timed out, forcing shutdown"); a second signal exits at once with code 1 | `worker.py` `drain` (`DRAIN_TIMEOUT = 3600`), `cli/cli.py` `_run_worker` (`os._exit(1)` on the second signal) |
//!
//! The harness drives it with the control API of the other stand-ins: `POST /standin/rooms` `{"name"}`
//! opens the job of room `name` (201; 409 while draining; 503 at capacity; 200 if already open),
//! `DELETE /standin/rooms/<name>` ends it, `GET /standin/state` returns the jobs (as `rooms`), `draining`
//! and the refusals. On exit it prints its final state as `{"final": <state>}` on stdout.
//!
//! On start it prints one line to stdout: `transcriber-standin http=<addr> metrics=<addr> pid=<pid>`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use visio_standins::{self as standin, Drain, Slots};

/// A stand-in for a LiveKit Agents transcriber worker (tests only; loopback only).
#[derive(Parser, Debug)]
#[command(name = "transcriber-standin")]
struct Args {
    /// Address of the health endpoint and the control API. Port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Address of `/metrics` (`PROMETHEUS_PORT`). Port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics_addr: SocketAddr,
    /// Jobs one worker takes (`JOBS_PER_WORKER`).
    #[arg(long, env = "JOBS_PER_WORKER", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    jobs: u32,
    /// The worker's name in its metrics' `nodename` label.
    #[arg(long, default_value = "transcriber")]
    nodename: String,
    /// Name of the jobs gauge: `lk_agents_active_job_count` (livekit-agents 1.2.0 and later) or
    /// `lk_agents_running_jobs` (its name before the rename).
    #[arg(long, default_value = "lk_agents_active_job_count")]
    jobs_metric: String,
    /// The worker's CPU-based load (`lk_agents_worker_load`), 0 to 1.
    #[arg(long, default_value_t = 0.05)]
    cpu_load: f64,
    /// Longest drain, in seconds (`drain_timeout`): then the worker closes with its jobs.
    #[arg(long, default_value_t = 3600)]
    drain_timeout: u64,
}

struct Server {
    jobs: Mutex<Slots>,
    draining: AtomicBool,
    /// Jobs refused while draining.
    refused_draining: Mutex<u64>,
    args: Args,
}

type Shared = Arc<Server>;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let (addr, metrics_addr, drain_timeout) = (args.addr, args.metrics_addr, args.drain_timeout);
    let server = Arc::new(Server {
        jobs: Mutex::new(Slots::new(args.jobs)),
        draining: AtomicBool::new(false),
        refused_draining: Mutex::new(0),
        args,
    });
    let (m, h, b, i, s) = (server.clone(), server.clone(), server.clone(), server.clone(), server);
    standin::run_caption_standin(
        "transcriber-standin",
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
        Duration::from_secs(1),
        || {},
        // A LiveKit Agents worker drains on SIGTERM: no new job, exit once the last one ends.
        Some(Drain {
            begin: Box::new(move || {
                b.draining.store(true, Ordering::SeqCst);
                eprintln!("transcriber-standin: draining with {} job(s)", standin::lock(&b.jobs).streams.len());
            }),
            idle: Box::new(move || standin::lock(&i.jobs).streams.is_empty()),
            timeout: Duration::from_secs(drain_timeout),
        }),
        move || {
            let state = state(&s);
            println!("{}", json!({"final": state}));
            format!("exiting with {} job(s)", state["rooms"].as_array().map(Vec::len).unwrap_or(0))
        },
    )
}

fn state(server: &Shared) -> serde_json::Value {
    let mut v = standin::lock(&server.jobs).state();
    v["draining"] = json!(server.draining.load(Ordering::SeqCst));
    v["refused_draining"] = json!(*standin::lock(&server.refused_draining));
    v
}

async fn route(req: Request<Incoming>, server: &Shared) -> (StatusCode, String) {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = match standin::body(req).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    match (&method, path.as_str()) {
        (&Method::GET, "/") => (StatusCode::OK, "{}".into()),
        (&Method::GET, "/standin/state") => (StatusCode::OK, state(server).to_string()),
        (&Method::POST, "/standin/rooms") => {
            if server.draining.load(Ordering::SeqCst) {
                *standin::lock(&server.refused_draining) += 1;
                return (StatusCode::CONFLICT, json!({"error": "worker is draining"}).to_string());
            }
            let admit = standin::lock(&server.jobs).admit(&body);
            Slots::answer(&admit, json!({"error": "worker at capacity"}))
        }
        (&Method::DELETE, p) if p.starts_with("/standin/rooms/") => {
            standin::lock(&server.jobs).close(&p["/standin/rooms/".len()..])
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn metrics(server: &Shared) -> String {
    let (jobs, ever) = {
        let j = standin::lock(&server.jobs);
        (j.streams.len(), j.connects > 0)
    };
    let node = &server.args.nodename;
    let name = &server.args.jobs_metric;
    let mut out = format!("# HELP {name} Active jobs\n# TYPE {name} gauge\n");
    // A labelled gauge: its first sample comes with the first job.
    if ever {
        out.push_str(&format!("{name}{{nodename=\"{node}\"}} {jobs}.0\n"));
    }
    out.push_str(&format!(
        "# HELP lk_agents_worker_load Worker load percentage\n# TYPE lk_agents_worker_load gauge\n\
         lk_agents_worker_load{{nodename=\"{node}\"}} {}\n",
        server.args.cpu_load
    ));
    out
}
