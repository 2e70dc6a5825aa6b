//! Pure builders: from a custom resource (and what was dereferenced) to the desired child objects. No I/O,
//! no clock, no randomness: the same input always gives the same objects, so a reconcile that changes
//! nothing writes nothing.
//!
//! The entry point for a `VisioCluster` is [`stack::build_stack`]; each concern has its own module:
//! [`labels`] (names, labels, owner references), [`livekit_config`] (the LiveKit server YAML), [`sfu`] (the
//! SFU pod template the controller creates pods from), [`redis`] (the managed Redis), [`services`]
//! (Services, PodDisruptionBudget, Ingress, endpoints and firewall openings), [`network`] (NetworkPolicies),
//! [`tenant`] (the tenant admins' RoleBinding), [`quota`] (the tenant's ResourceQuota and LimitRange, and whether
//! the stack's pods fit in them).

pub mod agent;
pub mod captions;
pub mod labels;
pub mod livekit_config;
pub mod meta;
pub mod network;
pub mod quota;
pub mod redis;
pub mod services;
pub mod sfu;
pub mod stack;
pub mod tenant;

pub use labels::{owner_reference, selector_labels, standard_labels, Component, FIELD_MANAGER, MANAGED_BY};
pub use livekit_config::{render, LiveKitConfig};
pub use sfu::{sfu_template, AgentAccess, SfuTemplate};
pub use stack::{build_stack, Credentials, Stack};

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use sha2::{Digest, Sha256};

use crate::duration::DurationError;

