//! The fleet's glue to the real LiveKit ([`super::StandinBackend::RealLivekit`]): the operator's config
//! from the tenant's Secret, one `livekit-server` and its agent per pod (the server parts are in
//! [`crate::livekit`]), and what the real participants said, settled into the books.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::json;
use tokio::process::Child;

use super::books::{end, vanished, MeetingStatus};
use super::kubelet::{spawn_agent, Run};
use super::view::PodView;
use super::{Shared, State};

/// The operator's `livekit.yaml` from `<cluster>-livekit-config`.
pub(super) async fn operator_livekit_config(secrets: &Api<Secret>, cluster: &str) -> Result<String> {
    let name = format!("{cluster}-livekit-config");
    let secret = crate::wait_for(&format!("Secret {name}"), Duration::from_secs(60), || async {
        Ok(secrets.get_opt(&name).await?)
    })
    .await?;
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get("livekit.yaml"))
        .with_context(|| format!("no livekit.yaml in {name}"))?;
    Ok(String::from_utf8(data.0.clone())?)
}

/// One pod's real LiveKit and its agent, as the pod spec says: the agent reads the same config. The
/// chart-style baseline runs LiveKit alone.
pub(super) async fn start_real_run(
    shared: &Shared,
    real: &crate::livekit::RealFleet,
    v: &PodView,
    agent_log: std::fs::File,
) -> Result<Run> {
    let cfg = &shared.cfg;
    let (mut node_child, node) = real.start_node().await.with_context(|| format!("livekit-server for {}", v.name))?;
    let node_pid = node_child.id().context("livekit-server pid")?;
    let agent = if cfg.backend.with_agent(cfg) {
        let args = [
            "--metrics-url".to_string(),
            node.addr.metrics_url(),
            "--api-url".into(),
            node.addr.api_url(),
            "--backend-process".into(),
            "livekit-server".into(),
            "--backend-pid".into(),
            node_pid.to_string(),
            "--livekit-config".into(),
            node.config_path.display().to_string(),
        ];
        let spawned = spawn_agent(shared, &v.name, args, agent_log);
        match spawned {
            Ok(a) => Some(a),
            Err(e) => {
                let _ = node_child.start_kill();
                return Err(e).context("starting the agent");
            }
        }
    } else {
        None
    };
    if let Ok(mut pids) = shared.pids.lock() {
        pids.insert(node_pid);
        pids.extend(agent.as_ref().and_then(Child::id));
    }
    Ok(Run {
        pod: v.name.clone(),
        uid: v.uid.clone(),
        standin: Some(node_child),
        agent,
        stdout: None,
        http: SocketAddr::new(node.addr.ip.into(), node.addr.http_port),
        draining: false,
        terminating_since: None,
        real: Some(node),
    })
}

/// Real LiveKit: what the participants said since the last call. A drain warning is recorded once per
/// meeting; a participant disconnected without asking cuts its meeting, unless the agent deleted the
/// room at the drain deadline in a scenario that expects it.
pub(super) fn settle_participants(shared: &Shared, st: &mut State) {
    let Some(real) = &shared.real else { return };
    for e in real.new_events() {
        let meeting = crate::livekit::meeting_of(&e.id).to_string();
        let Some(m) = st.meetings.get(&meeting).cloned() else { continue };
        match e.event.as_str() {
            "data" if e.topic == "visio.system" && st.warned_meetings.insert(meeting.clone()) => {
                st.outcome.warnings.entry(m.pod.clone()).or_default().push(json!({
                    "room": meeting, "topic": e.topic, "data": e.payload
                }));
            }
            "disconnected" if m.status == MeetingStatus::Open => {
                if e.reason == "ROOM_DELETED" {
                    st.outcome.forced_ends.entry(m.pod.clone()).or_default().push(meeting.clone());
                    vanished(st, &shared.cfg, &meeting, std::slice::from_ref(&meeting));
                } else {
                    let why = format!("participant {} was disconnected ({})", e.id, e.reason);
                    end(st, &shared.cfg, &meeting, MeetingStatus::Cut(why));
                }
            }
            _ => {}
        }
    }
}
