//! Finding the backend process in the pod and sending it the drain signal.
//!
//! LiveKit drains on its first SIGTERM (refuses new rooms, keeps the existing ones, exits when no
//! participant is left) and exits at once on a second one. So the agent signals a given process once and
//! only once, and only when exactly one process matches: it never guesses. The pod shares one PID
//! namespace (`shareProcessNamespace: true`) and both containers run as the same user, which is what lets
//! the agent see the SFU in `/proc` and signal it without any capability.

use std::path::Path;

/// One process as `/proc` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: i32,
    /// Parent pid, when `/proc/<pid>/stat` could be read.
    pub ppid: Option<i32>,
    /// `/proc/<pid>/cmdline`: NUL-separated arguments (empty for kernel threads and zombies).
    pub cmdline: Vec<u8>,
}

/// Which processes may be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Any process of the PID namespace (the pod): the production setting.
    Any,
    /// Only children of this pid (tests, where other stand-ins may run on the same machine).
    ChildrenOf(i32),
    /// Only this very process (`--backend-pid`: a test harness running many backends on one machine, each
    /// with its own agent). Its program name must still match, so a reused pid is never signalled.
    Pid(i32),
}

/// The outcome of a selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    None,
    One(i32),
    /// More than one match: refuse to guess.
    Ambiguous(Vec<i32>),
}

/// The program name of a command line: the file name of its first argument.
pub fn program_name(cmdline: &[u8]) -> Option<&[u8]> {
    let argv0 = cmdline.split(|b| *b == 0).next()?;
    let name = argv0.rsplit(|b| *b == b'/').next()?;
    (!name.is_empty()).then_some(name)
}

/// The processes whose program name is exactly `name`, other than `own_pid`, within `scope`.
pub fn select(entries: &[ProcEntry], name: &str, own_pid: i32, scope: Scope) -> Selection {
    let mut found: Vec<i32> = entries
        .iter()
        .filter(|e| e.pid != own_pid && e.pid > 0)
        .filter(|e| match scope {
            Scope::Any => true,
            Scope::ChildrenOf(parent) => e.ppid == Some(parent),
            Scope::Pid(pid) => e.pid == pid,
        })
        .filter(|e| program_name(&e.cmdline) == Some(name.as_bytes()))
        .map(|e| e.pid)
        .collect();
    found.sort_unstable();
    found.dedup();
    match found.as_slice() {
        [] => Selection::None,
        [pid] => Selection::One(*pid),
        _ => Selection::Ambiguous(found),
    }
}

/// The parent pid in the text of `/proc/<pid>/stat` (`pid (comm) state ppid ...`; `comm` may hold spaces
/// and parentheses, so the fields are read after the last `)`).
pub fn parse_ppid(stat: &str) -> Option<i32> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// Reads every `<root>/<pid>/cmdline` (and `stat` for the parent). Processes that vanish or cannot be read
/// meanwhile are skipped.
pub fn scan(root: &Path) -> Vec<ProcEntry> {
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // A PID namespace holds at most a few hundred thousand processes; a pod, a handful.
    for entry in dir.flatten().take(1_000_000) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let path = entry.path();
        let Ok(mut cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        cmdline.truncate(64 * 1024);
        let ppid = std::fs::read_to_string(path.join("stat")).ok().and_then(|s| parse_ppid(&s));
        out.push(ProcEntry { pid, ppid, cmdline });
    }
    out
}

