//! The real livekit-server in the loop: two LiveKit nodes sharing one Redis, both with the config the
//! operator wrote into the tenant's Secret, a real agent beside each (`visio-operator agent`, reporting on
//! a pod of its own), and real participants (LiveKit's Go SDK over loopback WebRTC).
//!
//! What the stand-in hid (issue #17), proven on the real server:
//! - with Redis, ListRooms answers for every node and DeleteRoom closes a room wherever it is hosted, so an
//!   agent that ended "the rooms LiveKit lists" at a drain deadline would cut every meeting of the tenant;
//! - `livekit_participant_total` counts a participant on the node holding its signalling connection and
//!   again on the node hosting its room, so it is not the pod's load.
//!
//! The pods the agents report on are bare pods in a namespace of their own (kwok runs them), so the test,
//! not the operator, decides when to drain: it writes the operator's marks itself (`visio.io/drain-since`,
//! `visio.io/warn-deadline`, `visio.io/end-sessions`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use visio_e2e::fixtures::{fleet_visio_cluster as visiocluster, VC_NAME};
use visio_e2e::livekit::{self, adapt_config, Node, NodeAddr, Participants, Redis};
use visio_e2e::process::free_port;
use visio_operator::agent::http::LoopbackUrl;
use visio_operator::agent::jwt::{ApiCredentials, VideoGrant};
use visio_operator::agent::livekit::{LiveKit, LiveKitConfig, DRAIN_WARNING, ROOMS_METRIC};
use visio_operator::agent::placement::{self, Placement, RoomMap};
use visio_operator::pod_protocol::{self, Load};

const NS: &str = "lk-real";
const PODS_NS: &str = "lk-real-pods";

struct Tenant {
    config: String,
    api_key: String,
    api_secret: String,
}

/// The operator's own LiveKit config and keys for a tenant applied in `NS`.
async fn operator_config(client: &kube::Client) -> Result<Tenant> {
    tenant_config(client, NS, visiocluster("Real LiveKit", json!({"sfu": {"replicas": {"min": 1, "max": 2}}}))).await
}

/// Applies `vc` in `ns` and returns the LiveKit config and keys the operator wrote for it.
async fn tenant_config(client: &kube::Client, ns: &str, vc: serde_json::Value) -> Result<Tenant> {
    visio_e2e::namespace(client, ns).await?;
    visio_e2e::kubectl(&["apply", "-n", ns, "-f", "-"], Some(&serde_json::to_string(&vc)?))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let key = |s: &Secret, k: &str| {
        s.data.as_ref().and_then(|d| d.get(k)).map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    let config_name = format!("{VC_NAME}-livekit-config");
    let creds_name = format!("{VC_NAME}-credentials");
    visio_e2e::wait_for("the operator's LiveKit config and keys", Duration::from_secs(60), || async {
        let (Some(cfg), Some(creds)) = (secrets.get_opt(&config_name).await?, secrets.get_opt(&creds_name).await?)
        else {
            return Ok(None);
        };
        Ok(match (key(&cfg, "livekit.yaml"), key(&creds, "apiKey"), key(&creds, "apiSecret")) {
            (Some(config), Some(api_key), Some(api_secret)) => Some(Tenant { config, api_key, api_secret }),
            _ => None,
        })
    })
    .await
}

/// A fresh bare pod for one agent to report on (one left by an earlier run carries its drain marks).
async fn agent_pod(pods: &Api<Pod>, name: &str) -> Result<()> {
    let _ = pods.delete(name, &kube::api::DeleteParams::default().grace_period(0)).await;
    visio_e2e::wait_for(&format!("pod {name} gone"), Duration::from_secs(30), || async {
        Ok(pods.get_opt(name).await?.is_none().then_some(()))
    })
    .await?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "agent", "image": "visio-operator:e2e"}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    Ok(())
}

