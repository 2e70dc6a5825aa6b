//! The stand-ins' control API (`livekit-standin`, `moshi-standin`, `whisperlive-standin`,
//! `transcriber-standin`): their state as the harness reads it, minimal HTTP calls on loopback, and the
//! final state an exited stand-in printed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdout;

/// Deadline of one call to a stand-in's control API.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The stand-in's `GET /standin/state`, as far as the harness reads it.
pub(super) struct StandinState {
    pub(super) rooms: BTreeSet<String>,
    pub(super) draining: bool,
    pub(super) warnings: Vec<Value>,
    pub(super) deleted: Vec<String>,
}

impl StandinState {
    pub(super) fn parse(v: &Value) -> Result<Self> {
        let rooms = v["rooms"]
            .as_array()
            .context("state without rooms")?
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        Ok(StandinState {
            rooms,
            draining: v["draining"].as_bool().unwrap_or(false),
            warnings: v["warnings"].as_array().cloned().unwrap_or_default(),
            deleted: v["deleted"]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
        })
    }
}

/// A minimal HTTP/1.0 call to a loopback address: the status and the JSON body (`Null` if none).
pub(super) async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    call_with(addr, method, path, body, "").await
}

/// [`call`] with extra header lines (each ending in CRLF).
pub(super) async fn call_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &str,
) -> Result<(u16, Value)> {
    ensure!(addr.ip().is_loopback(), "refusing to dial {addr}: loopback only");
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(4 << 20).read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
        let status: u16 = head.split_whitespace().nth(1).context("no status")?.parse()?;
        anyhow::Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{method} http://{addr}{path}: no answer within {CALL_TIMEOUT:?}"))?
}

/// The `{"final": <state>}` line an exited stand-in printed last, if any (bounded: the pipe is closed).
pub(super) async fn final_state(mut reader: tokio::io::BufReader<ChildStdout>) -> Option<StandinState> {
    let mut rest = String::new();
    let read = tokio::time::timeout(Duration::from_secs(2), reader.read_to_string(&mut rest)).await;
    if !matches!(read, Ok(Ok(_))) {
        return None;
    }
    rest.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| StandinState::parse(&v["final"]).ok())
}
