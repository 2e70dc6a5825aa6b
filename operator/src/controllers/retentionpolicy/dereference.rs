//! Step 1: the operator's right to read Secrets in the policy's namespace (a RoleBinding the policy
//! owns), then the credentials Secret the policy names.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use crate::api::RetentionPolicy;
use crate::builders::meta::ChildMeta;
use crate::builders::BuildError;
use crate::runtime::error::Result;
use crate::runtime::{secrets, Context};

/// The credentials Secret as read (`Some(None)`: it does not exist); `None` while the operator's
/// Secret rights, just bound, are not in effect yet.
pub async fn dereference(rp: &RetentionPolicy, ctx: &Context) -> Result<Option<Option<Secret>>> {
    if let Some(me) = &ctx.operator {
        if !secrets::ensure_rights(ctx, secrets_binding(rp, me)?).await? {
            return Ok(None);
        }
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &rp.namespace().unwrap_or_default());
    Ok(Some(secrets.get_opt(&rp.spec.target.credentials_secret).await?))
}

/// The operator's Secret binding in the policy's namespace, owned by the policy.
pub fn secrets_binding(
    rp: &RetentionPolicy,
    operator: &k8s_openapi::api::rbac::v1::Subject,
) -> Result<k8s_openapi::api::rbac::v1::RoleBinding, BuildError> {
    let meta = ChildMeta::of(rp)?.meta(format!("{}-retention-secrets", rp.name_any()), "visio-retention", "retention");
    Ok(crate::builders::tenant::secrets_binding(meta, operator))
}
