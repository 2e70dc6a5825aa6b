//! `VisioCluster`: one LiveKit conferencing stack for one tenant (ministry).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BucketRef, ReplicaBounds, Scheduling, DURATION_PATTERN};
use super::schedule::{self, ScheduleStatus, ScheduleWindow};

/// LiveKit server version the operator ships, tests and runs when `spec.version` is unset.
pub const DEFAULT_LIVEKIT_VERSION: &str = "v1.9.4";
/// Image repository of the LiveKit server.
pub const LIVEKIT_IMAGE: &str = "livekit/livekit-server";

/// A sovereign videoconferencing stack for one tenant: a LiveKit SFU fleet,
/// its Redis, TURN and signalling, with the firewall openings it needs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "visio.io",
    version = "v1alpha1",
    kind = "VisioCluster",
    plural = "visioclusters",
    shortname = "vc",
    category = "visio",
    namespaced,
    status = "VisioClusterStatus",
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version","description":"LiveKit version the fleet runs"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.sfu.ready","description":"SFU pods serving"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.sfu.desired","description":"SFU pods wanted"}"#,
    printcolumn = r#"{"name":"Draining","type":"integer","jsonPath":".status.sfu.draining","description":"SFU pods draining"}"#,
    printcolumn = r#"{"name":"Participants","type":"integer","jsonPath":".status.load.participants","description":"Participants in live meetings"}"#,
    printcolumn = r#"{"name":"Window","type":"string","jsonPath":".status.autoscaling.activeWindow","description":"Schedule window holding the fleet up now"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","description":"Why the stack is or is not ready"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.tenant.classification != 'restricted' || (size(self.sfu.scheduling.nodeSelector) > 0 && size(self.sfu.scheduling.tolerations) > 0)",
     "message": "restricted tenants require dedicated nodes: set spec.sfu.scheduling.nodeSelector and spec.sfu.scheduling.tolerations",
     "fieldPath": ".sfu.scheduling"},
    {"rule": "self.tenant.classification != 'restricted' || !self.turn.enabled || (has(self.turn.tlsSecretName) && !self.turn.udp)",
     "message": "restricted tenants allow TURN over TLS only: set spec.turn.tlsSecretName and spec.turn.udp=false",
     "fieldPath": ".turn"},
    {"rule": "self.sfu.replicas.min >= 1", "message": "spec.sfu.replicas.min must be at least 1: a conferencing stack with no SFU cannot host meetings",
     "fieldPath": ".sfu.replicas.min"}
]))]
pub struct VisioClusterSpec {
    /// LiveKit server version to run (`vX.Y.Z`). Changing it starts a rolling upgrade that
    /// drains old pods instead of cutting meetings. Defaults to the version this operator release ships.
    #[serde(default = "default_version")]
    #[schemars(extend("pattern" = r"^v[0-9]+\.[0-9]+\.[0-9]+$"))]
    pub version: String,
    /// Who this stack belongs to, and how sensitive its meetings are.
    pub tenant: TenantSpec,
    /// The SFU (LiveKit server) fleet.
    #[serde(default)]
    pub sfu: SfuSpec,
    /// How the fleet grows and shrinks with load.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// How version changes roll out without cutting meetings.
    #[serde(default)]
    pub upgrade: UpgradeSpec,
    /// Embedded TURN server, for guests behind strict firewalls.
    #[serde(default)]
    pub turn: TurnSpec,
    /// The Redis that ties the SFU nodes into one cluster.
    #[serde(default)]
    pub redis: RedisSpec,
    /// Where clients reach the signalling endpoint.
    pub signaling: SignalingSpec,
    /// Room defaults.
    #[serde(default)]
    pub rooms: RoomsSpec,
    /// API key and secret for this tenant's LiveKit. When unset, the operator generates
    /// them into a Secret it owns (`<name>-credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeysSpec>,
    /// Where this stack stores meeting recordings. A bucket here must be covered by a
    /// RetentionPolicy in the same namespace, or the stack reports `RetentionPolicyMissing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recordings: Option<BucketRef>,
}

fn default_version() -> String {
    DEFAULT_LIVEKIT_VERSION.to_string()
}

/// Sensitivity of a tenant's meetings.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Classification {
    /// Ordinary administrative meetings.
    #[default]
    Standard,
    /// Sensitive meetings (defence, health): dedicated nodes, TURN over TLS only, no shared caption pool.
    Restricted,
}

