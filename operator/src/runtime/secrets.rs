//! Secrets only where the operator owns them.
//!
//! The operator holds no Secret rights of its own (its ClusterRole has none). In each namespace with a
//! VisioCluster or a RetentionPolicy it binds itself, by a RoleBinding that the custom resource owns, to
//! the `visio-operator-tenant-secrets` ClusterRole: the binding is in that namespace, so the rights are
//! too, and they go when the last owner goes (garbage collection). A namespace without our resources
//! is out of reach (tested with the real authorizer in `e2e/tests/chart.rs`).
//!
//! A cluster-wide Secret watch is then impossible, so the cache of our Secrets is one namespaced watch
//! per tenant namespace, all feeding one [`Store`]: [`SecretCaches::watch`] starts the namespace's watch
//! (idempotent), a re-list replaces only that namespace's entries, and the watch stops by itself when
//! the apiserver answers 403 (the binding went with the last owner) and is started again by the next
//! reconcile that needs it. Touched Secrets are passed to the controllers' trigger streams, so deleting
//! or editing a generated Secret is repaired at once.
//!
//! Until a namespace's first list is in, [`ensure_secret`] reads the live object instead of the
//! cache: a read, never a needless write, so an operator restart still writes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::Subject;
use kube::runtime::reflector::{store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};

use super::error::Result;
use super::{watch_config, Context, WatchBackoff};
use crate::builders::labels::{MANAGED_BY, MANAGED_BY_LABEL};

/// Namespace -> whether its first list is in.
type Watched = HashMap<String, bool>;

/// The per-namespace watches of our Secrets and the one cache they fill.
pub struct SecretCaches {
    client: Client,
    writer: Mutex<Writer<Secret>>,
    store: Store<Secret>,
    watched: Mutex<Watched>,
    touched: super::fanout::Fanout<Secret>,
}

impl SecretCaches {
    pub fn new(client: Client) -> Arc<Self> {
        let mut writer = Writer::<Secret>::default();
        // The shared store is ready from the start; readiness is per namespace (`is_ready`).
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let store = writer.as_reader();
        Arc::new(SecretCaches {
            client,
            writer: Mutex::new(writer),
            store,
            watched: Mutex::new(HashMap::new()),
            touched: Default::default(),
        })
    }

    /// The cache of every watched namespace.
    pub fn store(&self) -> &Store<Secret> {
        &self.store
    }

