//! The CaptionPool controller's pure steps, tested.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use k8s_openapi::api::apps::v1::Deployment;

use super::apply::{agent_image_mut, keep_running_agent_image};
use super::status::{build_status, decide, rejected_total, rejection_increase, unschedulable};
use super::validate::{fleet_spec, reference_problem, worker_spec};
use super::workers::worker_load;
use crate::api::captionpool::{BackendCounts, CaptionPool, CaptionPoolStatus, SlotCounts};
use crate::builders::captions::{build_captions, CaptionInputs};
use crate::fleet::workers::WorkerLoad;
use crate::fleet::{PodPhase, Snapshot};
use crate::runtime::{apply, conditions};

use crate::fleet::PodSnapshot;
use serde_json::json;

fn pool(spec: serde_json::Value) -> CaptionPool {
    let mut base = json!({"clusterRef": {"name": "visio"}});
    crate::builders::testing::merge_json(&mut base, spec);
    let mut cp: CaptionPool = serde_json::from_value(json!({"apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool",
        "metadata": {"name": "captions", "namespace": "minsante", "uid": "u1"}, "spec": base}))
    .unwrap();
    cp.metadata.generation = Some(1);
    cp
}

fn pod(name: &str, hash: &str, phase: PodPhase) -> PodSnapshot {
    PodSnapshot {
        name: name.into(),
        template_hash: hash.into(),
        phase,
        load: Some(0),
        sessions: Some(0),
        warned: false,
        created: 0,
        evacuate: false,
        drain_requested: false,
    }
}

#[test]
fn a_missing_or_foreign_cluster_is_named_in_the_condition() {
    let (reason, msg) = reference_problem(&pool(json!({})), false).unwrap();
    assert_eq!(reason, "ClusterNotFound");
    assert!(msg.contains("spec.clusterRef.name") && msg.contains("\"visio\""));
    let (reason, msg) = reference_problem(&pool(json!({"clusterRef": {"namespace": "minarmees"}})), true).unwrap();
    assert_eq!(reason, "CrossNamespaceReference");
    assert!(msg.contains("spec.clusterRef.namespace"));
    assert_eq!(reference_problem(&pool(json!({"clusterRef": {"namespace": "minsante"}})), true), None);
    assert_eq!(reference_problem(&pool(json!({})), true), None);
}

#[test]
fn the_planner_reads_slots() {
    let s = fleet_spec(&pool(json!({"backend": {"slotsPerPod": 48, "targetOccupancyPercent": 70, "slotBuffer": 8,
        "replicas": {"min": 1, "max": 6}, "drainTimeout": "2h"}})))
    .unwrap();
    assert_eq!((s.capacity_per_pod, s.target_utilization_percent, s.buffer, s.min, s.max), (48, 70, 8, 1, 6));
    assert_eq!(s.drain_timeout_ms, 2 * 3600 * 1000);
    assert_eq!(s.warn_before_ms, 0);
    assert!(fleet_spec(&pool(json!({"backend": {"drainTimeout": "forever"}}))).is_err());
}

