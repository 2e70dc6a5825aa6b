//! RetentionPolicy against a real S3-compatible server (SeaweedFS on loopback, started by
//! e2e/run-tests) and the operator process: DryRun reports and deletes nothing; Enforce deletes
//! exactly the expired objects not on legal hold, with an audit line each, status, an Event and
//! metrics; bad input becomes a precise condition and deletes nothing; a sweep interrupted
//! halfway and resumed deletes nothing twice and misses nothing; a VisioCluster whose recordings
//! bucket no policy covers gets `RetentionPolicyMissing`; a hostile tenant's endpoint (paging for
//! ever, looping, answering bodies over the cap) is stopped by the sweep caps while another tenant
//! sweeps and reconciles on time.
//!
//! Ages: e2e/run-tests starts the operator with `VISIO_RETENTION_CLOCK_OFFSET=1000h`, so objects
//! written now are 1000 h old to the sweeper. Rules of 720h/24h therefore expire them; rules of
//! 2000h/8760h keep them young.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use visio_e2e::fixtures::{apply, visio_cluster};
use visio_e2e::s3::{self, S3};
use visio_e2e::{client, metric, metric_sum, namespace, wait_for};
use visio_operator::api::retentionpolicy::{DataClass, LegalHoldSpec, RetentionMode, RetentionRule};
use visio_operator::api::{CaptionPool, RetentionPolicy, VisioCluster};
use visio_operator::retention::decide;
use visio_operator::retention::sweep::Sweeper;

const HOLD: &str = "visio-legal-hold=true";

async fn secret(client: &Client, ns: &str, name: &str, ak: &str, sk: &str) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": name},
        "stringData": {"accessKeyId": ak, "secretAccessKey": sk}}))?;
    match api.create(&PostParams::default(), &s).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn rules() -> serde_json::Value {
    json!([
        {"dataClass": "recordings", "prefix": "recordings/", "maxAge": "720h"},
        {"dataClass": "recordings", "prefix": "recordings/legal/", "maxAge": "8760h"},
        {"dataClass": "transcripts", "prefix": "transcripts/", "maxAge": "24h"},
        {"dataClass": "captions", "prefix": "captions/", "maxAge": "2000h"}
    ])
}

async fn apply_policy(
    client: &Client,
    ns: &str,
    name: &str,
    endpoint: &str,
    bucket: &str,
    secret: &str,
    mode: &str,
) -> Result<()> {
    let api: Api<RetentionPolicy> = Api::namespaced(client.clone(), ns);
    let rp = json!({"apiVersion": "visio.io/v1alpha1", "kind": "RetentionPolicy", "metadata": {"name": name},
        "spec": {"mode": mode, "interval": "1h",
                 "target": {"endpoint": endpoint, "bucket": bucket, "credentialsSecret": secret},
                 "rules": rules()}});
    apply(&api, "e2e", &rp).await?;
    Ok(())
}

/// Waits for a finished sweep of the policy's current generation in `mode`.
async fn swept(client: &Client, ns: &str, name: &str, mode: &str) -> Result<RetentionPolicy> {
    let api: Api<RetentionPolicy> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("{ns}/{name}: a {mode} sweep"), Duration::from_secs(60), || async {
        let rp = api.get(name).await?;
        let s = rp.status.clone().unwrap_or_default();
        let done = s.observed_generation == rp.metadata.generation
            && s.last_run.as_ref().is_some_and(|r| r.mode == mode)
            && s.in_progress.is_none()
            && s.conditions.iter().any(|c| c.type_ == "Ready");
        Ok(done.then_some(rp))
    })
    .await
}

/// Waits until Ready is False with `reason`; returns the message.
async fn failed(client: &Client, ns: &str, name: &str, reason: &str) -> Result<String> {
    let api: Api<RetentionPolicy> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("{ns}/{name}: Ready=False {reason}"), Duration::from_secs(60), || async {
        let rp = api.get(name).await?;
        let c = rp.status.unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "Ready");
        Ok(c.filter(|c| c.status == "False" && c.reason == reason).map(|c| c.message))
    })
    .await
}

