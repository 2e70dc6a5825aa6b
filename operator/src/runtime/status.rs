//! Writing a custom resource's status: one field manager, the same status never twice while the cache
//! lags behind our write (`recent`), and count-only changes paced (`status_pace`).

use std::time::Duration;

use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::{error, key_of, recent, Context};

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

/// Implements [`Conditioned`] for a status type with `conditions` and `observed_generation` fields.
#[macro_export]
macro_rules! conditioned {
    ($status:ty) => {
        impl $crate::runtime::status::Conditioned for $status {
            fn conditions(&self) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
                &self.conditions
            }
            fn observed_generation(&self) -> Option<i64> {
                self.observed_generation
            }
            fn parts_mut(
                &mut self,
            ) -> (&mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>, &mut Option<i64>) {
                (&mut self.conditions, &mut self.observed_generation)
            }
        }
    };
}

/// A status with conditions and the generation they were decided for.
pub trait Conditioned {
    fn conditions(&self) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition];
    fn observed_generation(&self) -> Option<i64>;
    fn parts_mut(&mut self) -> (&mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>, &mut Option<i64>);
}

/// Merges the decided conditions into `status` for the object's `generation`; returns whether
/// anything changed.
pub fn set_conditions<S: Conditioned>(
    status: &mut S,
    generation: Option<i64>,
    decided: &[super::conditions::Decided],
) -> bool {
    let (conditions, observed) = status.parts_mut();
    super::conditions::set(conditions, observed, decided, generation)
}

/// Writes `status` as the status of `obj`, whose cached status is `old`; a change of counts only
/// waits out the object's pace (see `status_pace`), and then the wait is returned for the reconcile
/// to come back after it.
pub async fn write_paced<K, S>(ctx: &Context, obj: &K, old: Option<&S>, status: &S) -> error::Result<Option<Duration>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Conditioned + serde::Serialize,
{
    let old = old.map(|s| (s.conditions(), s.observed_generation()));
    let urgent = super::status_pace::urgent(old, (status.conditions(), status.observed_generation()));
    write_status(ctx, obj, status, urgent).await
}
