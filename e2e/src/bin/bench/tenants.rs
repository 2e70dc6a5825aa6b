//! `bench tenants N`: N tenants applied at once, each a namespace with a VisioCluster, a CaptionPool
//! and a RetentionPolicy (and the policy's credentials Secret), on a fresh control plane and a fresh
//! operator process (`e2e/bench tenants` starts both for every N).
//!
//! It measures:
//! - time from a tenant's creation until its VisioCluster is Ready (p50, p95, max), and until every
//!   tenant is;
//! - the operator's requests while converging, from the apiserver's audit log by the identity it runs as
//!   (user `visio-operator`, e2e/cluster; never from the operator's code): every write by verb, resource
//!   and subresource, against the minimum possible: the objects the operator owns (pods included) and one
//!   status write per custom resource; its reads (LISTs, watch connections); every other client's writes
//!   apart (kube-controller-manager, the scheduler, kwok, this bench);
//! - writes during an idle period (the goal is 0);
//! - the operator's peak RSS (`VmHWM`) and CPU seconds, from /proc;
//! - the CPU seconds each process of the control plane (and the operator) spent while the tenants
//!   converged, against what the machine's cores could give in that time: the share that says which
//!   process bounds the time to Ready;
//! - the operator's own reconcile latency histogram, as percentiles per controller.
//!
//! Every figure it cannot read fails the run: none becomes 0.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use visio_e2e::audit;
use visio_e2e::bench::{Doc, Machine};
use visio_e2e::client;
use visio_e2e::fixtures::visio_cluster;
use visio_operator::api::VisioCluster;

pub use visio_e2e::bench::tenants::Run as Figures;

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

/// The operator's requests between two instants, in the tenants' namespaces and cluster-wide ones
/// (Nodes, Namespaces), from the audit log.
fn requests(from: Timestamp, to: Timestamp) -> Result<audit::Counts> {
    let log = audit::log_path()?;
    audit::read(&log, from, to, &|ns: &str| ns.is_empty() || ns.starts_with('t'))
        .with_context(|| format!("reading the audit log {}", log.display()))
}

/// The operator's writes, apart from what is not one: (writes by request, Events, Lease writes, access
/// reviews). A `create` of a SelfSubjectAccessReview asks a question and stores nothing.
fn writes_of_operator(c: &audit::Counts) -> (BTreeMap<String, u64>, u64, u64, BTreeMap<String, u64>) {
    let (mut writes, mut reviews) = (BTreeMap::new(), BTreeMap::new());
    let (mut events, mut leases) = (0, 0);
    for (k, v) in c.of(audit::OPERATOR, &audit::WRITES) {
        if k.starts_with("events") {
            events += v;
        } else if k.starts_with("leases.coordination.k8s.io") {
            leases += v;
        } else if k.contains("accessreviews.authorization.k8s.io") {
            reviews.insert(k, v);
        } else {
            writes.insert(k, v);
        }
    }
    (writes, events, leases, reviews)
}

/// Objects the operator owns in the bench's namespaces, by kind, and its SFU pods.
async fn children(client: &Client) -> Result<(BTreeMap<String, u64>, usize)> {
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
            .with_context(|| format!("listing {plural}"))?
            .items
            .iter()
            .filter(|o| o.namespace().is_some_and(|n| n.starts_with('t')))
            .count() as u64;
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
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).with_context(|| format!("{pid}'s /proc stat"));
    let ticks = field(11)? + field(12)?;
    let hz: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .context("getconf CLK_TCK")?;
    Ok(ticks / hz)
}

