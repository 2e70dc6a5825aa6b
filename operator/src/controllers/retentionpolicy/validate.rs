//! Step 2: the policy's rules, interval and credentials, checked and parsed once into [`Validated`].
//! A problem is a (reason, message naming the field) for the status.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;

use kube::ResourceExt;

use crate::api::{RetentionPolicy, VisioPlatformSpec};
use crate::retention::decide::{self, Rule};
use crate::retention::sweep::S3Credentials;
use crate::runtime::platform::Rules;

/// Everything a sweep needs, parsed once.
#[derive(Debug)]
pub struct Validated {
    pub rules: Vec<Rule>,
    pub interval: Duration,
    pub credentials: S3Credentials,
    /// The policy's legal holds with the platform's, which it cannot lift.
    pub holds: crate::platform::Holds,
}

/// The policy and its credentials Secret (`None`: not found), validated.
pub fn validate(
    rp: &RetentionPolicy,
    secret: Option<&Secret>,
    platform: Option<&VisioPlatformSpec>,
) -> Result<Validated, (&'static str, String)> {
    let Valid { rules, interval } = check(rp, missing_credential_keys(secret))?;
    let credentials = secret.and_then(credentials_of).ok_or_else(|| {
        (
            "CredentialsInvalid",
            format!(
                "spec.target.credentialsSecret: Secret {:?} has keys that are not UTF-8 text",
                rp.spec.target.credentials_secret
            ),
        )
    })?;
    let holds = crate::platform::holds(platform, &rp.namespace().unwrap_or_default(), &rp.spec.legal_hold);
    Ok(Validated { rules, interval, credentials, holds })
}

/// The platform's rules, before anything is read: a policy outside them sweeps nothing (`PlatformRule`).
pub fn platform(rp: &RetentionPolicy, rules: &Rules) -> Result<Option<VisioPlatformSpec>, (&'static str, String)> {
    let spec = rules.spec().map_err(|v| ("PlatformMissing", v.to_string()))?;
    if let Some(p) = spec {
        crate::platform::check_policy(p, &rp.namespace().unwrap_or_default(), &rp.spec)
            .map_err(|v| ("PlatformRule", v.to_string()))?;
    }
    Ok(spec.cloned())
}

/// Which of the credentials Secret's required keys are missing (`None`: the Secret itself is missing).
pub fn missing_credential_keys(secret: Option<&Secret>) -> Option<Vec<&'static str>> {
    let data = secret?.data.clone().unwrap_or_default();
    Some(
        ["accessKeyId", "secretAccessKey"]
            .into_iter()
            .filter(|k| data.get(*k).is_none_or(|v| v.0.is_empty()))
            .collect(),
    )
}

/// The access keys in the Secret (`None` when a key is missing or not UTF-8).
pub(super) fn credentials_of(secret: &Secret) -> Option<S3Credentials> {
    let data = secret.data.as_ref()?;
    let get = |k: &str| data.get(k).and_then(|v| String::from_utf8(v.0.clone()).ok()).filter(|s| !s.is_empty());
    Some(S3Credentials {
        access_key_id: get("accessKeyId")?.trim().to_string(),
        secret_access_key: get("secretAccessKey")?.trim().to_string(),
    })
}

/// A valid policy, ready to sweep.
#[derive(Debug)]
pub struct Valid {
    pub rules: Vec<Rule>,
    pub interval: Duration,
}

/// Validates a policy (pure): its rules, interval and credentials Secret. The error is the
/// `(reason, message)` of the conditions, with the message naming the field.
pub fn check(
    rp: &RetentionPolicy,
    missing: Option<Vec<&'static str>>,
) -> std::result::Result<Valid, (&'static str, String)> {
    let rules = decide::compile(&rp.spec.rules).map_err(|m| ("InvalidSpec", m))?;
    let interval = crate::duration::parse(&rp.spec.interval)
        .map_err(|e| ("InvalidSpec", format!("spec.interval: {e}")))
        .and_then(|d| {
            if d < Duration::from_secs(60) {
                Err(("InvalidSpec", format!("spec.interval: {:?} is shorter than the 1m minimum", rp.spec.interval)))
            } else {
                Ok(d)
            }
        })?;
    let secret = &rp.spec.target.credentials_secret;
    match missing {
        None => Err(("CredentialsNotFound", format!("spec.target.credentialsSecret: Secret {secret:?} not found"))),
        Some(keys) if !keys.is_empty() => Err((
            "CredentialsInvalid",
            format!("spec.target.credentialsSecret: Secret {secret:?} lacks {}", keys.join(", ")),
        )),
        Some(_) => Ok(Valid { rules, interval }),
    }
}
