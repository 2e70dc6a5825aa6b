//! The controllers (one per custom resource), their shared context and caches.
//!
//! Each reconcile follows the pipeline dereference -> validate -> build -> apply -> status:
//! only dereference, apply and status talk to the API; validate and build are the pure
//! functions in `crate::builders` and `crate::fleet`.

pub mod apply;
pub mod captionpool;
pub mod conditions;
pub mod error;
pub mod fanout;
pub mod fleet_pods;
pub mod nodes;
pub mod recent;
pub mod retentionpolicy;
pub mod secrets;
pub mod status_pace;
pub mod trim;
pub mod visiocluster;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{LimitRange, Node, Pod, ResourceQuota, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, Subject};
use kube::api::DynamicObject;
use kube::core::ApiResource;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::builders::labels::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::telemetry::Metrics;

/// Settings of a running operator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Image of the in-pod agent sidecar (the operator's own image).
    pub agent_image: String,
    /// Reporting identity for Events (the operator pod's name).
    pub instance: String,
    /// Reconciles each controller runs at once (0: no limit). A bound keeps the peak memory and the load on
    /// the apiserver flat when hundreds of objects need work at once (an operator start, a mass apply).
    pub max_concurrent_reconciles: u16,
}

/// Caches of the children, fed by the watches that also trigger reconciles.
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub deployments: Store<Deployment>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub ingresses: Store<Ingress>,
    pub service_accounts: Store<ServiceAccount>,
    pub roles: Store<Role>,
    pub role_bindings: Store<RoleBinding>,
    pub network_policies: Store<NetworkPolicy>,
    /// The tenants' ResourceQuotas and LimitRanges (`spec.tenant.quota`, `spec.tenant.limits`).
    pub resource_quotas: Store<ResourceQuota>,
    pub limit_ranges: Store<LimitRange>,
    /// Every RetentionPolicy, for the `RetentionPolicyMissing` governance condition.
    pub retention_policies: Store<crate::api::RetentionPolicy>,
    /// Every Node, trimmed to its cordon (`nodes`). Not awaited at start: without the rights to
    /// list Nodes it stays empty, and no node reads as cordoned.
    pub nodes: Store<Node>,
}

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub config: Config,
    pub stores: Stores,
    /// Per-object memory of the fleet planner (when the load first fell low), kept in memory:
    /// an operator restart only delays a scale-down, never speeds it up.
    pub low_load_since: Mutex<HashMap<String, i64>>,
    /// Per VisioCluster, the UIDs of its SFU pods seen Ready at least once: a pod that loses readiness
    /// (LiveKit reports Not Ready when its Redis stats go stale) still serves its sessions and is
    /// still capacity; only a pod never seen ready is `Pending`.
    pub ready_seen: Mutex<HashMap<String, std::collections::BTreeSet<String>>>,
    /// Per-object count of consecutive transient failures, for exponential backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// Per-CaptionPool memory (rejection counters seen), in memory like `low_load_since`.
    pub captions: Mutex<HashMap<String, captionpool::PoolMemory>>,
    /// Our Secrets, one watch per tenant namespace (the operator has no cluster-wide Secret rights).
    pub secrets: Arc<secrets::SecretCaches>,
    /// Who the operator is (SelfSubjectReview at start), the subject of its per-namespace Secret
    /// bindings; `None` if the apiserver would not say, and then no binding is made.
    pub operator: Option<Subject>,
    /// Our writes the caches may not show yet (see `recent`).
    pub recent: recent::RecentWrites,
    /// When each status was last written (count-only changes wait, see `status_pace`).
    pub status_pace: status_pace::StatusPace,
}

impl Context {
    /// Publishes an Event on `obj`. Failing to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// Backoff for a transient failure of `key`: 1 s doubling to 5 min.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n = (*n + 1).min(20);
        Duration::from_secs((1u64 << (*n - 1).min(9)).min(300))
    }

    /// Clears the backoff of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(key);
    }
}

/// Backoff of every watch and of the controllers' trigger streams: 250 ms doubling to 5 s, back to
/// 250 ms after 60 s without an error.
///
/// Why not kube-runtime's default (800 ms doubling to 30 s, reset after 120 s): a Controller also
/// backs off its whole trigger stream (every watch at once) on any error one watch yields, with that
/// default again. After an apiserver restart each watch meets errors (connection refused, then
/// `410 Gone` for its last resourceVersion), and the two layers kept the operator from seeing any
/// change for minutes (measured by fleet scenario 6, kube-apiserver down 30 s mid-upgrade). With
/// this backoff the watches are back within seconds of the apiserver.
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: std::time::Duration,
    last: Option<std::time::Instant>,
}

