//! `bench tenants N`: N tenants applied at once, each a namespace with a VisioCluster, a CaptionPool
//! and a RetentionPolicy (and the policy's credentials Secret), on a fresh control plane and a fresh
//! operator process (`e2e/bench tenants` starts both for every N).
//!
//! It measures:
//! - time from a tenant's creation until its VisioCluster is Ready (p50, p95, max), and until every
//!   tenant is;
//! - write requests the operator made while converging, from the apiserver's own
//!   `apiserver_request_total` (never from the operator's code), against the minimum possible: the
//!   objects the operator owns and one status write per custom resource (pods are created with the
//!   routing labels they start with, so a pod that no agent reports on needs no write after its
//!   creation);
//! - writes during an idle period (the goal is 0);
//! - the operator's peak RSS (`VmHWM`) and CPU seconds, from /proc;
//! - the CPU seconds each process of the control plane (and the operator) spent while the tenants
//!   converged, against what the machine's cores could give in that time: the share that says which
//!   process bounds the time to Ready;
//! - the operator's own reconcile latency histogram, as percentiles per controller.
//!
//! Attribution: the bench creates its objects with POST, and only the operator uses server-side apply,
//! so every APPLY is the operator's; so are PATCH and DELETE on pods (no agent runs here: kwok writes
//! pod status through the `status` subresource, the scheduler through `binding`). Pods the operator
//! creates are counted by owner (its own, never a ReplicaSet's). Events and the leader's Lease renewals
//! are reported apart: several components write Events, and a Lease renewal is the leader's heartbeat.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use visio_e2e::fixtures::visio_cluster;
use visio_e2e::{client, kubectl};
use visio_operator::api::VisioCluster;

/// What one run measured (one JSON line in the results file).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Figures {
    pub tenants: usize,
    pub ready: usize,
    pub ready_p50_s: f64,
    pub ready_p95_s: f64,
    pub ready_max_s: f64,
    pub all_ready_s: f64,
    pub writes: f64,
    pub minimum: f64,
    pub writes_by_kind: BTreeMap<String, f64>,
    pub events: f64,
    pub idle_seconds: u64,
    pub idle_writes: f64,
    pub idle_by_kind: BTreeMap<String, f64>,
    pub idle_lease_writes: f64,
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
    pub reconcile_p50_ms: BTreeMap<String, f64>,
    pub reconcile_p95_ms: BTreeMap<String, f64>,
    pub captionpools_ready: usize,
    pub retentionpolicies_ready: usize,
    /// The operator's writes the apiserver refused while converging, by `resource VERB code` (each is
    /// counted in `writes` too: a refused write is a retry the minimum does not have).
    #[serde(default)]
    pub refused_by_kind: BTreeMap<String, f64>,
    /// Events written while idle, by `reporting component: reason` (the apiserver's counter cannot say
    /// whose they are; the Events themselves can).
    #[serde(default)]
    pub idle_events_by_source: BTreeMap<String, f64>,
    /// CPU seconds each process spent from the first tenant's creation until every tenant was Ready
    /// (the control plane's processes by name, and `visio-operator`).
    #[serde(default)]
    pub converge_cpu_by_process: BTreeMap<String, f64>,
    /// The machine's cores (the CPU seconds available while converging are cores x `all_ready_s`).
    #[serde(default)]
    pub cores: usize,
}

