//! Governance default: a component that stores meeting data in a bucket must have that data
//! covered by a RetentionPolicy of its namespace, or it gets the `RetentionPolicyMissing`
//! condition. Pure functions, used by the VisioCluster controller (recordings) and meant for
//! the CaptionPool controller (transcripts).

use std::borrow::Borrow;

use futures::FutureExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::reflector::Store;
use kube::ResourceExt;

use crate::api::common::BucketRef;
use crate::api::RetentionPolicy;
use crate::runtime::conditions::{Decided, RETENTION_POLICY_MISSING};

/// `https://S3.example/` and `https://s3.example` are the same endpoint.
fn same_endpoint(a: &str, b: &str) -> bool {
    a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// Whether `policies` cover what a component of namespace `namespace` writes to `bucket_ref`:
/// a policy of the same namespace, on the same endpoint and bucket, with a rule whose prefix is
/// a prefix of the component's prefix (so every key the component writes matches a rule). A
/// component without a prefix writes anywhere in the bucket, which prefix rules cannot cover
/// whole: it is covered by no policy until it names a prefix.
pub fn covered(bucket_ref: &BucketRef, namespace: &str, policies: &[impl Borrow<RetentionPolicy>]) -> bool {
    let prefix = bucket_ref.prefix.as_deref().unwrap_or("");
    policies.iter().any(|p| {
        let p: &RetentionPolicy = p.borrow();
        p.namespace().as_deref() == Some(namespace)
            && p.metadata.deletion_timestamp.is_none()
            && same_endpoint(&p.spec.target.endpoint, &bucket_ref.endpoint)
            && p.spec.target.bucket == bucket_ref.bucket
            && p.spec.rules.iter().any(|r| !r.prefix.is_empty() && prefix.starts_with(r.prefix.as_str()))
    })
}

/// The `RetentionPolicyMissing` condition for a component storing `what` (e.g.
/// `spec.recordings`) in `bucket_ref` (`None`: it stores nothing, so nothing is missing).
pub fn condition(
    what: &str,
    bucket_ref: Option<&BucketRef>,
    namespace: &str,
    policies: &[impl Borrow<RetentionPolicy>],
) -> Decided {
    match bucket_ref {
        None => Decided::new(RETENTION_POLICY_MISSING, false, "NoStoredData", format!("{what} is not set")),
        Some(b) if covered(b, namespace, policies) => Decided::new(
            RETENTION_POLICY_MISSING,
            false,
            "Covered",
            format!("{what} (bucket {:?}) is covered by a RetentionPolicy", b.bucket),
        ),
        Some(b) => Decided::new(
            RETENTION_POLICY_MISSING,
            true,
            "NoPolicyCoversBucket",
            match &b.prefix {
                Some(p) => format!(
                    "no RetentionPolicy in namespace {namespace:?} has a rule covering prefix {p:?} of bucket {:?} at {} \
                     ({what}): this data is never deleted",
                    b.bucket, b.endpoint
                ),
                None => format!(
                    "{what}.prefix is not set, so no RetentionPolicy rule can cover all of bucket {:?} at {}: \
                     set a prefix and a RetentionPolicy rule for it",
                    b.bucket, b.endpoint
                ),
            },
        ),
    }
}

/// The helper the component controllers call: the `RetentionPolicyMissing` condition for a
/// component storing `what` in `bucket_ref`, judged against the cached RetentionPolicies.
/// `None` (no condition) when the component stores nothing. While the cache has not had its
/// first full list, the previous condition is kept as it was (never a false alarm at start-up).
pub fn missing_condition(
    what: &str,
    bucket_ref: Option<&BucketRef>,
    namespace: &str,
    policies: &Store<RetentionPolicy>,
    previous: &[Condition],
) -> Option<Decided> {
    bucket_ref?;
    if policies.wait_until_ready().now_or_never().is_none() {
        return previous
            .iter()
            .find(|c| c.type_ == RETENTION_POLICY_MISSING)
            .map(|c| Decided::new(RETENTION_POLICY_MISSING, c.status == "True", c.reason.clone(), c.message.clone()));
    }
    let all = policies.state();
    Some(condition(what, bucket_ref, namespace, &all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(ns: &str, endpoint: &str, bucket: &str, prefixes: &[&str]) -> RetentionPolicy {
        let rules: Vec<_> =
            prefixes.iter().map(|p| json!({"dataClass": "recordings", "prefix": p, "maxAge": "720h"})).collect();
        serde_json::from_value(json!({"apiVersion": "visio.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": "p", "namespace": ns},
            "spec": {"mode": "Enforce", "target": {"endpoint": endpoint, "bucket": bucket, "credentialsSecret": "s3"},
                     "rules": rules}}))
        .unwrap()
    }

    fn bucket(endpoint: &str, bucket: &str, prefix: Option<&str>) -> BucketRef {
        BucketRef { endpoint: endpoint.into(), bucket: bucket.into(), prefix: prefix.map(str::to_string) }
    }

    #[test]
    fn coverage_needs_namespace_endpoint_bucket_and_prefix() {
        let ps = vec![policy("a", "https://s3.example", "meet", &["recordings/"])];
        let b = bucket("https://s3.example/", "meet", Some("recordings/vc1/"));
        assert!(covered(&b, "a", &ps));
        assert!(!covered(&b, "b", &ps), "another namespace's policy does not count");
        assert!(!covered(&bucket("https://s3.other", "meet", Some("recordings/")), "a", &ps));
        assert!(!covered(&bucket("https://s3.example", "other", Some("recordings/")), "a", &ps));
        assert!(!covered(&bucket("https://s3.example", "meet", Some("transcripts/")), "a", &ps));
        assert!(!covered(&bucket("https://s3.example", "meet", Some("recordings")), "a", &ps), "shorter than the rule");
        assert!(!covered(&bucket("https://s3.example", "meet", None), "a", &ps), "whole bucket");
        let none: Vec<RetentionPolicy> = vec![];
        assert!(!covered(&b, "a", &none));
    }

    #[test]
    fn condition_says_what_is_missing() {
        let ps = vec![policy("a", "https://s3.example", "meet", &["recordings/"])];
        assert!(!condition("spec.recordings", None, "a", &ps).status);
        let ok =
            condition("spec.recordings", Some(&bucket("https://s3.example", "meet", Some("recordings/"))), "a", &ps);
        assert_eq!((ok.status, ok.reason.as_str()), (false, "Covered"));
        let missing = condition("spec.recordings", Some(&bucket("https://s3.example", "meet", Some("x/"))), "a", &ps);
        assert!(missing.status);
        assert!(missing.message.contains("\"x/\""), "{}", missing.message);
    }
}
