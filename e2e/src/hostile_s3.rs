//! An attacker: the S3 endpoint a hostile tenant points its RetentionPolicies at, on loopback, to
//! make the operator's sweeps page for ever, loop, or read more than they can hold. It stands in
//! for no real part; the retention tests show the operator stops each attack and keeps serving the
//! other tenants.
//!
//! The bucket (path-style requests, `/<bucket>?...`) chooses the [`Attack`]. Every ListObjectsV2
//! answer is truncated; its keys (`zz/<n>`) match no rule of the tests, so a sweep asks nothing
//! else about them. GetObjectLockConfiguration says there is none; anything else is `NoSuchKey`.
//! Credentials are not checked. Every answer is bounded (the endless body stops at [`HUGE_BYTES`]).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};

/// Where an endless body stops if the client never hangs up (it should, at its cap).
pub const HUGE_BYTES: u64 = 1 << 30;
/// Empty `<Contents/>` elements of a dense answer: 660 kB, far under the operator's byte cap,
/// far over its tag cap.
pub const DENSE_ELEMENTS: usize = 60_000;
/// How long a slow page takes.
pub const SLOW_PAGE: Duration = Duration::from_millis(700);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Pages for ever: each page one key after the one asked to start after, truncated, a fresh token.
    Forever,
    /// The same truncated page and token, whatever is asked.
    Loop,
    /// A body without length that does not end.
    Huge,
    /// A small body of tens of thousands of elements.
    Dense,
    /// [`Attack::Forever`], each page after [`SLOW_PAGE`] (any bucket whose name starts with `slow`).
    Slow,
}

impl Attack {
    pub const ALL: [Attack; 5] = [Attack::Forever, Attack::Loop, Attack::Huge, Attack::Dense, Attack::Slow];

    /// The bucket that asks for this attack.
    pub fn bucket(self) -> &'static str {
        match self {
            Attack::Forever => "forever",
            Attack::Loop => "loop",
            Attack::Huge => "huge",
            Attack::Dense => "dense",
            Attack::Slow => "slow",
        }
    }

    fn of(bucket: &str) -> Option<Attack> {
        if bucket.starts_with("slow") {
            return Some(Attack::Slow);
        }
        Attack::ALL.into_iter().find(|a| a.bucket() == bucket)
    }
}

/// What the endpoint did, per attack.
#[derive(Default)]
struct Counts {
    lists: [AtomicU64; 5],
    sent: [AtomicU64; 5],
    /// ListObjectsV2 requests being answered now, and the most at once: a sweep lists one page
    /// after the other, so this counts the sweeps at work here.
    in_flight: AtomicU64,
    most_in_flight: AtomicU64,
}

/// The endpoint, serving until dropped.
pub struct HostileS3 {
    pub endpoint: String,
    counts: Arc<Counts>,
    server: tokio::task::JoinHandle<()>,
}

impl HostileS3 {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> Result<HostileS3> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(req, c.clone()));
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Ok(HostileS3 { endpoint, counts, server })
    }

    /// ListObjectsV2 requests answered for `attack`.
    pub fn lists(&self, attack: Attack) -> u64 {
        self.counts.lists[attack as usize].load(Ordering::Relaxed)
    }

    /// The most ListObjectsV2 requests answered at once, over every attack: the most sweeps that
    /// listed this endpoint at the same time.
    pub fn most_at_once(&self) -> u64 {
        self.counts.most_in_flight.load(Ordering::Relaxed)
    }

    /// Body bytes handed to the connection for `attack` (what the client read, plus what the
    /// sockets' buffers took before it hung up).
    pub fn sent(&self, attack: Attack) -> u64 {
        self.counts.sent[attack as usize].load(Ordering::Relaxed)
    }
}