/// The tenant that owns this stack.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Human-readable name of the ministry or agency.
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,
    /// Contact (mail address or team) for the on-call engineers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub contact: Option<String>,
    /// Groups (as the cluster's authentication reports them, e.g. from OIDC) whose members administer
    /// this tenant: they get the `visio-tenant-admin` ClusterRole in this namespace only (manage the
    /// visio.io resources, read their status, Events and pods), through a RoleBinding the operator keeps.
    /// Kubernetes' own `system:` groups are refused (`system:authenticated` would make every user of the
    /// cluster an administrator of this tenant), and so are control characters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("items" = {"type": "string", "minLength": 1, "maxLength": 256,
        "x-kubernetes-validations": [
            {"rule": "!self.startsWith('system:')", "message": "spec.tenant.adminGroups: Kubernetes' system: groups cannot administer a tenant"},
            {"rule": "!self.matches('[[:cntrl:]]')", "message": "spec.tenant.adminGroups: a group name has no control characters"}
        ]}))]
    pub admin_groups: Vec<String>,
    /// `standard` or `restricted`. Immutable: lowering a tenant's classification means a new stack.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "spec.tenant.classification is immutable"}
    ]))]
    pub classification: Classification,
    /// A ResourceQuota `<name>-quota` the operator keeps in this namespace (owned by this VisioCluster,
    /// deleted when the field is removed). It caps everything in the namespace, the stack's own pods
    /// included: the operator reports `Degraded` (`QuotaTooSmall`) when `spec.sfu.replicas.min` SFU pods
    /// (and the managed Redis) cannot fit in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<TenantQuota>,
    /// A LimitRange `<name>-limits` the operator keeps in this namespace (owned by this VisioCluster,
    /// deleted when the field is removed): per-container defaults and maximum for every pod of the
    /// namespace. The operator reports `Degraded` (`LimitRangeRefusesPods`) when the SFU or Redis pods
    /// exceed its maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TenantLimits>,
}

/// Maximum number of resources in one quantity map (keeps the CEL cost of the checks bounded).
const MAX_RESOURCES: u32 = 32;

/// What every quantity map of `spec.tenant.quota` and `spec.tenant.limits` refuses (CEL, message naming
/// `field`): keys that are not resource names, values that are not quantities.
fn quantity_map_rules(field: &str) -> serde_json::Value {
    serde_json::json!([
        {"rule": r"self.all(k, k.matches('^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$'))",
         "message": format!("{field}: keys must be resource names such as cpu, requests.memory, pods or requests.nvidia.com/gpu")},
        // A static message: a messageExpression listing the bad keys exceeds the apiserver's CEL cost budget.
        {"rule": "self.all(k, isQuantity(self[k]))",
         "message": format!("{field}: every value must be a quantity such as 500m, 4Gi or 10")}
    ])
}

/// A ResourceQuota for the tenant's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantQuota {
    /// Hard limits, by resource name, as in a ResourceQuota's `spec.hard`: for example `requests.cpu: "40"`,
    /// `limits.memory: 160Gi`, `pods: "30"`, `requests.nvidia.com/gpu: "4"`. Values are quantity strings
    /// (quote plain numbers).
    #[schemars(extend(
        "minProperties" = 1,
        "maxProperties" = MAX_RESOURCES,
        "additionalProperties" = {"type": "string", "maxLength": 64},
        "x-kubernetes-validations" = quantity_map_rules("spec.tenant.quota.hard")
    ))]
    pub hard: BTreeMap<String, String>,
}

