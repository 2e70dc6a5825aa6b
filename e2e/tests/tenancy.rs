//! Tenant isolation with the real RBAC authorizer and impersonation: a ministry's admin group gets
//! the `visio-tenant-admin` ClusterRole in its own namespace only (through the RoleBinding the
//! operator keeps from `spec.tenant.adminGroups`), and nothing in another ministry's namespace.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{LimitRange, Pod, ResourceQuota};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::Api;
use serde_json::json;
use visio_e2e::fixtures::{apply, visio_cluster};
use visio_e2e::{client, events, kubectl, namespace, repo, wait_for, Tenant};
use visio_operator::api::VisioCluster;

/// The tenant admin ClusterRole as the chart ships it (from the rendered manifests).
fn tenant_admin_role() -> Result<String> {
    let text = std::fs::read_to_string(repo().join("manifests/install.yaml"))?;
    text.split("\n---")
        .find(|d| d.contains("kind: ClusterRole\n") && d.contains("name: visio-tenant-admin"))
        .map(str::to_string)
        .context("manifests/install.yaml ships the visio-tenant-admin ClusterRole")
}

/// `kubectl auth can-i` as a member of `group` (it prints yes or no, and exits 1 on no).
fn can(group: &str, verb: &str, resource: &str, ns: &str) -> Result<bool> {
    let args = ["auth", "can-i", verb, resource, "-n", ns, "--as", "agent-de-test", "--as-group", group];
    let out = visio_e2e::process::kubectl_out(&visio_e2e::kubeconfig_path()?, &args, None)?;
    match out.stdout.trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => anyhow::bail!("kubectl auth can-i: {other:?} {}", out.stderr),
    }
}

#[tokio::test]
async fn each_ministry_administers_its_own_namespace_only() -> Result<()> {
    let client = client().await?;
    kubectl(&["apply", "-f", "-"], Some(&tenant_admin_role()?))?;
    let tenants = [("e2e-tenant-sante", "oidc:admins-sante"), ("e2e-tenant-culture", "oidc:admins-culture")];
    for (ns, group) in tenants {
        namespace(&client, ns).await?;
        let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), ns);
        let vc = visio_cluster("visio")
            .ministry(ns, "visio.example.gouv.fr")
            .spec(json!({"tenant": {"adminGroups": [group]}}))
            .replicas(1, 2)
            .pod_network();
        apply(&vcs, "e2e", &vc.value()).await?;
    }
    for (ns, group) in tenants {
        let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
        let rb = wait_for("tenant admins' RoleBinding", Duration::from_secs(60), || async {
            Ok(rbs.get_opt("visio-tenant-admins").await?)
        })
        .await?;
        assert_eq!(rb.role_ref.name, "visio-tenant-admin");
        let subjects = rb.subjects.unwrap_or_default();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].name, group);
    }
    let (a, a_group) = tenants[0];
    let (b, _) = tenants[1];
    // In its own namespace: manage the custom resources, its secrets, read its pods and Events.
    for (verb, resource) in [
        ("create", "visioclusters.visio.io"),
        ("delete", "captionpools.visio.io"),
        ("patch", "retentionpolicies.visio.io"),
        ("get", "visioclusters.visio.io/status"),
        ("get", "secrets"),
        ("list", "pods"),
        ("watch", "events"),
        ("get", "resourcequotas"),
        ("list", "limitranges"),
    ] {
        assert!(can(a_group, verb, resource, a)?, "{a_group} may {verb} {resource} in {a}");
    }
    // In another ministry's namespace: nothing.
    for (verb, resource) in [
        ("get", "visioclusters.visio.io"),
        ("list", "visioclusters.visio.io"),
        ("watch", "captionpools.visio.io"),
        ("list", "retentionpolicies.visio.io"),
        ("get", "secrets"),
        ("list", "secrets"),
        ("list", "pods"),
    ] {
        assert!(!can(a_group, verb, resource, b)?, "{a_group} must not {verb} {resource} in {b}");
    }
    // Nor anything cluster-wide, nor the power to grant itself more.
    assert!(!can(a_group, "list", "visioclusters.visio.io", "default")?);
    assert!(!can(a_group, "create", "rolebindings", a)?, "admins cannot widen their own rights");
    assert!(!can(a_group, "patch", "networkpolicies", a)?, "admins cannot open the stack's NetworkPolicies");
    for (verb, resource) in [("patch", "resourcequotas"), ("delete", "resourcequotas"), ("create", "limitranges")] {
        assert!(!can(a_group, verb, resource, a)?, "admins read their quota and LimitRange, never change them");
    }
    Ok(())
}

fn quantities(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
}

