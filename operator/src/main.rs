use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use visio_operator::retention::limits;
use visio_operator::{controllers, leader, telemetry};

/// Kubernetes operator for a sovereign videoconferencing stack.
#[derive(Parser)]
#[command(name = "visio-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
    /// Run the controllers (uses the in-cluster service account or $KUBECONFIG).
    Run {
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, env = "VISIO_METRICS_ADDR", default_value = "0.0.0.0:8080")]
        metrics_addr: SocketAddr,
        /// Image of the in-pod agent sidecar (normally this operator's own image).
        #[arg(long, env = "VISIO_AGENT_IMAGE", default_value = concat!("ghcr.io/visio/visio-operator:", env!("CARGO_PKG_VERSION")))]
        agent_image: String,
        /// Log level (a tracing filter such as `info` or `visio_operator=debug`); RUST_LOG wins.
        #[arg(long, env = "VISIO_LOG_LEVEL", default_value = "info")]
        log_level: String,
        /// Log format.
        #[arg(long, env = "VISIO_LOG_FORMAT", value_enum, default_value = "json")]
        log_format: telemetry::LogFormat,
        /// Name of this operator instance in Events and in the leader Lease (the pod name in a cluster).
        #[arg(long, env = "POD_NAME", default_value = "visio-operator")]
        instance: String,
        /// Hold a Lease before reconciling, so that several replicas can run and only one writes.
        #[arg(long, env = "VISIO_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
        leader_election: bool,
        /// Namespace of the leader Lease (the operator's own namespace in a cluster).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        leader_election_namespace: String,
        /// Reconciles each controller runs at once (0: no limit).
        #[arg(long, env = "VISIO_MAX_CONCURRENT_RECONCILES", default_value_t = 16)]
        max_concurrent_reconciles: u16,
        /// Seconds a leader's Lease stays valid without renewal: the longest a standby waits after the leader dies.
        #[arg(long, env = "VISIO_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(5..=300))]
        lease_duration: u64,
        /// Retention sweeps running at once across all policies; a namespace runs at most half of them
        /// (at least one), and a policy waiting for a slot is looked at again shortly.
        #[arg(long, env = "VISIO_RETENTION_MAX_CONCURRENT_SWEEPS", default_value_t = limits::DEFAULT_MAX_CONCURRENT_SWEEPS as u64, value_parser = clap::value_parser!(u64).range(1..=64))]
        retention_max_concurrent_sweeps: u64,
        /// ListObjectsV2 pages one retention sweep may list; a sweep that reaches it fails (PageLimitReached)
        /// and the next run continues after its checkpoint.
        #[arg(long, env = "VISIO_RETENTION_MAX_SWEEP_PAGES", default_value_t = limits::DEFAULT_MAX_SWEEP_PAGES, value_parser = clap::value_parser!(u64).range(1..))]
        retention_max_sweep_pages: u64,
        /// Wall time one retention sweep may run (a duration: 90s, 30m, 1h); past it the sweep fails
        /// (TimeLimitReached) and the next run continues after its checkpoint.
        #[arg(long, env = "VISIO_RETENTION_MAX_SWEEP_DURATION", default_value = "1h", value_parser = parse_sweep_duration)]
        retention_max_sweep_duration: Duration,
        /// Bytes of one S3 ListObjectsV2 or DeleteObjects answer; a larger one is given up unread
        /// (ResponseTooLarge). Answers about one object are capped at 64 KiB.
        #[arg(long, env = "VISIO_RETENTION_MAX_RESPONSE_BYTES", default_value_t = limits::DEFAULT_MAX_RESPONSE_BYTES, value_parser = clap::value_parser!(u64).range(65536..=(256 << 20)))]
        retention_max_response_bytes: u64,
        /// The cluster-scoped VisioPlatform whose rules (images, node pools, PriorityClasses, sizes, buckets,
        /// legal holds) every tenant's resources must keep; while it does not exist nothing is deployed. Empty:
        /// no platform rules (a development cluster). The chart sets it.
        #[arg(long, env = "VISIO_PLATFORM", default_value = "")]
        platform: String,
    },
    /// Run the in-pod agent: report the backend's load on this pod, carry out the operator's drain marks.
    Agent(visio_operator::agent::AgentArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds { out_dir: None } => print!("{}", visio_operator::api::crds_yaml()?),
        Command::Crds { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            for (name, yaml) in visio_operator::api::crd_files()? {
                std::fs::write(dir.join(name), yaml)?;
            }
        }
        Command::Run {
            metrics_addr,
            agent_image,
            log_level,
            log_format,
            instance,
            leader_election,
            leader_election_namespace,
            lease_duration,
            max_concurrent_reconciles,
            retention_max_concurrent_sweeps,
            retention_max_sweep_pages,
            retention_max_sweep_duration,
            retention_max_response_bytes,
            platform,
        } => {
            telemetry::init_logging(&log_level, log_format);
            let election = leader_election.then(|| Election {
                namespace: leader_election_namespace,
                timing: leader::Timing { duration: lease_duration, grace: (lease_duration / 3).max(2) },
            });
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(run(
                metrics_addr,
                visio_operator::runtime::Config {
                    agent_image,
                    instance,
                    max_concurrent_reconciles,
                    retention: limits::Limits {
                        max_concurrent_sweeps: retention_max_concurrent_sweeps as usize,
                        max_sweep_pages: retention_max_sweep_pages,
                        max_sweep_duration: retention_max_sweep_duration,
                        max_response_bytes: retention_max_response_bytes,
                    },
                    platform: Some(platform).filter(|p| !p.is_empty()),
                },
                election,
            ))?;
        }
        Command::Agent(args) => visio_operator::agent::main(args)?,
    }
    Ok(())
}

