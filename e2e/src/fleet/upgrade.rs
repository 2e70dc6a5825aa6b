//! A rolling upgrade (or rollback) of a fleet scenario's VisioCluster, and the wait for its end while
//! the workload runs.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use visio_operator::api::VisioCluster;

use super::{Fleet, View, Workload};
use crate::fixtures::VC_NAME;

/// The upgrade of the VisioCluster [`VC_NAME`] of `ns` to `version`, from pods of the template `old_hash`,
/// to `pods` pods.
pub struct Upgrade<'a> {
    pub client: &'a Client,
    pub ns: &'a str,
    pub old_hash: &'a str,
    pub pods: usize,
    pub version: &'a str,
}

impl Upgrade<'_> {
    /// Sets `spec.version` (a merge patch): the upgrade begins.
    pub async fn start(&self) -> Result<()> {
        let vcs: Api<VisioCluster> = Api::namespaced(self.client.clone(), self.ns);
        let patch = json!({"spec": {"version": self.version}});
        vcs.patch(VC_NAME, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }

    /// The upgrade is over: the status says so for the current generation, and every pod the harness
    /// lists runs the new template.
    pub async fn done(&self, view: &View) -> Result<bool> {
        let vcs: Api<VisioCluster> = Api::namespaced(self.client.clone(), self.ns);
        let vc = vcs.get(VC_NAME).await?;
        let Some(s) = vc.status.as_ref() else { return Ok(false) };
        let n = self.pods as i32;
        Ok(s.observed_generation == vc.metadata.generation
            && s.version.as_deref() == Some(self.version)
            && s.sfu.updated == n
            && s.sfu.current == n
            && s.sfu.draining == 0
            && view.pods.len() == self.pods
            && view
                .active()
                .all(|p| p.template_hash != self.old_hash && p.version == self.version && p.drain_since.is_none()))
    }

    /// Steps `work` every 100 ms and checks every 500 ms whether the upgrade is [`Upgrade::done`]; returns
    /// the time from `since` to then, or fails once `bound` has passed since `since`, with the status
    /// and the pods. A check gets 2 s and an error counts as not done yet: while the control plane
    /// recovers (an outage scenario) a call can hang for a minute, and the meetings must keep ending on
    /// time meanwhile.
    pub async fn wait(&self, work: &mut Workload, fleet: &Fleet, since: Instant, bound: Duration) -> Result<Duration> {
        let mut last_check: Option<Instant> = None;
        let mut last_error = None;
        loop {
            if since.elapsed() > bound {
                let vcs: Api<VisioCluster> = Api::namespaced(self.client.clone(), self.ns);
                let status = vcs.get(VC_NAME).await.ok().and_then(|v| v.status);
                let v = fleet.view().await;
                bail!(
                    "the upgrade to {} not done after {bound:?}; last error: {last_error:?}\nstatus: {status:#?}\npods: {:#?}",
                    self.version,
                    v.pods.values().collect::<Vec<_>>()
                );
            }
            work.step(fleet).await?;
            if last_check.is_none_or(|at| at.elapsed() >= Duration::from_millis(500)) {
                last_check = Some(Instant::now());
                let view = fleet.view().await;
                match tokio::time::timeout(Duration::from_secs(2), self.done(&view)).await {
                    Ok(Ok(true)) => return Ok(since.elapsed()),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => last_error = Some(format!("{e:#}")),
                    Err(_) => last_error = Some("a check took over 2 s".into()),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
