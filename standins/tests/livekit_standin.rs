//! `livekit-standin` drains as livekit-server does (`LivekitServer.Stop`): the first SIGTERM refuses new
//! rooms and keeps the existing ones, which still admit participants; it exits (code 0) once no participant
//! is left; a second signal exits at once, code 0 too. The agent's tests against it are the operator's
//! (`operator/tests/agent.rs`). Loopback only; every wait is bounded, every stand-in killed on drop.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use visio_operator::agent::http::{self, LoopbackUrl};

const WAIT: Duration = Duration::from_secs(15);

/// A running `livekit-standin`, killed on drop.
struct Standin {
    child: tokio::process::Child,
    http: SocketAddr,
}

impl Standin {
    async fn start(drain_poll: &str) -> Standin {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_livekit-standin"))
            .args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--drain-poll-interval", drain_poll])
            .env("LIVEKIT_API_KEY", "APIvisiotest")
            .env("LIVEKIT_API_SECRET", "visio-test-secret-0123456789abcdef")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("livekit-standin starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        tokio::time::timeout(WAIT, tokio::io::BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("livekit-standin prints its addresses in time")
            .expect("stdout readable");
        let http = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("http= in {line:?}"));
        Standin { child, http }
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let url = LoopbackUrl::parse(&format!("http://{}{path}", self.http)).unwrap();
        let body = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
        let resp = http::call(method, &url, &[], body, Duration::from_secs(5), 1 << 20)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        (resp.status, serde_json::from_slice(&resp.body).unwrap_or(Value::Null))
    }

    async fn open_room(&self, name: &str, participants: u32) -> StatusCode {
        self.call(Method::POST, "/standin/rooms", json!({"name": name, "participants": participants})).await.0
    }

    async fn state(&self) -> Value {
        self.call(Method::GET, "/standin/state", Value::Null).await.1
    }

    fn sigterm(&self) {
        let pid = i32::try_from(self.child.id().expect("running")).expect("a pid");
        // SAFETY: kill(2) with a pid this test spawned and still owns (not yet waited for).
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM delivered");
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("stand-in exits in time").unwrap()
    }
}

/// Polls `cond` every 25 ms until it holds, for at most [`WAIT`].
async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn standin_drains_like_livekit() {
    let mut standin = Standin::start("100ms").await;
    assert_eq!(standin.open_room("weekly", 2).await, StatusCode::CREATED);
    standin.sigterm();
    wait_until("draining", || async { standin.state().await["draining"] == true }).await;
    assert_eq!(standin.open_room("new", 1).await, StatusCode::CONFLICT, "no new rooms");
    assert_eq!(standin.open_room("weekly", 3).await, StatusCode::OK, "existing rooms still admit participants");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(standin.child.try_wait().unwrap().is_none(), "still running while participants are left");
    assert_eq!(standin.open_room("weekly", 0).await, StatusCode::OK);
    assert_eq!(standin.wait_exit().await.code(), Some(0), "exits once empty, with its empty room still open");

    // A second signal forces the exit.
    let mut busy = Standin::start("100ms").await;
    busy.open_room("weekly", 2).await;
    busy.sigterm();
    wait_until("draining", || async { busy.state().await["draining"] == true }).await;
    busy.sigterm();
    assert_eq!(busy.wait_exit().await.code(), Some(0), "LiveKit exits 0 on the second signal too");
}
