//! The agent's `/healthz` and `/readyz`.
//!
//! `/readyz` fails once the pod drains: with a readiness probe on it, the pod leaves its Services'
//! endpoints, so no new session is routed to a node that refuses new rooms.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};

/// Whether the pod drains, shared by the loop and the health endpoint.
#[derive(Clone, Debug, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    pub fn set_draining(&self) {
        self.0.store(true, Ordering::Relaxed)
    }
    pub fn draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Answers one path.
pub fn route(path: &str, health: &Health) -> (StatusCode, &'static str) {
    match path {
        "/healthz" => (StatusCode::OK, "ok\n"),
        "/readyz" if health.draining() => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/readyz" => (StatusCode::OK, "ready\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `/healthz` and `/readyz` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, health: Health) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let health = health.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (status, body) = route(req.uri().path(), &health);
                async move {
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                            .unwrap_or_default(),
                    )
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            // A probe that never finishes its request does not hold a task forever.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_fails_once_draining() {
        let h = Health::default();
        assert_eq!(route("/healthz", &h).0, StatusCode::OK);
        assert_eq!(route("/readyz", &h).0, StatusCode::OK);
        h.set_draining();
        assert_eq!(route("/readyz", &h).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(route("/healthz", &h).0, StatusCode::OK, "a draining agent is alive");
        assert_eq!(route("/metrics", &h).0, StatusCode::NOT_FOUND);
    }
}
