//! The operator's image, as `make image` builds it (dist/visio-operator-<version>.oci.tar) and as the
//! chart runs it:
//!
//! - its config and contents, read from the archive (skopeo, tar), not assumed: the tag and version
//!   label are the crate's version, user 65532, two programs at /usr/local/bin (the operator, which is
//!   also the agent, and `kubectl-visio`), no shell, no package manager, nothing writable, under the
//!   30 MB compressed budget;
//! - the operator RUNS FROM THE IMAGE under podman (runc, read-only root without even a /tmp, every
//!   capability dropped, host network to reach the loopback apiserver), authenticated only by a token
//!   of the chart's ServiceAccount mounted where Kubernetes mounts it, with the chart's own arguments:
//!   it leads and takes the minimal example tenant to Ready without one request refused;
//! - the agent from the same image stands in for an SFU pod's agent, with the agent's own
//!   ServiceAccount token, answers its health endpoint (also through the exec probe the operator wrote,
//!   which needs the binary on PATH), and refuses to start without its required settings;
//! - `crds` from the image prints the CRDs of this source;
//! - `kubectl-visio` from the image, run the way on-call runs it in a cluster with no plugin installed
//!   (`kubectl exec deploy/visio-operator -- kubectl-visio status`: in-cluster config, the operator's
//!   ServiceAccount), shows the example tenant.
//!
//! Every container is removed when the test ends, also when it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use visio_e2e::chart::{
    chart, create_operator_namespace, helm_ok, ready_as, refused_requests, wait_as_operator, NAMESPACE, RELEASE,
    SERVICE_ACCOUNT,
};
use visio_e2e::own::OwnCluster;
use visio_e2e::ports;
use visio_e2e::process::{run, Output};
use visio_e2e::{http_get, repo, wait_for};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The budget the README states: the layers as a registry stores them (gzip).
const COMPRESSED_BUDGET: u64 = 30_000_000;

fn image_ref() -> String {
    format!("ghcr.io/visio/visio-operator:{VERSION}")
}

/// The archive `make image` wrote (or VISIO_E2E_IMAGE_ARCHIVE), with a clear error when it is missing.
fn archive() -> Result<PathBuf> {
    let path = match std::env::var_os("VISIO_E2E_IMAGE_ARCHIVE") {
        Some(p) => PathBuf::from(p),
        None => repo().join(format!("dist/visio-operator-{VERSION}.oci.tar")),
    };
    ensure!(path.exists(), "{} not found: build the image with `make image` (make e2e does)", path.display());
    Ok(path)
}

fn ok(cmd: &mut Command) -> Result<String> {
    let what = format!("{cmd:?}");
    let out = run(cmd, None)?;
    ensure!(out.ok, "{what} failed:\n{}{}", out.stdout, out.stderr);
    Ok(out.stdout)
}

/// `podman` with the runtime flags that work on these machines (contracts.md: runc, cgroupfs).
fn podman(args: &[&str]) -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc", "--cgroup-manager=cgroupfs"]).args(args);
    cmd
}

/// Flags of every container here: the limits runc needs on this kernel, the host network (the
/// apiserver listens on loopback), and the hardening of the chart's securityContext: read-only root
/// without podman's /tmp tmpfs (Kubernetes mounts none), no capability, no privilege escalation.
const RUN_FLAGS: &[&str] = &[
    "--ulimit=nofile=1024:1024",
    "--ulimit=nproc=4096:4096",
    "--network=host",
    "--read-only",
    "--read-only-tmpfs=false",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--pull=never",
];

/// Loads the archive into podman's storage once per test binary.
fn load_image() -> Result<String> {
    static LOADED: Mutex<bool> = Mutex::new(false);
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if !*loaded {
        let archive = archive()?;
        ok(podman(&["load", "--quiet", "--input"]).arg(&archive))?;
        *loaded = true;
    }
    Ok(image_ref())
}

/// A container started with `podman run -d`, removed when dropped.
struct Container {
    name: String,
    log: PathBuf,
}

impl Container {
    fn start(role: &str, dir: &Path, extra: &[String], args: &[String]) -> Result<Container> {
        let image = load_image()?;
        let name = format!("visio-e2e-image-{role}-{}", std::process::id());
        let log = dir.join(format!("{role}.log"));
        let _ = run(&mut podman(&["rm", "--force", &name]), None);
        let mut cmd = podman(&["run", "--detach", "--name", &name]);
        cmd.args(RUN_FLAGS).arg("--log-driver=k8s-file").arg(format!("--log-opt=path={}", log.display()));
        cmd.args(extra).arg(&image).args(args);
        ok(&mut cmd)?;
        Ok(Container { name, log })
    }

