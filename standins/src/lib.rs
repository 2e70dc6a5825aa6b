//! The loopback stand-ins of the test harnesses (`src/bin/`: `livekit-standin`, `moshi-standin`,
//! `whisperlive-standin`, `transcriber-standin`), in a crate of their own so that the product holds no test
//! code paths. This library is what they share: a tiny HTTP/1 server whose handler answers a status and a
//! body, a poison-tolerant lock, and for the caption processes their slots, a histogram and the process's
//! life. What they must agree on with the operator (tokens, the metrics exposition, durations) they take
//! from `visio_operator` itself.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};

/// Locks `m`, taking the data of a poisoned lock as it is (a stand-in never gives up on a panic).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves every connection accepted on `listener` with `handler` (JSON content type), each for at most
/// 30 s. Runs until the task is dropped.
pub async fn accept<H, F>(listener: tokio::net::TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = (StatusCode, String)> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = handler(req);
                async move {
                    let (status, body) = answer.await;
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap_or_default(),
                    )
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = tokio::time::timeout(
                Duration::from_secs(30),
                hyper::server::conn::http1::Builder::new().serve_connection(io, service),
            )
            .await;
        });
    }
}

/// A caption backend stand-in's slots (`moshi-standin`, `whisperlive-standin`): each open stream holds one
/// slot for its whole life; when every slot is taken the next stream is refused and counted, never queued.
#[derive(Debug)]
pub struct Slots {
    /// Open streams, with when each opened.
    pub streams: std::collections::BTreeMap<String, std::time::Instant>,
    /// Slots of the process.
    pub capacity: u32,
    /// Streams accepted since start.
    pub connects: u64,
    /// Streams refused since start (every slot taken).
    pub rejected: u64,
}

/// What became of a stream the harness asked to open.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Opened: it holds a slot now.
    Opened(String),
    /// It was open already.
    AlreadyOpen(String),
    /// Every slot is taken: refused and counted.
    Full(String),
    /// No usable `{"name": ...}` in the body.
    BadRequest,
}

impl Slots {
    /// `capacity` free slots.
    pub fn new(capacity: u32) -> Self {
        Slots { streams: Default::default(), capacity, connects: 0, rejected: 0 }
    }

    /// Opens the stream named by the JSON body `{"name": ...}` of the control API.
    pub fn admit(&mut self, body: &[u8]) -> Admit {
        let name =
            serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| v["name"].as_str().map(str::to_string));
        let Some(name) = name.filter(|n| !n.is_empty() && !n.contains('/') && n.len() <= 253) else {
            return Admit::BadRequest;
        };
        if self.streams.contains_key(&name) {
            return Admit::AlreadyOpen(name);
        }
        if self.streams.len() >= self.capacity as usize {
            self.rejected += 1;
            return Admit::Full(name);
        }
        self.connects += 1;
        self.streams.insert(name.clone(), std::time::Instant::now());
        Admit::Opened(name)
    }

    /// The control API's answer to an [`Admit`]: 201 opened, 200 already open, 503 with `full` when every
    /// slot is taken, 400 for a bad body.
    pub fn answer(admit: &Admit, full: serde_json::Value) -> (StatusCode, String) {
        use serde_json::json;
        match admit {
            Admit::Opened(n) => (StatusCode::CREATED, json!({"room": n}).to_string()),
            Admit::AlreadyOpen(n) => (StatusCode::OK, json!({"room": n}).to_string()),
            Admit::Full(_) => (StatusCode::SERVICE_UNAVAILABLE, full.to_string()),
            Admit::BadRequest => (StatusCode::BAD_REQUEST, json!({"error": "expected {\"name\": ...}"}).to_string()),
        }
    }

    /// `DELETE /standin/rooms/<name>`: 200 when it was open, 404 otherwise.
    pub fn close(&mut self, name: &str) -> (StatusCode, String) {
        if self.streams.remove(name).is_some() {
            (StatusCode::OK, "{}".into())
        } else {
            (StatusCode::NOT_FOUND, serde_json::json!({"error": "no such stream"}).to_string())
        }
    }

    /// `GET /standin/state`, shaped like the LiveKit stand-in's (streams as `rooms`; a caption backend never
    /// drains, warns or ends sessions itself).
    pub fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "rooms": self.streams.keys().map(|n| serde_json::json!({"name": n, "participants": 1})).collect::<Vec<_>>(),
            "participants": self.streams.len(),
            "slots": self.capacity,
            "rejected": self.rejected,
            "draining": false,
            "warnings": [],
            "deleted": [],
        })
    }
}

/// A cumulative Prometheus histogram (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at or under each bound, then +Inf.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, buckets: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    /// Records one observation.
    pub fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.buckets[i] += 1;
            }
        }
        self.buckets[self.bounds.len()] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The exposition lines of histogram `name` (with its HELP and TYPE).
    pub fn render(&self, name: &str, help: &str) -> String {
        let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        for (i, b) in self.bounds.iter().enumerate() {
            out.push_str(&visio_operator::agent::prometheus::render_sample(
                &format!("{name}_bucket"),
                &[("le", &b.to_string())],
                &self.buckets[i].to_string(),
            ));
            out.push('\n');
        }
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {}\n", self.buckets[self.bounds.len()]));
        out.push_str(&format!("{name}_sum {}\n{name}_count {}\n", self.sum, self.count));
        out
    }
}

/// A request's body, at most 64 KiB.
pub async fn body(req: Request<Incoming>) -> Result<Bytes, (StatusCode, String)> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err((StatusCode::PAYLOAD_TOO_LARGE, "body too large\n".into())),
    }
}