/// A LimitRange (type `Container`) for the tenant's namespace. Resources are `cpu`, `memory`,
/// `ephemeral-storage` or extended resources; values are quantity strings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "size(self.default) + size(self.defaultRequest) + size(self.max) > 0",
     "message": "spec.tenant.limits: set at least one of default, defaultRequest or max"},
    {"rule": "self.defaultRequest.all(k, !(k in self.default) || !isQuantity(self.defaultRequest[k]) || !isQuantity(self.default[k]) || quantity(self.defaultRequest[k]).compareTo(quantity(self.default[k])) <= 0)",
     "message": "spec.tenant.limits.defaultRequest must not exceed spec.tenant.limits.default for the same resource",
     "fieldPath": ".defaultRequest"},
    {"rule": "self.default.all(k, !(k in self.max) || !isQuantity(self.default[k]) || !isQuantity(self.max[k]) || quantity(self.default[k]).compareTo(quantity(self.max[k])) <= 0)",
     "message": "spec.tenant.limits.default must not exceed spec.tenant.limits.max for the same resource",
     "fieldPath": ".default"},
    {"rule": "self.defaultRequest.all(k, !(k in self.max) || !isQuantity(self.defaultRequest[k]) || !isQuantity(self.max[k]) || quantity(self.defaultRequest[k]).compareTo(quantity(self.max[k])) <= 0)",
     "message": "spec.tenant.limits.defaultRequest must not exceed spec.tenant.limits.max for the same resource",
     "fieldPath": ".defaultRequest"}
]))]
pub struct TenantLimits {
    /// Limit given to a container that sets none (LimitRange `default`).
    #[serde(default)]
    #[schemars(extend(
        "maxProperties" = MAX_RESOURCES,
        "additionalProperties" = {"type": "string", "maxLength": 64},
        "x-kubernetes-validations" = quantity_map_rules("spec.tenant.limits.default")
    ))]
    pub default: BTreeMap<String, String>,
    /// Request given to a container that sets none (LimitRange `defaultRequest`).
    #[serde(default)]
    #[schemars(extend(
        "maxProperties" = MAX_RESOURCES,
        "additionalProperties" = {"type": "string", "maxLength": 64},
        "x-kubernetes-validations" = quantity_map_rules("spec.tenant.limits.defaultRequest")
    ))]
    pub default_request: BTreeMap<String, String>,
    /// Largest limit one container may set (LimitRange `max`); a container must then set a limit for
    /// that resource, or get `default`.
    #[serde(default)]
    #[schemars(extend(
        "maxProperties" = MAX_RESOURCES,
        "additionalProperties" = {"type": "string", "maxLength": 64},
        "x-kubernetes-validations" = quantity_map_rules("spec.tenant.limits.max")
    ))]
    pub max: BTreeMap<String, String>,
}

/// The SFU fleet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SfuSpec {
    /// Bounds of the fleet size; the autoscaler stays within them.
    #[serde(default = "default_sfu_replicas")]
    pub replicas: ReplicaBounds,
    /// What one SFU pod can hold.
    #[serde(default)]
    pub capacity: SfuCapacity,
    /// CPU and memory of the LiveKit container. Defaults to 2 CPU / 2Gi requested, 4Gi limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Where SFU pods may run.
    #[serde(default)]
    pub scheduling: Scheduling,
    /// How media reaches the pods.
    #[serde(default)]
    pub network: SfuNetwork,
    /// Image repository override (for a sovereign registry mirror); the tag is always `spec.version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
}

impl Default for SfuSpec {
    fn default() -> Self {
        Self {
            replicas: default_sfu_replicas(),
            capacity: SfuCapacity::default(),
            resources: None,
            scheduling: Scheduling::default(),
            network: SfuNetwork::default(),
            image: None,
        }
    }
}

fn default_sfu_replicas() -> ReplicaBounds {
    ReplicaBounds { min: 2, max: 10 }
}

/// Capacity of one SFU pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SfuCapacity {
    /// Participants one SFU pod can carry; the autoscaler plans with this figure.
    #[serde(default = "default_participants_per_pod")]
    #[schemars(range(min = 1, max = 100000))]
    pub participants_per_pod: i32,
}

impl Default for SfuCapacity {
    fn default() -> Self {
        Self { participants_per_pod: default_participants_per_pod() }
    }
}

fn default_participants_per_pod() -> i32 {
    500
}

/// How media reaches the SFU pods.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum NetworkMode {
    /// LiveKit's recommended production mode: pods use the node's network, one SFU pod per node.
    /// Requires the Pod Security `privileged` level in the namespace.
    #[default]
    HostNetwork,
    /// Pods stay on the pod network and receive media on one UDP mux port and one TCP port
    /// behind a Service; compatible with the Pod Security `restricted` level.
    PodNetwork,
}

