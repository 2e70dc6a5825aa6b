//! The processes the tests run, in one place: a command run to its end, the tools built with the control
//! plane (`kubectl`, `helm`), the workspace's own binaries, free loopback ports and signals.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context as _, Result};

/// What a command printed, and whether it succeeded.
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to its end, with `stdin` written to it.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<Output> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    if let Some(input) = stdin {
        child.stdin.take().context("stdin")?.write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A binary built with the local control plane (kubectl, helm).
pub fn tool(name: &str) -> Result<PathBuf> {
    let bin = std::env::var_os("VISIO_E2E_BIN").context("VISIO_E2E_BIN is not set (run `make e2e`)")?;
    Ok(PathBuf::from(bin).join(name))
}

/// `kubectl --kubeconfig <kubeconfig> <args>`, whatever its outcome.
pub fn kubectl_out(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let mut cmd = Command::new(tool("kubectl")?);
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    run(&mut cmd, stdin)
}

/// `kubectl --kubeconfig <kubeconfig> <args>`: stdout on success, an error with stderr otherwise.
pub fn kubectl_at(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let out = kubectl_out(kubeconfig, args, stdin)?;
    ensure!(out.ok, "kubectl {}: {}", args.join(" "), out.stderr);
    Ok(out.stdout)
}

/// The matching `kubectl` against the suite's control plane (`VISIO_E2E_KUBECONFIG`): stdout, or an
/// error with stderr.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<String> {
    kubectl_at(&crate::kubeconfig_path()?, args, stdin)
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free UDP port on loopback (bound then released).
pub fn free_udp() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A binary of this workspace: the path in the environment variable `env`, or `target/debug/<name>`.
pub fn workspace_bin(env: &str, name: &str) -> PathBuf {
    std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| crate::repo().join("target/debug").join(name))
}

/// The operator binary under test (`VISIO_E2E_OPERATOR_BIN`, or `target/debug/visio-operator`), which
/// must exist.
pub fn operator_bin() -> Result<PathBuf> {
    let bin = workspace_bin("VISIO_E2E_OPERATOR_BIN", "visio-operator");
    ensure_built(&bin)?;
    Ok(bin)
}

/// An error naming the build command when `bin` is missing.
pub fn ensure_built(bin: &Path) -> Result<()> {
    ensure!(
        bin.exists(),
        "{} not found: build the operator and the stand-ins first (`make build standins`)",
        bin.display()
    );
    Ok(())
}

/// SIGTERM to `pid` (what the kubelet sends on a pod deletion).
pub fn sigterm(pid: u32) -> Result<()> {
    let out = Command::new("kill").args(["-TERM", &pid.to_string()]).stdin(Stdio::null()).output()?;
    ensure!(out.status.success(), "kill -TERM {pid}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// SIGKILL to every one of `pids`, in one `kill`, errors ignored (for a drop, which must not fail).
pub fn kill_pids(pids: &BTreeSet<u32>) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
