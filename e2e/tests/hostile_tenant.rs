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
        let mut probe = annotate("visio-sfu-1", &load);
        probe.push("--dry-run=server".into());
        Ok(run(&agent, probe)?.err())
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

/// One ValidatingAdmissionPolicy of manifests/install.yaml (the chart as shipped), applied as it is, with a
/// binding of the test's own: bound to the namespaces labelled `visio.io/e2e-hostile=<label>` only (the other
/// suites share this control plane) and reading `param` when the policy takes params.
fn bind_policy(policy: &str, label: &str, param: Option<&str>) -> Result<String> {
    let text = std::fs::read_to_string(repo().join("manifests/install.yaml"))?;
    let doc = text
        .split("\n---")
        .find(|d| d.contains("kind: ValidatingAdmissionPolicy\n") && d.contains(&format!("name: {policy}\n")))
        .ok_or_else(|| anyhow!("install.yaml ships the ValidatingAdmissionPolicy {policy}"))?;
    apply_shared(doc)?;
    let binding = format!("{policy}-{label}");
    let mut spec = json!({
        "policyName": policy,
        "validationActions": ["Deny"],
        "matchResources": {"namespaceSelector": {"matchLabels": {"visio.io/e2e-hostile": label}}}
    });
    if let Some(name) = param {
        spec["paramRef"] = json!({"name": name, "parameterNotFoundAction": "Deny"});
    }
    let b = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": binding}, "spec": spec});
    kubectl(&["apply", "-f", "-"], Some(&b.to_string()))?;
    Ok(doc.to_string())
}

/// `kubectl apply` of an object several tests of this binary apply at once (a cluster-scoped role or
/// policy): the loser of a creation race reads AlreadyExists, and applies again.
fn apply_shared(doc: &str) -> Result<()> {
    let mut last = None;
    for _ in 0..3 {
        match kubectl(&["apply", "-f", "-"], Some(doc)) {
            Ok(_) => return Ok(()),
            Err(e) if e.to_string().contains("AlreadyExists") => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("kubectl apply")))
}

/// A namespace labelled for the test's policy bindings, its tenant admins (`group`) bound to the chart's
/// `visio-tenant-admin` ClusterRole as the operator binds them.
async fn hostile_namespace(client: &kube::Client, ns: &'static str, label: &str, group: &str) -> Result<Tenant> {
    let tenant = Tenant::create(client, ns).await?;
    kubectl(&["label", "namespace", ns, &format!("visio.io/e2e-hostile={label}"), "--overwrite"], None)?;
    let text = std::fs::read_to_string(repo().join("manifests/install.yaml"))?;
    let role = text
        .split("\n---")
        .find(|d| d.contains("kind: ClusterRole\n") && d.contains("name: visio-tenant-admin\n"))
        .ok_or_else(|| anyhow!("install.yaml ships the visio-tenant-admin ClusterRole"))?;
    apply_shared(role)?;
    kubectl(
        &["create", "rolebinding", "tenant-admins", "-n", ns, "--clusterrole=visio-tenant-admin", "--group", group],
        None,
    )?;
    Ok(tenant)
}

/// `kubectl <args>` impersonating a member of `group`: Ok(stdout) if allowed, Err(stderr) if refused.
fn as_member(group: &str, args: &[&str], stdin: Option<&str>) -> Result<std::result::Result<String, String>> {
    let mut all = vec!["--as", "agent-de-test", "--as-group", group];
    all.extend_from_slice(args);
    let out = kubectl_out(&kubeconfig_path()?, &all, stdin)?;
    Ok(if out.ok { Ok(out.stdout) } else { Err(out.stderr) })
}

