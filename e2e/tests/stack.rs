//! A VisioCluster, run by the operator process against the real apiserver, becomes a LiveKit
//! stack that reaches Ready (kwok runs the pods), prunes children the spec stops asking for,
//! keeps its secrets out of logs and Events, and is garbage-collected with its owner.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams};
use kube::ResourceExt;
use serde_json::json;
use visio_e2e::fixtures::{apply, ready_tenant, visio_cluster};
use visio_e2e::{client, namespace, wait_for};
use visio_operator::api::VisioCluster;

const NS: &str = "e2e-stack";

#[tokio::test]
async fn visiocluster_lifecycle() -> Result<()> {
    let client = client().await?;
    let sante = visio_cluster("visio").ministry("Ministère de la Santé", "visio.sante.gouv.fr").replicas(2, 4);
    let vc = sante.clone().contact("visio-oncall@sante.gouv.fr").turn("turn.sante.gouv.fr");

    // Ready: two SFU pods serving.
    let (vcs, vc) = ready_tenant(&client, NS, vc, Duration::from_secs(90)).await?;
    let status = vc.status.clone().context("status")?;
    assert_eq!(status.sfu.ready, 2);
    assert_eq!(status.sfu.desired, 2);
    assert!(status.version.as_deref().is_some_and(|v| v.starts_with('v')));
    assert_eq!(status.endpoints.as_ref().map(|e| e.signaling_url.as_str()), Some("wss://visio.sante.gouv.fr"));
    assert!(
        status.firewall.iter().any(|r| r.protocol == "UDP" && r.from == "clients"),
        "status says which media ports to open: {:?}",
        status.firewall
    );

    // The operator's /metrics agrees with what the cluster holds.
    let ready_series = format!("visio_sfu_pods{{cluster=\"visio\",namespace=\"{NS}\",state=\"ready\"}}");
    wait_for("ready SFU pods in /metrics", Duration::from_secs(15), || async {
        Ok((visio_e2e::metric(&ready_series).await? == Some(2.0)).then_some(()))
    })
    .await?;
    let buffer = format!("visio_sfu_participant_buffer{{cluster=\"visio\",namespace=\"{NS}\"}}");
    assert_eq!(visio_e2e::metric(&buffer).await?, Some(100.0), "the default participant buffer");
    let up = format!("visio_resource_ready{{kind=\"VisioCluster\",name=\"visio\",namespace=\"{NS}\"}}");
    assert_eq!(visio_e2e::metric(&up).await?, Some(1.0));

    // Children, each owned by the VisioCluster.
    let uid = vc.uid().context("uid")?;
    let owned = |refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
        refs.is_some_and(|r| r.iter().any(|o| o.uid == uid && o.controller == Some(true)))
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let sfu = pods.list(&ListParams::default().labels("app.kubernetes.io/component=sfu")).await?;
    assert_eq!(sfu.items.len(), 2);
    for p in &sfu.items {
        assert!(owned(p.metadata.owner_references.as_ref()), "pod {} owned", p.name_any());
        let spec = p.spec.as_ref().unwrap();
        let lk = spec.containers.iter().find(|c| c.name == "livekit").context("livekit container")?;
        assert!(lk.liveness_probe.as_ref().unwrap().tcp_socket.is_some(), "liveness does not depend on Redis");
        assert!(lk.readiness_probe.as_ref().unwrap().http_get.is_some());
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let creds = secrets.get("visio-credentials").await?;
    assert!(owned(creds.metadata.owner_references.as_ref()));
    assert!(owned(secrets.get("visio-livekit-config").await?.metadata.owner_references.as_ref()));
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), NS);
    assert!(owned(deploys.get("visio-redis").await?.metadata.owner_references.as_ref()));
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    for name in ["visio-signaling", "visio-redis", "visio-turn"] {
        assert!(owned(services.get(name).await?.metadata.owner_references.as_ref()), "service {name}");
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), NS);
    assert!(owned(pdbs.get("visio-sfu").await?.metadata.owner_references.as_ref()));
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), NS);
    let redis_policy = policies.get("visio-redis").await?;
    assert!(owned(redis_policy.metadata.owner_references.as_ref()));
    let from = redis_policy.spec.and_then(|s| s.ingress).unwrap_or_default();
    assert_eq!(from.len(), 1, "Redis admits one rule: this tenant's SFU pods");
    assert!(owned(policies.get("visio-sfu").await?.metadata.owner_references.as_ref()));

    // No secret value in the operator's log or in Events.
    let data = creds.data.clone().unwrap_or_default();
    let values: Vec<String> = data.values().map(|v| String::from_utf8_lossy(&v.0).into_owned()).collect();
    for key in ["apiSecret", "redisPassword"] {
        assert!(data.get(key).is_some_and(|v| v.0.len() >= 32), "generated {key} is at least 32 characters");
    }
    if let Ok(path) = std::env::var("VISIO_E2E_OPERATOR_LOG") {
        let log = std::fs::read_to_string(path)?;
        for v in &values {
            assert!(!log.contains(v.as_str()), "a generated secret appears in the operator log");
        }
    }
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    for e in events.list(&ListParams::default()).await? {
        for v in &values {
            assert!(!e.message.clone().unwrap_or_default().contains(v.as_str()), "a secret appears in an Event");
        }
    }

    // Switching TURN off prunes its Service.
    apply(&vcs, "e2e", &sante.no_turn().value()).await?;
    wait_for("TURN Service pruned", Duration::from_secs(30), || async {
        Ok(services.get_opt("visio-turn").await?.is_none().then_some(()))
    })
    .await?;
    // The generated credentials survive the change (they are not regenerated).
    assert_eq!(secrets.get("visio-credentials").await?.data, creds.data);

    // Deleting the VisioCluster takes every child with it (ownerReference garbage collection).
    vcs.delete("visio", &DeleteParams::foreground()).await?;
    wait_for("children garbage-collected", Duration::from_secs(90), || async {
        let left = pods.list(&ListParams::default().labels("app.kubernetes.io/instance=visio")).await?.items.len()
            + services.list(&ListParams::default().labels("app.kubernetes.io/instance=visio")).await?.items.len()
            + secrets.list(&ListParams::default().labels("app.kubernetes.io/instance=visio")).await?.items.len()
            + deploys.list(&ListParams::default().labels("app.kubernetes.io/instance=visio")).await?.items.len();
        Ok((left == 0 && vcs.get_opt("visio").await?.is_none()).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_missing_keys_secret_gives_a_condition_and_an_event() -> Result<()> {
    let client = client().await?;
    let ns = "e2e-badref";
    namespace(&client, ns).await?;
    let vcs: Api<VisioCluster> = Api::namespaced(client.clone(), ns);
    let vc = visio_cluster("visio")
        .ministry("Ministère des Armées", "visio.defense.gouv.fr")
        .spec(json!({"keys": {"secretName": "livekit-keys"}}))
        .value();
    apply(&vcs, "e2e", &vc).await?;
    let cond = wait_for("KeysSecretMissing condition", Duration::from_secs(30), || async {
        let vc = vcs.get("visio").await?;
        Ok(vc
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready" && c.reason == "KeysSecretMissing")))
    })
    .await?;
    assert!(cond.message.contains("spec.keys.secretName"), "{}", cond.message);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    wait_for("KeysSecretMissing Event", Duration::from_secs(15), || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list.items.iter().any(|e| e.reason.as_deref() == Some("KeysSecretMissing")).then_some(()))
    })
    .await?;
    // Nothing was built from a spec the operator cannot honour.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    assert!(pods.list(&ListParams::default()).await?.items.is_empty());
    Ok(())
}

/// A schedule window holds the fleet above its load-driven size, shows in `kubectl get vc` and the
/// metrics; a time zone the tz database does not know (CEL cannot tell) becomes a condition naming the field.
#[tokio::test]
async fn a_schedule_window_holds_the_fleet_up() -> Result<()> {
    let client = client().await?;
    let ns = "e2e-schedule";
    let always = json!({"autoscaling": {"timeZone": "UTC", "schedules": [
        {"name": "all-week", "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], "start": "00:00", "end": "24:00", "minPods": 3}
    ]}});
    let vc =
        visio_cluster("visio").ministry("Ministère du Travail", "visio.travail.gouv.fr").replicas(2, 5).spec(always);
    let (vcs, _) = ready_tenant(&client, ns, vc, Duration::from_secs(90)).await?;
    let status = wait_for("3 SFU pods ready under the window", Duration::from_secs(60), || async {
        let s = vcs.get("visio").await?.status.context("status")?;
        Ok((s.sfu.ready == 3).then_some(s))
    })
    .await?;
    assert_eq!(status.sfu.desired, 3, "the window's minPods, above min 2 and the (unreported) load");
    let auto = status.autoscaling.context("status.autoscaling")?;
    assert_eq!(auto.active_window.as_deref(), Some("all-week"));
    assert_eq!(auto.scheduled_min_pods, Some(3));
    assert!(auto.startup_lead_seconds.is_some_and(|s| s >= 0), "the pods' start-up was measured: {auto:?}");
    let table = visio_e2e::kubectl(&["get", "vc", "visio", "-n", ns], None)?;
    assert!(table.contains("WINDOW") && table.contains("all-week"), "kubectl get vc shows the window:\n{table}");
    let open = format!("visio_sfu_schedule_window_open{{cluster=\"visio\",namespace=\"{ns}\"}}");
    wait_for("the window in /metrics", Duration::from_secs(15), || async {
        Ok((visio_e2e::metric(&open).await? == Some(1.0)).then_some(()))
    })
    .await?;
    let startup = format!("visio_sfu_pod_startup_seconds{{cluster=\"visio\",namespace=\"{ns}\"}}");
    assert!(visio_e2e::metric(&startup).await?.is_some_and(|s| s >= 0.0), "{startup}");

    // A zone shaped like an IANA name that does not exist passes CEL; the controller names the field.
    let patch = json!({"spec": {"autoscaling": {"timeZone": "Europe/Atlantis"}}});
    vcs.patch("visio", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
    let cond = wait_for("an InvalidSpec condition", Duration::from_secs(30), || async {
        let vc = vcs.get("visio").await?;
        Ok(vc.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready" && c.status == "False")))
    })
    .await?;
    assert!(cond.message.contains("spec.autoscaling.timeZone"), "{}", cond.message);
    // Nothing was torn down for it: the pods serve on.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let sfu = pods.list(&ListParams::default().labels("app.kubernetes.io/component=sfu")).await?;
    assert_eq!(sfu.items.len(), 3);
    vcs.delete("visio", &DeleteParams::default()).await?;
    Ok(())
}
