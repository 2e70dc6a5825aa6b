//! `visio-operator agent`: the sidecar in every SFU pod that reports the pod's load and carries out its
//! drain.
//!
//! The operator never dials a pod. The agent reads its backend on loopback (LiveKit's Prometheus endpoint
//! and RoomService), writes the load onto its own pod (`visio.io/load`, see [`crate::pod_protocol`]) when
//! it changes meaningfully and never more often than a floor, and watches its pod for the operator's marks:
//! `visio.io/drain-since` (fail readiness, SIGTERM the SFU once so it drains), `visio.io/warn-deadline`
//! (tell every room when its session ends), `visio.io/end-sessions` (delete the rooms left).
//!
//! Pieces: [`prometheus`] (parser), [`report`] (when to write), [`process`] (finding and signalling the
//! SFU), [`jwt`] (LiveKit API tokens), [`http`] (the loopback-only client), [`livekit`] (the backend),
//! [`pod`] (the pod seam and its Kubernetes implementation), [`health`] (`/healthz`, `/readyz`),
//! [`control`] (the loop). `docs/agent.md` tells the whole protocol.

pub mod backend;
pub mod captions;
pub mod control;
pub mod health;
pub mod http;
pub mod jwt;
pub mod livekit;
pub mod placement;
pub mod pod;
pub mod process;
pub mod prometheus;
pub mod report;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hyper::body::Bytes;
use hyper::{Method, StatusCode};

use crate::telemetry::{self, LogFormat};
use http::LoopbackUrl;
use jwt::ApiCredentials;

/// Environment variable holding the LiveKit API key (from the `<vc>-credentials` Secret).
pub const API_KEY_ENV: &str = "LIVEKIT_API_KEY";
/// Environment variable holding the LiveKit API secret. Read from the environment only, never a flag (a
/// flag would show in `/proc/<pid>/cmdline` to everything in the pod).
pub const API_SECRET_ENV: &str = "LIVEKIT_API_SECRET";

/// The backend next to the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// LiveKit server (the SFU).
    Livekit,
    /// Kyutai moshi-server (captions): open streams from its metrics, no drain of its own.
    Moshi,
    /// WhisperLive (captions): active and rejected clients from its metrics, no drain of its own.
    Whisperlive,
    /// A transcriber worker (LiveKit Agents): active jobs from its metrics; it drains by itself on SIGTERM.
    /// The agent also sets the pod's deletion cost to the jobs, so a scale-down removes the emptiest workers.
    Transcriber,
}

impl BackendKind {
    /// Where the backend serves its metrics in the pod.
    pub fn default_metrics_url(self) -> &'static str {
        match self {
            BackendKind::Livekit => livekit::DEFAULT_METRICS_URL,
            BackendKind::Moshi => captions::MOSHI_METRICS_URL,
            BackendKind::Whisperlive => captions::WHISPER_METRICS_URL,
            BackendKind::Transcriber => captions::TRANSCRIBER_METRICS_URL,
        }
    }

    /// Program name of the backend process.
    pub fn default_process(self) -> &'static str {
        match self {
            BackendKind::Livekit => livekit::DEFAULT_PROCESS,
            BackendKind::Moshi => "moshi-server",
            BackendKind::Whisperlive | BackendKind::Transcriber => "python3",
        }
    }
}

/// Which endpoint `--probe` asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Probe {
    Healthz,
    Readyz,
}