fn tenant_objects(i: usize, s3: &visio_e2e::s3::S3) -> Vec<Value> {
    let (endpoint, ak, sk) = (&s3.endpoint, &s3.creds.access_key_id, &s3.creds.secret_access_key);
    let ns = format!("t{i:03}");
    vec![
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials", "namespace": ns},
               "stringData": {"accessKeyId": ak, "secretAccessKey": sk}}),
        visio_cluster("visio")
            .namespace(&ns)
            .ministry(&format!("Ministère n°{i}"), &format!("visio.t{i:03}.gouv.fr"))
            .replicas(1, 4)
            .pod_network()
            .no_turn()
            .spec(json!({"recordings": {"endpoint": endpoint, "bucket": "meetings", "prefix": "recordings/"}}))
            .value(),
        json!({"apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool", "metadata": {"name": "captions", "namespace": ns},
               "spec": {"clusterRef": {"name": "visio"},
                        "backend": {"gpu": {"count": 0}, "replicas": {"min": 1, "max": 2}},
                        "transcribers": {"replicas": {"min": 1, "max": 2}}}}),
        json!({"apiVersion": "visio.io/v1alpha1", "kind": "RetentionPolicy", "metadata": {"name": "meetings", "namespace": ns},
               "spec": {"mode": "DryRun",
                        "target": {"endpoint": endpoint, "bucket": "meetings", "credentialsSecret": "s3-credentials"},
                        "rules": [{"dataClass": "recordings", "prefix": "recordings/", "maxAge": "720h"}]}}),
    ]
}

async fn create(client: &Client, obj: Value) -> Result<()> {
    let api = visio_e2e::dynamic_api(client, &obj)?;
    let o: DynamicObject = serde_json::from_value(obj)?;
    match api.create(&PostParams::default(), &o).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `apiserver_request_total` samples: (verb, group, resource, subresource, code) -> count.
type Requests = BTreeMap<(String, String, String, String, String), f64>;

fn requests() -> Result<Requests> {
    let text = kubectl(&["get", "--raw", "/metrics"], None)?;
    let mut out = Requests::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |k: &str| -> String {
            line.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or_default().to_string()
        };
        let v: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let key = (label("verb"), label("group"), label("resource"), label("subresource"), label("code"));
        *out.entry(key).or_insert(0.0) += v;
    }
    Ok(out)
}

/// The operator's writes between two snapshots, by `resource[/subresource] VERB`, plus Events and Leases.
struct Writes {
    ours: BTreeMap<String, f64>,
    /// Ours that the apiserver answered with an error, by `resource VERB code`.
    refused: BTreeMap<String, f64>,
    pod_posts: f64,
    events: f64,
    leases: f64,
}

fn delta(before: &Requests, after: &Requests) -> Writes {
    let mut w = Writes { ours: BTreeMap::new(), refused: BTreeMap::new(), pod_posts: 0.0, events: 0.0, leases: 0.0 };
    for (key @ (verb, _group, resource, sub, code), v) in after {
        let d = v - before.get(key).copied().unwrap_or(0.0);
        if d <= 0.0 || !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "DELETE" | "APPLY") {
            continue;
        }
        let name = if sub.is_empty() { format!("{resource} {verb}") } else { format!("{resource}/{sub} {verb}") };
        match (verb.as_str(), resource.as_str(), sub.as_str()) {
            (_, "events", _) => w.events += d,
            (_, "leases", _) => w.leases += d,
            ("APPLY", _, _) | ("PATCH", "pods", "") | ("DELETE", "pods", "") => {
                if !code.starts_with('2') {
                    *w.refused.entry(format!("{name} {code}")).or_insert(0.0) += d;
                }
                *w.ours.entry(name).or_insert(0.0) += d;
            }
            ("POST", "pods", "") => w.pod_posts += d,
            _ => {}
        }
    }
    w
}

