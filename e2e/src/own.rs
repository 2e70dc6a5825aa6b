//! A control plane of a test's own, with an operator process the test starts, kills and replaces:
//! for the scenarios that must not share the suite's operator (a restart, an upgrade of the operator).
//! Both are stopped when the guard drops, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, Result};

use crate::repo;

/// Ports of one control plane; each test that owns one picks values apart from every other (the
/// table is in e2e/README.md).
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub api: u16,
    pub etcd: u16,
    pub etcd_peer: u16,
    pub kcm: u16,
    pub scheduler: u16,
    pub kwok: u16,
    /// Fake nodes.
    pub nodes: u16,
}

/// The guard of one own control plane (state under the git-ignored `.e2e-own/<name>`).
pub struct OwnCluster {
    name: String,
    state: PathBuf,
    ports: Ports,
    pub kubeconfig: PathBuf,
    operator: Option<Child>,
    /// The running operator's metrics port.
    pub metrics_port: u16,
    starts: u32,
}

impl OwnCluster {
    fn script(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(repo().join("e2e/cluster"));
        let p = self.ports;
        cmd.args(args).env("VISIO_E2E_STATE", &self.state).stdin(Stdio::null());
        for (k, v) in [
            ("VISIO_E2E_API_PORT", p.api),
            ("VISIO_E2E_ETCD_PORT", p.etcd),
            ("VISIO_E2E_ETCD_PEER_PORT", p.etcd_peer),
            ("VISIO_E2E_KCM_PORT", p.kcm),
            ("VISIO_E2E_SCHED_PORT", p.scheduler),
            ("VISIO_E2E_KWOK_PORT", p.kwok),
            ("VISIO_E2E_NODES", p.nodes),
        ] {
            cmd.env(k, v.to_string());
        }
        cmd
    }

    /// Starts a fresh control plane (purging one a killed run left behind).
    pub fn up(name: &str, ports: Ports) -> Result<Self> {
        let state = repo().join(".e2e-own").join(name);
        let guard = OwnCluster {
            name: name.into(),
            kubeconfig: state.join("kubeconfig"),
            state,
            ports,
            operator: None,
            metrics_port: 0,
            starts: 0,
        };
        let _ = guard.script(&["down", "--purge"]).output();
        let out = guard.script(&["up"]).output()?;
        if !out.status.success() {
            // The guard purges the state, logs included: keep their ends in the error.
            let mut tails = String::new();
            for name in ["etcd", "kube-apiserver"] {
                let log = std::fs::read_to_string(guard.state.join(format!("logs/{name}.log"))).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                tails += &format!("--- {name}.log (end) ---\n{}\n", lines[lines.len().saturating_sub(15)..].join("\n"));
            }
            anyhow::bail!("e2e/cluster up ({name}) failed:\n{}\n{tails}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(guard)
    }

    /// The operator's log, outside the state directory (which the guard purges): kept for a look
    /// after a failure. Every start of the operator appends to it.
    pub fn log(&self) -> PathBuf {
        std::env::temp_dir().join("visio-e2e-own").join(format!("{}-operator.log", self.name))
    }

    /// Starts `bin run` against this control plane (without leader election: one operator at a time).
    pub fn start_operator(&mut self, bin: &Path, instance: &str) -> Result<()> {
        self.metrics_port = crate::process::free_port()?;
        self.starts += 1;
        if let Some(dir) = self.log().parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.starts > 1)
            .truncate(self.starts == 1)
            .open(self.log())?;
        let child = Command::new(bin)
            .args(["run", "--metrics-addr", &format!("127.0.0.1:{}", self.metrics_port), "--log-format", "json"])
            .args(["--agent-image", "visio-operator:e2e", "--leader-election=false", "--instance", instance])
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.operator = Some(child);
        Ok(())
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as a Deployment's rollout stops the old operator pod; SIGKILL after 10 s.
    pub fn stop_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
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

    /// Whether the operator process is still running (it must survive an API outage by itself).
    pub fn operator_running(&mut self) -> bool {
        self.operator.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Prints the end of the operator's log and what the control plane shows (for a failed test):
    /// the pods and nodes as the API has them, and the last errors of the scheduler, kwok and the
    /// controller manager. The guard purges their logs when it drops, so this is all that is left.
    pub fn print_log_tail(&self, lines: usize) {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        eprintln!("--- last lines of the operator log ({}) ---", self.log().display());
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
        self.print_cluster_state();
    }

    fn print_cluster_state(&self) {
        let Some(bin) = std::env::var_os("VISIO_E2E_BIN").map(PathBuf::from) else { return };
        for args in [
            &["get", "nodes", "-o", "wide", "--request-timeout=10s"][..],
            &["get", "pods", "-A", "-o", "wide", "--request-timeout=10s"][..],
            &["get", "events", "-A", "--field-selector", "type=Warning", "--request-timeout=10s"][..],
        ] {
            let out = Command::new(bin.join("kubectl"))
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args)
                .stdin(Stdio::null())
                .output();
            eprintln!("--- kubectl {} ---", args.join(" "));
            match out {
                Ok(o) => eprintln!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
                Err(e) => eprintln!("{e}"),
            }
        }
        for name in ["kube-scheduler", "kwok", "kube-controller-manager"] {
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
        self.kill_operator();
        let _ = self.script(&["down", "--purge"]).output();
    }
}