/// `visio-operator agent` for one pod, beside one node.
fn start_agent(pod: &str, node: &Node, tenant: &Tenant, log: PathBuf) -> Result<tokio::process::Child> {
    let operator = visio_e2e::fleet::Binaries::find()?.operator;
    let health = free_port()?;
    Ok(tokio::process::Command::new(operator)
        .args(["agent", "--backend", "livekit", "--pod-name", pod, "--pod-namespace", PODS_NS])
        .args(["--metrics-url", &node.addr.metrics_url(), "--api-url", &node.addr.api_url()])
        .args(["--backend-pid", &node.pid()?.to_string(), "--interval", "500ms", "--min-report-interval", "1s"])
        .arg("--livekit-config")
        .arg(&node.config_path)
        .args(["--health-addr", &format!("127.0.0.1:{health}"), "--log-format", "text"])
        .env("KUBECONFIG", visio_e2e::kubeconfig_path()?)
        .env("LIVEKIT_API_KEY", &tenant.api_key)
        .env("LIVEKIT_API_SECRET", &tenant.api_secret)
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(log.with_extension("err"))?)
        .kill_on_drop(true)
        .spawn()?)
}

/// The RoomService of one node, through the agent's own client.
fn room_service(node: &Node, tenant: &Tenant) -> Result<LiveKit> {
    let metrics = LoopbackUrl::parse(&node.addr.metrics_url())?;
    let api = LoopbackUrl::parse(&node.addr.api_url())?;
    let mut cfg = LiveKitConfig::new(metrics, api, Some(ApiCredentials::new(&tenant.api_key, &tenant.api_secret)));
    cfg.timeout = Duration::from_secs(5);
    LiveKit::new(cfg).map_err(anyhow::Error::msg)
}

async fn node_id(node: &Node) -> Result<String> {
    let text = visio_e2e::http_get(&node.addr.metrics_url()).await?;
    placement::node_id(&text, ROOMS_METRIC)?.context("no node_id in LiveKit's metrics")
}

async fn pod_load(pods: &Api<Pod>, name: &str) -> Result<Option<Load>> {
    let pod = pods.get(name).await?;
    let text = pod.metadata.annotations.as_ref().and_then(|a| a.get(pod_protocol::LOAD)).cloned();
    Ok(text.and_then(|t| pod_protocol::parse_load(&t).ok()))
}

