//! A control plane of a test's own, with the operator processes the test starts, kills and replaces:
//! for the scenarios that must not share the suite's operator (a restart or an upgrade of the operator,
//! leader election and random kills, the chart's RBAC, the operator from its image). Its ports and
//! state directory are a row of [`crate::ports`]. Every operator is killed, and the control plane
//! stopped and its state purged, when the guard drops, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::Client;
use serde_json::Value;

use crate::ports::Ports;
use crate::process::{free_port, kubectl_at, kubectl_out, sigterm, Output};
use crate::repo;

/// The operator's leader Lease (in its `POD_NAMESPACE`).
pub const LEASE: &str = "visio-operator-leader";

/// The guard of one own control plane.
pub struct OwnCluster {
    /// Its row of the port table.
    pub ports: Ports,
    state: PathBuf,
    pub kubeconfig: PathBuf,
    /// `VISIO_E2E_NO_CRDS=1`: the CRDs come from elsewhere (the chart installs them).
    no_crds: bool,
    /// Every operator started and not dropped, oldest first; the last is "the" operator of a test that
    /// runs one at a time.
    pub operators: Vec<Operator>,
    starts: u32,
    client: OnceLock<Client>,
}

/// One operator process; killed (SIGKILL) and reaped when dropped.
pub struct Operator {
    child: Option<Child>,
    pub instance: String,
    /// Its `--metrics-addr` port on 127.0.0.1 (also `/healthz`, `/readyz`).
    pub metrics_port: u16,
    /// Its log (stdout and stderr), kept outside the state directory for a look after a failure.
    pub log: PathBuf,
}

/// How [`OwnCluster::start`] runs `visio-operator run`: against the cluster's admin kubeconfig, its
/// metrics on a free loopback port, JSON logs, retention sweeps on loopback only (the network rule), and
/// without leader election unless asked.
#[derive(Clone, Debug)]
pub struct OperatorRun {
    bin: PathBuf,
    instance: String,
    election: Election,
    pod_namespace: Option<String>,
    kubeconfig: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug)]
enum Election {
    /// `--leader-election=false`: one operator at a time.
    Off,
    /// Leader election with the operator's default Lease duration.
    On,
    /// Leader election with `--lease-duration <seconds>`.
    Lease(u64),
}

impl OperatorRun {
    pub fn new(bin: &Path, instance: &str) -> Self {
        OperatorRun {
            bin: bin.into(),
            instance: instance.into(),
            election: Election::Off,
            pod_namespace: None,
            kubeconfig: None,
        }
    }

    /// With leader election, on the operator's default Lease duration.
    pub fn leader_election(mut self) -> Self {
        self.election = Election::On;
        self
    }

    /// With leader election on a Lease of `seconds`.
    pub fn lease_duration(mut self, seconds: u64) -> Self {
        self.election = Election::Lease(seconds);
        self
    }

    /// `POD_NAMESPACE` (what a Deployment sets from the downward API: where the leader Lease lives).
    pub fn pod_namespace(mut self, ns: &str) -> Self {
        self.pod_namespace = Some(ns.into());
        self
    }

    /// Another identity than the admin's (a ServiceAccount's token).
    pub fn kubeconfig(mut self, path: &Path) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }
}

impl OwnCluster {
    fn script(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(repo().join("e2e/cluster"));
        cmd.args(args).env("VISIO_E2E_STATE", &self.state).stdin(Stdio::null());
        for (k, v) in self.ports.env() {
            cmd.env(k, v.to_string());
        }
        if self.no_crds {
            cmd.env("VISIO_E2E_NO_CRDS", "1");
        }
        cmd
    }

    /// Starts a fresh control plane on `ports` (purging one a killed run left behind), the CRDs of
    /// `crds/` installed.
    pub fn up(ports: Ports) -> Result<Self> {
        Self::start_cluster(ports, false)
    }

    /// [`OwnCluster::up`] without the CRDs (a test that installs them itself, as the chart does).
    pub fn up_without_crds(ports: Ports) -> Result<Self> {
        Self::start_cluster(ports, true)
    }