    /// The credentials Kubernetes mounts into a pod for its ServiceAccount, and the variables
    /// kubelet sets: the binary finds the apiserver as it does in a cluster (in-cluster config).
    fn service_account_flags(mount: &Path, api_port: u16) -> Vec<String> {
        vec![
            format!("--volume={}:/var/run/secrets/kubernetes.io/serviceaccount:ro", mount.display()),
            "--env=KUBERNETES_SERVICE_HOST=127.0.0.1".into(),
            format!("--env=KUBERNETES_SERVICE_PORT={api_port}"),
        ]
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The uid and gid lines of the container's first process, from the host's /proc.
    fn ids(&self) -> Result<(String, String)> {
        let pid = ok(&mut podman(&["inspect", "--format", "{{.State.Pid}}", &self.name]))?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))?;
        let field = |key: &str| {
            status.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        Ok((field("Uid:").context("Uid")?, field("Gid:").context("Gid")?))
    }

    fn stop(&self) {
        let _ = run(&mut podman(&["stop", "--time", "10", &self.name]), None);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run(&mut podman(&["rm", "--force", "--time", "5", &self.name]), None);
    }
}

/// A scratch directory for tokens and logs, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("visio-e2e-image-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }

    /// A directory laid out like a pod's ServiceAccount mount: token, ca.crt, namespace; readable
    /// by the image's user.
    fn service_account(&self, name: &str, kubeconfig: &Path, token: &str, namespace: &str) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let admin: Value = serde_norway::from_str(&std::fs::read_to_string(kubeconfig)?)?;
        let ca = admin["clusters"][0]["cluster"]["certificate-authority"].as_str().context("certificate-authority")?;
        let dir = self.0.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("token"), token.trim())?;
        std::fs::copy(ca, dir.join("ca.crt"))?;
        std::fs::write(dir.join("namespace"), namespace)?;
        for f in ["token", "ca.crt", "namespace"] {
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o444))?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755))?;
        Ok(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The image's config and contents

/// One entry of a layer: mode string, owner "uid/gid", path without a leading "./" or "/".
fn layer_entries(archive: &Path, digest: &str) -> Result<Vec<(String, String, String)>> {
    let blob = format!("blobs/{}", digest.replacen(':', "/", 1));
    let listing = ok(Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; tar -xOf '{}' '{blob}' | tar -tvz --numeric-owner", archive.display())))?;
    Ok(listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // mode owner size date time path [-> target]
            (f.len() >= 6).then(|| {
                (f[0].to_string(), f[1].to_string(), f[5].trim_start_matches("./").trim_start_matches('/').to_string())
            })
        })
        .filter(|(_, _, p)| !p.is_empty())
        .collect())
}

