//! Shared helpers of the end-to-end tests. They talk to the local control plane started by
//! `e2e/run-tests` (or `e2e/cluster up`) through the kubeconfig it wrote — loopback only.
//!
//! One home each:
//! - this file: clients (`client`, `client_at`, loopback only), waits (`wait_for`, `poll`), namespaces
//!   (`namespace`, `Tenant`), the suite operator's metrics, Events, `http_get`, `merge_patch`;
//! - [`process`]: commands run to their end, `kubectl`, the workspace's binaries, free ports, signals;
//! - [`ports`]: the table of every control plane the harness starts (README's copy generated from it);
//! - [`own`]: a control plane of a test's own and the operators it starts, kills and replaces;
//! - [`fixtures`]: the VisioCluster manifests the tests apply (a builder), server-side apply, Ready waits;
//! - [`fleet`]: the fleet harness (fake kubelet, meeting books, workload, fleet upgrades);
//! - [`livekit`]: the real livekit-server, Redis and participants on loopback;
//! - [`bench`]: the benches' committed results (docs/bench/) and the README tables and pictures made from them;
//! - [`audit`]: the apiserver's audit log, counted by client (the operator's requests apart);
//! - [`chart`]: helm and the chart's ServiceAccount; [`baseline`]: the chart-style LiveKit of the bench;
//!   [`s3`]: the retention suite's S3 server; [`hostile_s3`]: the S3 endpoint of a hostile tenant;
//!   [`rng`]: the one seeded generator; [`peak_report`]: `bench peak`'s results as JSON, their table and picture;
//!   [`kstatus`]: the real kstatus library's reading of an object.

pub mod audit;
pub mod baseline;
pub mod bench;
pub mod chart;
pub mod fixtures;
pub mod fleet;
pub mod hostile_s3;
pub mod kstatus;
pub mod livekit;
pub mod own;
pub mod peak_report;
pub mod ports;
pub mod process;
pub mod rng;
pub mod s3;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde_json::Value;

pub use process::kubectl;

/// Path of the kubeconfig of the local control plane, or a clear error saying how to get one.
pub fn kubeconfig_path() -> Result<PathBuf> {
    match std::env::var_os("VISIO_E2E_KUBECONFIG") {
        Some(p) => Ok(PathBuf::from(p)),
        None => bail!(
            "VISIO_E2E_KUBECONFIG is not set: the e2e tests need the local control plane. \
             Run them with `make e2e` (or `make test`), which builds and starts it."
        ),
    }
}

/// A client for the local control plane.
pub async fn client() -> Result<Client> {
    client_at(&kubeconfig_path()?).await
}

/// A client for the control plane behind `kubeconfig`, refused unless it is on loopback.
pub async fn client_at(kubeconfig: &Path) -> Result<Client> {
    Ok(Client::try_from(config_at(kubeconfig).await?)?)
}

/// The client configuration of a kubeconfig, on loopback only (the network rule).
pub async fn config_at(kubeconfig: &Path) -> Result<kube::Config> {
    let kc = Kubeconfig::read_from(kubeconfig).with_context(|| format!("reading {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let host = cfg.cluster_url.host().unwrap_or_default().to_string();
    if host != "127.0.0.1" && host != "localhost" && host != "[::1]" {
        bail!("refusing to test against {host}: the e2e suite only talks to loopback");
    }
    Ok(cfg)
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// An untyped API for the object `obj` (`apiVersion`, `kind`, and `metadata.namespace` if namespaced),
/// the plural being the lower-case kind plus `s` (or `ies`), which holds for every kind the tests use.
pub fn dynamic_api(client: &Client, obj: &Value) -> Result<kube::Api<kube::api::DynamicObject>> {
    use kube::core::{ApiResource, GroupVersionKind};
    let api_version = obj["apiVersion"].as_str().context("an object without apiVersion")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = obj["kind"].as_str().context("an object without kind")?;
    let lower = kind.to_lowercase();
    let plural = match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None if lower.ends_with('s') => format!("{lower}es"),
        None => format!("{lower}s"),
    };
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural);
    Ok(match obj["metadata"]["namespace"].as_str() {
        Some(ns) => kube::Api::namespaced_with(client.clone(), ns, &ar),
        None => kube::Api::all_with(client.clone(), &ar),
    })
}

/// The repository root.
pub fn repo() -> PathBuf {
    std::env::var_os("VISIO_E2E_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// RFC 7386 JSON merge patch (null removes a field), as the `json-patch` crate implements it.
pub use json_patch::merge as merge_patch;

/// Polls `check` every 250 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    poll(what, timeout, Duration::from_millis(250), check).await
}

/// Polls `check` every `every` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_err = None;
    while start.elapsed() < timeout {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        tokio::time::sleep(every).await;
    }
    bail!("timed out after {timeout:?} waiting for {what}; last error: {last_err:?}")
}

/// Creates a namespace for one test (deleted by the caller or with the cluster).
pub async fn namespace(client: &Client, name: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PostParams};
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads the operator's `/metrics` (on loopback) and returns the value of one series.
pub async fn metric(series: &str) -> Result<Option<f64>> {
    let url = std::env::var("VISIO_E2E_METRICS_URL").context("VISIO_E2E_METRICS_URL is not set")?;
    let body = http_get(&url).await?;
    Ok(body
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok())))
}

/// Sum of every sample of a metric family whose line starts with `prefix`.
pub async fn metric_sum(prefix: &str) -> Result<f64> {
    let url = std::env::var("VISIO_E2E_METRICS_URL").context("VISIO_E2E_METRICS_URL is not set")?;
    let body = http_get(&url).await?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum())
}

/// A minimal HTTP/1.0 GET to a loopback URL (no extra client dependency).
pub async fn http_get(url: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("only http:// URLs")?;
    let (hostport, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    if !(hostport.starts_with("127.") || hostport.starts_with("localhost") || hostport.starts_with("[::1]")) {
        bail!("refusing to dial {hostport}: loopback only");
    }
    let mut s = tokio::net::TcpStream::connect(hostport).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes()).await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    Ok(buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// The Events of `ns` with this reason.
pub async fn events(client: &Client, ns: &str, reason: &str) -> Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await?;
    Ok(list.items.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).collect())
}

/// The scenario's namespace on the suite's control plane, deleted when dropped (and waited for, two
/// minutes at most), also when the test fails.
pub struct Tenant(&'static str);

impl Tenant {
    /// A fresh namespace: one left over by an interrupted run is deleted first.
    pub async fn create(client: &Client, ns: &'static str) -> Result<Tenant> {
        delete_namespace(ns);
        namespace(client, ns).await?;
        Ok(Tenant(ns))
    }
}

pub fn delete_namespace(ns: &str) {
    let _ = kubectl(&["delete", "namespace", ns, "--ignore-not-found", "--timeout=120s"], None);
}

impl Drop for Tenant {
    fn drop(&mut self) {
        delete_namespace(self.0);
    }
}
