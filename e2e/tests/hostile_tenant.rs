//! A hostile tenant against the real apiserver (issue #19; the suite grows with each control). A tenant
//! admin may create Secrets in its namespace: one named like a child the operator would make
//! (`<vc>-livekit-config`) must not be taken over by the operator's forced server-side apply, nor
//! deleted with the VisioCluster. The VisioCluster says `Conflict`, naming the object.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use visio_e2e::chart::service_account_kubeconfig;
use visio_e2e::fixtures::{apply, condition, visio_cluster};
use visio_e2e::process::{kubectl, kubectl_out};
use visio_e2e::{client, events, kubeconfig_path, repo, wait_for, Tenant};
use visio_operator::api::VisioCluster;
use visio_operator::pod_protocol::{render_load, Load};

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

/// The ValidatingAdmissionPolicies the chart ships (`admissionPolicies.enabled`, on by default), as
/// rendered into manifests/install.yaml, applied to the suite's control plane.
fn install_admission_policies() -> Result<()> {
    let text = std::fs::read_to_string(repo().join("manifests/install.yaml"))?;
    let policies: Vec<&str> = text
        .split("\n---")
        .filter(|d| d.contains("kind: ValidatingAdmissionPolicy") && d.contains("name: visio-agent-own-pod\n"))
        .collect();
    ensure!(policies.len() == 2, "install.yaml holds the agent's policy and its binding: {}", policies.len());
    let joined = policies.join("\n---\n");
    // The policy names what the agent writes: the same keys as the agent's code.
    for key in [visio_operator::pod_protocol::LOAD, visio_operator::agent::pod::DELETION_COST] {
        ensure!(joined.contains(key), "the policy allows {key}");
    }
    for suffix in ["-sfu-agent", "-caption-agent"] {
        ensure!(joined.contains(suffix), "the policy matches the agents' ServiceAccounts ({suffix})");
    }
    kubectl(&["apply", "-f", "-"], Some(&joined))?;
    Ok(())
}

/// `kubectl annotate`/`label` as the holder of `kubeconfig`: Ok(()) if allowed, the refusal otherwise.
fn as_holder(kubeconfig: &Path, args: &[&str]) -> Result<std::result::Result<(), String>> {
    let out = kubectl_out(kubeconfig, args, None)?;
    Ok(if out.ok { Ok(()) } else { Err(out.stderr) })
}

#[tokio::test]
async fn an_agent_token_changes_only_its_own_pods_reported_annotations() -> Result<()> {
    let ns = "e2e-hostile-agent";
    let client = client().await?;
    let _tenant = Tenant::create(&client, ns).await?;
    install_admission_policies()?;
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), ns);
    let vc = visio_cluster("visio").ministry("Ministère hostile", "visio.example.gouv.fr").replicas(2, 2).pod_network();
    apply(&vcs, "e2e", &vc.value()).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let uid = wait_for("two SFU pods", Duration::from_secs(60), || async {
        let a = pods.get_opt("visio-sfu-0").await?;
        let b = pods.get_opt("visio-sfu-1").await?;
        Ok(a.zip(b).and_then(|(a, _)| a.metadata.uid))
    })
    .await?;

    // The kubelet's token: bound to the pod, so the apiserver tells the pod's name.
    let dir = tempfile_dir(ns)?;
    let bound = kubectl(
        &[
            "create",
            "token",
            "visio-sfu-agent",
            "-n",
            ns,
            "--duration",
            "10m",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "visio-sfu-0",
            "--bound-object-uid",
            &uid,
        ],
        None,
    )?;
    let agent = dir.join("agent.kubeconfig");
    service_account_kubeconfig(&kubeconfig_path()?, &agent, bound.trim())?;
    let load = format!("visio.io/load={}", render_load(&Load::default()));
    let annotate = |pod: &str, kv: &str| {
        vec!["annotate", "pod", "-n", ns, pod, kv, "--overwrite"].into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |kc: &Path, args: Vec<String>| as_holder(kc, &args.iter().map(String::as_str).collect::<Vec<_>>());

    // The policy takes a moment to reach the apiserver's admission: wait until another pod is refused.
    let refused = wait_for("the agent policy in force", Duration::from_secs(30), || async {
        Ok(run(&agent, annotate("visio-sfu-1", &load))?.err())
    })
    .await?;
    ensure!(refused.contains("only its own pod"), "another pod, refused by the policy: {refused}");
    // Its own pod's load: allowed (what the agent does all day).
    run(&agent, annotate("visio-sfu-0", &load))?.map_err(|e| anyhow!("the agent's own load refused: {e}"))?;
    // Its own pod's operator marks and routing labels: refused.
    let end = run(&agent, annotate("visio-sfu-0", "visio.io/end-sessions=true"))?;
    ensure!(end.as_ref().is_err_and(|e| e.contains("only the annotations it reports")), "end-sessions: {end:?}");
    let label = vec!["label", "pod", "-n", ns, "visio-sfu-0", "visio.io/serving=false", "--overwrite"];
    let serving = run(&agent, label.into_iter().map(String::from).collect())?;
    ensure!(serving.as_ref().is_err_and(|e| e.contains("labels")), "the serving label: {serving:?}");

    // A token of the same ServiceAccount not bound to a pod (TokenRequest without a bound object, or a
    // legacy token Secret a tenant admin creates): no pod is its own.
    let unbound = kubectl(&["create", "token", "visio-sfu-agent", "-n", ns, "--duration", "10m"], None)?;
    let loose = dir.join("unbound.kubeconfig");
    service_account_kubeconfig(&kubeconfig_path()?, &loose, unbound.trim())?;
    let r = run(&loose, annotate("visio-sfu-0", &load))?;
    ensure!(r.as_ref().is_err_and(|e| e.contains("only its own pod")), "an unbound token: {r:?}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let legacy: Secret = serde_json::from_value(json!({
        "metadata": {"name": "minted-agent-token", "annotations": {"kubernetes.io/service-account.name": "visio-sfu-agent"}},
        "type": "kubernetes.io/service-account-token"
    }))?;
    secrets.create(&PostParams::default(), &legacy).await?;
    let minted = wait_for("the token controller fills the minted Secret", Duration::from_secs(30), || async {
        let s = secrets.get("minted-agent-token").await?;
        Ok(s.data.and_then(|d| d.get("token").map(|t| String::from_utf8_lossy(&t.0).into_owned())))
    })
    .await;
    // The tokens controller fills it (kube-controller-manager runs with the signing key): a tenant
    // admin can mint an agent token, and it must be refused like the unbound one.
    let minted = minted?;
    let kc = dir.join("minted.kubeconfig");
    service_account_kubeconfig(&kubeconfig_path()?, &kc, &minted)?;
    let r = run(&kc, annotate("visio-sfu-1", &load))?;
    ensure!(r.as_ref().is_err_and(|e| e.contains("only its own pod")), "a minted legacy token: {r:?}");
    eprintln!(
        "=== hostile tenant: an agent token changes only its own pod's reported annotations (another pod: {})",
        refused.trim()
    );
    Ok(())
}

/// A directory of the test's own for the kubeconfigs it writes (removed with the machine's /tmp).
fn tempfile_dir(name: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("visio-e2e-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