/// Flags of `visio-operator agent`.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// The backend in the pod.
    #[arg(long, value_enum, default_value = "livekit")]
    pub backend: BackendKind,
    /// The backend's Prometheus endpoint; loopback only (default: the backend's, http://127.0.0.1:6789/metrics
    /// for LiveKit).
    #[arg(long, value_parser = LoopbackUrl::parse)]
    pub metrics_url: Option<LoopbackUrl>,
    /// The backend's API (LiveKit's HTTP port, for RoomService calls); loopback only.
    #[arg(long, value_parser = LoopbackUrl::parse, default_value = livekit::DEFAULT_API_URL)]
    pub api_url: LoopbackUrl,
    /// LiveKit's config file (the one the SFU reads): its `redis` section tells the agent where LiveKit
    /// places rooms, so that it counts, warns and ends only the rooms hosted on its own node. Without it the
    /// agent takes every room LiveKit lists as its own, which is right only for a LiveKit without Redis.
    #[arg(long)]
    pub livekit_config: Option<std::path::PathBuf>,
    /// This pod's name.
    #[arg(long, env = "POD_NAME", required_unless_present = "probe")]
    pub pod_name: Option<String>,
    /// This pod's namespace.
    #[arg(long, env = "POD_NAMESPACE", required_unless_present = "probe")]
    pub pod_namespace: Option<String>,
    /// How often the backend is read (100ms to 10m).
    #[arg(long, default_value = "2s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Least time between two writes of the load annotation (up to 1h); a change to zero is written at once.
    #[arg(long, default_value = "5s", value_parser = parse_floor)]
    pub min_report_interval: Duration,
    /// Address of /healthz and /readyz (readyz fails once the pod drains).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub health_addr: SocketAddr,
    /// Program name of the backend process to SIGTERM on drain (default: the backend's, livekit-server).
    #[arg(long)]
    pub backend_process: Option<String>,
    /// Signal only the process with this pid (its program name must still be --backend-process), instead of
    /// the one process of that name in the pod: for test harnesses that run many backends on one machine.
    #[arg(long, value_parser = clap::value_parser!(i32).range(2..))]
    pub backend_pid: Option<i32>,
    /// Caption backends: the slots one backend process holds (moshi-server's `batch_size`, WhisperLive's
    /// `--max_clients`); transcribers: the jobs one worker takes. Reported as the pod's capacity.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub slots: Option<u32>,
    /// Instead of running, ask a running agent's endpoint at --health-addr once and exit 0 if it answers
    /// 200 (for an exec probe).
    #[arg(long, value_enum)]
    pub probe: Option<Probe>,
    /// Log level (a tracing filter); RUST_LOG wins.
    #[arg(long, env = "VISIO_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "VISIO_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(600) {
        return Err(format!("{s} is outside 100ms..10m"));
    }
    Ok(d)
}

fn parse_floor(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(s).map_err(|e| e.to_string())?;
    if d > Duration::from_secs(3600) {
        return Err(format!("{s} is more than 1h"));
    }
    Ok(d)
}

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(String),
    #[error("health endpoint {addr}: {message}")]
    Health { addr: SocketAddr, message: String },
    #[error("Kubernetes client: {0}")]
    Kube(String),
    #[error("probe {0}: {1}")]
    Probe(String, String),
}

impl AgentError {
    /// Short stable label.
    pub fn label(&self) -> &'static str {
        match self {
            AgentError::Config(_) => "config",
            AgentError::Health { .. } => "health",
            AgentError::Kube(_) => "kube",
            AgentError::Probe(..) => "probe",
        }
    }
}

/// A pod name usable in a field selector.
fn check_name(what: &str, name: &str) -> Result<(), AgentError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(AgentError::Config(format!("{what} {name:?} is not a Kubernetes object name")))
    }
}

/// The API credentials from the environment, if both are set and non-empty.
pub fn credentials_from_env() -> Option<ApiCredentials> {
    let key = std::env::var(API_KEY_ENV).ok().filter(|k| !k.is_empty())?;
    let secret = std::env::var(API_SECRET_ENV).ok().filter(|s| !s.is_empty())?;
    Some(ApiCredentials::new(key, secret))
}

