//! The Redis that ties the SFU nodes of one VisioCluster into one LiveKit cluster: where it is
//! ([`redis_address`]) and, in `managed` mode, the Deployment and Service the operator runs for it.
//!
//! The managed Redis holds only live routing state (node registrations, room placement), so it runs without
//! persistence (`--save "" --appendonly no`) on an emptyDir, with a generated password.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Service,
    ServicePort, ServiceSpec, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{
    child_metadata, cluster_name, credentials_secret_name, redis_name, selector_labels, standard_labels, Component,
};
use super::BuildError;
use crate::api::visiocluster::RedisMode;
use crate::api::VisioCluster;

/// Image of the managed Redis.
pub const REDIS_IMAGE: &str = "redis:7.4-alpine";
/// Redis port.
pub const REDIS_PORT: i32 = 6379;
/// The `redis` user of the official image.
pub const REDIS_UID: i64 = 999;
/// Key of the credentials Secret holding the managed Redis password.
pub const REDIS_PASSWORD_KEY: &str = "redisPassword";

/// `host:port` of the Redis the SFU nodes use: `<vc>-redis.<ns>.svc:6379` when managed,
/// `spec.redis.external.address` when external (empty if that is missing, which the config rendering
/// refuses). The namespace is not checked here; [`super::build_stack`] checks it first.
pub fn redis_address(vc: &VisioCluster) -> String {
    match vc.spec.redis.mode {
        RedisMode::Managed => format!(
            "{}.{}.svc:{REDIS_PORT}",
            redis_name(vc.metadata.name.as_deref().unwrap_or_default()),
            vc.metadata.namespace.as_deref().unwrap_or_default()
        ),
        RedisMode::External => vc.spec.redis.external.as_ref().map(|e| e.address.clone()).unwrap_or_default(),
    }
}