/// `--retention-max-sweep-duration`: a duration of at least 10 s.
fn parse_sweep_duration(s: &str) -> Result<Duration, String> {
    let d = visio_operator::duration::parse(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(10) {
        return Err(format!("{s:?} is shorter than 10s"));
    }
    Ok(d)
}

/// Where and how to hold the leader Lease.
struct Election {
    namespace: String,
    timing: leader::Timing,
}

async fn run(
    metrics_addr: SocketAddr,
    config: visio_operator::runtime::Config,
    election: Option<Election>,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(telemetry::Metrics::new());
    let readiness = telemetry::Readiness::default();
    let mut server = tokio::spawn(telemetry::serve(metrics_addr, metrics.clone(), readiness.clone()));
    wait_for_crds(&client).await;
    let mut leadership = match election {
        Some(e) => {
            let mut l = leader::Leadership::join(client.clone(), &e.namespace, &config.instance, e.timing).await?;
            // A standby is ready: otherwise a rolling update of a two-replica Deployment waits forever
            // for a pod that cannot lead while the old leader holds the Lease.
            readiness.set(true);
            tracing::info!(lease = leader::LEASE_NAME, namespace = %e.namespace, identity = %config.instance, "waiting to lead");
            tokio::select! {
                _ = l.acquired() => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
            tracing::info!("leading: starting controllers");
            Some(l)
        }
        None => None,
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting controllers");
    let lost = async {
        match leadership.as_mut() {
            Some(l) => l.lost().await,
            None => futures::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        _ = controllers::run(client, config, metrics, readiness) => Ok(()),
        _ = lost => Err(anyhow::anyhow!("lost the leader Lease: exiting so that only one replica writes")),
        r = &mut server => match r {
            Ok(Err(e)) => Err(anyhow::anyhow!("metrics endpoint {metrics_addr}: {e}")),
            _ => Ok(()),
        },
    };
    if let Some(l) = leadership {
        l.release().await;
    }
    tracing::info!("stopped");
    outcome
}

/// Waits until the visio.io CRDs are served, saying so, instead of crashing in a loop.
async fn wait_for_crds(client: &kube::Client) {
    let mut logged = false;
    loop {
        match client.list_api_group_resources("visio.io/v1alpha1").await {
            Ok(list) if list.resources.len() >= 3 => return,
            Ok(_) | Err(_) => {
                if !logged {
                    tracing::warn!(
                        "the visio.io/v1alpha1 CRDs are not installed yet (kubectl apply -f crds/); waiting"
                    );
                    logged = true;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}
