//! Once converged, the operator writes nothing: counted from the apiserver's audit log by the identity
//! the operator runs as (user `visio-operator`, e2e/cluster), for every kind, never from our code. The
//! tenant makes the operator write every kind it can (each child kind of `runtime/children.rs`'s table,
//! its own pods, the three resources' status, Events), then it is watched for 60 s. Runs in its own test
//! binary, so no other test of the suite writes at the same time.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use visio_e2e::audit::{self, OPERATOR, WRITES};
use visio_e2e::fixtures::{ready_tenant, visio_cluster};
use visio_e2e::{client, wait_for};

const NS: &str = "e2e-idle";
/// How long the converged operator is watched.
const IDLE: Duration = Duration::from_secs(60);

/// Every kind the operator writes in a tenant's namespace: the children's table, Secrets and its pods.
const KINDS: [(&str, &str, &str); 12] = [
    ("", "Secret", "secrets"),
    ("", "Service", "services"),
    ("", "ServiceAccount", "serviceaccounts"),
    ("", "ResourceQuota", "resourcequotas"),
    ("", "LimitRange", "limitranges"),
    ("", "Pod", "pods"),
    ("apps", "Deployment", "deployments"),
    ("policy", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("networking.k8s.io", "NetworkPolicy", "networkpolicies"),
    ("networking.k8s.io", "Ingress", "ingresses"),
    ("rbac.authorization.k8s.io", "Role", "roles"),
    ("rbac.authorization.k8s.io", "RoleBinding", "rolebindings"),
];

/// The operator's requests in the tenant's namespace and cluster-wide ones, between two instants.
fn operator_writes(from: Timestamp, to: Timestamp) -> Result<BTreeMap<String, u64>> {
    let c = audit::read(&audit::log_path()?, from, to, &|ns: &str| ns.is_empty() || ns == NS)?;
    // Lease renewals are leader election's heartbeat, not a write of the tenant's state.
    Ok(c.of(OPERATOR, &WRITES).into_iter().filter(|(k, _)| !k.starts_with("leases.")).collect())
}

fn api(client: &kube::Client, group: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let version = if group == "visio.io" { "v1alpha1" } else { "v1" };
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), NS, &ar)
}

fn ready(o: &DynamicObject) -> bool {
    o.data["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

#[tokio::test]
async fn a_converged_operator_writes_nothing() -> Result<()> {
    let client = client().await?;
    let from = Timestamp::now();
    // A tenant with every part the operator can write: quota and LimitRange, admin Role and binding,
    // an Ingress, a CaptionPool and a RetentionPolicy sweeping the suite's S3 server.
    let s3 = visio_e2e::s3::S3::from_env()?;
    visio_e2e::s3::create_bucket(&s3.client(), "idle").await?;
    visio_e2e::namespace(&client, NS).await?;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3", "namespace": NS},
        "stringData": {"accessKeyId": s3.creds.access_key_id, "secretAccessKey": s3.creds.secret_access_key}});
    let policy = json!({"apiVersion": "visio.io/v1alpha1", "kind": "RetentionPolicy", "metadata": {"name": "idle", "namespace": NS},
        "spec": {"mode": "DryRun", "target": {"endpoint": s3.endpoint, "bucket": "idle", "credentialsSecret": "s3"},
                 "rules": [{"dataClass": "recordings", "prefix": "recordings/", "maxAge": "720h"}]}});
    let pool = json!({"apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool", "metadata": {"name": "captions", "namespace": NS},
        "spec": {"clusterRef": {"name": "visio"}, "backend": {"gpu": {"count": 0}, "replicas": {"min": 1, "max": 2}},
                 "transcribers": {"replicas": {"min": 1, "max": 2}}}});
    for obj in [secret, policy, pool] {
        let o: DynamicObject = serde_json::from_value(obj.clone())?;
        visio_e2e::dynamic_api(&client, &obj)?.create(&PostParams::default(), &o).await?;
    }
    let vc = visio_cluster("visio")
        .ministry("Ministère de la Culture", "visio.culture.gouv.fr")
        .replicas(2, 3)
        .pod_network()
        .spec(json!({
            "signaling": {"ingressClassName": "nginx"},
            "recordings": {"endpoint": s3.endpoint, "bucket": "idle", "prefix": "recordings/"},
            "tenant": {"adminGroups": ["culture-admins"],
                       "quota": {"hard": {"requests.cpu": "200", "limits.memory": "800Gi", "pods": "50"}},
                       "limits": {"defaultRequest": {"cpu": "100m"}, "max": {"memory": "64Gi"}}}}));
    ready_tenant(&client, NS, vc, Duration::from_secs(120)).await?;
    for (kind, plural) in [("CaptionPool", "captionpools"), ("RetentionPolicy", "retentionpolicies")] {
        let api = api(&client, "visio.io", kind, plural);
        wait_for(&format!("the {kind} Ready"), Duration::from_secs(120), || {
            let api = api.clone();
            async move { Ok(api.list(&ListParams::default()).await?.items.iter().all(ready).then_some(())) }
        })
        .await?;
    }
    // Every kind is there, so every kind is watched below.
    let mut missing = vec![];
    for (group, kind, plural) in KINDS {
        let sel = ListParams::default().labels("app.kubernetes.io/managed-by=visio-operator");
        if api(&client, group, kind, plural).list_metadata(&sel).await?.items.is_empty() {
            missing.push(kind);
        }
    }
    assert!(missing.is_empty(), "the tenant should make the operator write every kind; none of {missing:?}");
    // Let the last status writes and the Deployments' rollouts settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start = Timestamp::now();
    let converging = operator_writes(from, start)?;
    assert!(
        converging.keys().any(|k| k.starts_with("pods create")) && converging.keys().any(|k| k.contains("/status")),
        "the audit log should hold the operator's pod creations and status writes while it converged (is it run as \
         user {OPERATOR}?): {converging:?}"
    );
    tokio::time::sleep(IDLE).await;
    let end = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = operator_writes(start, end).context("the operator's writes while idle")?;
    assert!(idle.is_empty(), "the operator's writes in {} s idle, by request: {idle:?}", IDLE.as_secs());
    Ok(())
}
