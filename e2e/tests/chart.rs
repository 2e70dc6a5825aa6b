//! The Helm chart (`helm/visio-operator`) and the plain manifests rendered from it.
//!
//! - the chart lints, renders with default and non-default values, and refuses wrong values
//!   with a message naming the key (values.schema.json);
//! - its CRDs and `manifests/install.yaml` have not drifted from their sources (`make manifests`);
//! - its ClusterRole and Role grant nothing outside [`ALLOWED`], the allow-list kept here with
//!   the code path behind each grant, and no wildcard;
//! - what it renders passes `kubectl apply --dry-run=server` under Pod Security "restricted";
//! - the RBAC proof: in a control plane of its own (the suite's one already runs an operator
//!   with admin rights, and two operators on one VisioCluster would fight), `helm install`,
//!   `helm upgrade` and `helm uninstall` do what docs/install.md says, and the operator binary,
//!   authenticated only by a token of the chart's ServiceAccount, takes the leader Lease, takes
//!   a tenant to Ready, prunes, scales down and publishes Events without a single Forbidden.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use visio_e2e::chart::{
    chart, create_operator_namespace, helm, helm_ok, ready_as, refused_requests, service_account_kubeconfig,
    wait_as_operator, NAMESPACE, RELEASE, SERVICE_ACCOUNT,
};
use visio_e2e::fixtures::visio_cluster;
use visio_e2e::own::{OperatorRun, OwnCluster};
use visio_e2e::ports;
use visio_e2e::process::{kubectl_at, kubectl_out, operator_bin, run};
use visio_e2e::{http_get, repo, wait_for};

/// One permission the operator needs, and the code that needs it.
struct Grant {
    /// Where the grant holds.
    scope: Scope,
    group: &'static str,
    resource: &'static str,
    /// Limited to these object names (empty: any name).
    names: &'static [&'static str],
    verbs: &'static [&'static str],
    why: &'static str,
}

/// Where a grant holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// Everywhere (the chart's ClusterRole, bound by a ClusterRoleBinding).
    Cluster,
    /// The operator's own namespace (the chart's Role).
    OwnNamespace,
    /// Tenant namespaces only: the visio-operator-tenant-secrets ClusterRole, which the chart binds
    /// nowhere and the operator binds to itself where a VisioCluster or RetentionPolicy lives.
    Tenant,
}

/// A cluster-wide grant on any object.
const fn cluster(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    why: &'static str,
) -> Grant {
    Grant { scope: Scope::Cluster, group, resource, names: &[], verbs, why }
}

/// The allow-list: every (group, resource, name, verb) the chart's ClusterRole and Role may
/// grant. The test fails on a grant missing from here (review it, then add it with its reason)
/// and on an entry here the chart no longer grants (remove it). Server-side apply is a `patch`,
/// and the apiserver also asks for `create` when the object does not exist yet.
const ALLOWED: &[Grant] = &[
    cluster(
        "visio.io",
        "visioclusters",
        &["get", "list", "watch"],
        "controllers/visiocluster/mod.rs controller() watches them; controllers/captionpool/mod.rs controller() watches them \
              and reconcile_pool() gets a pool's cluster",
    ),
    cluster("visio.io", "captionpools", &["list", "watch"], "controllers/captionpool/mod.rs controller()"),
    cluster("visio.io", "retentionpolicies", &["list", "watch"], "controllers/retentionpolicy/mod.rs controller()"),
    cluster("visio.io", "visioplatforms", &["list", "watch"], "runtime/platform.rs Platform::run(): the --platform rules"),
    cluster(
        "visio.io",
        "visioclusters/status",
        &["patch"],
        "controllers/visiocluster/status.rs write_status(): server-side apply of /status",
    ),
    cluster("visio.io", "captionpools/status", &["patch"], "controllers/captionpool/status.rs write_status()"),
    cluster("visio.io", "retentionpolicies/status", &["patch"], "controllers/retentionpolicy/status.rs patch_status()"),
    cluster(
        "visio.io",
        "visioclusters/finalizers",
        &["update"],
        "builders/meta.rs owner_reference(): blockOwnerDeletion on every child, which the \
              OwnerReferencesPermissionEnforcement admission plugin (on in e2e/cluster, and OpenShift) allows only \
              to who may update the owner's finalizers",
    ),
    cluster("visio.io", "captionpools/finalizers", &["update"], "builders/meta.rs owner_reference(), as above"),
    cluster("visio.io", "retentionpolicies/finalizers", &["update"], "builders/meta.rs owner_reference(), as above"),
    cluster(
        "",
        "pods",
        &["get", "list", "watch", "create", "patch", "delete"],
        "list/watch: runtime/watch.rs child_stream(); create: apply::create() of SFU pods; patch: \
              runtime/pods.rs patch_pod_meta() (drain, warn, end-sessions, routing labels); delete: \
              apply::delete() of drained pods; get: held so the operator may write the agent Role \
              (builders/agent.rs access(): pods get/list/watch/patch), RBAC's escalation check",
    ),
    cluster(
        "",
        "nodes",
        &["list", "watch"],
        "runtime/nodes.rs CordonChanges::run(): a pod on a cordoned node is replaced and drained",
    ),
    Grant {
        scope: Scope::Tenant,
        group: "",
        resource: "secrets",
        names: &[],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "list/watch: runtime/secrets.rs SecretCaches (one watch per tenant namespace); create/patch: \
              secrets::ensure_secret() of the LiveKit config, credentials and caption keys; delete: \
              apply::delete_orphans(); get: controllers/visiocluster/dereference.rs (spec.keys, Redis password), \
              controllers/retentionpolicy/dereference.rs (credentialsSecret), ensure_secret() before the cache is full",
    },
    cluster(
        "",
        "services",
        &["list", "watch", "create", "patch", "delete"],
        "child_stream(), apply::ensure(), apply::delete_orphans() (signaling, media, TURN, Redis)",
    ),
    cluster(
        "",
        "serviceaccounts",
        &["list", "watch", "create", "patch", "delete"],
        "child_stream(), apply::ensure(), apply::delete_orphans() (the agent's ServiceAccount)",
    ),
    cluster(
        "apps",
        "deployments",
        &["list", "watch", "create", "patch", "delete"],
        "child_stream(), apply::ensure(), apply::delete_orphans() (managed Redis)",
    ),
    cluster(
        "policy",
        "poddisruptionbudgets",
        &["list", "watch", "create", "patch", "delete"],
        "child_stream(), apply::ensure(), apply::delete_orphans() (the SFU PDB)",
    ),
    cluster(
        "networking.k8s.io",
        "ingresses",
        &["list", "watch", "create", "patch", "delete"],
        "child_stream(), apply::ensure(), apply::delete_orphans() (the signaling Ingress)",
    ),
    cluster(
        "networking.k8s.io",
        "networkpolicies",
        &["list", "watch", "create", "patch", "delete"],
        "child_stream(), apply::ensure(), apply::delete_orphans() (builders/network.rs: SFU ingress, Redis isolation)",
    ),
    cluster(
        "rbac.authorization.k8s.io",
        "roles",
        &["list", "watch", "create", "patch", "delete"],
        "child_stream(), apply::ensure(), apply::delete_orphans() (the agent's Role)",
    ),
    cluster(
        "rbac.authorization.k8s.io",
        "rolebindings",
        &["list", "watch", "create", "patch", "delete"],
        "child_stream(), apply::ensure(), apply::delete_orphans() (the agent's RoleBinding)",
    ),
    cluster(
        "",
        "resourcequotas",
        &["list", "watch", "create", "patch", "delete"],
        "child_stream(), apply::ensure(), apply::delete_orphans() (builders/quota.rs: spec.tenant.quota)",
    ),
    cluster(
        "",
        "limitranges",
        &["list", "watch", "create", "patch", "delete"],
        "child_stream(), apply::ensure(), apply::delete_orphans() (builders/quota.rs: spec.tenant.limits)",
    ),
    cluster(
        "events.k8s.io",
        "events",
        &["create", "patch"],
        "runtime/mod.rs Context::event(): kube-runtime's Recorder creates events.k8s.io/v1 Events \
              and patches them to count a series",
    ),
    Grant {
        scope: Scope::Cluster,
        group: "rbac.authorization.k8s.io",
        resource: "clusterroles",
        names: &["visio-tenant-admin"],
        verbs: &["bind"],
        why: "controllers/visiocluster/apply.rs children() holds builders/tenant.rs admin_binding(): a RoleBinding of the \
              visio-tenant-admin ClusterRole to spec.tenant.adminGroups, without holding its rights",
    },
    Grant {
        scope: Scope::Cluster,
        group: "rbac.authorization.k8s.io",
        resource: "clusterroles",
        names: &["visio-operator-tenant-secrets"],
        verbs: &["bind"],
        why: "controllers/visiocluster/dereference.rs applies builders/tenant.rs operator_secrets_binding(), \
              controllers/retentionpolicy/dereference.rs secrets_binding(): the operator's own Secret rights in the tenant's namespace",
    },
    Grant {
        scope: Scope::OwnNamespace,
        group: "coordination.k8s.io",
        resource: "leases",
        names: &[],
        verbs: &["create"],
        why: "leader.rs Leadership::join() (kube-lease-manager) creates the Lease the first time; RBAC cannot \
              limit a create to a name",
    },
    Grant {
        scope: Scope::OwnNamespace,
        group: "coordination.k8s.io",
        resource: "leases",
        names: &["visio-operator-leader"],
        verbs: &["get", "patch"],
        why: "leader.rs (kube-lease-manager LeaseState::get/patch): read the holder, acquire, renew, release",
    },
];

