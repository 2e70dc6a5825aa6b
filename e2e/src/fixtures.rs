//! Shared fixtures of the scenarios: the VisioCluster manifests they apply (a builder for the
//! variations they use), server-side apply, and the Ready checks and waits on them.

use std::fmt::Debug;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use visio_operator::api::VisioCluster;

use crate::{merge_patch, poll};

/// The LiveKit version the fleet scenarios start from, and the one they upgrade to.
pub const OLD_VERSION: &str = "v1.9.4";
pub const NEW_VERSION: &str = "v1.9.5";
/// The VisioCluster of every fleet scenario (and the name most tests give theirs).
pub const VC_NAME: &str = "visio";

/// A VisioCluster manifest under construction: `visio_cluster("visio").ministry(..).replicas(1, 2)`,
/// then [`VisioClusterFixture::value`]. Only what a method sets is in the spec.
#[derive(Clone, Debug)]
pub struct VisioClusterFixture(Value);

/// A VisioCluster named `name` with an empty spec (every test sets at least [`VisioClusterFixture::ministry`]).
pub fn visio_cluster(name: &str) -> VisioClusterFixture {
    VisioClusterFixture(json!({
        "apiVersion": "visio.io/v1alpha1", "kind": "VisioCluster", "metadata": {"name": name}, "spec": {}
    }))
}

impl VisioClusterFixture {
    /// `metadata.namespace` (for a document applied with kubectl, or in a List).
    pub fn namespace(mut self, ns: &str) -> Self {
        self.0["metadata"]["namespace"] = json!(ns);
        self
    }

    /// The tenant's `displayName` and the signalling host.
    pub fn ministry(self, display: &str, host: &str) -> Self {
        self.spec(json!({"tenant": {"displayName": display}, "signaling": {"host": host}}))
    }

    /// `spec.tenant.contact`.
    pub fn contact(self, contact: &str) -> Self {
        self.spec(json!({"tenant": {"contact": contact}}))
    }

    /// `spec.sfu.replicas`.
    pub fn replicas(self, min: usize, max: usize) -> Self {
        self.spec(json!({"sfu": {"replicas": {"min": min, "max": max}}}))
    }

    /// SFU pods on the pod network (no node per pod).
    pub fn pod_network(self) -> Self {
        self.spec(json!({"sfu": {"network": {"mode": "podNetwork"}}}))
    }

    /// TURN on `domain`, its certificate in the Secret `turn-tls`.
    pub fn turn(self, domain: &str) -> Self {
        self.spec(json!({"turn": {"domain": domain, "tlsSecretName": "turn-tls"}}))
    }

    /// TURN off.
    pub fn no_turn(self) -> Self {
        self.spec(json!({"turn": {"enabled": false}}))
    }

    /// `patch` merged over the spec (RFC 7386): any other field.
    pub fn spec(mut self, patch: Value) -> Self {
        merge_patch(&mut self.0["spec"], &patch);
        self
    }

    pub fn value(self) -> Value {
        self.0
    }
}

/// The VisioCluster of the fleet scenarios: pod network mode (no node per pod), without TURN, with a
/// one-minute drain timeout (the least the CRD allows) and `spec` merged over that.
pub fn fleet_visio_cluster(display: &str, spec: Value) -> Value {
    visio_cluster(VC_NAME)
        .ministry(display, "visio.example.gouv.fr")
        .spec(json!({"version": OLD_VERSION, "sfu": {"capacity": {"participantsPerPod": 100}},
                     "upgrade": {"drainTimeout": "1m", "warnBefore": "20s"}}))
        .pod_network()
        .no_turn()
        .spec(spec)
        .value()
}

/// Server-side apply of `doc` (named by its `metadata.name`) as field manager `manager`, forced.
pub async fn apply<K>(api: &Api<K>, manager: &str, doc: &Value) -> Result<K>
where
    K: Clone + DeserializeOwned + Debug,
{
    let name = doc["metadata"]["name"].as_str().context("a document without metadata.name")?;
    Ok(api.patch(name, &PatchParams::apply(manager).force(), &Patch::Apply(doc)).await?)
}

/// A tenant up: creates the namespace `ns` (if missing), applies `vc` there (field manager `e2e`) and
/// waits (every 250 ms, `timeout` at most) until it is [`ready`]; returns the namespace's VisioCluster
/// API and the Ready object.
pub async fn ready_tenant(
    client: &Client,
    ns: &str,
    vc: VisioClusterFixture,
    timeout: Duration,
) -> Result<(Api<VisioCluster>, VisioCluster)> {
    crate::namespace(client, ns).await?;
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), ns);
    let vc = vc.value();
    apply(&vcs, "e2e", &vc).await?;
    let name = vc["metadata"]["name"].as_str().context("a VisioCluster without a name")?;
    let ready = wait_ready(&vcs, name, timeout).await?;
    Ok((vcs, ready))
}

/// The condition of this type in a VisioCluster's status.
pub fn condition<'a>(vc: &'a VisioCluster, type_: &str) -> Option<&'a Condition> {
    vc.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

/// Ready=True for the VisioCluster's current generation.
pub fn ready(vc: &VisioCluster) -> bool {
    vc.status.as_ref().is_some_and(|s| s.observed_generation == vc.metadata.generation)
        && condition(vc, "Ready").is_some_and(|c| c.status == "True")
}

/// Polls every 250 ms until the VisioCluster `name` is [`ready`], for at most `timeout`; returns it.
pub async fn wait_ready(vcs: &Api<VisioCluster>, name: &str, timeout: Duration) -> Result<VisioCluster> {
    poll_ready(vcs, name, timeout, Duration::from_millis(250)).await
}

/// [`wait_ready`], polling every `every`.
pub async fn poll_ready(
    vcs: &Api<VisioCluster>,
    name: &str,
    timeout: Duration,
    every: Duration,
) -> Result<VisioCluster> {
    poll(&format!("VisioCluster {name} Ready"), timeout, every, || async {
        let vc = vcs.get(name).await?;
        Ok(ready(&vc).then_some(vc))
    })
    .await
}
