//! The chart-style baseline the bench compares the operator with: LiveKit as the official
//! `livekit-server` Helm chart runs it.
//!
//! - a Deployment (default RollingUpdate strategy, 25 % surge and 25 % unavailable) whose pods get
//!   `terminationGracePeriodSeconds: 18000` (the chart's 5 hours), and no agent: on deletion LiveKit
//!   gets SIGTERM, refuses new rooms and exits once empty, or is killed at the end of the grace period;
//! - a HorizontalPodAutoscaler on CPU. kwok runs no container and has no kubelet metrics, so
//!   metrics-server and the HPA controller are played here ([`Hpa`]), following their documented
//!   behaviour: a CPU sample every 15 s (metrics-server's default resolution), a sync every 15 s
//!   (`--horizontal-pod-autoscaler-sync-period`), `desired = ceil(current * utilisation / target)`
//!   with a 10 % tolerance, scale-up by at most max(4 pods, 100 %) per 15 s, and scale-down to the
//!   highest recommendation of the stabilisation window (300 s by default). A pod's CPU is its
//!   participants over the participants its CPU request is sized for (the same `participantsPerPod`
//!   the operator is given).
//!
//! The Deployment and ReplicaSet controllers are the real ones (kube-controller-manager), and so is
//! the choice of which pods a scale-down deletes. The harness plays kubelet's termination
//! ([`crate::fleet::FleetConfig::kubelet_grace`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

use crate::fleet::Fleet;
use visio_operator::api::VisioCluster;
use visio_operator::builders::{livekit_config, Credentials};

/// Name of the baseline's Deployment (and prefix of its credentials Secret).
pub const NAME: &str = "livekit";
/// Label selector of its pods.
pub const SELECTOR: &str = "app=livekit-baseline";
/// The chart's termination grace period.
pub const CHART_GRACE: Duration = Duration::from_secs(18_000);

/// The Deployment of `replicas` LiveKit pods at `version`.
pub fn deployment(replicas: u32, version: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "labels": {"app": "livekit-baseline"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "livekit-baseline"}},
            "template": {
                "metadata": {"labels": {"app": "livekit-baseline"}},
                "spec": {
                    "terminationGracePeriodSeconds": CHART_GRACE.as_secs(),
                    "containers": [{
                        "name": "livekit-server",
                        "image": format!("livekit/livekit-server:{version}"),
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}
                    }]
                }
            }
        }
    })
}

/// Applies the Deployment, the API key Secret and the LiveKit config Secret (`livekit.yaml`, what the
/// chart's ConfigMap would hold) the harness gives its LiveKit processes. The config is the one the
/// operator's builder renders for `vc`, so both systems run the same LiveKit.
pub async fn deploy(client: &Client, ns: &str, replicas: u32, version: &str, vc: &VisioCluster) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let creds = Credentials {
        api_key: "APIbaseline".into(),
        api_secret: "baseline-secret-of-the-bench-only-0123456789".into(),
        redis_password: "baseline-redis-of-the-bench-only".into(),
    };
    let config = livekit_config::render(vc, &creds, "livekit-redis:6379").map_err(|e| anyhow::anyhow!("{e}"))?;
    for (name, data) in [
        (format!("{NAME}-credentials"), json!({"apiKey": creds.api_key, "apiSecret": creds.api_secret})),
        (format!("{NAME}-livekit-config"), json!({"livekit.yaml": config})),
    ] {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data});
        secrets.patch(&name, &PatchParams::apply("e2e-bench").force(), &Patch::Apply(&secret)).await?;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments
        .patch(NAME, &PatchParams::apply("e2e-bench").force(), &Patch::Apply(&deployment(replicas, version)))
        .await?;
    Ok(())
}

/// `helm upgrade` with a new image tag.
pub async fn set_version(client: &Client, ns: &str, version: &str) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "livekit-server", "image": format!("livekit/livekit-server:{version}")}]}}}});
    deployments.patch(NAME, &PatchParams::default(), &Patch::Strategic(&patch)).await?;
    Ok(())
}

/// The Deployment's rollout is complete (what `kubectl rollout status` waits for).
pub async fn rollout_complete(client: &Client, ns: &str) -> Result<bool> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = deployments.get(NAME).await?;
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(s) = d.status else { return Ok(false) };
    Ok(s.observed_generation == d.metadata.generation
        && s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want))
}

/// The HorizontalPodAutoscaler's settings.
#[derive(Clone, Debug)]
pub struct HpaSpec {
    pub min: u32,
    pub max: u32,
    /// `targetCPUUtilizationPercentage` (the chart's default is 60).
    pub target_percent: f64,
    /// Participants a pod's CPU request is sized for: utilisation = participants / this.
    pub participants_per_pod: u32,
    /// `--horizontal-pod-autoscaler-sync-period` (15 s).
    pub sync: Duration,
    /// metrics-server's `--metric-resolution` (15 s).
    pub resolution: Duration,
    /// `behavior.scaleDown.stabilizationWindowSeconds` (300 s).
    pub scale_down_window: Duration,
}

impl HpaSpec {
    pub fn new(min: u32, max: u32, target_percent: f64, participants_per_pod: u32) -> Self {
        HpaSpec {
            min,
            max,
            target_percent,
            participants_per_pod,
            sync: Duration::from_secs(15),
            resolution: Duration::from_secs(15),
            scale_down_window: Duration::from_secs(300),
        }
    }
}