/// Media ports of the SFU.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.mode == oldSelf.mode", "message": "spec.sfu.network.mode is immutable: create a new VisioCluster to change it"},
    {"rule": "self.udpPort != self.tcpPort", "message": "spec.sfu.network.udpPort and tcpPort must differ", "fieldPath": ".tcpPort"},
    {"rule": "!has(self.externalAddress) || !has(self.stunServers) || size(self.stunServers) == 0", "message": "spec.sfu.network: set externalAddress or stunServers, not both", "fieldPath": ".stunServers"}
]))]
pub struct SfuNetwork {
    /// `hostNetwork` (default, LiveKit's production recommendation) or `podNetwork`.
    #[serde(default)]
    pub mode: NetworkMode,
    /// UDP port for WebRTC media (LiveKit `rtc.udp_port`, one mux port).
    #[serde(default = "default_udp_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub udp_port: i32,
    /// TCP port for WebRTC media fallback (LiveKit `rtc.tcp_port`).
    #[serde(default = "default_tcp_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub tcp_port: i32,
    /// The address LiveKit gives clients for media (its ICE candidates, LiveKit `rtc.node_ip`), the same
    /// for every SFU pod: the media LoadBalancer's address in `podNetwork` mode, or the public address of
    /// a single node behind 1:1 NAT. Unset: in `hostNetwork` mode each pod advertises its node's address
    /// (`status.hostIP`); in `podNetwork` mode LiveKit advertises the pod's own address, reachable only
    /// from inside the cluster network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "isIP(self)", "message": "spec.sfu.network.externalAddress must be an IP address"}
    ]))]
    pub external_address: Option<String>,
    /// STUN servers (`host:port`) LiveKit asks for the node's public address at start (LiveKit
    /// `rtc.use_external_ip`), for nodes behind 1:1 NAT. Only these are asked, never LiveKit's built-in
    /// public defaults. LiveKit refuses to start when none answers (and exits with code 0: the container
    /// restarts, the pod shows CrashLoopBackOff). Unset: no STUN, the address comes from `externalAddress`
    /// or the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[schemars(extend("items" = {"type": "string", "maxLength": 253, "pattern": "^[A-Za-z0-9.-]+:[0-9]{1,5}$"}))]
    pub stun_servers: Vec<String>,
}

impl Default for SfuNetwork {
    fn default() -> Self {
        Self {
            mode: NetworkMode::default(),
            udp_port: default_udp_port(),
            tcp_port: default_tcp_port(),
            external_address: None,
            stun_servers: Vec::new(),
        }
    }
}

impl SfuNetwork {
    /// Each pod advertises its node's address (from the `NODE_IP` variable, LiveKit's `--node-ip`):
    /// host network mode with neither a fixed address nor STUN.
    pub fn advertises_node_address(&self) -> bool {
        self.mode == NetworkMode::HostNetwork && self.external_address.is_none() && self.stun_servers.is_empty()
    }
}

fn default_udp_port() -> i32 {
    7882
}
fn default_tcp_port() -> i32 {
    7881
}

/// Load-aware autoscaling of the SFU fleet (Agones' buffer policy as the model).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Free participant places kept ready above the current load, so the next meeting has room.
    #[serde(default = "default_participant_buffer")]
    #[schemars(range(min = 0, max = 1000000))]
    pub participant_buffer: i32,
    /// Highest share of capacity (percent) in use before more pods are added.
    #[serde(default = "default_target_utilization")]
    #[schemars(range(min = 10, max = 100))]
    pub target_utilization_percent: i32,
    /// How long the load must stay low before the fleet shrinks, so a brief dip does not churn pods.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(extend("pattern" = DURATION_PATTERN, "x-kubernetes-validations" = [
        {"rule": "duration(self) <= duration('24h')", "message": "spec.autoscaling.scaleDownDelay must be at most 24h"}
    ]))]
    pub scale_down_delay: String,
    /// IANA time zone the schedule windows are read in; daylight-saving changes follow it (a window at
    /// 09:00 opens at 09:00 local time on either side of a change).
    #[serde(default = "schedule::default_time_zone")]
    #[schemars(length(min = 1, max = 64), extend("pattern" = schedule::TIME_ZONE_PATTERN))]
    pub time_zone: String,
    /// Windows of the week (a ministry's morning peak) during which the fleet is kept at a minimum,
    /// opened early by the measured start-up time of a pod. The load-driven autoscaler works on top,
    /// within `spec.sfu.replicas`. Windows may not overlap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = schedule::MAX_WINDOWS), extend(
        "x-kubernetes-validations" = schedule::list_rules("spec.autoscaling.schedules")
    ))]
    pub schedules: Vec<ScheduleWindow>,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            participant_buffer: default_participant_buffer(),
            target_utilization_percent: default_target_utilization(),
            scale_down_delay: default_scale_down_delay(),
            time_zone: schedule::default_time_zone(),
            schedules: Vec::new(),
        }
    }
}

