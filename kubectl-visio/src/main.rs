//! `kubectl visio`: what an on-call engineer or a ministry's admin asks of a tenant, read from the
//! apiserver only (the operator's status, the pods' marks, Events). Installed as `kubectl-visio` on the
//! PATH, kubectl runs it as `kubectl visio ...` (docs/kubectl-visio.md).

mod drain;
mod render;
mod report;
mod view;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, Config};
use visio_operator::api::{CaptionPool, RetentionPolicy, VisioCluster};
use visio_operator::builders::labels::{Component, COMPONENT_LABEL};

#[derive(Parser)]
#[command(name = "kubectl visio", version, about = "Status, drains and support bundles of visio-operator tenants")]
struct Cli {
    /// Namespace (default: the kubeconfig context's namespace).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Every namespace (status only).
    #[arg(short = 'A', long, global = true)]
    all_namespaces: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// One screen per tenant: SFU pods, upgrade, captions, retention, firewall openings, recent warnings.
    Status {
        /// A VisioCluster name (default: every VisioCluster of the namespace).
        name: Option<String>,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Ask the operator to drain one SFU pod the way upgrades do (a replacement first, the meetings warned
    /// and ended no sooner than drainTimeout).
    Drain {
        /// The SFU pod.
        pod: String,
    },
    /// A support bundle (.tar.gz) of the namespace, every secret value redacted.
    Report {
        /// Where to write it (default: visio-report-<namespace>.tar.gz).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
    },
}

async fn status(client: &Client, ns: Option<&str>, name: Option<&str>) -> Result<Vec<view::TenantView>> {
    let vcs = match ns {
        Some(ns) => Api::<VisioCluster>::namespaced(client.clone(), ns),
        None => Api::<VisioCluster>::all(client.clone()),
    };
    let mut clusters = vcs.list(&ListParams::default()).await.context("cannot list VisioClusters")?.items;
    if let Some(name) = name {
        clusters.retain(|vc| vc.metadata.name.as_deref() == Some(name));
        if clusters.is_empty() {
            bail!("no VisioCluster {name} in namespace {}", ns.unwrap_or("(all)"));
        }
    }
    let mut views = Vec::new();
    for vc in &clusters {
        let vns = vc.metadata.namespace.clone().unwrap_or_default();
        let sfu = ListParams::default().labels(&format!("{COMPONENT_LABEL}={}", Component::Sfu.as_str()));
        let pods = Api::<Pod>::namespaced(client.clone(), &vns).list(&sfu).await?.items;
        // Captions and retention may be forbidden or absent: the screen goes on without them.
        let pools = Api::<CaptionPool>::namespaced(client.clone(), &vns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let policies = Api::<RetentionPolicy>::namespaced(client.clone(), &vns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let events = Api::<Event>::namespaced(client.clone(), &vns)
            .list(&ListParams::default().fields("type=Warning"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        views.push(view::tenant_view(vc, &pods, &pools, &policies, &events));
    }
    Ok(views)
}

async fn run(cli: Cli) -> Result<()> {
    let config = Config::infer().await.context("no usable kubeconfig (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let default_ns = config.default_namespace.clone();
    let client = Client::try_from(config)?;
    let ns = cli.namespace.clone().unwrap_or(default_ns);
    let mut stdout = anstream::stdout();
    match cli.command {
        Command::Status { name, output } => {
            let scope = (!cli.all_namespaces).then_some(ns.as_str());
            let views = status(&client, scope, name.as_deref()).await?;
            match output {
                Output::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&views)?)?,
                Output::Yaml => write!(stdout, "{}", serde_norway::to_string(&views)?)?,
                Output::Text if views.is_empty() => {
                    writeln!(stdout, "No VisioCluster in namespace {}.", scope.unwrap_or("(all)"))?
                }
                Output::Text => {
                    let screens: Vec<String> = views.iter().map(render::tenant).collect();
                    write!(stdout, "{}", screens.join("\n"))?;
                }
            }
        }
        Command::Drain { pod } => {
            let said = drain::run(&client, &ns, &pod).await?;
            writeln!(stdout, "{said}")?;
        }
        Command::Report { file } => {
            let path = file.unwrap_or_else(|| PathBuf::from(format!("visio-report-{ns}.tar.gz")));
            let n = report::run(&client, &ns, &path).await?;
            writeln!(
                stdout,
                "wrote {} ({n} files, every secret value redacted; see NOTES.txt inside)",
                path.display()
            )?;
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        let _ = writeln!(anstream::stderr(), "error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// The krew manifest names this binary and plugin (`kubectl-visio` is invoked as `kubectl visio`), and
    /// holds exactly the placeholders packaging/release fills.
    #[test]
    fn the_krew_manifest_matches_the_binary() {
        let text = include_str!("../../packaging/krew/visio.yaml");
        let filled = text.replace("@VERSION@", "1.2.3").replace("@ARCH@", "amd64").replace("@SHA256@", &"0".repeat(64));
        assert!(
            !filled.lines().filter(|l| !l.starts_with('#')).any(|l| l.contains('@')),
            "a placeholder packaging/release does not fill"
        );
        let m: serde_json::Value = serde_norway::from_str(&filled).unwrap();
        assert_eq!(m["kind"], "Plugin");
        assert_eq!(m["metadata"]["name"], env!("CARGO_BIN_NAME").trim_start_matches("kubectl-"));
        assert_eq!(m["spec"]["version"], "v1.2.3");
        let platform = &m["spec"]["platforms"][0];
        assert_eq!(platform["bin"], env!("CARGO_BIN_NAME"));
        assert_eq!(platform["files"][0]["from"], env!("CARGO_BIN_NAME"));
        assert!(platform["uri"].as_str().unwrap().ends_with("/kubectl-visio-1.2.3-linux-amd64.tar.gz"));
    }
}