#[tokio::test]
async fn dry_run_then_enforce_deletes_exactly_the_expired_unheld_objects() -> Result<()> {
    const NS: &str = "e2e-retention";
    const BUCKET: &str = "ret-main";
    let s3 = S3::from_env()?;
    let c = s3.client();
    s3::create_bucket(&c, BUCKET).await?;
    // (key, tagging, expected to go)
    let objects: Vec<(String, Option<&str>, bool)> = [
        (0..6)
            .map(|i| (format!("recordings/2026/meeting-{i}.webm"), (i < 2).then_some(HOLD), i >= 2))
            .collect::<Vec<_>>(),
        (0..3).map(|i| (format!("recordings/legal/case-{i}.webm"), None, false)).collect(),
        (0..4)
            .map(|i| {
                let tag = if i == 0 { Some("visio-legal-hold=false") } else { None };
                (format!("transcripts/t-{i}.vtt"), tag, true)
            })
            .collect(),
        (0..3).map(|i| (format!("captions/c-{i}.json"), Some(HOLD), false)).collect(),
        (0..2).map(|i| (format!("other/o-{i}"), None, false)).collect(),
    ]
    .concat();
    for (k, tag, _) in &objects {
        s3::put(&c, BUCKET, k, vec![b'v'; 100], *tag).await?;
    }
    let all: BTreeSet<String> = objects.iter().map(|o| o.0.clone()).collect();
    let expected_gone: BTreeSet<String> = objects.iter().filter(|o| o.2).map(|o| o.0.clone()).collect();
    assert_eq!(expected_gone.len(), 8);

    let client = client().await?;
    namespace(&client, NS).await?;
    secret(&client, NS, "s3", &s3.creds.access_key_id, &s3.creds.secret_access_key).await?;

    // DryRun: reports 8, deletes nothing.
    apply_policy(&client, NS, "meetings", &s3.endpoint, BUCKET, "s3", "DryRun").await?;
    let rp = swept(&client, NS, "meetings", "DryRun").await?;
    let run = rp.status.clone().unwrap().last_run.context("lastRun")?;
    assert_eq!((run.scanned, run.deleted, run.held, run.errors), (18, 8, 2, 0), "{run:?}");
    assert_eq!(run.bytes_deleted, 800);
    assert_eq!(s3::list_keys(&c, BUCKET).await?, all, "DryRun deleted something");
    let status = rp.status.clone().unwrap();
    assert!(status.next_run.is_some() && status.last_success.is_some());

    // Enforce: exactly the 8 go.
    apply_policy(&client, NS, "meetings", &s3.endpoint, BUCKET, "s3", "Enforce").await?;
    let rp = swept(&client, NS, "meetings", "Enforce").await?;
    let status = rp.status.clone().unwrap();
    let run = status.last_run.context("lastRun")?;
    assert_eq!((run.scanned, run.deleted, run.held, run.errors), (18, 8, 2, 0), "{run:?}");
    let left = s3::list_keys(&c, BUCKET).await?;
    let expected_left: BTreeSet<String> = all.difference(&expected_gone).cloned().collect();
    assert_eq!(left, expected_left);
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").context("Ready")?;
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Swept"));

    // One Event per run, with the counts.
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let notes: Vec<String> = wait_for("two Swept Events", Duration::from_secs(20), || async {
        let notes: Vec<String> = events
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Swept"))
            .filter_map(|e| e.message)
            .collect();
        Ok((notes.len() >= 2).then_some(notes))
    })
    .await?;
    assert!(
        notes.iter().any(|n| n.starts_with("Enforce:") && n.contains("8 deleted (800 bytes), 2 on legal hold")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.starts_with("DryRun:") && n.contains("8 would delete")), "{notes:?}");

    // Metrics.
    let l = format!("namespace=\"{NS}\",policy=\"meetings\"");
    assert_eq!(metric(&format!("visio_retention_runs_total{{{l},result=\"success\"}}")).await?, Some(2.0));
    assert_eq!(metric(&format!("visio_retention_runs_total{{{l},result=\"failure\"}}")).await?, Some(0.0));
    assert_eq!(metric(&format!("visio_retention_held_objects{{{l}}}")).await?, Some(2.0));
    // 4 recordings + 4 transcripts per run, DryRun counting what it would delete.
    let class = |c: &str| format!("visio_retention_deleted_objects_total{{class=\"{c}\",{l}}}");
    assert_eq!(metric(&class("recordings")).await?, Some(8.0));
    assert_eq!(metric(&class("transcripts")).await?, Some(8.0));
    assert_eq!(metric(&format!("visio_retention_interval_seconds{{{l}}}")).await?, Some(3600.0));
    assert!(metric(&format!("visio_retention_last_success_timestamp_seconds{{{l}}}")).await?.unwrap_or(0.0) > 1.7e9);

    // The audit trail: one line per deleted object, none twice, and never the secret key.
    let log = std::fs::read_to_string(std::env::var("VISIO_E2E_OPERATOR_LOG")?)?;
    assert!(!log.contains(&s3.creds.secret_access_key), "the secret key appears in the operator log");
    let mut audited = vec![];
    for line in log.lines().filter(|l| l.contains("retention: deleted") && l.contains(BUCKET)) {
        // --log-format json: the fields sit at the top level of each line.
        let f: serde_json::Value = serde_json::from_str(line)?;
        assert_eq!(f["mode"], "Enforce");
        assert!(f["size"].as_i64() == Some(100) && f["age_seconds"].as_i64().unwrap_or(0) > 720 * 3600, "{line}");
        assert!(f["rule"].as_str().is_some() && f["data_class"].as_str().is_some(), "{line}");
        audited.push(f["key"].as_str().context("key")?.to_string());
    }
    let unique: BTreeSet<String> = audited.iter().cloned().collect();
    assert_eq!(unique.len(), audited.len(), "a key is audited twice: {audited:?}");
    assert_eq!(unique, expected_gone);
    for e in events.list(&ListParams::default()).await? {
        assert!(!e.message.unwrap_or_default().contains(&s3.creds.secret_access_key));
    }
    let yaml = serde_json::to_string(&rp)?;
    assert!(!yaml.contains(&s3.creds.secret_access_key));
    Ok(())
}

