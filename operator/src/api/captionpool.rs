//! `CaptionPool`: real-time French/English captions for one VisioCluster.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BucketRef, ReplicaBounds, Scheduling, DURATION_PATTERN, NAME_PATTERN};
use super::schedule::{self, CaptionScheduleWindow, ScheduleStatus};

/// A speech-to-text backend pool and the transcriber workers that stream each
/// participant's audio to it, for one VisioCluster in the same namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "visio.io",
    version = "v1alpha1",
    kind = "CaptionPool",
    plural = "captionpools",
    shortname = "cp",
    category = "visio",
    namespaced,
    status = "CaptionPoolStatus",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterRef.name","description":"VisioCluster served"}"#,
    printcolumn = r#"{"name":"Engine","type":"string","jsonPath":".spec.engine"}"#,
    printcolumn = r#"{"name":"Slots-Used","type":"integer","jsonPath":".status.slots.used","description":"Caption streams open"}"#,
    printcolumn = r#"{"name":"Slots-Total","type":"integer","jsonPath":".status.slots.total","description":"Caption streams the serving backends can hold"}"#,
    printcolumn = r#"{"name":"Backends","type":"integer","jsonPath":".status.backends.ready","description":"Backend pods serving"}"#,
    printcolumn = r#"{"name":"Draining","type":"integer","jsonPath":".status.backends.draining","priority":1}"#,
    printcolumn = r#"{"name":"Jobs","type":"integer","jsonPath":".status.transcribers.jobs","priority":1,"description":"Rooms being captioned"}"#,
    printcolumn = r#"{"name":"Window","type":"string","jsonPath":".status.autoscaling.activeWindow","priority":1,"description":"Schedule window holding the backends up now"}"#,
    printcolumn = r#"{"name":"Rejected","type":"integer","jsonPath":".status.slots.rejected","priority":1,"description":"Streams refused because the backends were full"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.engine != 'custom' || has(self.image)", "message": "spec.image is required when spec.engine is custom", "fieldPath": ".image"},
    {"rule": "!has(self.transcripts) || !self.transcripts.store || has(self.transcripts.bucket)", "message": "spec.transcripts.bucket is required when spec.transcripts.store is true", "fieldPath": ".transcripts.bucket"}
]))]
pub struct CaptionPoolSpec {
    /// The VisioCluster (same namespace) whose meetings get captions. Immutable.
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "spec.clusterRef is immutable"},
        {"rule": "!has(self.__namespace__)", "message": "spec.clusterRef.namespace: a CaptionPool serves a VisioCluster of its own namespace only; remove the field and create the CaptionPool in the VisioCluster's namespace", "fieldPath": ".namespace"}
    ]))]
    pub cluster_ref: ClusterRef,
    /// Speech-to-text engine: `kyutai` (moshi-server, default), `whisperlive`, or `custom`.
    #[serde(default)]
    pub engine: CaptionEngine,
    /// Image of the backend. Defaults per engine; required for `custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// The model and where its weights come from. Weights are never downloaded from a model hub at run time.
    #[serde(default)]
    pub model: ModelSpec,
    /// The speech-to-text backend pool.
    #[serde(default)]
    pub backend: BackendSpec,
    /// The transcriber workers that join rooms and stream audio to the backend.
    #[serde(default)]
    pub transcribers: TranscriberSpec,
    /// Whether finished captions are stored, and where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcripts: Option<TranscriptsSpec>,
}

/// The VisioCluster served: always one in the CaptionPool's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Name of the VisioCluster, in the same namespace as this CaptionPool.
    #[schemars(length(min = 1, max = 63), extend("pattern" = NAME_PATTERN))]
    pub name: String,
    /// Not allowed: present only so that a cross-namespace reference is refused with a clear message
    /// instead of being silently pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
}

/// Speech-to-text engine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CaptionEngine {
    /// Kyutai `moshi-server` with `stt-1b-en_fr`: French and English, about 0.5 s delay.
    #[default]
    Kyutai,
    /// WhisperLive (faster-whisper).
    Whisperlive,
    /// Any image that meets the caption backend contract (see docs/captions.md).
    Custom,
}

/// The model and its weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Model name as the backend knows it.
    #[serde(default = "default_model")]
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// PersistentVolumeClaim (same namespace) holding the weights, mounted read-only.
    /// When unset, the weights must be baked into the image at `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), extend("pattern" = NAME_PATTERN))]
    pub weights_pvc: Option<String>,
    /// Path of the weights inside the container.
    #[serde(default = "default_weights_path")]
    #[schemars(length(min = 1, max = 1024), extend("pattern" = r"^/.*"))]
    pub path: String,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self { name: default_model(), weights_pvc: None, path: default_weights_path() }
    }
}

