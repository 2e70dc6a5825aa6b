//! kstatus, the real library: the health Flux, kpt and other GitOps tools compute for an object
//! (`sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute`). `e2e/kstatus` is a small Go checker of ours
//! built from the Go module proxy into the cache (never the work tree), rebuilt when its source changes.
//! And Argo CD's reading of the same objects: our health check (`packaging/argocd/health.lua`) run by
//! Lua 5.1, as Argo CD runs it (Debian's `lua5.1` and `lua-cjson`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, ensure, Context as _, Result};
use serde::Deserialize;
use serde_json::Value;

/// What kstatus says of one object.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// `InProgress`, `Failed`, `Current`, `Terminating`, `NotFound` or `Unknown`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub error: String,
}

static BUILD: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The checker, built on first use (about 10 s with the module cache warm).
pub fn checker() -> Result<PathBuf> {
    let mut built = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bin) = built.as_ref() {
        return Ok(bin.clone());
    }
    let src = crate::repo().join("e2e/kstatus");
    let mut text = Vec::new();
    for f in ["go.mod", "go.sum", "main.go"] {
        text.extend(std::fs::read(src.join(f)).with_context(|| format!("reading e2e/kstatus/{f}"))?);
    }
    let rev = format!("{:016x}", fnv1a(&text));
    let cache = std::env::var_os("VISIO_E2E_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/visio-e2e")))
        .context("neither VISIO_E2E_CACHE nor HOME is set")?;
    let bin = cache.join(format!("kstatus-{rev}/visio-kstatus"));
    if !bin.exists() {
        let tmp = bin.with_extension("tmp");
        std::fs::create_dir_all(bin.parent().context("cache dir")?)?;
        let out = Command::new("go")
            .args(["build", "-trimpath", "-o"])
            .arg(&tmp)
            .arg(".")
            .current_dir(&src)
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local")
            .output()
            .context("running go build for e2e/kstatus (Go is needed, as for the control plane)")?;
        ensure!(out.status.success(), "building e2e/kstatus: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::rename(&tmp, &bin)?;
    }
    *built = Some(bin.clone());
    Ok(bin)
}

/// kstatus's health of each object (as the apiserver returned it), in order.
pub fn compute(objects: &[Value]) -> Result<Vec<Health>> {
    let mut input = String::new();
    for o in objects {
        input.push_str(&serde_json::to_string(o)?);
        input.push('\n');
    }
    let out = crate::process::run(&mut Command::new(checker()?), Some(&input))?;
    ensure!(out.ok, "visio-kstatus: {}", out.stderr);
    let healths: Vec<Health> =
        out.stdout.lines().map(serde_json::from_str).collect::<Result<_, _>>().context("visio-kstatus's answer")?;
    ensure!(healths.len() == objects.len(), "visio-kstatus answered {} of {} objects", healths.len(), objects.len());
    if let Some(h) = healths.iter().find(|h| !h.error.is_empty()) {
        bail!("kstatus could not read an object: {}", h.error);
    }
    Ok(healths)
}

/// kstatus's health of one object.
pub fn of(object: &Value) -> Result<Health> {
    Ok(compute(std::slice::from_ref(object))?.remove(0))
}

/// Argo CD's health (`Healthy`, `Progressing`, `Degraded`) of each object by our Lua health check.
pub fn argocd(objects: &[Value]) -> Result<Vec<Health>> {
    let mut input = String::new();
    for o in objects {
        input.push_str(&serde_json::to_string(o)?);
        input.push('\n');
    }
    let repo = crate::repo();
    let mut cmd = Command::new("lua5.1");
    cmd.arg(repo.join("e2e/argocd-health.lua")).arg(repo.join("packaging/argocd/health.lua"));
    let out = crate::process::run(&mut cmd, Some(&input))
        .context("running lua5.1 (install Debian's lua5.1 and lua-cjson: apt-get install lua5.1 lua-cjson)")?;
    ensure!(out.ok, "lua5.1 e2e/argocd-health.lua: {}", out.stderr);
    let healths: Vec<Health> =
        out.stdout.lines().map(serde_json::from_str).collect::<Result<_, _>>().context("the Lua check's answer")?;
    ensure!(healths.len() == objects.len(), "the Lua check answered {} of {} objects", healths.len(), objects.len());
    if let Some(h) = healths.iter().find(|h| !h.error.is_empty()) {
        bail!("the Argo CD health check failed on an object: {}", h.error);
    }
    Ok(healths)
}

/// kstatus's health of each object, checked against Argo CD's reading by our Lua health check
/// (Current is Healthy, InProgress Progressing, Failed Degraded): the two must never disagree.
pub fn agreed(objects: &[Value]) -> Result<Vec<Health>> {
    let k = compute(objects)?;
    let a = argocd(objects)?;
    for ((k, a), o) in k.iter().zip(&a).zip(objects) {
        let want = match k.status.as_str() {
            "Current" => "Healthy",
            "Failed" => "Degraded",
            _ => "Progressing",
        };
        // kstatus reads an object the operator has not written a status for yet as Current (its
        // generation check needs `status.observedGeneration`); the Lua check says Progressing, rightly.
        let unobserved = o["status"]["observedGeneration"].is_null();
        ensure!(
            a.status == want || k.status == "Terminating" || unobserved,
            "kstatus says {k:?} but the Argo CD check {a:?} of {}",
            o["status"]
        );
    }
    Ok(k)
}

/// A stable hash of the checker's source (the cache key; not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}
