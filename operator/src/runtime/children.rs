//! The one table of child kinds.
//!
//! Every kind the operator applies as a child is one row of [`child_kinds!`] below: the row gives its
//! cache in [`Stores`], its watch (labelled as ours, trimmed, feeding the cache and triggering the owner's
//! reconcile), its place in the caches' readiness, how a [`ChildSet`] ensures it and how orphans of
//! that kind are pruned. Adding a kind is one row here and one builder. Secrets are a kind apart (one
//! watch per tenant namespace, see `secrets`), and so are pods, which the fleet planner creates and
//! deletes instead of applying.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{LimitRange, Node, Pod, ResourceQuota, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::error::Result;
use super::watch::child_stream;
use super::{apply, secrets, Context};
use crate::api::RetentionPolicy;

type Watch<K> = BoxStream<'static, std::result::Result<K, watcher::Error>>;

macro_rules! child_kinds {
    ($( $(#[$doc:meta])* $variant:ident => $field:ident ),* $(,)?) => {
        /// Caches of the children (one row of the table each), of pods, and of what the controllers read
        /// besides: every RetentionPolicy and every Node.
        #[derive(Clone)]
        pub struct Stores {
            /// The fleets' pods (SFU pods; caption pods have a cache of their own, see `captionpool`).
            pub pods: Store<Pod>,
            $( $(#[$doc])* pub $field: Store<$variant>, )*
            /// Every RetentionPolicy, for the `RetentionPolicyMissing` governance condition.
            pub retention_policies: Store<RetentionPolicy>,
            /// Every Node, trimmed to its cordon (`nodes`). Not part of readiness: without the rights to
            /// list Nodes it stays empty, and no node reads as cordoned.
            pub nodes: Store<Node>,
        }

        /// The writing ends of [`Stores`], for the watches that fill them.
        pub struct Writers {
            pods: Writer<Pod>,
            $( $field: Writer<$variant>, )*
            /// Filled by the RetentionPolicy watch (`controllers`).
            pub retention_policies: Writer<RetentionPolicy>,
            /// Filled by `nodes::CordonChanges`.
            pub nodes: Writer<Node>,
        }

        #[cfg(test)]
        impl Writers {
            /// Marks every cache as holding its first full list.
            pub fn ready(&mut self) {
                self.pods.apply_watcher_event(&watcher::Event::Init);
                self.pods.apply_watcher_event(&watcher::Event::InitDone);
                $(
                    self.$field.apply_watcher_event(&watcher::Event::Init);
                    self.$field.apply_watcher_event(&watcher::Event::InitDone);
                )*
                self.retention_policies.apply_watcher_event(&watcher::Event::Init);
                self.retention_policies.apply_watcher_event(&watcher::Event::InitDone);
                self.nodes.apply_watcher_event(&watcher::Event::Init);
                self.nodes.apply_watcher_event(&watcher::Event::InitDone);
            }

            /// Puts a child into its cache, as a watch would (a Secret goes nowhere: its caches are
            /// per namespace).
            pub fn cache(&mut self, child: Child) {
                match child {
                    Child::Secret(_) => {}
                    $( Child::$variant(o) => self.$field.apply_watcher_event(&watcher::Event::Apply(o)), )*
                }
            }

            /// Puts a pod into the pods' cache.
            pub fn cache_pod(&mut self, pod: Pod) {
                self.pods.apply_watcher_event(&watcher::Event::Apply(pod));
            }
        }

        /// Empty caches and their writers.
        pub fn stores() -> (Stores, Writers) {
            let (pods, pods_w) = reflector::store();
            $( let $field = reflector::store(); )*
            let (retention_policies, retention_policies_w) = reflector::store();
            let (nodes, nodes_w) = reflector::store();
            (
                Stores { pods, $( $field: $field.0.clone(), )* retention_policies, nodes },
                Writers { pods: pods_w, $( $field: $field.1, )* retention_policies: retention_policies_w, nodes: nodes_w },
            )
        }

        impl Stores {
            /// Whether every child cache (pods included) holds its first full list.
            pub fn children_ready(&self) -> bool {
                self.pods.wait_until_ready().now_or_never().is_some()
                    $( && self.$field.wait_until_ready().now_or_never().is_some() )*
            }
        }

        /// The watches of the pods and of every child kind, each filling its cache; once handed to
        /// [`ChildWatches::owned_by`], each also triggers the reconcile of the objects' owner.
        pub struct ChildWatches {
            pods: Watch<Pod>,
            $( $field: Watch<$variant>, )*
        }

        impl ChildWatches {
            /// One watch per kind, of the objects labelled as ours.
            pub fn new(client: &Client, w: Writers) -> (Self, Writer<RetentionPolicy>, Writer<Node>) {
                let watches = ChildWatches {
                    pods: child_stream(client, w.pods).boxed(),
                    $( $field: child_stream(client, w.$field).boxed(), )*
                };
                (watches, w.retention_policies, w.nodes)
            }

            /// `controller`, reconciling an owner whenever one of its children changes.
            pub fn owned_by<K>(self, controller: Controller<K>) -> Controller<K>
            where
                K: Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
            {
                controller.owns_stream(self.pods) $( .owns_stream(self.$field) )*
            }
        }

        /// One desired child object, of one of the kinds in the table or a Secret. A set holds a handful
        /// per reconcile: boxing the larger kinds would buy nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Clone, Debug)]
        pub enum Child {
            Secret(Secret),
            $( $variant($variant), )*
        }

        impl From<Secret> for Child {
            fn from(o: Secret) -> Self {
                Child::Secret(o)
            }
        }
        $(
            impl From<$variant> for Child {
                fn from(o: $variant) -> Self {
                    Child::$variant(o)
                }
            }
        )*

        impl Child {
            /// The child of kind `kind` in `value` (an object as the API returns it).
            #[cfg(test)]
            pub fn from_json(kind: &str, value: serde_json::Value) -> Option<Child> {
                match kind {
                    "Secret" => serde_json::from_value(value).ok().map(Child::Secret),
                    $( stringify!($variant) => serde_json::from_value(value).ok().map(Child::$variant), )*
                    _ => None,
                }
            }

            fn kind(&self) -> &'static str {
                match self {
                    Child::Secret(_) => "Secret",
                    $( Child::$variant(_) => stringify!($variant), )*
                }
            }

            fn name(&self) -> String {
                match self {
                    Child::Secret(o) => o.name_any(),
                    $( Child::$variant(o) => o.name_any(), )*
                }
            }

            /// Applies the child unless the cache shows it as desired (see `apply::ensure`).
            async fn ensure(self, ctx: &Context) -> Result<bool> {
                match self {
                    Child::Secret(o) => secrets::ensure_secret(ctx, o).await,
                    $( Child::$variant(o) => apply::ensure(ctx, &ctx.stores.$field, o).await, )*
                }
            }
        }

        /// Deletes the children of `owner` (by labels and owner reference) that `keep` does not name,
        /// kind by kind. Secrets only once the namespace's cache is full: an absent Secret is not an
        /// orphan.
        async fn prune<K: Resource>(ctx: &Context, owner: &K, keep: &BTreeMap<&'static str, BTreeSet<String>>) -> Result<usize> {
            let ns = owner.namespace().unwrap_or_default();
            let (instance, uid) = (owner.name_any(), owner.uid().unwrap_or_default());
            let none = BTreeSet::new();
            let kept = |kind: &str| keep.get(kind).unwrap_or(&none);
            let mut pruned = 0;
            if ctx.secrets.is_ready(&ns) {
                pruned += apply::delete_orphans(ctx, ctx.secrets.store(), &ns, &instance, &uid, kept("Secret")).await?;
            }
            $( pruned += apply::delete_orphans(ctx, &ctx.stores.$field, &ns, &instance, &uid, kept(stringify!($variant))).await?; )*
            Ok(pruned)
        }
    };
}

child_kinds! {
    /// The tenants' LimitRanges (`spec.tenant.limits`).
    LimitRange => limit_ranges,
    /// The tenants' ResourceQuotas (`spec.tenant.quota`).
    ResourceQuota => resource_quotas,
    ServiceAccount => service_accounts,
    Role => roles,
    RoleBinding => role_bindings,
    Deployment => deployments,
    Service => services,
    PodDisruptionBudget => pdbs,
    NetworkPolicy => network_policies,
    Ingress => ingresses,
}

/// Every child one owner wants, in apply order. [`ChildSet::apply`] ensures each, then deletes the
/// owner's children that the set does not hold: nothing is listed by hand per kind.
#[derive(Debug, Default)]
pub struct ChildSet {
    children: Vec<Child>,
}

impl ChildSet {
    /// Adds a child (applied after those added before it).
    pub fn add(&mut self, child: impl Into<Child>) -> &mut Self {
        self.children.push(child.into());
        self
    }

    /// Adds every child of `children`, in order.
    pub fn extend<C: Into<Child>>(&mut self, children: impl IntoIterator<Item = C>) -> &mut Self {
        self.children.extend(children.into_iter().map(Into::into));
        self
    }

    /// The kind and name of each child, in apply order.
    pub fn names(&self) -> Vec<(&'static str, String)> {
        self.children.iter().map(|c| (c.kind(), c.name())).collect()
    }

    /// Ensures every child in order, then prunes `owner`'s children the set does not hold, and says in
    /// an Event how many were pruned.
    pub async fn apply<K: Resource<DynamicType = ()>>(self, ctx: &Context, owner: &K) -> Result<()> {
        let mut keep: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
        for (kind, name) in self.names() {
            keep.entry(kind).or_default().insert(name);
        }
        for child in self.children {
            child.ensure(ctx).await?;
        }
        let pruned = prune(ctx, owner, &keep).await?;
        if pruned > 0 {
            let note = format!("deleted {pruned} objects the spec no longer asks for");
            ctx.event(owner, kube::runtime::events::EventType::Normal, "ChildrenPruned", "Prune", note).await;
        }
        Ok(())
    }
}

/// Waits (30 s at most) until every child cache holds its first full list. Until then a cache
/// reads empty: the planner, seeing no pod, would create a whole fleet next to the running one (the
/// pod names only stop the creates whose name is taken), and every child would look missing.
///
/// The stores are polled, not awaited: a store's readiness signal keeps a single waker, so a
/// reconcile awaiting it alongside the operator's readiness probe could sleep through it.
pub async fn caches_ready(ctx: &Context) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if ctx.stores.children_ready() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::Resource as _;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta { name: Some(name.into()), namespace: Some("ns".into()), ..Default::default() }
    }

    #[test]
    fn a_child_set_keeps_its_order_and_names_each_kind() {
        let mut set = ChildSet::default();
        set.add(LimitRange { metadata: meta("limits"), ..Default::default() })
            .add(Secret { metadata: meta("config"), ..Default::default() })
            .extend([
                Service { metadata: meta("a"), ..Default::default() },
                Service { metadata: meta("b"), ..Default::default() },
            ]);
        assert_eq!(
            set.names(),
            vec![
                ("LimitRange", "limits".to_string()),
                ("Secret", "config".to_string()),
                ("Service", "a".to_string()),
                ("Service", "b".to_string()),
            ]
        );
    }

    #[test]
    fn each_kind_is_named_as_the_api_names_it() {
        // Prune keys by these names: they must be the Kubernetes kinds.
        let all: Vec<Child> = vec![
            Secret::default().into(),
            LimitRange::default().into(),
            ResourceQuota::default().into(),
            ServiceAccount::default().into(),
            Role::default().into(),
            RoleBinding::default().into(),
            Deployment::default().into(),
            Service::default().into(),
            PodDisruptionBudget::default().into(),
            NetworkPolicy::default().into(),
            Ingress::default().into(),
        ];
        for c in &all {
            let kind = match c {
                Child::Secret(_) => Secret::KIND,
                Child::LimitRange(_) => LimitRange::KIND,
                Child::ResourceQuota(_) => ResourceQuota::KIND,
                Child::ServiceAccount(_) => ServiceAccount::KIND,
                Child::Role(_) => Role::KIND,
                Child::RoleBinding(_) => RoleBinding::KIND,
                Child::Deployment(_) => Deployment::KIND,
                Child::Service(_) => Service::KIND,
                Child::PodDisruptionBudget(_) => PodDisruptionBudget::KIND,
                Child::NetworkPolicy(_) => NetworkPolicy::KIND,
                Child::Ingress(_) => Ingress::KIND,
            };
            assert_eq!(c.kind(), kind);
        }
    }
}
