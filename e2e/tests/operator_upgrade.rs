//! Issue #9: upgrading the operator itself restarts no pod.
//!
//! On a control plane of its own, the previous release (`VISIO_PREVIOUS_RELEASE` in versions.env,
//! built from its commit by `e2e/previous-operator`) brings a tenant to Ready; then it is stopped as a
//! Deployment rollout stops it (SIGTERM) and this build of the operator takes over. Every pod the
//! previous release created must still be there, the same pod (same UID), not deleted, not replaced:
//! an operator upgrade alone must never restart an SFU, Redis or caption pod. The objects the new
//! release re-applied (a changed builder output) are listed in the summary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use visio_e2e::client_at;
use visio_e2e::fixtures::{ready, ready_tenant, visio_cluster};
use visio_e2e::fleet::Binaries;
use visio_e2e::own::OwnCluster;
use visio_e2e::ports;
use visio_e2e::repo;

const NS: &str = "e2e-operator-upgrade";

fn previous_operator() -> Result<std::path::PathBuf> {
    let out = std::process::Command::new(repo().join("e2e/previous-operator")).arg("path").output()?;
    ensure!(
        out.status.success(),
        "the previous operator release is not built (e2e/run-tests builds it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().into())
}

/// Pods of the namespace: name -> (uid, terminating).
async fn pods(client: &Client) -> Result<BTreeMap<String, (String, bool)>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|p| (p.name_any(), (p.uid().unwrap_or_default(), p.metadata.deletion_timestamp.is_some())))
        .collect())
}

/// resourceVersion of every object the operator owns in the namespace, by `Kind/name`.
async fn versions(client: &Client) -> Result<BTreeMap<String, String>> {
    let kinds = [
        ("", "v1", "Secret", "secrets"),
        ("", "v1", "Service", "services"),
        ("", "v1", "ServiceAccount", "serviceaccounts"),
        ("apps", "v1", "Deployment", "deployments"),
        ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
        ("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    ];
    let mut out = BTreeMap::new();
    for (group, version, kind, plural) in kinds {
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &ar);
        let lp = ListParams::default().labels("app.kubernetes.io/managed-by=visio-operator");
        for o in api.list_metadata(&lp).await?.items {
            out.insert(format!("{kind}/{}", o.name_any()), o.resource_version().unwrap_or_default());
        }
    }
    Ok(out)
}

#[tokio::test]
async fn an_operator_upgrade_restarts_no_pod() -> Result<()> {
    let previous = previous_operator()?;
    let mut cluster = OwnCluster::up(ports::OPERATOR_UPGRADE)?;
    cluster.start_operator(&previous, "previous")?;
    let result = upgrade(&mut cluster).await;
    cluster.on_failure(result)
}

async fn upgrade(cluster: &mut OwnCluster) -> Result<()> {
    let client = client_at(&cluster.kubeconfig).await?;
    let vc = visio_cluster("visio")
        .ministry("Ministère de la Justice", "visio.justice.gouv.fr")
        .replicas(3, 4)
        .pod_network();
    // Ready under the previous release.
    let (vcs, _) = ready_tenant(&client, NS, vc, Duration::from_secs(120)).await?;
    // Let the pods' readiness labels and the Redis rollout settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = pods(&client).await?;
    let objects_before = versions(&client).await?;
    ensure!(before.len() >= 4, "3 SFU pods and Redis under the previous release: {before:?}");

    // The rollout of the new operator: the old one gets SIGTERM, the new one starts.
    cluster.stop_operator();
    let t0 = Instant::now();
    cluster.start_operator(&Binaries::find()?.operator, "current")?;
    // The new release has reconciled the tenant: its own metrics say so.
    let url = cluster.operator()?.metrics_url();
    visio_e2e::wait_for("the new operator's first reconcile", Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            let text = visio_e2e::http_get(&url).await.unwrap_or_default();
            let n: f64 = text
                .lines()
                .filter(|l| l.starts_with("visio_reconcile_total{") && l.contains("controller=\"visiocluster\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            Ok((n >= 1.0).then_some(()))
        }
    })
    .await?;
    // Long enough for a template change to show: a changed pod template starts a rolling replacement
    // at once (new pods first), which this window would catch.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = pods(&client).await?;
    let objects_after = versions(&client).await?;
    let vc = vcs.get("visio").await?;

    let reapplied: Vec<&String> =
        objects_after.iter().filter(|(k, v)| objects_before.get(*k).is_some_and(|b| b != *v)).map(|(k, _)| k).collect();
    eprintln!("=== operator upgrade: previous release -> this build, {:.1} s", t0.elapsed().as_secs_f64());
    eprintln!("    pods before: {}, after: {}", before.len(), after.len());
    eprintln!("    objects the new release re-applied: {reapplied:?}");
    for (name, (uid, _)) in &before {
        let now = after.get(name).with_context(|| format!("pod {name} was deleted by the operator upgrade"))?;
        ensure!(&now.0 == uid, "pod {name} was replaced (uid {uid} -> {})", now.0);
        ensure!(!now.1, "pod {name} is being deleted after the operator upgrade");
    }
    let new: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    ensure!(new.is_empty(), "the operator upgrade created pods (a template change rolls the fleet): {new:?}");
    ensure!(ready(&vc), "still Ready after the operator upgrade: {:?}", vc.status);
    Ok(())
}
