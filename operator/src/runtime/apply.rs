//! Writing children: server-side apply that skips objects already as desired, and
//! deletion of labelled children the spec no longer asks for.
//!
//! "A reconcile that changes nothing writes nothing": every applied child carries the hash
//! of what was applied (`visio.io/applied-hash`); when the cached object carries the same
//! hash, no request is sent. A change to the spec changes the hash and the child is applied
//! again. A hand edit of a Secret's data or of a Role's or RoleBinding's rules and subjects is
//! applied again at the next reconcile and counted (`drift`); of the other kinds, which tenant
//! admins cannot write, at the next spec change. Both keep the idle API load at zero.

use std::collections::BTreeSet;
use std::fmt::Debug;

use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::drift::{self, Content};
use super::error::{Error, Result};
use super::Context;
use crate::builders::labels::FIELD_MANAGER;

/// A namespaced object as the API reads and writes it.
pub trait Namespaced:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug
{
}

impl<K> Namespaced for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug
{
}

/// Annotation with the hash of the applied object.
pub const APPLIED_HASH: &str = "visio.io/applied-hash";

/// Hash of an object as serialised (before the hash annotation is added).
pub fn content_hash<K: Serialize>(obj: &K) -> Result<String> {
    let bytes = serde_json::to_vec(obj)?;
    Ok(hex::encode(&Sha256::digest(&bytes)[..8]))
}

/// Adds the applied-hash annotation and returns the hash.
pub fn stamp<K: Resource + Serialize>(obj: &mut K) -> Result<String> {
    obj.annotations_mut().remove(APPLIED_HASH);
    let hash = content_hash(obj)?;
    obj.annotations_mut().insert(APPLIED_HASH.into(), hash.clone());
    Ok(hash)
}

/// Server-side applies `desired` unless the cache shows it is already applied. Returns whether it wrote.
pub async fn ensure<K>(ctx: &Context, store: &Store<K>, desired: K) -> Result<bool>
where
    K: Namespaced + Serialize + Content,
{
    let ns = desired.meta().namespace.clone().unwrap_or_default();
    let current = store.get(&ObjectRef::<K>::new(&desired.name_any()).within(&ns));
    ensure_over(ctx, current.as_deref(), desired).await
}

/// Server-side applies `desired` unless `current` (the object as cached, or as read; read from the API
/// when `None`) already carries its hash, or we applied the same hash while `current` was at the version
/// it shows (see `recent`). An existing object this owner does not own is refused (`conflict`), never
/// taken over. Returns whether it wrote.
pub async fn ensure_over<K>(ctx: &Context, current: Option<&K>, mut desired: K) -> Result<bool>
where
    K: Namespaced + Serialize + Content,
{
    let ns = desired.meta().namespace.clone().unwrap_or_default();
    let name = desired.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let hash = stamp(&mut desired)?;
    let key = format!("{}/{ns}/{name}", K::kind(&()));
    // Not in the cache: not created yet, or not cached (caches hold the operator's own objects only).
    // Look before writing, so that an object someone else made under this name is never taken over
    // (a list by name: the operator's RBAC grants list, not get, on most kinds) — unless this very
    // write is ours and the cache has not caught up with it yet.
    let fetched;
    let current = match current {
        Some(c) => Some(c),
        None if ctx.recent.in_flight(&key, &hash, None) => return Ok(false),
        None => {
            let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
            fetched = api.list(&by_name).await?.items.into_iter().next();
            fetched.as_ref()
        }
    };
    if let Some(message) = current.and_then(|c| adoption_conflict(c, &desired)) {
        return Err(Error::Reference { reason: "conflict", message });
    }
    let applied = current.is_some_and(|c| c.annotations().get(APPLIED_HASH) == Some(&hash));
    // Applied, but its content edited since (a Secret's data, a Role's rules): applied again (`drift`).
    let edited = applied && current.is_some_and(|c| drift::edited(c, &desired));
    if applied && !edited {
        ctx.recent.settled(&key);
        return Ok(false);
    }
    let version = current.and_then(|c| c.meta().resource_version.clone());
    if ctx.recent.in_flight(&key, &hash, version.as_deref()) {
        return Ok(false);
    }
    if edited {
        tracing::warn!(kind = %K::kind(&()), %ns, %name, "an object of the operator's was edited by hand: applying it again");
        ctx.metrics.owned_object_repairs.with_label_values(&[K::kind(&()).as_ref()]).inc();
    }
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await?;
    ctx.recent.wrote(&key, &hash, version.as_deref());
    ctx.metrics.child_writes.with_label_values(&[K::kind(&()).as_ref(), "apply"]).inc();
    tracing::debug!(kind = %K::kind(&()), %ns, %name, "applied");
    Ok(true)
}