    fn start_cluster(ports: Ports, no_crds: bool) -> Result<Self> {
        let state = repo().join(ports.state);
        let guard = OwnCluster {
            kubeconfig: state.join("kubeconfig"),
            state,
            ports,
            no_crds,
            operators: Vec::new(),
            starts: 0,
            client: OnceLock::new(),
        };
        let _ = guard.script(&["down", "--purge"]).output();
        let _ = std::fs::remove_dir_all(guard.log_dir());
        std::fs::create_dir_all(guard.log_dir())?;
        let out = guard.script(&["up"]).output()?;
        if !out.status.success() {
            // The guard purges the state, logs included: keep their ends in the error.
            let mut tails = String::new();
            for name in ["etcd", "kube-apiserver"] {
                let log = std::fs::read_to_string(guard.state.join(format!("logs/{name}.log"))).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                tails += &format!("--- {name}.log (end) ---\n{}\n", lines[lines.len().saturating_sub(15)..].join("\n"));
            }
            bail!("e2e/cluster up ({}) failed:\n{}\n{tails}", ports.cluster, String::from_utf8_lossy(&out.stderr));
        }
        Ok(guard)
    }

    /// Where the operators' logs go: outside the state directory, which the guard purges.
    fn log_dir(&self) -> PathBuf {
        let name = self.ports.state.trim_start_matches('.').replace('/', "-");
        std::env::temp_dir().join("visio-e2e-own").join(name)
    }

    /// Its state directory (purged when the guard drops).
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// A client for this control plane (made once).
    pub async fn client(&self) -> Result<Client> {
        if let Some(c) = self.client.get() {
            return Ok(c.clone());
        }
        let client = crate::client_at(&self.kubeconfig).await?;
        Ok(self.client.get_or_init(|| client).clone())
    }