// ---------------------------------------------------------------------------------------------
// Tools

fn render(sets: &[&str]) -> Result<Vec<Value>> {
    let text = render_text(sets)?;
    documents(&text)
}

fn render_text(sets: &[&str]) -> Result<String> {
    let chart = chart();
    let mut args = vec!["template", RELEASE, chart.to_str().unwrap(), "--namespace", NAMESPACE];
    for s in sets {
        args.extend(["--set", s]);
    }
    helm_ok(&args)
}

fn documents(text: &str) -> Result<Vec<Value>> {
    let mut docs = vec![];
    for doc in serde_norway::Deserializer::from_str(text) {
        let v = serde_norway::Value::deserialize(doc)?;
        if !v.is_null() {
            docs.push(serde_json::to_value(v)?);
        }
    }
    Ok(docs)
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind).with_context(|| format!("no {kind} rendered"))
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter().filter_map(|d| d["kind"].as_str().map(str::to_string)).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The chart itself: lint, drift, values

#[test]
fn chart_lints() -> Result<()> {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    helm_ok(&["lint", "--strict", chart])?;
    helm_ok(&[
        "lint",
        "--strict",
        chart,
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
    ])?;
    Ok(())
}

#[test]
fn chart_app_version_is_the_operator_version() -> Result<()> {
    // One number for a release: the crate, the chart, its appVersion and the image tag (image.rs
    // checks the tag of the built image; packaging/version is what the image build and the release use).
    let meta: Value = serde_norway::from_str(&std::fs::read_to_string(chart().join("Chart.yaml"))?)?;
    assert_eq!(meta["appVersion"], env!("CARGO_PKG_VERSION"), "Chart.yaml appVersion follows the workspace version");
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"), "Chart.yaml version follows the workspace version");
    let out = run(&mut Command::new(repo().join("packaging/version")), None)?;
    assert!(out.ok, "packaging/version: {}", out.stderr);
    assert_eq!(out.stdout.trim(), env!("CARGO_PKG_VERSION"), "packaging/version reads the workspace version");
    Ok(())
}

#[test]
fn chart_crds_and_install_manifest_have_not_drifted() -> Result<()> {
    let out = run(Command::new(repo().join("e2e/render-manifests")).arg("--check"), None)?;
    assert!(out.ok, "run `make manifests` and commit the result:\n{}{}", out.stdout, out.stderr);
    Ok(())
}