impl WatchBackoff {
    const MIN: std::time::Duration = std::time::Duration::from_millis(250);
    const MAX: std::time::Duration = std::time::Duration::from_secs(5);
    const RESET_AFTER: std::time::Duration = std::time::Duration::from_secs(60);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: Self::MIN, last: None }
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l) > Self::RESET_AFTER) {
            self.next = Self::MIN;
        }
        self.last = Some(now);
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(wait)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// Drops the errors of one watch before they reach a Controller. The watch has retried by itself
/// already (its own [`WatchBackoff`]); an error passed on would make the Controller pause every trigger
/// stream at once: after an apiserver restart each of the ~15 watches yields one `410 Gone` in turn,
/// and the paused Controller let them through one per pause (measured: one watch back every 5 s, no
/// reconcile for over a minute; with kube-runtime's default, minutes).
pub fn without_errors<T>(
    stream: impl Stream<Item = Result<T, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<T, watcher::Error>> + Send + 'static
where
    T: Send + 'static,
{
    stream.filter_map(|r| {
        futures::future::ready(match r {
            Ok(o) => Some(Ok(o)),
            Err(e) => {
                tracing::debug!(error = %e, "watch error (the watch retries by itself)");
                None
            }
        })
    })
}

/// The list/watch settings of every watch: lists are consistent reads (`MostRecent`), so that a
/// watch never starts from a resourceVersion older than the apiserver's watch cache holds (with
/// `resourceVersion=0` lists, a freshly restarted apiserver answered `410 Gone` again and again).
pub fn watch_config() -> watcher::Config {
    watcher::Config::default()
}

/// A watch of `K` objects labelled as ours that fills `writer` and yields touched objects.
/// Each object is trimmed to what the reconciles read before it is cached (see [`trim`]).
fn child_stream<K>(
    client: &Client,
    writer: reflector::store::Writer<K>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + trim::Trim + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let cfg = watch_config().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let stream =
        watcher(api, cfg).backoff(WatchBackoff::default()).modify(trim::Trim::trim).reflect(writer).touched_objects();
    without_errors(stream)
}

/// A watch of every `K` that survives stored objects this operator cannot deserialize.
///
/// The apiserver may hold a `K` our types refuse: written while the CRD had another schema (a
/// newer operator's CRD rolled back, a hand-edited CRD), or by a version whose fields changed.
/// kube-runtime's typed watcher deserializes whole list pages, so one such object fails every
/// list and the controller sees no object at all, forever. Here the watch reads
/// [`DynamicObject`]s and converts each one alone: an object that does not convert is skipped
/// with a warning naming it (the others are reconciled), and is picked up again once it is
/// fixed (the fix is a watch event like any other).
///
/// Limit: a skipped update or delete of an object that was readable before leaves the previous
/// version in the cache, so that version keeps being reconciled until the object is fixed.
pub fn lenient_watcher<K>(
    client: Client,
    cfg: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<K>(&()));
    watcher(api, cfg).try_filter_map(|event| futures::future::ready(Ok(typed_event::<K>(event))))
}

/// The typed event, or `None` (with a warning) for an object that does not deserialize as `K`.
fn typed_event<K>(event: watcher::Event<DynamicObject>) -> Option<watcher::Event<K>>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    use watcher::Event as E;
    let parse = |o: DynamicObject| -> Option<K> {
        let key = key_of(&o);
        match o.try_parse::<K>() {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(
                    kind = %K::kind(&()),
                    object = %key,
                    error = %e,
                    "stored object cannot be read by this operator (it does not match its schema): \
                     skipped until it is fixed; the other objects are reconciled"
                );
                None
            }
        }
    };
    Some(match event {
        E::Init => E::Init,
        E::InitDone => E::InitDone,
        E::InitApply(o) => E::InitApply(parse(o)?),
        E::Apply(o) => E::Apply(parse(o)?),
        E::Delete(o) => E::Delete(parse(o)?),
    })
}

