//! The SFU pod template of one VisioCluster (its agent sidecar is `agent`'s).
//!
//! There is no Deployment: the controller creates and deletes SFU pods itself from [`SfuTemplate`], because
//! it orders rollouts and drains (new pods first, then old ones drain until empty or past `drainTimeout`).
//! A pod whose `visio.io/template-hash` label differs from [`SfuTemplate::hash`] is outdated.
//!
//! Each pod runs two containers: `livekit` (the SFU) and `agent` (`visio-operator agent`, which reads the
//! SFU's load from its Prometheus endpoint on localhost and writes it onto its own pod).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    ObjectFieldSelector, Pod, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Sysctl,
    TCPSocketAction, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::agent::{agent_container, agent_token_volume};
pub use super::agent::{AgentAccess, AGENT_CONTAINER};
use super::labels::{
    agent_name, child_metadata, cluster_name, cluster_namespace, owner_reference, selector_labels, sfu_name,
    standard_labels, Component, CONFIG_HASH_ANNOTATION, TEMPLATE_HASH_LABEL, VERSION_LABEL,
};
use super::livekit_config::{listeners, CONFIG_DIR, CONFIG_FILE, METRICS_PORT, SIGNALING_PORT, TURN_TLS_DIR};
use super::{duration_seconds, short_hash, BuildError};
use crate::api::visiocluster::{NetworkMode, LIVEKIT_IMAGE};
use crate::api::VisioCluster;
use crate::pod_protocol;

/// Name of the LiveKit container.
pub const LIVEKIT_CONTAINER: &str = "livekit";
/// User and group both containers run as.
pub const SFU_UID: i64 = 1000;
/// Added to `spec.upgrade.drainTimeout` for the pods' termination grace period.
pub const GRACE_MARGIN_SECONDS: i64 = 60;

/// The desired SFU pod, from which the controller creates every SFU pod of the VisioCluster.
#[derive(Clone, Debug, PartialEq)]
pub struct SfuTemplate {
    /// The pod to create. Its metadata has no name (`generateName` is `<vc>-sfu-`), and carries the
    /// standard labels, [`VERSION_LABEL`], [`TEMPLATE_HASH_LABEL`], the config hash annotation, the namespace
    /// and the owner reference. The controller adds `visio.io/serving` and `visio.io/in-use` itself.
    pub pod: Pod,
    /// First 10 hex characters of the SHA-256 of the pod spec (without the agent image) and the config hash.
    pub hash: String,
    /// LiveKit version the pod runs (`spec.version`).
    pub version: String,
}

