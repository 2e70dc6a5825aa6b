//! Which rooms the LiveKit node next to the agent hosts.
//!
//! With Redis (every VisioCluster has one), LiveKit's RoomService answers for the whole deployment, not for
//! the node it is asked on: `ListRooms` reads the rooms hash that every node writes (`RedisStore.ListRooms`,
//! livekit-server v1.9.11 `pkg/service/redisstore.go`), and `DeleteRoom` closes a room wherever it is hosted.
//! So a drain that ended "the rooms ListRooms returns" would end every meeting of the tenant. Where a room
//! lives is the router's map in Redis: the hash `room_node_map`, room name to node id (`NodeRoomKey`,
//! `SetNodeForRoom`, `pkg/routing/redisrouter.go`). A node's own id is the `node_id` label of its metrics
//! (`pkg/telemetry/prometheus/node.go`), so the agent reads that hash and keeps the rooms mapped to its node.
//!
//! `livekit_participant_total` cannot stand in for "participants here" either: a participant is counted on
//! the node holding its signalling connection and again on the node hosting its room
//! (`pkg/telemetry/events.go`). The agent's participants are those of the rooms hosted here, as ListRooms
//! reports them (`Room.updateProto`, `pkg/rtc/room.go`), which is also what LiveKit's own drain waits for
//! (`RoomManager.HasParticipants`, `pkg/service/roommanager.go`).
//!
//! Without Redis (a single node, LiveKit's local router and store), everything ListRooms returns is local.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use redis::IntoConnectionInfo;
use serde::Deserialize;

use super::backend::BackendError;
use super::prometheus::parse_line;

/// The router's room-to-node hash in Redis (livekit-server `routing.NodeRoomKey`).
pub const ROOM_NODE_MAP: &str = "room_node_map";
/// Most entries read from the hash: far more rooms than one tenant holds; a larger map is refused rather
/// than held in memory.
const MAX_ENTRIES: usize = 100_000;

/// The `redis:` part of LiveKit's config, as livekit-server reads it (`config.RedisConfig`): the operator
/// writes `address` and `password`; the rest is read so that a config the agent cannot follow is refused
/// instead of read wrongly.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
pub struct RedisSection {
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub db: i64,
    #[serde(default)]
    pub use_tls: bool,
    #[serde(default)]
    pub sentinel_addresses: Vec<String>,
    #[serde(default)]
    pub cluster_addresses: Vec<String>,
}

impl std::fmt::Debug for RedisSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("RedisSection").field("address", &self.address).field("db", &self.db).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    redis: Option<RedisSection>,
}

/// Where the agent learns which rooms are its node's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// No Redis: one node, every room listed is hosted here.
    Local,
    /// Rooms are placed through Redis: read `room_node_map`.
    Redis(RedisSection),
}

impl Placement {
    /// The placement of the LiveKit config at `path` (the same file LiveKit reads).
    pub fn from_config_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_config(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The placement of a LiveKit config (YAML). Refuses what the agent cannot follow (TLS, Sentinel,
    /// Cluster): reading the wrong map would make every room look foreign or every room look own.
    pub fn from_config(yaml: &str) -> Result<Self, String> {
        let file: ConfigFile = serde_norway::from_str(yaml).map_err(|e| format!("not a LiveKit config: {e}"))?;
        let Some(redis) = file.redis else { return Ok(Placement::Local) };
        if !redis.sentinel_addresses.is_empty() || !redis.cluster_addresses.is_empty() {
            return Err("redis.sentinel_addresses / redis.cluster_addresses are not supported by the agent".into());
        }
        if redis.use_tls {
            return Err("redis.use_tls is not supported by the agent".into());
        }
        if redis.address.is_empty() {
            return Ok(Placement::Local);
        }
        host_port(&redis.address)?;
        Ok(Placement::Redis(redis))
    }
}

/// Splits `host:port` (`[v6]:port` too).
fn host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address.rsplit_once(':').ok_or_else(|| format!("redis.address {address:?} has no port"))?;
    let port: u16 = port.parse().map_err(|_| format!("redis.address {address:?}: bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("redis.address {address:?} has no host"));
    }
    Ok((host.to_string(), port))
}

/// The node id the metrics carry (`node_id` label of `metric`). `None` when no sample has one; an error
/// when samples disagree (two nodes' metrics in one endpoint is not a LiveKit node's).
pub fn node_id(metrics: &str, metric: &str) -> Result<Option<String>, BackendError> {
    let mut ids = BTreeSet::new();
    for sample in metrics.lines().filter_map(parse_line).filter(|s| s.name == metric) {
        if let Some((_, v)) = sample.labels.iter().find(|(k, _)| *k == "node_id") {
            ids.insert(v.clone());
        }
    }
    match ids.len() {
        0 => Ok(None),
        1 => Ok(ids.pop_first()),
        _ => Err(BackendError::Malformed(format!("{metric} carries several node ids: {ids:?}"))),
    }
}

/// The rooms `map` (room -> node id) places on `node`.
pub fn rooms_on(map: &BTreeMap<String, String>, node: &str) -> BTreeSet<String> {
    map.iter().filter(|(_, n)| n.as_str() == node).map(|(room, _)| room.clone()).collect()
}

/// Reads LiveKit's room-to-node map from Redis, keeping one connection between reads.
pub struct RoomMap {
    client: redis::Client,
    connection: Option<redis::aio::MultiplexedConnection>,
    timeout: Duration,
}

impl std::fmt::Debug for RoomMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomMap").field("connected", &self.connection.is_some()).finish_non_exhaustive()
    }
}

