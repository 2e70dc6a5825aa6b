//! The VisioPlatform the operator obeys (`--platform NAME`): one watched object, cached, and a stream of its
//! changes so that every tenant's resources are checked again when the platform team changes a rule.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};

use super::fanout::Fanout;
use super::{watch_config, WatchBackoff};
use crate::api::{VisioPlatform, VisioPlatformSpec};

/// Which rules hold now.
#[derive(Clone, Debug)]
pub enum Rules {
    /// The operator runs without a platform (`--platform ""`): no platform rule applies.
    Unset,
    /// The named VisioPlatform does not exist: nothing is deployed until it does (fail closed).
    Missing(String),
    /// The platform's rules.
    Present(Arc<VisioPlatform>),
}

impl Rules {
    /// The spec to check against, or the refusal when the platform is missing.
    pub fn spec(&self) -> Result<Option<&VisioPlatformSpec>, crate::platform::Violation> {
        match self {
            Rules::Unset => Ok(None),
            Rules::Present(p) => Ok(Some(&p.spec)),
            Rules::Missing(name) => Err(crate::platform::Violation {
                field: "VisioPlatform".into(),
                message: format!(
                    "the operator obeys VisioPlatform {name:?} (--platform), which does not exist: nothing is deployed \
                     until the platform team creates it"
                ),
            }),
        }
    }
}

/// A tenant's resource the platform's rules refuse (or every one, while the platform is missing), as the
/// permanent error the controllers turn into `Ready=False` with reason `PlatformRule` and a Warning Event.
pub fn check<S>(
    rules: &Rules,
    namespace: &str,
    spec: &S,
    check: impl FnOnce(&VisioPlatformSpec, &str, &S) -> Result<(), crate::platform::Violation>,
) -> super::error::Result<()> {
    let refused = |v: crate::platform::Violation| super::error::Error::Reference {
        reason: "platform_rule",
        message: v.to_string(),
    };
    match rules.spec().map_err(refused)? {
        Some(p) => check(p, namespace, spec).map_err(refused),
        None => Ok(()),
    }
}

/// The cache of the operator's VisioPlatform.
pub struct Platform {
    name: Option<String>,
    store: Store<VisioPlatform>,
    writer: std::sync::Mutex<Option<reflector::store::Writer<VisioPlatform>>>,
    changed: Fanout<VisioPlatform>,
}

impl Platform {
    /// The platform called `name` (`None`: no platform rules).
    pub fn new(name: Option<String>) -> Arc<Self> {
        let (store, writer) = reflector::store();
        Arc::new(Platform { name, store, writer: std::sync::Mutex::new(Some(writer)), changed: Fanout::default() })
    }

    /// The rules that hold now (call once [`Platform::ready`]).
    pub fn rules(&self) -> Rules {
        let Some(name) = &self.name else { return Rules::Unset };
        match self.store.state().into_iter().find(|p| &p.name_any() == name) {
            Some(p) => Rules::Present(p),
            None => Rules::Missing(name.clone()),
        }
    }

    /// Whether the cache has its first list (always, without a platform): before that, a missing platform
    /// cannot be told from one not read yet.
    pub fn ready(&self) -> bool {
        use futures::FutureExt;
        self.name.is_none() || self.store.wait_until_ready().now_or_never().is_some()
    }

    /// A stream of the platform each time it changes, for a controller's `watches_stream`. Subscribe
    /// before [`Platform::run`] starts.
    pub fn subscribe(&self) -> impl futures::Stream<Item = Result<VisioPlatform, watcher::Error>> + Send + 'static {
        self.changed.subscribe()
    }

    /// Watches the one VisioPlatform into the cache and tells the subscribers. Runs until the operator
    /// stops (at once without a platform).
    pub async fn run(self: Arc<Self>, client: Client) {
        let (Some(name), Some(writer)) =
            (self.name.clone(), self.writer.lock().unwrap_or_else(|p| p.into_inner()).take())
        else {
            return;
        };
        let api: Api<VisioPlatform> = Api::all(client);
        let config = watch_config().fields(&format!("metadata.name={name}"));
        let mut events =
            watcher(api, config).backoff(WatchBackoff::default()).reflect(writer).touched_objects().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(p) => {
                    tracing::info!(platform = %name, generation = p.metadata.generation, "platform rules changed: checking every tenant again");
                    self.changed.send(std::slice::from_ref(&p));
                }
                Err(e) => {
                    tracing::warn!(platform = %name, error = %e, "VisioPlatform watch error (it retries by itself)")
                }
            }
        }
    }
}