/// The SFU pod template of `vc`. `config_secret_name` is the Secret holding `livekit.yaml`, `config_hash`
/// the hash of its content (a change rolls the pods), `agent_image` the operator's own image.
pub fn sfu_template(
    vc: &VisioCluster,
    config_secret_name: &str,
    config_hash: &str,
    agent_image: &str,
) -> Result<SfuTemplate, BuildError> {
    let cluster = cluster_name(vc)?;
    let spec = &vc.spec;
    if config_secret_name.is_empty() {
        return Err(BuildError::InvalidValue { field: "config secret name", message: "is empty".into() });
    }
    if agent_image.is_empty() {
        return Err(BuildError::InvalidValue { field: "agent image", message: "is empty".into() });
    }
    if !is_label_value(&spec.version) {
        return Err(BuildError::InvalidValue {
            field: "spec.version",
            message: format!("{:?} is not a version like v1.9.4", spec.version),
        });
    }
    let host_network = spec.sfu.network.mode == NetworkMode::HostNetwork;
    // The API keys live in the tenant's own Secret when it names one, in the generated one otherwise.
    let generated_keys = super::labels::credentials_secret_name(cluster);
    let keys_secret = spec.keys.as_ref().map(|k| k.secret_name.as_str()).unwrap_or(&generated_keys);
    let listeners = listeners(vc)?;
    let drain = duration_seconds("spec.upgrade.drainTimeout", &spec.upgrade.drain_timeout)?;
    let grace = i64::try_from(drain)
        .ok()
        .and_then(|d| d.checked_add(GRACE_MARGIN_SECONDS))
        .ok_or(BuildError::InvalidValue { field: "spec.upgrade.drainTimeout", message: "is too long".into() })?;

    let ports = listeners
        .iter()
        .map(|l| ContainerPort {
            name: Some(l.name.into()),
            container_port: i32::from(l.port),
            // With hostNetwork the pod binds the node's ports: declaring them lets the scheduler keep two
            // SFU pods (or anything else using them) off the same node.
            host_port: host_network.then_some(i32::from(l.port)),
            protocol: Some(l.protocol.as_str().into()),
            ..ContainerPort::default()
        })
        .collect();

    let turn_tls = spec.turn.tls_secret_name.as_ref().filter(|_| spec.turn.enabled);
    let mut livekit_mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() },
    ];
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(config_secret_name.into()),
                items: Some(vec![KeyToPath { key: CONFIG_FILE.into(), path: CONFIG_FILE.into(), mode: None }]),
                // Readable by the pod's group (fsGroup), by nobody else.
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Volume::default()
        },
        super::empty_dir("tmp", "256Mi"),
        agent_token_volume(),
    ];
    if let Some(secret) = turn_tls {
        livekit_mounts.push(VolumeMount {
            name: "turn-tls".into(),
            mount_path: TURN_TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "turn-tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![
                    KeyToPath { key: "tls.crt".into(), path: "tls.crt".into(), mode: None },
                    KeyToPath { key: "tls.key".into(), path: "tls.key".into(), mode: None },
                ]),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Volume::default()
        });
    }

    // NODE_IP is LiveKit's `--node-ip` flag: the address it falls back to when external IP discovery fails.
    // Nothing else goes into LiveKit's env, since it reads other variables (REDIS_HOST, UDP_PORT, ...) as
    // flags that override the config.
    let env = spec.sfu.network.advertises_node_address().then(|| vec![field_env("NODE_IP", "status.hostIP")]);

    let livekit = Container {
        name: LIVEKIT_CONTAINER.into(),
        image: Some(format!("{}:{}", spec.sfu.image.as_deref().unwrap_or(LIVEKIT_IMAGE), spec.version)),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec!["--config".into(), format!("{CONFIG_DIR}/{CONFIG_FILE}")]),
        ports: Some(ports),
        env,
        resources: Some(spec.sfu.resources.clone().unwrap_or_else(default_sfu_resources)),
        // LiveKit answers "Not Ready" on `/` while its stats in Redis are stale: right for readiness (no new
        // sessions on a node the cluster cannot see).
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/".into()),
                port: IntOrString::Int(i32::from(SIGNALING_PORT)),
                scheme: Some("HTTP".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            success_threshold: Some(1),
            ..Probe::default()
        }),
        // Liveness must not depend on Redis: with the HTTP check, a Redis outage fails liveness on every
        // node at once, every SFU is restarted (SIGTERM starts a drain that never ends) and every meeting is
        // cut (contracts.md). A TCP check only asks whether the process still serves its port.
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(i32::from(SIGNALING_PORT)), host: None }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            timeout_seconds: Some(3),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        security_context: Some(container_security_context()),
        volume_mounts: Some(livekit_mounts),
        ..Container::default()
    };

    let mut agent = agent_container(
        agent_image,
        ["agent", "--backend", "livekit", "--metrics-url"]
            .map(String::from)
            .into_iter()
            .chain([format!("http://127.0.0.1:{METRICS_PORT}/metrics")])
            .chain(agent_placement_args())
            .collect(),
        vec![
            // The agent warns participants and ends sessions through LiveKit's API on loopback.
            secret_env("LIVEKIT_API_KEY", keys_secret, "apiKey"),
            secret_env("LIVEKIT_API_SECRET", keys_secret, "apiSecret"),
        ],
    );
    // LiveKit's own config, so the agent finds the Redis where LiveKit maps rooms to nodes and touches only
    // the rooms hosted on this pod (docs/agent.md, "Which rooms are this pod's").
    agent.volume_mounts.get_or_insert_with(Vec::new).push(agent_config_mount());

    let host_ports_below_1024 = listeners.iter().any(|l| l.port < 1024);
    let scheduling = &spec.sfu.scheduling;
    let pod_spec = PodSpec {
        containers: vec![livekit, agent],
        // The agent drains LiveKit the way LiveKit expects, with a SIGTERM to its process: both containers
        // run as the same user, and share one process namespace.
        share_process_namespace: Some(true),
        host_network: host_network.then_some(true),
        // Host network pods would otherwise resolve with the node's resolver and miss `<vc>-redis.<ns>.svc`.
        dns_policy: host_network.then(|| "ClusterFirstWithHostNet".into()),
        // LiveKit reads some environment variables as flags; Service links would inject more of them.
        enable_service_links: Some(false),
        service_account_name: Some(agent_name(cluster)),
        // The token is projected into the agent container only: LiveKit has no business with the API.
        automount_service_account_token: Some(false),
        restart_policy: Some("Always".into()),
        // The controller deletes an SFU pod only once it is empty or past its drain deadline; this is the
        // backstop for deletions it does not make (kubectl delete, eviction of an idle pod).
        termination_grace_period_seconds: Some(grace),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(SFU_UID),
            run_as_group: Some(SFU_UID),
            fs_group: Some(SFU_UID),
            seccomp_profile: Some(runtime_default()),
            // Lets the non-root SFU bind ports below 1024 (TURN on 443) inside its own network namespace;
            // `listeners` refuses such ports in hostNetwork mode, where this sysctl is not allowed.
            sysctls: (!host_network && host_ports_below_1024)
                .then(|| vec![Sysctl { name: "net.ipv4.ip_unprivileged_port_start".into(), value: "0".into() }]),
            ..PodSecurityContext::default()
        }),
        affinity: Some(scheduling.affinity.clone().unwrap_or_else(|| default_affinity(vc, host_network))),
        node_selector: (!scheduling.node_selector.is_empty()).then(|| scheduling.node_selector.clone()),
        tolerations: (!scheduling.tolerations.is_empty()).then(|| scheduling.tolerations.clone()),
        priority_class_name: scheduling.priority_class_name.clone(),
        volumes: Some(volumes),
        ..PodSpec::default()
    };

    let hash = template_hash(&pod_spec, config_hash)?;
    let mut labels = standard_labels(vc, Component::Sfu);
    labels.insert(VERSION_LABEL.into(), spec.version.clone());
    labels.insert(TEMPLATE_HASH_LABEL.into(), hash.clone());
    let metadata = ObjectMeta {
        generate_name: Some(format!("{}-", sfu_name(cluster))),
        namespace: Some(cluster_namespace(vc)?.to_string()),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([
            (CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string()),
            (pod_protocol::AGENT_ENDS.to_string(), pod_protocol::AGENT_ENDS_OWN_ROOMS.to_string()),
        ])),
        owner_references: Some(vec![owner_reference(vc)?]),
        ..ObjectMeta::default()
    };
    Ok(SfuTemplate { pod: Pod { metadata, spec: Some(pod_spec), status: None }, hash, version: spec.version.clone() })
}