#[tokio::test]
async fn bad_input_is_a_precise_condition_and_deletes_nothing() -> Result<()> {
    const NS: &str = "e2e-retention-bad";
    const BUCKET: &str = "ret-bad";
    let s3 = S3::from_env()?;
    let c = s3.client();
    s3::create_bucket(&c, BUCKET).await?;
    for i in 0..5 {
        s3::put(&c, BUCKET, &format!("transcripts/old-{i}"), b"x".to_vec(), None).await?;
    }
    let before = s3::list_keys(&c, BUCKET).await?;
    let client = client().await?;
    namespace(&client, NS).await?;
    secret(&client, NS, "wrong", &s3.creds.access_key_id, "not-the-secret-key").await?;
    secret(&client, NS, "s3", &s3.creds.access_key_id, &s3.creds.secret_access_key).await?;

    apply_policy(&client, NS, "wrong-creds", &s3.endpoint, BUCKET, "wrong", "Enforce").await?;
    apply_policy(&client, NS, "no-bucket", &s3.endpoint, "ret-does-not-exist", "s3", "Enforce").await?;
    // Port 9 (discard) on loopback: nothing listens.
    apply_policy(&client, NS, "unreachable", "http://127.0.0.1:9", BUCKET, "s3", "Enforce").await?;
    apply_policy(&client, NS, "no-secret", &s3.endpoint, BUCKET, "absent", "Enforce").await?;

    let m = failed(&client, NS, "wrong-creds", "CredentialsRejected").await?;
    assert!(m.starts_with("spec.target.credentialsSecret: "), "{m}");
    let m = failed(&client, NS, "no-bucket", "BucketNotFound").await?;
    assert!(m.starts_with("spec.target.bucket: ") && m.contains("ret-does-not-exist"), "{m}");
    let m = failed(&client, NS, "unreachable", "EndpointUnreachable").await?;
    assert!(m.starts_with("spec.target.endpoint: ") && m.contains("127.0.0.1:9"), "{m}");
    let m = failed(&client, NS, "no-secret", "CredentialsNotFound").await?;
    assert!(m.contains("\"absent\""), "{m}");

    // A malformed duration never gets past the apiserver (the CRD's pattern); the operator's own
    // check of it is a unit test (controllers::retentionpolicy).
    let api: Api<RetentionPolicy> = Api::namespaced(client.clone(), NS);
    let bad = json!({"apiVersion": "visio.io/v1alpha1", "kind": "RetentionPolicy", "metadata": {"name": "bad-age"},
        "spec": {"mode": "Enforce", "target": {"endpoint": s3.endpoint, "bucket": BUCKET, "credentialsSecret": "s3"},
                 "rules": [{"dataClass": "recordings", "prefix": "r/", "maxAge": "30 days"}]}});
    let err = api.patch("bad-age", &PatchParams::apply("e2e"), &Patch::Apply(&bad)).await.unwrap_err();
    assert!(err.to_string().contains("maxAge"), "{err}");

    // Failures are counted; nothing was deleted.
    let l = format!("namespace=\"{NS}\",policy=\"wrong-creds\"");
    assert!(metric(&format!("visio_retention_runs_total{{{l},result=\"failure\"}}")).await?.unwrap_or(0.0) >= 1.0);
    assert_eq!(s3::list_keys(&c, BUCKET).await?, before);
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let reasons: HashSet<String> =
        events.list(&ListParams::default()).await?.into_iter().filter_map(|e| e.reason).collect();
    for r in ["CredentialsRejected", "BucketNotFound", "EndpointUnreachable"] {
        assert!(reasons.contains(r), "no {r} Event: {reasons:?}");
    }
    let log = std::fs::read_to_string(std::env::var("VISIO_E2E_OPERATOR_LOG")?)?;
    assert!(!log.contains(&s3.creds.secret_access_key) && !log.contains("not-the-secret-key"));
    Ok(())
}

/// A sweep cut off halfway (its future dropped mid-page, as when the operator is killed) and
/// then resumed from its last checkpoint deletes every expired object exactly once.
#[tokio::test]
async fn an_interrupted_sweep_resumes_and_deletes_nothing_twice_and_misses_nothing() -> Result<()> {
    const BUCKET: &str = "ret-resume";
    let s3 = S3::from_env()?;
    let c = s3.client();
    s3::create_bucket(&c, BUCKET).await?;
    let expired: Vec<String> = (0..300).map(|i| format!("recordings/r-{i:04}")).collect();
    let young: Vec<String> = (0..40).map(|i| format!("captions/c-{i:04}")).collect();
    s3::put_many(&c, BUCKET, expired.clone(), 10, 32).await?;
    s3::put_many(&c, BUCKET, young.clone(), 10, 32).await?;
    let held: Vec<String> = (0..20).map(|i| format!("recordings/h-{i:04}")).collect();
    for k in &held {
        s3::put(&c, BUCKET, k, b"h".to_vec(), Some(HOLD)).await?;
    }
    let api_rules = [
        RetentionRule { data_class: DataClass::Recordings, prefix: "recordings/".into(), max_age: "720h".into() },
        RetentionRule { data_class: DataClass::Captions, prefix: "captions/".into(), max_age: "2000h".into() },
    ];
    let now = visio_operator::retention::now_secs() + 1000 * 3600;
    let start = |resume| {
        let c = c.clone();
        let target = s3.target(BUCKET);
        let rules = decide::compile(&api_rules).unwrap();
        async move {
            Sweeper::start(c, &target, rules, &LegalHoldSpec::default(), RetentionMode::Enforce, now, resume)
                .await
                .map(|s| s.with_page_size(25))
        }
    };

    // First run: two pages, checkpoint, then the third page is cut off mid-flight.
    let mut audit: Vec<String> = vec![];
    let mut first = start(None).await?;
    for _ in 0..2 {
        assert!(first.next_page(|d| audit.push(d.key.clone())).await?);
    }
    let checkpoint = first.progress.clone();
    let mut cut_audit: Vec<String> = vec![];
    // Cut the third page off a few milliseconds in: while it lists, checks holds, or waits for
    // DeleteObjects' answer (whichever it is doing then).
    let cut = tokio::time::timeout(Duration::from_millis(8), first.next_page(|d| cut_audit.push(d.key.clone()))).await;
    eprintln!("third page {}", if cut.is_err() { "cut off mid-flight" } else { "finished before the cut" });
    drop(first);
    audit.extend(cut_audit);
    let after_cut = s3::list_keys(&c, BUCKET).await?;

    // Restart from the checkpoint (two pages back) and run to the end.
    let mut second = start(Some(checkpoint)).await?;
    second.run(|d| audit.push(d.key.clone())).await?;

    let left = s3::list_keys(&c, BUCKET).await?;
    let expected_left: BTreeSet<String> = young.iter().chain(&held).cloned().collect();
    assert_eq!(left, expected_left, "misses nothing: every expired unheld object is gone, nothing else");
    let unique: BTreeSet<String> = audit.iter().cloned().collect();
    assert_eq!(unique.len(), audit.len(), "an object was deleted (audited) twice: {audit:?}");
    let expired: BTreeSet<String> = expired.into_iter().collect();
    assert!(unique.is_subset(&expired), "only expired objects are audited");
    // The one window without an audit line: DeleteObjects done by the server, its answer never
    // read because the sweep was cut. Those objects are gone (once), within the cut page.
    let unaudited: BTreeSet<&String> = expired.difference(&unique).collect();
    assert!(unaudited.len() <= 25, "more than one page unaudited: {unaudited:?}");
    assert!(unaudited.iter().all(|k| !after_cut.contains(*k)), "an unaudited key was deleted after the cut");
    assert_eq!(second.progress.held, 20);
    Ok(())
}