fn default_participant_buffer() -> i32 {
    100
}
fn default_target_utilization() -> i32 {
    70
}
fn default_scale_down_delay() -> String {
    "5m".into()
}

/// Rolling upgrades: new pods first, then old pods drain; no live meeting is cut before `drainTimeout`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.maxSurge > 0 || self.maxDraining > 0", "message": "spec.upgrade.maxSurge and spec.upgrade.maxDraining cannot both be 0: the upgrade could never progress", "fieldPath": ".maxSurge"},
    {"rule": "duration(self.warnBefore) < duration(self.drainTimeout)", "message": "spec.upgrade.warnBefore must be shorter than spec.upgrade.drainTimeout", "fieldPath": ".warnBefore"}
]))]
pub struct UpgradeSpec {
    /// New-version pods that may run above the desired count during an upgrade.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub max_surge: i32,
    /// Old pods that may drain at the same time.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub max_draining: i32,
    /// Longest a draining pod waits for its meetings to end before they are ended (bounded: at most 24h).
    #[serde(default = "default_drain_timeout")]
    #[schemars(extend("pattern" = DURATION_PATTERN, "x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1m') && duration(self) <= duration('24h')", "message": "spec.upgrade.drainTimeout must be between 1m and 24h"}
    ]))]
    pub drain_timeout: String,
    /// How long before a forced end participants are warned.
    #[serde(default = "default_warn_before")]
    #[schemars(extend("pattern" = DURATION_PATTERN))]
    pub warn_before: String,
}

impl Default for UpgradeSpec {
    fn default() -> Self {
        Self {
            max_surge: 1,
            max_draining: 1,
            drain_timeout: default_drain_timeout(),
            warn_before: default_warn_before(),
        }
    }
}

fn one() -> i32 {
    1
}
fn default_drain_timeout() -> String {
    "3h".into()
}
fn default_warn_before() -> String {
    "10m".into()
}

/// Embedded TURN server (relays media for clients that cannot reach the SFU directly).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!self.enabled || self.udp || has(self.tlsSecretName)", "message": "spec.turn needs UDP or TLS: set spec.turn.udp=true or spec.turn.tlsSecretName", "fieldPath": ".udp"},
    {"rule": "!has(self.tlsSecretName) || has(self.domain)", "message": "spec.turn.domain is required when spec.turn.tlsSecretName is set (the certificate's name)", "fieldPath": ".domain"},
    {"rule": "self.udpPort != self.tlsPort", "message": "spec.turn.udpPort and spec.turn.tlsPort must differ", "fieldPath": ".tlsPort"}
]))]
pub struct TurnSpec {
    /// Run LiveKit's embedded TURN server.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Public DNS name of the TURN server (must match the TLS certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), extend("pattern" = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub domain: Option<String>,
    /// TLS Secret (`kubernetes.io/tls`, same namespace) for TURN over TLS, which reaches guests behind
    /// firewalls that only allow 443.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_secret_name: Option<String>,
    /// Offer TURN over UDP as well.
    #[serde(default = "yes")]
    pub udp: bool,
    /// UDP port of TURN.
    #[serde(default = "default_turn_udp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub udp_port: i32,
    /// TLS port of TURN (443 gets through the strictest firewalls).
    #[serde(default = "default_turn_tls_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub tls_port: i32,
}

impl Default for TurnSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            domain: None,
            tls_secret_name: None,
            udp: true,
            udp_port: default_turn_udp_port(),
            tls_port: default_turn_tls_port(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_turn_udp_port() -> i32 {
    3478
}
fn default_turn_tls_port() -> i32 {
    5349
}

/// Who runs Redis.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RedisMode {
    /// The operator runs a Redis for this stack, with a generated password.
    #[default]
    Managed,
    /// Use an existing Redis.
    External,
}

