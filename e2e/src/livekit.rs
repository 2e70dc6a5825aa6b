//! The real LiveKit on loopback: Debian's `redis-server`, `livekit-server` (built by `e2e/livekit`) with
//! the config the operator wrote into a tenant's Secret, and real participants (`visio-participant`,
//! LiveKit's Go SDK: signalling WebSocket and WebRTC over loopback ICE).
//!
//! Each LiveKit node gets a loopback address of its own (127.0.0.2, 127.0.0.3, ...), as a pod gets its
//! node's address. What is changed in the operator's config is only what binds it to that address
//! ([`adapt_config`]); the rest (keys, Redis password, rooms, limits) is the operator's.
//! Every process is killed when its handle drops; nothing here dials anything but 127.0.0.0/8.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_norway::Value as Yaml;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::process::{free_port, free_udp};

/// The directory `e2e/livekit build` filled (livekit-server, visio-participant, redis-server).
pub fn bin_dir() -> Result<PathBuf> {
    let out = std::process::Command::new(crate::repo().join("e2e/livekit")).arg("bin").output()?;
    ensure!(
        out.status.success(),
        "the real LiveKit is not built (e2e/run-tests builds it with e2e/livekit build): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// A redis-server on 127.0.0.1, with a password, keeping nothing on disk.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub async fn start(bin: &Path, password: &str) -> Result<Self> {
        let port = free_port()?;
        let mut cmd = Command::new(bin.join("redis-server"));
        cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"]);
        if !password.is_empty() {
            cmd.args(["--requirepass", password]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn()?;
        crate::poll("redis-server listening", Duration::from_secs(10), Duration::from_millis(50), || async {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok().then_some(()))
        })
        .await?;
        Ok(Self { child, port })
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// Where one LiveKit node listens: all on 127.0.0.1, each node with ports of its own.
///
/// Participants reach a node's media through its embedded TURN server (see
/// [`Participants`]), so every address a node advertises is 127.0.0.1: the TURN server
/// grants its relay's permissions by IP, and the kernel sends from 127.0.0.1 to any 127.0.0.0/8 address.
#[derive(Clone, Debug)]
pub struct NodeAddr {
    pub ip: Ipv4Addr,
    /// Which node of the harness (names its files and its TURN relay ports).
    pub index: u8,
    pub http_port: u16,
    pub metrics_port: u16,
    pub udp_port: u16,
    pub tcp_port: u16,
    pub turn_port: u16,
}

impl NodeAddr {
    /// Node `n` with free ports for its HTTP and metrics listeners and for what LiveKit binds on every
    /// interface (media, TURN).
    pub fn new(n: u8, http_port: u16, metrics_port: u16) -> Result<Self> {
        Ok(Self {
            ip: Ipv4Addr::LOCALHOST,
            index: n,
            http_port,
            metrics_port,
            udp_port: free_udp()?,
            tcp_port: free_port()?,
            turn_port: free_udp()?,
        })
    }
    pub fn api_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.http_port)
    }
    pub fn ws_url(&self) -> String {
        format!("ws://{}:{}", self.ip, self.http_port)
    }
    pub fn metrics_url(&self) -> String {
        format!("http://{}:{}/metrics", self.ip, self.metrics_port)
    }
    /// A name for this node's files.
    pub fn label(&self) -> String {
        format!("node{}-{}", self.index, self.http_port)
    }
    /// TURN relay ports of this node: 200 of its own in 41000..=52999 (each participant holds two
    /// allocations, one per peer connection; a node runs out of relays, and refuses joins, past 100).
    fn relay_range(&self) -> (u16, u16) {
        let start = 41_000 + u16::from(self.index % 60) * 200;
        (start, start + 199)
    }
}

/// The operator's LiveKit config with only its binding changed to `addr` and `redis`: 127.0.0.1
/// advertised (no STUN, which a test machine cannot reach), loopback ICE candidates allowed, media and
/// TURN ports of its own (LiveKit binds them on every interface), TURN over UDP only (the participants'
/// way in, see [`Participants`]; TLS needs the tenant's certificate), Redis on loopback. Keys, the Redis
/// password, rooms and limits stay the operator's.
pub fn adapt_config(operator_yaml: &str, addr: &NodeAddr, redis: &str) -> Result<String> {
    adapt(operator_yaml, addr, redis, true)
}

/// [`adapt_config`], but the address LiveKit advertises stays as the operator wrote it (`node_ip`,
/// `use_external_ip`, `stun_servers`): for the tests of that choice itself. Only loopback candidates are
/// allowed and the media ports bound to `addr`.
pub fn bind_only(operator_yaml: &str, addr: &NodeAddr, redis: &str) -> Result<String> {
    adapt(operator_yaml, addr, redis, false)
}

fn adapt(operator_yaml: &str, addr: &NodeAddr, redis: &str, advertise_addr: bool) -> Result<String> {
    let mut cfg: Yaml = serde_norway::from_str(operator_yaml).context("the operator's LiveKit config")?;
    let map = cfg.as_mapping_mut().context("LiveKit config is not a map")?;
    ensure!(map.contains_key("keys"), "the operator's config has no keys");
    let set = |m: &mut serde_norway::Mapping, path: &[&str], v: Yaml| {
        let mut cur = m;
        for k in &path[..path.len() - 1] {
            let entry = cur.entry(Yaml::from(*k)).or_insert_with(|| Yaml::Mapping(Default::default()));
            if !entry.is_mapping() {
                *entry = Yaml::Mapping(Default::default());
            }
            cur = entry.as_mapping_mut().expect("a map");
        }
        cur.insert(Yaml::from(path[path.len() - 1]), v);
    };
    set(map, &["rtc", "udp_port"], Yaml::from(addr.udp_port));
    set(map, &["rtc", "tcp_port"], Yaml::from(addr.tcp_port));
    if advertise_addr {
        set(map, &["rtc", "node_ip"], Yaml::from(addr.ip.to_string()));
        set(map, &["rtc", "use_external_ip"], Yaml::from(false));
    }
    set(map, &["rtc", "enable_loopback_candidate"], Yaml::from(true));
    set(map, &["rtc", "ips", "includes"], Yaml::Sequence(vec![Yaml::from(format!("{}/32", addr.ip))]));
    let (relay_start, relay_end) = addr.relay_range();
    map.insert(
        Yaml::from("turn"),
        serde_norway::from_str(&format!(
            "{{enabled: true, udp_port: {}, relay_range_start: {relay_start}, relay_range_end: {relay_end}}}",
            addr.turn_port
        ))?,
    );
    set(map, &["redis", "address"], Yaml::from(redis));
    set(map, &["prometheus", "port"], Yaml::from(addr.metrics_port));
    set(map, &["port"], Yaml::from(addr.http_port));
    Ok(serde_norway::to_string(&cfg)?)
}

/// One livekit-server process.
pub struct Node {
    child: Child,
    pub addr: NodeAddr,
    pub config_path: PathBuf,
}

impl Node {
    /// Starts livekit-server with `config` (already adapted) written to `dir/livekit-<label>.yaml`, and
    /// waits until its HTTP port answers.
    pub async fn start(bin: &Path, dir: &Path, addr: NodeAddr, config: &str) -> Result<Self> {
        Self::start_with_env(bin, dir, addr, config, &[]).await
    }

    /// [`Node::start`] with environment variables (`NODE_IP`, as the pod spec gives it).
    pub async fn start_with_env(
        bin: &Path,
        dir: &Path,
        addr: NodeAddr,
        config: &str,
        env: &[(&str, String)],
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config_path = dir.join(format!("livekit-{}.yaml", addr.label()));
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join(format!("livekit-{}.log", addr.label())))?;
        let child = Command::new(bin.join("livekit-server"))
            .arg("--config")
            .arg(&config_path)
            .args(["--bind", &addr.ip.to_string()])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("{}/", addr.api_url());
        let mut node = Self { child, addr, config_path };
        let log = dir.join(format!("livekit-{}.log", node.addr.label()));
        let started = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                bail!("livekit-server on {} exited ({status}) before serving: {tail:?}", node.addr.ip);
            }
            if crate::http_get(&url).await.is_ok() {
                return Ok(node);
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "livekit-server on {} not answering after 30 s (log in {})",
                node.addr.ip,
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> Result<u32> {
        self.child.id().context("livekit-server exited")
    }

    /// Waits for the process to exit, for at most `within`.
    pub async fn exited(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        Ok(tokio::time::timeout(within, self.child.wait()).await.context("livekit-server still running")??)
    }

    /// The process, for a test that signals and waits for it itself.
    pub fn child_for_test(self) -> Child {
        self.child
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// One event of one participant (see e2e/participant/main.go).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ParticipantEvent {
    #[serde(default)]
    pub id: String,
    pub event: String,
    #[serde(default)]
    pub room: String,
    #[serde(default)]
    pub topic: String,
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub error: String,
}

/// The participant driver: one process, many real participants.
///
/// They connect with ICE transport policy "relay", through the node's own TURN server on 127.0.0.1: pion
/// (the Go SDK's WebRTC stack) never gathers loopback host candidates and the SDK has no setting for it,
/// and a host candidate on the machine's own interface would have LiveKit send media to an address
/// outside 127.0.0.0/8, which the suite never does. Signalling, ICE, DTLS and the SCTP data channel are
/// the real ones; only the path of the packets goes through LiveKit's TURN.
pub struct Participants {
    child: Child,
    stdin: ChildStdin,
    events: Arc<Mutex<Vec<ParticipantEvent>>>,
}

impl Participants {
    pub fn start(bin: &Path, api_key: &str, api_secret: &str, log: &Path) -> Result<Self> {
        let mut child = Command::new(bin.join("visio-participant"))
            .env("LIVEKIT_API_KEY", api_key)
            .env("LIVEKIT_API_SECRET", api_secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(e) = serde_json::from_str::<ParticipantEvent>(&line) {
                    sink.lock().expect("events").push(e);
                }
            }
        });
        Ok(Self { child, stdin, events })
    }

    async fn send(&mut self, cmd: serde_json::Value) -> Result<()> {
        let mut line = serde_json::to_vec(&cmd)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        Ok(self.stdin.flush().await?)
    }

    /// Joins `id` to `room` through `ws_url` and waits until it is in.
    pub async fn join(&mut self, id: &str, ws_url: &str, room: &str) -> Result<()> {
        self.join_all(&[id.to_string()], ws_url, room).await
    }

    /// Joins every one of `ids` to `room` through `ws_url` at once, and waits until all are in (or one
    /// could not join).
    pub async fn join_all(&mut self, ids: &[String], ws_url: &str, room: &str) -> Result<()> {
        for id in ids {
            self.send(serde_json::json!({"op": "join", "id": id, "url": ws_url, "room": room})).await?;
        }
        crate::poll(&format!("{ids:?} joined {room}"), Duration::from_secs(30), Duration::from_millis(20), || async {
            let mut all = true;
            for id in ids {
                let events = self.of(id);
                if let Some(e) = events.iter().find(|e| e.event == "error") {
                    bail!("{id} could not join {room}: {}", e.error);
                }
                all &= events.iter().any(|e| e.event == "joined");
            }
            Ok(all.then_some(()))
        })
        .await
    }

    /// Asks `id` to leave (a leave asked for is never a cut).
    pub async fn leave(&mut self, id: &str) -> Result<()> {
        self.leave_all(&[id.to_string()]).await
    }

    /// Asks every one of `ids` to leave, and waits until all have.
    pub async fn leave_all(&mut self, ids: &[String]) -> Result<()> {
        for id in ids {
            self.send(serde_json::json!({"op": "leave", "id": id})).await?;
        }
        crate::poll(&format!("{ids:?} left"), Duration::from_secs(15), Duration::from_millis(20), || async {
            Ok(ids
                .iter()
                .all(|id| self.of(id).iter().any(|e| matches!(e.event.as_str(), "left" | "disconnected")))
                .then_some(()))
        })
        .await
    }

    /// Every event of `id` so far.
    pub fn of(&self, id: &str) -> Vec<ParticipantEvent> {
        self.events.lock().expect("events").iter().filter(|e| e.id == id).cloned().collect()
    }

    /// Participants disconnected without asking, with the reason LiveKit gave.
    pub fn cut(&self) -> BTreeMap<String, String> {
        let events = self.events.lock().expect("events");
        events.iter().filter(|e| e.event == "disconnected").map(|e| (e.id.clone(), e.reason.clone())).collect()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// One pod's LiveKit as the fleet harness runs it.
#[derive(Clone, Debug)]
pub struct RealNode {
    pub addr: NodeAddr,
    /// LiveKit's id for the node (the `node_id` of its metrics).
    pub node_id: String,
    pub config_path: PathBuf,
}

/// The real-LiveKit parts of one fleet harness: the tenant's Redis, the operator's config, a node per
/// pod on its own loopback address, and the participants of every meeting (`<meeting>~<k>`).
pub struct RealFleet {
    bin: PathBuf,
    dir: PathBuf,
    config: String,
    api_key: String,
    api_secret: String,
    redis: Redis,
    people: tokio::sync::Mutex<Participants>,
    /// The driver's events (shared with it), read without waiting for a join to finish.
    events: Arc<Mutex<Vec<ParticipantEvent>>>,
    driver_pid: Option<u32>,
    next_ip: std::sync::atomic::AtomicU8,
    cursor: Mutex<usize>,
}

/// Participant `k` of `meeting`.
pub fn participant_id(meeting: &str, k: u32) -> String {
    format!("{meeting}~{k}")
}

/// The meeting a participant belongs to.
pub fn meeting_of(id: &str) -> &str {
    id.split('~').next().unwrap_or(id)
}

impl RealFleet {
    /// `config` is the operator's `livekit.yaml` from the tenant's Secret.
    pub async fn start(config: String, api_key: String, api_secret: String, dir: &Path) -> Result<Self> {
        let bin = bin_dir()?;
        let redis_password =
            match visio_operator::agent::placement::Placement::from_config(&config).map_err(anyhow::Error::msg)? {
                visio_operator::agent::placement::Placement::Redis(r) => r.password,
                visio_operator::agent::placement::Placement::Local => String::new(),
            };
        let redis = Redis::start(&bin, &redis_password).await?;
        let people = Participants::start(&bin, &api_key, &api_secret, &dir.join("participants.log"))?;
        let (events, driver_pid) = (people.events.clone(), people.pid());
        Ok(Self {
            events,
            driver_pid,
            bin,
            dir: dir.to_path_buf(),
            config,
            api_key,
            api_secret,
            redis,
            people: tokio::sync::Mutex::new(people),
            next_ip: std::sync::atomic::AtomicU8::new(0),
            cursor: Mutex::new(0),
        })
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Pids of the harness-wide processes (Redis, the participant driver).
    pub fn pids(&self) -> Vec<u32> {
        self.redis.pid().into_iter().chain(self.driver_pid).collect()
    }

    /// Starts one node with the operator's config on the next loopback address; the child is the
    /// caller's (it plays the pod's `livekit` container).
    pub async fn start_node(&self) -> Result<(Child, RealNode)> {
        // 127.0.0.2 ..= 127.0.0.251, then round again (a harness never runs 250 pods at once).
        let n = self.next_ip.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 250;
        let addr = NodeAddr::new(n, free_port()?, free_port()?)?;
        let config = adapt_config(&self.config, &addr, &self.redis.address())?;
        let node = Node::start(&self.bin, &self.dir, addr, &config).await?;
        let text = crate::http_get(&node.addr.metrics_url()).await?;
        let node_id = visio_operator::agent::placement::node_id(&text, visio_operator::agent::livekit::ROOMS_METRIC)?
            .context("no node_id in LiveKit's metrics")?;
        let real = RealNode { addr: node.addr.clone(), node_id, config_path: node.config_path.clone() };
        Ok((node.child, real))
    }

    /// The RoomService of `node`, through the agent's own client.
    pub fn room_service(&self, node: &RealNode) -> Result<visio_operator::agent::livekit::LiveKit> {
        use visio_operator::agent::http::LoopbackUrl;
        use visio_operator::agent::jwt::ApiCredentials;
        let metrics = LoopbackUrl::parse(&node.addr.metrics_url())?;
        let api = LoopbackUrl::parse(&node.addr.api_url())?;
        let creds = ApiCredentials::new(&self.api_key, &self.api_secret);
        let mut cfg = visio_operator::agent::livekit::LiveKitConfig::new(metrics, api, Some(creds));
        cfg.timeout = Duration::from_secs(5);
        visio_operator::agent::livekit::LiveKit::new(cfg).map_err(anyhow::Error::msg)
    }

    /// Opens `meeting` on `node` (the room placed there, as the signalling Service sent its first
    /// participant there) with `participants` real participants. `Ok(false)`: the node refused it.
    pub async fn open(&self, node: &RealNode, meeting: &str, participants: u32) -> Result<bool> {
        let rs = self.room_service(node)?;
        let created = rs
            .twirp(
                "CreateRoom",
                visio_operator::agent::jwt::VideoGrant::create(),
                serde_json::json!({"name": meeting, "node_id": node.node_id}),
            )
            .await;
        if created.is_err() {
            return Ok(false);
        }
        self.resize(node, meeting, 0, participants).await?;
        Ok(true)
    }

    /// Joins or leaves participants so that `meeting` has `to` instead of `from`.
    pub async fn resize(&self, node: &RealNode, meeting: &str, from: u32, to: u32) -> Result<()> {
        let mut people = self.people.lock().await;
        let joining: Vec<String> = (from..to).map(|k| participant_id(meeting, k)).collect();
        if !joining.is_empty() {
            people.join_all(&joining, &node.addr.ws_url(), meeting).await?;
        }
        let leaving: Vec<String> = (to..from).map(|k| participant_id(meeting, k)).collect();
        if !leaving.is_empty() {
            people.leave_all(&leaving).await?;
        }
        Ok(())
    }

    /// The events since the last call.
    pub fn new_events(&self) -> Vec<ParticipantEvent> {
        let mut cursor = self.cursor.lock().expect("cursor");
        let events = self.events.lock().expect("events");
        let new = events[*cursor..].to_vec();
        *cursor = events.len();
        new
    }
}
