//! Issue #10: a tenant's Redis becomes unreachable. LiveKit then reports Not Ready (its node stats in
//! Redis go stale), so kubelet marks every SFU pod not Ready; its liveness probe (TCP) still passes,
//! so no pod is restarted. kwok runs no probe: the test plays kubelet by setting the pods' Ready
//! condition to False through the status subresource, as kubelet does, then back to True.
//!
//! What must hold: the operator keeps every pod (same UIDs, none deleted), does not add pods up to
//! `max` (pods that lost readiness still hold their meetings and are capacity), says `Degraded` with
//! reason `SfuNotReady` and a Warning Event, and exports what `VisioSfuRedisUnreachable` fires on
//! (`visio_sfu_pods{state="ready"}` 0 while pods are current); when Redis is back, all of it clears.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use visio_e2e::fixtures::{ready_tenant, visio_cluster};
use visio_e2e::{client, metric, wait_for};
use visio_operator::api::VisioCluster;

const NS: &str = "e2e-redis-outage";

/// The status and reason of the condition of this type.
fn condition(vc: &VisioCluster, type_: &str) -> Option<(String, String)> {
    visio_e2e::fixtures::condition(vc, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

/// The SFU pods: name -> uid.
async fn sfu_pods(client: &Client) -> Result<BTreeMap<String, String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let lp = ListParams::default().labels("app.kubernetes.io/component=sfu");
    Ok(pods
        .list(&lp)
        .await?
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect())
}

/// Sets the Ready condition of every SFU pod, as kubelet does after the readiness probe.
async fn set_ready(client: &Client, ready: bool) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let status = if ready { "True" } else { "False" };
    for name in sfu_pods(client).await?.keys() {
        let pod = pods.get_status(name).await?;
        let mut conditions = pod.status.and_then(|s| s.conditions).unwrap_or_default();
        for c in conditions.iter_mut().filter(|c| c.type_ == "Ready" || c.type_ == "ContainersReady") {
            c.status = status.into();
            c.reason = (!ready).then(|| "ContainersNotReady".into());
        }
        let patch = json!({"status": {"conditions": conditions}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_redis_outage_restarts_no_sfu_and_raises_the_alert_condition() -> Result<()> {
    let client = client().await?;
    let vc = visio_cluster("visio")
        .ministry("Ministère de la Transformation publique", "visio.numerique.gouv.fr")
        .replicas(2, 6)
        .pod_network()
        .spec(json!({"autoscaling": {"scaleDownDelay": "0s"}}));
    let (vcs, _) = ready_tenant(&client, NS, vc, Duration::from_secs(90)).await?;
    let before = sfu_pods(&client).await?;
    ensure!(before.len() == 2, "two SFU pods: {before:?}");
    let series = r#"visio_sfu_pods{cluster="visio",namespace="e2e-redis-outage",state="ready"}"#;

    // Redis goes away: every SFU pod loses readiness.
    set_ready(&client, false).await?;
    let vc = wait_for("Degraded=SfuNotReady", Duration::from_secs(60), || async {
        let vc = vcs.get("visio").await?;
        Ok((condition(&vc, "Degraded") == Some(("True".into(), "SfuNotReady".into()))).then_some(vc))
    })
    .await?;
    let status = vc.status.clone().context("status")?;
    ensure!(status.sfu.ready == 0 && status.sfu.current == 2, "status counts: {:?}", status.sfu);
    ensure!(status.sfu.desired == 2, "the planner did not scale up for pods that lost readiness: {:?}", status.sfu);
    // The reconcile writes the status, then sets the gauges (controllers/visiocluster/status.rs): the
    // series follows the condition by a moment.
    let gauge_at = |v: f64| async move {
        wait_for(&format!("{series} at {v}"), Duration::from_secs(10), || async move {
            Ok((metric(series).await? == Some(v)).then_some(()))
        })
        .await
    };
    gauge_at(0.0).await.context("the alert's input")?;
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let warned = events
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some("SfuNotReady") && e.type_.as_deref() == Some("Warning"));
    ensure!(warned, "a Warning Event SfuNotReady");
    // A while later (several reconciles, requeues included): the same pods, no new ones.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = sfu_pods(&client).await?;
    ensure!(during == before, "no SFU pod deleted, replaced or added during the outage: {before:?} -> {during:?}");

    // Redis is back.
    set_ready(&client, true).await?;
    wait_for("Degraded cleared, Ready again", Duration::from_secs(60), || async {
        let vc = vcs.get("visio").await?;
        let ok = condition(&vc, "Degraded").is_some_and(|(s, _)| s == "False")
            && condition(&vc, "Ready").is_some_and(|(s, _)| s == "True");
        Ok(ok.then_some(()))
    })
    .await?;
    gauge_at(2.0).await.context("back to 2")?;
    ensure!(sfu_pods(&client).await? == before, "still the same two pods");
    Ok(())
}