/// A controller of `K` fed by [`lenient_watcher`] instead of kube-runtime's typed watcher, running at most
/// `config.max_concurrent_reconciles` reconciles at once.
pub fn lenient_controller<K>(client: &Client, cfg: watcher::Config, config: &Config) -> Controller<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let objects = without_errors(
        lenient_watcher::<K>(client.clone(), cfg).backoff(WatchBackoff::default()).reflect(writer).applied_objects(),
    );
    Controller::for_stream(objects, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(config.max_concurrent_reconciles))
        .trigger_backoff(WatchBackoff::default())
}

/// Runs the three controllers until one stops (which only happens on shutdown).
pub async fn run(client: Client, config: Config, metrics: Arc<Metrics>, ready: crate::telemetry::Readiness) {
    let (pods, pods_w) = reflector::store();
    let (services, services_w) = reflector::store();
    let (deployments, deployments_w) = reflector::store();
    let (pdbs, pdbs_w) = reflector::store();
    let (ingresses, ingresses_w) = reflector::store();
    let (service_accounts, service_accounts_w) = reflector::store();
    let (roles, roles_w) = reflector::store();
    let (role_bindings, role_bindings_w) = reflector::store();
    let (network_policies, network_policies_w) = reflector::store();
    let (resource_quotas, resource_quotas_w) = reflector::store();
    let (limit_ranges, limit_ranges_w) = reflector::store();
    let (retention_policies, retention_policies_w) = reflector::store();
    let (nodes, nodes_w) = reflector::store();
    let stores = Stores {
        pods,
        services,
        deployments,
        pdbs,
        ingresses,
        service_accounts,
        roles,
        role_bindings,
        network_policies,
        resource_quotas,
        limit_ranges,
        retention_policies,
        nodes,
    };
    let reporter = Reporter { controller: "visio-operator".into(), instance: Some(config.instance.clone()) };
    let operator = match secrets::whoami(&client).await {
        Ok(s) => {
            tracing::info!(kind = %s.kind, name = %s.name, "the operator binds itself to Secrets in tenant namespaces as this subject");
            Some(s)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not learn the operator's own identity: no per-namespace Secret bindings");
            None
        }
    };
    let secret_caches = secrets::SecretCaches::new(client.clone());
    let ctx = Arc::new(Context {
        client: client.clone(),
        metrics,
        recorder: Recorder::new(client.clone(), reporter),
        config,
        stores: stores.clone(),
        low_load_since: Mutex::new(HashMap::new()),
        ready_seen: Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
        captions: Mutex::new(HashMap::new()),
        secrets: secret_caches.clone(),
        operator,
        recent: recent::RecentWrites::default(),
        status_pace: status_pace::StatusPace::default(),
    });

    // Subscribed before the Node watch starts, so no cordon change is missed.
    let cordons = nodes::CordonChanges::new();
    let (vc_cordons, cp_cordons) = (cordons.subscribe(), cordons.subscribe());
    let vc = visiocluster::controller(
        client.clone(),
        ctx.clone(),
        visiocluster::ChildStreams {
            pods: child_stream(&client, pods_w).boxed(),
            secrets: secret_caches.subscribe().boxed(),
            services: child_stream(&client, services_w).boxed(),
            deployments: child_stream(&client, deployments_w).boxed(),
            pdbs: child_stream(&client, pdbs_w).boxed(),
            ingresses: child_stream(&client, ingresses_w).boxed(),
            service_accounts: child_stream(&client, service_accounts_w).boxed(),
            roles: child_stream(&client, roles_w).boxed(),
            role_bindings: child_stream(&client, role_bindings_w).boxed(),
            network_policies: child_stream(&client, network_policies_w).boxed(),
            resource_quotas: child_stream(&client, resource_quotas_w).boxed(),
            limit_ranges: child_stream(&client, limit_ranges_w).boxed(),
            retention_policies: lenient_watcher::<crate::api::RetentionPolicy>(client.clone(), watch_config())
                .backoff(WatchBackoff::default())
                .reflect(retention_policies_w)
                .touched_objects()
                .boxed(),
            nodes: vc_cordons.boxed(),
        },
    );
    let cp = captionpool::controller(client.clone(), ctx.clone(), cp_cordons.boxed());
    tokio::spawn(cordons.run(client.clone(), nodes_w));
    let rp = retentionpolicy::controller(client.clone(), ctx.clone());

    // Ready once every child cache has its first full list (the controllers drive the watches).
    let readiness = async move {
        let _ = stores.pods.wait_until_ready().await;
        let _ = stores.services.wait_until_ready().await;
        let _ = stores.deployments.wait_until_ready().await;
        let _ = stores.pdbs.wait_until_ready().await;
        let _ = stores.ingresses.wait_until_ready().await;
        let _ = stores.service_accounts.wait_until_ready().await;
        let _ = stores.roles.wait_until_ready().await;
        let _ = stores.role_bindings.wait_until_ready().await;
        let _ = stores.network_policies.wait_until_ready().await;
        let _ = stores.resource_quotas.wait_until_ready().await;
        let _ = stores.limit_ranges.wait_until_ready().await;
        ready.set(true);
        tracing::info!("caches synced");
        futures::future::pending::<()>().await
    };
    tokio::select! {
        _ = vc => tracing::warn!("VisioCluster controller stopped"),
        _ = cp => tracing::warn!("CaptionPool controller stopped"),
        _ = rp => tracing::warn!("RetentionPolicy controller stopped"),
        _ = readiness => {},
    }
}