/// The Redis that ties the SFU nodes into one cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.mode != 'external' || has(self.external)", "message": "spec.redis.external is required when spec.redis.mode is external", "fieldPath": ".external"},
    {"rule": "self.mode != 'managed' || !has(self.external)", "message": "spec.redis.external must be unset when spec.redis.mode is managed", "fieldPath": ".external"}
]))]
pub struct RedisSpec {
    /// `managed` (default) or `external`.
    #[serde(default)]
    pub mode: RedisMode,
    /// Connection to an external Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRedis>,
    /// Resources of the managed Redis container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// An existing Redis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRedis {
    /// `host:port` of the Redis server.
    #[schemars(length(min = 1, max = 512), extend("pattern" = r"^[^\s:]+:[0-9]{1,5}$"))]
    pub address: String,
    /// Secret key holding the Redis password, in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<super::common::SecretKeyRef>,
}

/// Where clients reach signalling (WebSocket, HTTPS).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignalingSpec {
    /// Public host name of the signalling endpoint, for example `visio.interieur.gouv.fr`.
    #[schemars(length(min = 1, max = 253), extend("pattern" = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub host: String,
    /// Ingress class to publish signalling through; no Ingress is created when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub ingress_class_name: Option<String>,
    /// TLS Secret (same namespace) for the signalling host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_secret_name: Option<String>,
}

/// Room defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomsSpec {
    /// Most participants in one room (0: no limit). A room lives on one SFU pod, so this
    /// cannot exceed `spec.sfu.capacity.participantsPerPod` in practice.
    #[serde(default = "default_max_participants")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_participants: i32,
    /// How long an empty room is kept before it closes.
    #[serde(default = "default_empty_timeout")]
    #[schemars(extend("pattern" = DURATION_PATTERN, "x-kubernetes-validations" = [
        {"rule": "duration(self) <= duration('24h')", "message": "spec.rooms.emptyTimeout must be at most 24h"}
    ]))]
    pub empty_timeout: String,
    /// How long a room stays open after the last participant left.
    #[serde(default = "default_departure_timeout")]
    #[schemars(extend("pattern" = DURATION_PATTERN, "x-kubernetes-validations" = [
        {"rule": "duration(self) <= duration('1h')", "message": "spec.rooms.departureTimeout must be at most 1h"}
    ]))]
    pub departure_timeout: String,
}

impl Default for RoomsSpec {
    fn default() -> Self {
        Self {
            max_participants: default_max_participants(),
            empty_timeout: default_empty_timeout(),
            departure_timeout: default_departure_timeout(),
        }
    }
}

fn default_max_participants() -> i32 {
    0
}
fn default_empty_timeout() -> String {
    "5m".into()
}
fn default_departure_timeout() -> String {
    "20s".into()
}

/// API key and secret supplied by the tenant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeysSpec {
    /// Secret in the same namespace with the keys `apiKey` and `apiSecret`.
    #[schemars(length(min = 1, max = 253), extend("pattern" = super::common::NAME_PATTERN))]
    pub secret_name: String,
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VisioClusterStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, `UpgradeInProgress`, `RetentionPolicyMissing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// LiveKit version every serving pod runs (unset while versions are mixed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Version the fleet is moving to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,
    /// SFU pod counts.
    #[serde(default)]
    pub sfu: SfuCounts,
    /// Live load reported by the SFU pods.
    #[serde(default)]
    pub load: LiveLoad,
    /// Where clients connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// What the tenant's network team must open for this stack to work.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub firewall: Vec<FirewallRule>,
    /// The schedule window in force and the measured start-up time of a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<ScheduleStatus>,
}

/// SFU pod counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SfuCounts {
    /// Pods the planner wants serving.
    pub desired: i32,
    /// Pods that exist (serving or draining).
    pub current: i32,
    /// Pods ready to take new meetings.
    pub ready: i32,
    /// Pods that run the target version.
    pub updated: i32,
    /// Pods draining (no new meetings, waiting for theirs to end).
    pub draining: i32,
}

/// Live load of the fleet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveLoad {
    /// Rooms open.
    pub rooms: i64,
    /// Participants connected.
    pub participants: i64,
    /// Participant capacity of the serving pods.
    pub capacity: i64,
}

/// Where clients connect.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// WebSocket URL of signalling.
    pub signaling_url: String,
    /// TURN URIs offered to clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turn: Vec<String>,
}

/// One opening a tenant's firewall needs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirewallRule {
    /// What the opening is for.
    pub purpose: String,
    /// `TCP` or `UDP`.
    pub protocol: String,
    /// Port number.
    pub port: i32,
    /// Who connects: `clients` (participants' devices) or `ingress`.
    pub from: String,
}