#[test]
fn wrong_values_fail_naming_the_key() -> Result<()> {
    let chart = chart();
    let cases: &[(&str, &str)] = &[
        ("replicas=two", "/replicas': got string, want integer"),
        ("replicas=-1", "/replicas': minimum: got -1"),
        ("replcas=1", "additional properties 'replcas' not allowed"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy'"),
        ("image.digest=latest", "/image/digest'"),
        ("logFormat=xml", "/logFormat'"),
        ("maxConcurrentReconciles=-1", "/maxConcurrentReconciles': minimum"),
        ("retention.maxSweepDuration=forever", "/retention/maxSweepDuration'"),
        ("retention.maxConcurrentSweeps=0", "/retention/maxConcurrentSweeps': minimum"),
        ("metrics.port=80", "/metrics/port': minimum"),
        ("resources.requests.cpu=lots", "/resources/requests/cpu'"),
        ("resources.request.cpu=1", "additional properties 'request' not allowed"),
        ("networkPolicy.enabled=yes", "/networkPolicy/enabled': got string, want boolean"),
        ("serviceMonitor.interval=5", "/serviceMonitor/interval'"),
    ];
    let mut failures = vec![];
    for (set, expected) in cases {
        let out = helm(&["template", RELEASE, chart.to_str().unwrap(), "--set", set])?;
        if out.ok {
            failures.push(format!("--set {set}: rendered, expected a failure"));
        } else if !out.stderr.contains(expected) {
            failures.push(format!("--set {set}: expected {expected:?} in:\n{}", out.stderr));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// What the chart renders with its default values.
const DEFAULT_KINDS: [&str; 10] = [
    "VisioPlatform",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "Deployment",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

#[test]
fn default_values_render_the_operator_and_nothing_optional() -> Result<()> {
    let docs = render(&[])?;
    let want: BTreeSet<String> = DEFAULT_KINDS.map(String::from).into();
    assert_eq!(kinds(&docs), want, "no PDB (one replica), no NetworkPolicy, no ServiceMonitor by default");
    assert!(
        !kinds(&render(&["admissionPolicies.enabled=false"])?).contains("ValidatingAdmissionPolicy"),
        "the admission policies can be left out"
    );
    // No platform: without its name, or values from before it (an upgrade with --reuse-values).
    for sets in [["platform.name="], ["platform=null"]] {
        let without_platform = render(&sets)?;
        assert!(!kinds(&without_platform).contains("VisioPlatform"), "no platform with {sets:?}");
        let deploy = find(&without_platform, "Deployment")?;
        let args = strings(&deploy["spec"]["template"]["spec"]["containers"][0]["args"]);
        assert!(args.contains(&"--platform=".to_string()), "{sets:?}: {args:?}");
    }
    let platform = find(&docs, "VisioPlatform")?;
    assert_eq!(platform["metadata"]["name"], "default");
    assert_eq!(platform["spec"]["tenantClasses"][0]["namespaces"], json!(["*"]), "every namespace a tenant by default");
    for d in &docs {
        if !matches!(
            d["kind"].as_str(),
            Some(
                "ClusterRole"
                    | "ClusterRoleBinding"
                    | "ValidatingAdmissionPolicy"
                    | "ValidatingAdmissionPolicyBinding"
                    | "VisioPlatform"
            )
        ) {
            assert_eq!(d["metadata"]["namespace"], NAMESPACE, "{} is namespaced", d["kind"]);
        }
    }

    let deploy = find(&docs, "Deployment")?;
    let spec = &deploy["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
        "the new pod stands by before the old leader stops"
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], SERVICE_ACCOUNT);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    let image = format!("ghcr.io/visio/visio-operator:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(c["image"], image.as_str());
    assert_eq!(
        strings(&c["args"]),
        [
            "run".to_string(),
            "--metrics-addr=0.0.0.0:8080".into(),
            "--log-format=json".into(),
            "--log-level=info".into(),
            "--max-concurrent-reconciles=16".into(),
            "--retention-max-concurrent-sweeps=4".into(),
            "--retention-max-sweep-pages=10000".into(),
            "--retention-max-sweep-duration=1h".into(),
            "--retention-max-response-bytes=4194304".into(),
            "--platform=default".into(),
            format!("--agent-image={image}"),
        ]
    );
    assert_eq!(
        c["env"],
        json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
               {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}])
    );
    assert!(pod.get("topologySpreadConstraints").is_none(), "nothing to spread with one replica");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "metrics"}));
    assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "metrics"}));
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());

    let svc = find(&docs, "Service")?;
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    assert_eq!(svc["spec"]["selector"], spec["selector"]["matchLabels"]);
    assert_eq!(find(&docs, "ClusterRoleBinding")?["roleRef"]["name"], find(&docs, "ClusterRole")?["metadata"]["name"]);
    assert_eq!(find(&docs, "RoleBinding")?["roleRef"]["name"], find(&docs, "Role")?["metadata"]["name"]);
    Ok(())
}

