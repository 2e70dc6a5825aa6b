//! The whole desired stack of one VisioCluster: every child object, the SFU pod template, and what the
//! status reports (endpoints, firewall openings), from the VisioCluster and its dereferenced credentials.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

use super::labels::{
    child_metadata, cluster_name, cluster_namespace, config_secret_name, credentials_secret_name, Component,
};
use super::livekit_config::{config_hash, render, CONFIG_FILE};
use super::redis::{managed_redis, redis_address, REDIS_PASSWORD_KEY};
use super::services::{endpoints, firewall_rules, ingress, pod_disruption_budget, services};
use super::sfu::{agent_access, sfu_template, AgentAccess, SfuTemplate};
use super::BuildError;
use crate::api::visiocluster::{Endpoints, FirewallRule, RedisMode};
use crate::api::VisioCluster;

/// Key of the API key in the credentials Secret (and in a tenant's `spec.keys` Secret).
pub const API_KEY_KEY: &str = "apiKey";
/// Key of the API secret in the credentials Secret (and in a tenant's `spec.keys` Secret).
pub const API_SECRET_KEY: &str = "apiSecret";

/// The secrets the stack runs with, as the controller dereferenced them: the API key and secret (generated
/// and kept in `<vc>-credentials`, or read from the tenant's `spec.keys` Secret) and the Redis password
/// (generated for a managed Redis, read from `spec.redis.external.passwordSecret` otherwise, empty if none).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// LiveKit API key.
    pub api_key: String,
    /// LiveKit API secret.
    pub api_secret: String,
    /// Redis password.
    pub redis_password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("api_key", &"<redacted>")
            .field("api_secret", &"<redacted>")
            .field("redis_password", &"<redacted>")
            .finish()
    }
}

/// Every desired object of one VisioCluster. All carry its namespace, the standard labels and its controller
/// owner reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Stack {
    /// `<vc>-credentials`, holding what the operator generated: `apiKey`/`apiSecret` when `spec.keys` is
    /// unset, `redisPassword` when Redis is managed. `None` when there is nothing generated to keep
    /// (tenant keys and an external Redis).
    pub credentials_secret: Option<Secret>,
    /// `<vc>-livekit-config`, key `livekit.yaml`.
    pub config_secret: Secret,
    /// The managed Redis Deployment and Service; `None` for an external Redis.
    pub redis: Option<(Deployment, Service)>,
    /// Signalling, then TURN (when enabled), then media (pod network mode) Services.
    pub services: Vec<Service>,
    /// The SFU PodDisruptionBudget.
    pub pdb: PodDisruptionBudget,
    /// The signalling Ingress, when an ingress class is set.
    pub ingress: Option<Ingress>,
    /// NetworkPolicies of the SFU pods and the managed Redis.
    pub network_policies: Vec<NetworkPolicy>,
    /// The tenant admins' RoleBinding, when `spec.tenant.adminGroups` names any.
    pub admin_binding: Option<RoleBinding>,
    /// The namespace's ResourceQuota, when `spec.tenant.quota` is set.
    pub resource_quota: Option<ResourceQuota>,
    /// The namespace's LimitRange, when `spec.tenant.limits` is set.
    pub limit_range: Option<LimitRange>,
    /// ServiceAccount, Role and RoleBinding of the in-pod agent (the SFU pods run as this ServiceAccount).
    pub agent: AgentAccess,
    /// The SFU pod template.
    pub sfu: SfuTemplate,
    /// For `status.endpoints`.
    pub endpoints: Endpoints,
    /// For `status.firewall`.
    pub firewall: Vec<FirewallRule>,
}

