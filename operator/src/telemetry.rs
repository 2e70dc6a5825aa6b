//! Metrics (Prometheus text format), logging set-up, and the health/metrics HTTP endpoint.
//!
//! Labels stay bounded: controller, error label, tenant namespace and resource name —
//! never room or participant names.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the operator exports. Names are checked against the shipped alerts and dashboards.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub child_writes: IntCounterVec,
    pub sfu_pods: IntGaugeVec,
    pub participants: IntGaugeVec,
    pub rooms: IntGaugeVec,
    pub capacity_headroom: IntGaugeVec,
    pub ready: GaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("visio_reconcile_total", "Reconciles run, by controller and result"),
            &["controller", "result"],
        )
        .expect("valid metric");
        let reconcile_errors = IntCounterVec::new(
            Opts::new("visio_reconcile_errors_total", "Reconcile errors, by controller and stable error label"),
            &["controller", "error"],
        )
        .expect("valid metric");
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("visio_reconcile_duration_seconds", "Time one reconcile took")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["controller"],
        )
        .expect("valid metric");
        let child_writes = IntCounterVec::new(
            Opts::new("visio_child_writes_total", "Writes the operator sent to the API, by kind and verb"),
            &["kind", "verb"],
        )
        .expect("valid metric");
        let sfu_pods = IntGaugeVec::new(
            Opts::new(
                "visio_sfu_pods",
                "SFU pods of a tenant's fleet, by state (desired, current, ready, updated, draining)",
            ),
            &["namespace", "cluster", "state"],
        )
        .expect("valid metric");
        let participants = IntGaugeVec::new(
            Opts::new("visio_participants", "Participants connected to a tenant's SFU fleet"),
            &["namespace", "cluster"],
        )
        .expect("valid metric");
        let rooms =
            IntGaugeVec::new(Opts::new("visio_rooms", "Rooms open on a tenant's SFU fleet"), &["namespace", "cluster"])
                .expect("valid metric");
        let capacity_headroom = IntGaugeVec::new(
            Opts::new(
                "visio_sfu_capacity_headroom",
                "Free participant places on serving SFU pods (capacity minus participants)",
            ),
            &["namespace", "cluster"],
        )
        .expect("valid metric");
        let ready = GaugeVec::new(
            Opts::new("visio_resource_ready", "1 when a custom resource's Ready condition is True, else 0"),
            &["kind", "namespace", "name"],
        )
        .expect("valid metric");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_errors.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(child_writes.clone()),
            Box::new(sfu_pods.clone()),
            Box::new(participants.clone()),
            Box::new(rooms.clone()),
            Box::new(capacity_headroom.clone()),
            Box::new(ready.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            child_writes,
            sfu_pods,
            participants,
            rooms,
            capacity_headroom,
            ready,
        }
    }

    /// Removes the per-tenant series of a deleted VisioCluster, so label sets stay bounded.
    pub fn forget_cluster(&self, namespace: &str, name: &str) {
        for state in ["desired", "current", "ready", "updated", "draining"] {
            let _ = self.sfu_pods.remove_label_values(&[namespace, name, state]);
        }
        let _ = self.participants.remove_label_values(&[namespace, name]);
        let _ = self.rooms.remove_label_values(&[namespace, name]);
        let _ = self.capacity_headroom.remove_label_values(&[namespace, name]);
        let _ = self.ready.remove_label_values(&["VisioCluster", namespace, name]);
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

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

/// Log output format.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Structured logs; the level comes from `--log-level` (or `RUST_LOG`, which wins).
pub fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
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

    #[test]
    fn forgetting_a_cluster_removes_its_series() {
        let m = Metrics::new();
        m.participants.with_label_values(&["ns", "vc"]).set(3);
        m.forget_cluster("ns", "vc");
        assert!(!m.render().contains("visio_participants{"));
    }
}