/// `spec.tenant.quota` and `spec.tenant.limits`: the operator keeps a ResourceQuota and a LimitRange with the
/// spec's values (the apiserver enforces them: the quota controller fills `status.hard`, the LimitRanger refuses a
/// pod above `max`), follows spec changes, reports a quota too small for `spec.sfu.replicas.min` as
/// `Degraded`/`QuotaTooSmall` with a Warning Event, and deletes both when the fields go.
#[tokio::test]
async fn quota_and_limit_range_follow_the_spec() -> Result<()> {
    let client = client().await?;
    let ns = "e2e-tenant-quota";
    let _tenant = Tenant::create(&client, ns).await?;
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), ns);
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
    let limit_ranges: Api<LimitRange> = Api::namespaced(client.clone(), ns);
    let set_tenant = |tenant: serde_json::Value| {
        let vcs = vcs.clone();
        async move {
            let vc = visio_cluster("visio")
                .ministry("Ministère de la Culture", "visio.culture.gouv.fr")
                .spec(json!({"tenant": tenant}))
                .replicas(1, 2)
                .pod_network();
            apply(&vcs, "e2e", &vc.value()).await
        }
    };
    set_tenant(json!({"quota": {"hard": {"requests.cpu": "20", "limits.memory": "40Gi", "pods": "10"}},
                 "limits": {"defaultRequest": {"cpu": "100m"}, "max": {"memory": "8Gi"}}}))
    .await?;

    // Created with the spec's values, owned by the VisioCluster, and enforced.
    let want = quantities(&[("requests.cpu", "20"), ("limits.memory", "40Gi"), ("pods", "10")]);
    let quota =
        wait_for("the quota, enforced (status.hard from the quota controller)", Duration::from_secs(90), || async {
            Ok(quotas
                .get_opt("visio-quota")
                .await?
                .filter(|q| q.status.as_ref().and_then(|s| s.hard.as_ref()) == Some(&want)))
        })
        .await?;
    assert_eq!(quota.spec.as_ref().and_then(|s| s.hard.as_ref()), Some(&want));
    let vc = vcs.get("visio").await?;
    let owners = quota.metadata.owner_references.clone().unwrap_or_default();
    assert!(owners.iter().any(|o| Some(&o.uid) == vc.metadata.uid.as_ref()), "owned by the VisioCluster: {owners:?}");
    assert_eq!(quota.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"], "visio-operator");
    let lr = wait_for("the LimitRange", Duration::from_secs(60), || async {
        Ok(limit_ranges.get_opt("visio-limits").await?)
    })
    .await?;
    let item = &lr.spec.as_ref().unwrap().limits[0];
    assert_eq!(item.type_, "Container");
    assert_eq!(item.max.as_ref(), Some(&quantities(&[("memory", "8Gi")])));
    // The apiserver's own LimitRange defaulting (default <- max, defaultRequest <- default), which the
    // operator's fit check models (builders/quota.rs).
    assert_eq!(item.default.as_ref(), Some(&quantities(&[("memory", "8Gi")])));
    assert_eq!(item.default_request.as_ref(), Some(&quantities(&[("cpu", "100m"), ("memory", "8Gi")])));
    // Used figures arrive once the stack's pods count against it.
    wait_for("quota usage counting the stack's pods", Duration::from_secs(90), || async {
        let q = quotas.get("visio-quota").await?;
        let used = q.status.and_then(|s| s.used).unwrap_or_default();
        Ok(used.get("pods").filter(|p| p.0 != "0").map(|_| ()))
    })
    .await?;
    // The LimitRanger refuses a pod above max.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let greedy: Pod = serde_json::from_value(json!({"metadata": {"name": "greedy"}, "spec": {"containers": [{
        "name": "c", "image": "busybox", "resources": {"limits": {"memory": "16Gi", "cpu": "1"}}}]}}))?;
    match pods.create(&Default::default(), &greedy).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(s.message.contains("maximum memory usage per Container is 8Gi"), "{}", s.message);
        }
        other => anyhow::bail!("a pod above the LimitRange max was not refused: {other:?}"),
    }

    // A spec change reaches the objects; a quota too small for spec.sfu.replicas.min is reported.
    set_tenant(json!({"quota": {"hard": {"requests.cpu": "20", "limits.memory": "40Gi", "pods": "1"}},
                 "limits": {"defaultRequest": {"cpu": "100m"}, "max": {"memory": "8Gi"}}}))
    .await?;
    let want = quantities(&[("requests.cpu", "20"), ("limits.memory", "40Gi"), ("pods", "1")]);
    wait_for("the quota updated", Duration::from_secs(60), || async {
        Ok(quotas.get("visio-quota").await?.spec.and_then(|s| s.hard).filter(|h| *h == want))
    })
    .await?;
    let degraded = wait_for("Degraded=True QuotaTooSmall", Duration::from_secs(60), || async {
        let vc = vcs.get("visio").await?;
        Ok(vc
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Degraded" && c.status == "True"))
            .filter(|c| c.reason == "QuotaTooSmall"))
    })
    .await?;
    assert!(degraded.message.starts_with("spec.tenant.quota.hard[pods]: "), "{}", degraded.message);
    assert!(degraded.message.contains("need 2"), "an SFU pod and the managed Redis: {}", degraded.message);
    let warning = wait_for("the QuotaTooSmall Warning Event", Duration::from_secs(30), || async {
        Ok(events(&client, ns, "QuotaTooSmall").await?.into_iter().next())
    })
    .await?;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));

    // Removed from the spec: both go, and the condition clears.
    set_tenant(json!({})).await?;
    wait_for("quota and LimitRange deleted", Duration::from_secs(60), || async {
        let gone =
            quotas.get_opt("visio-quota").await?.is_none() && limit_ranges.get_opt("visio-limits").await?.is_none();
        Ok(gone.then_some(()))
    })
    .await?;
    wait_for("Degraded cleared", Duration::from_secs(60), || async {
        let vc = vcs.get("visio").await?;
        let still = vc
            .status
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Degraded" && c.reason == "QuotaTooSmall"));
        Ok((!still).then_some(()))
    })
    .await?;
    Ok(())
}
