//! Step 1: what the spec refers to. The operator's Secret rights in the namespace come first (every
//! read below is of a Secret), then the credentials: generated ones kept in `<vc>-credentials`, the
//! tenant's API keys (`spec.keys`) and an external Redis's password.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use rand::distr::{Alphanumeric, SampleString};

use crate::api::VisioCluster;
use crate::builders::stack::Credentials;
use crate::builders::tenant::operator_secrets_binding;
use crate::runtime::error::{Error, Result};
use crate::runtime::{apply, secrets, Context};

/// What the spec refers to, as read.
#[derive(Debug)]
pub struct Dereferenced {
    pub credentials: Credentials,
}

/// Reads what the spec refers to; `None` while the operator's Secret rights in the namespace, just
/// bound, are not in effect yet.
pub async fn dereference(vc: &VisioCluster, ctx: &Context) -> Result<Option<Dereferenced>> {
    if let Some(me) = &ctx.operator {
        if !secrets::ensure_rights(ctx, operator_secrets_binding(vc, me)?).await? {
            return Ok(None);
        }
    }
    ctx.secrets.watch(&vc.namespace().unwrap_or_default());
    Ok(Some(Dereferenced { credentials: credentials(vc, ctx).await? }))
}

/// Reads (or, the first time, generates) the tenant's credentials. Generated values live in the
/// owned `<name>-credentials` Secret, so they survive operator restarts and are never logged.
async fn credentials(vc: &VisioCluster, ctx: &Context) -> Result<Credentials> {
    let ns = vc.namespace().unwrap_or_default();
    let owned = apply::owned_secret(ctx, vc, &format!("{}-credentials", vc.name_any())).await?;
    let existing = |key: &str| -> Option<String> {
        owned.as_ref()?.data.as_ref()?.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let random = |n: usize| Alphanumeric.sample_string(&mut rand::rng(), n);
    let mut creds = Credentials {
        api_key: existing("apiKey").unwrap_or_else(|| format!("API{}", random(12))),
        api_secret: existing("apiSecret").unwrap_or_else(|| random(48)),
        redis_password: existing("redisPassword").unwrap_or_else(|| random(32)),
    };
    if let Some(keys) = &vc.spec.keys {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let secret = api.get_opt(&keys.secret_name).await?.ok_or_else(|| Error::Reference {
            reason: "keys_secret_missing",
            message: format!("spec.keys.secretName: Secret {:?} not found in namespace {ns}", keys.secret_name),
        })?;
        let field =
            |k: &str| secret.data.as_ref().and_then(|d| d.get(k)).and_then(|v| String::from_utf8(v.0.clone()).ok());
        match (field("apiKey"), field("apiSecret")) {
            (Some(k), Some(s)) if !k.is_empty() && s.len() >= 32 => {
                creds.api_key = k;
                creds.api_secret = s;
            }
            _ => {
                return Err(Error::Reference {
                    reason: "keys_secret_invalid",
                    message: format!(
                        "spec.keys.secretName: Secret {:?} must hold apiKey and apiSecret (at least 32 characters)",
                        keys.secret_name
                    ),
                })
            }
        }
    }
    if let Some(ext) = vc.spec.redis.external.as_ref() {
        if let Some(r) = &ext.password_secret {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            let secret = api.get_opt(&r.name).await?;
            let value = secret
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.get(&r.key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok());
            creds.redis_password = value.ok_or_else(|| Error::Reference {
                reason: "redis_secret_missing",
                message: format!(
                    "spec.redis.external.passwordSecret: key {:?} of Secret {:?} not found in namespace {ns}",
                    r.key, r.name
                ),
            })?;
        } else {
            creds.redis_password.clear();
        }
    }
    Ok(creds)
}