/// Objects the operator owns in the bench's namespaces, by kind, and its SFU pods.
async fn children(client: &Client) -> Result<(BTreeMap<String, usize>, usize)> {
    let selector = "app.kubernetes.io/managed-by=visio-operator";
    let kinds = [
        ("", "v1", "Secret", "secrets"),
        ("", "v1", "ConfigMap", "configmaps"),
        ("", "v1", "Service", "services"),
        ("", "v1", "ServiceAccount", "serviceaccounts"),
        ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        ("", "v1", "ResourceQuota", "resourcequotas"),
        ("", "v1", "LimitRange", "limitranges"),
        ("apps", "v1", "Deployment", "deployments"),
        ("apps", "v1", "StatefulSet", "statefulsets"),
        ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
        ("networking.k8s.io", "v1", "Ingress", "ingresses"),
        ("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    ];
    let mut out = BTreeMap::new();
    for (group, version, kind, plural) in kinds {
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let n = api
            .list_metadata(&ListParams::default().labels(selector))
            .await
            .map(|l| l.items.iter().filter(|o| o.namespace().is_some_and(|n| n.starts_with('t'))).count())
            .unwrap_or(0);
        if n > 0 {
            out.insert(kind.to_string(), n);
        }
    }
    // Pods: those the operator creates itself (owned by a custom resource, not by a ReplicaSet).
    let pods: Api<Pod> = Api::all(client.clone());
    let mut own = 0;
    let mut sfu = 0;
    for p in pods.list(&ListParams::default().labels(selector)).await?.items {
        let by_rs = p.owner_references().iter().any(|o| o.kind == "ReplicaSet");
        if !by_rs {
            own += 1;
            if p.labels().get("app.kubernetes.io/component").map(String::as_str) == Some("sfu") {
                sfu += 1;
            }
        }
    }
    out.insert("Pod".into(), own);
    Ok((out, sfu))
}

/// Events of the tenants' namespaces created or repeated since `since`, by `reporting component: reason`.
async fn events_since(client: &Client, since: k8s_openapi::jiff::Timestamp) -> Result<BTreeMap<String, f64>> {
    use k8s_openapi::api::core::v1::Event;
    let events: Api<Event> = Api::all(client.clone());
    let mut out = BTreeMap::new();
    for e in events.list(&ListParams::default()).await?.items {
        let last = e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0));
        if last.is_none_or(|t| t < since) || !e.namespace().is_some_and(|n| n.starts_with('t')) {
            continue;
        }
        let source = e
            .reporting_component
            .clone()
            .filter(|c| !c.is_empty())
            .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()))
            .unwrap_or_else(|| "?".into());
        let key = format!("{source}: {}", e.reason.clone().unwrap_or_default());
        *out.entry(key).or_insert(0.0) += 1.0;
    }
    Ok(out)
}

/// (peak RSS MiB, CPU seconds) of a process, from /proc.
fn footprint(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmHWM")?;
    Ok((hwm_kib / 1024.0, cpu_seconds(pid)?))
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    Ok(ticks / hz)
}

/// CPU seconds so far of the control plane's processes (their pid files in `$VISIO_E2E_STATE/pids`,
/// by component name) and of the operator.
fn cpu_by_process(operator_pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let dir = std::env::var("VISIO_E2E_STATE").map(|s| std::path::PathBuf::from(s).join("pids"));
    for entry in dir.ok().and_then(|d| std::fs::read_dir(d).ok()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().trim_end_matches(".pid").to_string();
        let pid = std::fs::read_to_string(entry.path()).ok().and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(cpu) = pid.and_then(|p| cpu_seconds(p).ok()) {
            out.insert(name, cpu);
        }
    }
    if let Ok(cpu) = cpu_seconds(operator_pid) {
        out.insert("visio-operator".into(), cpu);
    }
    out
}

/// What each process spent between two [`cpu_by_process`] readings.
fn cpu_spent(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0))).collect()
}

