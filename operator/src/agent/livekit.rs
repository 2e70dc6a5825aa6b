//! The LiveKit backend: load from its Prometheus endpoint, drain by SIGTERM, warnings and forced ends
//! through its RoomService (Twirp, JSON) — all on loopback.
//!
//! - Load: the rooms this node hosts (`livekit_room_total`) and their participants. With Redis the
//!   participants are those ListRooms reports for the rooms [`placement`](super::placement) finds mapped to
//!   this node (`livekit_participant_total` also counts participants whose room is elsewhere); without
//!   Redis, `livekit_participant_total`. A missing or unusable figure is an error (load unknown).
//! - Drain: LiveKit drains on its first SIGTERM (no new rooms, existing ones continue, exit when no
//!   participant is left). Each LiveKit process is signalled once; a process that comes back (the
//!   container restarted after its drain) is a new process and is signalled too, so it never serves again.
//! - Once a LiveKit process told to drain has exited, and no other LiveKit process runs, the pod holds no
//!   session: the load is reported as zero (draining), not unknown. LiveKit exits as soon as no participant
//!   is left, with its empty rooms still counted and possibly before the agent's next reading, so without
//!   this the operator would never read a drained pod empty. The rule needs a process the agent did
//!   signal (so `/proc` is visible to it): an agent that cannot see processes never reports zero this way.
//! - Warnings: `ListRooms` (kept to the rooms hosted here), then `SendData` to each room (reliable, topic `visio.system`, payload
//!   `{"type":"visio.drain-warning","deadline":"<RFC 3339>"}`), each room once.
//! - End sessions: `ListRooms` (kept to the rooms hosted here), then `DeleteRoom` for each: participants
//!   are disconnected and reconnect to a serving node. A room hosted elsewhere is never touched; when the
//!   agent cannot tell where rooms are (Redis unreachable), it touches none and retries.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use super::backend::{Backend, BackendError, DrainStatus};
use super::http::{self, LoopbackUrl};
use super::jwt::{ApiCredentials, VideoGrant};
use super::placement::{self, Placement, RoomMap};
use super::process::{self, Scope, Selection};
use super::prometheus::{sum_metric, Sum};
use crate::pod_protocol::Load;

/// Participants on the node, one series per label set.
pub const PARTICIPANTS_METRIC: &str = "livekit_participant_total";
/// Rooms on the node.
pub const ROOMS_METRIC: &str = "livekit_room_total";
/// Data topic of the agent's messages to participants.
pub const SYSTEM_TOPIC: &str = "visio.system";
/// `type` of the drain warning payload.
pub const DRAIN_WARNING: &str = "visio.drain-warning";
/// Default program name of the SFU process.
pub const DEFAULT_PROCESS: &str = "livekit-server";
/// Default address of LiveKit's HTTP API in the pod.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:7880";
/// Default address of LiveKit's Prometheus endpoint in the pod.
pub const DEFAULT_METRICS_URL: &str = "http://127.0.0.1:6789/metrics";

/// Largest body the agent reads from LiveKit (metrics of a busy node, or a long room list).
const MAX_BODY: usize = 8 * 1024 * 1024;
/// Most rooms handled in one round (one SFU node holds far fewer).
const MAX_ROOMS: usize = 10_000;

/// Where LiveKit is and how to reach it.
#[derive(Clone, Debug)]
pub struct LiveKitConfig {
    pub metrics_url: LoopbackUrl,
    pub api_url: LoopbackUrl,
    /// `None`: load reporting and drain work, warnings and forced ends fail with `NoCredentials`.
    pub credentials: Option<ApiCredentials>,
    /// Program name of the SFU process (`livekit-server`).
    pub process_name: String,
    pub scope: Scope,
    /// Where processes are listed (`/proc`).
    pub proc_root: PathBuf,
    /// Deadline of each call to LiveKit (and to Redis).
    pub timeout: Duration,
    /// How rooms are placed on nodes (LiveKit's own config decides).
    pub placement: Placement,
}