#[tokio::test]
async fn a_visiocluster_whose_recordings_no_policy_covers_reports_it() -> Result<()> {
    const NS: &str = "e2e-retention-gov";
    let s3 = S3::from_env()?;
    s3::create_bucket(&s3.client(), "ret-gov").await?;
    let client = client().await?;
    namespace(&client, NS).await?;
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), NS);
    let vc = visio_cluster("visio")
        .ministry("Ministère de la Culture", "visio.culture.gouv.fr")
        .contact("visio-oncall@culture.gouv.fr")
        .replicas(1, 2)
        .turn("turn.culture.gouv.fr")
        .spec(json!({"recordings": {"endpoint": s3.endpoint, "bucket": "ret-gov", "prefix": "recordings/visio/"}}));
    apply(&vcs, "e2e", &vc.value()).await?;
    // A CaptionPool that stores transcripts in the same bucket: the same governance.
    let pools: Api<CaptionPool> = Api::namespaced(client.clone(), NS);
    let pool = json!({
        "apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool", "metadata": {"name": "captions"},
        "spec": {"clusterRef": {"name": "visio"}, "backend": {"gpu": {"count": 0}},
                 "transcripts": {"store": true,
                                 "bucket": {"endpoint": s3.endpoint, "bucket": "ret-gov", "prefix": "transcripts/visio/"}}}
    });
    apply(&pools, "e2e", &pool).await?;
    let pool_missing = |want: &'static str| {
        let pools = pools.clone();
        async move {
            wait_for(&format!("CaptionPool RetentionPolicyMissing={want}"), Duration::from_secs(60), || async {
                let cp = pools.get("captions").await?;
                let c =
                    cp.status.unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "RetentionPolicyMissing");
                Ok(c.filter(|c| c.status == want))
            })
            .await
        }
    };
    let missing = |want: &'static str| {
        let vcs = vcs.clone();
        async move {
            wait_for(&format!("RetentionPolicyMissing={want}"), Duration::from_secs(60), || async {
                let vc = vcs.get("visio").await?;
                let c =
                    vc.status.unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "RetentionPolicyMissing");
                Ok(c.filter(|c| c.status == want))
            })
            .await
        }
    };
    let c = missing("True").await?;
    assert!(c.message.contains("recordings/visio/"), "{}", c.message);
    let c = pool_missing("True").await?;
    assert!(c.message.contains("spec.transcripts.bucket"), "{}", c.message);
    let series = format!("visio_retention_policy_missing{{kind=\"CaptionPool\",name=\"captions\",namespace=\"{NS}\"}}");
    wait_for("the pool's missing-policy metric at 1", Duration::from_secs(30), || async {
        Ok((metric(&series).await? == Some(1.0)).then_some(()))
    })
    .await?;
    let series = format!("visio_retention_policy_missing{{kind=\"VisioCluster\",name=\"visio\",namespace=\"{NS}\"}}");
    wait_for("the missing-policy metric at 1", Duration::from_secs(30), || async {
        Ok((metric(&series).await? == Some(1.0)).then_some(()))
    })
    .await?;

    // A policy covering the prefix clears it, without any change to the VisioCluster.
    secret(&client, NS, "s3", &s3.creds.access_key_id, &s3.creds.secret_access_key).await?;
    apply_policy(&client, NS, "recordings", &s3.endpoint, "ret-gov", "s3", "DryRun").await?;
    let c = missing("False").await?;
    assert_eq!(c.reason, "Covered");
    assert_eq!(pool_missing("False").await?.reason, "Covered");
    // Deleting it brings the condition back.
    let rps: Api<RetentionPolicy> = Api::namespaced(client.clone(), NS);
    rps.delete("recordings", &Default::default()).await?;
    missing("True").await?;
    pool_missing("True").await?;
    Ok(())
}

/// Property test against the real server: random rules, keys, legal-hold tags and sweep clocks;
/// every sweep deletes exactly what an independent model says (expired by the longest matching
/// rule, strictly older than maxAge, not tagged on hold) and nothing else. Seeded, so a failure
/// names the case that reproduces it.
#[tokio::test]
async fn random_buckets_lose_exactly_the_expired_unheld_objects() -> Result<()> {
    let s3 = S3::from_env()?;
    let c = s3.client();
    let mut seed: u64 = std::env::var("VISIO_E2E_RETENTION_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let mut next = move |n: u64| {
        // xorshift64*: a small deterministic generator (no rand dependency in the e2e crate).
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
    };
    let prefixes = ["a/", "a/b/", "b/", "c/"];
    // Fresh buckets each run: a bucket left by an earlier run would mix in its objects.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() % 1_000_000_000;
    for case in 0..6 {
        let bucket = format!("ret-prop-{run}-{case}");
        s3::create_bucket(&c, &bucket).await?;
        // Rules: a random subset of the prefixes, each with a random maxAge of 1..2000 h.
        let mut rules: Vec<RetentionRule> = vec![];
        for p in prefixes {
            if next(3) > 0 {
                let max_age = format!("{}h", 1 + next(2000));
                rules.push(RetentionRule { data_class: DataClass::Recordings, prefix: p.to_string(), max_age });
            }
        }
        if rules.is_empty() {
            continue;
        }
        let mut held = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for i in 0..40 {
            let key = format!("{}{}o-{i}", prefixes[next(4) as usize], if next(2) == 0 { "x/" } else { "" });
            let tag = match next(4) {
                0 => Some(HOLD),
                1 => Some("visio-legal-hold=no"),
                _ => None,
            };
            if tag == Some(HOLD) {
                held.insert(key.clone());
            }
            s3::put(&c, &bucket, &key, vec![b'p'; 10], tag).await?;
            keys.insert(key);
        }
        // The sweep's clock: 0..2500 h ahead.
        let now = visio_operator::retention::now_secs() + next(2500) as i64 * 3600;
        // The model, from the server's own LastModified.
        let listed = c.list_objects_v2().bucket(&bucket).send().await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut expected_gone = BTreeSet::new();
        for o in listed.contents() {
            let key = o.key().context("key")?;
            let modified = o.last_modified().context("date")?.secs();
            let rule = rules.iter().filter(|r| key.starts_with(&r.prefix)).max_by_key(|r| r.prefix.len());
            if let Some(r) = rule {
                let max_age = r.max_age.trim_end_matches('h').parse::<i64>()? * 3600;
                if now - modified > max_age && !held.contains(key) {
                    expected_gone.insert(key.to_string());
                }
            }
        }
        let compiled = decide::compile(&rules).map_err(anyhow::Error::msg)?;
        let mut s = Sweeper::start(
            c.clone(),
            &s3.target(&bucket),
            compiled,
            &LegalHoldSpec::default(),
            RetentionMode::Enforce,
            now,
            None,
        )
        .await?
        .with_page_size(1 + next(15) as i32);
        let mut audited = vec![];
        s.run(|d| audited.push(d.key.clone())).await?;
        let left = s3::list_keys(&c, &bucket).await?;
        let gone: BTreeSet<String> = keys.difference(&left).cloned().collect();
        eprintln!(
            "case {case}: {} rules, {} deleted, {} held, {} left",
            rules.len(),
            gone.len(),
            held.len(),
            left.len()
        );
        assert_eq!(gone, expected_gone, "case {case}: rules {rules:?}");
        assert_eq!(audited.iter().cloned().collect::<BTreeSet<_>>(), expected_gone, "case {case}: audit");
        assert!(held.is_subset(&left), "case {case}: a held object was deleted");
        assert_eq!(s.progress.errors, 0);
    }
    Ok(())
}

