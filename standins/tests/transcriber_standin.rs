//! `transcriber-standin` holds to livekit-agents' behaviour where the operator depends on it (the file each
//! behaviour follows is listed in the stand-in's header): no jobs sample before the first job, a CPU-based
//! worker load, a drain that gives up after its timeout, and a second signal that exits 1. Loopback only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use visio_operator::agent::captions::{parse_metrics, Engine};

struct Worker {
    child: Child,
    http: SocketAddr,
    metrics: SocketAddr,
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Worker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_transcriber-standin"))
        .args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--jobs", "4"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the stand-in starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("its first line");
    let field = |k: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
    };
    Worker { http: field("http="), metrics: field("metrics="), child, _stdout: out }
}

fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("send");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn signal(w: &Worker) {
    let pid = i32::try_from(w.child.id()).expect("a pid");
    // SAFETY: kill(2) with a pid this test spawned and still owns (not yet waited for).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

fn exit_within(w: &mut Worker, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = w.child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn no_job_sample_before_the_first_job_and_a_cpu_load() {
    let w = start(&["--cpu-load", "0.93"]);
    let page = request(w.metrics, "GET", "/metrics", "").1;
    assert!(!page.contains("lk_agents_active_job_count{"), "no sample before the first job: {page}");
    assert!(page.contains("lk_agents_worker_load{nodename=\"transcriber\"} 0.93"), "{page}");
    assert_eq!(parse_metrics(Engine::Transcriber, &page).expect("a worker's page").open, 0, "read as idle");
    assert_eq!(request(w.http, "POST", "/standin/rooms", r#"{"name":"r1"}"#).0, 201);
    assert_eq!(request(w.http, "DELETE", "/standin/rooms/r1", "").0, 200);
    let page = request(w.metrics, "GET", "/metrics", "").1;
    assert!(page.contains("lk_agents_active_job_count{nodename=\"transcriber\"} 0.0"), "back to 0: {page}");
    let old = start(&["--jobs-metric", "lk_agents_running_jobs"]);
    assert_eq!(request(old.http, "POST", "/standin/rooms", r#"{"name":"r1"}"#).0, 201);
    let page = request(old.metrics, "GET", "/metrics", "").1;
    assert_eq!(parse_metrics(Engine::Transcriber, &page).expect("a worker's page").open, 1, "{page}");
}

#[test]
fn the_drain_gives_up_at_its_timeout_and_a_second_signal_exits_1() {
    let mut w = start(&["--drain-timeout", "1"]);
    assert_eq!(request(w.http, "POST", "/standin/rooms", r#"{"name":"r1"}"#).0, 201);
    signal(&w);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(request(w.http, "POST", "/standin/rooms", r#"{"name":"r2"}"#).0, 409, "no new job while draining");
    assert_eq!(exit_within(&mut w, Duration::from_secs(5)), Some(0), "gives up after drain_timeout and closes");

    let mut w = start(&[]);
    assert_eq!(request(w.http, "POST", "/standin/rooms", r#"{"name":"r1"}"#).0, 201);
    signal(&w);
    assert_eq!(exit_within(&mut w, Duration::from_millis(500)), None, "drains while a job runs");
    signal(&w);
    assert_eq!(exit_within(&mut w, Duration::from_secs(5)), Some(1), "the second signal exits 1");
}