impl Stack {
    /// Kind and metadata of every object to apply (the SFU pod template is not one: the controller creates
    /// pods from it), in apply order: the LimitRange and ResourceQuota first (a LimitRange's defaults only
    /// reach pods created after it), then Secrets, so that pods never start without their config.
    pub fn object_metas(&self) -> Vec<(&'static str, &ObjectMeta)> {
        let mut out = Vec::new();
        if let Some(l) = &self.limit_range {
            out.push(("LimitRange", &l.metadata));
        }
        if let Some(q) = &self.resource_quota {
            out.push(("ResourceQuota", &q.metadata));
        }
        if let Some(s) = &self.credentials_secret {
            out.push(("Secret", &s.metadata));
        }
        out.push(("Secret", &self.config_secret.metadata));
        out.push(("ServiceAccount", &self.agent.service_account.metadata));
        out.push(("Role", &self.agent.role.metadata));
        out.push(("RoleBinding", &self.agent.role_binding.metadata));
        if let Some((d, s)) = &self.redis {
            out.push(("Deployment", &d.metadata));
            out.push(("Service", &s.metadata));
        }
        out.extend(self.services.iter().map(|s| ("Service", &s.metadata)));
        out.push(("PodDisruptionBudget", &self.pdb.metadata));
        if let Some(i) = &self.ingress {
            out.push(("Ingress", &i.metadata));
        }
        out.extend(self.network_policies.iter().map(|p| ("NetworkPolicy", &p.metadata)));
        if let Some(b) = &self.admin_binding {
            out.push(("RoleBinding", &b.metadata));
        }
        out
    }
}

/// Builds the whole stack of `vc`. `agent_image` is the operator's own image (the SFU pods' sidecar).
pub fn build_stack(vc: &VisioCluster, creds: &Credentials, agent_image: &str) -> Result<Stack, BuildError> {
    let cluster = cluster_name(vc)?;
    cluster_namespace(vc)?;
    super::labels::owner_reference(vc)?;
    let managed = vc.spec.redis.mode == RedisMode::Managed;
    if managed && creds.redis_password.is_empty() {
        return Err(BuildError::MissingCredential { field: "credentials.redisPassword" });
    }

    let rendered = render(vc, creds, &redis_address(vc))?;
    let config_name = config_secret_name(cluster);
    let config_secret = secret(vc, config_name.clone(), Component::Config, [(CONFIG_FILE, rendered.as_str())])?;

    let mut generated: Vec<(&str, &str)> = Vec::new();
    if vc.spec.keys.is_none() {
        generated.push((API_KEY_KEY, &creds.api_key));
        generated.push((API_SECRET_KEY, &creds.api_secret));
    }
    if managed {
        generated.push((REDIS_PASSWORD_KEY, &creds.redis_password));
    }
    let credentials_secret = if generated.is_empty() {
        None
    } else {
        Some(secret(vc, credentials_secret_name(cluster), Component::Credentials, generated)?)
    };

    Ok(Stack {
        credentials_secret,
        config_secret,
        redis: managed_redis(vc)?,
        services: services(vc)?,
        pdb: pod_disruption_budget(vc)?,
        ingress: ingress(vc)?,
        network_policies: super::network::network_policies(vc)?,
        admin_binding: super::tenant::admin_binding(vc)?,
        resource_quota: super::quota::resource_quota(vc)?,
        limit_range: super::quota::limit_range(vc)?,
        agent: agent_access(vc)?,
        sfu: sfu_template(vc, &config_name, &config_hash(&rendered), agent_image)?,
        endpoints: endpoints(vc),
        firewall: firewall_rules(vc),
    })
}