    /// `kubectl <args>` as the admin: stdout, or an error with stderr.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        kubectl_at(&self.kubeconfig, args, stdin)
    }

    /// `kubectl <args>` as the admin, whatever its outcome.
    pub fn kubectl_out(&self, args: &[&str]) -> Result<Output> {
        kubectl_out(&self.kubeconfig, args, None)
    }

    /// `kubectl <args> -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl(&a, None)?)?)
    }

    /// Applies a JSON document (a List or one object) with kubectl.
    pub fn apply(&self, doc: &Value) -> Result<()> {
        self.kubectl(&["apply", "-f", "-"], Some(&doc.to_string()))?;
        Ok(())
    }

    /// `helm <args>` against this control plane: stdout, or an error with stderr.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        let kubeconfig = self.kubeconfig.to_str().context("kubeconfig path")?;
        crate::chart::helm_ok(&[args, &["--kubeconfig", kubeconfig]].concat())
    }

    /// Who holds the operator's leader Lease in `ns`.
    pub async fn lease_holder(&self, ns: &str) -> Result<Option<String>> {
        let api: Api<Lease> = Api::namespaced(self.client().await?, ns);
        Ok(api.get_opt(LEASE).await?.and_then(|l| l.spec).and_then(|s| s.holder_identity))
    }

    /// Starts an operator against this control plane; returns its index in [`OwnCluster::operators`].
    pub fn start(&mut self, run: OperatorRun) -> Result<usize> {
        let metrics_port = free_port()?;
        self.starts += 1;
        let log = self.log_dir().join(format!("operator-{:03}-{}.log", self.starts, run.instance));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&run.bin);
        cmd.args(["run", "--metrics-addr", &format!("127.0.0.1:{metrics_port}"), "--log-format", "json"]).args([
            "--agent-image",
            "visio-operator:e2e",
            "--instance",
            &run.instance,
        ]);
        match run.election {
            Election::Off => cmd.arg("--leader-election=false"),
            Election::On => &mut cmd,
            Election::Lease(seconds) => cmd.args(["--lease-duration", &seconds.to_string()]),
        };
        if let Some(ns) = &run.pod_namespace {
            cmd.env("POD_NAMESPACE", ns);
        }
        let child = cmd
            .env("KUBECONFIG", run.kubeconfig.as_ref().unwrap_or(&self.kubeconfig))
            // The network rule whatever runs the test (e2e/run-tests exports it too): a RetentionPolicy
            // naming a real-looking endpoint is never dialled.
            .env("VISIO_RETENTION_LOOPBACK_ONLY", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", run.bin.display()))?;
        self.operators.push(Operator { child: Some(child), instance: run.instance, metrics_port, log });
        Ok(self.operators.len() - 1)
    }

    /// Starts `bin run` without leader election: the one operator of the test.
    pub fn start_operator(&mut self, bin: &Path, instance: &str) -> Result<()> {
        self.start(OperatorRun::new(bin, instance))?;
        Ok(())
    }

    /// The operator started last.
    pub fn operator(&mut self) -> Result<&mut Operator> {
        self.operators.last_mut().context("no operator started")
    }

    /// SIGKILL of the operator started last: no shutdown path runs.
    pub fn kill_operator(&mut self) {
        if let Some(op) = self.operators.last_mut() {
            op.kill();
        }
    }

    /// The operator started last stopped as a Deployment's rollout stops its pod (see [`Operator::stop`]).
    pub fn stop_operator(&mut self) {
        if let Some(op) = self.operators.last_mut() {
            op.stop();
        }
    }

    /// Whether the operator started last still runs (it must survive an API outage by itself).
    pub fn operator_running(&mut self) -> bool {
        self.operators.last_mut().is_some_and(Operator::running)
    }

    /// Stops one control-plane component (`etcd`, `kube-apiserver`, ...): an outage.
    pub fn stop_component(&self, name: &str) -> Result<()> {
        let out = self.script(&["stop", name]).output()?;
        anyhow::ensure!(out.status.success(), "e2e/cluster stop {name}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    /// Starts it again, with the same flags and data (for the apiserver: until it is ready).
    pub fn start_component(&self, name: &str) -> Result<()> {
        let out = self.script(&["start", name]).output()?;
        anyhow::ensure!(out.status.success(), "e2e/cluster start {name}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    /// `result`, after printing, if it is an error, what is left to see why: the end of the last three
    /// operators' logs, the pods, nodes and Warning Events as the API has them, and the last errors of
    /// the control plane's components (the guard purges their logs when it drops).
    pub fn on_failure<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.print_failure(30);
        }
        result
    }

    fn print_failure(&self, lines: usize) {
        for op in self.operators.iter().rev().take(3) {
            let log = op.log_text();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            eprintln!("--- last lines of the operator {} ({}) ---", op.instance, op.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        for args in [
            &["get", "nodes", "-o", "wide", "--request-timeout=10s"][..],
            &["get", "pods", "-A", "-o", "wide", "--request-timeout=10s"][..],
            &["get", "events", "-A", "--field-selector", "type=Warning", "--request-timeout=10s"][..],
        ] {
            eprintln!("--- kubectl {} ---", args.join(" "));
            match self.kubectl_out(args) {
                Ok(o) => eprintln!("{}{}", o.stdout, o.stderr),
                Err(e) => eprintln!("{e}"),
            }
        }
        for name in ["kube-apiserver", "kube-scheduler", "kwok", "kube-controller-manager"] {
            let log = std::fs::read_to_string(self.state.join(format!("logs/{name}.log"))).unwrap_or_default();
            // klog's error lines start with E; kwok logs with level=ERROR.
            let errors: Vec<&str> = log
                .lines()
                .filter(|l| l.starts_with('E') || l.contains("level=ERROR") || l.contains("level=WARN"))
                .collect();
            eprintln!("--- {name}.log: {} error lines, the last 15 ---", errors.len());
            for l in &errors[errors.len().saturating_sub(15)..] {
                eprintln!("{}", l.chars().take(400).collect::<String>());
            }
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.operators.clear();
        let _ = self.script(&["down", "--purge"]).output();
    }
}

impl Operator {
    pub fn pid(&self) -> Result<u32> {
        Ok(self.child.as_ref().context("operator already stopped")?.id())
    }

    /// `http://127.0.0.1:<metrics port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.metrics_port)
    }

    pub fn metrics_url(&self) -> String {
        self.url("/metrics")
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (what the kubelet sends on a pod deletion), without waiting.
    pub fn terminate(&self) -> Result<()> {
        sigterm(self.pid()?)
    }

    /// SIGTERM, as a Deployment's rollout stops the old operator pod; SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = sigterm(child.id());
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process still runs (`None`), or how it ended.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("operator {} already reaped", self.instance),
        }
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.exited(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}