#[test]
fn transcribers_are_planned_on_their_reported_jobs() {
    let cp = pool(json!({"transcribers": {"jobsPerWorker": 10, "targetOccupancyPercent": 80, "jobBuffer": 3,
        "scaleDownDelay": "2m", "replicas": {"min": 1, "max": 4}}}));
    let s = worker_spec(&cp).unwrap();
    assert_eq!((s.min, s.max, s.jobs_per_worker, s.target_percent, s.buffer), (1, 4, 10, 80, 3));
    assert_eq!(s.scale_down_delay_ms, 120_000);
    assert!(worker_spec(&pool(json!({"transcribers": {"scaleDownDelay": "later"}}))).is_err());
    let worker = |name: &str, load: Option<&str>, deleting: bool| {
        let mut meta = json!({"name": name});
        if let Some(l) = load {
            meta["annotations"] = json!({"visio.io/load": l});
        }
        if deleting {
            meta["deletionTimestamp"] = json!("2026-11-28T10:00:00Z");
        }
        let agent = json!({"name": crate::builders::sfu::AGENT_CONTAINER, "image": "a", "imageID": "", "ready": true,
            "restartCount": 0, "state": {"running": {}}});
        let pod = json!({"metadata": meta, "status": {"containerStatuses": [agent]}});
        Arc::new(serde_json::from_value::<Pod>(pod).unwrap())
    };
    let pods = [
        worker("w-0", Some(r#"{"participants":4,"rooms":4,"capacity":10}"#), false),
        worker("w-1", Some(r#"{"participants":2,"rooms":2,"capacity":10}"#), false),
        worker("w-2", None, false),
        worker("w-3", Some(r#"{"participants":9,"rooms":9,"capacity":10}"#), true),
        worker("w-4", Some("garbage"), false),
    ];
    assert_eq!(worker_load(&pods), WorkerLoad { jobs: 6, reporting: 2, unknown: 2 });
}

#[test]
fn an_operator_upgrade_keeps_the_workers_agent_image() {
    let cp = pool(json!({}));
    let build = |agent_image: &str, replicas: i32| {
        let inputs = CaptionInputs {
            api_key: "k",
            livekit_keys_secret: "visio-credentials",
            agent_image,
            transcriber_replicas: replicas,
        };
        build_captions(&cp, &inputs).unwrap().transcribers
    };
    let image = |d: &Deployment| agent_image_mut(&mut d.clone()).and_then(|i| i.clone());
    let mut old = build("agent:1", 2);
    apply::stamp(&mut old).unwrap();
    // Same template, new agent image, new replica count: the running image stays.
    let mut next = build("agent:2", 3);
    keep_running_agent_image(&mut next, Some(&old)).unwrap();
    assert_eq!(image(&next).as_deref(), Some("agent:1"));
    assert_eq!(next.spec.as_ref().unwrap().replicas, Some(3));
    // Another change to the template: the workers roll anyway, with the new agent.
    let mut changed = build("agent:2", 2);
    changed.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].image = Some("worker:2".into());
    keep_running_agent_image(&mut changed, Some(&old)).unwrap();
    assert_eq!(image(&changed).as_deref(), Some("agent:2"));
    // Nothing applied yet: the new image.
    let mut fresh = build("agent:2", 1);
    keep_running_agent_image(&mut fresh, None).unwrap();
    assert_eq!(image(&fresh).as_deref(), Some("agent:2"));
}

#[test]
fn rejections_count_increases_only() {
    assert_eq!(rejection_increase(None, 7), 0, "first sighting is a baseline");
    assert_eq!(rejection_increase(Some(7), 9), 2);
    assert_eq!(rejection_increase(Some(9), 9), 0);
    assert_eq!(rejection_increase(Some(9), 2), 2, "restarted backend");
}

#[test]
fn a_stale_cached_status_loses_no_rejection() {
    // Reconcile 1 counts 6 and writes 6; reconcile 2 runs on a cache that still shows 0.
    let first = rejected_total(0, None, 6);
    assert_eq!(first, 6);
    assert_eq!(rejected_total(0, Some(first), 0), 6, "the older cached total must not win");
    assert_eq!(rejected_total(6, Some(first), 2), 8);
    // After a restart the cached status is all there is.
    assert_eq!(rejected_total(8, None, 0), 8);
}

proptest::proptest! {
    /// Whatever order the cache shows our writes in, the total never goes down and counts every
    /// rejection once.
    #[test]
    fn rejection_totals_count_each_rejection_once(
        steps in proptest::collection::vec((0u32..5, 0usize..4), 1..40)
    ) {
        let mut written: Vec<i64> = vec![0];
        let mut remembered = None;
        let mut counted = 0i64;
        for (new, lag) in steps {
            // The cache shows one of the last few totals we wrote.
            let cached = written[written.len().saturating_sub(1 + lag)];
            let total = rejected_total(cached, remembered, new);
            counted += i64::from(new);
            proptest::prop_assert_eq!(total, counted);
            written.push(total);
            remembered = Some(total);
        }
    }
}

#[test]
fn unschedulable_pods_are_named_with_the_scheduler_message() {
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "captions-backend-0"},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}}))
    .unwrap();
    let stuck = unschedulable(&[Arc::new(p)]);
    assert_eq!(
        stuck,
        vec![("captions-backend-0".to_string(), "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".to_string())]
    );
    let cp = pool(json!({}));
    let status = CaptionPoolStatus {
        backends: BackendCounts { desired: 1, current: 1, updated: 1, unschedulable: 1, ..Default::default() },
        ..Default::default()
    };
    let d = decide(&cp, &status, &stuck, false);
    assert_eq!((d[0].type_, d[0].status, d[0].reason.as_str()), (conditions::READY, false, "Unschedulable"));
    assert!(d[0].message.contains("Insufficient nvidia.com/gpu") && d[0].message.contains("spec.backend.gpu"));
    assert_eq!(d[2].reason, "Unschedulable");
}