#[test]
fn non_default_values_render_what_they_ask() -> Result<()> {
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let digest_set = format!("image.digest={digest}");
    let docs = render(&[
        "replicas=0",
        "image.repository=registry.interieur.gouv.fr/visio/operator",
        digest_set.as_str(),
        "logLevel=visio_operator=debug",
        "logFormat=text",
        "maxConcurrentReconciles=4",
        "retention.maxSweepDuration=2h",
        "retention.maxResponseBytes=8388608",
        "metrics.port=9090",
        "resources.requests.cpu=200m",
        "resources.limits.memory=1Gi",
        "nodeSelector.kubernetes\\.io/os=linux",
        "networkPolicy.enabled=true",
        "networkPolicy.apiServer.cidrs={10.0.0.10/32,10.0.0.11/32}",
        "networkPolicy.s3.cidrs={192.0.2.20/32}",
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=prometheus",
    ])?;
    let want: BTreeSet<String> =
        DEFAULT_KINDS.iter().chain(&["NetworkPolicy", "ServiceMonitor"]).map(|k| k.to_string()).collect();
    assert_eq!(kinds(&docs), want);
    let deploy = find(&docs, "Deployment")?;
    assert_eq!(deploy["spec"]["replicas"], 0);
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    let image = format!("registry.interieur.gouv.fr/visio/operator@{digest}");
    assert_eq!(c["image"], image.as_str());
    let args = strings(&c["args"]);
    for a in [
        "--metrics-addr=0.0.0.0:9090".to_string(),
        "--log-format=text".into(),
        "--log-level=visio_operator=debug".into(),
        "--max-concurrent-reconciles=4".into(),
        "--retention-max-sweep-duration=2h".into(),
        "--retention-max-response-bytes=8388608".into(),
        "--retention-max-concurrent-sweeps=4".into(),
        "--retention-max-sweep-pages=10000".into(),
        format!("--agent-image={image}"),
    ] {
        assert!(args.contains(&a), "{a} in {args:?}");
    }
    // Set keys replace the defaults one by one; the others stay.
    assert_eq!(c["resources"], json!({"requests": {"cpu": "200m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}}));
    assert_eq!(deploy["spec"]["template"]["spec"]["nodeSelector"], json!({"kubernetes.io/os": "linux"}));

    let np = find(&docs, "NetworkPolicy")?;
    assert_eq!(np["spec"]["ingress"], json!([{"ports": [{"port": 9090, "protocol": "TCP"}]}]));
    assert_eq!(
        np["spec"]["egress"],
        json!([{"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
                "to": [{"ipBlock": {"cidr": "10.0.0.10/32"}}, {"ipBlock": {"cidr": "10.0.0.11/32"}}]},
               // Retention sweeps: DNS, then the platform's S3 endpoints.
               {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]},
               {"ports": [{"port": 443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "192.0.2.20/32"}}]}])
    );
    let sm = find(&docs, "ServiceMonitor")?;
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(find(&docs, "Service")?["spec"]["ports"][0]["port"], 9090);

    // The optional kinds render only when asked.
    assert!(
        !kinds(&render(&["networkPolicy.enabled=false", "serviceMonitor.enabled=false"])?).contains("ServiceMonitor")
    );
    Ok(())
}

#[test]
fn standby_replicas_get_a_disruption_budget_and_spread() -> Result<()> {
    let docs = render(&["replicas=2"])?;
    let pdb = find(&docs, "PodDisruptionBudget")?;
    let deploy = find(&docs, "Deployment")?;
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"], deploy["spec"]["selector"]);
    let spread = &deploy["spec"]["template"]["spec"]["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(spread["labelSelector"], deploy["spec"]["selector"]);
    assert!(!kinds(&render(&["replicas=1"])?).contains("PodDisruptionBudget"), "one replica: no PDB to block drains");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// RBAC: least privilege

/// One permission as rendered: (scope, group, resource, object name or "" for any, verb).
type Granted = (Scope, String, String, String, String);

/// Every permission a rendered ClusterRole or Role grants; an error on a wildcard anywhere and on
/// nonResourceURLs.
fn grants(role: &Value, scope: Scope) -> Result<BTreeSet<Granted>> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().context("rules")? {
        for field in ["apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"] {
            if strings(&rule[field]).iter().any(|s| s.contains('*')) {
                bail!("wildcard in {field} of rule {rule}");
            }
        }
        ensure!(rule.get("nonResourceURLs").is_none(), "unexpected nonResourceURLs in {rule}");
        let names = match strings(&rule["resourceNames"]) {
            n if n.is_empty() => vec![String::new()],
            n => n,
        };
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for n in &names {
                    for v in strings(&rule["verbs"]) {
                        out.insert((scope, g.clone(), r.clone(), n.clone(), v));
                    }
                }
            }
        }
    }
    Ok(out)
}

fn allowed() -> BTreeMap<Granted, &'static str> {
    let mut out = BTreeMap::new();
    for g in ALLOWED {
        assert!(!g.why.is_empty());
        let names: Vec<&str> = if g.names.is_empty() { vec![""] } else { g.names.to_vec() };
        for n in names {
            for v in g.verbs {
                let key = (g.scope, g.group.into(), g.resource.into(), n.into(), v.to_string());
                out.insert(key, g.why);
            }
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_the_allow_list() -> Result<()> {
    let allowed = allowed();
    let variants: [&[&str]; 3] =
        [&[], &["networkPolicy.enabled=true", "serviceMonitor.enabled=true", "replicas=0"], &["replicas=3"]];
    for values in variants {
        let docs = render(values)?;
        let mut granted = BTreeSet::new();
        let mut roles = 0;
        for doc in &docs {
            let scope = match doc["kind"].as_str() {
                // The tenant admins' role: never bound to the operator (checked below), bound by the
                // operator in tenant namespaces only.
                Some("ClusterRole") if doc["metadata"]["name"] == "visio-tenant-admin" => {
                    let text = serde_json::to_string(doc)?;
                    assert!(!text.contains('*'), "a `*` in visio-tenant-admin: {text}");
                    continue;
                }
                Some("ClusterRole") if doc["metadata"]["name"] == "visio-operator-tenant-secrets" => Scope::Tenant,
                Some("ClusterRole") => Scope::Cluster,
                Some("Role") => {
                    assert_eq!(doc["metadata"]["namespace"], NAMESPACE, "a Role only in the operator's namespace");
                    Scope::OwnNamespace
                }
                _ => continue,
            };
            roles += 1;
            let text = serde_json::to_string(doc)?;
            assert!(!text.contains('*'), "a `*` in a {}: {text}", doc["kind"]);
            granted.extend(grants(doc, scope)?);
        }
        assert_eq!(roles, 3, "two ClusterRoles (one bound by the operator in tenant namespaces) and one Role (leader election), whatever the values");
        let extra: Vec<_> = granted.iter().filter(|g| !allowed.contains_key(*g)).collect();
        assert!(
            extra.is_empty(),
            "the chart grants what the allow-list in e2e/tests/chart.rs does not hold: {extra:?}; \
             if the operator needs it, add it to ALLOWED with the code path that needs it"
        );
        let stale: Vec<_> = allowed.keys().filter(|g| !granted.contains(*g)).collect();
        assert!(stale.is_empty(), "allow-list entries the chart no longer grants (remove them): {stale:?}");
    }
    // Every binding names the chart's ServiceAccount, and only it; none binds the tenant Secret rights.
    let docs = render(&[])?;
    for b in docs.iter().filter(|d| matches!(d["kind"].as_str(), Some("ClusterRoleBinding" | "RoleBinding"))) {
        assert_ne!(b["roleRef"]["name"], "visio-operator-tenant-secrets", "the chart binds tenant Secret rights");
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]),
            "{}",
            b["kind"]
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Server-side dry run against the suite's control plane

/// `kubectl apply --dry-run=server --validate=strict` of `text`; fails on an error or on a Pod
/// Security warning (the operator's namespace enforces "restricted").
fn dry_run(kubeconfig: &Path, text: &str) -> Result<String> {
    let out = kubectl_out(kubeconfig, &["apply", "--dry-run=server", "--validate=strict", "-f", "-"], Some(text))?;
    ensure!(out.ok, "server-side dry run failed:\n{}", out.stderr);
    ensure!(!out.stderr.contains("PodSecurity"), "Pod Security warnings:\n{}", out.stderr);
    Ok(out.stdout)
}

#[test]
fn rendered_manifests_pass_server_side_dry_run() -> Result<()> {
    let kubeconfig = visio_e2e::kubeconfig_path()?;
    create_operator_namespace(&kubeconfig)?;
    let install = std::fs::read_to_string(repo().join("manifests/install.yaml"))?;
    let out = dry_run(&kubeconfig, &install)?;
    for obj in [
        "namespace/visio-system",
        "serviceaccount/visio-operator",
        "clusterrole.rbac.authorization.k8s.io/visio-operator",
        "clusterrolebinding.rbac.authorization.k8s.io/visio-operator",
        "service/visio-operator-metrics",
        "deployment.apps/visio-operator",
        "role.rbac.authorization.k8s.io/visio-operator-leader-election",
        "rolebinding.rbac.authorization.k8s.io/visio-operator-leader-election",
    ] {
        assert!(out.contains(obj), "{obj} in:\n{out}");
    }
    // Non-default values (the ServiceMonitor needs the Prometheus Operator's CRDs, absent here:
    // it renders only when enabled, so the default install works without them).
    let custom = render_text(&[
        "replicas=0",
        "resources.requests.cpu=1",
        "resources.limits.memory=512Mi",
        "networkPolicy.enabled=true",
        "networkPolicy.apiServer.cidrs={127.0.0.1/32}",
        "networkPolicy.metrics.from[0].namespaceSelector.matchLabels.name=monitoring",
        "podAnnotations.example\\.org/team=platform",
        "tolerations[0].key=dedicated",
        "tolerations[0].operator=Exists",
    ])?;
    let out = dry_run(&kubeconfig, &custom)?;
    assert!(out.contains("networkpolicy.networking.k8s.io/visio-operator"), "{out}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The RBAC proof, in a control plane of its own

const TENANT: &str = "rbac-proof";

#[tokio::test]
async fn the_chart_service_account_is_enough_to_run_the_operator() -> Result<()> {
    let bin = operator_bin()?;
    // The chart installs the CRDs itself (a CRD deleted right after the apiserver started could stay in
    // its cleanup finalizer for minutes: once a flaky failure of this test).
    let mut cluster = OwnCluster::up_without_crds(ports::CHART)?;
    let result = rbac_proof(&mut cluster, &bin).await;
    cluster.on_failure(result)
}

async fn rbac_proof(cluster: &mut OwnCluster, bin: &Path) -> Result<()> {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let long = Duration::from_secs(90);

    create_operator_namespace(&cluster.kubeconfig)?;

    // helm install: the CRDs, the RBAC, the Deployment (whose pod kwok "runs": only admitted
    // under Pod Security "restricted" if its spec passes it).
    // podMonitor.enabled with no Prometheus Operator CRDs in this cluster: the PodMonitors are left out
    // (an install that sent them would fail with "no matches for kind PodMonitor").
    cluster.helm(&[
        "install",
        RELEASE,
        chart,
        "--namespace",
        NAMESPACE,
        "--wait=false",
        "--set",
        "podMonitor.enabled=true",
    ])?;
    cluster.kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/visioclusters.visio.io",
            "crd/captionpools.visio.io",
            "crd/retentionpolicies.visio.io",
        ],
        None,
    )?;
    let c = &*cluster;
    wait_for("the operator pod admitted under Pod Security restricted", long, || async move {
        let pods = c.json(&["get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=visio-operator"])?;
        Ok(pods["items"].as_array().is_some_and(|i| !i.is_empty()).then_some(()))
    })
    .await?;

    // helm upgrade, changing values: the Deployment follows.
    cluster.helm(&[
        "upgrade",
        RELEASE,
        chart,
        "--namespace",
        NAMESPACE,
        "--wait=false",
        "--reuse-values",
        "--set",
        "logLevel=debug",
        "--set",
        "resources.limits.memory=512Mi",
    ])?;
    let deploy = cluster.json(&["get", "deployment", "-n", NAMESPACE, RELEASE])?;
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert!(strings(&c["args"]).contains(&"--log-level=debug".to_string()), "{}", c["args"]);
    assert_eq!(c["resources"]["limits"]["memory"], "512Mi");
    let status = cluster.helm(&["status", RELEASE, "--namespace", NAMESPACE, "-o", "json"])?;
    let status: Value = serde_json::from_str(&status)?;
    assert_eq!(status["version"], 2);
    assert_eq!(status["info"]["status"], "deployed");

    // What the ServiceAccount may and may not do (spot checks; the allow-list test covers the rest).
    let sa = format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}");
    let lease = "leases.coordination.k8s.io/visio-operator-leader";
    for (verb, resource, ns, expected) in [
        ("get", "nodes", None, "no"),
        ("list", "configmaps", None, "no"),
        ("update", "secrets", None, "no"),
        ("list", "secrets", None, "no"),
        ("get", "secrets", Some("kube-system"), "no"),
        ("get", "secrets", Some(NAMESPACE), "no"),
        ("bind", "clusterroles.rbac.authorization.k8s.io/visio-operator-tenant-secrets", None, "yes"),
        ("create", "namespaces", None, "no"),
        ("escalate", "roles.rbac.authorization.k8s.io", None, "no"),
        ("bind", "clusterroles.rbac.authorization.k8s.io", None, "no"),
        ("get", "customresourcedefinitions.apiextensions.k8s.io", None, "no"),
        ("create", "events", None, "no"),
        ("create", "leases.coordination.k8s.io", Some("default"), "no"),
        ("patch", "leases.coordination.k8s.io/kube-scheduler", Some(NAMESPACE), "no"),
        ("patch", lease, Some(NAMESPACE), "yes"),
        ("patch", lease, Some(TENANT), "no"),
    ] {
        let mut args = vec!["auth", "can-i", verb, resource, "--as", &sa];
        match ns {
            Some(ns) => args.extend(["-n", ns]),
            None => args.push("-A"),
        }
        let out = cluster.kubectl_out(&args)?;
        assert_eq!(out.stdout.trim(), expected, "{sa} can {verb} {resource} in {ns:?}");
    }

    // The operator, authenticated only by a token of the chart's ServiceAccount.
    let token = cluster.kubectl(&["create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=1h"], None)?;
    let kubeconfig = cluster.state().join("service-account.kubeconfig");
    service_account_kubeconfig(&cluster.kubeconfig, &kubeconfig, token.trim())?;
    let whoami = kubectl_at(&kubeconfig, &["auth", "whoami", "-o", "json"], None)?;
    let whoami: Value = serde_json::from_str(&whoami)?;
    assert_eq!(whoami["status"]["userInfo"]["username"], sa.as_str());
    // Its RBAC lets it create Services anywhere; the chart's admission policy keeps its writes out of
    // the Kubernetes namespaces and its own (a dry run: admission runs, nothing is stored).
    let service = |ns: &str| {
        kubectl_out(
            &kubeconfig,
            &["create", "service", "clusterip", "probe", "--tcp=80", "-n", ns, "--dry-run=server"],
            None,
        )
    };
    let refused = wait_for("the operator's namespace policy in force", long, || async {
        let out = service("kube-system")?;
        Ok((!out.ok).then_some(out.stderr))
    })
    .await?;
    assert!(refused.contains("writes only in tenant namespaces"), "kube-system: {refused}");
    for ns in ["kube-public", "kube-node-lease", NAMESPACE] {
        let out = service(ns)?;
        assert!(!out.ok && out.stderr.contains("writes only in tenant namespaces"), "{ns}: {}", out.stderr);
    }
    cluster.kubectl(&["create", "namespace", "policy-probe"], None)?;
    let out = service("policy-probe")?;
    assert!(out.ok, "a tenant namespace is writable: {}", out.stderr);

    // Leader election as the chart runs it, the Lease in the operator's namespace (what the Deployment
    // sets from the downward API).
    let run = OperatorRun::new(bin, "rbac-proof").leader_election().pod_namespace(NAMESPACE).kubeconfig(&kubeconfig);
    let op = cluster.start(run)?;
    let operator_log = cluster.operators[op].log.clone();

    // Ready: every child cache listed and watched across all namespaces with this identity.
    let readyz = cluster.operators[op].url("/readyz");
    let readyz = readyz.as_str();
    wait_as_operator(&operator_log, "the operator's /readyz", || async move {
        Ok(http_get(readyz).await.is_ok_and(|b| b == "ready\n"))
    })
    .await?;
    // It leads: the Lease in its namespace names it.
    let c = &*cluster;
    wait_as_operator(&operator_log, "the leader Lease held by the operator", || async move {
        let lease = kubectl_out(
            &c.kubeconfig,
            &["get", "lease", "visio-operator-leader", "-n", NAMESPACE, "-o", "json"],
            None,
        )?;
        Ok(lease.ok && serde_json::from_str::<Value>(&lease.stdout)?["spec"]["holderIdentity"] == "rbac-proof")
    })
    .await?;

    // A tenant: a VisioCluster with its own keys Secret and an Ingress, a CaptionPool, a RetentionPolicy.
    cluster.kubectl(&["create", "namespace", TENANT], None)?;
    let vc = visio_cluster("visio")
        .namespace(TENANT)
        .ministry("Ministère de la Culture", "visio.culture.gouv.fr")
        .replicas(2, 3)
        .pod_network()
        .turn("turn.culture.gouv.fr")
        .spec(json!({"signaling": {"ingressClassName": "nginx"}, "keys": {"secretName": "livekit-keys"},
                     "autoscaling": {"scaleDownDelay": "1s"}}))
        .value();
    let tenant = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "livekit-keys", "namespace": TENANT},
         "stringData": {"apiKey": "APIrbacproof", "apiSecret": "0123456789abcdef0123456789abcdef0123"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3", "namespace": TENANT},
         "stringData": {"accessKeyId": "id", "secretAccessKey": "key"}},
        vc,
        {"apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool", "metadata": {"name": "captions", "namespace": TENANT},
         "spec": {"clusterRef": {"name": "visio"}}},
        {"apiVersion": "visio.io/v1alpha1", "kind": "RetentionPolicy", "metadata": {"name": "meetings", "namespace": TENANT},
         "spec": {"mode": "DryRun", "target": {"endpoint": "https://s3.culture.gouv.fr", "bucket": "meetings", "credentialsSecret": "s3"},
                  "rules": [{"dataClass": "recordings", "prefix": "recordings/", "maxAge": "720h"}]}},
    ]});
    cluster.kubectl(&["apply", "-f", "-"], Some(&tenant.to_string()))?;

    let c = &*cluster;
    wait_as_operator(&operator_log, "VisioCluster Ready (as the ServiceAccount)", || async move {
        let vc = c.json(&["get", "visiocluster", "visio", "-n", TENANT])?;
        Ok(ready_as(&vc, "True", "Serving"))
    })
    .await?;
    wait_as_operator(&operator_log, "CaptionPool and RetentionPolicy status written", || async move {
        let cp = c.json(&["get", "captionpool", "captions", "-n", TENANT])?;
        let rp = c.json(&["get", "retentionpolicy", "meetings", "-n", TENANT])?;
        // The pool deploys its backends (Ready Serving once a backend pod is ready; PodsNotReady or
        // Unschedulable before): what matters here is a status written under the chart's RBAC.
        let pool_written = ["Serving", "PodsNotReady", "Unschedulable"]
            .iter()
            .any(|r| ready_as(&cp, if *r == "Serving" { "True" } else { "False" }, r));
        Ok(pool_written && ready_as(&rp, "False", "EndpointNotAllowed"))
    })
    .await?;
    for (kind, name) in [
        ("secret", "visio-credentials"),
        ("secret", "visio-livekit-config"),
        ("serviceaccount", "visio-sfu-agent"),
        ("role", "visio-sfu-agent"),
        ("rolebinding", "visio-sfu-agent"),
        ("deployment", "visio-redis"),
        ("service", "visio-turn"),
        ("poddisruptionbudget", "visio-sfu"),
        ("ingress", "visio-signaling"),
        ("secret", "captions-caption-key"),
        ("secret", "captions-caption-config"),
        ("role", "captions-caption-agent"),
        ("service", "captions-backend"),
        ("poddisruptionbudget", "captions-backend"),
        ("deployment", "captions-transcriber"),
        ("rolebinding", "visio-operator-secrets"),
        ("rolebinding", "meetings-retention-secrets"),
    ] {
        cluster.kubectl(&["get", kind, name, "-n", TENANT], None).with_context(|| format!("{kind}/{name} built"))?;
    }
    // Secret rights where the tenant's resources are, and still nowhere else.
    for (ns, expected) in [(TENANT, "yes"), ("kube-system", "no"), ("default", "no")] {
        let out = cluster.kubectl_out(&["auth", "can-i", "list", "secrets", "-n", ns, "--as", &sa])?;
        assert_eq!(out.stdout.trim(), expected, "{sa} can list secrets in {ns}");
    }

    // Prune and shrink: TURN and the Ingress switched off (orphan deletion), one SFU pod instead
    // of two. The pods report themselves empty and drained (what their agent writes once its SFU
    // drained: the operator reads a draining pod's load only then), so the old ones are drained and
    // deleted as soon as the new template's pod serves.
    let pods = cluster.json(&["get", "pods", "-n", TENANT, "-l", "app.kubernetes.io/component=sfu"])?;
    for p in pods["items"].as_array().context("pods")? {
        let name = p["metadata"]["name"].as_str().context("name")?;
        let drained = r#"visio.io/load={"participants":0,"rooms":0,"draining":true}"#;
        cluster.kubectl(&["annotate", "pod", name, "-n", TENANT, "--overwrite", drained], None)?;
    }
    let patch = json!({"spec": {"signaling": {"ingressClassName": null}, "turn": {"enabled": false},
                                "sfu": {"replicas": {"min": 1, "max": 1}}}});
    cluster
        .kubectl(&["patch", "visiocluster", "visio", "-n", TENANT, "--type=merge", "-p", &patch.to_string()], None)?;
    wait_as_operator(&operator_log, "TURN Service and Ingress pruned, one SFU pod serving", || async move {
        let svc = c.kubectl_out(&["get", "service", "visio-turn", "-n", TENANT])?;
        let ing = c.kubectl_out(&["get", "ingress", "visio-signaling", "-n", TENANT])?;
        let pods = c.json(&["get", "pods", "-n", TENANT, "-l", "app.kubernetes.io/component=sfu"])?;
        let vc = c.json(&["get", "visiocluster", "visio", "-n", TENANT])?;
        let done = !svc.ok
            && !ing.ok
            && pods["items"].as_array().is_some_and(|i| i.len() == 1)
            && ready_as(&vc, "True", "Serving")
            && vc["status"]["sfu"]["ready"] == 1;
        Ok(done)
    })
    .await?;

    // Events, published under this identity.
    let events = cluster.json(&["get", "events.events.k8s.io", "-n", TENANT])?;
    let ours: Vec<&Value> = events["items"]
        .as_array()
        .context("events")?
        .iter()
        .filter(|e| e["reportingController"] == "visio-operator" && e["reportingInstance"] == "rbac-proof")
        .collect();
    assert!(
        ours.iter().any(|e| e["reason"] == "ScaledUp") && ours.iter().any(|e| e["reason"] == "PodDeleted"),
        "operator Events: {:?}",
        ours.iter().map(|e| &e["reason"]).collect::<Vec<_>>()
    );

    // Not one request refused along the way.
    cluster.kill_operator();
    let log = std::fs::read_to_string(operator_log)?;
    let refused = refused_requests(&log);
    assert!(refused.is_empty(), "requests refused to the chart's ServiceAccount:\n{}", refused.join("\n"));
    assert!(log.contains("caches synced"), "the operator synced its caches");

    // helm uninstall removes the operator and keeps the CRDs, hence the tenant's resources.
    cluster.helm(&["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout=60s"])?;
    let left = cluster.kubectl_out(&["get", "deployment", RELEASE, "-n", NAMESPACE])?;
    assert!(!left.ok, "the operator Deployment is gone");
    let left = cluster.kubectl_out(&["get", "clusterrole", RELEASE])?;
    assert!(!left.ok, "the ClusterRole is gone");
    cluster.kubectl(&["get", "crd", "visioclusters.visio.io"], None).context("the CRDs stay")?;
    cluster
        .kubectl(&["get", "visiocluster", "visio", "-n", TENANT], None)
        .context("the tenant's VisioCluster stays")?;
    Ok(())
}

