//! `kubectl visio` (the kubectl-visio binary of this workspace) against the suite's control plane and its
//! operator: what `status` prints of a tenant (text and `-o json`), then of the same tenant mid-upgrade;
//! `drain` run by a ministry's admin (the chart's visio-tenant-admin role and admission policy applied)
//! makes the operator start a replacement and drain the pod, while a drain of another tenant's pod, of a
//! pod that only copies the SFU labels, and any other change of the operator's marks by that admin are
//! refused; `report` writes an archive that holds none of the tenant's secret values.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use base64::Engine;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use visio_e2e::fixtures::{apply, fleet_visio_cluster, visio_cluster, NEW_VERSION, OLD_VERSION};
use visio_e2e::process::{ensure_built, kubectl_out, workspace_bin};
use visio_e2e::{client, events, kubeconfig_path, kubectl, repo, wait_for, Tenant};
use visio_operator::api::VisioCluster;
use visio_operator::builders::labels::{Component, CLUSTER_LABEL, COMPONENT_LABEL};
use visio_operator::pod_protocol::{self, Load, DRAIN_REQUESTED, DRAIN_SINCE};

const NS: &str = "e2e-kubectl-visio";
const OTHER: &str = "e2e-kubectl-visio-other";
const ADMINS: &str = "ministere-kv-admins";

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `kubectl-visio <args>` with `kubeconfig`, stdout a pipe (so no colour, as kubectl does).
fn plugin(kubeconfig: &Path, args: &[&str]) -> Result<Ran> {
    let bin = workspace_bin("VISIO_E2E_KUBECTL_VISIO_BIN", "kubectl-visio");
    ensure_built(&bin)?;
    let out = Command::new(&bin)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    Ok(Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("visio-e2e-kubectl-visio-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// The suite's admin kubeconfig, impersonating a member of the ministry's admin group (`as`, `as-groups`:
/// what `kubectl --as --as-group` sets), so the plugin runs with a tenant admin's rights.
fn tenant_admin_kubeconfig(dir: &Path) -> Result<PathBuf> {
    let mut kc: Value = serde_norway::from_str(&std::fs::read_to_string(kubeconfig_path()?)?)?;
    for user in kc["users"].as_array_mut().context("a kubeconfig without users")? {
        user["user"]["as"] = json!("agent-du-ministere");
        user["user"]["as-groups"] = json!([ADMINS]);
    }
    let path = dir.join("tenant-admin.kubeconfig");
    std::fs::write(&path, serde_norway::to_string(&kc)?)?;
    Ok(path)
}

/// The chart's tenant admin ClusterRole and its drain-request admission policy (from the rendered
/// manifests), applied to the suite's control plane.
fn install_tenant_admin_rules() -> Result<()> {
    let text = std::fs::read_to_string(repo().join("manifests/install.yaml"))?;
    let docs: Vec<&str> = text
        .split("\n---")
        .filter(|d| {
            (d.contains("kind: ClusterRole\n") && d.contains("name: visio-tenant-admin\n"))
                || (d.contains("kind: ValidatingAdmissionPolicy")
                    && d.contains("name: visio-tenant-admin-drain-request\n"))
        })
        .collect();
    ensure!(docs.len() == 3, "install.yaml holds the tenant admin role, the policy and its binding: {}", docs.len());
    ensure!(docs.iter().any(|d| d.contains(DRAIN_REQUESTED)), "the policy names the annotation the plugin writes");
    kubectl(&["apply", "-f", "-"], Some(&docs.join("\n---\n")))?;
    Ok(())
}

fn annotation(p: &Pod, key: &str) -> Option<String> {
    p.annotations().get(key).cloned()
}

/// The operator's SFU pods (owned: the impostor below only copies their labels), not being deleted.
async fn sfu_pods(pods: &Api<Pod>) -> Result<Vec<Pod>> {
    let lp = ListParams::default().labels(&format!("{COMPONENT_LABEL}={}", Component::Sfu.as_str()));
    let owned = |p: &Pod| p.owner_references().iter().any(|o| o.kind == "VisioCluster");
    Ok(pods
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && owned(p))
        .collect())
}

fn status_json(kubeconfig: &Path) -> Result<Value> {
    let ran = plugin(kubeconfig, &["status", "-n", NS, "-o", "json"])?;
    ensure!(ran.ok, "status -o json: {}", ran.stderr);
    serde_json::from_str(&ran.stdout).with_context(|| format!("status -o json is not JSON: {}", ran.stdout))
}

/// What the agent of each SFU pod would report, for pods kwok runs without one: an empty pod (a known
/// load, so the drain floor need not read it as full), except the pods the test gave a load itself.
fn fake_agents(pods: Api<Pod>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Bounded: the test is over well within this.
        for _ in 0..1200 {
            if let Ok(all) = sfu_pods(&pods).await {
                for p in all.iter().filter(|p| annotation(p, pod_protocol::LOAD).is_none()) {
                    let empty = pod_protocol::render_load(&Load::default());
                    let patch = json!({"metadata": {"annotations": {pod_protocol::LOAD: empty}}});
                    let _ = pods.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

/// The namespace's pods and Events, printed when a wait fails.
fn dump(ns: &str) {
    for args in [
        vec!["get", "pods", "-n", ns, "-o", "custom-columns=NAME:.metadata.name,HASH:.metadata.labels.visio\\.io/template-hash,READY:.status.conditions[?(@.type=='Ready')].status,DELETING:.metadata.deletionTimestamp,ANN:.metadata.annotations"],
        vec!["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
    ] {
        match kubectl(&args, None) {
            Ok(out) => eprintln!("--- kubectl {}\n{out}", args.join(" ")),
            Err(e) => eprintln!("--- kubectl {}: {e}", args.join(" ")),
        }
    }
}

fn pod_in<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status[0]["pods"].as_array()?.iter().find(|p| p["name"] == name)
}

#[tokio::test]
async fn status_drain_and_report_of_a_tenant() -> Result<()> {
    let client = client().await?;
    let _a = Tenant::create(&client, NS).await?;
    let _b = Tenant::create(&client, OTHER).await?;
    install_tenant_admin_rules()?;
    let admin = kubeconfig_path()?;
    let dir = dir()?;
    let ministry = tenant_admin_kubeconfig(&dir)?;

    let vc = fleet_visio_cluster(
        "Ministère A",
        json!({"tenant": {"adminGroups": [ADMINS]}, "sfu": {"replicas": {"min": 2, "max": 4}},
               "upgrade": {"maxSurge": 1, "maxDraining": 0}}),
    );
    apply(&Api::<VisioCluster>::namespaced(client.clone(), NS), "e2e", &vc).await?;
    let other =
        visio_cluster("visio").ministry("Ministère B", "b.example.gouv.fr").replicas(1, 1).pod_network().no_turn();
    apply(&Api::<VisioCluster>::namespaced(client.clone(), OTHER), "e2e", &other.value()).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let other_pods: Api<Pod> = Api::namespaced(client.clone(), OTHER);
    wait_for("two SFU pods of ministry A and one of B", Duration::from_secs(90), || async {
        let a = sfu_pods(&pods).await?;
        let b = sfu_pods(&other_pods).await?;
        Ok((a.len() == 2 && b.len() == 1).then_some(()))
    })
    .await?;
    // What the agent reports on sfu-0 (kwok runs no agent): one room of three.
    let load = Load { participants: 3, rooms: 1, ..Load::default() };
    let patch = json!({"metadata": {"annotations": {pod_protocol::LOAD: pod_protocol::render_load(&load)}}});
    pods.patch("visio-sfu-0", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let agents = fake_agents(pods.clone());

    // 1. status, as text (no terminal: no colour) and as JSON.
    let text = wait_for("status shows sfu-0's room", Duration::from_secs(30), || async {
        let ran = plugin(&ministry, &["status", "-n", NS])?;
        ensure!(ran.ok, "status: {}", ran.stderr);
        Ok(ran
            .stdout
            .lines()
            .any(|l| l.contains("visio-sfu-0") && l.contains("serving") && l.contains(" 1 "))
            .then_some(ran.stdout))
    })
    .await?;
    eprintln!("=== kubectl visio status -n {NS}\n{text}");
    for want in [&format!("VisioCluster {NS}/visio (Ministère A)"), "SFU pods", "visio-sfu-1", "Recent warnings"] {
        ensure!(text.contains(want), "{want:?} not in the status:\n{text}");
    }
    ensure!(!text.contains('\u{1b}'), "colour written to a pipe:\n{text}");
    let status = status_json(&ministry)?;
    ensure!(status.as_array().map(Vec::len) == Some(1), "one tenant in {NS}: {status}");
    let sfu0 = pod_in(&status, "visio-sfu-0").context("sfu-0 in the JSON")?;
    ensure!(sfu0["state"] == "serving" && sfu0["rooms"] == 1 && sfu0["participants"] == 3, "{sfu0}");
    ensure!(status[0]["drainTimeout"] == "1m", "{status}");

    // 2. Refusals. A pod that copies the SFU labels but is not the operator's.
    let impostor: Pod = serde_json::from_value(json!({
        "metadata": {"name": "impostor", "labels": {COMPONENT_LABEL: "sfu", CLUSTER_LABEL: "visio"}},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/none"}]}
    }))?;
    pods.create(&PostParams::default(), &impostor).await?;
    let ran = plugin(&admin, &["drain", "impostor", "-n", NS])?;
    ensure!(
        !ran.ok && ran.stderr.contains("refused: pod e2e-kubectl-visio/impostor is not an SFU pod"),
        "impostor: {}",
        ran.stderr
    );
    // Another ministry's SFU pod, asked by ministry A's admin: their rights stop at their namespace.
    let ran = plugin(&ministry, &["drain", "visio-sfu-0", "-n", OTHER])?;
    ensure!(!ran.ok && ran.stderr.contains("forbidden"), "another tenant's pod: {} {}", ran.stdout, ran.stderr);
    ensure!(annotation(&other_pods.get("visio-sfu-0").await?, DRAIN_REQUESTED).is_none(), "B's pod was marked");
    // The admin may not write the operator's own marks: the policy holds (it takes a moment to load;
    // the probe is a server-side dry run, so that an attempt admitted before then changes nothing: a
    // drain-since that got through would have the operator drain the pod at once).
    let as_admin = |args: &[&str]| -> Result<visio_e2e::process::Output> {
        let mut a = vec!["--as", "agent-du-ministere", "--as-group", ADMINS];
        a.extend_from_slice(args);
        kubectl_out(&admin, &a, None)
    };
    let since = format!("{DRAIN_SINCE}=2026-12-05T00:00:00Z");
    let refused = wait_for("the tenant admin policy in force", Duration::from_secs(30), || async {
        let out = as_admin(&["annotate", "pod", "-n", NS, "visio-sfu-1", &since, "--dry-run=server"])?;
        Ok((!out.ok).then_some(out.stderr))
    })
    .await?;
    ensure!(refused.contains("may only ask for a drain"), "drain-since by a tenant admin: {refused}");
    let out = as_admin(&["label", "pod", "-n", NS, "visio-sfu-1", "visio.io/serving=false", "--overwrite"])?;
    ensure!(!out.ok && out.stderr.contains("may not change"), "the serving label by a tenant admin: {}", out.stderr);

    // 3. drain, by the ministry's admin: the operator starts a replacement and drains the pod.
    let ran = plugin(&ministry, &["drain", "visio-sfu-0", "-n", NS])?;
    ensure!(ran.ok, "drain by the tenant admin: {} {}", ran.stdout, ran.stderr);
    eprintln!("=== kubectl visio drain visio-sfu-0 -n {NS}\n{}", ran.stdout);
    let (replacement, since) = wait_for("a replacement, then sfu-0 draining", Duration::from_secs(60), || async {
        let all = sfu_pods(&pods).await?;
        let extra = all.iter().map(|p| p.name_any()).find(|n| n != "visio-sfu-0" && n != "visio-sfu-1");
        let since = all.iter().find(|p| p.name_any() == "visio-sfu-0").and_then(|p| annotation(p, DRAIN_SINCE));
        Ok(extra.zip(since))
    })
    .await
    .inspect_err(|_| dump(NS))?;
    let status = status_json(&ministry)?;
    let sfu0 = pod_in(&status, "visio-sfu-0").context("sfu-0 in the JSON")?;
    ensure!(sfu0["state"] == "draining" && sfu0["drainSince"] == since.as_str(), "{sfu0}");
    ensure!(sfu0["drainDeadline"].is_string(), "the deadline is shown: {sfu0}");
    ensure!(pod_in(&status, &replacement).is_some(), "the replacement {replacement} is shown: {status}");
    let ran = plugin(&ministry, &["drain", "visio-sfu-0", "-n", NS])?;
    ensure!(ran.ok && ran.stdout.contains("draining already"), "a second drain: {}", ran.stdout);
    // The operator says why it drains: the request, not an upgrade or a cordon.
    wait_for("a DrainStarted Event naming the request", Duration::from_secs(30), || async {
        let started = events(&client, NS, "DrainStarted").await?;
        Ok(started
            .iter()
            .any(|e| e.message.as_deref().is_some_and(|m| m.contains("visio-sfu-0 (Requested)")))
            .then_some(()))
    })
    .await?;

    // 4. A tenant mid-upgrade (the "done when"): a new version while the pods roll.
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), NS);
    let bump = json!({"spec": {"version": NEW_VERSION}});
    vcs.patch("visio", &PatchParams::default(), &Patch::Merge(&bump)).await?;
    let upgrading = wait_for("status shows the upgrade", Duration::from_secs(60), || async {
        let s = status_json(&ministry)?;
        let u = &s[0]["upgrade"];
        Ok((u["to"] == NEW_VERSION && u["from"].as_str().is_some_and(|f| f.contains(OLD_VERSION))).then_some(s))
    })
    .await?;
    let text = plugin(&ministry, &["status", "-n", NS])?.stdout;
    eprintln!("=== kubectl visio status -n {NS}, mid-upgrade\n{text}");
    ensure!(text.contains(&format!("upgrade      {OLD_VERSION} -> {NEW_VERSION}")), "no upgrade line:\n{text}");
    ensure!(upgrading[0]["upgrade"]["total"].as_i64() > upgrading[0]["upgrade"]["updated"].as_i64(), "{upgrading}");

    // 5. report, as the cluster admin (who may read Secrets): no secret value in the archive.
    let archive = dir.join("report.tar.gz");
    let ran = plugin(&admin, &["report", "-n", NS, "-f", archive.to_str().context("a path")?])?;
    ensure!(ran.ok, "report: {}", ran.stderr);
    let out = dir.join("report");
    std::fs::create_dir_all(&out)?;
    let untar = Command::new("tar").arg("-xzf").arg(&archive).arg("-C").arg(&out).output()?;
    ensure!(untar.status.success(), "tar -xzf: {}", String::from_utf8_lossy(&untar.stderr));
    let root = out.join(format!("visio-report-{NS}"));
    let mut bundle = String::new();
    for name in [
        "NOTES.txt",
        "visioclusters.yaml",
        "events.yaml",
        "secrets.yaml",
        "pods.yaml",
        "config/visio-livekit-config/livekit.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(name)).with_context(|| format!("{name} in the report"))?;
        bundle.push_str(&text);
    }
    for entry in walk(&root)? {
        bundle.push_str(&String::from_utf8_lossy(&std::fs::read(entry)?));
    }
    ensure!(bundle.contains("<redacted "), "values are redacted");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let mut checked = 0;
    for s in secrets.list(&ListParams::default()).await?.items {
        for (key, value) in s.data.clone().unwrap_or_default() {
            let text = String::from_utf8_lossy(&value.0).into_owned();
            // Long values only: a port or "true" may appear anywhere for other reasons.
            if text.len() < 8 {
                continue;
            }
            let b64 = base64::engine::general_purpose::STANDARD.encode(&value.0);
            ensure!(!bundle.contains(&b64), "Secret {} key {key}: its base64 value is in the report", s.name_any());
            // The LiveKit config (many lines) is shown redacted: its secrets are the credentials' values.
            if !text.contains('\n') {
                ensure!(!bundle.contains(&text), "Secret {} key {key}: its value is in the report", s.name_any());
                checked += 1;
            }
        }
    }
    ensure!(checked >= 2, "the credentials Secret's values were checked ({checked})");
    ensure!(bundle.contains("operator log: skipped"), "the operator runs outside a pod here: NOTES.txt says so");
    eprintln!("=== kubectl visio report -n {NS}: {} ({checked} secret values checked absent)", ran.stdout.trim());
    agents.abort();
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}
