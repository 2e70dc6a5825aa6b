//! What a GitOps tool sees: the health the real kstatus library (`sigs.k8s.io/cli-utils/pkg/kstatus`,
//! what Flux reads; run by our Go checker `e2e/kstatus`) computes for each resource, through creation,
//! convergence, a spec that cannot converge (a missing Secret, a quota too small), its repair and deletion:
//! InProgress while the operator works, Current once it is done, Failed while only a person can help.
//! Every reading is also checked against Argo CD's, by our Lua health check run as Argo CD runs it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams, WatchEvent, WatchParams};
use serde_json::{json, Value};
use visio_e2e::fixtures::{apply, visio_cluster};
use visio_e2e::kstatus::{self, Health};
use visio_e2e::s3::{self, S3};
use visio_e2e::{client, namespace, poll};
use visio_operator::api::{CaptionPool, RetentionPolicy, VisioCluster};

const EVERY: Duration = Duration::from_millis(200);

/// The object as the apiserver returns it, untyped (what kstatus reads).
async fn get(api: &Api<DynamicObject>, name: &str) -> Result<Option<Value>> {
    Ok(api.get_opt(name).await?.map(serde_json::to_value).transpose()?)
}

/// Polls until kstatus says `want` of the object `name`; returns that reading.
async fn until(api: &Api<DynamicObject>, name: &str, want: &str, timeout: Duration) -> Result<Health> {
    let last = Arc::new(Mutex::new(None));
    let found = poll(&format!("{name}: kstatus {want}"), timeout, EVERY, || {
        let last = last.clone();
        async move {
            let Some(obj) = get(api, name).await? else { return Ok(None) };
            let h = kstatus::agreed(std::slice::from_ref(&obj))?.remove(0);
            *last.lock().unwrap() = Some(h.clone());
            Ok((h.status == want).then_some(h))
        }
    })
    .await;
    let last = last.lock().unwrap().clone();
    found.with_context(|| format!("last reading: {last:?}"))
}

/// Every version of one object the apiserver shows a watch, from its creation on.
struct History(Arc<Mutex<Vec<Value>>>, tokio::task::JoinHandle<()>);

impl History {
    async fn watch(api: &Api<DynamicObject>, name: &str) -> Result<History> {
        let seen = Arc::new(Mutex::new(vec![]));
        let wp = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(120);
        let mut stream = api.watch(&wp, "0").await?.boxed();
        let into = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let ev = match stream.try_next().await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("kstatus.rs: the watch ended: {e}");
                        break;
                    }
                };
                if let WatchEvent::Error(e) = &ev {
                    eprintln!("kstatus.rs: watch error: {e:?}");
                }
                if let WatchEvent::Added(o) | WatchEvent::Modified(o) = ev {
                    if let Ok(v) = serde_json::to_value(o) {
                        into.lock().unwrap().push(v);
                    }
                }
            }
        });
        Ok(History(seen, task))
    }

    /// kstatus's reading of every version seen so far that has a status, in order, repeats folded (kstatus
    /// reads a version without `status.observedGeneration` as Current: nothing to assert of it).
    fn readings(&self) -> Result<Vec<String>> {
        let mut objects = self.0.lock().unwrap().clone();
        objects.retain(|o| !o["status"]["observedGeneration"].is_null());
        let mut out: Vec<String> = vec![];
        for h in kstatus::agreed(&objects)? {
            if out.last() != Some(&h.status) {
                out.push(h.status);
            }
        }
        Ok(out)
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.1.abort();
    }
}

