//! A minimal HTTP/1.1 client that dials loopback only, with a deadline on every call and a cap on every body.
//!
//! The agent talks to its backend inside the pod (LiveKit's Prometheus port, its Twirp API). Refusing any
//! other address at parse time means a flag or a bad config can never turn the agent into a client of
//! something outside the pod.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

/// A parsed `http://` URL whose host is a loopback address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopbackUrl {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Path and query (`/` when the URL has none).
    pub path: String,
}

/// Why a URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("{0:?} is not a valid URL")]
    Invalid(String),
    #[error("{0:?}: only http:// is supported (the backend is in the same pod)")]
    Scheme(String),
    #[error("{0:?}: the host must be a loopback address (127.0.0.0/8, ::1 or localhost): the agent dials nothing outside its pod")]
    NotLoopback(String),
}

impl LoopbackUrl {
    /// Parses and checks a URL.
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let uri: Uri = s.parse().map_err(|_| UrlError::Invalid(s.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(UrlError::Scheme(s.to_string()));
        }
        let auth = uri.authority().ok_or_else(|| UrlError::Invalid(s.to_string()))?;
        if auth.as_str().contains('@') {
            return Err(UrlError::Invalid(s.to_string()));
        }
        let host = auth.host();
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_err(|_| UrlError::NotLoopback(s.to_string()))?
        };
        if !ip.is_loopback() {
            return Err(UrlError::NotLoopback(s.to_string()));
        }
        let port = auth.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        Ok(Self { addr: SocketAddr::new(ip, port), path: if path.is_empty() { "/".into() } else { path } })
    }

    /// The same host with another path.
    pub fn with_path(&self, path: &str) -> Self {
        Self { addr: self.addr, path: path.into() }
    }
}

impl std::fmt::Display for LoopbackUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.addr, self.path)
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: {message}")]
    Io { url: String, message: String },
    #[error("{url}: response body larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
}

/// One response.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Sends one request on a fresh connection and reads the whole response, within `timeout` for everything
/// (connect, request, body) and at most `max_body` bytes of body.
pub async fn call(
    method: Method,
    url: &LoopbackUrl,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
    max_body: usize,
) -> Result<Response, HttpError> {
    match tokio::time::timeout(timeout, call_inner(method, url, headers, body, max_body)).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout { url: url.to_string(), timeout }),
    }
}

async fn call_inner(
    method: Method,
    url: &LoopbackUrl,
    headers: &[(&str, &str)],
    body: Bytes,
    max_body: usize,
) -> Result<Response, HttpError> {
    let io_err = |e: &dyn std::fmt::Display| HttpError::Io { url: url.to_string(), message: e.to_string() };
    // Checked at parse time already; checked again so no caller can build a LoopbackUrl by hand that escapes.
    if !url.addr.ip().is_loopback() {
        return Err(io_err(&"refusing to dial a non-loopback address"));
    }
    let stream = tokio::net::TcpStream::connect(url.addr).await.map_err(|e| io_err(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| io_err(&e))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder().method(method).uri(url.path.as_str()).header("host", url.addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).map_err(|e| io_err(&e))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| io_err(&e))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), max_body).collect().await.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                HttpError::TooLarge { url: url.to_string(), limit: max_body }
            } else {
                io_err(&e)
            }
        })?;
        Ok(Response { status, body: body.to_bytes() })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_only() {
        let u = LoopbackUrl::parse("http://127.0.0.1:6789/metrics").unwrap();
        assert_eq!(u.addr, "127.0.0.1:6789".parse().unwrap());
        assert_eq!(u.path, "/metrics");
        assert_eq!(u.to_string(), "http://127.0.0.1:6789/metrics");
        assert_eq!(LoopbackUrl::parse("http://127.8.9.10:1/x?y=1").unwrap().path, "/x?y=1");
        assert_eq!(LoopbackUrl::parse("http://[::1]:7880").unwrap().addr, "[::1]:7880".parse().unwrap());
        assert_eq!(LoopbackUrl::parse("http://localhost:7880").unwrap().addr, "127.0.0.1:7880".parse().unwrap());
        assert_eq!(LoopbackUrl::parse("http://127.0.0.1").unwrap().addr.port(), 80);
        assert_eq!(LoopbackUrl::parse("http://127.0.0.1:7880").unwrap().path, "/");
        for bad in [
            "http://10.0.0.1:6789/metrics",
            "http://0.0.0.0:6789/metrics",
            "http://192.168.1.1/",
            "http://[::]:1/",
            "http://example.org/metrics",
            "http://localhost.example.org/",
            "http://127.0.0.1.nip.io/",
        ] {
            assert!(matches!(LoopbackUrl::parse(bad), Err(UrlError::NotLoopback(_))), "{bad}");
        }
        assert!(matches!(LoopbackUrl::parse("https://127.0.0.1/"), Err(UrlError::Scheme(_))));
        assert!(matches!(LoopbackUrl::parse("127.0.0.1:6789"), Err(UrlError::Scheme(_) | UrlError::Invalid(_))));
        assert!(matches!(LoopbackUrl::parse("http://user@127.0.0.1/"), Err(UrlError::Invalid(_))));
        assert!(LoopbackUrl::parse("").is_err());
        assert!(LoopbackUrl::parse("not a url").is_err());
    }

    #[tokio::test]
    async fn refuses_a_hand_built_remote_address() {
        let url = LoopbackUrl { addr: "192.0.2.1:80".parse().unwrap(), path: "/".into() };
        let err = call(Method::GET, &url, &[], Bytes::new(), Duration::from_secs(1), 10).await.unwrap_err();
        assert!(err.to_string().contains("non-loopback"), "{err}");
    }

    #[tokio::test]
    async fn connection_refused_is_an_error_not_a_hang() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = LoopbackUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let err = call(Method::GET, &url, &[], Bytes::new(), Duration::from_secs(2), 10).await.unwrap_err();
        assert!(matches!(err, HttpError::Io { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = LoopbackUrl::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let hold = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let err = call(Method::GET, &url, &[], Bytes::new(), Duration::from_millis(200), 10).await.unwrap_err();
        assert!(matches!(err, HttpError::Timeout { .. }), "{err}");
        hold.abort();
    }
}