/// The platform's rules at admission: every case of e2e/corpus/platform.yaml, sent by a tenant admin
/// (impersonated) to the real apiserver with the chart's `visio-platform-rules` policy and the corpus's
/// VisioPlatform as its params, is allowed or refused exactly as the operator's own check decides it
/// (`platform::tests::the_corpus_is_decided_as_the_admission_policies_decide`), the refusal naming the field.
/// Also: the tenant admin cannot change or create a VisioPlatform.
#[tokio::test]
async fn the_platform_rules_are_enforced_at_admission_as_the_operator_decides_them() -> Result<()> {
    let corpus: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(repo().join("e2e/corpus/platform.yaml"))?)?;
    let client = client().await?;
    let group = "e2e:platform-admins";
    let tenant_ns = corpus["namespaces"]["tenant"].as_str().unwrap_or_default();
    let outsider_ns = corpus["namespaces"]["outsider"].as_str().unwrap_or_default();
    ensure!(tenant_ns == "e2e-platform-tenant" && outsider_ns == "e2e-platform-outsider", "the corpus's namespaces");
    let _a = hostile_namespace(&client, "e2e-platform-tenant", "platform", group).await?;
    let _b = hostile_namespace(&client, "e2e-platform-outsider", "platform", group).await?;
    let platform = json!({"apiVersion": "visio.io/v1alpha1", "kind": "VisioPlatform",
        "metadata": {"name": "e2e-platform-corpus"}, "spec": corpus["platform"]});
    kubectl(&["apply", "-f", "-"], Some(&platform.to_string()))?;
    bind_policy("visio-platform-rules", "platform", Some("e2e-platform-corpus"))?;

    let send = |case: &serde_json::Value| -> Result<std::result::Result<String, String>> {
        let kind = case["kind"].as_str().unwrap_or_default();
        let ns = corpus["namespaces"][case["namespace"].as_str().unwrap_or("tenant")].as_str().unwrap_or_default();
        let mut object = corpus["bases"][kind].clone();
        visio_e2e::merge_patch(&mut object, &case["patch"]);
        visio_e2e::merge_patch(
            &mut object,
            &json!({"apiVersion": "visio.io/v1alpha1", "kind": kind, "metadata": {"name": case["name"], "namespace": ns}}),
        );
        as_member(group, &["create", "--dry-run=server", "-f", "-"], Some(&object.to_string()))
    };
    // The binding takes a moment to reach admission: wait until the first refusal is refused.
    let cases = corpus["cases"].as_array().cloned().unwrap_or_default();
    let first_refusal = cases.iter().find(|c| c["expect"].is_string()).ok_or_else(|| anyhow!("a refused case"))?;
    wait_for("the platform policy in force", Duration::from_secs(30), || async { Ok(send(first_refusal)?.err()) })
        .await?;
    let mut refused = 0;
    for case in &cases {
        let name = case["name"].as_str().unwrap_or_default();
        match (case["expect"].as_str(), send(case)?) {
            (None, Ok(_)) => {}
            (None, Err(e)) => anyhow::bail!("{name}: allowed by the operator's check, refused at admission: {e}"),
            (Some(expect), Err(e)) => {
                ensure!(e.contains(expect), "{name}: the refusal names {expect}: {e}");
                ensure!(e.contains("visio-platform-rules"), "{name}: refused by the platform policy: {e}");
                refused += 1;
            }
            (Some(expect), Ok(_)) => {
                anyhow::bail!("{name}: refused by the operator's check ({expect}), allowed at admission")
            }
        }
    }
    ensure!(refused >= 20, "every rule attacked: {refused}");

    // The platform is the platform team's: a tenant admin can neither change nor create one.
    let patch = as_member(
        group,
        &["patch", "visioplatform", "e2e-platform-corpus", "--type=merge", "-p", r#"{"spec":{"tenantClasses":[]}}"#],
        None,
    )?;
    ensure!(patch.as_ref().is_err_and(|e| e.contains("forbidden")), "a tenant admin patches the platform: {patch:?}");
    let mine =
        json!({"apiVersion": "visio.io/v1alpha1", "kind": "VisioPlatform", "metadata": {"name": "mine"}, "spec": {}});
    let create = as_member(group, &["create", "-f", "-"], Some(&mine.to_string()))?;
    ensure!(create.as_ref().is_err_and(|e| e.contains("forbidden")), "a tenant admin creates a platform: {create:?}");
    eprintln!(
        "=== hostile tenant: {} corpus cases decided at admission as the operator decides them ({refused} refused)",
        cases.len()
    );
    Ok(())
}

