//! The runtime floor of the controllers: everything that knows no custom resource. The shared
//! [`Context`] and per-object [`Memory`], the table of child kinds and their caches ([`children`]),
//! writing children ([`apply`]) and pods ([`pods`]), watches ([`watch`]), Secrets in tenant
//! namespaces ([`secrets`]), Node cordons ([`nodes`]), conditions and status writes ([`status`],
//! [`conditions`], [`status_pace`], [`recent`]) and the reconcile bookkeeping below (timeout, metrics,
//! backoff).

pub mod apply;
pub mod children;
pub mod conditions;
pub mod drift;
pub mod error;
pub mod fanout;
pub mod nodes;
pub mod platform;
pub mod pods;
pub mod recent;
pub mod secrets;
pub mod startup;
pub mod status;
pub mod status_pace;
#[cfg(test)]
pub mod testing;
pub mod trim;
pub mod watch;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::rbac::v1::Subject;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};

pub use children::Stores;
pub use status::write_status;
pub use watch::{lenient_controller, lenient_watcher, watch_config, without_errors, WatchBackoff};

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
    /// What retention sweeps may cost: pages, time and answer size per sweep, sweeps at once.
    pub retention: crate::retention::limits::Limits,
    /// The VisioPlatform whose rules every tenant's resources must keep (`None`: no platform rules).
    pub platform: Option<String>,
}

/// What a controller remembers per object between reconciles, keyed `namespace/name` (or a key derived
/// from it). In memory only: every use is chosen so that an operator restart, which forgets it, only
/// delays an action (a scale-down) and never speeds one up.
#[derive(Debug)]
pub struct Memory<T>(Mutex<HashMap<String, T>>);

impl<T> Default for Memory<T> {
    fn default() -> Self {
        Memory(Mutex::new(HashMap::new()))
    }
}

impl<T> Memory<T> {
    /// The whole map, locked (a poisoned lock is taken as it is: the memory is only ever a hint).
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, T>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of what is remembered for `key`.
    pub fn get(&self, key: &str) -> Option<T>
    where
        T: Clone,
    {
        self.lock().get(key).cloned()
    }

    /// Remembers `value` for `key`, or forgets `key` when `value` is `None`.
    pub fn set(&self, key: &str, value: Option<T>) {
        let mut m = self.lock();
        match value {
            Some(v) => m.insert(key.to_string(), v),
            None => m.remove(key),
        };
    }

    /// Runs `f` on the entry of `key` (created with its default).
    pub fn update<R>(&self, key: &str, f: impl FnOnce(&mut T) -> R) -> R
    where
        T: Default,
    {
        f(self.lock().entry(key.to_string()).or_default())
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub config: Config,
    pub stores: Stores,
    /// Per fleet, when the load first fell low (the planner's scale-down delay).
    pub low_load_since: Memory<i64>,
    /// Per fleet, the UIDs of its pods seen Ready at least once: a pod that loses readiness (LiveKit
    /// reports Not Ready when its Redis stats go stale) still serves its sessions and is still capacity;
    /// only a pod never seen ready is `Pending`.
    pub ready_seen: Memory<BTreeSet<String>>,
    /// Per fleet, the pods it created that its cache may not show yet (see `pods::Created`).
    pub created: Memory<pods::Created>,
    /// Per fleet, how long its recent pods took to become Ready (see `startup`).
    pub startups: Memory<startup::Startups>,
    /// Per object, the count of consecutive transient failures, for exponential backoff.
    pub failures: Memory<u32>,
    /// Our Secrets, one watch per tenant namespace (the operator has no cluster-wide Secret rights).
    pub secrets: Arc<secrets::SecretCaches>,
    /// Who the operator is (SelfSubjectReview at start), the subject of its per-namespace Secret
    /// bindings; `None` if the apiserver would not say, and then no binding is made.
    pub operator: Option<Subject>,
    /// Our writes the caches may not show yet (see `recent`).
    pub recent: recent::RecentWrites,
    /// When each status was last written (count-only changes wait, see `status_pace`).
    pub status_pace: status_pace::StatusPace,
    /// The platform's rules (`--platform`).
    pub platform: Arc<platform::Platform>,
}

impl Context {
    /// A context over `stores`, with empty memories.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        config: Config,
        stores: Stores,
        secrets: Arc<secrets::SecretCaches>,
        operator: Option<Subject>,
    ) -> Self {
        let platform_name = config.platform.clone();
        Context {
            client,
            metrics,
            recorder,
            config,
            stores,
            low_load_since: Memory::default(),
            ready_seen: Memory::default(),
            created: Memory::default(),
            startups: Memory::default(),
            failures: Memory::default(),
            secrets,
            operator,
            recent: recent::RecentWrites::default(),
            status_pace: status_pace::StatusPace::default(),
            platform: platform::Platform::new(platform_name),
        }
    }

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
        let n = self.failures.update(key, |n| {
            *n = (*n + 1).min(20);
            *n
        });
        Duration::from_secs((1u64 << (n - 1).min(9)).min(300))
    }

    /// Clears the backoff of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.failures.forget(key);
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
/// `namespace/name` of an object, for keys and logs.
pub fn key_of<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}
