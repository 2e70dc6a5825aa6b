//! How clients reach one VisioCluster's SFU fleet, and how the fleet is protected from voluntary
//! disruption: the signalling, TURN and media Services, the SFU PodDisruptionBudget, the signalling
//! Ingress, and what the status reports about them (endpoints, firewall openings).
//!
//! Two pod labels, set by the controller and never by the template, drive the selection:
//! - `visio.io/serving: "true"` on pods that take new meetings. The signalling and TURN Services select
//!   only these, so a draining pod gets no new sessions while its meetings go on.
//! - `visio.io/in-use: "true"` on pods holding live sessions. The PodDisruptionBudget covers only these.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{
    child_metadata, cluster_name, media_name, selector_labels, sfu_name, signaling_name, turn_name, Component,
    IN_USE_LABEL, LABEL_TRUE, SERVING_LABEL,
};
use super::livekit_config::{listeners, Listener, SIGNALING_PORT};
use super::BuildError;
use crate::api::visiocluster::{Endpoints, FirewallRule, NetworkMode};
use crate::api::VisioCluster;

/// SFU pods that take new meetings.
pub fn serving_selector(vc: &VisioCluster) -> BTreeMap<String, String> {
    let mut s = selector_labels(vc, Component::Sfu);
    s.insert(SERVING_LABEL.into(), LABEL_TRUE.into());
    s
}

/// SFU pods that hold live sessions.
pub fn in_use_selector(vc: &VisioCluster) -> BTreeMap<String, String> {
    let mut s = selector_labels(vc, Component::Sfu);
    s.insert(IN_USE_LABEL.into(), LABEL_TRUE.into());
    s
}

/// The Services of `vc`, in a stable order: signalling, then TURN (when enabled), then media (pod network).
pub fn services(vc: &VisioCluster) -> Result<Vec<Service>, BuildError> {
    let mut out = vec![signaling_service(vc)?];
    out.extend(turn_service(vc)?);
    out.extend(media_service(vc)?);
    Ok(out)
}