/// The operator checks the platform's rules again before it builds anything: in the namespace of the suite
/// platform's `operator-check` class (e2e/platform.yaml), where no admission policy is bound, a VisioCluster
/// asking for `system-node-critical` and a RetentionPolicy against an endpoint of the cluster's network are refused
/// (`Ready=False`, reason `PlatformRule`, the field named, a Warning Event) and nothing is created; the
/// VisioCluster mended, its stack is deployed.
#[tokio::test]
async fn the_operator_builds_nothing_the_platform_does_not_allow() -> Result<()> {
    let ns = "e2e-platform-operator";
    let client = client().await?;
    let _tenant = Tenant::create(&client, ns).await?;
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), ns);
    // A PriorityClass of the cluster's own components, which this class does not allow (it allows none).
    let vc = visio_cluster("visio").ministry("Ministère hostile", "visio.example.gouv.fr").replicas(1, 2).pod_network();
    let critical = vc.clone().spec(json!({"sfu": {"scheduling": {"priorityClassName": "system-node-critical"}}}));
    apply(&vcs, "e2e", &critical.value()).await?;
    let message = wait_for("Ready=False, reason PlatformRule", Duration::from_secs(60), || async {
        let vc = vcs.get("visio").await?;
        Ok(condition(&vc, "Ready")
            .filter(|c| c.status == "False" && c.reason == "PlatformRule")
            .map(|c| c.message.clone()))
    })
    .await?;
    ensure!(
        message.contains("spec.sfu.scheduling.priorityClassName") && message.contains("operator-check"),
        "names the field and the class: {message}"
    );
    ensure!(!events(&client, ns, "PlatformRule").await?.is_empty(), "a PlatformRule Event");
    // Nothing of the stack: no pod, Service, Secret, ServiceAccount or RoleBinding of the operator's.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for kind in ["pods", "services", "secrets", "serviceaccounts", "rolebindings", "networkpolicies"] {
        let out =
            kubectl(&["get", kind, "-n", ns, "-l", "app.kubernetes.io/managed-by=visio-operator", "-o", "name"], None)?;
        ensure!(out.trim().is_empty(), "{kind} created for a refused VisioCluster: {out}");
    }

    let rps: Api<visio_operator::api::RetentionPolicy> = Api::namespaced(client.clone(), ns);
    let rp = json!({"apiVersion": "visio.io/v1alpha1", "kind": "RetentionPolicy", "metadata": {"name": "probe"},
        "spec": {"mode": "Enforce", "target": {"endpoint": "http://10.0.0.1:6443", "bucket": "meetings", "credentialsSecret": "s3"},
                 "rules": [{"dataClass": "recordings", "prefix": "interieur/recordings/", "maxAge": "720h"}]}});
    apply(&rps, "e2e", &rp).await?;
    let refused = wait_for("the policy refused", Duration::from_secs(60), || async {
        let rp = rps.get("probe").await?;
        let status = rp.status.unwrap_or_default();
        ensure!(status.last_run.is_none(), "a sweep ran against an endpoint the platform does not allow");
        Ok(status.conditions.into_iter().find(|c| c.type_ == "Ready" && c.reason == "PlatformRule").map(|c| c.message))
    })
    .await?;
    ensure!(refused.contains("spec.target"), "names the field: {refused}");

    // Mended within the rules: deployed.
    apply(&vcs, "e2e", &vc.value()).await?;
    wait_for("the mended stack's SFU pod", Duration::from_secs(60), || async {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        Ok(pods.get_opt("visio-sfu-0").await?.map(|_| ()))
    })
    .await?;
    // Nothing of the operator's anywhere but in the tenant's namespace: its children live with their owner.
    for ns in ["kube-system", "kube-public", "default"] {
        let out = kubectl(
            &[
                "get",
                "pods,services,secrets,roles,rolebindings,serviceaccounts,deployments,networkpolicies",
                "-n",
                ns,
                "-l",
                "app.kubernetes.io/managed-by=visio-operator",
                "-o",
                "name",
            ],
            None,
        )?;
        ensure!(out.trim().is_empty(), "objects of the operator's in {ns}: {out}");
    }
    eprintln!("=== hostile tenant: the operator refuses what the platform does not allow: {message}");
    Ok(())
}

/// A tenant admin may create Secrets, but not a long-lived token for an agent's ServiceAccount (the chart's
/// `visio-agent-no-legacy-tokens`); a token for its own ServiceAccounts stays possible.
#[tokio::test]
async fn a_tenant_admin_cannot_mint_a_token_for_an_agent() -> Result<()> {
    let ns = "e2e-hostile-tokens";
    let group = "e2e:token-admins";
    let client = client().await?;
    let _tenant = hostile_namespace(&client, ns, "tokens", group).await?;
    bind_policy("visio-agent-no-legacy-tokens", "tokens", None)?;
    let token = |sa: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": format!("{sa}-token"), "namespace": ns,
                         "annotations": {"kubernetes.io/service-account.name": sa}}})
        .to_string()
    };
    let refused = wait_for("the token policy in force", Duration::from_secs(30), || async {
        Ok(as_member(group, &["create", "--dry-run=server", "-f", "-"], Some(&token("visio-sfu-agent")))?.err())
    })
    .await?;
    ensure!(refused.contains("visio agent"), "the SFU agent's token: {refused}");
    let caption = as_member(group, &["create", "--dry-run=server", "-f", "-"], Some(&token("captions-caption-agent")))?;
    ensure!(caption.is_err(), "the caption agent's token: {caption:?}");
    let own = as_member(group, &["create", "--dry-run=server", "-f", "-"], Some(&token("ministry-app")))?;
    ensure!(own.is_ok(), "a token for the ministry's own ServiceAccount: {own:?}");
    eprintln!("=== hostile tenant: a token for an agent refused: {}", refused.trim());
    Ok(())
}

