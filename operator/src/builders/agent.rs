//! The in-pod agent sidecar (`visio-operator agent`) as the SFU pods and the caption backend pods run it:
//! its container, the API token mounted into it alone, and the ServiceAccount, Role and RoleBinding that
//! let it read and annotate the pods of its namespace.

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeFile, EnvVar, ExecAction, KeyToPath,
    ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, ServiceAccount,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::sfu::{container_security_context, field_env, quantities};

/// Name of the agent sidecar.
pub const AGENT_CONTAINER: &str = "agent";

/// What the agent sidecar needs to write its pod's load: a ServiceAccount, and a Role bound to it that lets
/// it read and patch pods in the namespace. The token is mounted into the agent container only.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentAccess {
    /// `<vc>-sfu-agent`, without automounted token.
    pub service_account: ServiceAccount,
    /// `<vc>-sfu-agent`: get, list, watch, patch on pods.
    pub role: Role,
    /// `<vc>-sfu-agent`: binds the Role to the ServiceAccount.
    pub role_binding: RoleBinding,
}

/// The agent sidecar (`visio-operator agent <args>`), with the pod's name and namespace from the downward API
/// and `env` after them, its exec readiness probe (fails once the pod drains, so the pod leaves every
/// Service's endpoints), small resources, the hardened security context and its own API token.
pub fn agent_container(agent_image: &str, args: Vec<String>, env: Vec<EnvVar>) -> Container {
    Container {
        name: AGENT_CONTAINER.into(),
        image: Some(agent_image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(
            [field_env("POD_NAME", "metadata.name"), field_env("POD_NAMESPACE", "metadata.namespace")]
                .into_iter()
                .chain(env)
                .collect(),
        ),
        // An exec probe: kubelet's httpGet would dial the pod IP, and the agent listens on loopback only.
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(["visio-operator", "agent", "--probe", "readyz"].map(String::from).to_vec()),
            }),
            period_seconds: Some(5),
            timeout_seconds: Some(3),
            failure_threshold: Some(2),
            ..Probe::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "10m"), ("memory", "32Mi")])),
            limits: Some(quantities(&[("memory", "64Mi")])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: "agent-token".into(),
            mount_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Container::default()
    }
}

/// What kubelet would automount, projected into the agent container only.
pub fn agent_token_volume() -> Volume {
    Volume {
        name: "agent-token".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o444),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(3607),
                        audience: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath { key: "ca.crt".into(), path: "ca.crt".into(), mode: None }]),
                        optional: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                api_version: Some("v1".into()),
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
        }),
        ..Volume::default()
    }
}

/// The agent's ServiceAccount, Role and RoleBinding, all with `meta` (its name is theirs): get, list,
/// watch and patch on the pods of the namespace, nothing else.
pub fn access(meta: ObjectMeta) -> AgentAccess {
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.clone();
    AgentAccess {
        service_account: ServiceAccount {
            metadata: meta.clone(),
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        role: Role {
            metadata: meta.clone(),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["pods".into()]),
                verbs: ["get", "list", "watch", "patch"].map(String::from).to_vec(),
                ..PolicyRule::default()
            }]),
        },
        role_binding: RoleBinding {
            metadata: meta,
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: name.clone(),
            },
            subjects: Some(vec![Subject { kind: "ServiceAccount".into(), name, namespace, api_group: None }]),
        },
    }
}
