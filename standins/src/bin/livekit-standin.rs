//! `livekit-standin`: a stand-in for LiveKit server, for the agent's tests. Loopback only.
//!
//! It plays one livekit-server v1.9.11 node **without Redis** (so ListRooms and DeleteRoom are the node's
//! own, as on a lone node), where the agent depends on it; `e2e/tests/livekit.rs` runs the same script
//! against it and the real server and fails when they disagree. Each behaviour and the upstream file it
//! follows:
//! - `/metrics` (on `--metrics-addr`): `livekit_room_total` and `livekit_participant_total` with `node_id`
//!   and `node_type` labels, 0 from the start (`pkg/telemetry/prometheus/rooms.go`, `node.go`);
//! - `GET /` answers `OK` (`LivekitServer.defaultHandler`, `pkg/service/server.go`);
//! - the RoomService over Twirp with JSON (`ListRooms`, `SendData`, `DeleteRoom`), each checking the
//!   Bearer token (HS256 with the API secret, `iss` = API key, `exp` required: `pkg/service/auth.go`);
//!   a token without the grant the method needs (`roomList`, `roomAdmin` on the room, `roomCreate`) is
//!   401 `unauthenticated` (`twirpAuthError`, `pkg/service/roomservice.go`); `DeleteRoom` of a missing
//!   room is 404 `not_found`; `SendData` to a missing room answers 503 `unavailable` after about 3.1 s
//!   (the real server waits for a node to answer for the room: measured on the binary);
//! - drain: the first SIGTERM (or SIGINT) makes it refuse new rooms, keep the existing ones (which still
//!   admit participants), and exit (code 0) once no participant is left, checked every
//!   `--drain-poll-interval` (5 s like LiveKit, `LivekitServer.Stop`); a second signal disconnects
//!   everyone and exits at once, code 0 like LiveKit's (`cmd/server/main.go`).
//!
//! The test harness drives it with a control API: `POST /standin/rooms` `{"name","participants"}` opens a
//! room or sets its participants (409 for a new room while draining), `DELETE /standin/rooms/<name>` ends
//! one, `GET /standin/state` returns rooms, participants, draining, the signals received, the warnings
//! (data packets) received and the rooms deleted through the API. Its first stdout line gives its addresses;
//! its last, when it exits, is `{"final": <state>}`.
//!
//! On start it prints one line to stdout: `livekit-standin http=<addr> metrics=<addr> pid=<pid>`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use clap::Parser;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use visio_operator::agent::jwt::{self, VideoGrant};
use visio_operator::agent::prometheus::render_sample;
use visio_standins as standin;

/// A stand-in for LiveKit server (tests only; loopback only).
#[derive(Parser, Debug)]
#[command(name = "livekit-standin")]
struct Args {
    /// HTTP address (signalling port: `/`, Twirp, control API). Port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Prometheus address. Port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics_addr: SocketAddr,
    /// API key the tokens must name.
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = "devkey")]
    api_key: String,
    /// How often a draining stand-in checks whether participants are left.
    #[arg(long, default_value = "5s", value_parser = |s: &str| visio_operator::duration::parse(s))]
    drain_poll_interval: Duration,
    /// Node id in the metrics' labels.
    #[arg(long, default_value = "ND_standin")]
    node_id: String,
}

#[derive(Clone, Debug, Serialize)]
struct Room {
    sid: String,
    name: String,
    num_participants: u32,
    creation_time: i64,
}

#[derive(Clone, Debug, Serialize)]
struct DataPacket {
    room: String,
    topic: Option<String>,
    kind: Value,
    /// The payload as text (the agent sends JSON).
    data: String,
}

#[derive(Default, Debug)]
struct State {
    rooms: BTreeMap<String, Room>,
    draining: bool,
    signals: u32,
    warnings: Vec<DataPacket>,
    deleted: Vec<String>,
    next_sid: u64,
}

impl State {
    fn participants(&self) -> u32 {
        self.rooms.values().map(|r| r.num_participants).sum()
    }
}

struct Server {
    state: Mutex<State>,
    api_key: String,
    api_secret: String,
    node_id: String,
}

type Shared = Arc<Server>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    standin::lock(&s.state)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    for addr in [args.addr, args.metrics_addr] {
        if !addr.ip().is_loopback() {
            eprintln!("livekit-standin: {addr} is not a loopback address");
            return std::process::ExitCode::from(2);
        }
    }
    let api_secret = std::env::var("LIVEKIT_API_SECRET").unwrap_or_else(|_| "devsecret".into());
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("livekit-standin: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let server = Arc::new(Server {
        state: Mutex::new(State::default()),
        api_key: args.api_key.clone(),
        api_secret,
        node_id: args.node_id.clone(),
    });
    let code = rt.block_on(serve(args, server));
    std::process::ExitCode::from(code)
}

