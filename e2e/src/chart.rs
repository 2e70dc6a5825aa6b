//! The chart's tools shared by the tests that install it (chart.rs) or run the operator as its
//! ServiceAccount (image.rs): helm and kubectl from the local control plane, a ServiceAccount-only
//! kubeconfig, and waits that fail at once on a request RBAC refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::process::{kubectl_at, run, tool, Output};
use crate::{repo, wait_for};

pub const RELEASE: &str = "visio-operator";
pub const NAMESPACE: &str = "visio-system";
pub const SERVICE_ACCOUNT: &str = "visio-operator";

/// The chart's directory.
pub fn chart() -> PathBuf {
    repo().join("helm/visio-operator")
}

/// Runs the `helm` built with the control plane, its cache and config kept out of $HOME.
pub fn helm(args: &[&str]) -> Result<Output> {
    let home = std::env::temp_dir().join("visio-e2e-helm");
    let mut cmd = Command::new(tool("helm")?);
    cmd.args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    run(&mut cmd, None)
}

/// `helm <args>`: stdout, or an error with stderr.
pub fn helm_ok(args: &[&str]) -> Result<String> {
    let out = helm(args)?;
    ensure!(out.ok, "helm {} failed:\n{}", args.join(" "), out.stderr);
    Ok(out.stdout)
}

/// The Namespace document of manifests/install.yaml, created for real (a dry run creates nothing,
/// and the namespaced objects need it).
pub fn create_operator_namespace(kubeconfig: &Path) -> Result<()> {
    let text = std::fs::read_to_string(repo().join("manifests/install.yaml"))?;
    let ns = text.split("\n---").find(|d| d.contains("kind: Namespace")).context("install.yaml has a Namespace")?;
    kubectl_at(kubeconfig, &["apply", "-f", "-"], Some(ns))?;
    Ok(())
}

/// Writes to `path` a kubeconfig that authenticates with `token` only, to the loopback apiserver
/// of the `admin` kubeconfig.
pub fn service_account_kubeconfig(admin: &Path, path: &Path, token: &str) -> Result<()> {
    let admin: Value = serde_norway::from_str(&std::fs::read_to_string(admin)?)?;
    let c = &admin["clusters"][0]["cluster"];
    let server = c["server"].as_str().context("server")?;
    assert!(server.starts_with("https://127.0.0.1:"), "loopback only: {server}");
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "own", "cluster": {"server": server, "certificate-authority": c["certificate-authority"]}}],
        "users": [{"name": "visio-operator", "user": {"token": token}}],
        "contexts": [{"name": "own", "context": {"cluster": "own", "user": "visio-operator"}}],
        "current-context": "own",
    });
    std::fs::write(path, serde_norway::to_string(&kc)?)?;
    Ok(())
}

/// The condition of this type in the object's status.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// The object's Ready condition is `status` with `reason`, for its current generation.
pub fn ready_as(obj: &Value, status: &str, reason: &str) -> bool {
    obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        && condition(obj, "Ready").is_some_and(|c| c["status"] == status && c["reason"] == reason)
}

/// Log lines of the operator that report a request refused by RBAC.
pub fn refused_requests(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.to_lowercase().contains("forbidden") || l.contains("code: 403"))
        .map(str::to_string)
        .collect()
}

/// Waits (90 s at most) until `check` holds, failing at once, with the refused requests, as
/// soon as the operator's log (`log`) reports one: a missing permission shows as itself, not as a timeout.
pub async fn wait_as_operator<F, Fut>(log: &Path, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let log = log.to_path_buf();
    let outcome = wait_for(what, Duration::from_secs(90), || {
        let done = check();
        let log = log.clone();
        async move {
            let refused = refused_requests(&std::fs::read_to_string(&log).unwrap_or_default());
            if !refused.is_empty() {
                return Ok(Some(Err(refused)));
            }
            Ok(done.await?.then_some(Ok(())))
        }
    })
    .await?;
    outcome.map_err(|refused| {
        anyhow::anyhow!(
            "requests refused to the chart's ServiceAccount while waiting for {what}:\n{}",
            refused.join("\n")
        )
    })
}
