//! Reliability under failure (issue #10), each scenario in a control plane of its own that the
//! test starts and stops, with operator processes the test starts, kills and restarts:
//!
//! - a. leader takeover: two replicas, exactly one holds the Lease and writes; SIGKILL of the
//!   leader, then SIGTERM of the next one, each timed until the standby holds the Lease and
//!   takes a new VisioCluster to Ready;
//! - b. the operator SIGKILLed at random points (seeded) while 20 tenants are reconciled, then
//!   one run to completion: every tenant Ready, exactly the expected children, no duplicate SFU
//!   pod, and credentials never generated twice;
//! - c. started before the CRDs exist: it says it waits, stays up, and works once they are applied;
//! - d. a stored VisioCluster the operator cannot deserialize does not stop the others.
//!
//! The scenarios share one cluster configuration (state `.e2e-chaos`, fixed ports), so they run
//! one at a time ([`SERIAL`]). Every wait is bounded; every process the test starts is killed,
//! and the cluster stopped, when the guard is dropped, also on failure or panic.
//!
//! Figures are printed on stdout (`cargo test -p visio-e2e --test chaos -- --nocapture`).
//! `VISIO_CHAOS_SEED` and `VISIO_CHAOS_KILLS` override the seed and the number of kills of b.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use visio_e2e::fixtures::{poll_ready, ready, visio_cluster};
use visio_e2e::own::{Operator, OperatorRun, OwnCluster};
use visio_e2e::ports;
use visio_e2e::process::operator_bin;
use visio_e2e::rng::Rng;
use visio_e2e::{http_get, poll, repo};
use visio_operator::api::VisioCluster;
use visio_operator::builders::labels::{COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
use visio_operator::builders::stack::{build_stack, Credentials};

/// One scenario at a time: they share the cluster's state directory and ports.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `--lease-duration` of every operator started here.
const LEASE_SECONDS: u64 = 5;
/// Namespace of the leader Lease (what POD_NAMESPACE is in a cluster).
const OPERATOR_NS: &str = "visio-system";

// ---------------------------------------------------------------------------------------------
// The cluster and its operators

/// A fresh chaos control plane, with the operators' namespace.
async fn up() -> Result<OwnCluster> {
    let started = Instant::now();
    let cluster = OwnCluster::up(ports::CHAOS)?;
    println!("[chaos] control plane up in {:.1} s", started.elapsed().as_secs_f64());
    cluster.kubectl(&["create", "namespace", OPERATOR_NS], None)?;
    Ok(cluster)
}

/// Starts an operator replica (leader election on a [`LEASE_SECONDS`] Lease in [`OPERATOR_NS`]);
/// returns its index in `operators`.
fn start(c: &mut OwnCluster, instance: &str) -> Result<usize> {
    let run = OperatorRun::new(&operator_bin()?, instance).lease_duration(LEASE_SECONDS).pod_namespace(OPERATOR_NS);
    c.start(run)
}

async fn vc(c: &OwnCluster, ns: &str, name: &str) -> Result<VisioCluster> {
    Ok(Api::<VisioCluster>::namespaced(c.client().await?, ns).get(name).await?)
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A tenant in podNetwork mode, one to two SFU pods.
fn tenant(ns: &str, name: &str) -> Value {
    visio_cluster(name)
        .namespace(ns)
        .ministry(&format!("Ministère {ns}"), &format!("visio.{ns}.gouv.fr"))
        .replicas(1, 2)
        .pod_network()
        .turn(&format!("turn.{ns}.gouv.fr"))
        .value()
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

async fn wait_ready(c: &OwnCluster, ns: &str, name: &str, timeout: Duration) -> Result<()> {
    let vcs = Api::<VisioCluster>::namespaced(c.client().await?, ns);
    poll_ready(&vcs, name, timeout, Duration::from_millis(100)).await?;
    Ok(())
}

async fn metrics(op: &Operator) -> Result<String> {
    http_get(&op.metrics_url()).await
}

/// Serialises a scenario, runs it in a fresh cluster, prints logs on failure.
macro_rules! scenario {
    ($body:ident) => {{
        let _serial = SERIAL.lock().await;
        let mut cluster = up().await?;
        let result = $body(&mut cluster).await;
        cluster.on_failure(result)
    }};
}

// ---------------------------------------------------------------------------------------------
// a. Leader takeover

#[tokio::test]
async fn leader_takeover_after_kill_and_after_graceful_stop() -> Result<()> {
    scenario!(leader_takeover)
}

async fn leader_takeover(c: &mut OwnCluster) -> Result<()> {
    let ns = "chaos-leader";
    c.apply(&namespace(ns))?;
    let a = start(c, "replica-a")?;
    let b = start(c, "replica-b")?;
    let c_ = &*c;
    let leader = poll("one replica holds the Lease", Duration::from_secs(30), Duration::from_millis(200), || async {
        c_.lease_holder(OPERATOR_NS).await
    })
    .await?;
    let (leader, standby) = if leader == "replica-a" { (a, b) } else { (b, a) };
    // Both ready (a standby is ready by design), the leader's caches synced.
    for i in [leader, standby] {
        let url = c.operators[i].url("/readyz");
        poll("replica /readyz", Duration::from_secs(30), Duration::from_millis(200), || async {
            Ok(http_get(&url).await.is_ok_and(|b| b == "ready\n").then_some(()))
        })
        .await?;
    }
    c.apply(&tenant(ns, "before"))?;
    wait_ready(c, ns, "before", Duration::from_secs(60)).await?;

    // Only the leader reconciles, hence writes: the standby has not one reconcile.
    let lm = metrics(&c.operators[leader]).await?;
    let sm = metrics(&c.operators[standby]).await?;
    ensure!(lm.contains("visio_reconcile_total{"), "the leader reconciles:\n{lm}");
    ensure!(!sm.contains("visio_reconcile_total{"), "the standby reconciled:\n{sm}");
    ensure!(c.operators[standby].log_text().contains("waiting to lead"), "the standby says it waits");
    ensure!(!c.operators[standby].log_text().contains("starting controllers"), "the standby started controllers");
    ensure!(c.lease_holder(OPERATOR_NS).await?.as_deref() == Some(c.operators[leader].instance.as_str()));

    // SIGKILL of the leader: the Lease runs out, the standby takes it and reconciles.
    let standby_name = c.operators[standby].instance.clone();
    c.operators[leader].kill();
    let t0 = Instant::now();
    c.apply(&tenant(ns, "after-kill"))?;
    let (lease_s, ready_s) = takeover(c, &standby_name, ns, "after-kill", t0).await?;
    println!(
        "[chaos] a. SIGKILL of the leader (lease {LEASE_SECONDS} s): standby holds the Lease after {lease_s:.2} s, \
         new VisioCluster Ready after {ready_s:.2} s"
    );
    let bound = (LEASE_SECONDS + 10) as f64;
    ensure!(ready_s < bound, "takeover after SIGKILL took {ready_s:.2} s, over {bound} s");

    // SIGTERM of the new leader, with a fresh standby: it releases the Lease on the way out.
    let next = start(c, "replica-c")?;
    let url = c.operators[next].url("/readyz");
    poll("new standby /readyz", Duration::from_secs(30), Duration::from_millis(200), || async {
        Ok(http_get(&url).await.is_ok_and(|b| b == "ready\n").then_some(()))
    })
    .await?;
    // Let the standby settle into its wait (it has read the Lease held by the leader).
    let op = &c.operators[next];
    poll("standby waiting to lead", Duration::from_secs(10), Duration::from_millis(100), || async {
        Ok(op.log_text().contains("waiting to lead").then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.operators[standby].terminate()?;
    let t0 = Instant::now();
    c.apply(&tenant(ns, "after-term"))?;
    let (glease_s, gready_s) = takeover(c, "replica-c", ns, "after-term", t0).await?;
    println!(
        "[chaos] a. SIGTERM of the leader: standby holds the Lease after {glease_s:.2} s, \
         new VisioCluster Ready after {gready_s:.2} s"
    );
    let old = &mut c.operators[standby];
    let status = poll("the SIGTERMed leader exits", Duration::from_secs(15), Duration::from_millis(100), || {
        let s = old.exited();
        async move { s }
    })
    .await?;
    ensure!(status.success(), "a SIGTERMed leader exits cleanly: {status}");
    ensure!(gready_s < bound, "takeover after SIGTERM took {gready_s:.2} s, over {bound} s");
    ensure!(
        glease_s < 3.0,
        "a released Lease is taken within 3 s (the standby polls it every second), took {glease_s:.2} s"
    );
    Ok(())
}

/// Seconds from `t0` until `holder` holds the Lease, and until `ns/name` is Ready.
async fn takeover(c: &OwnCluster, holder: &str, ns: &str, name: &str, t0: Instant) -> Result<(f64, f64)> {
    let limit = Duration::from_secs(LEASE_SECONDS + 30);
    let lease = poll("the standby holds the Lease", limit, Duration::from_millis(50), || async {
        Ok((c.lease_holder(OPERATOR_NS).await?.as_deref() == Some(holder)).then(|| t0.elapsed().as_secs_f64()))
    })
    .await?;
    let ready = poll("the new VisioCluster Ready", limit, Duration::from_millis(50), || async {
        Ok(ready(&vc(c, ns, name).await?).then(|| t0.elapsed().as_secs_f64()))
    })
    .await?;
    Ok((lease, ready))
}

// ---------------------------------------------------------------------------------------------
// b. Killed at random points while 20 tenants converge

const TENANTS: usize = 20;

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

#[tokio::test]
async fn random_kills_while_twenty_tenants_converge() -> Result<()> {
    scenario!(random_kills)
}

/// Every value each `<vc>-credentials` Secret ever had, as seen by a watch.
type SeenCredentials = Arc<Mutex<BTreeMap<String, Vec<BTreeMap<String, Vec<u8>>>>>>;

fn watch_credentials(client: Client) -> (SeenCredentials, tokio::task::JoinHandle<()>) {
    let seen: SeenCredentials = Arc::default();
    let out = seen.clone();
    let api: Api<Secret> = Api::all(client);
    let cfg = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, cfg).default_backoff().applied_objects().boxed();
        while let Some(item) = stream.next().await {
            let Ok(s) = item else { continue };
            if !s.name_any().ends_with("-credentials") {
                continue;
            }
            let data: BTreeMap<String, Vec<u8>> =
                s.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            let key = format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any());
            let mut m = out.lock().unwrap_or_else(|p| p.into_inner());
            let values = m.entry(key).or_default();
            if values.last() != Some(&data) {
                values.push(data);
            }
        }
    });
    (seen, task)
}

async fn random_kills(c: &mut OwnCluster) -> Result<()> {
    let seed = env_u64("VISIO_CHAOS_SEED", 10)?;
    let kills = env_u64("VISIO_CHAOS_KILLS", 50)?;
    let mut rng = Rng::new(seed);
    let (seen, watch) = watch_credentials(c.client().await?);
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _watch = Abort(watch);

    let mut items = vec![];
    for i in 0..TENANTS {
        let ns = format!("chaos-t{i:02}");
        items.push(namespace(&ns));
        items.push(tenant(&ns, "visio"));
    }
    c.apply(&json!({"apiVersion": "v1", "kind": "List", "items": items}))?;

    let started = Instant::now();
    let (mut leading, mut synced, mut created) = (0, 0, 0);
    for i in 0..kills {
        let op = start(c, "chaos")?;
        let wait = rng.range(50, 800);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        c.operators[op].kill();
        let log = c.operators[op].log_text();
        leading += usize::from(log.contains("starting controllers"));
        synced += usize::from(log.contains("caches synced"));
        created += usize::from(log.contains("created SFU pod"));
        ensure!(!log.contains("panicked"), "run {i} panicked:\n{log}");
        // Keep the last few logs only.
        if c.operators.len() > 3 {
            c.operators.remove(0);
        }
    }
    println!(
        "[chaos] b. seed {seed}: {kills} SIGKILLs after 50-800 ms in {:.1} s; {leading} runs had started their \
         controllers, {synced} had synced their caches (reconciling), {created} had created SFU pods when killed",
        started.elapsed().as_secs_f64()
    );

    // One run to completion.
    let last = start(c, "chaos")?;
    let t0 = Instant::now();
    let client = c.client().await?;
    poll("every tenant Ready", Duration::from_secs(120), Duration::from_millis(500), || async {
        let vcs: Vec<VisioCluster> = Api::<VisioCluster>::all(client.clone()).list(&ListParams::default()).await?.items;
        Ok((vcs.len() == TENANTS && vcs.iter().all(ready)).then_some(()))
    })
    .await?;
    println!("[chaos] b. the last run took all {TENANTS} tenants to Ready in {:.1} s", t0.elapsed().as_secs_f64());
    // A few seconds more, so that anything the last run would still create or delete shows.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(c.operators[last].exited()?.is_none(), "the last run is still up");

    let mut problems = vec![];
    for i in 0..TENANTS {
        let ns = format!("chaos-t{i:02}");
        problems.extend(check_children(c, &ns, "visio").await?);
    }
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for i in 0..TENANTS {
        let key = format!("chaos-t{i:02}/visio-credentials");
        match seen.get(&key) {
            None => problems.push(format!("{key}: never seen")),
            Some(v) if v.len() != 1 => problems.push(format!("{key}: {} different sets of values", v.len())),
            Some(_) => {}
        }
    }
    ensure!(problems.is_empty(), "after {kills} kills (seed {seed}):\n{}", problems.join("\n"));
    Ok(())
}

/// Exactly the children the builders ask for, each once and owned by the tenant; SFU pods
/// `<vc>-sfu-<n>` as many as desired, on the current template; one Redis ReplicaSet (a second
/// one would mean its template, hence its password, changed).
async fn check_children(c: &OwnCluster, ns: &str, name: &str) -> Result<Vec<String>> {
    let vc = vc(c, ns, name).await?;
    let uid = vc.uid().context("uid")?;
    // The stack built from the stored credentials: the SFU template hash covers the LiveKit
    // config, hence the keys, so a pod made with other keys shows as another hash.
    let secret = Api::<Secret>::namespaced(c.client().await?, ns).get(&format!("{name}-credentials")).await?;
    let data = secret.data.unwrap_or_default();
    let value = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(&v.0).into_owned()).unwrap_or_default();
    let creds = Credentials {
        api_key: value("apiKey"),
        api_secret: value("apiSecret"),
        redis_password: value("redisPassword"),
    };
    let stack = build_stack(&vc, &creds, "visio-operator:e2e").map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut want: BTreeSet<(String, String)> =
        stack.object_metas().into_iter().map(|(k, m)| (k.to_string(), m.name.clone().unwrap_or_default())).collect();
    // The operator's own Secret rights in the namespace: built at reconcile from its identity, not
    // part of the stack (builders/tenant.rs operator_secrets_binding).
    want.insert(("RoleBinding".into(), format!("{name}-operator-secrets")));
    let mut problems = vec![];
    let mut have = BTreeSet::new();
    let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
    for (kind, group, version, plural) in [
        ("Secret", "", "v1", "secrets"),
        ("ServiceAccount", "", "v1", "serviceaccounts"),
        ("Service", "", "v1", "services"),
        ("Role", "rbac.authorization.k8s.io", "v1", "roles"),
        ("RoleBinding", "rbac.authorization.k8s.io", "v1", "rolebindings"),
        ("Deployment", "apps", "v1", "deployments"),
        ("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets"),
        ("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies"),
        ("Ingress", "networking.k8s.io", "v1", "ingresses"),
    ] {
        let ar = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() { version.into() } else { format!("{group}/{version}") },
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(c.client().await?, ns, &ar);
        for o in api.list(&ListParams::default().labels(&selector)).await? {
            let owned = o.owner_references().iter().any(|r| r.uid == uid && r.controller == Some(true));
            if !owned {
                problems.push(format!("{ns}: {kind}/{} not owned by the VisioCluster", o.name_any()));
            }
            if o.metadata.deletion_timestamp.is_none() {
                have.insert((kind.to_string(), o.name_any()));
            }
        }
    }
    if have != want {
        let extra: Vec<_> = have.difference(&want).collect();
        let missing: Vec<_> = want.difference(&have).collect();
        problems.push(format!("{ns}: children differ: extra {extra:?}, missing {missing:?}"));
    }
    let status = vc.status.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(c.client().await?, ns);
    let sfu = pods.list(&ListParams::default().labels(&format!("{COMPONENT_LABEL}=sfu"))).await?.items;
    let live: Vec<&Pod> = sfu.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    if live.len() as i32 != status.sfu.desired || status.sfu.desired < 1 {
        let names: Vec<String> = live.iter().map(|p| p.name_any()).collect();
        problems.push(format!("{ns}: {} SFU pods {names:?}, desired {}", live.len(), status.sfu.desired));
    }
    for p in &live {
        let n = p.name_any();
        let index = n.strip_prefix(&format!("{name}-sfu-")).and_then(|i| i.parse::<u32>().ok());
        if index.is_none() {
            problems.push(format!("{ns}: SFU pod {n} is not named <vc>-sfu-<n>"));
        }
        let hash = p.labels().get(visio_operator::builders::labels::TEMPLATE_HASH_LABEL);
        if hash != Some(&stack.sfu.hash) {
            problems.push(format!("{ns}: SFU pod {n} has template hash {hash:?}, not {}", stack.sfu.hash));
        }
    }
    let rs = c.kubectl(&["get", "replicasets", "-n", ns, "-o", "json"], None)?;
    let rs: Value = serde_json::from_str(&rs)?;
    let count = rs["items"].as_array().map(Vec::len).unwrap_or(0);
    if count != 1 {
        problems.push(format!("{ns}: {count} Redis ReplicaSets (its template changed)"));
    }
    Ok(problems)
}

// ---------------------------------------------------------------------------------------------
// c. The CRDs not installed yet

#[tokio::test]
async fn waits_for_the_crds_then_reconciles() -> Result<()> {
    scenario!(missing_crds)
}

const CRDS: [&str; 3] = ["visioclusters.visio.io", "captionpools.visio.io", "retentionpolicies.visio.io"];

async fn missing_crds(c: &mut OwnCluster) -> Result<()> {
    // The control plane installed the CRDs a moment ago. A CRD deleted while its watch cache still
    // initializes can stay Terminating for minutes (the apiserver's CRD finalizer cannot list the
    // instances: "storage is (re)initializing", seen once under load): delete once every kind lists
    // from the cache. resourceVersion=0 without a limit is served by the cache and refused (429) while
    // it initializes; with a limit the apiserver would answer from etcd instead (k8s.io/apiserver
    // v0.35.4, storage/cacher/delegator.go: shouldDelegateListOnNotReadyCache).
    for crd in CRDS {
        let plural = crd.split('.').next().unwrap_or(crd);
        let path = format!("/apis/visio.io/v1alpha1/{plural}?resourceVersion=0");
        let c_ = &*c;
        poll(
            &format!("{plural} listed from the watch cache"),
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                let path = path.clone();
                async move { Ok(c_.kubectl(&["get", "--raw", &path], None).ok().map(|_| ())) }
            },
        )
        .await?;
    }
    let mut args = vec!["delete", "crd", "--wait=false"];
    args.extend(CRDS);
    c.kubectl(&args, None)?;
    let c_ = &*c;
    // A timeout names what the apiserver's CRD finalizer reports (the Terminating condition).
    poll("the CRDs deleted", Duration::from_secs(180), Duration::from_millis(500), || async move {
        let left: Value = serde_json::from_str(&c_.kubectl(&["get", "crd", "-o", "json"], None)?)?;
        let ours: Vec<&Value> = left["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["metadata"]["name"].as_str().is_some_and(|n| CRDS.contains(&n)))
            .collect();
        if ours.is_empty() {
            return Ok(Some(()));
        }
        let states: Vec<String> =
            ours.iter().map(|c| format!("{}: {}", c["metadata"]["name"], c["status"]["conditions"])).collect();
        Err(anyhow::anyhow!("still there: {}", states.join("; ")))
    })
    .await?;
    let op = start(c, "no-crds")?;
    let o = &c.operators[op];
    poll("the operator says it waits for the CRDs", Duration::from_secs(20), Duration::from_millis(200), || async {
        Ok(o.log_text().contains("CRDs are not installed yet").then_some(()))
    })
    .await?;
    // It stays up and answers, not ready, for a while (two of its 5 s polls).
    tokio::time::sleep(Duration::from_secs(6)).await;
    ensure!(c.operators[op].exited()?.is_none(), "the operator exited without its CRDs");
    let o = &c.operators[op];
    ensure!(http_get(&o.url("/healthz")).await? == "ok\n", "alive while waiting");
    ensure!(http_get(&o.url("/readyz")).await? != "ready\n", "not ready while waiting");
    let log = o.log_text();
    ensure!(log.matches("CRDs are not installed yet").count() == 1, "said once, not in a loop:\n{log}");

    let crds = repo().join("crds");
    c.kubectl(&["apply", "--server-side", "-f", crds.to_str().context("path")?], None)?;
    let t0 = Instant::now();
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    let names: Vec<String> = CRDS.iter().map(|n| format!("crd/{n}")).collect();
    args.extend(names.iter().map(String::as_str));
    // kubectl wait fails at once, instead of waiting, on a CRD whose status has no conditions yet
    // (".status.conditions accessor error: <nil>"), which a busy apiserver shows just after the apply.
    visio_e2e::wait_for("the CRDs Established", Duration::from_secs(90), || async { Ok(c.kubectl(&args, None).ok()) })
        .await?;
    let ns = "chaos-crds";
    c.apply(&json!({"apiVersion": "v1", "kind": "List", "items": [namespace(ns), tenant(ns, "visio")]}))?;
    wait_ready(c, ns, "visio", Duration::from_secs(60)).await?;
    println!(
        "[chaos] c. CRDs applied after the operator started: VisioCluster Ready {:.1} s later",
        t0.elapsed().as_secs_f64()
    );
    ensure!(c.operators[op].exited()?.is_none(), "the operator still runs");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// d. A stored object the operator cannot read

#[tokio::test]
async fn a_malformed_visiocluster_does_not_stop_the_others() -> Result<()> {
    scenario!(malformed_object)
}

async fn malformed_object(c: &mut OwnCluster) -> Result<()> {
    let op = start(c, "malformed")?;
    c.apply(&json!({"apiVersion": "v1", "kind": "List",
                    "items": [namespace("chaos-good"), namespace("chaos-bad"), tenant("chaos-good", "first")]}))?;
    wait_ready(c, "chaos-good", "first", Duration::from_secs(60)).await?;

    // A permissive schema for a moment: the apiserver stores a spec our types refuse.
    let crd: Value = serde_json::from_str(&c.kubectl(&["get", "crd", CRDS[0], "-o", "json"], None)?)?;
    let mut permissive = crd.clone();
    for v in permissive["spec"]["versions"].as_array_mut().context("versions")? {
        let schema = &mut v["schema"]["openAPIV3Schema"];
        schema["properties"]["spec"] = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        if let Some(o) = schema.as_object_mut() {
            o.remove("x-kubernetes-validations");
        }
    }
    c.kubectl(&["replace", "-f", "-"], Some(&permissive.to_string()))?;
    let mut bad = tenant("chaos-bad", "broken");
    bad["spec"]["sfu"]["replicas"]["min"] = json!("two");
    poll("the malformed VisioCluster stored", Duration::from_secs(30), Duration::from_millis(500), || async {
        // The new schema takes a moment to be served.
        Ok(c.kubectl(&["create", "-f", "-"], Some(&bad.to_string())).ok().map(|_| ()))
    })
    .await?;
    // The real CRD back (as shipped in crds/).
    let mut real = crd;
    if let Some(m) = real["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    c.kubectl(&["replace", "-f", "-"], Some(&real.to_string()))?;
    let stored = c.kubectl(&["get", "visiocluster", "broken", "-n", "chaos-bad", "-o", "json"], None)?;
    let stored: Value = serde_json::from_str(&stored)?;
    ensure!(stored["spec"]["sfu"]["replicas"]["min"] == "two", "stored as written: {stored}");

    // Another tenant, created afterwards, still converges; and after a restart (a fresh list) too.
    c.apply(&tenant("chaos-good", "second"))?;
    wait_ready(c, "chaos-good", "second", Duration::from_secs(60)).await?;
    ensure!(c.operators[op].exited()?.is_none(), "the operator still runs");
    c.operators[op].kill();
    let op = start(c, "malformed-restarted")?;
    c.apply(&tenant("chaos-good", "third"))?;
    wait_ready(c, "chaos-good", "third", Duration::from_secs(60)).await?;
    ensure!(c.operators[op].exited()?.is_none(), "the restarted operator still runs");
    let log = c.operators[op].log_text();
    ensure!(
        log.lines().any(|l| l.contains("chaos-bad/broken") && l.contains("cannot be read")),
        "the malformed object is named in the log:\n{log}"
    );
    Ok(())
}