fn secret<'a>(
    vc: &VisioCluster,
    name: String,
    component: Component,
    data: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Secret, BuildError> {
    let data: BTreeMap<String, ByteString> =
        data.into_iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect();
    Ok(Secret {
        metadata: child_metadata(vc, name, component)?,
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::labels::{
        owner_reference, standard_labels, CLUSTER_LABEL, COMPONENT_LABEL, INSTANCE_LABEL, MANAGED_BY_LABEL, NAME_LABEL,
        PART_OF_LABEL,
    };
    use crate::builders::livekit_config::LiveKitConfig;
    use crate::builders::testing::{arb_spec, cel_valid, cluster_with, external_redis_spec, test_cluster};
    use proptest::prelude::*;
    use serde_json::json;

    const AGENT_IMAGE: &str = "registry.interieur.gouv.fr/visio-operator:0.1.0";

    fn creds() -> Credentials {
        Credentials {
            api_key: "APIq7Xk2mW9".into(),
            api_secret: "Zq1vB8nR4tY6uI0oP2aS5dF7gH9jK3lM".into(),
            redis_password: "Rp8sN2xV6cB4mQ1wE9rT7yU3iO5pA0sD".into(),
        }
    }
    fn build(vc: &VisioCluster) -> Stack {
        build_stack(vc, &creds(), AGENT_IMAGE).unwrap()
    }
    fn data(s: &Secret, key: &str) -> String {
        String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    /// Checks every object of a stack carries the namespace, the owner reference and the standard labels.
    fn assert_owned_and_labelled(vc: &VisioCluster, stack: &Stack) {
        let owner = owner_reference(vc).unwrap();
        let name = vc.metadata.name.clone().unwrap();
        let mut metas = stack.object_metas();
        metas.push(("Pod(template)", &stack.sfu.pod.metadata));
        for (kind, meta) in metas {
            assert_eq!(meta.namespace.as_deref(), vc.metadata.namespace.as_deref(), "{kind} {:?}", meta.name);
            assert_eq!(meta.owner_references.as_ref(), Some(&vec![owner.clone()]), "{kind} {:?}", meta.name);
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels.get(INSTANCE_LABEL), Some(&name), "{kind}");
            assert_eq!(labels.get(CLUSTER_LABEL), Some(&name), "{kind}");
            assert_eq!(labels.get(MANAGED_BY_LABEL).map(String::as_str), Some("visio-operator"), "{kind}");
            assert_eq!(labels.get(PART_OF_LABEL).map(String::as_str), Some("visio"), "{kind}");
            assert!(matches!(labels.get(NAME_LABEL).map(String::as_str), Some("livekit" | "redis")), "{kind}");
            assert!(labels.contains_key(COMPONENT_LABEL), "{kind}");
        }
    }

    #[test]
    fn default_stack_objects() {
        let vc = test_cluster();
        let stack = build(&vc);
        let objects: Vec<_> = stack.object_metas().into_iter().map(|(k, m)| (k, m.name.clone().unwrap())).collect();
        let expected = [
            ("Secret", "visio-credentials"),
            ("Secret", "visio-livekit-config"),
            ("ServiceAccount", "visio-sfu-agent"),
            ("Role", "visio-sfu-agent"),
            ("RoleBinding", "visio-sfu-agent"),
            ("Deployment", "visio-redis"),
            ("Service", "visio-redis"),
            ("Service", "visio-signaling"),
            ("Service", "visio-turn"),
            ("PodDisruptionBudget", "visio-sfu"),
            ("NetworkPolicy", "visio-sfu"),
            ("NetworkPolicy", "visio-redis"),
        ];
        let expected: Vec<_> = expected.iter().map(|(k, n)| (*k, n.to_string())).collect();
        assert_eq!(objects, expected);
        assert_owned_and_labelled(&vc, &stack);
    }

    #[test]
    fn full_stack_objects_are_owned_and_labelled() {
        let vc = cluster_with(json!({
            "sfu": {"network": {"mode": "podNetwork"}},
            "turn": {"domain": "turn.interieur.gouv.fr", "tlsSecretName": "turn-cert"},
            "signaling": {"host": "visio.interieur.gouv.fr", "ingressClassName": "nginx", "tlsSecretName": "visio-tls"}
        }));
        let stack = build(&vc);
        assert!(stack.ingress.is_some());
        assert_eq!(stack.services.len(), 3);
        assert_owned_and_labelled(&vc, &stack);
    }

    #[test]
    fn quota_and_limits_come_first_owned_and_labelled() {
        let vc = cluster_with(json!({"tenant": {"displayName": "Intérieur",
            "quota": {"hard": {"pods": "20"}}, "limits": {"defaultRequest": {"cpu": "100m"}}}}));
        let stack = build(&vc);
        let objects: Vec<_> = stack.object_metas().into_iter().map(|(k, m)| (k, m.name.clone().unwrap())).collect();
        assert_eq!(objects[0], ("LimitRange", "visio-limits".to_string()));
        assert_eq!(objects[1], ("ResourceQuota", "visio-quota".to_string()));
        assert_owned_and_labelled(&vc, &stack);
    }

    #[test]
    fn secrets_have_the_right_components() {
        let vc = test_cluster();
        let stack = build(&vc);
        assert_eq!(stack.config_secret.metadata.labels.as_ref().unwrap(), &standard_labels(&vc, Component::Config));
        let creds_secret = stack.credentials_secret.as_ref().unwrap();
        assert_eq!(creds_secret.metadata.labels.as_ref().unwrap(), &standard_labels(&vc, Component::Credentials));
        assert_eq!(creds_secret.type_.as_deref(), Some("Opaque"));
        assert!(creds_secret.string_data.is_none(), "data, not stringData: server-side apply keeps it stable");
    }

    #[test]
    fn config_secret_holds_the_rendered_config() {
        let stack = build(&test_cluster());
        assert_eq!(stack.config_secret.metadata.name.as_deref(), Some("visio-livekit-config"));
        let data = stack.config_secret.data.as_ref().unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["livekit.yaml"]);
        let cfg: LiveKitConfig =
            serde_norway::from_str(&String::from_utf8(data["livekit.yaml"].0.clone()).unwrap()).unwrap();
        assert_eq!(cfg.redis.address, "visio-redis.mininterieur.svc:6379");
        assert_eq!(cfg.redis.password.0, creds().redis_password);
        assert_eq!(cfg.keys[&creds().api_key].0, creds().api_secret);
        assert_eq!(cfg.room.empty_timeout, 300);
        assert_eq!(cfg.room.departure_timeout, 20);
        assert!(cfg.turn.enabled);
    }

    #[test]
    fn generated_credentials_are_kept() {
        let stack = build(&test_cluster());
        let s = stack.credentials_secret.as_ref().unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("visio-credentials"));
        assert_eq!(data(s, "apiKey"), creds().api_key);
        assert_eq!(data(s, "apiSecret"), creds().api_secret);
        assert_eq!(data(s, "redisPassword"), creds().redis_password);
        assert_eq!(s.data.as_ref().unwrap().len(), 3);
    }

    #[test]
    fn tenant_keys_are_not_copied() {
        let stack = build(&cluster_with(json!({"keys": {"secretName": "cles-livekit"}})));
        let s = stack.credentials_secret.as_ref().unwrap();
        assert_eq!(s.data.as_ref().unwrap().keys().collect::<Vec<_>>(), ["redisPassword"]);
    }

    #[test]
    fn nothing_generated_means_no_credentials_secret() {
        let vc = cluster_with(json!({"keys": {"secretName": "cles-livekit"}, "redis": external_redis_spec()}));
        assert!(build(&vc).credentials_secret.is_none());
        let vc = cluster_with(json!({"redis": external_redis_spec()}));
        let s = build(&vc).credentials_secret.unwrap();
        let mut keys: Vec<_> = s.data.as_ref().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["apiKey", "apiSecret"]);
    }

    #[test]
    fn external_redis_has_no_redis_objects_and_its_own_address() {
        let vc = cluster_with(json!({"redis": external_redis_spec()}));
        let mut c = creds();
        c.redis_password = "mot-de-passe-partage".into();
        let stack = build_stack(&vc, &c, AGENT_IMAGE).unwrap();
        assert!(stack.redis.is_none());
        assert!(stack.object_metas().iter().all(|(_, m)| m.name.as_deref() != Some("visio-redis")));
        let cfg: LiveKitConfig = serde_norway::from_str(&data(&stack.config_secret, "livekit.yaml")).unwrap();
        assert_eq!(cfg.redis.address, "redis.partage.svc:6380");
        assert_eq!(cfg.redis.password.0, "mot-de-passe-partage");
    }

    #[test]
    fn external_redis_without_password_is_fine() {
        let vc = cluster_with(json!({"redis": {"mode": "external", "external": {"address": "redis:6379"}}}));
        let mut c = creds();
        c.redis_password.clear();
        assert!(build_stack(&vc, &c, AGENT_IMAGE).is_ok());
    }

    #[test]
    fn managed_redis_needs_a_password() {
        let mut c = creds();
        c.redis_password.clear();
        let err = build_stack(&test_cluster(), &c, AGENT_IMAGE).unwrap_err();
        assert_eq!(err, BuildError::MissingCredential { field: "credentials.redisPassword" });
        assert_eq!(err.label(), "missing_credentials");
    }

    #[test]
    fn sfu_pods_use_the_config_secret_and_its_hash() {
        let stack = build(&test_cluster());
        let spec = stack.sfu.pod.spec.as_ref().unwrap();
        let vol = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "config").unwrap();
        assert_eq!(vol.secret.as_ref().unwrap().secret_name.as_deref(), Some("visio-livekit-config"));
        let annotation = &stack.sfu.pod.metadata.annotations.as_ref().unwrap()["visio.io/config-hash"];
        assert_eq!(annotation, &config_hash(&data(&stack.config_secret, "livekit.yaml")));
        assert_eq!(spec.service_account_name.as_deref(), stack.agent.service_account.metadata.name.as_deref());
    }

    #[test]
    fn config_change_rolls_the_pods() {
        let a = build(&test_cluster());
        let b = build(&cluster_with(json!({"rooms": {"emptyTimeout": "10m"}})));
        assert_ne!(a.sfu.hash, b.sfu.hash);
        let mut rotated = creds();
        rotated.api_secret = "another-secret-0123456789abcdefghij".into();
        let c = build_stack(&test_cluster(), &rotated, AGENT_IMAGE).unwrap();
        assert_ne!(a.sfu.hash, c.sfu.hash, "a rotated key reaches the pods through a rollout");
    }

    #[test]
    fn same_input_same_stack() {
        assert_eq!(build(&test_cluster()), build(&test_cluster()));
    }

    #[test]
    fn endpoints_and_firewall_are_filled() {
        let stack = build(&test_cluster());
        assert_eq!(stack.endpoints.signaling_url, "wss://visio.interieur.gouv.fr");
        assert!(stack.firewall.iter().any(|r| r.protocol == "UDP" && r.port == 7882));
    }

    #[test]
    fn credentials_debug_hides_values() {
        let c = creds();
        let dbg = format!("{c:?} {c:#?}");
        for secret in [&c.api_key, &c.api_secret, &c.redis_password] {
            assert!(!dbg.contains(secret.as_str()), "{dbg}");
        }
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn stack_debug_hides_values() {
        let c = creds();
        let dbg = format!("{:?}", build(&test_cluster()).sfu);
        for secret in [&c.api_secret, &c.redis_password] {
            assert!(!dbg.contains(secret.as_str()));
        }
    }

    #[test]
    fn no_secret_in_labels_annotations_or_non_secret_objects() {
        let c = creds();
        for vc in [
            test_cluster(),
            cluster_with(
                json!({"sfu": {"network": {"mode": "podNetwork"}}, "signaling": {"host": "h.fr", "ingressClassName": "nginx"}}),
            ),
        ] {
            let stack = build(&vc);
            let mut texts = Vec::new();
            for (kind, meta) in stack.object_metas() {
                texts.push(format!("{kind} {:?} {:?}", meta.labels, meta.annotations));
            }
            texts.push(serde_json::to_string(&stack.sfu.pod).unwrap());
            texts.push(serde_json::to_string(&stack.redis).unwrap());
            texts.push(serde_json::to_string(&stack.services).unwrap());
            texts.push(serde_json::to_string(&stack.pdb).unwrap());
            texts.push(serde_json::to_string(&stack.ingress).unwrap());
            texts.push(serde_json::to_string(&stack.agent.role).unwrap());
            texts.push(serde_json::to_string(&stack.endpoints).unwrap());
            texts.push(serde_json::to_string(&stack.firewall).unwrap());
            for text in &texts {
                for secret in [&c.api_secret, &c.redis_password] {
                    assert!(!text.contains(secret.as_str()), "secret leaked into {text}");
                }
            }
        }
    }

    #[test]
    fn missing_namespace_or_uid_is_an_error_not_a_panic() {
        let mut vc = test_cluster();
        vc.metadata.namespace = None;
        let err = build_stack(&vc, &creds(), AGENT_IMAGE).unwrap_err();
        assert_eq!(err.label(), "missing_namespace");
        let mut vc = test_cluster();
        vc.metadata.uid = None;
        assert_eq!(build_stack(&vc, &creds(), AGENT_IMAGE).unwrap_err().label(), "missing_uid");
        let mut vc = test_cluster();
        vc.metadata.name = Some("a".repeat(60));
        assert_eq!(build_stack(&vc, &creds(), AGENT_IMAGE).unwrap_err().label(), "invalid_name");
    }

    #[test]
    fn errors_name_the_field() {
        let vc = cluster_with(json!({"rooms": {"emptyTimeout": "cinq minutes"}}));
        let err = build_stack(&vc, &creds(), AGENT_IMAGE).unwrap_err();
        assert_eq!(err.label(), "invalid_duration");
        assert!(err.to_string().starts_with("spec.rooms.emptyTimeout: "), "{err}");
        let vc = cluster_with(json!({"upgrade": {"drainTimeout": "trois heures"}}));
        let err = build_stack(&vc, &creds(), AGENT_IMAGE).unwrap_err();
        assert!(err.to_string().starts_with("spec.upgrade.drainTimeout: "), "{err}");
    }

    // ---- property test: arbitrary specs the API accepts never make the builders panic ----
    // (the strategy is shared with the e2e test that sends a sample of the output to the apiserver)

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn build_stack_never_panics_and_owns_everything(patch in arb_spec()) {
            let vc = cluster_with(patch);
            let result = build_stack(&vc, &creds(), AGENT_IMAGE);
            match &result {
                Ok(stack) => {
                    assert_owned_and_labelled(&vc, stack);
                    prop_assert_eq!(stack.sfu.hash.len(), 10);
                    prop_assert_eq!(stack.services[0].metadata.name.as_deref(), Some("visio-signaling"));
                    prop_assert_eq!(stack.redis.is_some(), vc.spec.redis.mode == RedisMode::Managed);
                    prop_assert_eq!(stack.ingress.is_some(), vc.spec.signaling.ingress_class_name.is_some());
                    let spec = stack.sfu.pod.spec.as_ref().unwrap();
                    for c in &spec.containers {
                        let sc = c.security_context.as_ref().unwrap();
                        prop_assert_eq!(sc.run_as_non_root, Some(true));
                        prop_assert_eq!(sc.allow_privilege_escalation, Some(false));
                    }
                    let live = spec.containers[0].liveness_probe.as_ref().unwrap();
                    prop_assert!(live.tcp_socket.is_some() && live.http_get.is_none());
                    // Deterministic.
                    prop_assert_eq!(&build_stack(&vc, &creds(), AGENT_IMAGE).unwrap(), stack);
                }
                Err(e) => {
                    // A spec the API accepts may still be refused, but only for reasons the builders
                    // document: clashing ports, privileged host ports, or what CEL would have refused.
                    prop_assert!(
                        matches!(e.label(), "port_conflict" | "unsupported") || !cel_valid(&vc),
                        "unexpected error {} for {:?}", e, vc.spec
                    );
                    prop_assert!(e.to_string().starts_with("spec."), "{}", e);
                }
            }
        }
    }
}