    /// A stream of every Secret a watch touches (for a controller's `owns_stream`).
    pub fn subscribe(
        &self,
    ) -> impl futures::Stream<Item = std::result::Result<Secret, watcher::Error>> + Send + 'static {
        self.touched.subscribe()
    }

    /// Whether the cache holds `ns` in full.
    pub fn is_ready(&self, ns: &str) -> bool {
        lock(&self.watched).get(ns).copied().unwrap_or(false)
    }

    /// Starts the watch of our Secrets in `ns` unless it runs.
    pub fn watch(self: &Arc<Self>, ns: &str) {
        {
            let mut watched = lock(&self.watched);
            if watched.contains_key(ns) {
                return;
            }
            watched.insert(ns.to_string(), false);
        }
        let this = self.clone();
        let ns = ns.to_string();
        tokio::spawn(async move { this.run(ns).await });
    }

    async fn run(self: Arc<Self>, ns: String) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let cfg = watch_config().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
        let mut events = watcher(api, cfg).backoff(WatchBackoff::default()).boxed();
        let mut listed: HashSet<String> = HashSet::new();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) if forbidden(&e) => {
                    tracing::info!(%ns, "no Secret rights in this namespace (any more): its Secret watch stops");
                    break;
                }
                Err(e) => {
                    tracing::debug!(%ns, error = %e, "Secret watch error (it retries by itself)");
                    continue;
                }
            };
            self.apply(&ns, event, &mut listed);
        }
        // Forget the namespace: its entries go, then the next `watch` may start afresh.
        let gone: Vec<_> = self.store.state().into_iter().filter(|s| s.namespace().as_deref() == Some(&ns)).collect();
        {
            let mut w = lock(&self.writer);
            for s in gone {
                w.apply_watcher_event(&watcher::Event::Delete((*s).clone()));
            }
        }
        lock(&self.watched).remove(&ns);
    }

    /// Applies one event of `ns`'s watch to the shared store: a re-list replaces that namespace only.
    fn apply(&self, ns: &str, event: watcher::Event<Secret>, listed: &mut HashSet<String>) {
        let mut touched = Vec::new();
        {
            let mut w = lock(&self.writer);
            match event {
                watcher::Event::Init => listed.clear(),
                watcher::Event::InitApply(mut s) | watcher::Event::Apply(mut s) => {
                    s.managed_fields_mut().clear();
                    listed.insert(s.name_any());
                    w.apply_watcher_event(&watcher::Event::Apply(s.clone()));
                    touched.push(s);
                }
                watcher::Event::Delete(s) => {
                    listed.remove(&s.name_any());
                    w.apply_watcher_event(&watcher::Event::Delete(s.clone()));
                    touched.push(s);
                }
                watcher::Event::InitDone => {
                    let stale: Vec<_> = self
                        .store
                        .state()
                        .into_iter()
                        .filter(|s| s.namespace().as_deref() == Some(ns) && !listed.contains(&s.name_any()))
                        .collect();
                    for s in stale {
                        w.apply_watcher_event(&watcher::Event::Delete((*s).clone()));
                        touched.push((*s).clone());
                    }
                    if let Some(r) = lock(&self.watched).get_mut(ns) {
                        *r = true;
                    }
                }
            }
        }
        if !touched.is_empty() {
            self.touched.send(&touched);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a watch failed because RBAC refuses it (the Node watch uses it too).
pub(super) fn forbidden(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 403,
        watcher::Error::WatchError(s) => s.code == 403,
        _ => false,
    }
}

/// Server-side applies a Secret unless it is already as desired: from the cache when the namespace is
/// listed, from the live object otherwise (a read instead of a write). Returns whether it wrote.
pub async fn ensure_secret(ctx: &Context, desired: Secret) -> Result<bool> {
    let ns = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    ctx.secrets.watch(&ns);
    let current = if ctx.secrets.is_ready(&ns) {
        ctx.secrets.store().get(&ObjectRef::new(&name).within(&ns))
    } else {
        Api::<Secret>::namespaced(ctx.client.clone(), &ns).get_opt(&name).await?.map(Arc::new)
    };
    super::apply::ensure_over(ctx, current.as_deref(), desired).await
}

/// Applies the operator's Secret binding of a namespace. Returns `false` when the binding was just
/// written and the apiserver's authorizer (which learns of bindings through its own watch) does not
/// apply it yet: the caller then looks again in a second instead of reading into a 403. One access
/// review at most, never a wait inside the reconcile (polling here stalled the 300-tenant bench).
pub async fn ensure_rights(ctx: &Context, binding: k8s_openapi::api::rbac::v1::RoleBinding) -> Result<bool> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let ns = binding.namespace().unwrap_or_default();
    if !super::apply::ensure(ctx, &ctx.stores.role_bindings, binding).await? {
        return Ok(true);
    }
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.clone()),
                verb: Some("list".into()),
                resource: Some("secrets".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(ctx.client.clone());
    let answer = api.create(&Default::default(), &review).await?;
    let effective = answer.status.is_some_and(|s| s.allowed);
    if !effective {
        tracing::debug!(%ns, "Secret binding written, not effective yet: looking again in 1 s");
    }
    Ok(effective)
}

/// Who the operator is to the apiserver, as an RBAC subject (asked once at start with a
/// SelfSubjectReview). A service account in a cluster; the kubeconfig's user when run from outside.
pub async fn whoami(client: &Client) -> anyhow::Result<Subject> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api.create(&Default::default(), &SelfSubjectReview::default()).await?;
    let user = review.status.and_then(|s| s.user_info).and_then(|u| u.username).unwrap_or_default();
    subject_of(&user).ok_or_else(|| anyhow::anyhow!("the apiserver did not say who this operator is"))
}

/// The RBAC subject for an authenticated user name (pure).
pub fn subject_of(user: &str) -> Option<Subject> {
    if user.is_empty() {
        return None;
    }
    Some(match user.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) {
        Some((ns, name)) => {
            Subject { kind: "ServiceAccount".into(), name: name.into(), namespace: Some(ns.into()), api_group: None }
        }
        None => Subject {
            kind: "User".into(),
            name: user.into(),
            namespace: None,
            api_group: Some("rbac.authorization.k8s.io".into()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_accounts_and_users_become_subjects() {
        let sa = subject_of("system:serviceaccount:visio-system:visio-operator").unwrap();
        assert_eq!(
            (sa.kind.as_str(), sa.name.as_str(), sa.namespace.as_deref()),
            ("ServiceAccount", "visio-operator", Some("visio-system"))
        );
        let user = subject_of("kubernetes-admin").unwrap();
        assert_eq!(
            (user.kind.as_str(), user.name.as_str(), user.api_group.as_deref()),
            ("User", "kubernetes-admin", Some("rbac.authorization.k8s.io"))
        );
        assert!(subject_of("").is_none());
        // A malformed service account name is kept as a user name, never split wrongly.
        assert_eq!(subject_of("system:serviceaccount:broken").unwrap().kind, "User");
    }
}