async fn mark(pods: &Api<Pod>, name: &str, annotations: serde_json::Value) -> Result<()> {
    pods.patch(name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": annotations}}))).await?;
    Ok(())
}

fn participant_total(metrics: &str) -> u32 {
    visio_operator::agent::prometheus::sum_metric(metrics, "livekit_participant_total").known().unwrap_or(u32::MAX)
}

#[tokio::test]
async fn a_drain_deadline_ends_only_the_rooms_hosted_on_the_draining_pod() -> Result<()> {
    let bin = livekit::bin_dir()?;
    let client = visio_e2e::client().await?;
    let dir = visio_e2e::repo().join(".e2e-test/livekit");
    std::fs::create_dir_all(&dir)?;
    let tenant = operator_config(&client).await?;

    // Redis with the password the operator generated (real AUTH), and two nodes on their own addresses.
    let redis_password = match Placement::from_config(&tenant.config).map_err(anyhow::Error::msg)? {
        Placement::Redis(r) => r.password,
        Placement::Local => anyhow::bail!("the operator's config has no Redis"),
    };
    let redis = Redis::start(&bin, &redis_password).await?;
    let mut nodes = Vec::new();
    for n in 0..2u8 {
        let addr = NodeAddr::new(n, free_port()?, free_port()?)?;
        let config = adapt_config(&tenant.config, &addr, &redis.address())?;
        nodes.push(Node::start(&bin, &dir, addr, &config).await?);
    }
    let ids = [node_id(&nodes[0]).await?, node_id(&nodes[1]).await?];
    ensure!(ids[0] != ids[1], "two nodes, two ids: {ids:?}");

    // An agent beside each node, each reporting on its own pod.
    visio_e2e::namespace(&client, PODS_NS).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), PODS_NS);
    let pod_names = ["sfu-a", "sfu-b"];
    let mut agents = Vec::new();
    for (pod, node) in pod_names.iter().zip(&nodes) {
        agent_pod(&pods, pod).await?;
        agents.push(start_agent(pod, node, &tenant, dir.join(format!("agent-{pod}.log")))?);
    }

    // Rooms created until each node hosts at least two (LiveKit picks the node), then two participants
    // in each, joined through the node that hosts it.
    let api = room_service(&nodes[0], &tenant)?;
    let section =
        match Placement::from_config(&std::fs::read_to_string(&nodes[0].config_path)?).map_err(anyhow::Error::msg)? {
            Placement::Redis(r) => r,
            Placement::Local => anyhow::bail!("no Redis in the adapted config"),
        };
    let mut map = RoomMap::new(&section, Duration::from_secs(5)).map_err(anyhow::Error::msg)?;
    let mut hosted: [BTreeSet<String>; 2] = Default::default();
    for i in 0..24 {
        api.twirp("CreateRoom", VideoGrant::create(), json!({"name": format!("meeting-{i}")})).await?;
        let m = map.read().await?;
        hosted = [placement::rooms_on(&m, &ids[0]), placement::rooms_on(&m, &ids[1])];
        if hosted.iter().all(|h| h.len() >= 2) {
            break;
        }
    }
    ensure!(hosted.iter().all(|h| h.len() >= 2), "LiveKit placed every room on one node: {hosted:?}");
    let mut people = Participants::start(&bin, &tenant.api_key, &tenant.api_secret, &dir.join("participants.log"))?;
    let mut on = BTreeMap::new();
    for (n, rooms) in hosted.iter().enumerate() {
        for room in rooms {
            for k in 0..2 {
                let id = format!("{room}-p{k}");
                people.join(&id, &nodes[n].addr.ws_url(), room).await?;
                on.insert(id, n);
            }
        }
    }

    // One more participant signalling through node A into a room hosted on B: LiveKit counts it on both.
    let b_room = hosted[1].iter().next().cloned().context("a room on B")?;
    people.join("visitor", &nodes[0].addr.ws_url(), &b_room).await?;
    let expected = [2 * hosted[0].len() as u32, 2 * hosted[1].len() as u32 + 1];
    let loads = visio_e2e::wait_for(
        "each agent reports the participants of its own rooms",
        Duration::from_secs(30),
        || async {
            let (a, b) = (pod_load(&pods, pod_names[0]).await?, pod_load(&pods, pod_names[1]).await?);
            Ok(match (a, b) {
                (Some(a), Some(b)) if [a.participants, b.participants] == expected => Some([a, b]),
                _ => None,
            })
        },
    )
    .await?;
    ensure!(loads[0].rooms as usize == hosted[0].len() && loads[1].rooms as usize == hosted[1].len(), "{loads:?}");
    let a_metric = participant_total(&visio_e2e::http_get(&nodes[0].addr.metrics_url()).await?);
    eprintln!(
        "=== real LiveKit: pod A reports {} participants, its livekit_participant_total says {a_metric}; pod B {}",
        loads[0].participants, loads[1].participants
    );
    ensure!(a_metric > loads[0].participants, "the visitor is counted on A by LiveKit's metric, not by the agent");
    people.leave("visitor").await?;

    // Drain A as the operator would, then pass its deadline: only A's rooms are warned and ended.
    let now = k8s_openapi::jiff::Timestamp::now();
    let deadline = now + k8s_openapi::jiff::SignedDuration::from_secs(3);
    mark(
        &pods,
        pod_names[0],
        json!({
            pod_protocol::DRAIN_SINCE: now.to_string(),
            pod_protocol::WARN_DEADLINE: deadline.to_string(),
        }),
    )
    .await?;
    let a_people: Vec<String> = on.iter().filter(|(_, n)| **n == 0).map(|(id, _)| id.clone()).collect();
    let b_people: Vec<String> = on.iter().filter(|(_, n)| **n == 1).map(|(id, _)| id.clone()).collect();
    let warned = |id: &str| {
        people
            .of(id)
            .iter()
            .any(|e| e.event == "data" && e.topic == "visio.system" && e.payload.contains(DRAIN_WARNING))
    };
    visio_e2e::wait_for("A's participants warned", Duration::from_secs(20), || async {
        Ok(a_people.iter().all(|id| warned(id)).then_some(()))
    })
    .await?;
    mark(&pods, pod_names[0], json!({pod_protocol::END_SESSIONS: "true"})).await?;
    visio_e2e::wait_for(
        "A's participants disconnected by the end of its sessions",
        Duration::from_secs(30),
        || async {
            let cut = people.cut();
            Ok(a_people.iter().all(|id| cut.contains_key(id)).then_some(cut))
        },
    )
    .await?;
    // A's LiveKit, drained by its agent, exits once its rooms are gone.
    nodes[0].exited(Duration::from_secs(30)).await?;
    // B's meetings go on: nobody there was warned or disconnected, and B still hosts its rooms.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cut = people.cut();
    let b_cut: Vec<_> = b_people.iter().filter(|id| cut.contains_key(*id)).collect();
    ensure!(b_cut.is_empty(), "participants of rooms hosted on B were cut: {b_cut:?} ({cut:?})");
    ensure!(b_people.iter().all(|id| !warned(id)), "B's participants were warned of A's drain");
    ensure!(nodes[1].running(), "B's LiveKit still serves");
    let b_rooms = placement::rooms_on(&map.read().await?, &ids[1]);
    ensure!(b_rooms == hosted[1], "B's rooms are all still there: {b_rooms:?} vs {:?}", hosted[1]);
    let a_load = pod_load(&pods, pod_names[0]).await?;
    eprintln!(
        "=== real LiveKit drain deadline: {} of A's participants ended, 0 of B's {} cut; A's last load {a_load:?}",
        a_people.len(),
        b_people.len()
    );

    drop(people);
    drop(agents);
    let _ = pods.delete_collection(&Default::default(), &Default::default()).await;
    visio_e2e::kubectl(&["delete", "visiocluster", VC_NAME, "-n", NS, "--wait=false"], None)?;
    drop(redis);
    Ok(())
}