async fn deleted(api: &Api<DynamicObject>, name: &str) -> Result<()> {
    api.delete(name, &DeleteParams::default()).await?;
    // Without a finalizer an object is gone at once; with one kstatus reads it Terminating meanwhile.
    poll(&format!("{name} deleted"), Duration::from_secs(60), EVERY, || async {
        match get(api, name).await? {
            None => Ok(Some(())),
            Some(obj) => {
                let h = kstatus::of(&obj)?;
                ensure!(h.status == "Terminating", "a deleted object reads {h:?}");
                Ok(None)
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_visiocluster_reads_in_progress_then_current_failed_while_broken_current_again() -> Result<()> {
    let client = client().await?;
    let ns = "e2e-kstatus-vc";
    namespace(&client, ns).await?;
    let typed: Api<VisioCluster> = Api::namespaced(client.clone(), ns);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<VisioCluster>(&()));
    let base = visio_cluster("visio").ministry("Ministère de la Culture", "visio.culture.gouv.fr").replicas(2, 3);

    // Creation: every version the operator writes reads InProgress until the fleet serves, then Current.
    let history = History::watch(&api, "visio").await?;
    apply(&typed, "e2e", &base.clone().value()).await?;
    let current = until(&api, "visio", "Current", Duration::from_secs(90)).await?;
    // The watch delivers after the GET saw Current: wait for it to catch up.
    let readings = poll("the watch to see Current", Duration::from_secs(20), EVERY, || async {
        let r = history.readings()?;
        Ok((r.last().map(String::as_str) == Some("Current")).then_some(r))
    })
    .await?;
    ensure!(!readings.contains(&"Failed".to_string()), "creation never reads Failed: {readings:?}");
    ensure!(readings.contains(&"InProgress".to_string()), "creation reads InProgress first: {readings:?}");
    ensure!(readings.last().map(String::as_str) == Some("Current"), "{readings:?} ({current:?})");
    drop(history);

    // A spec change: InProgress at once (observedGeneration lags, then Reconciling), Current again.
    apply(&typed, "e2e", &base.clone().replicas(3, 3).value()).await?;
    let obj = get(&api, "visio").await?.context("the VisioCluster")?;
    let h = kstatus::of(&obj)?;
    let observed = obj["status"]["observedGeneration"].as_i64();
    if observed != obj["metadata"]["generation"].as_i64() {
        ensure!(h.status == "InProgress", "a generation not yet observed reads InProgress: {h:?}");
    }
    until(&api, "visio", "Current", Duration::from_secs(90)).await?;

    // A broken reference (the keys Secret is missing): Failed, naming the field, never a hot loop.
    apply(&typed, "e2e", &base.clone().replicas(3, 3).spec(json!({"keys": {"secretName": "livekit-keys"}})).value())
        .await?;
    let failed = until(&api, "visio", "Failed", Duration::from_secs(60)).await?;
    ensure!(failed.message.contains("spec.keys.secretName"), "{failed:?}");

    // Repaired (the reference taken out of the spec): Current again.
    apply(&typed, "e2e", &base.clone().replicas(3, 3).value()).await?;
    until(&api, "visio", "Current", Duration::from_secs(90)).await?;

    // A quota too small for spec.sfu.replicas.min: Failed too (only the platform team can help).
    let tenant = json!({"tenant": {"quota": {"hard": {"pods": "1"}}}});
    apply(&typed, "e2e", &base.clone().replicas(3, 3).spec(tenant).value()).await?;
    let failed = until(&api, "visio", "Failed", Duration::from_secs(60)).await?;
    ensure!(failed.message.starts_with("spec.tenant.quota.hard[pods]"), "{failed:?}");
    apply(&typed, "e2e", &base.clone().replicas(3, 3).value()).await?;
    until(&api, "visio", "Current", Duration::from_secs(90)).await?;

    deleted(&api, "visio").await
}

#[tokio::test]
async fn a_retention_policy_reads_failed_on_a_missing_secret_and_current_once_swept() -> Result<()> {
    let client = client().await?;
    let s3 = S3::from_env()?;
    let ns = "e2e-kstatus-rp";
    namespace(&client, ns).await?;
    s3::create_bucket(&s3.client(), "kstatus").await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "s3"}, "stringData":
        {"accessKeyId": s3.creds.access_key_id, "secretAccessKey": s3.creds.secret_access_key}}))?;
    if let Err(e) = secrets.create(&PostParams::default(), &secret).await {
        ensure!(matches!(&e, kube::Error::Api(s) if s.code == 409), "{e}");
    }
    let typed: Api<RetentionPolicy> = Api::namespaced(client.clone(), ns);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<RetentionPolicy>(&()));
    let policy = |secret: &str| {
        json!({"apiVersion": "visio.io/v1alpha1", "kind": "RetentionPolicy", "metadata": {"name": "rp"},
            "spec": {"mode": "DryRun", "interval": "1h",
                "target": {"endpoint": s3.endpoint, "bucket": "kstatus", "credentialsSecret": secret, "pathStyle": true},
                "rules": [{"dataClass": "recordings", "prefix": "recordings/", "maxAge": "720h"}]}})
    };

    // Created with a Secret that does not exist: Failed, naming the field.
    apply(&typed, "e2e", &policy("missing")).await?;
    let failed = until(&api, "rp", "Failed", Duration::from_secs(60)).await?;
    ensure!(failed.message.starts_with("spec.target.credentialsSecret"), "{failed:?}");

    // Repaired: the sweep of the new generation runs at once, and its end reads Current.
    apply(&typed, "e2e", &policy("s3")).await?;
    let obj = get(&api, "rp").await?.context("the policy")?;
    if obj["status"]["observedGeneration"].as_i64() != obj["metadata"]["generation"].as_i64() {
        let h = kstatus::of(&obj)?;
        ensure!(h.status == "InProgress", "a generation not yet swept reads InProgress: {h:?}");
    }
    until(&api, "rp", "Current", Duration::from_secs(60)).await?;

    deleted(&api, "rp").await
}