/// The HPA's recommendation from the pods' CPU utilisations (percent), before stabilisation:
/// `ceil(sum / target)`, unchanged within the 10 % tolerance, scale-up limited to max(4, 2x) and the
/// result within min..=max (pure).
pub fn recommend(spec: &HpaSpec, current: u32, utilisations: &[f64]) -> u32 {
    if utilisations.is_empty() {
        return current.clamp(spec.min, spec.max);
    }
    let n = utilisations.len() as f64;
    let ratio = utilisations.iter().sum::<f64>() / n / spec.target_percent;
    let raw = if (ratio - 1.0).abs() <= 0.1 { current } else { (n * ratio).ceil() as u32 };
    let up_limit = current.saturating_mul(2).max(current + 4);
    raw.min(up_limit).clamp(spec.min, spec.max)
}

/// The HPA's scale-down stabilisation (`behavior.scaleDown.stabilizationWindowSeconds`): a scale-down goes
/// only as low as the highest recommendation of the window. Pure, on a clock in milliseconds given by the
/// caller (the HPA played against the apiserver, or `bench peak`'s simulated morning).
#[derive(Clone, Debug)]
pub struct Stabiliser {
    window_ms: u64,
    history: VecDeque<(u64, u32)>,
}

impl Stabiliser {
    pub fn new(window: Duration) -> Stabiliser {
        Stabiliser { window_ms: window.as_millis() as u64, history: VecDeque::new() }
    }

    /// The replica count to set at `now_ms`, from the current count and this sync's recommendation.
    pub fn stabilise(&mut self, now_ms: u64, current: u32, rec: u32) -> u32 {
        self.history.push_back((now_ms, rec));
        while self.history.front().is_some_and(|(t, _)| now_ms.saturating_sub(*t) > self.window_ms) {
            self.history.pop_front();
        }
        if rec < current {
            self.history.iter().map(|(_, r)| *r).max().unwrap_or(rec).min(current)
        } else {
            rec
        }
    }
}

/// metrics-server and the HPA controller, played for one Deployment: call [`Hpa::step`] often
/// (every 100 ms or so); it samples and syncs when their periods are due.
pub struct Hpa {
    spec: HpaSpec,
    deployments: Api<Deployment>,
    sample: Vec<f64>,
    stabiliser: Stabiliser,
    started: Instant,
    next_sample: Instant,
    next_sync: Instant,
}

impl Hpa {
    pub fn new(client: Client, ns: &str, spec: HpaSpec) -> Hpa {
        let now = Instant::now();
        Hpa {
            deployments: Api::namespaced(client, ns),
            sample: Vec::new(),
            stabiliser: Stabiliser::new(spec.scale_down_window),
            started: now,
            // The sample and the sync run on their own clocks, as the two components do.
            next_sample: now + spec.resolution / 2,
            next_sync: now + spec.sync,
            spec,
        }
    }

    /// Samples the pods' CPU and scales the Deployment when due.
    pub async fn step(&mut self, fleet: &Fleet) -> Result<()> {
        let now = Instant::now();
        if now >= self.next_sample {
            self.next_sample += self.spec.resolution;
            let view = fleet.view().await;
            let load = view.participants_by_pod();
            let per_pod = f64::from(self.spec.participants_per_pod.max(1));
            self.sample = view
                .active()
                .filter(|p| p.running)
                .map(|p| 100.0 * f64::from(load.get(&p.name).copied().unwrap_or(0)) / per_pod)
                .collect();
        }
        if now < self.next_sync {
            return Ok(());
        }
        self.next_sync += self.spec.sync;
        let Some(current) = replicas(&self.deployments).await? else { return Ok(()) };
        let rec = recommend(&self.spec, current, &self.sample);
        let stabilised = self.stabiliser.stabilise(now.duration_since(self.started).as_millis() as u64, current, rec);
        if stabilised != current {
            let patch = json!({"spec": {"replicas": stabilised}});
            self.deployments.patch(NAME, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        Ok(())
    }
}

async fn replicas(deployments: &Api<Deployment>) -> Result<Option<u32>> {
    let d = deployments.get(NAME).await.context("the baseline Deployment")?;
    Ok(d.spec.and_then(|s| s.replicas).map(|r| r.max(0) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recommendation_follows_the_documented_hpa_algorithm() {
        let spec = HpaSpec::new(1, 10, 70.0, 100);
        // 80 % on one pod, target 70 %: ratio 1.14, outside the tolerance -> 2 pods.
        assert_eq!(recommend(&spec, 1, &[80.0]), 2);
        // 75 % on one pod: ratio 1.07, within the tolerance -> unchanged.
        assert_eq!(recommend(&spec, 1, &[75.0]), 1);
        // Empty pods: down to min.
        assert_eq!(recommend(&spec, 4, &[0.0, 0.0, 0.0, 0.0]), 1);
        // A surge is limited to max(4, 2x) per sync, and to max.
        assert_eq!(recommend(&spec, 1, &[700.0]), 5);
        assert_eq!(recommend(&spec, 8, &[400.0; 8]), 10);
        // No sample yet: unchanged.
        assert_eq!(recommend(&spec, 3, &[]), 3);
    }

    #[test]
    fn a_scale_down_waits_for_the_window() {
        let mut s = Stabiliser::new(Duration::from_secs(300));
        assert_eq!(s.stabilise(0, 4, 6), 6, "up at once");
        assert_eq!(s.stabilise(15_000, 6, 2), 6, "the window still holds 6");
        assert_eq!(s.stabilise(301_000, 6, 2), 2, "6 left the window");
    }
}
