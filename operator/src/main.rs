use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use visio_operator::{controllers, telemetry};

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
        /// Name of this operator instance in Events (the pod name in a cluster).
        #[arg(long, env = "POD_NAME", default_value = "visio-operator")]
        instance: String,
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
        Command::Run { metrics_addr, agent_image, log_level, log_format, instance } => {
            telemetry::init_logging(&log_level, log_format);
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(run(metrics_addr, controllers::Config { agent_image, instance }))?;
        }
        Command::Agent(args) => visio_operator::agent::main(args)?,
    }
    Ok(())
}

async fn run(metrics_addr: SocketAddr, config: controllers::Config) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(telemetry::Metrics::new());
    let readiness = telemetry::Readiness::default();
    let server = tokio::spawn(telemetry::serve(metrics_addr, metrics.clone(), readiness.clone()));
    wait_for_crds(&client).await;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting controllers");
    tokio::select! {
        _ = controllers::run(client, config, metrics, readiness) => {}
        r = server => {
            if let Ok(Err(e)) = r {
                anyhow::bail!("metrics endpoint {metrics_addr}: {e}");
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
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