/// The unit mirror of kstatus's rules (runtime/conditions.rs) agrees with the real library on the
/// condition lists the operator writes: checked here, where the library runs.
#[tokio::test]
async fn the_library_reads_the_operators_condition_lists_as_the_unit_tests_assume() -> Result<()> {
    use visio_operator::runtime::conditions::{convergence, merge, Convergence, Decided, READY};
    let now = k8s_openapi::jiff::Timestamp::from_second(1)?;
    let cases = [
        (true, Convergence::Current, "Current"),
        (false, Convergence::Current, "InProgress"),
        (true, Convergence::Reconciling("RollingUpgrade", "1/2".into()), "InProgress"),
        (false, Convergence::Stalled("KeysSecretMissing".into(), "spec.keys.secretName".into()), "Failed"),
    ];
    let mut objects = vec![];
    for (ready, c, _) in &cases {
        let mut d = vec![Decided::new(READY, *ready, "R", "")];
        d.extend(convergence(c));
        let conditions = merge(&[], &d, Some(1), now);
        objects.push(json!({"apiVersion": "visio.io/v1alpha1", "kind": "VisioCluster",
            "metadata": {"name": "x", "namespace": "y", "generation": 1},
            "status": {"observedGeneration": 1, "conditions": conditions}}));
    }
    let got = kstatus::agreed(&objects)?;
    for ((ready, c, want), h) in cases.iter().zip(got) {
        ensure!(h.status == *want, "Ready={ready}, {c:?}: kstatus says {h:?}, want {want}");
    }
    Ok(())
}

#[tokio::test]
async fn a_caption_pool_naming_a_missing_visiocluster_reads_failed_until_repaired() -> Result<()> {
    let client = client().await?;
    let ns = "e2e-kstatus-cp";
    namespace(&client, ns).await?;
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), ns);
    let typed: Api<CaptionPool> = Api::namespaced(client.clone(), ns);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<CaptionPool>(&()));
    let pool = |cluster: &str| {
        json!({"apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool", "metadata": {"name": "captions"},
            "spec": {"clusterRef": {"name": cluster}}})
    };

    // Naming a VisioCluster that does not exist yet: Failed, naming the field.
    apply(&typed, "e2e", &pool("visio")).await?;
    let failed = until(&api, "captions", "Failed", Duration::from_secs(60)).await?;
    ensure!(failed.message.contains("clusterRef"), "{failed:?}");

    // Repaired (`clusterRef` is immutable: the VisioCluster is created, and the pool's watch of them sees
    // it): no longer Failed (InProgress while its backends start, Current once they serve).
    let vc = visio_cluster("visio").ministry("Ministère de la Mer", "visio.mer.gouv.fr").pod_network().no_turn();
    apply(&vcs, "e2e", &vc.value()).await?;
    poll("the repaired pool no longer Failed", Duration::from_secs(60), EVERY, || async {
        let Some(obj) = get(&api, "captions").await? else { return Ok(None) };
        let h = kstatus::agreed(std::slice::from_ref(&obj))?.remove(0);
        let observed = obj["status"]["observedGeneration"] == obj["metadata"]["generation"];
        Ok((observed && h.status != "Failed").then_some(()))
    })
    .await?;

    deleted(&api, "captions").await
}