/// The managed Redis Deployment and its ClusterIP Service, or `None` for an external Redis. The password
/// comes from the `redisPassword` key of the credentials Secret (`<vc>-credentials`).
pub fn managed_redis(vc: &VisioCluster) -> Result<Option<(Deployment, Service)>, BuildError> {
    if vc.spec.redis.mode != RedisMode::Managed {
        return Ok(None);
    }
    let cluster = cluster_name(vc)?;
    let name = redis_name(cluster);
    let selector = selector_labels(vc, Component::Redis);

    let password_env = |env_name: &str| EnvVar {
        name: env_name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: credentials_secret_name(cluster),
                key: REDIS_PASSWORD_KEY.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    // `redis-cli` reads the password from REDISCLI_AUTH, which keeps it out of the probe's command line;
    // it exits 0 even on NOAUTH, hence the PONG check.
    let ping = |period: i32, failures: i32| Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".into(), "-c".into(), "redis-cli -h 127.0.0.1 ping | grep -q PONG".into()]),
        }),
        initial_delay_seconds: Some(5),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let resources = vc.spec.redis.resources.clone().unwrap_or_else(|| ResourceRequirements {
        requests: Some(
            [("cpu".to_string(), Quantity("100m".into())), ("memory".to_string(), Quantity("128Mi".into()))].into(),
        ),
        limits: Some([("memory".to_string(), Quantity("512Mi".into()))].into()),
        ..ResourceRequirements::default()
    });
    let container = Container {
        name: "redis".into(),
        image: Some(REDIS_IMAGE.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["redis-server".into()]),
        // Kubernetes expands $(REDIS_PASSWORD) from the container's env; the pod spec itself never holds it.
        args: Some(
            ["--requirepass", "$(REDIS_PASSWORD)", "--save", "", "--appendonly", "no", "--port", "6379"]
                .map(String::from)
                .to_vec(),
        ),
        env: Some(vec![password_env("REDIS_PASSWORD"), password_env("REDISCLI_AUTH")]),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(ping(5, 3)),
        liveness_probe: Some(ping(10, 6)),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(REDIS_UID),
            run_as_group: Some(REDIS_UID),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let scheduling = &vc.spec.sfu.scheduling;
    let pod = PodSpec {
        containers: vec![container],
        // Redis talks to no API and needs no token.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(REDIS_UID),
            run_as_group: Some(REDIS_UID),
            fs_group: Some(REDIS_UID),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        volumes: Some(vec![super::empty_dir("data", "1Gi")]),
        // Redis runs where the SFU runs (a restricted tenant's dedicated nodes), but without the SFU's
        // affinity: it does not compete for the SFU's host ports.
        node_selector: (!scheduling.node_selector.is_empty()).then(|| scheduling.node_selector.clone()),
        tolerations: (!scheduling.tolerations.is_empty()).then(|| scheduling.tolerations.clone()),
        priority_class_name: scheduling.priority_class_name.clone(),
        termination_grace_period_seconds: Some(30),
        ..PodSpec::default()
    };
    let deployment = Deployment {
        metadata: child_metadata(vc, name.clone(), Component::Redis)?,
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            // Never two Redis at once: SFU nodes split between two would form two clusters.
            strategy: Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None }),
            revision_history_limit: Some(3),
            selector: LabelSelector { match_labels: Some(selector.clone()), match_expressions: None },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(standard_labels(vc, Component::Redis)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    let service = Service {
        metadata: child_metadata(vc, name, Component::Redis)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("redis".into()),
                port: REDIS_PORT,
                target_port: Some(IntOrString::String("redis".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    Ok(Some((deployment, service)))
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::labels::{owner_reference, CLUSTER_LABEL};
    use crate::builders::testing::{cluster_with, test_cluster};
    use serde_json::json;

    fn external() -> VisioCluster {
        cluster_with(json!({"redis": {"mode": "external", "external": {
            "address": "redis.partage.svc:6380", "passwordSecret": {"name": "redis-partage", "key": "password"}
        }}}))
    }

    fn managed() -> (Deployment, Service) {
        managed_redis(&test_cluster()).unwrap().unwrap()
    }

    fn container(d: &Deployment) -> &Container {
        &d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
    }

    #[test]
    fn address_of_managed_redis_is_the_service() {
        assert_eq!(redis_address(&test_cluster()), "visio-redis.mininterieur.svc:6379");
    }

    #[test]
    fn address_of_external_redis_comes_from_the_spec() {
        assert_eq!(redis_address(&external()), "redis.partage.svc:6380");
    }

    #[test]
    fn external_mode_builds_nothing() {
        assert_eq!(managed_redis(&external()), Ok(None));
    }

    #[test]
    fn deployment_is_one_recreated_replica() {
        let (d, _) = managed();
        assert_eq!(d.metadata.name.as_deref(), Some("visio-redis"));
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.strategy.as_ref().unwrap().type_.as_deref(), Some("Recreate"));
        let selector = spec.selector.match_labels.as_ref().unwrap();
        let template_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        for (k, v) in selector {
            assert_eq!(template_labels.get(k), Some(v), "template carries selector label {k}");
        }
        assert_eq!(template_labels[CLUSTER_LABEL], "visio");
    }

    #[test]
    fn container_runs_redis_without_persistence_and_with_a_password() {
        let (d, _) = managed();
        let c = container(&d);
        assert_eq!(c.image.as_deref(), Some("redis:7.4-alpine"));
        let args = c.args.as_ref().unwrap();
        let pos = |flag: &str| args.iter().position(|a| a == flag).unwrap();
        assert_eq!(args[pos("--requirepass") + 1], "$(REDIS_PASSWORD)");
        assert_eq!(args[pos("--save") + 1], "");
        assert_eq!(args[pos("--appendonly") + 1], "no");
        let env = c.env.as_ref().unwrap();
        for name in ["REDIS_PASSWORD", "REDISCLI_AUTH"] {
            let var = env.iter().find(|e| e.name == name).unwrap();
            assert!(var.value.is_none(), "{name} must come from the Secret");
            let r = var.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
            assert_eq!(r.name, "visio-credentials");
            assert_eq!(r.key, "redisPassword");
        }
    }

    #[test]
    fn probes_ping_with_the_password_from_env() {
        let (d, _) = managed();
        let c = container(&d);
        for probe in [c.readiness_probe.as_ref().unwrap(), c.liveness_probe.as_ref().unwrap()] {
            let cmd = probe.exec.as_ref().unwrap().command.as_ref().unwrap().join(" ");
            assert!(cmd.contains("redis-cli"), "{cmd}");
            assert!(cmd.contains("ping"), "{cmd}");
            assert!(cmd.contains("PONG"), "{cmd}");
            assert!(!cmd.contains("-a "), "password must not be on the command line: {cmd}");
        }
    }

    #[test]
    fn container_is_hardened() {
        let (d, _) = managed();
        let sc = container(&d).security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(999));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(999));
        assert_eq!(psc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn data_is_an_empty_dir() {
        let (d, _) = managed();
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let vol = &pod.volumes.as_ref().unwrap()[0];
        assert!(vol.empty_dir.is_some());
        let mount = &container(&d).volume_mounts.as_ref().unwrap()[0];
        assert_eq!((mount.name.as_str(), mount.mount_path.as_str()), (vol.name.as_str(), "/data"));
    }

    #[test]
    fn default_and_custom_resources() {
        let (d, _) = managed();
        let r = container(&d).resources.as_ref().unwrap();
        assert_eq!(r.requests.as_ref().unwrap()["memory"], Quantity("128Mi".into()));
        assert_eq!(r.limits.as_ref().unwrap()["memory"], Quantity("512Mi".into()));
        let vc = cluster_with(json!({"redis": {"resources": {"limits": {"memory": "1Gi"}}}}));
        let (d, _) = managed_redis(&vc).unwrap().unwrap();
        let r = container(&d).resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap()["memory"], Quantity("1Gi".into()));
        assert!(r.requests.is_none());
    }

    #[test]
    fn follows_the_sfu_node_selection_but_not_its_affinity() {
        let vc = cluster_with(json!({"sfu": {"scheduling": {
            "nodeSelector": {"pool": "interieur"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "interieur", "effect": "NoSchedule"}],
            "priorityClassName": "visio-critical"
        }}}));
        let (d, _) = managed_redis(&vc).unwrap().unwrap();
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "interieur");
        assert_eq!(pod.tolerations.as_ref().unwrap().len(), 1);
        assert_eq!(pod.priority_class_name.as_deref(), Some("visio-critical"));
        assert!(pod.affinity.is_none());
    }

    #[test]
    fn service_is_cluster_ip_on_6379() {
        let (d, s) = managed();
        assert_eq!(s.metadata.name.as_deref(), Some("visio-redis"));
        let spec = s.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.ports.as_ref().unwrap()[0].port, 6379);
        assert_eq!(spec.selector.as_ref(), d.spec.as_ref().unwrap().selector.match_labels.as_ref());
    }

    #[test]
    fn both_objects_are_owned_and_labelled() {
        let vc = test_cluster();
        let (d, s) = managed();
        for meta in [&d.metadata, &s.metadata] {
            assert_eq!(meta.namespace.as_deref(), Some("mininterieur"));
            assert_eq!(meta.owner_references.as_ref().unwrap(), &vec![owner_reference(&vc).unwrap()]);
            assert_eq!(meta.labels.as_ref().unwrap(), &standard_labels(&vc, Component::Redis));
        }
    }

    #[test]
    fn missing_namespace_is_an_error() {
        let mut vc = test_cluster();
        vc.metadata.namespace = None;
        assert_eq!(managed_redis(&vc), Err(BuildError::MissingNamespace));
    }
}