async fn serve(args: Args, server: Shared) -> u8 {
    let (http, metrics) = match (
        tokio::net::TcpListener::bind(args.addr).await,
        tokio::net::TcpListener::bind(args.metrics_addr).await,
    ) {
        (Ok(h), Ok(m)) => (h, m),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("livekit-standin: bind: {e}");
            return 2;
        }
    };
    let (Ok(http_addr), Ok(metrics_addr)) = (http.local_addr(), metrics.local_addr()) else {
        return 2;
    };
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        eprintln!("livekit-standin: cannot install signal handlers");
        return 2;
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "livekit-standin http={http_addr} metrics={metrics_addr} pid={}", std::process::id());
        let _ = out.flush();
    }
    let (api_server, metrics_server) = (server.clone(), server.clone());
    tokio::spawn(standin::accept(http, move |req| {
        let server = api_server.clone();
        async move { route(req, &server).await }
    }));
    tokio::spawn(standin::accept(metrics, move |req| {
        let answer = metrics_route(&req, &metrics_server);
        async move { answer }
    }));

    // Wait for the first signal.
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    {
        let mut s = lock(&server);
        s.signals += 1;
        s.draining = true;
    }
    eprintln!("livekit-standin: draining: no new rooms, exiting when no participant is left");
    let mut poll = tokio::time::interval(args.drain_poll_interval);
    poll.tick().await;
    loop {
        tokio::select! {
            _ = term.recv() => return forced(&server),
            _ = int.recv() => return forced(&server),
            _ = poll.tick() => {
                if lock(&server).participants() == 0 {
                    eprintln!("livekit-standin: drained, exiting");
                    print_final(&server);
                    return 0;
                }
            }
        }
    }
}

fn forced(server: &Shared) -> u8 {
    lock(server).signals += 1;
    eprintln!("livekit-standin: second signal, exiting at once");
    print_final(server);
    0
}

/// How long the real server takes to answer `SendData` for a room no node hosts (measured: about 3.1 s).
const SEND_DATA_MISSING_ROOM: Duration = Duration::from_millis(3100);

/// The last stdout line: the final state (`{"final": <state>}`), so whoever watches the process learns
/// which rooms were deleted through the API even when it exits between two of its polls.
fn print_final(server: &Shared) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", json!({"final": state_json(server)}));
    let _ = out.flush();
}

fn metrics_route(req: &Request<Incoming>, server: &Shared) -> (StatusCode, String) {
    if req.uri().path() != "/metrics" {
        return (StatusCode::NOT_FOUND, "not found\n".into());
    }
    let s = lock(server);
    let labels = [("node_id", server.node_id.as_str()), ("node_type", "SERVER")];
    let mut out = String::new();
    for (name, help, value) in [
        ("livekit_room_total", "Number of rooms", s.rooms.len() as u64),
        ("livekit_participant_total", "Number of participants", u64::from(s.participants())),
        ("livekit_track_published_total", "Number of published tracks", 0),
    ] {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        out.push_str(&render_sample(name, &labels, &value.to_string()));
        out.push('\n');
    }
    out.push_str("# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\n");
    out.push_str("go_goroutines 42\n");
    (StatusCode::OK, out)
}

fn twirp_error(status: StatusCode, code: &str, msg: &str) -> (StatusCode, String) {
    (status, json!({"code": code, "msg": msg}).to_string())
}