/// Why `current` must not be taken over by an apply of `desired`: it exists under the child's name but
/// is not owned by the resource that owns `desired` (a tenant's own object, or one made to be adopted
/// and then deleted with the VisioCluster). A forced server-side apply would take its fields and the
/// owner's deletion would take the object. `None` when `current` is ours, or `desired` names no owner.
pub fn adoption_conflict<K: Resource<DynamicType = ()>>(current: &K, desired: &K) -> Option<String> {
    let owners = |o: &K| -> BTreeSet<String> { o.owner_references().iter().map(|r| r.uid.clone()).collect() };
    let wanted = owners(desired);
    if wanted.is_empty() || !owners(current).is_disjoint(&wanted) {
        return None;
    }
    let owner = desired.owner_references().first().map(|r| format!("{} {}", r.kind, r.name)).unwrap_or_default();
    Some(format!(
        "{} {}/{} already exists and is not owned by {owner}: the operator does not take over an object it did \
         not create; delete or rename it",
        K::kind(&()),
        desired.meta().namespace.clone().unwrap_or_default(),
        desired.name_any()
    ))
}

/// Creates an object (used for pods, whose names the fleet planner chooses). An object that
/// already exists (a cache that lags behind) is not an error.
pub async fn create<K>(ctx: &Context, obj: &K) -> Result<bool>
where
    K: Namespaced + Serialize,
{
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    ctx.metrics.child_writes.with_label_values(&[K::kind(&()).as_ref(), "create"]).inc();
    match api.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether the apiserver refused a create because of the namespace's ResourceQuota or LimitRange (their
/// admission plugins answer 403 Forbidden with these messages), as opposed to RBAC refusing the operator.
pub fn refused_by_quota_or_limits(s: &kube::core::Status) -> bool {
    s.code == 403
        && ["exceeded quota:", "failed quota:", "must specify", "usage per Container", "usage per Pod"]
            .iter()
            .any(|m| s.message.contains(m))
}

/// Deletes one object, guarded by its UID so a newer object of the same name is never hit, with an
/// optional grace period override. A missing object is not an error.
pub async fn delete<K>(ctx: &Context, obj: &K, grace_period_seconds: Option<u32>) -> Result<bool>
where
    K: Namespaced,
{
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: obj.meta().uid.clone(), resource_version: None }),
        grace_period_seconds,
        ..Default::default()
    };
    ctx.metrics.child_writes.with_label_values(&[K::kind(&()).as_ref(), "delete"]).inc();
    match api.delete(&obj.name_any(), &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the children of `instance` in `ns` (found by the standard labels in the cache) whose
/// names are not in `keep`. Only objects this operator labelled and that an owner reference ties to
/// `owner_uid` are candidates, so a tenant's own objects are never touched.
pub async fn delete_orphans<K>(
    ctx: &Context,
    store: &Store<K>,
    ns: &str,
    instance: &str,
    owner_uid: &str,
    keep: &BTreeSet<String>,
) -> Result<usize>
where
    K: Namespaced,
{
    let orphans: Vec<_> = store
        .state()
        .into_iter()
        .filter(|o| o.namespace().as_deref() == Some(ns))
        .filter(|o| is_child_of(o.as_ref(), instance, owner_uid))
        .filter(|o| !keep.contains(&o.name_any()))
        .collect();
    let mut deleted = 0;
    for o in orphans {
        if delete(ctx, o.as_ref(), None).await? {
            tracing::info!(kind = %K::kind(&()), %ns, name = %o.name_any(), "deleted child the spec no longer asks for");
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// The Secret `name` that `owner` owns in its namespace (the cache first, then the API: a cache that
/// lags behind our own first apply must never make a caller generate a second set of credentials and
/// roll the pods onto it). `None` if it does not exist or is not ours.
pub async fn owned_secret<K: Resource>(
    ctx: &Context,
    owner: &K,
    name: &str,
) -> Result<Option<std::sync::Arc<k8s_openapi::api::core::v1::Secret>>> {
    use k8s_openapi::api::core::v1::Secret;
    let ns = owner.namespace().unwrap_or_default();
    let (instance, uid) = (owner.name_any(), owner.uid().unwrap_or_default());
    // Both lookups below are by namespace and name: what is left to check is that the Secret is ours.
    let ours = |s: &Secret| is_child_of(s, &instance, &uid);
    // By key, not by a scan of every cached Secret (thousands at ministry scale).
    if let Some(s) = ctx.secrets.store().get(&ObjectRef::new(name).within(&ns)).filter(|s| ours(s)) {
        return Ok(Some(s));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    Ok(api.get_opt(name).await?.filter(|s| ours(s)).map(std::sync::Arc::new))
}

/// Whether `obj` is a child of the custom resource `instance` with UID `owner_uid`.
pub fn is_child_of<K: Resource>(obj: &K, instance: &str, owner_uid: &str) -> bool {
    use crate::builders::labels::{INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
    let labels = obj.meta().labels.as_ref();
    let labelled = labels.and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str) == Some(MANAGED_BY)
        && labels.and_then(|l| l.get(INSTANCE_LABEL)).map(String::as_str) == Some(instance);
    let owned = obj.meta().owner_references.as_ref().is_some_and(|refs| refs.iter().any(|r| r.uid == owner_uid));
    labelled && owned
}

/// The names of a set of objects.
pub fn names<'a, K: Resource + 'a>(objs: impl IntoIterator<Item = &'a K>) -> BTreeSet<String> {
    objs.into_iter().filter_map(|o| o.meta().name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn cm(data: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta { name: Some("a".into()), namespace: Some("ns".into()), ..Default::default() },
            data: Some([("k".to_string(), data.to_string())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn stamp_is_stable_and_follows_content() {
        let (mut a, mut b, mut c) = (cm("x"), cm("x"), cm("y"));
        let ha = stamp(&mut a).unwrap();
        assert_eq!(ha, stamp(&mut b).unwrap());
        assert_ne!(ha, stamp(&mut c).unwrap());
        // Stamping twice does not hash the previous stamp.
        assert_eq!(ha, stamp(&mut a).unwrap());
        assert_eq!(a.annotations().get(APPLIED_HASH), Some(&ha));
    }

    #[test]
    fn quota_refusals_are_told_from_rbac_refusals() {
        let err = |code: u16, message: &str| -> kube::core::Status {
            serde_json::from_value(
                serde_json::json!({"status": "Failure", "message": message, "reason": "Forbidden", "code": code}),
            )
            .unwrap()
        };
        for m in [
            r#"pods "visio-sfu-2" is forbidden: exceeded quota: visio-quota, requested: pods=1, used: pods=2, limited: pods=2"#,
            r#"pods "visio-sfu-0" is forbidden: failed quota: visio-quota: must specify limits.cpu for: livekit"#,
            r#"pods "visio-sfu-0" is forbidden: maximum memory usage per Container is 2Gi, but limit is 4Gi"#,
        ] {
            assert!(refused_by_quota_or_limits(&err(403, m)), "{m}");
        }
        let rbac = r#"pods is forbidden: User "system:serviceaccount:visio-system:visio-operator" cannot create resource "pods""#;
        assert!(!refused_by_quota_or_limits(&err(403, rbac)));
        assert!(!refused_by_quota_or_limits(&err(422, "exceeded quota: x")));
    }

    #[test]
    fn an_object_the_operator_did_not_create_is_never_adopted() {
        let owned_by = |uid: &str| {
            let mut o = cm("x");
            o.metadata.owner_references = Some(vec![OwnerReference {
                uid: uid.into(),
                kind: "VisioCluster".into(),
                name: "visio".into(),
                ..Default::default()
            }]);
            o
        };
        let desired = owned_by("uid-1");
        assert_eq!(adoption_conflict(&owned_by("uid-1"), &desired), None, "ours");
        let tenants = cm("planted by the tenant");
        let msg = adoption_conflict(&tenants, &desired).expect("not ours");
        assert!(msg.starts_with("ConfigMap ns/a already exists and is not owned by VisioCluster visio"), "{msg}");
        assert!(adoption_conflict(&owned_by("uid-2"), &desired).is_some(), "another owner's");
        assert_eq!(adoption_conflict(&tenants, &cm("x")), None, "a desired object without owner checks nothing");
    }

    #[test]
    fn children_need_both_labels_and_owner() {
        use crate::builders::labels::{INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
        let mut o = cm("x");
        assert!(!is_child_of(&o, "vc", "uid-1"));
        o.metadata.labels =
            Some([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()), (INSTANCE_LABEL.into(), "vc".into())].into());
        assert!(!is_child_of(&o, "vc", "uid-1"), "labels alone are not enough");
        o.metadata.owner_references = Some(vec![OwnerReference { uid: "uid-1".into(), ..Default::default() }]);
        assert!(is_child_of(&o, "vc", "uid-1"));
        assert!(!is_child_of(&o, "other", "uid-1"));
        assert!(!is_child_of(&o, "vc", "uid-2"));
    }
}