#[test]
fn the_image_is_two_non_root_programs_without_a_shell() -> Result<()> {
    let archive = archive()?;
    let oci = format!("oci-archive:{}", archive.display());

    // The tag inside the archive and the version label: the crate's version (the chart's appVersion
    // is checked against it in chart.rs).
    let index: Value = serde_json::from_str(&ok(Command::new("tar").arg("-xOf").arg(&archive).arg("index.json"))?)?;
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], image_ref().as_str());

    let config: Value = serde_json::from_str(&ok(Command::new("skopeo").args(["inspect", "--config", &oci]))?)?;
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "the chart's runAsUser/runAsGroup");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/local/bin/visio-operator"]));
    assert_eq!(c["Cmd"], serde_json::json!(["run"]));
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(labels["org.opencontainers.image.source"], "https://github.com/visio/visio-operator");
    assert!(c.get("Volumes").is_none_or(Value::is_null), "no volume: nothing is written in the image");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");

    let manifest: Value = serde_json::from_str(&ok(Command::new("skopeo").args(["inspect", "--raw", &oci]))?)?;
    let layers = manifest["layers"].as_array().context("layers")?;
    let compressed: u64 = layers.iter().filter_map(|l| l["size"].as_u64()).sum();
    assert!(compressed < COMPRESSED_BUDGET, "{compressed} bytes compressed, over the {COMPRESSED_BUDGET} budget");

    let mut entries = vec![];
    for l in layers {
        entries.extend(layer_entries(&archive, l["digest"].as_str().context("digest")?)?);
    }
    let files: Vec<&(String, String, String)> = entries.iter().filter(|(m, _, _)| m.starts_with('-')).collect();
    let paths: Vec<&str> = files.iter().map(|(_, _, p)| p.as_str()).collect();
    assert!(paths.contains(&"usr/local/bin/visio-operator"), "{paths:?}");
    let executables: Vec<&str> =
        files.iter().filter(|(m, _, p)| m.contains('x') && !p.contains(".so")).map(|(_, _, p)| p.as_str()).collect();
    assert_eq!(
        executables,
        ["usr/local/bin/kubectl-visio", "usr/local/bin/visio-operator"],
        "the only programs in the image (the dynamic linker is a .so)"
    );
    for (mode, owner, path) in &entries {
        let base = path.rsplit('/').next().unwrap_or(path);
        assert!(
            !matches!(base, "sh" | "bash" | "dash" | "ash" | "busybox" | "apt" | "apt-get" | "dpkg" | "rpm" | "apk"),
            "{path}: a shell or a package manager in the image"
        );
        assert!(!path.starts_with("bin") && !path.starts_with("usr/bin") && !path.starts_with("sbin"), "{path}");
        // Nothing the runtime user may write (the root is mounted read-only anyway): owned by root, no
        // write bit for group or others (symbolic links carry no permissions).
        assert_eq!(owner, "0/0", "{path} owned by {owner}");
        assert!(mode.starts_with('l') || !mode[4..].contains('w'), "{path} is writable by others ({mode})");
    }
    assert!(files.len() <= 17, "only the two programs, their libraries and a few /etc files: {paths:?}");

    // No shell at run time either.
    let image = load_image()?;
    let mut cmd = podman(&["run", "--rm", "--entrypoint", "/bin/sh"]);
    let out = run(cmd.args(RUN_FLAGS).args([image.as_str(), "-c", "true"]), None)?;
    assert!(!out.ok, "/bin/sh ran in the image");
    assert!(
        out.stderr.contains("no such file or directory"),
        "no /bin/sh, rather than another failure:\n{}",
        out.stderr
    );
    Ok(())
}

#[test]
fn crds_from_the_image_are_this_source_s() -> Result<()> {
    let image = load_image()?;
    let mut cmd = podman(&["run", "--rm"]);
    let out = ok(cmd.args(RUN_FLAGS).args([image.as_str(), "crds"]))?;
    assert_eq!(out, visio_operator::api::crds_yaml()?, "`crds` from the image");
    Ok(())
}

#[test]
fn kubectl_visio_from_the_image_is_this_version() -> Result<()> {
    let image = load_image()?;
    let mut cmd = podman(&["run", "--rm", "--entrypoint", "/usr/local/bin/kubectl-visio"]);
    let out = ok(cmd.args(RUN_FLAGS).args([image.as_str(), "--version"]))?;
    assert_eq!(out.trim(), format!("kubectl visio {VERSION}"), "`kubectl-visio --version` from the image");
    Ok(())
}

