//! The tenant's NetworkPolicies: deny by default for the stack's pods, open only what the stack needs.
//!
//! - SFU pods (`<vc>-sfu`): media (UDP mux, TCP fallback) and TURN from anywhere, because
//!   participants' devices and external guests are anywhere; signalling from the ingress controller's
//!   namespace when signalling goes through an Ingress (namespaces labelled
//!   [`INGRESS_NAMESPACE_LABEL`]), from anywhere otherwise; LiveKit's metrics only from monitoring
//!   namespaces (labelled [`MONITORING_NAMESPACE_LABEL`]). Nothing else.
//! - Redis (`<vc>-redis`): only from this tenant's own SFU pods, on 6379, and no egress at all: another
//!   ministry's pods, or any other pod of the namespace, cannot reach it.
//! - A CaptionPool's backends (`<pool>-backend`, built in [`super::captions`] from the helpers here):
//!   streams only from the same pool's transcribers, metrics only from monitoring namespaces.
//!
//! Only the stack's pods are selected: the operator never imposes a namespace-wide policy on a tenant's
//! other workloads. NetworkPolicies do not apply to `hostNetwork` pods (the SFU in its default mode): the
//! node's firewall governs those, and `status.firewall` lists what to open. Redis always runs on the pod
//! network, so its isolation holds in both modes.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{child_metadata, cluster_name, redis_name, selector_labels, sfu_name, Component};
use super::livekit_config::{listeners, Listener, Protocol, METRICS_PORT, SIGNALING_PORT};
use super::BuildError;
use crate::api::visiocluster::RedisMode;
use crate::api::VisioCluster;

/// Namespaces carrying this label (value `"true"`) may reach the SFU's signalling port when signalling
/// is published through an Ingress: label the ingress controller's namespace with it.
pub const INGRESS_NAMESPACE_LABEL: &str = "visio.io/ingress-controller";
/// Namespaces carrying this label (value `"true"`) may scrape LiveKit's metrics port.
pub const MONITORING_NAMESPACE_LABEL: &str = "visio.io/monitoring";
/// Port of the managed Redis.
pub const REDIS_PORT: i32 = 6379;

pub(super) fn port(number: u16, protocol: Protocol) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(number))),
        protocol: Some(protocol.as_str().into()),
        end_port: None,
    }
}

/// Every pod of the namespaces labelled `label=true`.
pub(super) fn namespaces_labelled(label: &str) -> Vec<NetworkPolicyPeer> {
    vec![NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(label.to_string(), "true".to_string())])),
            match_expressions: None,
        }),
        ..NetworkPolicyPeer::default()
    }]
}

/// Who may reach one listener of the SFU (`None`: anyone).
fn sources(vc: &VisioCluster, l: &Listener) -> Option<Vec<NetworkPolicyPeer>> {
    match l.port {
        METRICS_PORT => Some(namespaces_labelled(MONITORING_NAMESPACE_LABEL)),
        SIGNALING_PORT if vc.spec.signaling.ingress_class_name.is_some() => {
            Some(namespaces_labelled(INGRESS_NAMESPACE_LABEL))
        }
        _ => None,
    }
}

/// The SFU pods' ingress policy.
pub fn sfu_policy(vc: &VisioCluster) -> Result<NetworkPolicy, BuildError> {
    let mut rules: Vec<NetworkPolicyIngressRule> = vec![];
    for l in listeners(vc)? {
        let from = sources(vc, &l);
        // Listeners with the same sources share one rule, so the policy reads like the firewall table.
        match rules.iter_mut().find(|r| r.from == from) {
            Some(r) => r.ports.get_or_insert_with(Vec::new).push(port(l.port, l.protocol)),
            None => rules.push(NetworkPolicyIngressRule { from, ports: Some(vec![port(l.port, l.protocol)]) }),
        }
    }
    Ok(NetworkPolicy {
        metadata: child_metadata(vc, sfu_name(cluster_name(vc)?), Component::Sfu)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(vc, Component::Sfu)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(rules),
            egress: None,
        }),
    })
}

/// The managed Redis's policy: ingress from this tenant's SFU pods only, no egress.
pub fn redis_policy(vc: &VisioCluster) -> Result<Option<NetworkPolicy>, BuildError> {
    if vc.spec.redis.mode != RedisMode::Managed {
        return Ok(None);
    }
    let from_sfu = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(vc, Component::Sfu)),
            match_expressions: None,
        }),
        ..NetworkPolicyPeer::default()
    };
    Ok(Some(NetworkPolicy {
        metadata: child_metadata(vc, redis_name(cluster_name(vc)?), Component::Redis)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(vc, Component::Redis)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![from_sfu]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(REDIS_PORT)),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]),
            }]),
            egress: Some(vec![]),
        }),
    }))
}