/// One LiveKit node the conformance script runs against: the stand-in or the real server.
struct Subject {
    name: &'static str,
    child: tokio::process::Child,
    api: String,
    metrics: String,
    /// Keeps the real server's Redis and participants alive.
    _keep: Vec<Box<dyn std::any::Any + Send>>,
}

const KEY: &str = "APIconformance";
const SECRET: &str = "conformance-secret-0123456789abcdef";

async fn standin_subject() -> Result<Subject> {
    use tokio::io::AsyncBufReadExt;
    let bin = visio_e2e::fleet::Binaries::find()?.standin;
    let mut child = tokio::process::Command::new(bin)
        .args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--drain-poll-interval", "1s"])
        .env("LIVEKIT_API_KEY", KEY)
        .env("LIVEKIT_API_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut line = String::new();
    let mut out = tokio::io::BufReader::new(child.stdout.take().context("stdout")?);
    tokio::time::timeout(Duration::from_secs(10), out.read_line(&mut line)).await??;
    let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string);
    let (http, metrics) = (field("http=").context("http=")?, field("metrics=").context("metrics=")?);
    Ok(Subject {
        name: "livekit-standin",
        child,
        api: format!("http://{http}"),
        metrics: format!("http://{metrics}/metrics"),
        _keep: vec![Box::new(out)],
    })
}

async fn real_subject(bin: &std::path::Path, dir: &std::path::Path) -> Result<Subject> {
    let redis = Redis::start(bin, "conformance-redis").await?;
    let config = format!(
        "port: 7880\nredis:\n  address: {}\n  password: conformance-redis\nkeys:\n  {KEY}: {SECRET}\nlogging:\n  json: true\n",
        redis.address()
    );
    let addr = NodeAddr::new(40, free_port()?, free_port()?)?;
    let node = Node::start(bin, dir, addr.clone(), &adapt_config(&config, &addr, &redis.address())?).await?;
    Ok(Subject {
        name: "livekit-server",
        child: node.child_for_test(),
        api: addr.api_url(),
        metrics: addr.metrics_url(),
        _keep: vec![Box::new(redis)],
    })
}