/// CPU seconds so far of the control plane's processes (their pid files in `$VISIO_E2E_STATE/pids`,
/// by component name) and of the operator (which must be readable).
fn cpu_by_process(operator_pid: u32) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    let dir = std::env::var("VISIO_E2E_STATE").map(|s| std::path::PathBuf::from(s).join("pids"));
    for entry in dir.ok().and_then(|d| std::fs::read_dir(d).ok()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().trim_end_matches(".pid").to_string();
        let pid = std::fs::read_to_string(entry.path()).ok().and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(cpu) = pid.and_then(|p| cpu_seconds(p).ok()) {
            out.insert(name, cpu);
        }
    }
    out.insert("visio-operator".into(), cpu_seconds(operator_pid)?);
    Ok(out)
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

async fn count_ready(client: &Client, kind: &str, plural: &str) -> Result<usize> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("visio.io", "v1alpha1", kind), plural);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    Ok(api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing {plural}"))?
        .items
        .iter()
        .filter(|o| is_ready(o))
        .count())
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
    let load_at_start = std::fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    let load_at_start = load_at_start.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let before = Timestamp::now();

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

    let cpu_before = cpu_by_process(operator_pid)?;
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

    // Until every tenant is Ready (10 minutes at most, or 1 s per tenant beyond 600).
    let bound = Duration::from_secs(600.max(n as u64));
    let deadline = Instant::now() + bound;
    loop {
        let done = ready_at.lock().map(|m| m.len()).unwrap_or(0);
        if done >= n {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("bench tenants {n}: only {done} of {n} Ready after {} s", bound.as_secs());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_ready = t0.elapsed();
    let converge_cpu_by_process = cpu_spent(&cpu_before, &cpu_by_process(operator_pid)?);
    watch.abort();
    let ready = ready_at.lock().map(|m| m.clone()).unwrap_or_default();
    let mut lat: Vec<f64> = ready
        .iter()
        .filter_map(|(ns, at)| created_at.get(ns).map(|c| at.saturating_duration_since(*c).as_secs_f64()))
        .collect();
    lat.sort_by(f64::total_cmp);

    // Let the last status writes land, then count.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let converged = Timestamp::now();
    let c = requests(before, converged)?;
    let (writes_by_request, events, _, reviews) = writes_of_operator(&c);
    let (children, sfu_pods) = children(&client).await?;
    let minimum = children.values().sum::<u64>() + 3 * n as u64;
    let writes: u64 = writes_by_request.values().sum();
    eprintln!("bench tenants {n}: children {children:?}, {sfu_pods} SFU pods; writes {writes_by_request:?}");

    eprintln!("bench tenants {n}: idle for {} s", idle.as_secs());
    tokio::time::sleep(idle).await;
    let idle_end = Timestamp::now();
    // The audit log is written before the answer goes out; a second's margin for the last lines.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ic = requests(converged, idle_end)?;
    // Idle is strict: an Event or an access review counts too.
    let (mut idle_by_request, idle_events, idle_lease_writes, idle_reviews) = writes_of_operator(&ic);
    if idle_events > 0 {
        idle_by_request.insert("events create".into(), idle_events);
    }
    idle_by_request.extend(idle_reviews);
    let idle_writes = idle_by_request.values().sum();
    // Reads since the operator started (its first LISTs and watches included), every namespace.
    let log = audit::log_path()?;
    let reads = audit::read(&log, Timestamp::UNIX_EPOCH, idle_end, &|_: &str| true)?;

    let (rss, cpu) = footprint(operator_pid).context("the operator's peak RSS and CPU")?;
    let metrics = visio_e2e::http_get(&metrics_url).await.context("the operator's metrics")?;
    let (reconcile_p50_ms, reconcile_p95_ms) =
        (reconcile_percentiles(&metrics, 0.5), reconcile_percentiles(&metrics, 0.95));
    if reconcile_p50_ms.is_empty() {
        bail!("no visio_reconcile_duration_seconds in the operator's metrics");
    }
    let figures = Figures {
        tenants: n,
        nodes: std::env::var("VISIO_E2E_NODES").context("VISIO_E2E_NODES")?.parse()?,
        load_at_start,
        created_s: applied.as_secs_f64(),
        ready: lat.len(),
        ready_p50_s: percentile(&lat, 0.5),
        ready_p95_s: percentile(&lat, 0.95),
        ready_max_s: lat.last().copied().unwrap_or(f64::NAN),
        all_ready_s: all_ready.as_secs_f64(),
        captionpools_ready: count_ready(&client, "CaptionPool", "captionpools").await?,
        retentionpolicies_ready: count_ready(&client, "RetentionPolicy", "retentionpolicies").await?,
        writes,
        minimum,
        writes_by_request,
        children,
        events,
        refused: c.refused_of(audit::OPERATOR),
        others_writes: c.writes_of_others(audit::OPERATOR),
        reads_by_request: {
            let mut r = reads.of(audit::OPERATOR, &["get", "list", "watch"]);
            r.extend(reviews);
            r
        },
        watches_open: reads.watches_open(audit::OPERATOR),
        idle_seconds: idle.as_secs(),
        idle_writes,
        idle_by_request,
        idle_lease_writes,
        peak_rss_mib: rss,
        cpu_seconds: cpu,
        converge_cpu_by_process,
        reconcile_p50_ms,
        reconcile_p95_ms,
    };
    if figures.ready < n {
        bail!("only {} of {n} tenants Ready: {figures:?}", figures.ready);
    }
    if figures.writes == 0 || figures.reads_by_request.is_empty() {
        bail!("the audit log holds no request of user {}: is the operator run as it? {figures:?}", audit::OPERATOR);
    }
    Ok(figures)
}

/// Gathers the runs of `file` (one JSON line each) into the committed document `doc_path`
/// (docs/bench/tenants.json) with where they come from, and prints its README block.
pub fn report(file: &str, doc_path: &str) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let runs: Vec<Figures> =
        text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect::<Result<_, _>>()?;
    let env = |k: &str| std::env::var(k).with_context(|| k.to_string());
    let doc = Doc {
        bench: "tenants".into(),
        commit: env("VISIO_BENCH_COMMIT")?,
        date: env("VISIO_BENCH_DATE")?,
        command: env("VISIO_BENCH_COMMAND")?,
        machine: Machine::read()?,
        // What else ran is not known here: the load average at each run's start says it (VISIO_BENCH_LOAD
        // for a note of the person who ran it).
        load: env("VISIO_BENCH_LOAD")
            .unwrap_or_else(|_| "the load average at each run's start is in its line below".into()),
        runs,
    };
    let cores = doc.machine.cores;
    for r in &doc.runs {
        println!("N={}: {}", r.tenants, cpu_share_line(r, cores));
        println!("N={}: reconcile p50 {:?} ms, p95 {:?} ms", r.tenants, r.reconcile_p50_ms, r.reconcile_p95_ms);
    }
    std::fs::write(doc_path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {doc_path}"))?;
    println!("\n{}", visio_e2e::bench::tenants::markdown("tenants", &doc)?);
    Ok(())
}

/// "CPU while converging: ..." with each process's seconds and share of what the cores could give.
fn cpu_share_line(r: &Figures, cores: usize) -> String {
    let available = cores.max(1) as f64 * r.all_ready_s;
    let mut by: Vec<(&String, &f64)> = r.converge_cpu_by_process.iter().collect();
    by.sort_by(|a, b| b.1.total_cmp(a.1));
    let spent: f64 = by.iter().map(|(_, v)| **v).sum();
    let parts: Vec<String> =
        by.iter().map(|(k, v)| format!("{k} {:.0} s ({:.0}%)", v, 100.0 * **v / available.max(f64::EPSILON))).collect();
    format!(
        "CPU while converging, of {:.0} core-seconds ({} cores x {:.1} s): {}; all of them {:.0}%",
        available,
        cores,
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
            all_ready_s: 100.0,
            converge_cpu_by_process: [("kube-apiserver".to_string(), 120.0), ("visio-operator".to_string(), 20.0)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            cpu_share_line(&r, 2),
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
