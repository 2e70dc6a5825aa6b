//! Once converged, the operator writes nothing: counted by the apiserver's own
//! `apiserver_request_total`, not by our code. Runs in its own test binary, so no other test
//! of the suite writes at the same time.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use visio_e2e::fixtures::{ready_tenant, visio_cluster};
use visio_e2e::{client, kubectl};

/// Write requests per resource, from the apiserver's metrics, for the resources the operator writes.
fn writes() -> Result<BTreeMap<String, f64>> {
    let text = kubectl(&["get", "--raw", "/metrics"], None)?;
    let ours = [
        "visioclusters",
        "captionpools",
        "retentionpolicies",
        "pods",
        "secrets",
        "services",
        "deployments",
        "poddisruptionbudgets",
        "ingresses",
        "events",
    ];
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let verb = ["verb=\"POST\"", "verb=\"PUT\"", "verb=\"PATCH\"", "verb=\"DELETE\"", "verb=\"APPLY\""]
            .iter()
            .any(|v| line.contains(v));
        let resource = ours.iter().find(|r| line.contains(&format!("resource=\"{r}\"")));
        if let (true, Some(r)) = (verb, resource) {
            let v: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            *out.entry(r.to_string()).or_insert(0.0) += v;
        }
    }
    Ok(out)
}

#[tokio::test]
async fn a_converged_operator_writes_nothing() -> Result<()> {
    let client = client().await?;
    let vc = visio_cluster("visio")
        .ministry("Ministère de la Culture", "visio.culture.gouv.fr")
        .replicas(2, 3)
        .pod_network();
    ready_tenant(&client, "e2e-idle", vc, Duration::from_secs(90)).await?;
    // Let the last pod label patches and the Redis Deployment's rollout settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = writes()?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = writes()?;
    let delta: BTreeMap<_, _> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    assert!(delta.is_empty(), "writes while idle, by resource: {delta:?}");
    Ok(())
}