impl LiveKitConfig {
    /// The in-pod defaults with the given endpoints and credentials.
    pub fn new(metrics_url: LoopbackUrl, api_url: LoopbackUrl, credentials: Option<ApiCredentials>) -> Self {
        Self {
            metrics_url,
            api_url,
            credentials,
            process_name: DEFAULT_PROCESS.into(),
            scope: Scope::Any,
            proc_root: PathBuf::from("/proc"),
            timeout: Duration::from_secs(2),
            placement: Placement::Local,
        }
    }
}

/// One room as ListRooms returns it (only what the agent uses).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Room {
    #[serde(default)]
    pub name: String,
    #[serde(default, alias = "numParticipants")]
    pub num_participants: u32,
}

#[derive(Deserialize)]
struct ListRoomsResponse {
    #[serde(default)]
    rooms: Vec<Room>,
}

#[derive(Deserialize)]
struct TwirpError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    msg: String,
}

/// The LiveKit server next to the agent.
#[derive(Debug)]
pub struct LiveKit {
    config: LiveKitConfig,
    own_pid: i32,
    /// Every process told to drain (never told twice).
    signalled: BTreeSet<i32>,
    /// Rooms already warned.
    warned: BTreeSet<String>,
    /// LiveKit's room-to-node map, when rooms are placed through Redis.
    room_map: Option<RoomMap>,
}

impl LiveKit {
    /// Fails only on a Redis address that cannot be a connection (checked already by [`Placement`]).
    pub fn new(config: LiveKitConfig) -> Result<Self, String> {
        let room_map = match &config.placement {
            Placement::Local => None,
            Placement::Redis(redis) => Some(RoomMap::new(redis, config.timeout)?),
        };
        Ok(Self {
            config,
            own_pid: std::process::id() as i32,
            signalled: BTreeSet::new(),
            warned: BTreeSet::new(),
            room_map,
        })
    }

    /// The rooms warned so far.
    pub fn warned_rooms(&self) -> &BTreeSet<String> {
        &self.warned
    }

    fn find_process(&self) -> Selection {
        let entries = process::scan(&self.config.proc_root);
        process::select(&entries, &self.config.process_name, self.own_pid, self.config.scope)
    }

    async fn metrics_text(&self) -> Result<String, BackendError> {
        let url = &self.config.metrics_url;
        let resp = http::call(Method::GET, url, &[], Bytes::new(), self.config.timeout, MAX_BODY)
            .await
            .map_err(|e| BackendError::Unreachable(e.to_string()))?;
        if resp.status != StatusCode::OK {
            return Err(BackendError::Status {
                call: "metrics",
                status: resp.status.as_u16(),
                message: snippet(&resp.body),
            });
        }
        Ok(String::from_utf8_lossy(&resp.body).into_owned())
    }

    async fn read_metrics(&mut self) -> Result<Load, BackendError> {
        let text = self.metrics_text().await?;
        let rooms = match sum_metric(&text, ROOMS_METRIC) {
            Sum::Known(rooms) => rooms,
            other => return Err(BackendError::Malformed(format!("{ROOMS_METRIC} {other}"))),
        };
        let participants = if self.room_map.is_none() {
            match sum_metric(&text, PARTICIPANTS_METRIC) {
                Sum::Known(p) => p,
                other => return Err(BackendError::Malformed(format!("{PARTICIPANTS_METRIC} {other}"))),
            }
        } else if rooms == 0 {
            // No room hosted here: whatever participant_total says is signalling for rooms elsewhere.
            0
        } else {
            let hosted = self.hosted_rooms(&text).await?;
            hosted.iter().fold(0u32, |sum, r| sum.saturating_add(r.num_participants))
        };
        Ok(Load { participants, rooms, capacity: None, draining: !self.signalled.is_empty(), ..Load::default() })
    }

    /// The rooms this node hosts, as ListRooms reports them. `metrics` gives the node's id when rooms are
    /// placed through Redis. With Redis, ListRooms is asked for this node's rooms by name only (it would
    /// otherwise return the whole tenant's, every interval, on every pod), and its answer is filtered
    /// again, so that nothing it adds is ever taken for this node's.
    async fn hosted_rooms(&mut self, metrics: &str) -> Result<Vec<Room>, BackendError> {
        let Some(map) = self.room_map.as_mut() else { return self.list_rooms(&[]).await };
        let node = placement::node_id(metrics, ROOMS_METRIC)?
            .ok_or_else(|| BackendError::Malformed(format!("{ROOMS_METRIC} has no node_id label")))?;
        let own = placement::rooms_on(&map.read().await?, &node);
        if own.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = own.iter().cloned().collect();
        let listed = self.list_rooms(&names).await?;
        Ok(listed.into_iter().filter(|r| own.contains(&r.name)).collect())
    }

