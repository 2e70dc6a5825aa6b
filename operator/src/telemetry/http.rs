//! The health and metrics HTTP endpoint: `/metrics`, `/healthz` (the process answers) and `/readyz`
//! (the caches are synced).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};

use super::Metrics;

/// Readiness of the process: true once the caches are synced and the controllers run.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed)
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves `/metrics`, `/healthz` (the process answers) and `/readyz` (caches synced) until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, readiness: Readiness) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    loop {
        let (stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (status, body) = route(req.uri().path(), &metrics, &readiness);
                async move {
                    Ok::<_, std::convert::Infallible>(
                        Response::builder().status(status).body(Full::new(Bytes::from(body))).unwrap_or_default(),
                    )
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

fn route(path: &str, metrics: &Metrics, readiness: &Readiness) -> (StatusCode, String) {
    match path {
        "/metrics" => (StatusCode::OK, metrics.render()),
        "/healthz" => (StatusCode::OK, "ok\n".into()),
        "/readyz" if readiness.get() => (StatusCode::OK, "ready\n".into()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n".into()),
        _ => (StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_health_and_metrics() {
        let m = Metrics::new();
        m.reconciles.with_label_values(&["visiocluster", "ok"]).inc();
        let r = Readiness::default();
        assert_eq!(route("/healthz", &m, &r).0, StatusCode::OK);
        assert_eq!(route("/readyz", &m, &r).0, StatusCode::SERVICE_UNAVAILABLE);
        r.set(true);
        assert_eq!(route("/readyz", &m, &r).0, StatusCode::OK);
        let (s, body) = route("/metrics", &m, &r);
        assert_eq!(s, StatusCode::OK);
        assert!(body.contains("visio_reconcile_total{controller=\"visiocluster\",result=\"ok\"} 1"));
        assert_eq!(route("/nope", &m, &r).0, StatusCode::NOT_FOUND);
    }
}