/// Percentiles per controller from the operator's `visio_reconcile_duration_seconds` histogram
/// (linear interpolation inside the bucket, as PromQL's `histogram_quantile` does).
fn reconcile_percentiles(metrics: &str, q: f64) -> BTreeMap<String, f64> {
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in metrics.lines().filter(|l| l.starts_with("visio_reconcile_duration_seconds_bucket{")) {
        let label =
            |k: &str| line.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).map(str::to_string);
        let (Some(ctrl), Some(le)) = (label("controller"), label("le")) else { continue };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        let v: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let b = buckets.entry(ctrl).or_default();
        match b.iter_mut().find(|(l, _)| *l == le) {
            Some(e) => e.1 += v,
            None => b.push((le, v)),
        }
    }
    buckets
        .into_iter()
        .filter_map(|(ctrl, mut b)| {
            b.sort_by(|a, c| a.0.total_cmp(&c.0));
            let total = b.last()?.1;
            if total <= 0.0 {
                return None;
            }
            let rank = q * total;
            let mut prev = (0.0, 0.0);
            for &(le, count) in &b {
                if count >= rank {
                    let upper = if le.is_finite() { le } else { prev.0 };
                    let within = if count > prev.1 { (rank - prev.1) / (count - prev.1) } else { 1.0 };
                    return Some((ctrl, 1000.0 * (prev.0 + (upper - prev.0) * within)));
                }
                prev = (le, count);
            }
            None
        })
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn is_ready(o: &DynamicObject) -> bool {
    o.data["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

async fn count_ready(client: &Client, kind: &str, plural: &str) -> usize {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("visio.io", "v1alpha1", kind), plural);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    api.list(&ListParams::default()).await.map(|l| l.items.iter().filter(|o| is_ready(o)).count()).unwrap_or(0)
}

/// Runs the bench for `n` tenants and returns its figures.
pub async fn run(n: usize, idle: Duration, operator_pid: u32) -> Result<Figures> {
    let client = client().await?;
    let s3 = visio_e2e::s3::S3::from_env()?;
    visio_e2e::s3::create_bucket(&s3.client(), "meetings").await?;
    // Measure convergence, not the operator's start: wait until it says it is ready (caches synced).
    let metrics_url = std::env::var("VISIO_E2E_METRICS_URL")?;
    let readyz = metrics_url.replace("/metrics", "/readyz");
    visio_e2e::wait_for("the operator's /readyz", Duration::from_secs(60), || {
        let url = readyz.clone();
        async move { Ok(visio_e2e::http_get(&url).await.ok().filter(|b| b.trim() == "ready").map(|_| ())) }
    })
    .await?;
    let before = requests()?;

    // Every VisioCluster's first Ready, seen by a watch started before the first object exists.
    let vcs: Api<VisioCluster> = Api::all(client.clone());
    let ready_at = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<String, Instant>::new()));
    let seen = ready_at.clone();
    let watch = tokio::spawn(async move {
        let mut stream = watcher(vcs, watcher::Config::default()).applied_objects().boxed();
        while let Some(Ok(vc)) = stream.next().await {
            if visio_e2e::fixtures::ready(&vc) {
                if let Ok(mut m) = seen.lock() {
                    m.entry(vc.namespace().unwrap_or_default()).or_insert_with(Instant::now);
                }
            }
        }
    });

    let cpu_before = cpu_by_process(operator_pid);
    let t0 = Instant::now();
    let mut created_at = BTreeMap::new();
    let tenants: Vec<usize> = (0..n).collect();
    let results: Vec<(usize, Instant)> = futures::stream::iter(tenants)
        .map(|i| {
            let client = client.clone();
            let s3 = s3.clone();
            async move {
                create(
                    &client,
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("t{i:03}")}}),
                )
                .await?;
                let start = Instant::now();
                for obj in tenant_objects(i, &s3) {
                    create(&client, obj).await?;
                }
                anyhow::Ok((i, start))
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    for (i, at) in results {
        created_at.insert(format!("t{i:03}"), at);
    }
    let applied = t0.elapsed();
    eprintln!("bench tenants {n}: {n} tenants created in {:.1} s", applied.as_secs_f64());

    // Until every tenant is Ready (10 minutes at most).
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = ready_at.lock().map(|m| m.len()).unwrap_or(0);
        if done >= n {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("bench tenants {n}: only {done} of {n} Ready after 10 minutes");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_ready = t0.elapsed();
    let converge_cpu_by_process = cpu_spent(&cpu_before, &cpu_by_process(operator_pid));
    watch.abort();
    let ready = ready_at.lock().map(|m| m.clone()).unwrap_or_default();
    let mut lat: Vec<f64> = ready
        .iter()
        .filter_map(|(ns, at)| created_at.get(ns).map(|c| at.saturating_duration_since(*c).as_secs_f64()))
        .collect();
    lat.sort_by(f64::total_cmp);

    // Let the last status writes land, then count.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let converged = requests()?;
    let w = delta(&before, &converged);
    let (kids, sfu_pods) = children(&client).await?;
    let child_count: usize = kids.values().sum();
    let minimum = child_count as f64 + 3.0 * n as f64;
    let mut by_kind = w.ours.clone();
    by_kind.insert("pods POST (own pods)".into(), kids.get("Pod").copied().unwrap_or(0) as f64);
    let writes: f64 = w.ours.values().sum::<f64>() + kids.get("Pod").copied().unwrap_or(0) as f64;
    eprintln!("bench tenants {n}: children {kids:?}, {sfu_pods} SFU pods; pod POSTs (all) {}", w.pod_posts);

    // Idle.
    eprintln!("bench tenants {n}: idle for {} s", idle.as_secs());
    let idle_before = requests()?;
    let idle_started = k8s_openapi::jiff::Timestamp::now();
    tokio::time::sleep(idle).await;
    let idle_after = requests()?;
    let idle_events_by_source = events_since(&client, idle_started).await.unwrap_or_default();
    let iw = delta(&idle_before, &idle_after);
    let idle_writes = iw.ours.values().sum::<f64>() + iw.pod_posts + iw.events;
    let mut idle_by_kind = iw.ours.clone();
    if iw.pod_posts > 0.0 {
        idle_by_kind.insert("pods POST".into(), iw.pod_posts);
    }
    if iw.events > 0.0 {
        idle_by_kind.insert("events".into(), iw.events);
    }

    let (rss, cpu) = footprint(operator_pid).unwrap_or((0.0, 0.0));
    let metrics = visio_e2e::http_get(&metrics_url).await.unwrap_or_default();
    let figures = Figures {
        tenants: n,
        ready: lat.len(),
        ready_p50_s: percentile(&lat, 0.5),
        ready_p95_s: percentile(&lat, 0.95),
        ready_max_s: lat.last().copied().unwrap_or(0.0),
        all_ready_s: all_ready.as_secs_f64(),
        writes,
        minimum,
        writes_by_kind: by_kind,
        events: w.events,
        idle_seconds: idle.as_secs(),
        idle_writes,
        idle_by_kind,
        idle_lease_writes: iw.leases,
        peak_rss_mib: rss,
        cpu_seconds: cpu,
        reconcile_p50_ms: reconcile_percentiles(&metrics, 0.5),
        reconcile_p95_ms: reconcile_percentiles(&metrics, 0.95),
        refused_by_kind: w.refused.clone(),
        idle_events_by_source,
        converge_cpu_by_process,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        captionpools_ready: count_ready(&client, "CaptionPool", "captionpools").await,
        retentionpolicies_ready: count_ready(&client, "RetentionPolicy", "retentionpolicies").await,
    };
    if figures.ready < n {
        bail!("only {} of {n} tenants Ready: {figures:?}", figures.ready);
    }
    Ok(figures)
}

