//! The three controllers, one folder each, every reconcile in the same steps:
//!
//! dereference (what the spec refers to) -> validate (one `Validated*` value, everything parsed once)
//! -> build (the pure builders of `crate::builders`) -> apply (one `ChildSet`: ensure, then prune)
//! -> pods (the fleet planner's actions) -> status (conditions, Events, metrics).
//!
//! Each step is a file of the resource's folder; the folder's `mod.rs` holds the watches that trigger
//! the reconcile and the driver that runs the steps top to bottom. What knows no custom resource lives
//! in `crate::runtime`.

pub mod captionpool;
pub mod retentionpolicy;
pub mod visiocluster;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::WatchStreamExt;
use kube::Client;

use crate::runtime::children::{self, ChildWatches};
use crate::runtime::{nodes, secrets, watch_config, Config, Context, WatchBackoff};
use crate::telemetry::Metrics;

/// Runs the three controllers until one stops (which only happens on shutdown).
pub async fn run(client: Client, config: Config, metrics: Arc<Metrics>, ready: crate::telemetry::Readiness) {
    let (stores, writers) = children::stores();
    let (child_watches, policies_w, nodes_w) = ChildWatches::new(&client, writers);
    let reporter = Reporter { controller: "visio-operator".into(), instance: Some(config.instance.clone()) };
    let operator = match secrets::whoami(&client).await {
        Ok(s) => {
            tracing::info!(kind = %s.kind, name = %s.name, "the operator binds itself to Secrets in tenant namespaces as this subject");
            Some(s)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not learn the operator's own identity: no per-namespace Secret bindings");
            None
        }
    };
    let secret_caches = secrets::SecretCaches::new(client.clone());
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        recorder,
        config,
        stores.clone(),
        secret_caches.clone(),
        operator,
    ));

    // Subscribed before the Node watch starts, so no cordon change is missed.
    let cordons = nodes::CordonChanges::new();
    let (vc_cordons, cp_cordons) = (cordons.subscribe(), cordons.subscribe());
    // Subscribed before the VisioPlatform watch starts, so no change of the rules is missed.
    let platform = ctx.platform.clone();
    let (vc_platform, cp_platform, rp_platform) = (platform.subscribe(), platform.subscribe(), platform.subscribe());
    let policies = crate::runtime::lenient_watcher::<crate::api::RetentionPolicy>(client.clone(), watch_config())
        .backoff(WatchBackoff::default())
        .reflect(policies_w)
        .touched_objects()
        .boxed();
    let vc = visiocluster::controller(
        client.clone(),
        ctx.clone(),
        visiocluster::Triggers {
            children: child_watches,
            secrets: secret_caches.subscribe().boxed(),
            retention_policies: policies,
            nodes: vc_cordons.boxed(),
            platform: vc_platform.boxed(),
        },
    );
    let cp = captionpool::controller(client.clone(), ctx.clone(), cp_cordons.boxed(), cp_platform.boxed());
    tokio::spawn(platform.run(client.clone()));
    tokio::spawn(cordons.run(client.clone(), nodes_w));
    let rp = retentionpolicy::controller(client.clone(), ctx.clone(), rp_platform.boxed());

    // Ready once every child cache has its first full list (the controllers drive the watches).
    let ctx_ready = ctx.clone();
    let readiness = async move {
        while !stores.children_ready() || !ctx_ready.platform.ready() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ready.set(true);
        tracing::info!("caches synced");
        futures::future::pending::<()>().await
    };
    tokio::select! {
        _ = vc => tracing::warn!("VisioCluster controller stopped"),
        _ = cp => tracing::warn!("CaptionPool controller stopped"),
        _ = rp => tracing::warn!("RetentionPolicy controller stopped"),
        _ = readiness => {},
    }
}