/// Makes this process unreadable by the other processes of its user: the LiveKit container runs as the
/// same UID in the same process namespace (so that the agent may SIGTERM it), and would otherwise reach the
/// agent's ServiceAccount token through `/proc/<agent>/root`, `/fd`, `/mem` or `/environ`. A process that is
/// not dumpable has those entries owned by root and refused to anyone without CAP_SYS_PTRACE (every
/// capability is dropped in both containers); signals still pass, since kill(2) checks UIDs only.
pub fn keep_private() -> std::io::Result<()> {
    // SAFETY: prctl(2) PR_SET_DUMPABLE takes an integer and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether this process is dumpable (readable by the other processes of its user).
pub fn dumpable() -> bool {
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
}

/// Whether `pid` still exists (signal 0 checks without sending anything).
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Why a signal could not be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignalError {
    #[error("refusing to signal pid {0}")]
    InvalidPid(i32),
    #[error("process {0} is gone")]
    Gone(i32),
    #[error("not allowed to signal process {0} (both containers must run as the same user)")]
    NotPermitted(i32),
    #[error("signalling process {0}: {1}")]
    Other(i32, String),
}

/// Sends SIGTERM to `pid`.
pub fn sigterm(pid: i32) -> Result<(), SignalError> {
    // pid 0 and negative pids address process groups; 1 is the pause process of the pod.
    if pid <= 1 {
        return Err(SignalError::InvalidPid(pid));
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::ESRCH) => SignalError::Gone(pid),
        Some(libc::EPERM) => SignalError::NotPermitted(pid),
        _ => SignalError::Other(pid, err.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i32, ppid: i32, args: &[&str]) -> ProcEntry {
        let mut cmdline = Vec::new();
        for a in args {
            cmdline.extend_from_slice(a.as_bytes());
            cmdline.push(0);
        }
        ProcEntry { pid, ppid: Some(ppid), cmdline }
    }

    /// What `/proc` shows in an SFU pod with a shared PID namespace.
    fn pod() -> Vec<ProcEntry> {
        vec![
            entry(1, 0, &["/pause"]),
            entry(7, 0, &["/livekit-server", "--config", "/etc/livekit/livekit.yaml"]),
            entry(19, 0, &["/visio-operator", "agent", "--backend", "livekit"]),
            ProcEntry { pid: 23, ppid: Some(0), cmdline: vec![] }, // a zombie
        ]
    }

    #[test]
    fn finds_the_sfu_in_a_pod() {
        assert_eq!(select(&pod(), "livekit-server", 19, Scope::Any), Selection::One(7));
        assert_eq!(select(&pod(), "pause", 19, Scope::Any), Selection::One(1));
        assert_eq!(select(&pod(), "visio-operator", 19, Scope::Any), Selection::None, "never itself");
    }

    #[test]
    fn matches_the_program_name_exactly() {
        let entries = vec![
            entry(5, 1, &["/bin/sh", "-c", "livekit-server --config x"]),
            entry(6, 1, &["livekit-server-old"]),
            entry(8, 1, &["/opt/livekit-server/bin/helper"]),
            entry(9, 1, &["tail", "-f", "/var/log/livekit-server"]),
        ];
        assert_eq!(select(&entries, "livekit-server", 100, Scope::Any), Selection::None);
        assert_eq!(select(&[entry(4, 1, &["livekit-server"])], "livekit-server", 100, Scope::Any), Selection::One(4));
    }

    #[test]
    fn refuses_to_guess() {
        let entries = vec![entry(7, 1, &["/livekit-server"]), entry(9, 1, &["/usr/bin/livekit-server"])];
        assert_eq!(select(&entries, "livekit-server", 100, Scope::Any), Selection::Ambiguous(vec![7, 9]));
    }

    #[test]
    fn scope_children_only() {
        let entries = vec![
            entry(7, 50, &["target/debug/livekit-standin"]),
            entry(9, 60, &["target/debug/livekit-standin"]),
            ProcEntry { pid: 11, ppid: None, cmdline: b"livekit-standin\0".to_vec() },
        ];
        assert_eq!(select(&entries, "livekit-standin", 100, Scope::ChildrenOf(60)), Selection::One(9));
        assert_eq!(select(&entries, "livekit-standin", 100, Scope::ChildrenOf(61)), Selection::None);
        assert!(
            matches!(select(&entries, "livekit-standin", 100, Scope::Any), Selection::Ambiguous(v) if v.len() == 3)
        );
    }

    #[test]
    fn scope_one_pid() {
        let entries = vec![
            entry(7, 50, &["target/debug/livekit-standin"]),
            entry(9, 50, &["target/debug/livekit-standin"]),
            entry(11, 50, &["/bin/sleep", "100"]),
        ];
        assert_eq!(select(&entries, "livekit-standin", 100, Scope::Pid(9)), Selection::One(9));
        assert_eq!(select(&entries, "livekit-standin", 100, Scope::Pid(12)), Selection::None, "gone");
        assert_eq!(
            select(&entries, "livekit-standin", 100, Scope::Pid(11)),
            Selection::None,
            "pid reused by another program"
        );
        assert_eq!(select(&entries, "livekit-standin", 9, Scope::Pid(9)), Selection::None, "never itself");
    }

    #[test]
    fn program_names() {
        assert_eq!(program_name(b"/livekit-server\0--config\0"), Some(&b"livekit-server"[..]));
        assert_eq!(program_name(b"livekit-server"), Some(&b"livekit-server"[..]));
        assert_eq!(program_name(b""), None);
        assert_eq!(program_name(b"/\0"), None);
        assert_eq!(program_name(b"\0x"), None);
    }

    #[test]
    fn stat_parent() {
        assert_eq!(parse_ppid("7 (livekit-server) S 1 7 7 0 -1 4194560"), Some(1));
        assert_eq!(parse_ppid("8 (a) b (c) R 42 8 8"), Some(42));
        assert_eq!(parse_ppid("9 (x y) Z 3"), Some(3));
        assert_eq!(parse_ppid("garbage"), None);
        assert_eq!(parse_ppid("1 (x)"), None);
        assert_eq!(parse_ppid("1 (x) S notanumber"), None);
    }

    #[test]
    fn scans_a_fixture_tree() {
        let root = std::env::temp_dir().join(format!("visio-proc-fixture-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (pid, cmdline, stat) in [
            ("1", &b"/pause\0"[..], "1 (pause) S 0 1 1"),
            ("7", &b"/livekit-server\0--config\0/etc/livekit/livekit.yaml\0"[..], "7 (livekit-server) S 0 7 7"),
        ] {
            std::fs::create_dir_all(root.join(pid)).unwrap();
            std::fs::write(root.join(pid).join("cmdline"), cmdline).unwrap();
            std::fs::write(root.join(pid).join("stat"), stat).unwrap();
        }
        std::fs::create_dir_all(root.join("self")).unwrap();
        std::fs::create_dir_all(root.join("12")).unwrap(); // vanished meanwhile: no cmdline
        let mut entries = scan(&root);
        entries.sort_by_key(|e| e.pid);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].ppid, Some(0));
        assert_eq!(select(&entries, "livekit-server", 99, Scope::Any), Selection::One(7));
        std::fs::remove_dir_all(&root).unwrap();
        assert!(scan(&root).is_empty());
    }

    #[test]
    fn the_real_proc_shows_this_process() {
        let me = std::process::id() as i32;
        let entries = scan(Path::new("/proc"));
        let mine = entries.iter().find(|e| e.pid == me).expect("this process is in /proc");
        assert!(program_name(&mine.cmdline).is_some());
        assert!(alive(me));
        assert!(!alive(0));
    }

    #[test]
    fn never_signals_groups_or_the_pause_process() {
        for pid in [-1, 0, 1] {
            assert_eq!(sigterm(pid), Err(SignalError::InvalidPid(pid)));
        }
    }
}
