//! Tenant isolation with the real RBAC authorizer and impersonation: a ministry's admin group gets
//! the `visio-tenant-admin` ClusterRole in its own namespace only (through the RoleBinding the
//! operator keeps from `spec.tenant.adminGroups`), and nothing in another ministry's namespace.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use visio_e2e::{client, kubectl, namespace, repo, wait_for};
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
    let bin = std::env::var_os("VISIO_E2E_BIN").context("VISIO_E2E_BIN is not set (run `make e2e`)")?;
    let out = std::process::Command::new(std::path::Path::new(&bin).join("kubectl"))
        .arg("--kubeconfig")
        .arg(visio_e2e::kubeconfig_path()?)
        .args(["auth", "can-i", verb, resource, "-n", ns, "--as", "agent-de-test", "--as-group", group])
        .output()?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => anyhow::bail!("kubectl auth can-i: {other:?} {}", String::from_utf8_lossy(&out.stderr)),
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
        let vc = json!({"apiVersion": "visio.io/v1alpha1", "kind": "VisioCluster", "metadata": {"name": "visio"},
            "spec": {"tenant": {"displayName": ns, "adminGroups": [group]}, "signaling": {"host": "visio.example.gouv.fr"},
                     "sfu": {"replicas": {"min": 1, "max": 2}, "network": {"mode": "podNetwork"}}}});
        vcs.patch("visio", &PatchParams::apply("e2e").force(), &Patch::Apply(&vc)).await?;
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
    Ok(())
}