/// Every NetworkPolicy of the stack.
pub fn network_policies(vc: &VisioCluster) -> Result<Vec<NetworkPolicy>, BuildError> {
    let mut out = vec![sfu_policy(vc)?];
    out.extend(redis_policy(vc)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::labels::owner_reference;
    use crate::builders::testing::{cluster_with, test_cluster};
    use serde_json::json;

    fn rule_for(p: &NetworkPolicy, number: i32, protocol: &str) -> NetworkPolicyIngressRule {
        p.spec
            .as_ref()
            .unwrap()
            .ingress
            .as_ref()
            .unwrap()
            .iter()
            .find(|r| {
                r.ports
                    .iter()
                    .flatten()
                    .any(|pp| pp.port == Some(IntOrString::Int(number)) && pp.protocol.as_deref() == Some(protocol))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no rule for {protocol} {number}"))
    }

    fn open_ports(p: &NetworkPolicy) -> Vec<(String, i32)> {
        let mut out: Vec<_> = p
            .spec
            .as_ref()
            .unwrap()
            .ingress
            .iter()
            .flatten()
            .flat_map(|r| r.ports.iter().flatten())
            .map(|pp| {
                let n = match pp.port {
                    Some(IntOrString::Int(n)) => n,
                    _ => panic!("numeric ports only"),
                };
                (pp.protocol.clone().unwrap(), n)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn sfu_opens_media_and_turn_to_everyone_and_nothing_else() {
        let p = sfu_policy(&test_cluster()).unwrap();
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_string()][..]));
        assert_eq!(
            spec.pod_selector.as_ref().unwrap().match_labels,
            Some(selector_labels(&test_cluster(), Component::Sfu))
        );
        for (proto, n) in [("UDP", 7882), ("TCP", 7881), ("UDP", 3478)] {
            assert_eq!(rule_for(&p, n, proto).from, None, "{proto} {n} is open to participants anywhere");
        }
        // Exactly the listeners: signalling, metrics, media, TURN UDP (no TLS secret in the default spec).
        assert_eq!(
            open_ports(&p),
            vec![
                ("TCP".into(), 6789),
                ("TCP".into(), 7880),
                ("TCP".into(), 7881),
                ("UDP".into(), 3478),
                ("UDP".into(), 7882)
            ]
        );
    }

    #[test]
    fn metrics_only_from_monitoring_namespaces() {
        let p = sfu_policy(&test_cluster()).unwrap();
        let from = rule_for(&p, 6789, "TCP").from.unwrap();
        let labels = from[0].namespace_selector.as_ref().unwrap().match_labels.clone().unwrap();
        assert_eq!(labels.get(MONITORING_NAMESPACE_LABEL).map(String::as_str), Some("true"));
        assert!(from[0].pod_selector.is_none());
    }

    #[test]
    fn signalling_from_the_ingress_only_when_published_through_one() {
        let direct = sfu_policy(&test_cluster()).unwrap();
        assert_eq!(rule_for(&direct, 7880, "TCP").from, None);
        let via_ingress = sfu_policy(&cluster_with(json!({"signaling": {"ingressClassName": "nginx"}}))).unwrap();
        let from = rule_for(&via_ingress, 7880, "TCP").from.unwrap();
        let labels = from[0].namespace_selector.as_ref().unwrap().match_labels.clone().unwrap();
        assert_eq!(labels.get(INGRESS_NAMESPACE_LABEL).map(String::as_str), Some("true"));
    }

    #[test]
    fn redis_only_from_this_tenants_sfu_pods_and_no_egress() {
        let vc = test_cluster();
        let p = redis_policy(&vc).unwrap().expect("managed redis has a policy");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_string(), "Egress".to_string()][..]));
        assert_eq!(spec.egress.as_deref(), Some(&[][..]), "no egress at all");
        let rule = rule_for(&p, REDIS_PORT, "TCP");
        let from = rule.from.unwrap();
        assert_eq!(from.len(), 1);
        assert!(from[0].namespace_selector.is_none(), "same namespace only");
        let sel = from[0].pod_selector.as_ref().unwrap().match_labels.clone().unwrap();
        assert_eq!(sel, selector_labels(&vc, Component::Sfu));
        assert_eq!(
            sel.get("app.kubernetes.io/instance").map(String::as_str),
            Some("visio"),
            "this tenant's stack only"
        );
    }

    #[test]
    fn external_redis_has_no_policy() {
        let vc = cluster_with(json!({"redis": {"mode": "external", "external": {"address": "redis.example:6379"}}}));
        assert!(redis_policy(&vc).unwrap().is_none());
        assert_eq!(network_policies(&vc).unwrap().len(), 1);
    }

    #[test]
    fn policies_are_owned_and_named_after_the_cluster() {
        let vc = test_cluster();
        let all = network_policies(&vc).unwrap();
        let names: Vec<_> = all.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["visio-sfu", "visio-redis"]);
        for p in &all {
            assert_eq!(p.metadata.namespace.as_deref(), Some("mininterieur"));
            assert_eq!(p.metadata.owner_references, Some(vec![owner_reference(&vc).unwrap()]));
        }
    }

    #[test]
    fn two_tenants_never_select_each_others_pods() {
        let a = cluster_with(json!({}));
        let mut b = cluster_with(json!({}));
        b.metadata.name = Some("autre".into());
        let sel =
            |vc: &VisioCluster| redis_policy(vc).unwrap().unwrap().spec.unwrap().pod_selector.unwrap().match_labels;
        assert_ne!(sel(&a), sel(&b));
        let from = |vc: &VisioCluster| {
            redis_policy(vc).unwrap().unwrap().spec.unwrap().ingress.unwrap()[0].from.clone().unwrap()[0]
                .pod_selector
                .clone()
        };
        assert_ne!(from(&a), from(&b));
    }
}
