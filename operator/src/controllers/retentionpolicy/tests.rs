//! The RetentionPolicy controller's pure steps, tested.

use super::status::sweep_conditions;
use super::sweep::due;
use super::sweep::time;
use super::validate::{check, missing_credential_keys};
use crate::api::retentionpolicy::{RetentionMode, SweepCheckpoint, SweepSummary};
use crate::retention::sweep::Progress;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use super::validate::credentials_of;
use crate::api::RetentionPolicy;

use k8s_openapi::ByteString;

fn policy() -> RetentionPolicy {
    serde_json::from_value(json!({"apiVersion": "visio.io/v1alpha1", "kind": "RetentionPolicy",
        "metadata": {"name": "meetings", "namespace": "minsante", "generation": 2},
        "spec": {"mode": "DryRun", "target": {"endpoint": "https://s3.example", "bucket": "meet", "credentialsSecret": "s3"},
                 "rules": [{"dataClass": "recordings", "prefix": "recordings/", "maxAge": "720h"}]}}))
    .unwrap()
}

#[test]
fn missing_and_incomplete_credentials_are_named() {
    assert_eq!(missing_credential_keys(None), None);
    let (reason, msg) = check(&policy(), None).unwrap_err();
    assert_eq!(reason, "CredentialsNotFound");
    assert!(msg.contains("spec.target.credentialsSecret"));
    let s =
        Secret { data: Some([("accessKeyId".to_string(), ByteString(b"x".to_vec()))].into()), ..Default::default() };
    let missing = missing_credential_keys(Some(&s));
    assert_eq!(missing, Some(vec!["secretAccessKey"]));
    assert_eq!(check(&policy(), missing).unwrap_err().0, "CredentialsInvalid");
    assert!(credentials_of(&s).is_none());
}

#[test]
fn malformed_durations_are_named() {
    let mut p = policy();
    p.spec.rules[0].max_age = "thirty days".into();
    let (reason, msg) = check(&p, Some(vec![])).unwrap_err();
    assert_eq!(reason, "InvalidSpec");
    assert!(msg.starts_with("spec.rules[recordings/].maxAge: "), "{msg}");
    let mut p = policy();
    p.spec.interval = "soon".into();
    assert!(check(&p, Some(vec![])).unwrap_err().1.starts_with("spec.interval: "));
    let v = check(&policy(), Some(vec![])).unwrap();
    assert_eq!(v.interval, Duration::from_secs(3600));
}

#[test]
fn due_follows_generation_schedule_and_checkpoint() {
    let mut p = policy();
    assert!(due(&p, None, 100), "never swept");
    p.status = Some(crate::api::RetentionPolicyStatus {
        observed_generation: Some(2),
        last_run: Some(SweepSummary::default()),
        next_run: time(200),
        ..Default::default()
    });
    assert!(!due(&p, None, 100));
    assert!(due(&p, None, 200));
    p.metadata.generation = Some(3);
    assert!(due(&p, None, 100), "spec changed");
    p.metadata.generation = Some(2);
    p.status.as_mut().unwrap().in_progress = Some(SweepCheckpoint::default());
    assert!(due(&p, None, 100), "an interrupted sweep resumes");
    // This process's memory wins over a status it may not have seen written yet.
    assert!(!due(&p, Some((Some(2), 500)), 100));
    assert!(due(&p, Some((Some(1), 500)), 100));
}

#[test]
fn sweep_conditions_report_counts() {
    let p = Progress { scanned: 10, deleted: 3, bytes_deleted: 30, held: 1, errors: 0, start_after: None };
    let d = sweep_conditions(RetentionMode::DryRun, &p);
    assert!(d[0].status && d[0].message.contains("3 would delete (DryRun)"), "{}", d[0].message);
    assert!(!d[1].status);
    let d = sweep_conditions(RetentionMode::Enforce, &Progress { errors: 2, ..p });
    assert!(d[1].status && d[1].reason == "ObjectsUnchecked");
}