/// The agent's flag naming LiveKit's config file.
const AGENT_CONFIG_FLAG: &str = "--livekit-config";

fn agent_placement_args() -> [String; 2] {
    [AGENT_CONFIG_FLAG.into(), format!("{CONFIG_DIR}/{CONFIG_FILE}")]
}

fn agent_config_mount() -> VolumeMount {
    VolumeMount { name: "config".into(), mount_path: CONFIG_DIR.into(), read_only: Some(true), ..Default::default() }
}

/// The template hash: SHA-256 over the serialized pod spec and the config hash, first 10 hex characters.
/// The agent's image and its view of LiveKit's config (flag and mount, added in 0.2) are left out on
/// purpose: upgrading the operator must not drain every SFU pod of every tenant; pods created afterwards
/// get the new agent, existing ones keep theirs until replaced. Leaving them out keeps the hashes of pods
/// made by earlier releases valid.
fn template_hash(spec: &PodSpec, config_hash: &str) -> Result<String, BuildError> {
    let mut hashed = spec.clone();
    let placement_args = agent_placement_args();
    for c in hashed.containers.iter_mut().filter(|c| c.name == AGENT_CONTAINER) {
        c.image = None;
        if let Some(args) = c.args.as_mut() {
            if let Some(i) = args.windows(2).position(|w| w == placement_args) {
                args.drain(i..i + 2);
            }
        }
        if let Some(mounts) = c.volume_mounts.as_mut() {
            mounts.retain(|m| *m != agent_config_mount());
        }
    }
    let mut bytes = serde_json::to_vec(&hashed)
        .map_err(|e| BuildError::Serialization { what: "SFU pod spec", message: e.to_string() })?;
    bytes.extend_from_slice(b"\nconfig-hash=");
    bytes.extend_from_slice(config_hash.as_bytes());
    Ok(short_hash(&bytes, 10))
}

/// One SFU pod per node: required in hostNetwork mode (two pods would clash on the node's ports), preferred
/// otherwise (losing a node then loses fewer meetings).
/// The SFU agent's ServiceAccount, Role and RoleBinding (`<vc>-sfu-agent`).
pub fn agent_access(vc: &VisioCluster) -> Result<AgentAccess, BuildError> {
    Ok(super::agent::access(child_metadata(vc, agent_name(cluster_name(vc)?), Component::Sfu)?))
}

fn default_affinity(vc: &VisioCluster, host_network: bool) -> Affinity {
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(vc, Component::Sfu)),
            match_expressions: None,
        }),
        topology_key: "kubernetes.io/hostname".into(),
        ..PodAffinityTerm::default()
    };
    let anti = if host_network {
        PodAntiAffinity { required_during_scheduling_ignored_during_execution: Some(vec![term]), ..Default::default() }
    } else {
        PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: term,
            }]),
            ..Default::default()
        }
    };
    Affinity { pod_anti_affinity: Some(anti), ..Affinity::default() }
}

fn default_sfu_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "2"), ("memory", "2Gi")])),
        limits: Some(quantities(&[("memory", "4Gi")])),
        ..ResourceRequirements::default()
    }
}

pub(crate) fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
}

pub(crate) fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.into(), key: key.into(), optional: Some(false) }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: field_path.into(), api_version: Some("v1".into()) }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

pub(crate) fn container_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(SFU_UID),
        run_as_group: Some(SFU_UID),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

pub(crate) fn runtime_default() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }
}

