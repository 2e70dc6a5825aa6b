//! The RetentionPolicy controller. This release validates a policy (its credentials Secret and
//! rules) and reports what it found; it deletes nothing yet (the sweeper is the next step).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::conditions::{self, Decided};
use super::error::Result;
use super::{key_of, observe, Context};
use crate::api::RetentionPolicy;
use crate::builders::labels::FIELD_MANAGER;

const CONTROLLER: &str = "retentionpolicy";

pub fn controller(client: Client, ctx: Arc<Context>) -> impl std::future::Future<Output = ()> {
    // Lenient watch: one stored policy we cannot read must not stop the others.
    super::lenient_controller::<RetentionPolicy>(&client, super::watch_config())
        .shutdown_on_signal()
        .run(reconcile, super::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
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

/// What the controller decides (pure).
pub fn decide(rp: &RetentionPolicy, missing: Option<Vec<&'static str>>) -> Vec<Decided> {
    let secret = &rp.spec.target.credentials_secret;
    let problem = match missing {
        None => Some(("CredentialsNotFound", format!("spec.target.credentialsSecret: Secret {secret:?} not found"))),
        Some(keys) if !keys.is_empty() => Some((
            "CredentialsInvalid",
            format!("spec.target.credentialsSecret: Secret {secret:?} lacks {}", keys.join(", ")),
        )),
        Some(_) => None,
    };
    for rule in &rp.spec.rules {
        if let Err(e) = crate::duration::parse(&rule.max_age) {
            return vec![
                Decided::new(
                    conditions::READY,
                    false,
                    "InvalidSpec",
                    format!("spec.rules[{}].maxAge: {e}", rule.prefix),
                ),
                Decided::new(
                    conditions::DEGRADED,
                    true,
                    "InvalidSpec",
                    format!("spec.rules[{}].maxAge: {e}", rule.prefix),
                ),
            ];
        }
    }
    match problem {
        Some((reason, msg)) => vec![
            Decided::new(conditions::READY, false, reason, msg.clone()),
            Decided::new(conditions::DEGRADED, true, reason, msg),
        ],
        None => vec![
            Decided::new(
                conditions::READY,
                false,
                "SweeperNotEnabled",
                "the policy is valid; this operator release does not sweep buckets yet and deletes nothing",
            ),
            Decided::new(conditions::DEGRADED, false, "AsExpected", "no problem detected"),
        ],
    }
}

async fn reconcile(rp: Arc<RetentionPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let key = key_of(rp.as_ref());
    let result = super::bounded(reconcile_policy(&rp, &ctx)).await;
    observe(&ctx, CONTROLLER, &key, started, &result.as_ref().map(|_| ()));
    result
}

async fn reconcile_policy(rp: &RetentionPolicy, ctx: &Context) -> Result<Action> {
    let ns = rp.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = secrets.get_opt(&rp.spec.target.credentials_secret).await?;
    let decided = decide(rp, missing_credential_keys(secret.as_ref()));
    let mut status = rp.status.clone().unwrap_or_default();
    let merged = conditions::merge(&status.conditions, &decided, rp.metadata.generation, Timestamp::now());
    if merged != status.conditions || status.observed_generation != rp.metadata.generation {
        status.conditions = merged;
        status.observed_generation = rp.metadata.generation;
        let api: Api<RetentionPolicy> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"apiVersion": "visio.io/v1alpha1", "kind": "RetentionPolicy", "status": status});
        api.patch_status(&rp.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        ctx.metrics.child_writes.with_label_values(&["RetentionPolicy", "status"]).inc();
        if decided[1].status {
            ctx.event(rp, EventType::Warning, &decided[1].reason, "Validate", decided[1].message.clone()).await;
        }
    }
    // The Secret is not watched: look again now and then.
    Ok(Action::requeue(Duration::from_secs(300)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn policy() -> RetentionPolicy {
        serde_json::from_value(json!({"apiVersion": "visio.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": "meetings", "namespace": "minsante"},
            "spec": {"mode": "DryRun", "target": {"endpoint": "https://s3.example", "bucket": "meet", "credentialsSecret": "s3"},
                     "rules": [{"dataClass": "recordings", "prefix": "recordings/", "maxAge": "720h"}]}}))
        .unwrap()
    }

    #[test]
    fn missing_and_incomplete_credentials_are_named() {
        assert_eq!(missing_credential_keys(None), None);
        let d = decide(&policy(), None);
        assert_eq!(d[0].reason, "CredentialsNotFound");
        assert!(d[0].message.contains("spec.target.credentialsSecret"));
        let s = Secret {
            data: Some([("accessKeyId".to_string(), ByteString(b"x".to_vec()))].into()),
            ..Default::default()
        };
        let missing = missing_credential_keys(Some(&s));
        assert_eq!(missing, Some(vec!["secretAccessKey"]));
        assert_eq!(decide(&policy(), missing)[0].reason, "CredentialsInvalid");
    }

    #[test]
    fn a_valid_policy_deletes_nothing_and_says_so() {
        let d = decide(&policy(), Some(vec![]));
        assert_eq!(d[0].reason, "SweeperNotEnabled");
        assert!(d[0].message.contains("deletes nothing"));
        assert!(!d[1].status);
    }
}