#[test]
fn the_chart_ships_the_tested_alerts_and_dashboard() -> Result<()> {
    let defaults = kinds(&render(&[])?);
    assert!(!defaults.contains("PrometheusRule"), "off by default: the CRD may be absent");
    let docs = render(&["prometheusRule.enabled=true", "dashboard.enabled=true", "serviceMonitor.enabled=true"])?;
    // The PrometheusRule carries exactly the rules promtool tests in `make test`.
    let rule = find(&docs, "PrometheusRule")?;
    let source: Value = serde_norway::from_str(&std::fs::read_to_string(repo().join("monitoring/alerts.yaml"))?)?;
    assert_eq!(rule["spec"]["groups"], source["groups"], "PrometheusRule differs from monitoring/alerts.yaml");
    let text = serde_json::to_string(&rule["spec"])?;
    assert!(text.contains("{{ $labels.namespace }}"), "Prometheus's own templates survive Helm");
    // The dashboard is the committed one, for Grafana's sidecar.
    let dash = docs.iter().find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1");
    let dash = dash.context("dashboard ConfigMap")?;
    let json: Value = serde_json::from_str(dash["data"]["visio-operator.json"].as_str().context("dashboard data")?)?;
    let source: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("monitoring/dashboard.json"))?)?;
    assert_eq!(json, source);
    // The alerts select job="visio-operator": the ServiceMonitor sets it whatever the release name.
    let sm = find(&docs, "ServiceMonitor")?;
    assert_eq!(sm["spec"]["endpoints"][0]["relabelings"][0]["replacement"], "visio-operator");
    Ok(())
}