#[test]
fn degraded_when_rejecting_or_full() {
    let cp = pool(json!({}));
    let mut status = CaptionPoolStatus {
        slots: SlotCounts { used: 10, total: 64, rejected: 0 },
        backends: BackendCounts { desired: 1, ready: 1, current: 1, updated: 1, ..Default::default() },
        ..Default::default()
    };
    let d = decide(&cp, &status, &[], false);
    assert_eq!((d[0].status, d[0].reason.as_str()), (true, "Serving"));
    assert_eq!((d[1].status, d[2].status), (false, false));
    assert_eq!(decide(&cp, &status, &[], true)[2].reason, "StreamsRejected");
    status.slots.used = 64;
    assert_eq!(decide(&cp, &status, &[], false)[2].reason, "SlotsExhausted");
}

#[test]
fn status_shows_the_worst_share_of_slow_steps_bounded() {
    let backend = |name: &str, load: &str| {
        let agent = json!({"name": crate::builders::sfu::AGENT_CONTAINER, "image": "a", "imageID": "", "ready": true,
            "restartCount": 0, "state": {"running": {}}});
        Arc::new(
            serde_json::from_value::<Pod>(json!({"metadata": {"name": name, "annotations": {"visio.io/load": load}},
                "status": {"containerStatuses": [agent]}}))
            .unwrap(),
        )
    };
    let cp = pool(json!({}));
    let snap = Snapshot { now: 0, target_hash: "h".into(), pods: vec![], low_load_since: None, startup_lead_ms: None };
    let pods = [
        backend("a", r#"{"participants":3,"rooms":3,"stepP95Us":80000,"slowStepPermille":125}"#),
        backend("b", r#"{"participants":1,"rooms":1,"stepP95Us":40000,"slowStepPermille":4}"#),
    ];
    let s = build_status(&cp, "h", &snap, 1, &pods);
    assert_eq!((s.step_time_p95_ms, s.slow_steps_percent), (Some(80.0), Some(12.5)));
    // The annotation is the tenant's to write: a share above the whole is read as the whole.
    let hostile = [backend("c", r#"{"participants":1,"rooms":1,"slowStepPermille":4294967295}"#)];
    assert_eq!(build_status(&cp, "h", &snap, 1, &hostile).slow_steps_percent, Some(100.0));
}

#[test]
fn status_counts_slots_of_serving_pods_and_streams_of_all() {
    let cp = pool(json!({"backend": {"slotsPerPod": 8}}));
    let snap = Snapshot {
        now: 0,
        target_hash: "new".into(),
        pods: vec![
            pod("a", "new", PodPhase::Serving),
            pod("b", "old", PodPhase::Draining { since: 0 }),
            pod("c", "new", PodPhase::Pending),
        ],
        low_load_since: None,
        startup_lead_ms: None,
    };
    let s = build_status(&cp, "new", &snap, 2, &[]);
    assert_eq!(s.slots.total, 8, "serving pods only, spec slots when unreported");
    assert_eq!((s.step_time_p95_ms, s.slow_steps_percent), (None, None));
    assert_eq!(
        (s.backends.desired, s.backends.ready, s.backends.current, s.backends.updated, s.backends.draining),
        (2, 1, 3, 2, 1)
    );
}

/// The whole CaptionPool reconcile against the scripted apiserver (`runtime::testing`): its writes in
/// step order, and none on a second pass once the caches show them.
#[tokio::test]
async fn a_first_reconcile_writes_children_then_backends_then_status_and_a_second_writes_nothing() {
    use hyper::Method;
    use kube::runtime::reflector;
    use serde_json::Value;

    use super::{reconcile_pool, Pools};
    use crate::runtime::children::Child;
    use crate::runtime::testing::context;

    let (ctx, mut writers, calls) = context();
    let mut cp = pool(json!({"backend": {"replicas": {"min": 2, "max": 4}}}));
    let ns = cp.metadata.namespace.clone().unwrap();
    let mut vc = crate::builders::testing::test_cluster();
    vc.metadata.namespace = Some(ns.clone());
    calls.seed(
        &format!("/apis/visio.io/v1alpha1/namespaces/{ns}/visioclusters/visio"),
        serde_json::to_value(&vc).unwrap(),
    );
    calls.seed(
        &format!("/apis/visio.io/v1alpha1/namespaces/{ns}/captionpools/captions"),
        serde_json::to_value(&cp).unwrap(),
    );
    let (pods, mut pods_w) = reflector::store::<Pod>();
    pods_w.apply_watcher_event(&kube::runtime::watcher::Event::Init);
    pods_w.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
    let pools = Pools { pods, memory: Default::default() };

    reconcile_pool(&cp, &ctx, &pools).await.expect("reconcile");
    let writes = calls.writes();
    let kind =
        |c: &crate::runtime::testing::Call| c.body.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let kinds: Vec<String> = writes.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "Secret",
            "Secret",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Service",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "Deployment",
            "Pod",
            "Pod",
            "CaptionPool"
        ],
        "children in apply order, then the backend pods (replicas.min), then the status: {writes:#?}"
    );
    assert!(writes.last().unwrap().path.ends_with("/captionpools/captions/status"));
    let transcribers = &writes[8].body;
    assert_eq!(
        transcribers["spec"]["replicas"],
        json!(cp.spec.transcribers.replicas.min),
        "built with its planned count"
    );

    // The caches now show what was written: the same reconcile writes nothing.
    for c in writes.iter().filter(|c| c.method == Method::PATCH && !c.path.ends_with("/status")) {
        writers.cache(Child::from_json(&kind(c), c.body.clone()).expect("a child kind"));
    }
    for c in writes.iter().filter(|c| c.method == Method::POST) {
        let mut pod: Pod = serde_json::from_value(c.body.clone()).unwrap();
        pod.metadata.uid = Some(format!("uid-{}", pod.metadata.name.clone().unwrap_or_default()));
        pod.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        pods_w.apply_watcher_event(&kube::runtime::watcher::Event::Apply(pod));
    }
    cp.status = serde_json::from_value(writes.last().unwrap().body["status"].clone()).unwrap();
    calls.clear();
    reconcile_pool(&cp, &ctx, &pools).await.expect("second reconcile");
    let again: Vec<(Method, String)> = calls.writes().into_iter().map(|c| (c.method, c.path)).collect();
    assert_eq!(again, vec![], "a reconcile that changes nothing writes nothing");
}