    /// [`Self::hosted_rooms`], reading the metrics for the node id first.
    async fn rooms_here(&mut self) -> Result<Vec<Room>, BackendError> {
        let metrics = match self.room_map {
            Some(_) => self.metrics_text().await?,
            None => String::new(),
        };
        self.hosted_rooms(&metrics).await
    }

    /// Calls one RoomService method and returns its JSON answer.
    pub async fn twirp(
        &self,
        method: &'static str,
        grant: VideoGrant,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, BackendError> {
        let creds = self.config.credentials.as_ref().ok_or(BackendError::NoCredentials)?;
        let token = creds.token(grant, unix_now());
        let url = self.config.api_url.with_path(&format!("/twirp/livekit.RoomService/{method}"));
        let auth = format!("Bearer {token}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let resp = http::call(Method::POST, &url, &headers, body, self.config.timeout, MAX_BODY)
            .await
            .map_err(|e| BackendError::Unreachable(e.to_string()))?;
        if resp.status == StatusCode::OK {
            if resp.body.iter().all(u8::is_ascii_whitespace) {
                return Ok(json!({}));
            }
            return serde_json::from_slice(&resp.body)
                .map_err(|e| BackendError::Malformed(format!("{method}: {e}: {}", snippet(&resp.body))));
        }
        let err: Option<TwirpError> = serde_json::from_slice(&resp.body).ok();
        if resp.status == StatusCode::NOT_FOUND && err.as_ref().is_some_and(|e| e.code == "not_found") {
            return Err(BackendError::NotFound { call: method });
        }
        let message = match err {
            Some(e) => format!("{}: {}", e.code, e.msg),
            None => snippet(&resp.body),
        };
        Err(BackendError::Status { call: method, status: resp.status.as_u16(), message })
    }

    /// The rooms ListRooms returns, all of them when `names` is empty: with Redis, the rooms of every
    /// node of the deployment.
    pub async fn list_rooms(&self, names: &[String]) -> Result<Vec<Room>, BackendError> {
        let body = if names.is_empty() { json!({}) } else { json!({ "names": names }) };
        let value = self.twirp("ListRooms", VideoGrant::list(), body).await?;
        let resp: ListRoomsResponse =
            serde_json::from_value(value).map_err(|e| BackendError::Malformed(format!("ListRooms: {e}")))?;
        let mut rooms: Vec<Room> = resp.rooms.into_iter().filter(|r| !r.name.is_empty()).collect();
        rooms.truncate(MAX_ROOMS);
        Ok(rooms)
    }

    /// Sends `payload` to everyone in `room`, reliably, on `topic`.
    pub async fn send_data(&self, room: &str, payload: &[u8], topic: &str) -> Result<(), BackendError> {
        let nonce: [u8; 16] = rand::random();
        let body = json!({
            "room": room,
            "data": STANDARD.encode(payload),
            "kind": "RELIABLE",
            "topic": topic,
            "nonce": STANDARD.encode(nonce),
        });
        self.twirp("SendData", VideoGrant::admin(room), body).await.map(|_| ())
    }

    /// Deletes `room`, disconnecting its participants. A room already gone is not an error.
    pub async fn delete_room(&self, room: &str) -> Result<(), BackendError> {
        match self.twirp("DeleteRoom", VideoGrant::create(), json!({"room": room})).await {
            Ok(_) | Err(BackendError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The drain warning payload.
pub fn drain_warning(deadline: Timestamp) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": DRAIN_WARNING, "deadline": deadline.to_string()})).unwrap_or_default()
}

impl Backend for LiveKit {
    async fn read_load(&mut self) -> Result<Load, BackendError> {
        match self.read_metrics().await {
            Ok(load) => Ok(load),
            Err(e) => {
                let drained_and_gone = !self.signalled.is_empty() && self.find_process() == Selection::None;
                if drained_and_gone {
                    return Ok(Load { participants: 0, rooms: 0, capacity: None, draining: true, ..Load::default() });
                }
                Err(e)
            }
        }
    }

    fn drain(&mut self) -> Result<DrainStatus, BackendError> {
        match self.find_process() {
            Selection::None => Ok(DrainStatus::NotFound),
            Selection::Ambiguous(pids) => Ok(DrainStatus::Ambiguous(pids)),
            Selection::One(pid) if self.signalled.contains(&pid) => Ok(DrainStatus::AlreadySignalled(pid)),
            Selection::One(pid) => match process::sigterm(pid) {
                Ok(()) => {
                    self.signalled.insert(pid);
                    Ok(DrainStatus::Signalled(pid))
                }
                Err(process::SignalError::Gone(_)) => Ok(DrainStatus::NotFound),
                Err(e) => Err(BackendError::Process(e.to_string())),
            },
        }
    }

    async fn warn(&mut self, deadline: Timestamp) -> Result<bool, BackendError> {
        let rooms = self.rooms_here().await?;
        let payload = drain_warning(deadline);
        let mut first_error = None;
        let pending: Vec<&Room> = rooms.iter().filter(|r| !self.warned.contains(&r.name)).collect();
        for room in pending {
            match self.send_data(&room.name, &payload, SYSTEM_TOPIC).await {
                Ok(()) | Err(BackendError::NotFound { .. }) => {
                    self.warned.insert(room.name.clone());
                }
                Err(e) => {
                    tracing::warn!(room = %room.name, error = %e, "could not warn a room; retrying next interval");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }

    async fn end_sessions(&mut self) -> Result<usize, BackendError> {
        let rooms = self.rooms_here().await?;
        let mut first_error = None;
        for room in &rooms {
            if let Err(e) = self.delete_room(&room.name).await {
                tracing::warn!(room = %room.name, error = %e, "could not end a room; retrying next interval");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(rooms.len()),
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The start of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_payload() {
        let deadline: Timestamp = "2026-11-27T13:00:00Z".parse().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&drain_warning(deadline)).unwrap();
        assert_eq!(v, json!({"type": "visio.drain-warning", "deadline": "2026-11-27T13:00:00Z"}));
    }

    #[test]
    fn rooms_in_either_case() {
        let snake: ListRoomsResponse =
            serde_json::from_value(json!({"rooms": [{"name": "a", "num_participants": 2, "sid": "RM_1"}]})).unwrap();
        let camel: ListRoomsResponse =
            serde_json::from_value(json!({"rooms": [{"name": "a", "numParticipants": 2}]})).unwrap();
        assert_eq!(snake.rooms, camel.rooms);
        let empty: ListRoomsResponse = serde_json::from_value(json!({})).unwrap();
        assert!(empty.rooms.is_empty());
    }

    #[tokio::test]
    async fn unreachable_is_unknown_and_never_zero() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = LoopbackUrl::parse(&format!("http://127.0.0.1:{port}/metrics")).unwrap();
        let mut config = LiveKitConfig::new(url.clone(), url, None);
        config.process_name = "no-such-process-visio".into();
        let mut lk = LiveKit::new(config).unwrap();
        assert!(matches!(lk.read_load().await, Err(BackendError::Unreachable(_))));
        // Gone, but never told to drain (or the agent cannot see processes): unknown.
        assert_eq!(lk.drain().unwrap(), DrainStatus::NotFound);
        assert!(lk.read_load().await.is_err());
        assert!(matches!(lk.list_rooms(&[]).await, Err(BackendError::NoCredentials)));
    }

    #[tokio::test]
    async fn drained_and_exited_is_zero() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = LoopbackUrl::parse(&format!("http://127.0.0.1:{port}/metrics")).unwrap();
        let mut config = LiveKitConfig::new(url.clone(), url, None);
        config.process_name = "no-such-process-visio".into();
        let mut lk = LiveKit::new(config).unwrap();
        lk.signalled.insert(12345);
        assert_eq!(
            lk.read_load().await.unwrap(),
            Load { participants: 0, rooms: 0, capacity: None, draining: true, ..Load::default() }
        );
        assert_eq!(lk.drain().unwrap(), DrainStatus::NotFound);
    }
}
