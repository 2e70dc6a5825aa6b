//! Watches: their backoff, the errors they keep to themselves, and the lenient watch of a custom
//! resource that survives stored objects this operator cannot read.

use futures::{Stream, StreamExt, TryStreamExt};
use kube::api::DynamicObject;
use kube::core::ApiResource;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::{key_of, trim, Config};
use crate::builders::labels::{MANAGED_BY, MANAGED_BY_LABEL};

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
pub fn child_stream<K>(
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

/// The objects of `store` in `namespace`: what a change of a namespace-wide object (a
/// RetentionPolicy) re-decides.
pub fn in_namespace<K>(
    store: &kube::runtime::reflector::Store<K>,
    namespace: Option<String>,
) -> Vec<kube::runtime::reflector::ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace == namespace)
        .map(|o| kube::runtime::reflector::ObjectRef::from_obj(o.as_ref()))
        .collect()
}