impl Subject {
    fn client(&self, timeout: Duration) -> Result<LiveKit> {
        let mut cfg = LiveKitConfig::new(
            LoopbackUrl::parse(&self.metrics)?,
            LoopbackUrl::parse(&self.api)?,
            Some(ApiCredentials::new(KEY, SECRET)),
        );
        cfg.timeout = timeout;
        LiveKit::new(cfg).map_err(anyhow::Error::msg)
    }

    /// (HTTP status, Twirp code) of one call; (200, "") on success.
    async fn call(&self, method: &'static str, grant: VideoGrant, body: serde_json::Value) -> Result<(u16, String)> {
        use visio_operator::agent::backend::BackendError;
        Ok(match self.client(Duration::from_secs(8))?.twirp(method, grant, body).await {
            Ok(_) => (200, String::new()),
            Err(BackendError::NotFound { .. }) => (404, "not_found".into()),
            Err(BackendError::Status { status, message, .. }) => {
                (status, message.split(':').next().unwrap_or_default().to_string())
            }
            Err(e) => anyhow::bail!("{}: {method}: {e}", self.name),
        })
    }
}

/// What the agent relies on, asked of the stand-in and of the real server alike.
async fn conformance_script(
    s: &mut Subject,
    hold_a_participant: impl std::future::Future<Output = Result<()>>,
) -> Result<Vec<String>> {
    let mut seen = Vec::new();
    let mut note = |what: &str, v: String| seen.push(format!("{what}: {v}"));
    note("GET /", format!("{}", visio_e2e::http_get(&format!("{}/", s.api)).await.is_ok()));
    let metrics = visio_e2e::http_get(&s.metrics).await?;
    for m in ["livekit_room_total", "livekit_participant_total"] {
        let sum = visio_operator::agent::prometheus::sum_metric(&metrics, m);
        let node = placement::node_id(&metrics, m)?.is_some();
        note(m, format!("{sum}, node_id label {node}"));
    }
    note("ListRooms", format!("{:?}", s.call("ListRooms", VideoGrant::list(), json!({})).await?));
    note(
        "DeleteRoom without roomCreate",
        format!("{:?}", s.call("DeleteRoom", VideoGrant::list(), json!({"room": "x"})).await?),
    );
    note(
        "DeleteRoom of a missing room",
        format!("{:?}", s.call("DeleteRoom", VideoGrant::create(), json!({"room": "x"})).await?),
    );
    let t0 = std::time::Instant::now();
    let send = s
        .call("SendData", VideoGrant::admin("ghost"), json!({"room": "ghost", "data": "", "kind": "RELIABLE"}))
        .await?;
    note(
        "SendData to a missing room",
        format!("{send:?}, over 2.5 s: {}", t0.elapsed() >= Duration::from_millis(2500)),
    );
    hold_a_participant.await?;
    let rooms = visio_e2e::wait_for("the held room listed with its participant", Duration::from_secs(10), || async {
        let rooms = s.client(Duration::from_secs(5))?.list_rooms(&[]).await?;
        Ok(rooms.iter().any(|r| r.num_participants == 1).then_some(rooms.len()))
    })
    .await?;
    note("rooms with the participant", rooms.to_string());
    let pid = s.child.id().context("running")?;
    let term = || std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    term()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    note("first SIGTERM, a participant left: running", format!("{}", matches!(s.child.try_wait(), Ok(None))));
    note("draining, GET /", format!("{}", visio_e2e::http_get(&format!("{}/", s.api)).await.is_ok()));
    term()?;
    let status = tokio::time::timeout(Duration::from_secs(10), s.child.wait()).await??;
    note("second SIGTERM: exit code", format!("{:?}", status.code()));
    Ok(seen)
}

