//! The agent's ServiceAccount token is out of the LiveKit container's reach. Both containers run as the same
//! UID in one process namespace (the agent SIGTERMs LiveKit to drain it), so a compromised LiveKit process
//! could read the agent's files and memory through `/proc/<agent>/...` unless the agent is not dumpable
//! (`agent::process::keep_private`, called first thing in `visio-operator agent`).
//!
//! Real processes, as the pod runs them: this test binary re-runs itself as a "holder" (the agent's side:
//! `keep_private()`, then a secret in its environment, held open) under the SFU's UID, and a reader under the
//! same UID (the LiveKit side) tries `/proc/<holder>/environ` and `/proc/<holder>/root`. A holder that skips
//! `keep_private()` is read, so the refusal is the call's doing. The UID switch needs root (CI here runs as
//! root); as another user the holder runs as that user, which is the same situation.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use visio_operator::agent::process::{dumpable, keep_private, sigterm};
use visio_operator::builders::sfu::SFU_UID;

const HOLDER: &str = "VISIO_TEST_PRIVATE_HOLDER";
const SECRET: &str = "VISIO_TEST_TOKEN";

/// Runs only inside the re-run: become the agent (private or not), hold a secret, wait to be signalled.
#[test]
fn holder() {
    let Ok(mode) = std::env::var(HOLDER) else { return };
    if mode == "private" {
        keep_private().expect("prctl");
        assert!(!dumpable());
    }
    std::thread::sleep(Duration::from_secs(30));
}

fn as_sfu_user(cmd: &mut Command) -> &mut Command {
    // SAFETY of the UID switch is the kernel's: it fails (and the test with it) without the right.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(SFU_UID as u32).gid(SFU_UID as u32);
    }
    cmd
}

fn spawn_holder(mode: &str) -> std::process::Child {
    let exe = std::env::current_exe().expect("the test binary");
    as_sfu_user(Command::new(exe).args(["--exact", "holder", "--nocapture", "--test-threads=1"]))
        .env(HOLDER, mode)
        .env(SECRET, "token-of-the-agent")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the holder starts")
}

/// What a process of the SFU's user reads of `path` (None: refused).
fn read_as_sfu_user(path: &str) -> Option<String> {
    let out = as_sfu_user(Command::new("cat").arg(path)).output().expect("cat runs");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_until_held(pid: u32) {
    // The re-run is a test harness first: its environment is readable as soon as it runs, its prctl a
    // moment later. Wait until the process runs the holder (its own thread sleeping), bounded.
    for _ in 0..100 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status.lines().any(|l| l.starts_with("Threads:") && l.trim_end().ends_with('2')) {
            std::thread::sleep(Duration::from_millis(200));
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn a_process_of_the_same_user_cannot_read_the_private_agent_but_can_still_signal_it() {
    if std::env::var(HOLDER).is_ok() {
        return;
    }
    let mut open = spawn_holder("open");
    let mut private = spawn_holder("private");
    wait_until_held(open.id());
    wait_until_held(private.id());

    let environ = |pid: u32| read_as_sfu_user(&format!("/proc/{pid}/environ"));
    let open_env = environ(open.id());
    assert!(
        open_env.as_deref().is_some_and(|e| e.contains("token-of-the-agent")),
        "the control: a dumpable process of the same user is readable ({open_env:?}), so the refusal below is keep_private's"
    );
    assert_eq!(environ(private.id()), None, "the private agent's environment was read");
    let root = read_as_sfu_user(&format!("/proc/{}/root/etc/hostname", private.id()));
    assert_eq!(root, None, "the private agent's files were read through /proc/<pid>/root");

    // Signals still pass: what the agent needs of LiveKit, and nothing in keep_private stops the reverse.
    let pid = i32::try_from(private.id()).expect("a pid");
    sigterm(pid).expect("SIGTERM to the private process");
    let _ = open.kill();
    let status = private.wait().expect("the holder ends");
    assert!(!status.success(), "ended by the signal");
    let _ = open.wait();
}