async fn route(req: Request<Incoming>, server: &Shared) -> (StatusCode, String) {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = match Limited::new(req.into_body(), 1024 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n".into()),
    };
    match (&method, path.as_str()) {
        (&Method::GET, "/") => (StatusCode::OK, "OK".into()),
        (&Method::GET, "/standin/state") => (StatusCode::OK, state_json(server).to_string()),
        (&Method::POST, "/standin/rooms") => open_room(server, &body),
        (&Method::DELETE, p) if p.starts_with("/standin/rooms/") => {
            let name = &p["/standin/rooms/".len()..];
            match lock(server).rooms.remove(name) {
                Some(_) => (StatusCode::OK, "{}".into()),
                None => (StatusCode::NOT_FOUND, json!({"error": "no such room"}).to_string()),
            }
        }
        (&Method::POST, p) if p.starts_with("/twirp/livekit.RoomService/") => {
            if !content_type.starts_with("application/json") {
                return twirp_error(StatusCode::NOT_FOUND, "bad_route", "only the JSON protocol is served");
            }
            let Some(token) = auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")) else {
                return twirp_error(StatusCode::UNAUTHORIZED, "unauthenticated", "no bearer token");
            };
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
            let claims = match jwt::verify(token, &server.api_secret, now) {
                Ok(c) if c.iss == server.api_key => c,
                Ok(_) => return twirp_error(StatusCode::UNAUTHORIZED, "unauthenticated", "unknown API key"),
                Err(e) => return twirp_error(StatusCode::UNAUTHORIZED, "unauthenticated", &e.to_string()),
            };
            let request: Value = match serde_json::from_slice(if body.is_empty() { b"{}" } else { &body }) {
                Ok(v @ Value::Object(_)) => v,
                _ => return twirp_error(StatusCode::BAD_REQUEST, "malformed", "body is not a JSON object"),
            };
            let answer = twirp(server, &p["/twirp/livekit.RoomService/".len()..], &claims.video, &request);
            if answer.0 == StatusCode::SERVICE_UNAVAILABLE {
                tokio::time::sleep(SEND_DATA_MISSING_ROOM).await;
            }
            answer
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn twirp(server: &Shared, method: &str, grant: &VideoGrant, req: &Value) -> (StatusCode, String) {
    let denied = || twirp_error(StatusCode::UNAUTHORIZED, "unauthenticated", "permissions denied");
    let room_name = req.get("room").and_then(Value::as_str).unwrap_or_default().to_string();
    match method {
        "ListRooms" => {
            if !grant.room_list {
                return denied();
            }
            let names: Option<Vec<&str>> =
                req.get("names").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect());
            let s = lock(server);
            let rooms: Vec<&Room> = s
                .rooms
                .values()
                .filter(|r| names.as_ref().is_none_or(|n| n.is_empty() || n.contains(&r.name.as_str())))
                .collect();
            (StatusCode::OK, json!({ "rooms": rooms }).to_string())
        }
        "DeleteRoom" => {
            if !grant.room_create {
                return denied();
            }
            let mut s = lock(server);
            if s.rooms.remove(&room_name).is_none() {
                return twirp_error(StatusCode::NOT_FOUND, "not_found", "requested room does not exist");
            }
            s.deleted.push(room_name);
            (StatusCode::OK, "{}".into())
        }
        "SendData" => {
            if !grant.room_admin || grant.room.as_deref() != Some(room_name.as_str()) {
                return denied();
            }
            let b64 = base64::engine::general_purpose::STANDARD;
            let decode = |v: Option<&Value>| -> Result<Vec<u8>, ()> {
                match v.and_then(Value::as_str) {
                    None => Ok(Vec::new()),
                    Some(s) => b64.decode(s).map_err(|_| ()),
                }
            };
            let Ok(data) = decode(req.get("data")) else {
                return twirp_error(StatusCode::BAD_REQUEST, "malformed", "data is not base64");
            };
            match decode(req.get("nonce")) {
                Ok(n) if n.is_empty() || n.len() == 16 => {}
                _ => {
                    return twirp_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_argument",
                        "nonce should be 16-bytes or not present",
                    )
                }
            }
            let mut s = lock(server);
            if !s.rooms.contains_key(&room_name) {
                // `route` holds this answer back for SEND_DATA_MISSING_ROOM, as the real server does.
                return twirp_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "no node answered for the room");
            }
            s.warnings.push(DataPacket {
                room: room_name,
                topic: req.get("topic").and_then(Value::as_str).map(str::to_string),
                kind: req.get("kind").cloned().unwrap_or(Value::Null),
                data: String::from_utf8_lossy(&data).into_owned(),
            });
            (StatusCode::OK, "{}".into())
        }
        _ => twirp_error(StatusCode::NOT_FOUND, "bad_route", "no such method"),
    }
}

#[derive(Deserialize)]
struct OpenRoom {
    name: String,
    #[serde(default)]
    participants: u32,
}

fn open_room(server: &Shared, body: &[u8]) -> (StatusCode, String) {
    let Ok(req) = serde_json::from_slice::<OpenRoom>(body) else {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": "expected {\"name\": ..., \"participants\": n}"}).to_string(),
        );
    };
    if req.name.is_empty() || req.name.contains('/') {
        return (StatusCode::BAD_REQUEST, json!({"error": "bad room name"}).to_string());
    }
    let mut s = lock(server);
    if let Some(room) = s.rooms.get_mut(&req.name) {
        // Existing rooms keep admitting participants, draining or not.
        room.num_participants = req.participants;
        return (StatusCode::OK, json!({"room": req.name}).to_string());
    }
    if s.draining {
        return (StatusCode::CONFLICT, json!({"error": "node is draining: no new rooms"}).to_string());
    }
    s.next_sid += 1;
    let room = Room {
        sid: format!("RM_standin{}", s.next_sid),
        name: req.name.clone(),
        num_participants: req.participants,
        creation_time: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
    };
    s.rooms.insert(req.name.clone(), room);
    (StatusCode::CREATED, json!({"room": req.name}).to_string())
}

fn state_json(server: &Shared) -> Value {
    let s = lock(server);
    json!({
        "rooms": s.rooms.values().map(|r| json!({"name": r.name, "participants": r.num_participants})).collect::<Vec<_>>(),
        "participants": s.participants(),
        "draining": s.draining,
        "signals": s.signals,
        "warnings": s.warnings,
        "deleted": s.deleted,
    })
}