/// Longest a reconcile may take. kube-runtime runs one reconcile per object at a time, so a request
/// that never answers (a connection left half-open by an apiserver restart: the client's read
/// timeout is the watches' 295 s) would otherwise hold the object for that long.
pub const RECONCILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs one reconcile within [`RECONCILE_TIMEOUT`]; past it, the reconcile is dropped (every write it
/// made so far is idempotent) and reported as a transient `timeout` error.
pub async fn bounded<T>(reconcile: impl std::future::Future<Output = error::Result<T>>) -> error::Result<T> {
    match tokio::time::timeout(RECONCILE_TIMEOUT, reconcile).await {
        Ok(result) => result,
        Err(_) => Err(error::Error::Timeout(RECONCILE_TIMEOUT)),
    }
}

/// Common reconcile bookkeeping: metrics and the log line for a finished reconcile.
pub fn observe(
    ctx: &Context,
    controller: &str,
    key: &str,
    started: std::time::Instant,
    result: &Result<(), &error::Error>,
) {
    ctx.metrics.reconcile_duration.with_label_values(&[controller]).observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            ctx.metrics.reconciles.with_label_values(&[controller, "ok"]).inc();
            ctx.succeeded(key);
        }
        Err(e) => {
            ctx.metrics.reconciles.with_label_values(&[controller, "error"]).inc();
            ctx.metrics.reconcile_errors.with_label_values(&[controller, e.label()]).inc();
        }
    }
}

/// What every controller does after a failed reconcile: log it, then retry with this object's
/// exponential backoff (permanent problems never reach here: they become conditions).
pub fn error_policy<K: Resource>(
    obj: Arc<K>,
    err: &error::Error,
    ctx: Arc<Context>,
) -> kube::runtime::controller::Action {
    let key = key_of(obj.as_ref());
    let wait = ctx.backoff(&key);
    tracing::warn!(object = %key, error = %err, label = err.label(), retry_in = ?wait, "reconcile failed");
    kube::runtime::controller::Action::requeue(wait)
}

/// Server-side applies `status` as the status of `obj` (one field manager), and counts the write.
/// A change that is not `urgent` (see [`status_pace::urgent`]) waits out the object's
/// [`status_pace::COUNTS_INTERVAL`]: then nothing is written and the wait is returned, for the
/// caller to requeue after it.
pub async fn write_status<K>(
    ctx: &Context,
    obj: &K,
    status: &impl serde::Serialize,
    urgent: bool,
) -> error::Result<Option<Duration>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    // The object the reconcile read may predate our last status write: the same status again is
    // skipped until the cache shows a newer version (see `recent`).
    let key = format!("{}/{}/status", K::kind(&()), key_of(obj));
    let hash = recent::status_hash(&serde_json::to_value(status)?);
    let version = obj.meta().resource_version.as_deref();
    if ctx.recent.in_flight(&key, &hash, version) {
        return Ok(None);
    }
    if let Some(wait) = ctx.status_pace.wait(&key).filter(|_| !urgent) {
        return Ok(Some(wait));
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    let pp = kube::api::PatchParams::apply(crate::builders::labels::FIELD_MANAGER).force();
    api.patch_status(&obj.name_any(), &pp, &kube::api::Patch::Apply(&patch)).await?;
    ctx.recent.wrote(&key, &hash, version);
    ctx.status_pace.wrote(&key);
    ctx.metrics.child_writes.with_label_values(&[K::kind(&()).as_ref(), "status"]).inc();
    Ok(None)
}

/// `namespace/name` of an object, for keys and logs.
pub fn key_of<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}