/// The operator writes only where a tenant lives: impersonating its ServiceAccount (with write rights in
/// both namespaces, as its ClusterRole gives), a pod in a namespace no tenant class lists is refused by the
/// chart's `visio-operator-tenant-classes`, one in a tenant's namespace is not.
#[tokio::test]
async fn the_operator_cannot_write_in_a_namespace_with_no_tenant() -> Result<()> {
    let client = client().await?;
    let platform = json!({"apiVersion": "visio.io/v1alpha1", "kind": "VisioPlatform", "metadata": {"name": "e2e-platform-writes"},
        "spec": {"tenantClasses": [{"name": "one", "namespaces": ["e2e-writes-tenant"]}]}});
    kubectl(&["apply", "-f", "-"], Some(&platform.to_string()))?;
    let policy = bind_policy("visio-operator-tenant-classes", "writes", Some("e2e-platform-writes"))?;
    let user = policy
        .split('\'')
        .find(|s| s.starts_with("system:serviceaccount:"))
        .ok_or_else(|| anyhow!("the policy names the operator's ServiceAccount"))?
        .to_string();
    let pod = |ns: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "planted", "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}})
        .to_string()
    };
    let mut tenants = vec![];
    for ns in ["e2e-writes-tenant", "e2e-writes-nobody"] {
        tenants.push(Tenant::create(&client, ns).await?);
        kubectl(&["label", "namespace", ns, "visio.io/e2e-hostile=writes", "--overwrite"], None)?;
        kubectl(&["create", "rolebinding", "operator-writes", "-n", ns, "--clusterrole=edit", "--user", &user], None)?;
    }
    let as_operator = |ns: &str| -> Result<std::result::Result<String, String>> {
        let out = kubectl_out(
            &kubeconfig_path()?,
            &["--as", &user, "create", "--dry-run=server", "-f", "-"],
            Some(&pod(ns)),
        )?;
        Ok(if out.ok { Ok(out.stdout) } else { Err(out.stderr) })
    };
    let refused = wait_for("the namespace policy in force", Duration::from_secs(30), || async {
        Ok(as_operator("e2e-writes-nobody")?.err())
    })
    .await?;
    ensure!(refused.contains("tenant classes"), "a namespace with no tenant: {refused}");
    let allowed = as_operator("e2e-writes-tenant")?;
    ensure!(allowed.is_ok(), "a tenant's namespace: {allowed:?}");
    eprintln!("=== hostile tenant: the operator's ServiceAccount refused where no tenant lives: {}", refused.trim());
    Ok(())
}