#[test]
fn the_agent_from_the_image_refuses_to_start_without_its_settings() -> Result<()> {
    let image = load_image()?;
    let cases: &[(&[&str], &str)] = &[
        (&["agent"], "--pod-name"),
        (&["agent", "--pod-name", "visio-sfu-0"], "--pod-namespace"),
        (&["agent", "--pod-name", "Visio_SFU", "--pod-namespace", "t"], "is not a Kubernetes object name"),
        (&["agent", "--metrics-url", "http://10.0.0.1:6789/metrics"], "loopback"),
    ];
    for (args, expected) in cases {
        let mut cmd = podman(&["run", "--rm"]);
        let out: Output = run(cmd.args(RUN_FLAGS).arg(&image).args(*args), None)?;
        assert!(!out.ok, "agent {args:?} started");
        assert!(out.stderr.contains(expected), "agent {args:?}: expected {expected:?} in:\n{}", out.stderr);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The operator and the agent from the image, against a control plane of the test's own

#[tokio::test]
async fn the_operator_from_its_image_takes_a_tenant_to_ready_as_the_chart_service_account() -> Result<()> {
    load_image()?;
    let scratch = Scratch::new()?;
    let cluster = OwnCluster::up(ports::IMAGE)?;
    let mut containers = vec![];
    let result = image_proof(&cluster, &scratch, &mut containers).await;
    if result.is_err() {
        for c in &containers {
            let logs = c.logs();
            let tail: Vec<&str> = logs.lines().rev().take(30).collect();
            eprintln!("--- last lines of {} ---", c.name);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
    result
}

async fn image_proof(cluster: &OwnCluster, scratch: &Scratch, containers: &mut Vec<Container>) -> Result<()> {
    let admin = cluster.kubeconfig.as_path();
    let kubectl = |args: &[&str]| cluster.kubectl(args, None);
    let json = |args: &[&str]| cluster.json(args);

    // The chart's ServiceAccount and RBAC (the CRDs are in already; replicas=0: the operator is the
    // container below, not a pod kwok would pretend to run).
    create_operator_namespace(admin)?;
    let chart = chart();
    let install = ["install", RELEASE, chart.to_str().unwrap(), "--namespace", NAMESPACE];
    cluster.helm(&[&install[..], &["--skip-crds", "--wait=false", "--set", "replicas=0"]].concat())?;

    // The chart's own arguments for the operator container; the metrics port on loopback (host network).
    let port = visio_e2e::process::free_port()?;
    let port_set = format!("metrics.port={port}");
    let rendered =
        helm_ok(&["template", RELEASE, chart.to_str().unwrap(), "--namespace", NAMESPACE, "--set", &port_set])?;
    let deploy = serde_norway::Deserializer::from_str(&rendered)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .map(|v: serde_norway::Value| serde_json::to_value(v).unwrap_or_default())
        .find(|d: &Value| d["kind"] == "Deployment")
        .context("the chart renders a Deployment")?;
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], image_ref().as_str(), "the chart runs the image this test runs");
    let args: Vec<String> = container["args"]
        .as_array()
        .context("args")?
        .iter()
        .filter_map(|a| a.as_str())
        .map(|a| a.replace("--metrics-addr=0.0.0.0:", "--metrics-addr=127.0.0.1:"))
        .collect();

    let token = kubectl(&["create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=1h"])?;
    let mount = scratch.service_account("operator", admin, &token, NAMESPACE)?;
    let mut flags = Container::service_account_flags(&mount, cluster.ports.api);
    // What the chart's Deployment sets from the downward API; and the network rule of every operator
    // the suite starts (e2e/run-tests): retention sweeps dial loopback only.
    flags.extend(["--env=POD_NAME=image-proof".to_string(), format!("--env=POD_NAMESPACE={NAMESPACE}")]);
    flags.push("--env=VISIO_RETENTION_LOOPBACK_ONLY=1".into());
    let started = std::time::Instant::now();
    containers.push(Container::start("operator", &scratch.0, &flags, &args)?);
    let op = &containers[0];
    let log = op.log.clone();

    let (uid, gid) = op.ids()?;
    assert_eq!((uid.as_str(), gid.as_str()), ("65532 65532 65532 65532", "65532 65532 65532 65532"), "runs as 65532");

    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let readyz = readyz.as_str();
    wait_as_operator(&log, "the operator's /readyz (from its image)", || async move {
        Ok(http_get(readyz).await.is_ok_and(|b| b == "ready\n"))
    })
    .await?;
    wait_as_operator(&log, "the leader Lease held by the operator in its image", || async {
        let lease = json(&["get", "lease", "visio-operator-leader", "-n", NAMESPACE])?;
        Ok(lease["spec"]["holderIdentity"] == "image-proof")
    })
    .await?;

    // The minimal example tenant, as a ministry would apply it.
    let example = repo().join("manifests/examples/00-minimal-tenant.yaml");
    kubectl(&["apply", "-f", example.to_str().unwrap()])?;
    let tenant = "minculture";
    wait_as_operator(&log, "the example VisioCluster Ready (operator from its image)", || async {
        Ok(ready_as(&json(&["get", "visiocluster", "visio", "-n", tenant])?, "True", "Serving"))
    })
    .await?;
    eprintln!("image: operator container started, example tenant Ready after {:.1?}", started.elapsed());

    // The plugin from the same image, as `kubectl exec deploy/visio-operator -- kubectl-visio status`
    // runs it: in-cluster config, the operator's ServiceAccount (whatever it may not read, Warning
    // Events, the screen goes without).
    let mut cmd = podman(&["run", "--rm", "--entrypoint", "/usr/local/bin/kubectl-visio"]);
    cmd.args(RUN_FLAGS).args(&flags).args([image_ref().as_str(), "status", "-n", tenant, "visio", "-o", "json"]);
    let status: Value = serde_json::from_str(&ok(&mut cmd).context("kubectl-visio status from the image")?)?;
    let view = &status[0];
    assert_eq!(view["namespace"], tenant, "{status}");
    assert_eq!(view["name"], "visio", "{status}");
    assert!(view["pods"].as_array().is_some_and(|p| !p.is_empty()), "the tenant's SFU pods: {status}");

    // The agent from the same image, in place of an SFU pod's agent container: that pod's name, the
    // token of the agent's own ServiceAccount (which the operator created), and its readiness probe's
    // command run inside the container. Its backend URLs and health endpoint point at free loopback ports
    // (this is the host's network; no LiveKit runs, so the load is unknown): the pod's own arguments also
    // name files from its volumes (LiveKit's config), which a pod has and this container has not.
    let pods = json(&["get", "pods", "-n", tenant, "-l", "app.kubernetes.io/component=sfu"])?;
    let pod = &pods["items"][0];
    let pod_name = pod["metadata"]["name"].as_str().context("an SFU pod")?;
    let agent = pod["spec"]["containers"]
        .as_array()
        .context("containers")?
        .iter()
        .find(|c| c["name"] == "agent")
        .context("the SFU pod's agent container")?;
    assert_eq!(agent["image"], image_ref().as_str(), "the operator puts its own image in the SFU pod");
    assert_eq!(agent["args"][0], "agent", "the image's entrypoint runs the pod's arguments: {}", agent["args"]);
    let probe: Vec<String> = agent["readinessProbe"]["exec"]["command"]
        .as_array()
        .context("the agent's exec probe")?
        .iter()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    let loopback = |port: u16| format!("http://127.0.0.1:{port}");
    let health = format!("127.0.0.1:{}", visio_e2e::process::free_port()?);
    let agent_args: Vec<String> = [
        "agent",
        "--backend",
        "livekit",
        "--metrics-url",
        &format!("{}/metrics", loopback(visio_e2e::process::free_port()?)),
        "--api-url",
        &loopback(visio_e2e::process::free_port()?),
        "--health-addr",
        &health,
    ]
    .map(String::from)
    .to_vec();
    let sa = pod["spec"]["serviceAccountName"].as_str().context("the SFU pod's ServiceAccount")?;
    // Bound to the pod, as the kubelet's projected token is: the chart's admission policy lets an agent
    // change only the pod its token is bound to.
    let uid = pod["metadata"]["uid"].as_str().context("the SFU pod's uid")?;
    let token = kubectl(&[
        "create",
        "token",
        sa,
        "-n",
        tenant,
        "--duration=1h",
        "--bound-object-kind=Pod",
        &format!("--bound-object-name={pod_name}"),
        &format!("--bound-object-uid={uid}"),
    ])?;
    let mount = scratch.service_account("agent", admin, &token, tenant)?;
    let mut flags = Container::service_account_flags(&mount, cluster.ports.api);
    flags.extend([format!("--env=POD_NAME={pod_name}"), format!("--env=POD_NAMESPACE={tenant}")]);
    containers.push(Container::start("agent", &scratch.0, &flags, &agent_args)?);
    let agent_container = &containers[1];
    let healthz = format!("http://{health}/healthz");
    let healthz = healthz.as_str();
    wait_for("the agent's /healthz (from the image)", Duration::from_secs(30), || async move {
        Ok(http_get(healthz).await.ok())
    })
    .await?;
    // kubelet's exec probe, as the operator wrote it (the binary found on PATH, no shell), and the
    // liveness variant; pointed at this agent's health port.
    for command in [probe.clone(), probe.iter().map(|a| a.replace("readyz", "healthz")).collect()] {
        let mut cmd = podman(&["exec", &agent_container.name]);
        ok(cmd.args(&command).args(["--health-addr", &health]))
            .with_context(|| format!("the agent's exec probe {command:?}"))?;
    }
    let (uid, _) = agent_container.ids()?;
    assert_eq!(uid, "65532 65532 65532 65532");

    // Not one request refused, to either.
    for c in containers.iter() {
        c.stop();
        let refused = refused_requests(&c.logs());
        assert!(refused.is_empty(), "{}: requests refused:\n{}", c.name, refused.join("\n"));
    }
    assert!(containers[0].logs().contains("caches synced"), "the operator synced its caches");
    Ok(())
}