/// Why the desired objects of a custom resource could not be built. Every variant names the field at fault,
/// so the message can go into a condition and an Event as is; [`BuildError::label`] is the short stable form
/// for metrics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// The object has no `metadata.name` (never the case for objects read from the API).
    #[error("metadata.name: the object has no name")]
    MissingName,
    /// The object has no `metadata.namespace`; every child lives in the namespace of its owner.
    #[error("metadata.namespace: the object has no namespace; children are created in the namespace of their owner")]
    MissingNamespace,
    /// The object has no `metadata.uid`, so no owner reference can point at it.
    #[error("metadata.uid: the object has no uid, so its children cannot be owned by it")]
    MissingUid,
    /// The object's name cannot be the stem of its children's names.
    #[error("metadata.name: {name:?} {reason}")]
    InvalidName { name: String, reason: String },
    /// A schedule cannot be read (a time zone the tz database does not know, mostly).
    #[error(transparent)]
    InvalidSchedule(#[from] crate::fleet::schedule::ScheduleError),
    /// A duration field does not parse.
    #[error("{field}: {source}")]
    InvalidDuration { field: &'static str, source: DurationError },
    /// A field holds a value the builders cannot turn into a working object.
    #[error("{field}: {message}")]
    InvalidValue { field: &'static str, message: String },
    /// Two listeners of one SFU pod would bind the same port.
    #[error("{field}: {message}")]
    PortConflict { field: &'static str, message: String },
    /// A combination of fields the operator cannot run.
    #[error("{field}: {message}")]
    Unsupported { field: &'static str, message: String },
    /// A credential the controller dereferenced is empty.
    #[error("{field}: must not be empty")]
    MissingCredential { field: &'static str },
    /// A desired object could not be serialized (a bug, never a user error).
    #[error("{what}: could not serialize: {message}")]
    Serialization { what: &'static str, message: String },
}

impl BuildError {
    /// Short, stable label for metrics and Event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            BuildError::MissingName => "missing_name",
            BuildError::MissingNamespace => "missing_namespace",
            BuildError::MissingUid => "missing_uid",
            BuildError::InvalidName { .. } => "invalid_name",
            BuildError::InvalidDuration { .. } => "invalid_duration",
            BuildError::InvalidSchedule(_) => "invalid_schedule",
            BuildError::InvalidValue { .. } => "invalid_value",
            BuildError::PortConflict { .. } => "port_conflict",
            BuildError::Unsupported { .. } => "unsupported",
            BuildError::MissingCredential { .. } => "missing_credentials",
            BuildError::Serialization { .. } => "serialization",
        }
    }
}

/// The first `len` hex characters of the SHA-256 of `bytes`: short content hashes for labels and annotations.
pub(crate) fn short_hash(bytes: &[u8], len: usize) -> String {
    let mut hex = hex::encode(Sha256::digest(bytes));
    hex.truncate(len);
    hex
}

/// Whole seconds of a duration field, rounded up so that a non-zero duration never becomes 0 (which LiveKit
/// reads as "close at once" or "use the default", depending on the key).
pub(crate) fn duration_seconds(field: &'static str, value: &str) -> Result<u64, BuildError> {
    let d = crate::duration::parse(value).map_err(|source| BuildError::InvalidDuration { field, source })?;
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Ok(secs)
}

/// Milliseconds of a duration field, for the planners.
pub fn duration_millis(field: &'static str, value: &str) -> Result<i64, BuildError> {
    let d = crate::duration::parse(value).map_err(|source| BuildError::InvalidDuration { field, source })?;
    Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A scratch volume on the node's disk, bounded by `size_limit`: the kubelet evicts a pod whose emptyDir
/// outgrows it, so no pod can fill its node's disk. Every emptyDir of every pod has one.
pub(crate) fn empty_dir(name: &str, size_limit: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource { medium: None, size_limit: Some(Quantity(size_limit.into())) }),
        ..Volume::default()
    }
}

/// A port field as a `u16`, refusing 0 and anything above 65535.
pub(crate) fn port(field: &'static str, value: i32) -> Result<u16, BuildError> {
    match u16::try_from(value) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(BuildError::InvalidValue { field, message: format!("{value} is not a port number (1-65535)") }),
    }
}

#[cfg(any(test, feature = "testing"))]
pub mod testing {
    //! Shared fixtures for the builder tests, and the strategy of arbitrary specs the API accepts (also
    //! used by the e2e test that sends a sample of the builders' output to a real apiserver; the
    //! `testing` feature exports it).

    use proptest::prelude::*;
    use serde_json::json;

    use crate::api::{CaptionPool, VisioCluster};

    /// An external Redis, as a `spec.redis` value.
    pub fn external_redis_spec() -> serde_json::Value {
        json!({"mode": "external", "external": {
            "address": "redis.partage.svc:6380", "passwordSecret": {"name": "redis-partage", "key": "password"}
        }})
    }

    /// A VisioCluster `visio` in namespace `mininterieur`, with the API defaults and `patch` merged over a
    /// minimal spec (JSON merge: objects merge, anything else replaces).
    pub fn cluster_with(patch: serde_json::Value) -> VisioCluster {
        let mut spec = serde_json::json!({
            "tenant": {"displayName": "Ministère de l'Intérieur"},
            "signaling": {"host": "visio.interieur.gouv.fr"},
        });
        merge(&mut spec, patch);
        let mut vc: VisioCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "visio.io/v1alpha1",
            "kind": "VisioCluster",
            "metadata": {"name": "visio", "namespace": "mininterieur", "uid": "0b6c1a52-5f3c-4a8e-9d57-3c2f1e0a9b11"},
            "spec": spec,
        }))
        .expect("test spec deserializes");
        vc.metadata.generation = Some(1);
        vc
    }

    /// The default test cluster.
    pub fn test_cluster() -> VisioCluster {
        cluster_with(serde_json::json!({}))
    }

    const DURATIONS: &[&str] = &["0s", "20s", "90s", "250ms", "1.5s", "5m", "1h", "1h30m", "3h", "24h"];
    const DRAINS: &[&str] = &["1m", "90s", "30m", "3h", "12h", "24h"];
    const VERSIONS: &[&str] = &["v1.9.4", "v1.10.0", "v2.0.0"];

    prop_compose! {
        pub fn arb_turn()(
            enabled in any::<bool>(),
            udp in any::<bool>(),
            tls in any::<bool>(),
            domain in proptest::option::of("[a-z]{1,10}\\.gouv\\.fr"),
            udp_port in prop_oneof![Just(3478), Just(443), 1i32..=65535],
            tls_port in prop_oneof![Just(5349), Just(443), 1i32..=65535],
        ) -> serde_json::Value {
            let mut t = json!({"enabled": enabled, "udp": udp, "udpPort": udp_port, "tlsPort": tls_port});
            if let Some(d) = domain { t["domain"] = json!(d); }
            if tls { t["tlsSecretName"] = json!("turn-cert"); }
            t
        }
    }

    prop_compose! {
        pub fn arb_spec()(
            min in 1i32..=20,
            extra in 0i32..=50,
            pod_network in any::<bool>(),
            udp_port in prop_oneof![Just(7882), 1024i32..=65535],
            tcp_port in prop_oneof![Just(7881), 1024i32..=65535],
            turn in arb_turn(),
            external_redis in any::<bool>(),
            tenant_keys in any::<bool>(),
            ingress_class in proptest::option::of(Just("nginx")),
            signaling_tls in any::<bool>(),
            empty_timeout in proptest::sample::select(DURATIONS),
            departure_timeout in proptest::sample::select(DURATIONS),
            drain in proptest::sample::select(DRAINS),
            version in proptest::sample::select(VERSIONS),
            max_participants in 0i32..=100000,
            with_resources in any::<bool>(),
            with_scheduling in any::<bool>(),
        ) -> serde_json::Value {
            let mut spec = json!({
                "version": version,
                "sfu": {
                    "replicas": {"min": min, "max": min + extra},
                    "network": {"mode": if pod_network { "podNetwork" } else { "hostNetwork" }, "udpPort": udp_port, "tcpPort": tcp_port},
                },
                "turn": turn,
                "rooms": {"maxParticipants": max_participants, "emptyTimeout": empty_timeout, "departureTimeout": departure_timeout},
                "upgrade": {"drainTimeout": drain, "warnBefore": "30s"},
                "signaling": {"host": "visio.interieur.gouv.fr"},
            });
            if external_redis { spec["redis"] = external_redis_spec(); }
            if tenant_keys { spec["keys"] = json!({"secretName": "cles"}); }
            if let Some(class) = ingress_class { spec["signaling"]["ingressClassName"] = json!(class); }
            if signaling_tls { spec["signaling"]["tlsSecretName"] = json!("visio-tls"); }
            if with_resources { spec["sfu"]["resources"] = json!({"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}); }
            if with_scheduling {
                spec["sfu"]["scheduling"] = json!({"nodeSelector": {"pool": "visio"}, "tolerations": [{"key": "k", "operator": "Exists"}]});
            }
            spec
        }
    }

    /// A CaptionPool `captions` in namespace `minsante` serving the VisioCluster `visio`, with `spec` merged
    /// over the minimal spec (JSON merge, as [`cluster_with`]).
    pub fn pool_with(spec: serde_json::Value) -> CaptionPool {
        let mut base = json!({"clusterRef": {"name": "visio"}});
        merge(&mut base, spec);
        let mut cp: CaptionPool = serde_json::from_value(json!({
            "apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool",
            "metadata": {"name": "captions", "namespace": "minsante", "uid": "4b1c0e2a-0000-4000-8000-000000000001"},
            "spec": base,
        }))
        .expect("test spec deserializes");
        cp.metadata.generation = Some(1);
        cp
    }

    prop_compose! {
        /// Arbitrary CaptionPool specs the API accepts (every engine, with and without a weights PVC, GPUs,
        /// resources and scheduling).
        pub fn arb_pool_spec()(
            engine in prop_oneof![Just("kyutai"), Just("whisperlive"), Just("custom")],
            image in proptest::option::of("[a-z]{1,8}(/[a-z]{1,8})?:[0-9]\\.[0-9]"),
            weights_pvc in proptest::option::of("[a-z]{1,12}"),
            path in "/[a-z]{1,8}(/[a-z0-9_-]{1,8}){0,2}",
            slots in 1i32..=4096,
            gpus in 0i32..=16,
            backend_drain in proptest::sample::select(DRAINS),
            transcriber_drain in proptest::sample::select(&["30s", "90s", "1h", "24h"][..]),
            jobs in 1i32..=1000,
            with_resources in any::<bool>(),
            with_scheduling in any::<bool>(),
        ) -> serde_json::Value {
            let image = match (engine, image) {
                ("custom", None) => Some("stt:1".to_string()),
                (_, image) => image,
            };
            let mut spec = json!({
                "engine": engine,
                "model": {"path": path},
                "backend": {"slotsPerPod": slots, "gpu": {"count": gpus}, "drainTimeout": backend_drain},
                "transcribers": {"drainTimeout": transcriber_drain, "jobsPerWorker": jobs},
            });
            if let Some(i) = image { spec["image"] = json!(i); }
            if let Some(pvc) = weights_pvc { spec["model"]["weightsPvc"] = json!(pvc); }
            if with_resources {
                spec["backend"]["resources"] = json!({"requests": {"cpu": "4"}, "limits": {"memory": "24Gi"}});
                spec["transcribers"]["resources"] = json!({"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}});
            }
            if with_scheduling {
                spec["backend"]["scheduling"] = json!({"nodeSelector": {"gpu": "l40s"}, "tolerations": [{"key": "gpu", "operator": "Exists"}]});
            }
            spec
        }
    }

    /// Whether the spec passes the CRD's CEL rules that the builders rely on.
    pub fn cel_valid(vc: &VisioCluster) -> bool {
        let s = &vc.spec;
        let turn_ok = !s.turn.enabled || s.turn.udp || s.turn.tls_secret_name.is_some();
        let turn_domain_ok = s.turn.tls_secret_name.is_none() || s.turn.domain.is_some();
        turn_ok
            && turn_domain_ok
            && s.turn.udp_port != s.turn.tls_port
            && s.sfu.network.udp_port != s.sfu.network.tcp_port
    }

    /// JSON merge of `patch` into `base` (objects merge, anything else replaces).
    pub fn merge_json(base: &mut serde_json::Value, patch: serde_json::Value) {
        merge(base, patch)
    }

    fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
        match (base, patch) {
            (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
                for (k, v) in p {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, p) => *b = p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use proptest::prelude::*;

    use captions::{build_captions, CaptionInputs, CaptionStack};
    use testing::{arb_pool_spec, arb_spec, cluster_with, pool_with};

    /// The pod specs of a VisioCluster's stack. Destructured without `..`: a new field of [`Stack`] does not
    /// compile here until it is sorted into pod templates or not.
    fn stack_pod_specs(stack: &Stack) -> Vec<(&'static str, Option<&PodSpec>)> {
        let Stack {
            credentials_secret: _,
            config_secret: _,
            redis,
            services: _,
            pdb: _,
            ingress: _,
            network_policies: _,
            admin_binding: _,
            resource_quota: _,
            limit_range: _,
            agent: _,
            sfu,
            endpoints: _,
            firewall: _,
        } = stack;
        let mut out = vec![("SFU pod template", sfu.pod.spec.as_ref())];
        if let Some((deployment, _)) = redis {
            out.push(("Redis Deployment", deployment.spec.as_ref().and_then(|d| d.template.spec.as_ref())));
        }
        out
    }

    /// The pod specs of a CaptionPool's children, destructured the same way.
    fn caption_pod_specs(stack: &CaptionStack) -> Vec<(&'static str, Option<&PodSpec>)> {
        let CaptionStack {
            key_secret: _,
            config_secret: _,
            backend,
            service: _,
            pdb: _,
            network_policy: _,
            agent: _,
            transcribers,
        } = stack;
        vec![
            ("caption backend pod template", backend.pod.spec.as_ref()),
            ("transcriber Deployment", transcribers.spec.as_ref().and_then(|d| d.template.spec.as_ref())),
        ]
    }

    /// The emptyDir volumes of `specs` that have no `sizeLimit`, and how many emptyDirs there are.
    fn unbounded_empty_dirs(specs: &[(&'static str, Option<&PodSpec>)]) -> (Vec<String>, usize) {
        let (mut unbounded, mut seen) = (vec![], 0);
        for (what, spec) in specs {
            let spec = spec.unwrap_or_else(|| panic!("{what} has no pod spec"));
            for v in spec.volumes.iter().flatten() {
                if let Some(dir) = &v.empty_dir {
                    seen += 1;
                    if dir.size_limit.is_none() {
                        unbounded.push(format!("{what}: volume {}", v.name));
                    }
                }
            }
        }
        (unbounded, seen)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// No pod the operator creates can fill its node's disk: every emptyDir of every pod template, for
        /// a spread of VisioCluster and CaptionPool specs, has a `sizeLimit`.
        #[test]
        fn every_empty_dir_has_a_size_limit(vc_spec in arb_spec(), pool_spec in arb_pool_spec()) {
            let creds = stack::Credentials { api_key: "k".into(), api_secret: "s".repeat(48), redis_password: "r".repeat(32) };
            let mut specs = vec![];
            let stack = build_stack(&cluster_with(vc_spec), &creds, "agent:1");
            if let Ok(stack) = &stack {
                specs.extend(stack_pod_specs(stack));
            }
            let inputs =
                CaptionInputs { api_key: "k", livekit_keys_secret: "visio-credentials", agent_image: "agent:1", transcriber_replicas: 1 };
            let pool = build_captions(&pool_with(pool_spec), &inputs);
            prop_assert!(pool.is_ok(), "{:?}", pool.err());
            specs.extend(caption_pod_specs(pool.as_ref().unwrap()));
            let (unbounded, seen) = unbounded_empty_dirs(&specs);
            prop_assert!(unbounded.is_empty(), "emptyDirs without a sizeLimit: {:?}", unbounded);
            // Not vacuous: the SFU's and both caption pods' /tmp at least.
            prop_assert!(seen >= 2 + usize::from(stack.is_ok()), "{} emptyDirs", seen);
        }
    }

    #[test]
    fn labels_are_short_and_stable() {
        let errors = [
            BuildError::MissingName,
            BuildError::MissingNamespace,
            BuildError::MissingUid,
            BuildError::InvalidName { name: "x".into(), reason: "r".into() },
            BuildError::InvalidDuration { field: "spec.rooms.emptyTimeout", source: DurationError::Empty },
            BuildError::InvalidValue { field: "f", message: "m".into() },
            BuildError::PortConflict { field: "f", message: "m".into() },
            BuildError::Unsupported { field: "f", message: "m".into() },
            BuildError::MissingCredential { field: "f" },
            BuildError::Serialization { what: "w", message: "m".into() },
        ];
        let labels: Vec<_> = errors.iter().map(BuildError::label).collect();
        assert_eq!(
            labels,
            [
                "missing_name",
                "missing_namespace",
                "missing_uid",
                "invalid_name",
                "invalid_duration",
                "invalid_value",
                "port_conflict",
                "unsupported",
                "missing_credentials",
                "serialization"
            ]
        );
        for l in labels {
            assert!(l.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{l}");
        }
    }

    #[test]
    fn messages_name_the_field() {
        let e = BuildError::InvalidDuration { field: "spec.rooms.emptyTimeout", source: DurationError::Empty };
        assert_eq!(e.to_string(), "spec.rooms.emptyTimeout: empty duration");
        assert!(BuildError::MissingNamespace.to_string().starts_with("metadata.namespace: "));
    }

    #[test]
    fn short_hash_is_a_hex_prefix_of_sha256() {
        assert_eq!(short_hash(b"", 10), "e3b0c44298");
        assert_eq!(short_hash(b"abc", 64).len(), 64);
        assert_eq!(short_hash(b"abc", 100).len(), 64);
    }

    #[test]
    fn duration_seconds_rounds_up_fractions() {
        assert_eq!(duration_seconds("f", "5m"), Ok(300));
        assert_eq!(duration_seconds("f", "1h30m"), Ok(5400));
        assert_eq!(duration_seconds("f", "250ms"), Ok(1));
        assert_eq!(duration_seconds("f", "1.5s"), Ok(2));
        assert_eq!(duration_seconds("f", "0s"), Ok(0));
        let err = duration_seconds("spec.rooms.emptyTimeout", "5 minutes").unwrap_err();
        assert_eq!(err.label(), "invalid_duration");
        assert!(err.to_string().starts_with("spec.rooms.emptyTimeout: "));
    }

    #[test]
    fn port_refuses_out_of_range() {
        assert_eq!(port("f", 7880), Ok(7880));
        assert_eq!(port("f", 65535), Ok(65535));
        for bad in [0, -1, 65536, i32::MAX, i32::MIN] {
            assert_eq!(port("spec.x", bad).unwrap_err().label(), "invalid_value");
        }
    }
}