/// Entry point of `visio-operator agent`: a single-threaded runtime (the agent is tiny) until SIGTERM.
pub fn main(args: AgentArgs) -> Result<(), AgentError> {
    // Before the ServiceAccount token is read: from here on the backend's container cannot read it.
    let private = process::keep_private();
    telemetry::init_logging(&args.log_level, args.log_format);
    if let Err(e) = private {
        tracing::warn!(error = %e, "could not make the agent undumpable: the backend's container could read its token");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::Config(format!("runtime: {e}")))?;
    rt.block_on(async move {
        match args.probe {
            Some(probe) => run_probe(args.health_addr, probe).await,
            None => run(args, shutdown_signal()).await,
        }
    })
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("stop signal received");
}

/// Runs the agent against the Kubernetes API until `shutdown` resolves.
pub async fn run(args: AgentArgs, shutdown: impl std::future::Future<Output = ()>) -> Result<(), AgentError> {
    let pod_name = args.pod_name.clone().unwrap_or_default();
    let namespace = args.pod_namespace.clone().unwrap_or_default();
    check_name("--pod-name", &pod_name)?;
    check_name("--pod-namespace", &namespace)?;
    let metrics_url = match args.metrics_url.clone() {
        Some(u) => u,
        None => {
            LoopbackUrl::parse(args.backend.default_metrics_url()).map_err(|e| AgentError::Config(e.to_string()))?
        }
    };
    let credentials = credentials_from_env();
    if credentials.is_none() && args.backend == BackendKind::Livekit {
        tracing::warn!(
            "{API_KEY_ENV}/{API_SECRET_ENV} not set: load and drain work, warnings and forced ends will fail"
        );
    }
    let mut config = livekit::LiveKitConfig::new(metrics_url, args.api_url.clone(), credentials);
    config.process_name = args.backend_process.clone().unwrap_or_else(|| args.backend.default_process().into());
    if let Some(pid) = args.backend_pid {
        config.scope = process::Scope::Pid(pid);
    }
    if let Some(path) = &args.livekit_config {
        config.placement = placement::Placement::from_config_file(path).map_err(AgentError::Config)?;
    }

    let health = health::Health::default();
    let listener = health::bind(args.health_addr)
        .await
        .map_err(|e| AgentError::Health { addr: args.health_addr, message: e.to_string() })?;
    let server = tokio::spawn(health::serve(listener, health.clone()));

    let client = kube::Client::try_default().await.map_err(|e| AgentError::Kube(e.to_string()))?;
    let own_pod =
        pod::KubePod::new(client, &namespace, &pod_name).with_deletion_cost(args.backend == BackendKind::Transcriber);
    let settings = control::Settings { interval: args.interval, min_report_interval: args.min_report_interval };
    tracing::info!(
        pod = %pod_name, namespace = %namespace, backend = ?args.backend, health = %args.health_addr,
        interval = ?settings.interval, floor = ?settings.min_report_interval, "agent starting"
    );
    match args.backend {
        BackendKind::Livekit => {
            let mut backend = livekit::LiveKit::new(config).map_err(AgentError::Config)?;
            control::run(&own_pod, &mut backend, settings, health, shutdown).await;
        }
        BackendKind::Moshi | BackendKind::Whisperlive | BackendKind::Transcriber => {
            let engine = match args.backend {
                BackendKind::Moshi => captions::Engine::Moshi,
                BackendKind::Whisperlive => captions::Engine::WhisperLive,
                _ => captions::Engine::Transcriber,
            };
            let slots = args.slots.ok_or_else(|| {
                AgentError::Config("--slots is required for caption backends and transcribers".into())
            })?;
            let mut backend = captions::Caption::new(engine, config.metrics_url.clone(), slots);
            control::run(&own_pod, &mut backend, settings, health, shutdown).await;
        }
    }
    server.abort();
    Ok(())
}