fn default_model() -> String {
    "kyutai/stt-1b-en_fr".into()
}
fn default_weights_path() -> String {
    "/models/stt-1b-en_fr".into()
}

/// The speech-to-text backend pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    /// Streams one backend process holds (moshi-server `batch_size`, WhisperLive `--max_clients`).
    #[serde(default = "default_slots")]
    #[schemars(range(min = 1, max = 4096))]
    pub slots_per_pod: i32,
    /// Accelerators per backend pod.
    #[serde(default)]
    pub gpu: GpuSpec,
    /// Bounds of the backend pool.
    #[serde(default = "default_backend_replicas")]
    pub replicas: ReplicaBounds,
    /// Highest share of slots (percent) in use before more backends are added.
    #[serde(default = "default_target_occupancy")]
    #[schemars(range(min = 10, max = 100))]
    pub target_occupancy_percent: i32,
    /// Free slots kept ready above the target, so the next speaker has one.
    #[serde(default = "default_slot_buffer")]
    #[schemars(range(min = 0, max = 100000))]
    pub slot_buffer: i32,
    /// CPU and memory of the backend container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Where backend pods may run (GPU nodes).
    #[serde(default)]
    pub scheduling: Scheduling,
    /// Longest a backend pod that is scaled down or replaced keeps its open streams: it takes no new
    /// stream and is deleted as soon as its last stream closes, or at this deadline.
    #[serde(default = "default_backend_drain")]
    #[schemars(extend("pattern" = DURATION_PATTERN, "x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1m') && duration(self) <= duration('24h')", "message": "spec.backend.drainTimeout must be between 1m and 24h"}
    ]))]
    pub drain_timeout: String,
    /// How long the slots must stay under the target before backends are drained.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(extend("pattern" = DURATION_PATTERN, "x-kubernetes-validations" = [
        {"rule": "duration(self) <= duration('24h')", "message": "spec.backend.scaleDownDelay must be at most 24h"}
    ]))]
    pub scale_down_delay: String,
    /// IANA time zone the schedule windows are read in; daylight-saving changes follow it.
    #[serde(default = "schedule::default_time_zone")]
    #[schemars(length(min = 1, max = 64), extend("pattern" = schedule::TIME_ZONE_PATTERN))]
    pub time_zone: String,
    /// Windows of the week during which the backend pool is kept at a minimum (in pods or caption slots),
    /// opened early by the measured start-up time of a backend pod (model load included). The
    /// occupancy-driven autoscaler works on top, within `replicas`. Windows may not overlap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = schedule::MAX_WINDOWS), extend(
        "x-kubernetes-validations" = schedule::list_rules("spec.backend.schedules")
    ))]
    pub schedules: Vec<CaptionScheduleWindow>,
}

impl Default for BackendSpec {
    fn default() -> Self {
        Self {
            slots_per_pod: default_slots(),
            gpu: GpuSpec::default(),
            replicas: default_backend_replicas(),
            target_occupancy_percent: default_target_occupancy(),
            slot_buffer: default_slot_buffer(),
            resources: None,
            scheduling: Scheduling::default(),
            drain_timeout: default_backend_drain(),
            scale_down_delay: default_scale_down_delay(),
            time_zone: schedule::default_time_zone(),
            schedules: Vec::new(),
        }
    }
}

fn default_slots() -> i32 {
    64
}
fn default_backend_replicas() -> ReplicaBounds {
    ReplicaBounds { min: 1, max: 4 }
}
fn default_target_occupancy() -> i32 {
    70
}
fn default_slot_buffer() -> i32 {
    8
}
fn default_backend_drain() -> String {
    "4h".into()
}
fn default_scale_down_delay() -> String {
    "5m".into()
}

/// Accelerators of one backend pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuSpec {
    /// Accelerators per pod (0 runs on CPU, for small pools and tests).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 16))]
    pub count: i32,
    /// Extended resource name of the accelerator.
    #[serde(default = "default_gpu_resource")]
    #[schemars(length(min = 1, max = 253), extend("pattern" = r"^[a-z0-9.-]+/[a-z0-9.-]+$"))]
    pub resource_name: String,
}

impl Default for GpuSpec {
    fn default() -> Self {
        Self { count: 1, resource_name: default_gpu_resource() }
    }
}

fn one() -> i32 {
    1
}
fn default_gpu_resource() -> String {
    "nvidia.com/gpu".into()
}