/// A valid Kubernetes label value (at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends).
fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::labels::CLUSTER_LABEL;
    use crate::builders::testing::{cluster_with, test_cluster};
    use serde_json::json;

    const AGENT_IMAGE: &str = "registry.interieur.gouv.fr/visio-operator:0.1.0";

    fn template(vc: &VisioCluster) -> SfuTemplate {
        sfu_template(vc, "visio-livekit-config", "cafe0123456789ab", AGENT_IMAGE).unwrap()
    }
    fn spec(t: &SfuTemplate) -> &PodSpec {
        t.pod.spec.as_ref().unwrap()
    }
    fn container<'a>(t: &'a SfuTemplate, name: &str) -> &'a Container {
        spec(t).containers.iter().find(|c| c.name == name).unwrap()
    }
    fn port<'a>(c: &'a Container, name: &str) -> Option<&'a ContainerPort> {
        c.ports.as_ref().unwrap().iter().find(|p| p.name.as_deref() == Some(name))
    }
    fn pod_network() -> VisioCluster {
        cluster_with(json!({"sfu": {"network": {"mode": "podNetwork"}}}))
    }

    #[test]
    fn two_containers_livekit_then_agent() {
        let t = template(&test_cluster());
        let names: Vec<_> = spec(&t).containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["livekit", "agent"]);
    }

    #[test]
    fn agent_can_drain_livekit_and_reach_its_api() {
        let t = template(&test_cluster());
        assert_eq!(spec(&t).share_process_namespace, Some(true), "the agent signals LiveKit's process");
        let agent = container(&t, AGENT_CONTAINER);
        let env = agent.env.as_ref().unwrap();
        let secret_of = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.secret_key_ref.as_ref())
                .map(|r| (r.name.clone(), r.key.clone()))
        };
        assert_eq!(secret_of("LIVEKIT_API_KEY"), Some(("visio-credentials".into(), "apiKey".into())));
        assert_eq!(secret_of("LIVEKIT_API_SECRET"), Some(("visio-credentials".into(), "apiSecret".into())));
        assert!(env.iter().all(|e| e.value.is_none() || !e.name.contains("SECRET")), "no secret value inline");
        let probe = agent.readiness_probe.as_ref().and_then(|p| p.exec.as_ref()).expect("exec readiness probe");
        assert_eq!(probe.command.as_deref().unwrap()[1..], ["agent", "--probe", "readyz"].map(String::from));
        // LiveKit's own container gets no credentials in its environment.
        assert!(container(&t, LIVEKIT_CONTAINER).env.iter().flatten().all(|e| !e.name.starts_with("LIVEKIT_API")));
        // A tenant that brings its own keys: the agent reads them from the tenant's Secret.
        let own = template(&cluster_with(json!({"keys": {"secretName": "ministry-keys"}})));
        let env = container(&own, AGENT_CONTAINER).env.clone().unwrap();
        let key = env.iter().find(|e| e.name == "LIVEKIT_API_KEY").unwrap();
        assert_eq!(key.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name, "ministry-keys");
    }

    #[test]
    fn livekit_image_and_args() {
        let t = template(&test_cluster());
        let c = container(&t, "livekit");
        assert_eq!(c.image.as_deref(), Some("livekit/livekit-server:v1.9.4"));
        assert_eq!(c.args.as_deref(), Some(&["--config".to_string(), "/etc/livekit/livekit.yaml".to_string()][..]));
        assert_eq!(t.version, "v1.9.4");
    }

    #[test]
    fn image_override_keeps_the_version_tag() {
        let vc =
            cluster_with(json!({"version": "v1.10.0", "sfu": {"image": "registry.gouv.fr/livekit/livekit-server"}}));
        let t = template(&vc);
        assert_eq!(container(&t, "livekit").image.as_deref(), Some("registry.gouv.fr/livekit/livekit-server:v1.10.0"));
        assert_eq!(t.version, "v1.10.0");
        assert_eq!(t.pod.metadata.labels.as_ref().unwrap()[VERSION_LABEL], "v1.10.0");
    }

    #[test]
    fn ports_in_host_network_mode() {
        let t = template(&test_cluster());
        let c = container(&t, "livekit");
        let expect = [
            ("http", 7880, "TCP"),
            ("metrics", 6789, "TCP"),
            ("rtc-tcp", 7881, "TCP"),
            ("rtc-udp", 7882, "UDP"),
            ("turn-udp", 3478, "UDP"),
        ];
        assert_eq!(c.ports.as_ref().unwrap().len(), expect.len());
        for (name, number, proto) in expect {
            let p = port(c, name).unwrap_or_else(|| panic!("port {name}"));
            assert_eq!(p.container_port, number, "{name}");
            assert_eq!(p.host_port, Some(number), "{name}");
            assert_eq!(p.protocol.as_deref(), Some(proto), "{name}");
        }
        assert!(port(c, "turn-tls").is_none());
    }

    #[test]
    fn ports_in_pod_network_mode_have_no_host_port() {
        let t = template(&pod_network());
        for p in container(&t, "livekit").ports.as_ref().unwrap() {
            assert_eq!(p.host_port, None, "{:?}", p.name);
        }
    }

    #[test]
    fn turn_tls_port_and_certificate_mount() {
        let vc = cluster_with(
            json!({"turn": {"domain": "turn.interieur.gouv.fr", "tlsSecretName": "turn-cert", "udp": false, "tlsPort": 5349}}),
        );
        let t = template(&vc);
        let c = container(&t, "livekit");
        let tls = port(c, "turn-tls").unwrap();
        assert_eq!((tls.container_port, tls.protocol.as_deref()), (5349, Some("TCP")));
        assert!(port(c, "turn-udp").is_none());
        let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "turn-tls").unwrap();
        assert_eq!(mount.mount_path, "/etc/livekit-turn-tls");
        assert_eq!(mount.read_only, Some(true));
        let vol = spec(&t).volumes.as_ref().unwrap().iter().find(|v| v.name == "turn-tls").unwrap();
        assert_eq!(vol.secret.as_ref().unwrap().secret_name.as_deref(), Some("turn-cert"));
    }

    #[test]
    fn turn_disabled_has_no_turn_ports_or_mounts() {
        let vc = cluster_with(json!({"turn": {"enabled": false, "domain": "t.fr", "tlsSecretName": "turn-cert"}}));
        let t = template(&vc);
        let c = container(&t, "livekit");
        assert!(port(c, "turn-udp").is_none());
        assert!(port(c, "turn-tls").is_none());
        assert!(spec(&t).volumes.as_ref().unwrap().iter().all(|v| v.name != "turn-tls"));
    }

    #[test]
    fn readiness_is_http_and_liveness_is_tcp() {
        let t = template(&test_cluster());
        let c = container(&t, "livekit");
        let ready = c.readiness_probe.as_ref().unwrap();
        let get = ready.http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some("/"));
        assert_eq!(get.port, IntOrString::Int(7880));
        let live = c.liveness_probe.as_ref().unwrap();
        assert!(live.http_get.is_none(), "liveness must not use the Redis-dependent HTTP check");
        assert!(live.exec.is_none());
        assert_eq!(live.tcp_socket.as_ref().unwrap().port, IntOrString::Int(7880));
    }

    #[test]
    fn config_secret_is_mounted_read_only() {
        let t = sfu_template(&test_cluster(), "other-config", "h", AGENT_IMAGE).unwrap();
        let c = container(&t, "livekit");
        let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "config").unwrap();
        assert_eq!(mount.mount_path, "/etc/livekit");
        assert_eq!(mount.read_only, Some(true));
        let vol = spec(&t).volumes.as_ref().unwrap().iter().find(|v| v.name == "config").unwrap();
        let secret = vol.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("other-config"));
        assert_eq!(secret.items.as_ref().unwrap()[0].key, "livekit.yaml");
        assert_eq!(secret.default_mode, Some(0o440));
    }

    #[test]
    fn tmp_is_an_empty_dir() {
        let t = template(&test_cluster());
        let c = container(&t, "livekit");
        let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.mount_path == "/tmp").unwrap();
        let vol = spec(&t).volumes.as_ref().unwrap().iter().find(|v| v.name == mount.name).unwrap();
        assert!(vol.empty_dir.is_some());
    }

    #[test]
    fn host_network_mode() {
        let t = template(&test_cluster());
        let s = spec(&t);
        assert_eq!(s.host_network, Some(true));
        assert_eq!(s.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        let env = container(&t, "livekit").env.as_ref().unwrap();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].name, "NODE_IP");
        let field = env[0].value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
        assert_eq!(field.field_path, "status.hostIP");
    }

    #[test]
    fn node_ip_only_when_the_pod_advertises_its_nodes_address() {
        let has_node_ip =
            |vc: &VisioCluster| container(&template(vc), "livekit").env.iter().flatten().any(|e| e.name == "NODE_IP");
        assert!(has_node_ip(&test_cluster()));
        // LiveKit's --node-ip flag (from NODE_IP) would override the fixed address and the STUN answer.
        assert!(!has_node_ip(&cluster_with(json!({"sfu": {"network": {"externalAddress": "203.0.113.10"}}}))));
        assert!(!has_node_ip(&cluster_with(json!({"sfu": {"network": {"stunServers": ["stun.gouv.fr:3478"]}}}))));
    }

    #[test]
    fn pod_network_mode() {
        let t = template(&pod_network());
        let s = spec(&t);
        assert_ne!(s.host_network, Some(true));
        assert!(s.dns_policy.is_none());
        assert!(container(&t, "livekit").env.is_none());
        assert!(s.security_context.as_ref().unwrap().sysctls.is_none());
    }

    #[test]
    fn privileged_turn_port_in_pod_network_gets_the_sysctl() {
        let vc = cluster_with(json!({
            "sfu": {"network": {"mode": "podNetwork"}},
            "turn": {"domain": "t.fr", "tlsSecretName": "t", "udp": false, "tlsPort": 443}
        }));
        let t = template(&vc);
        let sysctls = spec(&t).security_context.as_ref().unwrap().sysctls.clone().unwrap();
        assert_eq!(sysctls[0].name, "net.ipv4.ip_unprivileged_port_start");
        assert_eq!(sysctls[0].value, "0");
    }

    #[test]
    fn privileged_port_in_host_network_is_refused() {
        let vc = cluster_with(json!({"turn": {"udpPort": 443}}));
        let err = sfu_template(&vc, "c", "h", AGENT_IMAGE).unwrap_err();
        assert_eq!(err.label(), "unsupported");
    }

    #[test]
    fn no_service_links_and_no_token_for_livekit() {
        let t = template(&test_cluster());
        let s = spec(&t);
        assert_eq!(s.enable_service_links, Some(false));
        assert_eq!(s.automount_service_account_token, Some(false));
        assert_eq!(s.service_account_name.as_deref(), Some("visio-sfu-agent"));
        let livekit = container(&t, "livekit");
        assert!(livekit.volume_mounts.as_ref().unwrap().iter().all(|m| m.name != "agent-token"));
        let agent = container(&t, "agent");
        let mount = agent.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "agent-token").unwrap();
        assert_eq!(mount.mount_path, "/var/run/secrets/kubernetes.io/serviceaccount");
        assert_eq!(mount.read_only, Some(true));
        let vol = s.volumes.as_ref().unwrap().iter().find(|v| v.name == "agent-token").unwrap();
        let sources = vol.projected.as_ref().unwrap().sources.as_ref().unwrap();
        assert_eq!(sources[0].service_account_token.as_ref().unwrap().path, "token");
        assert_eq!(sources[1].config_map.as_ref().unwrap().name, "kube-root-ca.crt");
        assert!(sources[2].downward_api.is_some());
    }

    #[test]
    fn termination_grace_is_drain_timeout_plus_a_minute() {
        assert_eq!(spec(&template(&test_cluster())).termination_grace_period_seconds, Some(3 * 3600 + 60));
        let vc = cluster_with(json!({"upgrade": {"drainTimeout": "90m", "warnBefore": "5m"}}));
        assert_eq!(spec(&template(&vc)).termination_grace_period_seconds, Some(5400 + 60));
    }

    #[test]
    fn invalid_drain_timeout_is_an_error() {
        let vc = cluster_with(json!({"upgrade": {"drainTimeout": "3 hours"}}));
        let err = sfu_template(&vc, "c", "h", AGENT_IMAGE).unwrap_err();
        assert_eq!(err.label(), "invalid_duration");
        assert!(err.to_string().starts_with("spec.upgrade.drainTimeout: "));
    }

    #[test]
    fn every_container_is_hardened() {
        for vc in [test_cluster(), pod_network()] {
            let t = template(&vc);
            for c in &spec(&t).containers {
                let sc = c.security_context.as_ref().unwrap_or_else(|| panic!("{} has a security context", c.name));
                assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
                assert_eq!(sc.run_as_user, Some(1000), "{}", c.name);
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
                assert_ne!(sc.privileged, Some(true), "{}", c.name);
                let caps = sc.capabilities.as_ref().unwrap();
                assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]), "{}", c.name);
                assert!(caps.add.is_none(), "{}", c.name);
                assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault", "{}", c.name);
            }
            let psc = spec(&t).security_context.as_ref().unwrap();
            assert_eq!(psc.run_as_non_root, Some(true));
            assert_eq!(psc.run_as_user, Some(1000));
            assert_eq!(psc.fs_group, Some(1000));
            assert_eq!(psc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        }
    }

    #[test]
    fn default_resources() {
        let t = template(&test_cluster());
        let r = container(&t, "livekit").resources.as_ref().unwrap();
        let requests = r.requests.as_ref().unwrap();
        assert_eq!(requests["cpu"], Quantity("2".into()));
        assert_eq!(requests["memory"], Quantity("2Gi".into()));
        let limits = r.limits.as_ref().unwrap();
        assert_eq!(limits["memory"], Quantity("4Gi".into()));
        assert!(!limits.contains_key("cpu"), "no CPU limit: throttling an SFU degrades every meeting on it");
    }

    #[test]
    fn custom_resources_replace_the_defaults() {
        let vc = cluster_with(json!({"sfu": {"resources": {"requests": {"cpu": "4", "memory": "8Gi"}}}}));
        let t = template(&vc);
        let r = container(&t, "livekit").resources.as_ref().unwrap();
        assert_eq!(r.requests.as_ref().unwrap()["cpu"], Quantity("4".into()));
        assert!(r.limits.is_none());
    }

    #[test]
    fn agent_sidecar() {
        let t = template(&test_cluster());
        let a = container(&t, "agent");
        assert_eq!(a.image.as_deref(), Some(AGENT_IMAGE));
        assert_eq!(
            a.args.as_ref().unwrap(),
            &[
                "agent",
                "--backend",
                "livekit",
                "--metrics-url",
                "http://127.0.0.1:6789/metrics",
                "--livekit-config",
                "/etc/livekit/livekit.yaml"
            ]
        );
        let env = a.env.as_ref().unwrap();
        let field = |n: &str| {
            env.iter().find(|e| e.name == n).unwrap().value_from.as_ref().unwrap().field_ref.clone().unwrap().field_path
        };
        assert_eq!(field("POD_NAME"), "metadata.name");
        assert_eq!(field("POD_NAMESPACE"), "metadata.namespace");
        let r = a.resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap()["memory"], Quantity("64Mi".into()));
        assert!(a.ports.is_none());
    }

    #[test]
    fn empty_arguments_are_refused() {
        assert_eq!(sfu_template(&test_cluster(), "c", "h", "").unwrap_err().label(), "invalid_value");
        assert_eq!(sfu_template(&test_cluster(), "", "h", AGENT_IMAGE).unwrap_err().label(), "invalid_value");
    }

    #[test]
    fn default_anti_affinity_is_required_on_host_network() {
        let t = template(&test_cluster());
        let anti = spec(&t).affinity.as_ref().unwrap().pod_anti_affinity.as_ref().unwrap();
        let terms = anti.required_during_scheduling_ignored_during_execution.as_ref().unwrap();
        assert_eq!(terms[0].topology_key, "kubernetes.io/hostname");
        assert_eq!(
            terms[0].label_selector.as_ref().unwrap().match_labels.as_ref().unwrap(),
            &selector_labels(&test_cluster(), Component::Sfu)
        );
        assert!(anti.preferred_during_scheduling_ignored_during_execution.is_none());
    }

    #[test]
    fn default_anti_affinity_is_preferred_on_pod_network() {
        let t = template(&pod_network());
        let anti = spec(&t).affinity.as_ref().unwrap().pod_anti_affinity.as_ref().unwrap();
        assert!(anti.required_during_scheduling_ignored_during_execution.is_none());
        let terms = anti.preferred_during_scheduling_ignored_during_execution.as_ref().unwrap();
        assert_eq!(terms[0].weight, 100);
        assert_eq!(terms[0].pod_affinity_term.topology_key, "kubernetes.io/hostname");
    }

    #[test]
    fn scheduling_comes_from_the_spec() {
        let vc = cluster_with(json!({"sfu": {"scheduling": {
            "nodeSelector": {"pool": "interieur"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["paris"]}]}
            ]}}},
            "priorityClassName": "visio-critical"
        }}}));
        let t = template(&vc);
        let s = spec(&t);
        assert_eq!(s.node_selector.as_ref().unwrap()["pool"], "interieur");
        assert_eq!(s.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dedicated"));
        let affinity = s.affinity.as_ref().unwrap();
        assert!(affinity.node_affinity.is_some());
        assert!(affinity.pod_anti_affinity.is_none(), "a user affinity replaces the default");
        assert_eq!(s.priority_class_name.as_deref(), Some("visio-critical"));
    }

    #[test]
    fn empty_scheduling_leaves_fields_unset() {
        let s = template(&test_cluster()).pod.spec.unwrap();
        assert!(s.node_selector.is_none());
        assert!(s.tolerations.is_none());
        assert!(s.priority_class_name.is_none());
    }

    #[test]
    fn metadata_labels_annotations_owner() {
        let vc = test_cluster();
        let t = template(&vc);
        let meta = &t.pod.metadata;
        assert!(meta.name.is_none());
        assert_eq!(meta.generate_name.as_deref(), Some("visio-sfu-"));
        assert_eq!(meta.namespace.as_deref(), Some("mininterieur"));
        assert_eq!(meta.owner_references.as_ref().unwrap(), &vec![owner_reference(&vc).unwrap()]);
        let labels = meta.labels.as_ref().unwrap();
        for (k, v) in standard_labels(&vc, Component::Sfu) {
            assert_eq!(labels.get(&k), Some(&v), "{k}");
        }
        assert_eq!(labels[CLUSTER_LABEL], "visio");
        assert_eq!(labels[VERSION_LABEL], "v1.9.4");
        assert_eq!(labels[TEMPLATE_HASH_LABEL], t.hash);
        assert!(!labels.contains_key("visio.io/serving"), "the controller owns the serving label");
        assert!(!labels.contains_key("visio.io/in-use"), "the controller owns the in-use label");
        assert_eq!(meta.annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION], "cafe0123456789ab");
        assert_eq!(meta.annotations.as_ref().unwrap()[pod_protocol::AGENT_ENDS], "own-rooms");
    }

    #[test]
    fn hash_is_ten_hex_chars_and_deterministic() {
        let a = template(&test_cluster());
        let b = template(&test_cluster());
        assert_eq!(a.hash.len(), 10);
        assert!(a.hash.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(a.hash, b.hash);
        assert_eq!(a, b);
    }

    #[test]
    fn hash_covers_the_spec_not_the_metadata() {
        let base = template(&test_cluster()).hash;
        let mut renamed = test_cluster();
        renamed.metadata.uid = Some("another-uid".into());
        renamed.metadata.generation = Some(7);
        renamed.spec.tenant.contact = Some("dnum@interieur.gouv.fr".into());
        assert_eq!(template(&renamed).hash, base);
    }

    #[test]
    fn hash_changes_with_what_the_pod_runs() {
        let base = template(&test_cluster()).hash;
        let changed = [
            cluster_with(json!({"version": "v1.9.5"})),
            cluster_with(json!({"sfu": {"resources": {"requests": {"cpu": "3"}}}})),
            cluster_with(json!({"sfu": {"image": "mirror.gouv.fr/livekit-server"}})),
            cluster_with(json!({"sfu": {"network": {"udpPort": 7890}}})),
            cluster_with(json!({"upgrade": {"drainTimeout": "4h"}})),
            cluster_with(json!({"sfu": {"scheduling": {"nodeSelector": {"pool": "b"}}}})),
            cluster_with(json!({"turn": {"enabled": false}})),
        ];
        for vc in &changed {
            assert_ne!(template(vc).hash, base, "{:?}", vc.spec);
        }
        let other_secret = sfu_template(&test_cluster(), "other-config", "cafe0123456789ab", AGENT_IMAGE).unwrap();
        assert_ne!(other_secret.hash, base);
        let other_config = sfu_template(&test_cluster(), "visio-livekit-config", "0000", AGENT_IMAGE).unwrap();
        assert_ne!(other_config.hash, base);
    }

    #[test]
    fn the_agent_reads_livekits_own_config_for_room_placement() {
        let t = template(&test_cluster());
        let agent = container(&t, AGENT_CONTAINER);
        let args = agent.args.as_ref().unwrap();
        let at = args.iter().position(|a| a == "--livekit-config").expect("--livekit-config");
        assert_eq!(args[at + 1], "/etc/livekit/livekit.yaml");
        let mount = agent.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "config").unwrap();
        assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/etc/livekit", Some(true)));
    }

    #[test]
    fn hash_is_that_of_the_pods_earlier_releases_made() {
        // The hash of a template without the agent's view of LiveKit's config (as 0.1 built it) is the same:
        // an operator upgrade replaces no SFU pod.
        let t = template(&test_cluster());
        let mut old = spec(&t).clone();
        for c in old.containers.iter_mut().filter(|c| c.name == AGENT_CONTAINER) {
            let args = c.args.as_mut().unwrap();
            let at = args.iter().position(|a| a == "--livekit-config").unwrap();
            args.drain(at..at + 2);
            c.volume_mounts.as_mut().unwrap().retain(|m| m.name != "config");
        }
        assert_ne!(&old, spec(&t));
        assert_eq!(template_hash(&old, "cfg").unwrap(), template_hash(spec(&t), "cfg").unwrap());
    }

    #[test]
    fn hash_ignores_the_agent_image() {
        let a = sfu_template(&test_cluster(), "c", "h", "visio-operator:0.1.0").unwrap();
        let b = sfu_template(&test_cluster(), "c", "h", "visio-operator:0.2.0").unwrap();
        assert_eq!(a.hash, b.hash);
        assert_ne!(container(&a, "agent").image, container(&b, "agent").image);
    }

    #[test]
    fn hash_ignores_autoscaling_and_room_limits_outside_the_config() {
        let base = template(&test_cluster()).hash;
        let vc = cluster_with(
            json!({"autoscaling": {"participantBuffer": 500}, "sfu": {"replicas": {"min": 3, "max": 30}}}),
        );
        assert_eq!(template(&vc).hash, base);
    }

    #[test]
    fn invalid_version_is_refused() {
        let mut vc = test_cluster();
        vc.spec.version = "v1.9.4 ".into();
        assert_eq!(sfu_template(&vc, "c", "h", AGENT_IMAGE).unwrap_err().label(), "invalid_value");
        vc.spec.version = String::new();
        assert!(sfu_template(&vc, "c", "h", AGENT_IMAGE).is_err());
    }

    #[test]
    fn missing_metadata_is_an_error() {
        let mut vc = test_cluster();
        vc.metadata.namespace = None;
        assert_eq!(sfu_template(&vc, "c", "h", AGENT_IMAGE), Err(BuildError::MissingNamespace));
        let mut vc = test_cluster();
        vc.metadata.uid = None;
        assert_eq!(sfu_template(&vc, "c", "h", AGENT_IMAGE), Err(BuildError::MissingUid));
    }

    #[test]
    fn agent_access_objects() {
        let vc = test_cluster();
        let access = agent_access(&vc).unwrap();
        assert_eq!(access.service_account.metadata.name.as_deref(), Some("visio-sfu-agent"));
        assert_eq!(access.service_account.automount_service_account_token, Some(false));
        let rule = &access.role.rules.as_ref().unwrap()[0];
        assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]));
        assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));
        assert_eq!(rule.verbs, ["get", "list", "watch", "patch"]);
        assert_eq!(access.role_binding.role_ref.name, "visio-sfu-agent");
        assert_eq!(access.role_binding.role_ref.kind, "Role");
        let subject = &access.role_binding.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (subject.kind.as_str(), subject.name.as_str(), subject.namespace.as_deref()),
            ("ServiceAccount", "visio-sfu-agent", Some("mininterieur"))
        );
        for meta in [&access.service_account.metadata, &access.role.metadata, &access.role_binding.metadata] {
            assert_eq!(meta.owner_references.as_ref().unwrap(), &vec![owner_reference(&vc).unwrap()]);
            assert_eq!(meta.labels.as_ref().unwrap(), &standard_labels(&vc, Component::Sfu));
            assert_eq!(meta.namespace.as_deref(), Some("mininterieur"));
        }
    }

    #[test]
    fn label_values() {
        for ok in ["v1.9.4", "a", "1.0.0-rc.1", &"a".repeat(63)] {
            assert!(is_label_value(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "a/b", &"a".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }
}
