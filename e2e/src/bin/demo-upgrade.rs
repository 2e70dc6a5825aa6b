//! `demo-upgrade` (run by `make demo`): the project's first promise, live. A tenant of three real
//! livekit-server SFUs on loopback (the config the operator wrote into its Secret, one Redis), real
//! participants talking in a few meetings, and a rolling upgrade of LiveKit while they talk; then one
//! closing line with the meetings opened, cut (0) and the upgrade's duration.
//!
//! Needs the demo's control plane and operator (`e2e/demo` starts them and sets VISIO_E2E_KUBECONFIG
//! and VISIO_E2E_BIN). Every process it starts stops when it exits; the namespace stays to look at.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use kube::api::Api;
use serde_json::json;
use visio_e2e::fixtures::{apply, fleet_visio_cluster as visiocluster, NEW_VERSION, OLD_VERSION, VC_NAME};
use visio_e2e::fleet::{Fleet, FleetConfig, StandinBackend, Upgrade, Workload};
use visio_operator::api::VisioCluster;

const NS: &str = "demo-upgrade";
const PODS: usize = 3;

#[tokio::main]
async fn main() -> Result<()> {
    let client = visio_e2e::client().await?;
    visio_e2e::delete_namespace(NS);
    visio_e2e::namespace(&client, NS).await?;
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), NS);
    let vc = visiocluster(
        "Ministère de la Démonstration",
        json!({"version": OLD_VERSION,
               "sfu": {"replicas": {"min": PODS, "max": PODS}, "capacity": {"participantsPerPod": 10}},
               "autoscaling": {"participantBuffer": 0, "targetUtilizationPercent": 100, "scaleDownDelay": "0s"},
               "upgrade": {"maxSurge": 1, "maxDraining": 1}}),
    );
    apply(&vcs, "visio-demo", &vc).await?;
    let kubeconfig = visio_e2e::kubeconfig_path()?;
    let cfg =
        FleetConfig { seed: 9, backend: StandinBackend::RealLivekit, ..FleetConfig::new(NS, VC_NAME, &kubeconfig) };
    let fleet = Fleet::start(client.clone(), cfg).await?;
    println!(
        "[demo] {PODS} real livekit-server SFUs starting for namespace {NS} (logs: {})",
        fleet.log_dir().display()
    );
    fleet.wait_serving(PODS, Duration::from_secs(120)).await?;
    let old_hash = fleet.view().await.only_hash()?;

    let mut work = Workload::new(9);
    let meetings = work.open_many(&fleet, "reunion", 6, (2, 3)).await?;
    let view = fleet.view().await;
    println!(
        "[demo] {} meetings, {} real participants (WebRTC over loopback) on {:?}",
        meetings.len(),
        view.participants_by_pod().values().sum::<u32>(),
        view.participants_by_pod()
    );

    println!("[demo] upgrading LiveKit {OLD_VERSION} -> {NEW_VERSION} while they talk");
    let t0 = Instant::now();
    Upgrade { client: &client, ns: NS, old_hash: &old_hash, pods: PODS, version: NEW_VERSION }.start().await?;
    // What an on-call engineer sees meanwhile: the tenant mid-upgrade, on one screen.
    let screen = tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        tokio::task::spawn_blocking(plugin_status).await
    });
    // The meetings end one after another within 40 s, as meetings do; the upgrade waits for each.
    work.end_between(&meetings, t0, Duration::from_secs(5), Duration::from_secs(40));
    let took = work
        .run_until(&fleet, "the upgrade (180 s)", t0 + Duration::from_secs(180), |v| {
            let done = v.active().count() == PODS
                && v.active().all(|p| p.template_hash != old_hash && p.serving && p.drain_since.is_none());
            done.then(|| t0.elapsed())
        })
        .await?;
    match screen.await {
        Ok(Ok(Ok(text))) => println!("[demo] kubectl visio status -n {NS}, mid-upgrade:\n{text}"),
        Ok(Ok(Err(e))) => println!("[demo] kubectl visio status could not run: {e:#}"),
        Ok(Err(e)) | Err(e) => println!("[demo] kubectl visio status could not run: {e}"),
    }
    work.close_all(&fleet).await?;
    let outcome = fleet.stop().await;
    println!(
        "[demo] meetings: {} opened, {} cut; upgrade of {PODS} real SFUs done in {:.1} s",
        outcome.opened,
        outcome.cuts.len(),
        took.as_secs_f64()
    );
    ensure!(outcome.cuts.is_empty(), "meetings cut: {:#?}", outcome.cuts);
    Ok(())
}

/// `kubectl visio status` of the demo's tenant, as the plugin built by `make build` prints it.
fn plugin_status() -> Result<String> {
    let plugin = visio_e2e::repo().join("target/debug/kubectl-visio");
    let out = std::process::Command::new(&plugin)
        .args(["status", "-n", NS])
        .env("KUBECONFIG", visio_e2e::kubeconfig_path()?)
        .output()
        .map_err(|e| anyhow::anyhow!("{}: {e}", plugin.display()))?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