/// Transcriber agent workers (LiveKit Agents style).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscriberSpec {
    /// Bounds of the worker count.
    #[serde(default = "default_transcriber_replicas")]
    pub replicas: ReplicaBounds,
    /// Rooms (jobs) one worker handles.
    #[serde(default = "default_jobs_per_worker")]
    #[schemars(range(min = 1, max = 1000))]
    pub jobs_per_worker: i32,
    /// Highest share of the workers' jobs (percent) in use before more workers are added.
    #[serde(default = "default_target_occupancy")]
    #[schemars(range(min = 10, max = 100))]
    pub target_occupancy_percent: i32,
    /// Free jobs kept ready above the target, so the next room that asks for captions is taken at once.
    #[serde(default = "default_job_buffer")]
    #[schemars(range(min = 0, max = 100000))]
    pub job_buffer: i32,
    /// How long the jobs must stay under the target before workers are removed (a removed worker
    /// drains: it takes no new room and finishes its rooms' captions).
    #[serde(default = "default_scale_down_delay")]
    #[schemars(extend("pattern" = DURATION_PATTERN, "x-kubernetes-validations" = [
        {"rule": "duration(self) <= duration('24h')", "message": "spec.transcribers.scaleDownDelay must be at most 24h"}
    ]))]
    pub scale_down_delay: String,
    /// Grace period a stopping worker gets to finish its rooms' captions (the 30 s Kubernetes
    /// default cuts captions mid-meeting).
    #[serde(default = "default_transcriber_drain")]
    #[schemars(extend("pattern" = DURATION_PATTERN, "x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('30s') && duration(self) <= duration('24h')", "message": "spec.transcribers.drainTimeout must be between 30s and 24h"}
    ]))]
    pub drain_timeout: String,
    /// Image of the transcriber worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// CPU and memory of a worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for TranscriberSpec {
    fn default() -> Self {
        Self {
            replicas: default_transcriber_replicas(),
            jobs_per_worker: default_jobs_per_worker(),
            target_occupancy_percent: default_target_occupancy(),
            job_buffer: default_job_buffer(),
            scale_down_delay: default_scale_down_delay(),
            drain_timeout: default_transcriber_drain(),
            image: None,
            resources: None,
        }
    }
}

fn default_transcriber_replicas() -> ReplicaBounds {
    ReplicaBounds { min: 1, max: 10 }
}
fn default_jobs_per_worker() -> i32 {
    20
}
fn default_job_buffer() -> i32 {
    2
}
fn default_transcriber_drain() -> String {
    "1h".into()
}

/// Storage of finished captions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptsSpec {
    /// Store finished captions as transcripts.
    #[serde(default)]
    pub store: bool,
    /// Bucket that receives them; a RetentionPolicy in this namespace must cover it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<BucketRef>,
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaptionPoolStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, `RetentionPolicyMissing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Caption slots.
    #[serde(default)]
    pub slots: SlotCounts,
    /// Backend pods wanted, ready, up to date and draining.
    #[serde(default)]
    pub backends: BackendCounts,
    /// Transcriber workers wanted and ready.
    #[serde(default)]
    pub transcribers: PodCounts,
    /// 95th percentile of the backend's step time in milliseconds, as reported (80 ms of audio per step:
    /// above 80 the backend falls behind real time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_time_p95_ms: Option<f64>,
    /// Share of model steps slower than real time (above 80 ms), in percent, on the worst backend, as
    /// reported (moshi-server: its step histogram stops at 80 ms, so `stepTimeP95Ms` cannot exceed 80;
    /// above 5 % the p95 step is slower than real time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_steps_percent: Option<f64>,
    /// The backend schedule window in force and the measured start-up time of a backend pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<ScheduleStatus>,
}

/// Backend pod counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendCounts {
    /// Serving pods the slot load needs.
    pub desired: i32,
    /// Pods serving (ready, taking new streams).
    pub ready: i32,
    /// Pods not being deleted (serving, pending or draining).
    #[serde(default)]
    pub current: i32,
    /// Pods of the current template (image, model, config).
    #[serde(default)]
    pub updated: i32,
    /// Pods taking no new stream, kept until their last stream closes or their deadline.
    #[serde(default)]
    pub draining: i32,
    /// Pods the scheduler cannot place (for example no node with the GPU resource).
    #[serde(default)]
    pub unschedulable: i32,
}

/// Caption slot counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotCounts {
    /// Streams open (one per captioned participant), on every backend pod, draining ones included.
    pub used: i64,
    /// Streams the serving backends can hold.
    pub total: i64,
    /// Streams rejected because the backends were full, since the pool was created.
    pub rejected: i64,
}

/// Transcriber worker counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodCounts {
    /// Pods wanted.
    pub desired: i32,
    /// Pods ready.
    pub ready: i32,
    /// Active jobs (rooms being captioned) on the workers that report them (`lk_agents_active_job_count`),
    /// stopping workers left out; absent while no worker reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<i64>,
}
