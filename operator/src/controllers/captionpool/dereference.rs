//! Step 1: what the pool refers to: its VisioCluster (same namespace), the operator's Secret rights in
//! the namespace (the cluster's binding), the LiveKit keys Secret the transcribers read, and the pool's
//! API key (generated once, kept in `<pool>-caption-key`).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use rand::distr::{Alphanumeric, SampleString};

use super::validate::reference_problem;
use crate::api::captionpool::CaptionPool;
use crate::api::VisioCluster;
use crate::builders::captions::{key_secret_name, API_KEY};
use crate::runtime::error::{Error, Result};
use crate::runtime::{apply, Context};

/// What the pool refers to, as read.
#[derive(Debug)]
pub struct Dereferenced {
    /// The pool's API key (the backends' and the transcribers').
    pub api_key: String,
    /// The Secret holding the cluster's LiveKit API key and secret.
    pub livekit_keys_secret: String,
}

/// How dereferencing ended.
#[derive(Debug)]
pub enum Outcome {
    Ready(Dereferenced),
    /// A reference that cannot be honoured (reason, message naming the field): reported, then waited on.
    Problem {
        reason: &'static str,
        message: String,
    },
    /// Not yet: look again after this long.
    Wait(Duration),
}

pub async fn dereference(cp: &CaptionPool, ctx: &Context) -> Result<Outcome> {
    let ns = cp.namespace().unwrap_or_default();
    let clusters: Api<VisioCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let vc = clusters.get_opt(&cp.spec.cluster_ref.name).await?;
    if let Some((reason, message)) = reference_problem(cp, vc.is_some()) {
        // The VisioCluster watch brings the pool back when the cluster appears.
        return Ok(Outcome::Problem { reason, message });
    }
    let vc =
        vc.ok_or_else(|| Error::Reference { reason: "cluster_missing", message: "VisioCluster vanished".into() })?;
    // Our Secret rights in this namespace come from the cluster's binding, which the VisioCluster's
    // reconcile writes. A pool applied with its cluster would race that write into a 403 (seen in
    // CI), so while the binding or the cluster is new, read no Secret until the namespace's Secret
    // cache has listed, which proves the binding is in force at the apiserver's authorizer, not only
    // written. Past 30 s the reads below go ahead, and a 403 then (the ClusterRole missing) is
    // logged and retried with backoff, not waited on in silence.
    if let (Some(me), false) = (&ctx.operator, ctx.secrets.is_ready(&ns)) {
        let binding = crate::builders::tenant::operator_secrets_binding(&vc, me)?;
        let cached = ctx.stores.role_bindings.get(&ObjectRef::from_obj(&binding));
        if cached.is_some() {
            ctx.secrets.watch(&ns);
        }
        let since = cached.as_ref().and_then(|b| b.creation_timestamp()).or_else(|| vc.creation_timestamp());
        if since.is_none_or(|t| Timestamp::now().as_second() - t.0.as_second() < 30) {
            return Ok(Outcome::Wait(Duration::from_millis(500)));
        }
    }
    let livekit_keys_secret = match &vc.spec.keys {
        Some(k) => k.secret_name.clone(),
        None => crate::builders::labels::credentials_secret_name(&vc.name_any()),
    };
    Ok(Outcome::Ready(Dereferenced { api_key: api_key(cp, ctx).await?, livekit_keys_secret }))
}

/// The pool's backend API key: read from the owned `<pool>-caption-key` Secret, or generated the first time.
/// Asks the API before generating, so that a lagging cache can never make a second key (and roll the pods).
async fn api_key(cp: &CaptionPool, ctx: &Context) -> Result<String> {
    let owned = apply::owned_secret(ctx, cp, &key_secret_name(&cp.name_any())).await?;
    let existing = owned
        .as_ref()
        .and_then(|s| s.data.as_ref()?.get(API_KEY).and_then(|v| String::from_utf8(v.0.clone()).ok()))
        .filter(|k| !k.is_empty());
    Ok(existing.unwrap_or_else(|| format!("stt_{}", Alphanumeric.sample_string(&mut rand::rng(), 40))))
}
