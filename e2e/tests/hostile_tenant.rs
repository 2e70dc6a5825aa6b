//! A hostile tenant against the real apiserver (issue #19; the suite grows with each control). A tenant
//! admin may create Secrets in its namespace: one named like a child the operator would make
//! (`<vc>-livekit-config`) must not be taken over by the operator's forced server-side apply, nor
//! deleted with the VisioCluster. The VisioCluster says `Conflict`, naming the object.

use std::time::Duration;

use anyhow::{ensure, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use visio_e2e::fixtures::{apply, condition, visio_cluster};
use visio_e2e::{client, events, wait_for, Tenant};
use visio_operator::api::VisioCluster;

#[tokio::test]
async fn an_object_planted_under_a_childs_name_is_not_adopted_nor_deleted() -> Result<()> {
    let ns = "e2e-hostile-adopt";
    let client = client().await?;
    let _tenant = Tenant::create(&client, ns).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let planted: Secret = serde_json::from_value(json!({
        "metadata": {"name": "visio-livekit-config", "labels": {"planted": "by-the-tenant"}},
        "stringData": {"livekit.yaml": "turn:\n  enabled: true\n  udp_port: 3478\n"}
    }))?;
    secrets.create(&PostParams::default(), &planted).await?;
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), ns);
    let vc = visio_cluster("visio").ministry("Ministère hostile", "visio.example.gouv.fr").replicas(1, 2).pod_network();
    apply(&vcs, "e2e", &vc.value()).await?;

    let message = wait_for("Ready=False, reason Conflict", Duration::from_secs(60), || async {
        let vc = vcs.get("visio").await?;
        let ready = condition(&vc, "Ready");
        Ok(ready.filter(|c| c.status == "False" && c.reason == "Conflict").map(|c| c.message.clone()))
    })
    .await?;
    ensure!(message.contains("Secret e2e-hostile-adopt/visio-livekit-config"), "names the object: {message}");
    ensure!(!events(&client, ns, "Conflict").await?.is_empty(), "a Conflict Event");
    let after = secrets.get("visio-livekit-config").await?;
    ensure!(after.metadata.owner_references.is_none(), "not adopted: {:?}", after.metadata.owner_references);
    ensure!(after.metadata.labels.unwrap_or_default().get("planted").map(String::as_str) == Some("by-the-tenant"));

    // Deleting the VisioCluster leaves the tenant's own object where it was.
    vcs.delete("visio", &DeleteParams::default()).await?;
    wait_for("the VisioCluster gone", Duration::from_secs(60), || async {
        Ok(vcs.get_opt("visio").await?.is_none().then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(secrets.get_opt("visio-livekit-config").await?.is_some(), "the planted Secret was deleted");
    eprintln!("=== hostile tenant: a Secret planted under a child's name: not adopted, not deleted; Ready=False Conflict: {message}");
    Ok(())
}