impl RoomMap {
    pub fn new(redis: &RedisSection, timeout: Duration) -> Result<Self, String> {
        let (host, port) = host_port(&redis.address)?;
        let mut info = redis::RedisConnectionInfo::default().set_db(redis.db);
        if !redis.username.is_empty() {
            info = info.set_username(redis.username.clone());
        }
        if !redis.password.is_empty() {
            info = info.set_password(redis.password.clone());
        }
        let conn = redis::ConnectionAddr::Tcp(host, port).into_connection_info().map_err(|e| e.to_string())?;
        let client = redis::Client::open(conn.set_redis_settings(info)).map_err(|e| e.to_string())?;
        Ok(Self { client, connection: None, timeout })
    }

    /// The whole map, room name -> node id. Any failure drops the connection (the next read reconnects).
    pub async fn read(&mut self) -> Result<BTreeMap<String, String>, BackendError> {
        let result = tokio::time::timeout(self.timeout, self.read_once()).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(BackendError::Unreachable(format!("redis: no answer within {:?}", self.timeout))),
        };
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    async fn read_once(&mut self) -> Result<BTreeMap<String, String>, BackendError> {
        let unreachable = |e: redis::RedisError| BackendError::Unreachable(format!("redis: {e}"));
        if self.connection.is_none() {
            self.connection = Some(self.client.get_multiplexed_async_connection().await.map_err(unreachable)?);
        }
        let Some(conn) = self.connection.as_mut() else { unreachable!("set above") };
        let len: usize = redis::cmd("HLEN").arg(ROOM_NODE_MAP).query_async(conn).await.map_err(unreachable)?;
        if len > MAX_ENTRIES {
            return Err(BackendError::Malformed(format!("{ROOM_NODE_MAP} holds {len} rooms, more than {MAX_ENTRIES}")));
        }
        redis::cmd("HGETALL").arg(ROOM_NODE_MAP).query_async(conn).await.map_err(unreachable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_config_places_through_redis() {
        let yaml =
            "port: 7880\nredis:\n  address: visio-redis.mininterieur.svc:6379\n  password: s3cret\nkeys:\n  k: v\n";
        match Placement::from_config(yaml).unwrap() {
            Placement::Redis(r) => {
                assert_eq!(r.address, "visio-redis.mininterieur.svc:6379");
                assert_eq!(r.password, "s3cret");
                assert!(!format!("{r:?}").contains("s3cret"), "the password never shows in Debug");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_redis_is_local() {
        assert_eq!(Placement::from_config("port: 7880\n").unwrap(), Placement::Local);
        assert_eq!(Placement::from_config("redis:\n  address: ''\n").unwrap(), Placement::Local);
    }

    #[test]
    fn what_the_agent_cannot_follow_is_refused() {
        for yaml in [
            "redis:\n  sentinel_addresses: [a:1]\n  sentinel_master_name: m\n",
            "redis:\n  cluster_addresses: [a:1]\n",
            "redis:\n  address: a:1\n  use_tls: true\n",
            "redis:\n  address: nohost\n",
            "redis:\n  address: ':6379'\n",
            "redis: [not, a, map]\n",
        ] {
            assert!(Placement::from_config(yaml).is_err(), "{yaml}");
        }
    }

    #[test]
    fn node_id_from_the_metrics() {
        let m = "# TYPE livekit_room_total gauge\nlivekit_room_total{node_id=\"ND_a\",node_type=\"SERVER\"} 2\n";
        assert_eq!(node_id(m, "livekit_room_total").unwrap().as_deref(), Some("ND_a"));
        assert_eq!(node_id("livekit_room_total 2\n", "livekit_room_total").unwrap(), None);
        let two = "livekit_room_total{node_id=\"ND_a\"} 1\nlivekit_room_total{node_id=\"ND_b\"} 1\n";
        assert!(node_id(two, "livekit_room_total").is_err());
    }

    #[test]
    fn only_the_rooms_mapped_to_the_node() {
        let map: BTreeMap<String, String> =
            [("r1", "ND_a"), ("r2", "ND_b"), ("r3", "ND_a")].map(|(r, n)| (r.into(), n.into())).into();
        assert_eq!(rooms_on(&map, "ND_a"), BTreeSet::from(["r1".to_string(), "r3".to_string()]));
        assert!(rooms_on(&map, "ND_c").is_empty());
    }

    #[tokio::test]
    async fn unreachable_redis_is_an_error_not_an_empty_map() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let section = RedisSection { address: format!("127.0.0.1:{port}"), ..RedisSection::default() };
        let mut map = RoomMap::new(&section, Duration::from_millis(500)).unwrap();
        assert!(matches!(map.read().await, Err(BackendError::Unreachable(_))));
    }
}