/// Prints the table of every run in `file` (one JSON line each) and how the per-tenant figures grow.
pub fn report(file: &str) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let rows: Vec<Figures> =
        text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect::<Result<_, _>>()?;
    println!("| tenants | Ready p50 / p95 / max | all Ready after | operator writes / tenant | minimum / tenant | ratio | idle writes ({} s) | peak RSS | CPU s (per tenant) | reconcile p50 / p95 (visiocluster) | CaptionPools / RetentionPolicies Ready |",
        rows.first().map_or(0, |r| r.idle_seconds));
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for r in &rows {
        let n = r.tenants as f64;
        println!(
            "| {} | {:.1} / {:.1} / {:.1} s | {:.1} s | {:.1} | {:.1} | {:.2} | {} | {:.0} MiB | {:.1} ({:.3}) | {:.0} / {:.0} ms | {} / {} |",
            r.tenants,
            r.ready_p50_s,
            r.ready_p95_s,
            r.ready_max_s,
            r.all_ready_s,
            r.writes / n,
            r.minimum / n,
            r.writes / r.minimum.max(1.0),
            r.idle_writes,
            r.peak_rss_mib,
            r.cpu_seconds,
            r.cpu_seconds / n,
            r.reconcile_p50_ms.get("visiocluster").copied().unwrap_or(0.0),
            r.reconcile_p95_ms.get("visiocluster").copied().unwrap_or(0.0),
            r.captionpools_ready,
            r.retentionpolicies_ready,
        );
    }
    if let (Some(small), Some(large)) = (rows.first(), rows.last()) {
        if large.tenants > small.tenants {
            let per = |r: &Figures, v: f64| v / r.tenants as f64;
            println!(
                "\nGrowth per tenant from N={} to N={}: writes x{:.2}, CPU seconds x{:.2}, time to all Ready per tenant x{:.2}; peak RSS {:.0} -> {:.0} MiB",
                small.tenants,
                large.tenants,
                per(large, large.writes) / per(small, small.writes).max(f64::EPSILON),
                per(large, large.cpu_seconds) / per(small, small.cpu_seconds).max(f64::EPSILON),
                per(large, large.all_ready_s) / per(small, small.all_ready_s).max(f64::EPSILON),
                small.peak_rss_mib,
                large.peak_rss_mib
            );
        }
    }
    for r in &rows {
        println!("\nN={}: writes by kind {:?}; idle writes by kind {:?}; Lease renewals while idle {} (leader election); Events while converging (all components) {}",
            r.tenants, r.writes_by_kind, r.idle_by_kind, r.idle_lease_writes, r.events);
        println!("N={}: reconcile p50 {:?} ms, p95 {:?} ms", r.tenants, r.reconcile_p50_ms, r.reconcile_p95_ms);
        println!(
            "N={}: writes the apiserver refused {:?}; Events while idle by source {:?}",
            r.tenants, r.refused_by_kind, r.idle_events_by_source
        );
        if !r.converge_cpu_by_process.is_empty() {
            println!("N={}: {}", r.tenants, cpu_share_line(r));
        }
    }
    Ok(())
}