/// A request handler of a stand-in.
pub type Handler = std::sync::Arc<
    dyn Fn(Request<Incoming>) -> std::pin::Pin<Box<dyn Future<Output = (StatusCode, String)> + Send>> + Send + Sync,
>;

/// How a stand-in that drains stops on SIGTERM (a LiveKit Agents worker): `begin` once (it takes no new
/// work), then the process exits (code 0) as soon as `idle` says it holds none, or when `timeout` has
/// passed with work left (the worker gives up and closes). A second signal exits at once with code 1.
pub struct Drain {
    pub begin: Box<dyn FnOnce() + Send>,
    pub idle: Box<dyn Fn() -> bool + Send>,
    pub timeout: Duration,
}

/// The life of a caption stand-in process: refuses any address that is not loopback, binds `addr` (and
/// `metrics_addr` when the backend has a metrics port of its own, else metrics are on `addr`), prints
/// `<program> http=<addr> metrics=<addr> pid=<pid>`, serves, calls `tick` every `period`, and on SIGTERM or
/// SIGINT exits, after printing `on_stop()` to stderr: at once (a caption backend has no drain), or with
/// `drain` once it holds no more work or its timeout passed (a second signal then exits 1).
#[allow(clippy::too_many_arguments)]
pub fn run_caption_standin(
    program: &str,
    addr: std::net::SocketAddr,
    metrics: Option<(std::net::SocketAddr, Handler)>,
    handler: Handler,
    period: Duration,
    tick: impl FnMut() + Send + 'static,
    drain: Option<Drain>,
    on_stop: impl FnOnce() -> String,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    for a in std::iter::once(addr).chain(metrics.as_ref().map(|m| m.0)) {
        if !a.ip().is_loopback() {
            eprintln!("{program}: {a} is not a loopback address");
            return ExitCode::from(2);
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::from(2);
        }
    };
    let code = rt.block_on(async move {
        use std::io::Write;
        use tokio::signal::unix::{signal, SignalKind};
        let bind = |a| async move { tokio::net::TcpListener::bind(a).await };
        let Ok(listener) = bind(addr).await else {
            eprintln!("{program}: cannot bind {addr}");
            return 2;
        };
        let metrics_listener = match &metrics {
            Some((a, h)) => match bind(*a).await {
                Ok(l) => Some((l, h.clone())),
                Err(e) => {
                    eprintln!("{program}: bind {a}: {e}");
                    return 2;
                }
            },
            None => None,
        };
        let Ok(http_at) = listener.local_addr() else { return 2 };
        let metrics_at = match &metrics_listener {
            Some((l, _)) => match l.local_addr() {
                Ok(a) => a,
                Err(_) => return 2,
            },
            None => http_at,
        };
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            eprintln!("{program}: cannot install signal handlers");
            return 2;
        };
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{program} http={http_at} metrics={metrics_at} pid={}", std::process::id());
            let _ = out.flush();
        }
        tokio::spawn(accept(listener, move |req| handler(req)));
        if let Some((l, h)) = metrics_listener {
            tokio::spawn(accept(l, move |req| h(req)));
        }
        let mut tick = tick;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            loop {
                every.tick().await;
                tick();
            }
        });
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if let Some(drain) = drain {
            (drain.begin)();
            let deadline = tokio::time::Instant::now() + drain.timeout;
            while !(drain.idle)() {
                if tokio::time::Instant::now() >= deadline {
                    eprintln!("{program}: drain timed out, forcing shutdown");
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = term.recv() => return 1,
                    _ = int.recv() => return 1,
                }
            }
        }
        0
    });
    match code {
        0 => eprintln!("{program}: {}", on_stop()),
        1 => eprintln!("{program}: second stop signal: exiting forcefully ({})", on_stop()),
        _ => {}
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_backend_refuses_and_counts_never_queues() {
        let mut s = Slots::new(2);
        assert_eq!(s.admit(br#"{"name":"a"}"#), Admit::Opened("a".into()));
        assert_eq!(s.admit(br#"{"name":"a"}"#), Admit::AlreadyOpen("a".into()));
        assert_eq!(s.admit(br#"{"name":"b"}"#), Admit::Opened("b".into()));
        assert_eq!(s.admit(br#"{"name":"c"}"#), Admit::Full("c".into()));
        assert_eq!((s.streams.len(), s.connects, s.rejected), (2, 2, 1));
        assert_eq!(Slots::answer(&Admit::Full("c".into()), serde_json::json!({"status": "WAIT"})).0, 503);
        assert_eq!(s.admit(b"{}"), Admit::BadRequest);
        assert_eq!(s.admit(br#"{"name":"x/y"}"#), Admit::BadRequest);
        assert_eq!(s.close("a").0, StatusCode::OK);
        assert_eq!(s.close("a").0, StatusCode::NOT_FOUND);
        assert_eq!(s.admit(br#"{"name":"c"}"#), Admit::Opened("c".into()));
        assert_eq!(s.state()["rejected"], 1);
    }

    #[test]
    fn histogram_is_cumulative_and_readable_by_the_agent() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.5, 5.0] {
            h.observe(v);
        }
        let text = h.render("x_seconds", "x");
        assert_eq!(
            visio_operator::agent::captions::histogram(&text, "x_seconds"),
            Some(vec![(0.1, 1), (1.0, 2), (f64::INFINITY, 3)])
        );
        assert!(text.contains("x_seconds_count 3\n"), "{text}");
    }
}