/// An edit of an object the operator owns is undone at the next reconcile and counted: a tenant admin
/// rewrites the TURN section of the LiveKit config Secret (the applied-hash annotation left as it was, so the
/// hash alone would not tell), and a cluster administrator widens the SFU agent's Role. Both are applied again, and `visio_owned_object_repairs_total` counts them.
#[tokio::test]
async fn an_edited_secret_or_role_of_the_operators_is_repaired_and_counted() -> Result<()> {
    let ns = "e2e-hostile-edit";
    let group = "e2e:edit-admins";
    let client = client().await?;
    let _tenant = hostile_namespace(&client, ns, "edit", group).await?;
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), ns);
    let vc = visio_cluster("visio").ministry("Ministère hostile", "visio.example.gouv.fr").replicas(1, 2).pod_network();
    apply(&vcs, "e2e", &vc.value()).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let config = visio_operator::builders::livekit_config::CONFIG_FILE;
    let original = wait_for("the LiveKit config Secret", Duration::from_secs(60), || async {
        Ok(secrets.get_opt("visio-livekit-config").await?.and_then(|s| s.data).and_then(|d| d.get(config).cloned()))
    })
    .await?;
    let text = String::from_utf8(original.0.clone())?;
    let before = visio_e2e::metric("visio_owned_object_repairs_total{kind=\"Secret\"}").await?.unwrap_or(0.0);

    // The tenant admin's edit (any change of the config: TURN, ports, the Redis address...), the
    // annotations untouched.
    let edited = format!("{text}\nturn:\n  enabled: true\n  udp_port: 3478\n");
    let patch = json!({"stringData": {config: edited}}).to_string();
    as_member(group, &["patch", "secret", "visio-livekit-config", "-n", ns, "--type=merge", "-p", &patch], None)?
        .map_err(|e| anyhow!("a tenant admin may write Secrets of its namespace: {e}"))?;
    wait_for("the Secret repaired", Duration::from_secs(60), || async {
        let now = secrets.get("visio-livekit-config").await?.data.and_then(|d| d.get(config).cloned());
        Ok((now.as_ref() == Some(&original)).then_some(()))
    })
    .await?;
    let after = wait_for("the repair counted", Duration::from_secs(20), || async {
        let n = visio_e2e::metric("visio_owned_object_repairs_total{kind=\"Secret\"}").await?.unwrap_or(0.0);
        Ok((n > before).then_some(n))
    })
    .await?;

    // A widened Role (a cluster administrator's edit: tenant admins cannot write Roles).
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), ns);
    let rules = wait_for("the agent's Role", Duration::from_secs(60), || async {
        Ok(roles.get_opt("visio-sfu-agent").await?.and_then(|r| r.rules))
    })
    .await?;
    let widened = json!({"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}).to_string();
    kubectl(&["patch", "role", "visio-sfu-agent", "-n", ns, "--type=merge", "-p", &widened], None)?;
    wait_for("the Role repaired", Duration::from_secs(60), || async {
        Ok((roles.get("visio-sfu-agent").await?.rules.as_ref() == Some(&rules)).then_some(()))
    })
    .await?;
    ensure!(
        visio_e2e::metric("visio_owned_object_repairs_total{kind=\"Role\"}").await?.unwrap_or(0.0) >= 1.0,
        "the Role's repair counted"
    );
    eprintln!(
        "=== hostile tenant: an edited LiveKit config Secret and a widened Role repaired (Secret repairs: {after})"
    );
    Ok(())
}

/// A ministry's namespace editor (the `edit` ClusterRole, a common grant) cannot change or delete the
/// NetworkPolicies, Services or Roles the operator keeps for the stack (the chart's `visio-owned-objects`);
/// the operator itself still applies them.
#[tokio::test]
async fn a_namespace_editor_cannot_change_the_objects_of_the_operator() -> Result<()> {
    let ns = "e2e-hostile-owned";
    let group = "e2e:owned-editors";
    let client = client().await?;
    let _tenant = hostile_namespace(&client, ns, "owned", group).await?;
    kubectl(&["create", "rolebinding", "editors", "-n", ns, "--clusterrole=edit", "--group", group], None)?;
    bind_policy("visio-owned-objects", "owned", None)?;
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), ns);
    let vc = visio_cluster("visio").ministry("Ministère hostile", "visio.example.gouv.fr").replicas(1, 2).pod_network();
    apply(&vcs, "e2e", &vc.value()).await?;
    let policies: Api<k8s_openapi::api::networking::v1::NetworkPolicy> = Api::namespaced(client.clone(), ns);
    wait_for("the SFU NetworkPolicy", Duration::from_secs(60), || async { Ok(policies.get_opt("visio-sfu").await?) })
        .await?;
    let refused = wait_for("the owned-objects policy in force", Duration::from_secs(30), || async {
        Ok(as_member(group, &["delete", "networkpolicy", "visio-sfu", "-n", ns, "--dry-run=server"], None)?.err())
    })
    .await?;
    ensure!(refused.contains("belongs to visio-operator"), "deleting the SFU NetworkPolicy: {refused}");
    let open = json!({"spec": {"ingress": [{}]}}).to_string();
    let widen =
        as_member(group, &["patch", "networkpolicy", "visio-redis", "-n", ns, "--type=merge", "-p", &open], None)?;
    ensure!(widen.as_ref().is_err_and(|e| e.contains("belongs to visio-operator")), "opening Redis to all: {widen:?}");
    let svc = as_member(group, &["label", "service", "visio-signaling", "-n", ns, "visio.io/x=y"], None)?;
    ensure!(svc.as_ref().is_err_and(|e| e.contains("belongs to visio-operator")), "a Service: {svc:?}");
    // The editor's own objects stay theirs.
    let own = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ministry-app", "namespace": ns},
        "spec": {"ports": [{"port": 80}]}});
    as_member(group, &["create", "-f", "-"], Some(&own.to_string()))?
        .map_err(|e| anyhow!("the editor's own Service: {e}"))?;
    as_member(group, &["delete", "service", "ministry-app", "-n", ns], None)?
        .map_err(|e| anyhow!("deleting it: {e}"))?;
    eprintln!("=== hostile tenant: a namespace editor cannot touch the operator's objects: {}", refused.trim());
    Ok(())
}