/// A pod the operator builds: what it is, its labels, the names of its container ports.
type BuiltPod = (String, BTreeMap<String, String>, BTreeSet<String>);

/// The tenant pods the operator builds (SFU, caption backends of each engine, transcribers).
fn built_pods() -> Result<Vec<BuiltPod>> {
    use visio_operator::builders::captions::{build_captions, CaptionInputs};
    let meta =
        |name: &str| json!({"name": name, "namespace": "minsante", "uid": "0b6c1a52-5f3c-4a8e-9d57-3c2f1e0a9b11"});
    let ports = |spec: &k8s_openapi::api::core::v1::PodSpec| -> BTreeSet<String> {
        spec.containers.iter().flat_map(|c| c.ports.iter().flatten()).filter_map(|p| p.name.clone()).collect()
    };
    let mut out = vec![];
    let mut vc = visio_cluster("visio").ministry("Santé", "visio.sante.gouv.fr").value();
    vc["metadata"] = meta("visio");
    let vc: visio_operator::api::VisioCluster = serde_json::from_value(vc)?;
    let sfu = visio_operator::builders::sfu::sfu_template(&vc, "visio-livekit-config", "h", "visio-operator:1")?.pod;
    out.push((
        "sfu".into(),
        sfu.metadata.labels.clone().unwrap_or_default(),
        ports(sfu.spec.as_ref().context("spec")?),
    ));
    for engine in ["kyutai", "whisperlive", "custom"] {
        let cp: visio_operator::api::CaptionPool = serde_json::from_value(json!({
            "apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool", "metadata": meta("captions"),
            "spec": {"clusterRef": {"name": "visio"}, "engine": engine, "image": "stt:1"}
        }))?;
        let inputs = CaptionInputs {
            api_key: "k",
            livekit_keys_secret: "visio-credentials",
            agent_image: "visio-operator:1",
            transcriber_replicas: 1,
        };
        let s = build_captions(&cp, &inputs)?;
        let b = &s.backend.pod;
        out.push((
            engine.into(),
            b.metadata.labels.clone().unwrap_or_default(),
            ports(b.spec.as_ref().context("spec")?),
        ));
        let t = s.transcribers.spec.context("spec")?.template;
        let labels = t.metadata.and_then(|m| m.labels).unwrap_or_default();
        out.push(("transcriber".into(), labels, ports(&t.spec.context("spec")?)));
    }
    Ok(out)
}