/// Asks a running agent's health endpoint once.
pub async fn run_probe(addr: SocketAddr, probe: Probe) -> Result<(), AgentError> {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let path = match probe {
        Probe::Healthz => "/healthz",
        Probe::Readyz => "/readyz",
    };
    let url = LoopbackUrl::parse(&format!("http://{}{path}", SocketAddr::new(ip, addr.port())))
        .map_err(|e| AgentError::Probe(path.into(), e.to_string()))?;
    let resp = http::call(Method::GET, &url, &[], Bytes::new(), Duration::from_secs(2), 4096)
        .await
        .map_err(|e| AgentError::Probe(path.into(), e.to_string()))?;
    if resp.status == StatusCode::OK {
        Ok(())
    } else {
        Err(AgentError::Probe(path.into(), format!("{} {}", resp.status, String::from_utf8_lossy(&resp.body).trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AgentArgs,
    }

    fn parse(args: &[&str]) -> Result<AgentArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn the_builders_arguments_parse() {
        let a = parse(&[
            "--backend",
            "livekit",
            "--metrics-url",
            "http://127.0.0.1:6789/metrics",
            "--pod-name",
            "visio-sfu-0",
            "--pod-namespace",
            "mininterieur",
        ])
        .unwrap();
        assert_eq!(a.backend, BackendKind::Livekit);
        assert_eq!(a.metrics_url.unwrap().addr.port(), 6789);
        assert_eq!(a.api_url.addr, "127.0.0.1:7880".parse().unwrap());
        assert_eq!(a.interval, Duration::from_secs(2));
        assert_eq!(a.min_report_interval, Duration::from_secs(5));
        assert_eq!(a.health_addr, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(a.backend_process, None);
        assert_eq!(a.backend_pid, None);
        assert_eq!(a.backend.default_process(), "livekit-server");
        assert_eq!(a.backend.default_metrics_url(), "http://127.0.0.1:6789/metrics");
    }

    #[test]
    fn refuses_remote_urls_and_silly_intervals() {
        let base = ["--pod-name", "p", "--pod-namespace", "n"];
        for extra in [
            &["--metrics-url", "http://10.1.2.3:6789/metrics"][..],
            &["--api-url", "http://livekit.example.org:7880"],
            &["--interval", "10ms"],
            &["--interval", "1h"],
            &["--min-report-interval", "2h"],
            &["--backend", "vosk"],
            &["--slots", "0"],
            &["--backend-pid", "1"],
            &["--backend-pid", "-5"],
        ] {
            let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
            assert!(parse(&args).is_err(), "{extra:?} must be refused");
        }
    }

    #[test]
    fn a_harness_names_the_backend_process() {
        let a = parse(&[
            "--pod-name",
            "p",
            "--pod-namespace",
            "n",
            "--backend-process",
            "livekit-standin",
            "--backend-pid",
            "4242",
        ])
        .unwrap();
        assert_eq!(a.backend_pid, Some(4242));
        assert_eq!(a.backend_process.as_deref(), Some("livekit-standin"));
    }

    #[test]
    fn caption_backends_parse() {
        let a = parse(&["--pod-name", "p", "--pod-namespace", "n", "--backend", "moshi", "--slots", "64"]).unwrap();
        assert_eq!((a.backend, a.slots), (BackendKind::Moshi, Some(64)));
        assert_eq!(a.backend.default_metrics_url(), "http://127.0.0.1:8080/metrics");
        let w =
            parse(&["--pod-name", "p", "--pod-namespace", "n", "--backend", "whisperlive", "--slots", "4"]).unwrap();
        assert_eq!(w.backend, BackendKind::Whisperlive);
        let t =
            parse(&["--pod-name", "p", "--pod-namespace", "n", "--backend", "transcriber", "--slots", "20"]).unwrap();
        assert_eq!(t.backend.default_metrics_url(), "http://127.0.0.1:8082/metrics");
    }

    #[test]
    fn probe_needs_no_pod() {
        let a = parse(&["--probe", "readyz", "--health-addr", "0.0.0.0:8081"]).unwrap();
        assert_eq!(a.probe, Some(Probe::Readyz));
    }

    #[test]
    fn pod_names_are_checked() {
        assert!(check_name("n", "visio-sfu-0").is_ok());
        for bad in ["", "a,b", "metadata.name=x", "A", "a b"] {
            assert!(check_name("n", bad).is_err(), "{bad:?}");
        }
    }
}