/// `<vc>-signaling`: ClusterIP on 7880, serving pods only (what the Ingress points at).
pub fn signaling_service(vc: &VisioCluster) -> Result<Service, BuildError> {
    let name = signaling_name(cluster_name(vc)?);
    Ok(Service {
        metadata: child_metadata(vc, name, Component::Signaling)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(serving_selector(vc)),
            ports: Some(vec![service_port("http", SIGNALING_PORT, "TCP")]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// `<vc>-turn`: a LoadBalancer on the TURN ports (UDP when `spec.turn.udp`, TLS when a certificate is set),
/// serving pods only; `None` when TURN is disabled.
pub fn turn_service(vc: &VisioCluster) -> Result<Option<Service>, BuildError> {
    if !vc.spec.turn.enabled {
        return Ok(None);
    }
    let name = turn_name(cluster_name(vc)?);
    let ports: Vec<_> = listeners(vc)?.iter().filter(|l| l.name.starts_with("turn-")).map(listener_port).collect();
    if ports.is_empty() {
        return Err(BuildError::InvalidValue {
            field: "spec.turn",
            message: "TURN is enabled without UDP or TLS: set spec.turn.udp=true or spec.turn.tlsSecretName".into(),
        });
    }
    Ok(Some(load_balancer(vc, name, Component::Turn, serving_selector(vc), ports)?))
}

/// `<vc>-media` (pod network mode only): a LoadBalancer on the UDP mux port and the ICE/TCP port. It selects
/// every SFU pod, draining ones included: their meetings still need media.
///
/// Limitation: with more than one SFU pod behind it, a client's media may reach a pod that does not host its
/// room (session affinity by client IP only makes it sticky). Per-pod media Services, and advertising their
/// addresses as LiveKit's `rtc.node_ip`, are a later step; hostNetwork mode has no such limit.
pub fn media_service(vc: &VisioCluster) -> Result<Option<Service>, BuildError> {
    if vc.spec.sfu.network.mode != NetworkMode::PodNetwork {
        return Ok(None);
    }
    let name = media_name(cluster_name(vc)?);
    let ports: Vec<_> = listeners(vc)?.iter().filter(|l| l.name.starts_with("rtc-")).map(listener_port).collect();
    let mut svc = load_balancer(vc, name, Component::Media, selector_labels(vc, Component::Sfu), ports)?;
    if let Some(spec) = svc.spec.as_mut() {
        spec.session_affinity = Some("ClientIP".into());
    }
    Ok(Some(svc))
}

fn load_balancer(
    vc: &VisioCluster,
    name: String,
    component: Component,
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
) -> Result<Service, BuildError> {
    Ok(Service {
        metadata: child_metadata(vc, name, component)?,
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            // Keeps the client's address (ICE and TURN see the real peer) and sends traffic only to nodes
            // that run a selected pod.
            external_traffic_policy: Some("Local".into()),
            selector: Some(selector),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

fn listener_port(l: &Listener) -> ServicePort {
    service_port(l.name, l.port, l.protocol.as_str())
}

fn service_port(name: &str, port: u16, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: i32::from(port),
        target_port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some(protocol.into()),
        ..ServicePort::default()
    }
}

/// `<vc>-sfu`: `maxUnavailable: 0` over the SFU pods labelled `visio.io/in-use: "true"`. A node drain (or
/// any eviction) cannot take a pod with live meetings; idle pods are not covered and stay evictable, so
/// node maintenance is not blocked by empty capacity. The operator drains busy pods itself, on its own
/// schedule, and deletes them (deletion is not eviction, so the budget does not stop it).
pub fn pod_disruption_budget(vc: &VisioCluster) -> Result<PodDisruptionBudget, BuildError> {
    let name = sfu_name(cluster_name(vc)?);
    Ok(PodDisruptionBudget {
        metadata: child_metadata(vc, name, Component::Sfu)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(0)),
            selector: Some(LabelSelector { match_labels: Some(in_use_selector(vc)), match_expressions: None }),
            // An in-use pod that is not ready (say, during a Redis outage) still carries meetings: keep it
            // protected rather than letting unhealthy pods be evicted.
            unhealthy_pod_eviction_policy: Some("IfHealthyBudget".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

/// `<vc>-signaling` Ingress for `spec.signaling.host`, when `spec.signaling.ingressClassName` is set.
pub fn ingress(vc: &VisioCluster) -> Result<Option<Ingress>, BuildError> {
    let signaling = &vc.spec.signaling;
    let Some(class) = signaling.ingress_class_name.as_ref() else {
        return Ok(None);
    };
    if signaling.host.is_empty() {
        return Err(BuildError::InvalidValue { field: "spec.signaling.host", message: "is empty".into() });
    }
    let name = signaling_name(cluster_name(vc)?);
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: name.clone(),
            port: Some(ServiceBackendPort { number: Some(i32::from(SIGNALING_PORT)), name: None }),
        }),
        resource: None,
    };
    Ok(Some(Ingress {
        metadata: child_metadata(vc, name, Component::Signaling)?,
        spec: Some(IngressSpec {
            ingress_class_name: Some(class.clone()),
            rules: Some(vec![IngressRule {
                host: Some(signaling.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath { path: Some("/".into()), path_type: "Prefix".into(), backend }],
                }),
            }]),
            tls: signaling.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS { hosts: Some(vec![signaling.host.clone()]), secret_name: Some(secret.clone()) }]
            }),
            default_backend: None,
        }),
        status: None,
    }))
}

/// Where clients connect: the signalling URL, and the TURN URIs that have a public name
/// (`spec.turn.domain`). Without a domain, LiveKit advertises TURN over UDP with each node's address.
pub fn endpoints(vc: &VisioCluster) -> Endpoints {
    let spec = &vc.spec;
    let mut turn = Vec::new();
    if spec.turn.enabled {
        if let Some(domain) = spec.turn.domain.as_ref() {
            if spec.turn.udp {
                turn.push(format!("turn:{domain}:{}?transport=udp", spec.turn.udp_port));
            }
            if spec.turn.tls_secret_name.is_some() {
                turn.push(format!("turns:{domain}:{}?transport=tcp", spec.turn.tls_port));
            }
        }
    }
    Endpoints { signaling_url: format!("wss://{}", spec.signaling.host), turn }
}

/// What the tenant's network team must open: the answer to "which ports do I open".
pub fn firewall_rules(vc: &VisioCluster) -> Vec<FirewallRule> {
    let spec = &vc.spec;
    let rule = |purpose: &str, protocol: &str, port: i32, from: &str| FirewallRule {
        purpose: purpose.into(),
        protocol: protocol.into(),
        port,
        from: from.into(),
    };
    let mut rules = Vec::new();
    if spec.signaling.ingress_class_name.is_some() {
        rules.push(rule("signalling (WebSocket over HTTPS) to the ingress", "TCP", 443, "clients"));
        rules.push(rule("signalling from the ingress controller to the SFU pods", "TCP", 7880, "ingress"));
    } else {
        rules.push(rule("signalling (WebSocket) to the SFU", "TCP", 7880, "clients"));
    }
    rules.push(rule("WebRTC media over UDP", "UDP", spec.sfu.network.udp_port, "clients"));
    rules.push(rule("WebRTC media over TCP (when UDP is blocked)", "TCP", spec.sfu.network.tcp_port, "clients"));
    if spec.turn.enabled {
        if spec.turn.udp {
            rules.push(rule("TURN relay over UDP", "UDP", spec.turn.udp_port, "clients"));
        }
        if spec.turn.tls_secret_name.is_some() {
            rules.push(rule(
                "TURN relay over TLS (guests behind strict firewalls)",
                "TCP",
                spec.turn.tls_port,
                "clients",
            ));
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::labels::{owner_reference, standard_labels};
    use crate::builders::testing::{cluster_with, test_cluster};
    use serde_json::json;

    fn ports(s: &Service) -> Vec<(String, i32, String)> {
        s.spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.port, p.protocol.clone().unwrap()))
            .collect()
    }
    fn p(name: &str, port: i32, proto: &str) -> (String, i32, String) {
        (name.into(), port, proto.into())
    }
    fn tls_turn() -> serde_json::Value {
        json!({"turn": {"domain": "turn.interieur.gouv.fr", "tlsSecretName": "turn-cert", "tlsPort": 5349}})
    }

    #[test]
    fn default_services_are_signaling_and_turn() {
        let names: Vec<_> = services(&test_cluster()).unwrap().into_iter().map(|s| s.metadata.name.unwrap()).collect();
        assert_eq!(names, ["visio-signaling", "visio-turn"]);
    }

    #[test]
    fn pod_network_adds_media() {
        let vc = cluster_with(json!({"sfu": {"network": {"mode": "podNetwork"}}, "turn": {"enabled": false}}));
        let names: Vec<_> = services(&vc).unwrap().into_iter().map(|s| s.metadata.name.unwrap()).collect();
        assert_eq!(names, ["visio-signaling", "visio-media"]);
    }

    #[test]
    fn signaling_selects_serving_sfu_pods_on_7880() {
        let s = signaling_service(&test_cluster()).unwrap();
        let spec = s.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(ports(&s), [p("http", 7880, "TCP")]);
        assert_eq!(spec.ports.as_ref().unwrap()[0].target_port, Some(IntOrString::Int(7880)));
        let sel = spec.selector.as_ref().unwrap();
        assert_eq!(sel["visio.io/serving"], "true");
        assert_eq!(sel["app.kubernetes.io/component"], "sfu");
        assert_eq!(sel["app.kubernetes.io/name"], "livekit");
        assert_eq!(sel["app.kubernetes.io/instance"], "visio");
        assert!(!sel.contains_key("visio.io/in-use"));
    }

    #[test]
    fn turn_service_default_is_udp_load_balancer() {
        let s = turn_service(&test_cluster()).unwrap().unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("visio-turn"));
        let spec = s.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(ports(&s), [p("turn-udp", 3478, "UDP")]);
        assert_eq!(spec.selector.as_ref().unwrap()["visio.io/serving"], "true");
    }

    #[test]
    fn turn_service_with_tls() {
        let s = turn_service(&cluster_with(tls_turn())).unwrap().unwrap();
        assert_eq!(ports(&s), [p("turn-udp", 3478, "UDP"), p("turn-tls", 5349, "TCP")]);
        let mut tls_only = tls_turn();
        tls_only["turn"]["udp"] = json!(false);
        let s = turn_service(&cluster_with(tls_only)).unwrap().unwrap();
        assert_eq!(ports(&s), [p("turn-tls", 5349, "TCP")]);
    }

    #[test]
    fn turn_service_only_when_enabled() {
        assert!(turn_service(&cluster_with(json!({"turn": {"enabled": false}}))).unwrap().is_none());
        let err = turn_service(&cluster_with(json!({"turn": {"udp": false}}))).unwrap_err();
        assert_eq!(err.label(), "invalid_value");
    }

    #[test]
    fn media_service_only_in_pod_network_mode() {
        assert!(media_service(&test_cluster()).unwrap().is_none());
        let vc = cluster_with(json!({"sfu": {"network": {"mode": "podNetwork", "udpPort": 31000, "tcpPort": 31001}}}));
        let s = media_service(&vc).unwrap().unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("visio-media"));
        let spec = s.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.session_affinity.as_deref(), Some("ClientIP"));
        assert_eq!(ports(&s), [p("rtc-tcp", 31001, "TCP"), p("rtc-udp", 31000, "UDP")]);
        let sel = spec.selector.as_ref().unwrap();
        assert!(!sel.contains_key("visio.io/serving"), "draining pods still need their media");
        assert_eq!(sel["app.kubernetes.io/component"], "sfu");
    }

    #[test]
    fn pdb_protects_only_in_use_pods() {
        let pdb = pod_disruption_budget(&test_cluster()).unwrap();
        assert_eq!(pdb.metadata.name.as_deref(), Some("visio-sfu"));
        let spec = pdb.spec.as_ref().unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(0)));
        assert!(spec.min_available.is_none());
        let sel = spec.selector.as_ref().unwrap().match_labels.as_ref().unwrap();
        assert_eq!(sel["visio.io/in-use"], "true");
        assert_eq!(sel["app.kubernetes.io/component"], "sfu");
        assert!(!sel.contains_key("visio.io/serving"));
        assert_eq!(spec.unhealthy_pod_eviction_policy.as_deref(), Some("IfHealthyBudget"));
    }

    #[test]
    fn ingress_only_when_a_class_is_set() {
        assert!(ingress(&test_cluster()).unwrap().is_none());
        let vc = cluster_with(json!({"signaling": {"host": "visio.interieur.gouv.fr", "ingressClassName": "nginx"}}));
        let ing = ingress(&vc).unwrap().unwrap();
        assert_eq!(ing.metadata.name.as_deref(), Some("visio-signaling"));
        let spec = ing.spec.as_ref().unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        assert!(spec.tls.is_none());
        let rule = &spec.rules.as_ref().unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("visio.interieur.gouv.fr"));
        let path = &rule.http.as_ref().unwrap().paths[0];
        assert_eq!(path.path.as_deref(), Some("/"));
        assert_eq!(path.path_type, "Prefix");
        let svc = path.backend.service.as_ref().unwrap();
        assert_eq!(svc.name, "visio-signaling");
        assert_eq!(svc.port.as_ref().unwrap().number, Some(7880));
    }

    #[test]
    fn ingress_tls_when_a_secret_is_set() {
        let vc = cluster_with(json!({"signaling": {
            "host": "visio.interieur.gouv.fr", "ingressClassName": "nginx", "tlsSecretName": "visio-tls"
        }}));
        let ing = ingress(&vc).unwrap().unwrap();
        let tls = &ing.spec.as_ref().unwrap().tls.as_ref().unwrap()[0];
        assert_eq!(tls.secret_name.as_deref(), Some("visio-tls"));
        assert_eq!(tls.hosts.as_deref(), Some(&["visio.interieur.gouv.fr".to_string()][..]));
    }

    #[test]
    fn ingress_needs_a_host() {
        let vc = cluster_with(json!({"signaling": {"host": "", "ingressClassName": "nginx"}}));
        assert_eq!(ingress(&vc).unwrap_err().label(), "invalid_value");
    }

    #[test]
    fn every_object_is_owned_and_labelled() {
        let vc = cluster_with(json!({
            "sfu": {"network": {"mode": "podNetwork"}},
            "signaling": {"host": "visio.interieur.gouv.fr", "ingressClassName": "nginx"}
        }));
        let owner = owner_reference(&vc).unwrap();
        let mut metas: Vec<_> = services(&vc).unwrap().into_iter().map(|s| s.metadata).collect();
        metas.push(pod_disruption_budget(&vc).unwrap().metadata);
        metas.push(ingress(&vc).unwrap().unwrap().metadata);
        assert_eq!(metas.len(), 5);
        for meta in metas {
            assert_eq!(meta.namespace.as_deref(), Some("mininterieur"));
            assert_eq!(meta.owner_references.as_ref().unwrap(), &vec![owner.clone()]);
            let labels = meta.labels.as_ref().unwrap();
            let component = labels["app.kubernetes.io/component"].clone();
            let expected = match component.as_str() {
                "signaling" => Component::Signaling,
                "turn" => Component::Turn,
                "media" => Component::Media,
                "sfu" => Component::Sfu,
                other => panic!("unexpected component {other}"),
            };
            assert_eq!(labels, &standard_labels(&vc, expected));
        }
    }

    #[test]
    fn endpoints_default() {
        let e = endpoints(&test_cluster());
        assert_eq!(e.signaling_url, "wss://visio.interieur.gouv.fr");
        assert!(e.turn.is_empty(), "no TURN domain, no TURN URI to publish");
    }

    #[test]
    fn endpoints_with_turn_domain() {
        let e = endpoints(&cluster_with(tls_turn()));
        assert_eq!(
            e.turn,
            ["turn:turn.interieur.gouv.fr:3478?transport=udp", "turns:turn.interieur.gouv.fr:5349?transport=tcp"]
        );
        let mut udp_only = tls_turn();
        udp_only["turn"].as_object_mut().unwrap().remove("tlsSecretName");
        assert_eq!(endpoints(&cluster_with(udp_only)).turn, ["turn:turn.interieur.gouv.fr:3478?transport=udp"]);
        let mut disabled = tls_turn();
        disabled["turn"]["enabled"] = json!(false);
        assert!(endpoints(&cluster_with(disabled)).turn.is_empty());
    }

    fn summary(rules: &[FirewallRule]) -> Vec<(String, i32, String)> {
        rules.iter().map(|r| (r.protocol.clone(), r.port, r.from.clone())).collect()
    }

    #[test]
    fn firewall_default() {
        let rules = firewall_rules(&test_cluster());
        assert_eq!(
            summary(&rules),
            [
                p("TCP", 7880, "clients"),
                p("UDP", 7882, "clients"),
                p("TCP", 7881, "clients"),
                p("UDP", 3478, "clients")
            ]
        );
        assert!(rules.iter().all(|r| !r.purpose.is_empty()));
    }

    #[test]
    fn firewall_with_ingress_and_tls_turn() {
        let mut patch = tls_turn();
        patch["signaling"] = json!({"host": "visio.interieur.gouv.fr", "ingressClassName": "nginx"});
        patch["turn"]["udp"] = json!(false);
        patch["turn"]["tlsPort"] = json!(443);
        patch["sfu"] = json!({"network": {"mode": "podNetwork"}});
        let rules = firewall_rules(&cluster_with(patch));
        assert_eq!(
            summary(&rules),
            [
                p("TCP", 443, "clients"),
                p("TCP", 7880, "ingress"),
                p("UDP", 7882, "clients"),
                p("TCP", 7881, "clients"),
                p("TCP", 443, "clients"),
            ]
        );
        assert!(rules.iter().all(|r| r.protocol == "TCP" || r.protocol == "UDP"));
    }

    #[test]
    fn firewall_without_turn() {
        let rules = firewall_rules(&cluster_with(json!({"turn": {"enabled": false}})));
        assert!(rules.iter().all(|r| !r.purpose.contains("TURN")));
        assert_eq!(rules.len(), 3);
    }

    #[test]
    fn missing_namespace_is_an_error() {
        let mut vc = test_cluster();
        vc.metadata.namespace = None;
        assert_eq!(services(&vc), Err(BuildError::MissingNamespace));
        assert_eq!(pod_disruption_budget(&vc), Err(BuildError::MissingNamespace));
    }
}