#[tokio::test]
async fn the_standin_answers_as_the_real_server_does() -> Result<()> {
    let bin = livekit::bin_dir()?;
    let dir = visio_e2e::repo().join(".e2e-test/livekit-conformance");
    std::fs::create_dir_all(&dir)?;

    let mut standin = standin_subject().await?;
    let api = standin.api.clone();
    let hold = async move {
        let addr: std::net::SocketAddr = api.trim_start_matches("http://").parse()?;
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let body = r#"{"name":"held","participants":1}"#;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(
            format!(
                "POST /standin/rooms HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        ensure!(out.starts_with("HTTP/1.1 201") || out.starts_with("HTTP/1.0 201"), "{out}");
        Ok(())
    };
    let standin_saw = conformance_script(&mut standin, hold).await?;

    let mut real = real_subject(&bin, &dir).await?;
    let mut people = Participants::start(&bin, KEY, SECRET, &dir.join("participants.log"))?;
    let ws = real.api.replace("http://", "ws://");
    let hold = async { people.join("held~0", &ws, "held").await };
    let real_saw = conformance_script(&mut real, hold).await?;
    drop(people);

    for (a, b) in standin_saw.iter().zip(&real_saw) {
        eprintln!("=== conformance: {a:<70} | {b}");
    }
    ensure!(
        standin_saw == real_saw,
        "the stand-in and livekit-server disagree:\n  stand-in: {standin_saw:#?}\n  real:     {real_saw:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_host_network_sfu_starts_without_stun_and_advertises_its_node() -> Result<()> {
    const HOSTNET: &str = "lk-hostnet";
    let bin = livekit::bin_dir()?;
    let client = visio_e2e::client().await?;
    let dir = visio_e2e::repo().join(".e2e-test/livekit-hostnet");
    std::fs::create_dir_all(&dir)?;
    // The default network mode: one SFU pod per node on the node's network. No STUN server is reachable
    // from this machine, as from an offline ministry network.
    let vc = visiocluster("Réseau sans Internet", json!({"sfu": {"network": {"mode": "hostNetwork"}}}));
    let tenant = tenant_config(&client, HOSTNET, vc).await?;
    let redis_password = match Placement::from_config(&tenant.config).map_err(anyhow::Error::msg)? {
        Placement::Redis(r) => r.password,
        Placement::Local => anyhow::bail!("the operator's config has no Redis"),
    };
    let redis = Redis::start(&bin, &redis_password).await?;
    let addr = NodeAddr::new(30, free_port()?, free_port()?)?;
    // Only the binding is changed; the advertised address is the operator's choice, with NODE_IP as the
    // pod spec sets it (the node's address; here 127.0.0.1, where LiveKit left to itself would pick the
    // machine's interface address).
    let config = livekit::bind_only(&tenant.config, &addr, &redis.address())?;
    let node = Node::start_with_env(&bin, &dir, addr.clone(), &config, &[("NODE_IP", addr.ip.to_string())])
        .await
        .context("the operator's host-network config must start without a reachable STUN server")?;
    let log = std::fs::read_to_string(dir.join(format!("livekit-{}.log", addr.label())))?;
    let advertised = format!("\"nodeIP\": \"{}\"", addr.ip);
    let advertised_compact = format!("\"nodeIP\":\"{}\"", addr.ip);
    ensure!(
        log.contains(&advertised) || log.contains(&advertised_compact),
        "LiveKit advertises the node's address {}: {}",
        addr.ip,
        log.lines().find(|l| l.contains("starting LiveKit server")).unwrap_or("no start line")
    );
    // A participant reaches it over that address.
    let mut people = Participants::start(&bin, &tenant.api_key, &tenant.api_secret, &dir.join("participants.log"))?;
    people.join("hostnet~0", &addr.ws_url(), "hostnet").await?;
    people.leave("hostnet~0").await?;
    eprintln!("=== real LiveKit, host network, no STUN: started, advertises {}, a participant joined", addr.ip);
    drop((people, node, redis));
    visio_e2e::kubectl(&["delete", "visiocluster", VC_NAME, "-n", HOSTNET, "--wait=false"], None)?;
    Ok(())
}