/// S3 Object Lock legal holds, against SeaweedFS's own implementation: in a bucket created with
/// Object Lock, objects whose legal hold is ON are kept, the others go.
#[tokio::test]
async fn object_lock_legal_holds_are_honoured() -> Result<()> {
    use visio_operator::retention::sweep::aws_sdk_s3::types::{ObjectLockLegalHold, ObjectLockLegalHoldStatus};
    let s3 = S3::from_env()?;
    let c = s3.client();
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() % 1_000_000_000;
    let bucket = format!("ret-lock-{run}");
    c.create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("CreateBucket with Object Lock: {e:?}"))?;
    let keys: Vec<String> = (0..10).map(|i| format!("recordings/l-{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        s3::put(&c, &bucket, k, b"lock".to_vec(), None).await?;
        let status = if i < 3 { ObjectLockLegalHoldStatus::On } else { ObjectLockLegalHoldStatus::Off };
        if i < 5 {
            c.put_object_legal_hold()
                .bucket(&bucket)
                .key(k)
                .legal_hold(ObjectLockLegalHold::builder().status(status).build())
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("PutObjectLegalHold {k}: {e:?}"))?;
        }
    }
    let rules = decide::compile(&[RetentionRule {
        data_class: DataClass::Recordings,
        prefix: "recordings/".into(),
        max_age: "720h".into(),
    }])
    .map_err(anyhow::Error::msg)?;
    let now = visio_operator::retention::now_secs() + 1000 * 3600;
    let mut s = Sweeper::start(
        c.clone(),
        &s3.target(&bucket),
        rules,
        &LegalHoldSpec::default(),
        RetentionMode::Enforce,
        now,
        None,
    )
    .await?;
    assert!(s.checks_object_lock(), "the bucket has Object Lock: legal holds must be checked");
    s.run(|_| {}).await?;
    assert_eq!((s.progress.deleted, s.progress.held, s.progress.errors), (7, 3, 0), "{:?}", s.progress);
    let left = s3::list_keys(&c, &bucket).await?;
    assert_eq!(left, keys[..3].iter().cloned().collect::<BTreeSet<_>>());
    Ok(())
}