impl Drop for HostileS3 {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(req: Request<Incoming>, counts: Arc<Counts>) -> Result<Response<Body>, Infallible> {
    let bucket = req.uri().path().trim_start_matches('/').split('/').next().unwrap_or("").to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let Some(attack) = Attack::of(&bucket) else { return Ok(error(404, "NoSuchBucket")) };
    if param(&query, "object-lock").is_some() {
        return Ok(error(404, "ObjectLockConfigurationNotFoundError"));
    }
    if param(&query, "list-type").is_none() {
        return Ok(error(404, "NoSuchKey"));
    }
    let i = attack as usize;
    counts.lists[i].fetch_add(1, Ordering::Relaxed);
    let _in_flight = InFlight::enter(&counts);
    let body = list(attack, &bucket, &query, &counts).await;
    Ok(Response::builder().header("content-type", "application/xml").body(body).expect("a valid response"))
}

/// One ListObjectsV2 request being answered, until dropped: when the answer is ready, or when
/// the client hangs up first (hyper then drops the answer's future, a slow page's pause with it).
struct InFlight(Arc<Counts>);

impl InFlight {
    fn enter(counts: &Arc<Counts>) -> InFlight {
        let now = counts.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        counts.most_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(counts.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The answer to a ListObjectsV2 request.
async fn list(attack: Attack, bucket: &str, query: &str, counts: &Arc<Counts>) -> Body {
    let i = attack as usize;
    let after = param(query, "start-after").map(percent_decode);
    match attack {
        Attack::Forever | Attack::Slow => {
            if attack == Attack::Slow {
                tokio::time::sleep(SLOW_PAGE).await;
            }
            let n =
                after.as_deref().and_then(|k| k.strip_prefix("zz/")).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            full(counts, i, page(bucket, n + 1, &format!("token-{}", n + 1)))
        }
        Attack::Loop => full(counts, i, page(bucket, 1, "the-same-token")),
        Attack::Dense => {
            let mut xml = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>"#);
            xml.push_str(&"<Contents/>".repeat(DENSE_ELEMENTS));
            xml.push_str("<IsTruncated>true</IsTruncated></ListBucketResult>");
            full(counts, i, xml)
        }
        Attack::Huge => {
            let chunk = Bytes::from(vec![b' '; 64 << 10]);
            let c = counts.clone();
            let head = Bytes::from_static(br#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>"#);
            let chunks = (HUGE_BYTES / chunk.len() as u64) as usize;
            let stream = futures::stream::once(futures::future::ready(head))
                .chain(futures::stream::repeat(chunk).take(chunks))
                .map(move |b| {
                    c.sent[i].fetch_add(b.len() as u64, Ordering::Relaxed);
                    Ok::<_, Infallible>(Frame::data(b))
                });
            // No Content-Length: chunked, read until the client gives up.
            BodyExt::boxed(StreamBody::new(stream))
        }
    }
}

/// A truncated ListObjectsV2 page of one key, `zz/<n>`.
fn page(bucket: &str, n: u64, token: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>{bucket}</Name><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated><Contents><Key>zz/{n:012}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>&quot;0&quot;</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents><NextContinuationToken>{token}</NextContinuationToken></ListBucketResult>"#
    )
}

fn full(counts: &Counts, i: usize, xml: String) -> Body {
    counts.sent[i].fetch_add(xml.len() as u64, Ordering::Relaxed);
    Full::new(Bytes::from(xml)).boxed()
}

fn error(status: u16, code: &str) -> Response<Body> {
    let xml = format!(r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code></Error>"#);
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from(xml)).boxed())
        .expect("a valid response")
}

/// The value of `name` in a query string (`Some("")` for a bare `name`).
fn param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|p| match p.split_once('=') {
        Some((k, v)) if k == name => Some(v),
        None if p == name => Some(""),
        _ => None,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex =
            b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_read() {
        let q = "list-type=2&max-keys=1000&start-after=zz%2F000000000041&x-id=ListObjectsV2";
        assert_eq!(param(q, "start-after").map(percent_decode).as_deref(), Some("zz/000000000041"));
        assert_eq!(param("object-lock", "object-lock"), Some(""));
        assert_eq!(param(q, "object-lock"), None);
    }
}