#[test]
fn pod_monitors_scrape_the_tenant_pods_by_named_port_only_where_prometheus_operator_runs() -> Result<()> {
    // Enabled, but the cluster serves no monitoring.coreos.com/v1 PodMonitor (helm template's default
    // capabilities, like a real cluster without the Prometheus Operator): nothing is rendered.
    let without = render(&["podMonitor.enabled=true"])?;
    assert!(!kinds(&without).contains("PodMonitor"), "PodMonitor rendered without its CRD");
    // With the API, off by default.
    let chart = chart();
    let template = |sets: &[&str]| -> Result<Vec<Value>> {
        let mut args = vec!["template", RELEASE, chart.to_str().unwrap(), "--namespace", NAMESPACE];
        args.extend(["--api-versions", "monitoring.coreos.com/v1/PodMonitor"]);
        for s in sets {
            args.extend(["--set", s]);
        }
        documents(&helm_ok(&args)?)
    };
    assert!(!kinds(&template(&[])?).contains("PodMonitor"), "off by default");
    let docs =
        template(&["podMonitor.enabled=true", "podMonitor.labels.release=prometheus", "podMonitor.interval=15s"])?;
    let monitors: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "PodMonitor").collect();
    let names: Vec<&str> = monitors.iter().filter_map(|m| m["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["visio-operator-sfu", "visio-operator-caption-backends", "visio-operator-transcribers"]);
    let pods = built_pods()?;
    for m in &monitors {
        let name = m["metadata"]["name"].as_str().unwrap_or_default();
        assert_eq!(m["metadata"]["namespace"], NAMESPACE, "{name}");
        assert_eq!(m["metadata"]["labels"]["release"], "prometheus", "{name}");
        assert_eq!(m["spec"]["namespaceSelector"], json!({"any": true}), "{name}: tenants are in any namespace");
        let selector: BTreeMap<String, String> = serde_json::from_value(m["spec"]["selector"]["matchLabels"].clone())?;
        assert_eq!(selector.get("app.kubernetes.io/managed-by").map(String::as_str), Some("visio-operator"), "{name}");
        assert_eq!(selector.len(), 2, "{name}: managed-by and component only");
        let endpoints = m["spec"]["podMetricsEndpoints"].as_array().context("endpoints")?;
        let ports: BTreeSet<String> = endpoints.iter().filter_map(|e| e["port"].as_str().map(str::to_string)).collect();
        for e in endpoints {
            assert_eq!((&e["path"], &e["interval"]), (&json!("/metrics"), &json!("15s")), "{name}");
        }
        // Every pod the selector matches has one of the endpoints' ports, and a scraped port serves
        // /metrics: `metrics`, or moshi-server's `stt` (streams and metrics on one port).
        let matched: Vec<&String> = pods
            .iter()
            .filter(|(_, labels, _)| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .map(|(what, labels, pod_ports)| {
                let scraped: Vec<&String> = pod_ports.intersection(&ports).collect();
                assert_eq!(scraped.len(), 1, "{name} scrapes {scraped:?} of {what} ({pod_ports:?})");
                assert!(
                    scraped[0] == "metrics" || (scraped[0] == "stt" && what != "whisperlive"),
                    "{name} scrapes {what} on {}",
                    scraped[0]
                );
                assert!(labels.contains_key("visio.io/cluster"), "{what}");
                what
            })
            .collect();
        let want: Vec<&str> = match name {
            "visio-operator-sfu" => vec!["sfu"],
            "visio-operator-caption-backends" => vec!["kyutai", "whisperlive", "custom"],
            _ => vec!["transcriber", "transcriber", "transcriber"],
        };
        assert_eq!(matched, want, "{name} selects");
    }
    Ok(())
}