/// A sweep against each attack of the hostile endpoint, in this process with small caps, and an
/// honest bucket too big for one run: every cap stops the sweep with its reason, keeps the place
/// reached, deletes nothing undecided; the honest bucket, resumed from that place, ends with every
/// expired object deleted exactly once.
#[tokio::test]
async fn a_sweep_stops_at_each_cap_and_an_honest_huge_bucket_resumes() -> Result<()> {
    use std::time::Instant;
    use visio_e2e::hostile_s3::{Attack, HostileS3, SLOW_PAGE};
    use visio_operator::retention::limits::Limits;
    use visio_operator::retention::sweep::SweepError;

    let hostile = HostileS3::start().await?;
    let s3 = S3::from_env()?;
    let rules = || {
        decide::compile(&[RetentionRule {
            data_class: DataClass::Recordings,
            prefix: "recordings/".into(),
            max_age: "720h".into(),
        }])
        .map_err(anyhow::Error::msg)
    };
    let now = visio_operator::retention::now_secs() + 1000 * 3600;
    let on = |attack: Attack| {
        let mut t = s3.target(attack.bucket());
        t.endpoint = hostile.endpoint.clone();
        t
    };
    // The sweeper's client, pointed at the hostile endpoint.
    let hostile_client = visio_operator::retention::sweep::client(&on(Attack::Forever), &s3.creds);
    let limits = |pages: u64, secs: u64| Limits {
        max_sweep_pages: pages,
        max_sweep_duration: Duration::from_secs(secs),
        ..Limits::default()
    };
    let sweep = |attack: Attack, l: Limits| {
        let (c, t, rules) = (hostile_client.clone(), on(attack), rules());
        async move {
            let mut s = Sweeper::start(c, &t, rules?, &LegalHoldSpec::default(), RetentionMode::Enforce, now, None)
                .await?
                .with_limits(l);
            let started = Instant::now();
            let e =
                s.run(|d| panic!("deleted {d:?} at a hostile endpoint")).await.err().context("a sweep that ends")?;
            anyhow::Ok((e, s.progress.clone(), s.pages(), started.elapsed()))
        }
    };

    // Pages for ever: stopped at the page cap, its place kept.
    let (e, progress, pages, took) = sweep(Attack::Forever, limits(50, 600)).await?;
    assert_eq!(e, SweepError::PageLimit { pages: 50 });
    assert_eq!((pages, progress.scanned), (50, 50));
    assert_eq!(progress.start_after.as_deref(), Some("zz/000000000050"), "the checkpoint is the last page handled");
    eprintln!("forever: stopped after 50 pages in {took:?}");

    // The same page again: stopped on the second page.
    let (e, progress, pages, _) = sweep(Attack::Loop, limits(50, 600)).await?;
    assert_eq!((e, pages, progress.scanned), (SweepError::ListingLoops, 2, 1));

    // Slow pages: stopped at the time cap, the page in flight dropped.
    let (e, progress, pages, took) = sweep(Attack::Slow, limits(1000, 3)).await?;
    assert_eq!(e.reason(), "TimeLimitReached", "{e}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(3) + SLOW_PAGE, "{took:?}");
    assert!(pages - progress.scanned as u64 <= 1, "the page cut off counts nothing: {pages} pages, {progress:?}");
    eprintln!("slow: stopped at the 3 s cap after {took:?}, {pages} pages");

    // A body without end, and a dense one: refused by the probe of the bucket, one request each.
    for attack in [Attack::Huge, Attack::Dense] {
        let before = hostile.lists(attack);
        let e = match Sweeper::start(
            hostile_client.clone(),
            &on(attack),
            rules()?,
            &LegalHoldSpec::default(),
            RetentionMode::Enforce,
            now,
            None,
        )
        .await
        {
            Ok(_) => anyhow::bail!("{attack:?}: the sweep started"),
            Err(e) => e,
        };
        assert_eq!(e.reason(), "ResponseTooLarge", "{attack:?}: {e}");
        assert_eq!(hostile.lists(attack) - before, 1, "{attack:?}: not asked again");
    }
    assert!(
        hostile.sent(Attack::Huge) < 64 << 20,
        "the endless body was read to its end: {}",
        hostile.sent(Attack::Huge)
    );
    // One sweep after the other: the endpoint never answered two listings at once, so the page
    // the time cap cut off was given up by the client and dropped by the endpoint then, not later.
    assert_eq!(hostile.most_at_once(), 1);

    // Honest but huge: 40 expired objects, pages of 5, at most 3 pages a run.
    const BUCKET: &str = "ret-huge";
    let c = s3.client();
    s3::create_bucket(&c, BUCKET).await?;
    let keys: Vec<String> = (0..40).map(|i| format!("recordings/h-{i:03}")).collect();
    s3::put_many(&c, BUCKET, keys.clone(), 10, 16).await?;
    let mut audited: Vec<String> = vec![];
    let mut resume = None;
    let mut runs = 0;
    loop {
        runs += 1;
        anyhow::ensure!(runs <= 10, "the honest bucket was not swept in 10 runs");
        let mut s = Sweeper::start(
            c.clone(),
            &s3.target(BUCKET),
            rules()?,
            &LegalHoldSpec::default(),
            RetentionMode::Enforce,
            now,
            resume,
        )
        .await?
        .with_page_size(5)
        .with_limits(limits(3, 600));
        match s.run(|d| audited.push(d.key.clone())).await {
            Ok(()) => break,
            Err(SweepError::PageLimit { pages: 3 }) => resume = Some(s.progress.clone()),
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(runs, 3, "15 keys a run: 40 keys take three runs");
    assert_eq!(audited.len(), 40, "each expired object deleted (and audited) once: {audited:?}");
    assert_eq!(audited.iter().cloned().collect::<BTreeSet<_>>(), keys.into_iter().collect::<BTreeSet<_>>());
    assert!(s3::list_keys(&c, BUCKET).await?.is_empty());
    Ok(())
}

/// The suite operator's resident memory now and at its peak (VmRSS, VmHWM), in MiB, when the
/// harness says which process it is (`VISIO_E2E_OPERATOR_PID`).
fn operator_memory_mib() -> Option<(f64, f64)> {
    let pid = std::env::var("VISIO_E2E_OPERATOR_PID").ok()?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok()?;
    let kib = |key: &str| -> Option<f64> {
        status.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse::<f64>().ok()
    };
    Some((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
}

/// Issue #19, "Retention bounded and scoped": a hostile tenant points seven policies at an
/// endpoint that pages for ever, loops, answers a body without end, answers a dense body, and
/// (three of them) answers slowly. Meanwhile another tenant's VisioCluster becomes Ready and is
/// changed, and its policy sweeps SeaweedFS twice, on time; each hostile sweep ends with its cap's
/// reason, keeps its place (paging) and is next tried at its interval; the hostile namespace never
/// sweeps more than its half of the 4 slots (the others wait), and the operator's memory stays
/// bounded. e2e/run-tests gives the suite operator a sweep time cap of 30 s
/// (`VISIO_RETENTION_MAX_SWEEP_DURATION`), so that the slow sweeps end within the test.
#[tokio::test]
async fn a_hostile_endpoint_is_stopped_while_another_tenant_sweeps_and_reconciles() -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Instant;
    use visio_e2e::fixtures::{ready_tenant, wait_ready};
    use visio_e2e::hostile_s3::{Attack, HostileS3, SLOW_PAGE};
    use visio_e2e::Tenant;
    use visio_operator::retention::limits::{DURATION_FLAG, PAGES_FLAG};

    const HOSTILE: &str = "e2e-hostile-s3";
    const HONEST: &str = "e2e-honest-s3";
    const BUCKET: &str = "ret-honest";
    let time_cap = std::env::var("VISIO_RETENTION_MAX_SWEEP_DURATION")
        .context("VISIO_RETENTION_MAX_SWEEP_DURATION is not set (run e2e/run-tests)")?;
    let time_cap = visio_operator::duration::parse(&time_cap)?;
    anyhow::ensure!(time_cap <= Duration::from_secs(120), "a sweep time cap of {time_cap:?} is too long for this test");
    let hostile = HostileS3::start().await?;
    let s3 = S3::from_env()?;
    let c = s3.client();
    s3::create_bucket(&c, BUCKET).await?;
    let expired: Vec<String> = (0..20).map(|i| format!("transcripts/t-{i:02}")).collect();
    let young: Vec<String> = (0..10).map(|i| format!("captions/c-{i:02}")).collect();
    s3::put_many(&c, BUCKET, expired.iter().chain(&young).cloned().collect(), 10, 16).await?;
    let client = client().await?;
    let _hostile_ns = Tenant::create(&client, HOSTILE).await?;
    let _honest_ns = Tenant::create(&client, HONEST).await?;
    secret(&client, HOSTILE, "s3", "hostile", "hostile-secret").await?;
    secret(&client, HONEST, "s3", &s3.creds.access_key_id, &s3.creds.secret_access_key).await?;

    // Watch the operator while the attack lasts: peak RSS (if its pid is known) and the most
    // sweeps seen running, every 250 ms for 10 minutes at most.
    let before = operator_memory_mib();
    let peaks = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let watcher = {
        let peaks = peaks.clone();
        tokio::spawn(async move {
            for _ in 0..2400 {
                if let Some((now, _)) = operator_memory_mib() {
                    peaks[0].fetch_max(now as u64, Ordering::Relaxed);
                }
                for (i, state) in [(1, "running"), (2, "waiting")] {
                    if let Ok(Some(n)) = metric(&format!("visio_retention_sweeps{{state=\"{state}\"}}")).await {
                        peaks[i].fetch_max(n as u64, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    let t0 = Instant::now();
    // (policy and bucket, attack, the reason its sweep must end with)
    let attacks = [
        ("forever", Attack::Forever, "PageLimitReached"),
        ("loop", Attack::Loop, "ListingLoops"),
        ("huge", Attack::Huge, "ResponseTooLarge"),
        ("dense", Attack::Dense, "ResponseTooLarge"),
        ("slow-1", Attack::Slow, "TimeLimitReached"),
        ("slow-2", Attack::Slow, "TimeLimitReached"),
        ("slow-3", Attack::Slow, "TimeLimitReached"),
    ];
    for (name, _, _) in attacks {
        apply_policy(&client, HOSTILE, name, &hostile.endpoint, name, "s3", "Enforce").await?;
    }
    wait_for("the hostile endpoint paged", Duration::from_secs(60), || async {
        Ok((hostile.lists(Attack::Forever) > 10).then_some(()))
    })
    .await?;

    // The other tenant, while the endpoint is paged.
    let vc = visio_cluster("visio")
        .ministry("Ministère de l'Intérieur", "visio.interieur.gouv.fr")
        .contact("visio-oncall@interieur.gouv.fr")
        .turn("turn.interieur.gouv.fr");
    let t = Instant::now();
    let (vcs, _) = ready_tenant(&client, HONEST, vc.clone().replicas(1, 2), Duration::from_secs(120)).await?;
    let ready_in = t.elapsed();
    let t = Instant::now();
    apply_policy(&client, HONEST, "meetings", &s3.endpoint, BUCKET, "s3", "DryRun").await?;
    swept(&client, HONEST, "meetings", "DryRun").await?;
    let dry_run_in = t.elapsed();
    let t = Instant::now();
    apply_policy(&client, HONEST, "meetings", &s3.endpoint, BUCKET, "s3", "Enforce").await?;
    let rp = swept(&client, HONEST, "meetings", "Enforce").await?;
    let enforce_in = t.elapsed();
    let run = rp.status.clone().unwrap_or_default().last_run.context("lastRun")?;
    assert_eq!((run.scanned, run.deleted, run.errors), (30, 20, 0), "{run:?}");
    assert_eq!(s3::list_keys(&c, BUCKET).await?, young.iter().cloned().collect::<BTreeSet<_>>());
    let t = Instant::now();
    apply(&vcs, "e2e", &vc.replicas(2, 3).value()).await?;
    wait_for("the changed VisioCluster Ready with 2 SFU pods", Duration::from_secs(120), || async {
        let vc = wait_ready(&vcs, "visio", Duration::from_secs(5)).await.ok();
        Ok(vc.filter(|vc| vc.status.as_ref().is_some_and(|s| s.sfu.ready == 2)))
    })
    .await?;
    let changed_in = t.elapsed();
    for (what, took) in [("DryRun sweep", dry_run_in), ("Enforce sweep", enforce_in), ("reconcile", changed_in)] {
        assert!(took < Duration::from_secs(30), "the other tenant's {what} took {took:?} under attack");
    }
    eprintln!(
        "other tenant, under attack: VisioCluster Ready in {ready_in:?}, changed and Ready again in {changed_in:?}; \
         sweeps done {dry_run_in:?} (DryRun) and {enforce_in:?} (Enforce) after the spec, each taking {:?}",
        run.finished.zip(run.started).map(|(f, s)| f.0.duration_since(s.0))
    );

    // Each hostile sweep ends with its cap's reason.
    let api: Api<RetentionPolicy> = Api::namespaced(client.clone(), HOSTILE);
    for (name, attack, reason) in attacks {
        let rp = wait_for(&format!("{HOSTILE}/{name}: Ready=False {reason}"), Duration::from_secs(540), || async {
            let rp = api.get(name).await?;
            let s = rp.status.clone().unwrap_or_default();
            let ready = s.conditions.iter().find(|c| c.type_ == "Ready");
            Ok(ready.is_some_and(|c| c.status == "False" && c.reason == reason).then_some(rp))
        })
        .await?;
        let s = rp.status.clone().unwrap_or_default();
        let msg = &s.conditions.iter().find(|c| c.type_ == "Ready").context("Ready")?.message;
        assert!(msg.starts_with("spec.target.endpoint: "), "{msg}");
        let run = s.last_run.context("lastRun")?;
        let (started, finished) = (run.started.context("started")?.0, run.finished.context("finished")?.0);
        // A capped sweep is tried again at its interval (1h), not at once.
        let next = s.next_run.context("nextRun")?.0;
        assert!(next.duration_since(finished).as_secs_f64() >= 3500.0, "{name}: next run at {next}");
        let took = finished.duration_since(started).as_secs_f64();
        eprintln!(
            "{name}: {reason} {:?} after the policy was applied, the sweep took {took} s, {} list requests for {attack:?}; {msg}",
            t0.elapsed(),
            hostile.lists(attack)
        );
        if matches!(attack, Attack::Forever | Attack::Slow) {
            assert!(msg.contains(if attack == Attack::Slow { DURATION_FLAG } else { PAGES_FLAG }), "{msg}");
            let kept = s.in_progress.context("the checkpoint of a sweep stopped by a cap is kept")?;
            assert!(kept.progress.scanned > 0 && kept.progress.start_after.is_some(), "{kept:?}");
        }
        if attack == Attack::Slow {
            let cap = time_cap.as_secs_f64();
            assert!(
                took >= cap - 1.0 && took <= cap + SLOW_PAGE.as_secs_f64() + 5.0,
                "{name}: {took} s for a {cap} s cap"
            );
        }
    }
    let (huge_sent, huge_lists) = (hostile.sent(Attack::Huge), hostile.lists(Attack::Huge));
    assert!(huge_sent / huge_lists.max(1) < 64 << 20, "{huge_sent} bytes sent to {huge_lists} requests");
    assert!(hostile.lists(Attack::Huge) <= 3 && hostile.lists(Attack::Dense) <= 3, "answers over the cap asked again");
    let failures = metric_sum(&format!(
        "visio_retention_runs_total{{namespace=\"{HOSTILE}\",policy=\"forever\",result=\"failure\"}}"
    ))
    .await?;
    assert!(failures >= 1.0);

    // One namespace sweeps with at most half of the 4 slots; its other due policies waited.
    assert!(hostile.most_at_once() <= 2, "{} hostile sweeps listed at once", hostile.most_at_once());
    watcher.abort();
    let (running, waiting) = (peaks[1].load(Ordering::Relaxed), peaks[2].load(Ordering::Relaxed));
    assert!(running <= 4, "{running} sweeps ran at once, over the default 4");
    assert!(waiting >= 1, "no policy ever waited for a slot");
    eprintln!(
        "at most {running} sweeps running and {waiting} waiting at once; at most {} hostile sweeps listing at once",
        hostile.most_at_once()
    );
    if let Some((rss_before, _)) = before {
        let peak = peaks[0].load(Ordering::Relaxed) as f64;
        let hwm = operator_memory_mib().map(|m| m.1).unwrap_or(0.0);
        eprintln!(
            "operator RSS: {rss_before:.0} MiB before the attack, {peak:.0} MiB at most during it (VmHWM {hwm:.0} MiB)"
        );
        assert!(peak < rss_before + 96.0 && peak < 256.0, "the operator grew from {rss_before:.0} to {peak:.0} MiB");
    } else {
        eprintln!("VISIO_E2E_OPERATOR_PID is not set: the operator's memory was not watched");
    }
    Ok(())
}

/// Legal holds a namespace cannot lift (the suite's VisioPlatform, e2e/platform.yaml): an object tagged with
/// the platform's hold tag is kept although the tenant's policy names another tag, and a namespace the platform
/// holds as a whole deletes nothing although its policy says Enforce (its sweeps run as DryRun).
#[tokio::test]
async fn the_platforms_legal_holds_cannot_be_lifted_by_the_tenant() -> Result<()> {
    const BUCKET: &str = "ret-platform-hold";
    let s3 = S3::from_env()?;
    let c = s3.client();
    s3::create_bucket(&c, BUCKET).await?;
    let objects = [
        ("recordings/inquiry.webm", Some("e2e-platform-hold=true"), false),
        ("recordings/old-tag.webm", Some(HOLD), true),
        ("recordings/plain-0.webm", None, true),
        ("recordings/plain-1.webm", None, true),
    ];
    for (k, tag, _) in objects {
        s3::put(&c, BUCKET, k, vec![b'h'; 10], tag).await?;
    }
    let client = client().await?;
    let policy = |ns: &str| {
        json!({"apiVersion": "visio.io/v1alpha1", "kind": "RetentionPolicy", "metadata": {"name": "meetings", "namespace": ns},
            "spec": {"mode": "Enforce", "interval": "1h",
                     "target": {"endpoint": s3.endpoint, "bucket": BUCKET, "credentialsSecret": "s3"},
                     "rules": [{"dataClass": "recordings", "prefix": "recordings/", "maxAge": "720h"}],
                     // The tenant tries to lift every hold by naming a tag nobody sets.
                     "legalHold": {"tagKey": "tenant-chosen", "tagValue": "never", "objectLock": false}}})
    };

    // The held namespace first: Enforce asked, nothing deleted, the run reported as a DryRun.
    let held = "e2e-retention-held";
    namespace(&client, held).await?;
    secret(&client, held, "s3", &s3.creds.access_key_id, &s3.creds.secret_access_key).await?;
    let api: Api<RetentionPolicy> = Api::namespaced(client.clone(), held);
    apply(&api, "e2e", &policy(held)).await?;
    let rp = swept(&client, held, "meetings", "DryRun").await?;
    let run = rp.status.and_then(|s| s.last_run).context("lastRun")?;
    assert_eq!((run.deleted, run.held), (3, 1), "what it would delete, the platform's tag holding one: {run:?}");
    assert_eq!(s3::list_keys(&c, BUCKET).await?.len(), 4, "a namespace the platform holds lost data");
    api.delete("meetings", &Default::default()).await?;

    // Another namespace: Enforce deletes what no hold covers; the platform's tag still holds.
    let ns = "e2e-retention-platform-hold";
    namespace(&client, ns).await?;
    secret(&client, ns, "s3", &s3.creds.access_key_id, &s3.creds.secret_access_key).await?;
    let api: Api<RetentionPolicy> = Api::namespaced(client.clone(), ns);
    apply(&api, "e2e", &policy(ns)).await?;
    let rp = swept(&client, ns, "meetings", "Enforce").await?;
    let run = rp.status.and_then(|s| s.last_run).context("lastRun")?;
    assert_eq!((run.deleted, run.held, run.errors), (3, 1, 0), "{run:?}");
    let left: Vec<String> = s3::list_keys(&c, BUCKET).await?.into_iter().collect();
    assert_eq!(left, vec!["recordings/inquiry.webm".to_string()], "the platform's hold was lifted");
    Ok(())
}