/// "CPU while converging: ..." with each process's seconds and share of what the cores could give.
fn cpu_share_line(r: &Figures) -> String {
    let available = r.cores.max(1) as f64 * r.all_ready_s;
    let mut by: Vec<(&String, &f64)> = r.converge_cpu_by_process.iter().collect();
    by.sort_by(|a, b| b.1.total_cmp(a.1));
    let spent: f64 = by.iter().map(|(_, v)| **v).sum();
    let parts: Vec<String> =
        by.iter().map(|(k, v)| format!("{k} {:.0} s ({:.0}%)", v, 100.0 * **v / available.max(f64::EPSILON))).collect();
    format!(
        "CPU while converging, of {:.0} core-seconds ({} cores x {:.1} s): {}; all of them {:.0}%",
        available,
        r.cores,
        r.all_ready_s,
        parts.join(", "),
        100.0 * spent / available.max(f64::EPSILON)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_share_line_ranks_processes_by_what_they_spent() {
        let r = Figures {
            cores: 2,
            all_ready_s: 100.0,
            converge_cpu_by_process: [("kube-apiserver".to_string(), 120.0), ("visio-operator".to_string(), 20.0)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            cpu_share_line(&r),
            "CPU while converging, of 200 core-seconds (2 cores x 100.0 s): kube-apiserver 120 s (60%), \
             visio-operator 20 s (10%); all of them 70%"
        );
    }

    #[test]
    fn percentiles_of_a_histogram_interpolate_inside_the_bucket() {
        let m = "visio_reconcile_duration_seconds_bucket{controller=\"visiocluster\",le=\"0.01\"} 50\n\
                 visio_reconcile_duration_seconds_bucket{controller=\"visiocluster\",le=\"0.1\"} 100\n\
                 visio_reconcile_duration_seconds_bucket{controller=\"visiocluster\",le=\"+Inf\"} 100\n";
        let p50 = reconcile_percentiles(m, 0.5);
        assert!((p50["visiocluster"] - 10.0).abs() < 1e-9, "{p50:?}");
        let p95 = reconcile_percentiles(m, 0.95);
        assert!((p95["visiocluster"] - 91.0).abs() < 1e-6, "{p95:?}");
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.95), 4.0);
    }
}
