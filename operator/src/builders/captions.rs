//! The children of a `CaptionPool` (pure): the speech-to-text backend pod template, its config and API key
//! Secrets, the backend Service and PodDisruptionBudget, the agent's access, and the transcriber Deployment.
//!
//! Like the SFU fleet, backend pods are created and deleted by the controller from [`BackendTemplate`] (one
//! pod each, no Deployment), because a backend pod holds one stream per captioned participant for the whole
//! meeting and must only be removed once empty (or at its drain deadline). The Service routes new streams to
//! serving pods only (`visio.io/serving=true`, and the agent's readiness fails while a pod drains); the
//! PodDisruptionBudget (`maxUnavailable: 0` over `visio.io/in-use=true`) keeps node drains off busy pods.
//! The NetworkPolicy `<pool>-backend` lets only the pool's own transcribers open streams, and only
//! monitoring namespaces scrape: another ministry's pods cannot use this pool's GPU slots.
//!
//! Weights never come from a model hub at run time: they are read from `spec.model.path`, a mounted
//! PersistentVolumeClaim (`spec.model.weightsPvc`, read-only) or a directory baked into the image; the
//! generated moshi-server config names local files only, and the hub clients are switched offline.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvVar, HTTPGetAction, PersistentVolumeClaimVolumeSource, Pod, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret,
    SecretVolumeSource, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::Resource;
use serde::Serialize;

use super::agent::{agent_container as sfu_agent_container, agent_token_volume, AgentAccess, AGENT_CONTAINER};
use super::labels::{CLUSTER_LABEL, IN_USE_LABEL, LABEL_TRUE, SERVING_LABEL, TEMPLATE_HASH_LABEL};
use super::livekit_config::Protocol;
use super::meta::{ChildLabels, ChildMeta};
use super::network::{namespaces_labelled, port as policy_port, MONITORING_NAMESPACE_LABEL};
use super::sfu::{container_security_context, quantities, runtime_default, secret_env};
use super::{duration_seconds, short_hash, BuildError};
use crate::api::captionpool::{CaptionEngine, CaptionPool};

/// Default moshi-server image (Kyutai publishes the server as a crate; the image is built and mirrored by the
/// platform team, with or without the weights).
pub const MOSHI_IMAGE: &str = "registry.visio.local/kyutai/moshi-server:0.6.4";
/// The WhisperLive release the operator renders flags for. `--max_clients` exists from 0.8.0,
/// `--metrics_port` and `--api_key` from 0.9.0, and 0.9.0's WebSocket key check has the legacy
/// `process_request(path, headers)` signature that websockets' sync server calls with
/// `(connection, request)` (fixed upstream in "fix: correct WebSocket authentication callback", shipped
/// in 0.10.0): so 0.10.0 is the first release where every flag below works.
pub const WHISPERLIVE_VERSION: &str = "0.10.0";
/// Default WhisperLive image (the upstream image layout: `run_server.py` in the working directory, no
/// ENTRYPOINT; plus `prometheus_client`, which WhisperLive does not declare: docs/captions.md).
pub const WHISPERLIVE_IMAGE: &str = "registry.visio.local/collabora/whisperlive:0.10.0";
/// WhisperLive's program: upstream images have `CMD ["python", "run_server.py"]` and no ENTRYPOINT, so a
/// container given only `args` would run `--port` as its program.
pub const WHISPERLIVE_COMMAND: [&str; 2] = ["python", "run_server.py"];
/// The longest meeting the platform keeps going, in seconds: 24 h, the bound of every deadline in the API
/// (`spec.backend.drainTimeout`, VisioCluster `spec.upgrade.drainTimeout`). LiveKit itself has no meeting
/// length limit, so this is the longest a caption stream must be allowed to last. WhisperLive cuts a
/// stream at `--max_connection_time`, 300 s by default: every caption stream would end after 5 minutes.
pub const LONGEST_MEETING_SECS: u64 = 24 * 3600;
/// Default transcriber worker image (a LiveKit Agents worker streaming each participant to the backend).
pub const TRANSCRIBER_IMAGE: &str = "registry.visio.local/visio/caption-transcriber:0.1.0";
/// Name of the backend container.
pub const BACKEND_CONTAINER: &str = "stt";
/// Name of the transcriber container.
pub const TRANSCRIBER_CONTAINER: &str = "transcriber";
/// `app.kubernetes.io/component` of backend pods.
pub const BACKEND_COMPONENT: &str = "caption-backend";
/// `app.kubernetes.io/component` of transcriber pods.
pub const TRANSCRIBER_COMPONENT: &str = "transcriber";
/// Label naming the CaptionPool on every child.
pub const POOL_LABEL: &str = "visio.io/captionpool";
/// Port of moshi-server (and of `custom` backends): streams on `/api/asr-streaming`, metrics on `/metrics`.
pub const MOSHI_PORT: u16 = 8080;
/// Port of WhisperLive's WebSocket.
pub const WHISPERLIVE_PORT: u16 = 9090;
/// Port of WhisperLive's metrics.
pub const WHISPERLIVE_METRICS_PORT: u16 = 9091;
/// Port of the transcriber workers' health endpoint (LiveKit Agents' HTTP server).
pub const TRANSCRIBER_HEALTH_PORT: u16 = 8081;
/// Port of the transcriber workers' Prometheus metrics (`lk_agents_*`; LiveKit Agents'
/// `WorkerOptions.prometheus_port`, which the transcriber image reads from `PROMETHEUS_PORT`).
pub const TRANSCRIBER_METRICS_PORT: u16 = 8082;
/// Loopback address of the agent's health endpoint in a transcriber pod (the worker has 8081).
pub const TRANSCRIBER_AGENT_HEALTH: &str = "127.0.0.1:8083";
/// Name of the container port Prometheus scrapes (the chart's PodMonitors select it by name), wherever
/// metrics have a port of their own: WhisperLive's and the transcribers'. moshi-server (and a `custom`
/// backend) serves `/metrics` on its stream port, named [`STREAM_PORT_NAME`].
pub const METRICS_PORT_NAME: &str = "metrics";
/// Name of the stream port of moshi-server and `custom` backends (streams and `/metrics`).
pub const STREAM_PORT_NAME: &str = "stt";
/// Name of WhisperLive's WebSocket port (streams only: its metrics are on [`METRICS_PORT_NAME`]).
pub const WHISPERLIVE_PORT_NAME: &str = "ws";
/// Where the generated config is mounted.
pub const CONFIG_DIR: &str = "/etc/moshi";
/// Key of the API key in the key Secret.
pub const API_KEY: &str = "apiKey";
/// Size limit of a backend pod's `/tmp` (its one writable directory). What the engines write there:
/// moshi-server its own log (`log_dir = "/tmp/moshi-logs"`: tracing-appender's daily file, which
/// moshi-server 0.6.4 never prunes, gets one INFO line per model step, 12.5 a second while any stream is
/// open: about 10 MB an hour of streams); WhisperLive 0.10.0 its cache under `HOME` (`~/.cache/whisper-live/`:
/// the Silero VAD model, a few MB) and short-lived audio clips. 4Gi holds some two weeks of uninterrupted
/// streams, longer than a backend usually lives between rollouts; a pod that outgrows it is evicted by the
/// kubelet and replaced, and its streams reopen on another backend.
pub const BACKEND_TMP_SIZE: &str = "4Gi";
/// Size limit of a transcriber pod's `/tmp` (its one writable directory, and `HOME`): a LiveKit Agents
/// worker logs to stderr and keeps its metrics in memory, so only Python's scratch files land there (job
/// processes' sockets and temporary files). Models a plugin would download belong in the image.
pub const TRANSCRIBER_TMP_SIZE: &str = "256Mi";
/// User and group of every caption container.
pub const CAPTION_UID: i64 = 1000;
/// Longest CaptionPool name: `<name>-caption-config` must stay a 63-character DNS label.
pub const MAX_POOL_NAME_LEN: usize = 63 - "-caption-config".len();

/// The desired backend pod, from which the controller creates each backend pod.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendTemplate {
    /// Metadata without a name (the controller names pods `<pool>-backend-<n>`), with the labels, the
    /// template hash and the owner reference.
    pub pod: Pod,
    /// Hash of what the pod runs (image, model, config, resources): a pod with another hash is outdated.
    pub hash: String,
}

/// Everything a CaptionPool owns, except the backend pods themselves.
#[derive(Clone, PartialEq)]
pub struct CaptionStack {
    /// `<pool>-caption-key`: the backend API key (generated once, kept).
    pub key_secret: Secret,
    /// `<pool>-caption-config`: the backend config (moshi-server TOML; it names the key, so a Secret).
    pub config_secret: Secret,
    pub backend: BackendTemplate,
    /// `<pool>-backend`: the Service transcribers open streams on (serving pods only).
    pub service: Service,
    /// `<pool>-backend`: no voluntary eviction of a pod with open streams.
    pub pdb: PodDisruptionBudget,
    /// `<pool>-backend`: streams from this pool's transcribers only, metrics from monitoring namespaces.
    pub network_policy: NetworkPolicy,
    /// `<pool>-caption-agent`: what the backend pods' agent needs to write its pod's load.
    pub agent: AgentAccess,
    /// `<pool>-transcriber`.
    pub transcribers: Deployment,
}

impl std::fmt::Debug for CaptionStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The Secrets hold the API key: never in logs.
        f.debug_struct("CaptionStack").field("backend_hash", &self.backend.hash).finish_non_exhaustive()
    }
}

/// What the builder needs besides the pool.
#[derive(Clone, PartialEq, Eq)]
pub struct CaptionInputs<'a> {
    /// The backend API key.
    pub api_key: &'a str,
    /// The Secret with the VisioCluster's `apiKey`/`apiSecret` (its `spec.keys`, or `<vc>-credentials`).
    pub livekit_keys_secret: &'a str,
    /// The operator's image (the agent).
    pub agent_image: &'a str,
    /// Transcriber replicas (computed by the controller from the open streams).
    pub transcriber_replicas: i32,
}

fn pool_name(cp: &CaptionPool) -> Result<&str, BuildError> {
    let name = cp.meta().name.as_deref().filter(|n| !n.is_empty()).ok_or(BuildError::MissingName)?;
    let b = name.as_bytes();
    let ok = name.len() <= MAX_POOL_NAME_LEN
        && b[0].is_ascii_lowercase()
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if !ok {
        return Err(BuildError::InvalidName {
            name: name.into(),
            reason: format!(
                "must be a DNS-1035 label of at most {MAX_POOL_NAME_LEN} characters: it is the stem of Service \
                 and Secret names"
            ),
        });
    }
    Ok(name)
}

fn pool_namespace(cp: &CaptionPool) -> Result<&str, BuildError> {
    cp.meta().namespace.as_deref().filter(|n| !n.is_empty()).ok_or(BuildError::MissingNamespace)
}

/// The controller owner reference of every child.
pub fn owner_reference(cp: &CaptionPool) -> Result<OwnerReference, BuildError> {
    super::meta::owner_reference(cp)
}

/// The application label of every caption child.
const APP: &str = "visio-captions";

/// The labels of `cp`'s children.
fn child_labels(cp: &CaptionPool) -> ChildLabels {
    let name = cp.meta().name.clone().unwrap_or_default();
    ChildLabels::new(name.clone()).with(CLUSTER_LABEL, cp.spec.cluster_ref.name.clone()).with(POOL_LABEL, name)
}

/// The labels selecting one component of the pool (stable: a Deployment's selector is immutable).
pub fn selector_labels(cp: &CaptionPool, component: &str) -> BTreeMap<String, String> {
    child_labels(cp).selector(APP, component)
}

/// Every child's labels.
pub fn standard_labels(cp: &CaptionPool, component: &str) -> BTreeMap<String, String> {
    child_labels(cp).all(APP, component)
}

fn child_metadata(cp: &CaptionPool, name: String, component: &str) -> Result<ObjectMeta, BuildError> {
    Ok(ChildMeta::new(cp, child_labels(cp))?.meta(name, APP, component))
}

/// `<pool>-caption-key`.
pub fn key_secret_name(pool: &str) -> String {
    format!("{pool}-caption-key")
}
/// `<pool>-caption-config`.
pub fn config_secret_name(pool: &str) -> String {
    format!("{pool}-caption-config")
}
/// `<pool>-backend`: Service, PodDisruptionBudget, and the stem of backend pod names.
pub fn backend_name(pool: &str) -> String {
    format!("{pool}-backend")
}
/// `<pool>-transcriber`.
pub fn transcriber_name(pool: &str) -> String {
    format!("{pool}-transcriber")
}
/// `<pool>-caption-agent`.
pub fn agent_name(pool: &str) -> String {
    format!("{pool}-caption-agent")
}

/// The backend image: `spec.image`, or the engine's default.
pub fn backend_image(cp: &CaptionPool) -> Result<String, BuildError> {
    match (&cp.spec.image, cp.spec.engine) {
        (Some(i), _) if !i.trim().is_empty() => Ok(i.clone()),
        (_, CaptionEngine::Kyutai) => Ok(MOSHI_IMAGE.into()),
        (_, CaptionEngine::Whisperlive) => Ok(WHISPERLIVE_IMAGE.into()),
        (_, CaptionEngine::Custom) => {
            Err(BuildError::InvalidValue { field: "spec.image", message: "required when spec.engine is custom".into() })
        }
    }
}

/// The port streams are opened on.
pub fn backend_port(engine: CaptionEngine) -> u16 {
    match engine {
        CaptionEngine::Whisperlive => WHISPERLIVE_PORT,
        CaptionEngine::Kyutai | CaptionEngine::Custom => MOSHI_PORT,
    }
}

/// moshi-server's config file: the keys of `moshi_server::Config` (moshi-server 0.6.4, `main.rs`) the
/// operator sets, in the order they are written. Serialized by `toml`, so every value is quoted and escaped
/// by the serializer, whatever the spec holds.
#[derive(Serialize)]
struct MoshiConfig<'a> {
    static_dir: &'a str,
    log_dir: &'a str,
    instance_name: &'a str,
    authorized_ids: [&'a str; 1],
    modules: MoshiModules,
}

/// The modules of the server: one, the batched ASR.
#[derive(Serialize)]
struct MoshiModules {
    asr: BatchedAsr,
}

/// `[modules.asr]`: `ModuleConfig::BatchedAsr` and its `asr::Config`.
#[derive(Serialize)]
struct BatchedAsr {
    path: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    lm_model_file: String,
    text_tokenizer_file: String,
    audio_tokenizer_file: String,
    asr_delay_in_tokens: u32,
    batch_size: i32,
    conditioning_learnt_padding: bool,
    temperature: f64,
    model: AsrModel,
}

/// `[modules.asr.model]`: the language model's shape (`moshi::lm::Config`).
#[derive(Serialize)]
struct AsrModel {
    audio_vocab_size: u32,
    text_in_vocab_size: u32,
    text_out_vocab_size: u32,
    audio_codebooks: u32,
    transformer: Transformer,
    extra_heads: ExtraHeads,
}

/// `[modules.asr.model.transformer]`.
#[derive(Serialize)]
struct Transformer {
    d_model: u32,
    num_heads: u32,
    num_layers: u32,
    dim_feedforward: u32,
    causal: bool,
    norm_first: bool,
    bias_ff: bool,
    bias_attn: bool,
    context: u32,
    max_period: u32,
    use_conv_block: bool,
    use_conv_bias: bool,
    gating: &'static str,
    norm: &'static str,
    positional_embedding: &'static str,
    conv_layout: bool,
    conv_kernel_size: u32,
    kv_repeat: u32,
    max_seq_len: u32,
}

/// `[modules.asr.model.extra_heads]`.
#[derive(Serialize)]
struct ExtraHeads {
    num_heads: u32,
    dim: u32,
}

/// `stt-1b-en_fr` as Kyutai configures it (`configs/config-stt-en_fr-hf.toml` of
/// kyutai-labs/delayed-streams-modeling).
const STT_1B_EN_FR: AsrModel = AsrModel {
    audio_vocab_size: 2049,
    text_in_vocab_size: 8001,
    text_out_vocab_size: 8000,
    // The model reads all 32 Mimi codebooks.
    audio_codebooks: 32,
    transformer: Transformer {
        d_model: 2048,
        num_heads: 16,
        num_layers: 16,
        dim_feedforward: 8192,
        causal: true,
        norm_first: true,
        bias_ff: false,
        bias_attn: false,
        context: 750,
        max_period: 100000,
        use_conv_block: false,
        use_conv_bias: true,
        gating: "silu",
        norm: "RmsNorm",
        positional_embedding: "Rope",
        conv_layout: false,
        conv_kernel_size: 3,
        kv_repeat: 1,
        max_seq_len: 40960,
    },
    extra_heads: ExtraHeads { num_heads: 4, dim: 6 },
};

/// moshi-server's TOML for `stt-1b-en_fr`, with local weight files under `spec.model.path` (never `hf://`),
/// `batch_size` = slots per pod, and the API key as the one authorized id.
///
/// The model values are Kyutai's own for this model: `configs/config-stt-en_fr-hf.toml` of
/// kyutai-labs/delayed-streams-modeling (`audio_codebooks = 32`: the model reads all 32 Mimi codebooks;
/// `temperature = 0.0`: greedy decoding, as Kyutai's STT scripts run it, `LMGen(lm, temp=0, temp_text=0.0)`
/// in `scripts/stt_from_file_pytorch.py`). unmute's `stt-prod.toml` (20, 0.25) is tuned for a voice agent,
/// not for captions.
///
/// Everything below the two comment lines is written by the `toml` serializer; the comments name the pool
/// and the path with their control characters escaped, so no value can end a comment line and start a key
/// of its own.
pub fn moshi_config(cp: &CaptionPool, api_key: &str) -> Result<String, BuildError> {
    let path = cp.spec.model.path.trim_end_matches('/');
    if !path.starts_with('/') || path.contains("..") {
        return Err(BuildError::InvalidValue {
            field: "spec.model.path",
            message: format!("{path:?} must be an absolute path without '..'"),
        });
    }
    if api_key.is_empty() {
        return Err(BuildError::MissingCredential { field: "CaptionPool API key" });
    }
    let config = MoshiConfig {
        static_dir: "./static/",
        log_dir: "/tmp/moshi-logs",
        instance_name: "stt",
        authorized_ids: [api_key],
        modules: MoshiModules {
            asr: BatchedAsr {
                path: "/api/asr-streaming",
                kind: "BatchedAsr",
                lm_model_file: format!("{path}/model.safetensors"),
                text_tokenizer_file: format!("{path}/tokenizer_en_fr_audio_8000.model"),
                audio_tokenizer_file: format!("{path}/mimi-pytorch-e351c8d8@125.safetensors"),
                asr_delay_in_tokens: 6,
                batch_size: cp.spec.backend.slots_per_pod.max(1),
                conditioning_learnt_padding: true,
                // Greedy decoding.
                temperature: 0.0,
                model: STT_1B_EN_FR,
            },
        },
    };
    let body = toml::to_string(&config)
        .map_err(|e| BuildError::Serialization { what: "moshi-server config", message: e.to_string() })?;
    Ok(format!(
        "# Generated by visio-operator for CaptionPool {name}; edits are overwritten.\n\
         # Weights are read from {path} only: no model hub is contacted at run time.\n{body}",
        name = comment_text(cp.meta().name.as_deref().unwrap_or_default()),
        path = comment_text(path),
    ))
}

/// `s` with its control characters escaped (`\n`, `\u{7}`), fit for a TOML comment line.
fn comment_text(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
}

fn secret(meta: ObjectMeta, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
        ..Secret::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
}

/// Resources of the backend container: `spec.backend.resources` with the GPU request and limit added
/// (`spec.backend.gpu.count` of `spec.backend.gpu.resourceName`; none when the count is 0).
pub fn backend_resources(cp: &CaptionPool) -> ResourceRequirements {
    let b = &cp.spec.backend;
    let mut r = b.resources.clone().unwrap_or_else(|| ResourceRequirements {
        requests: Some(quantities(&[("cpu", "2"), ("memory", "8Gi")])),
        limits: Some(quantities(&[("memory", "16Gi")])),
        ..ResourceRequirements::default()
    });
    if b.gpu.count > 0 {
        let q = Quantity(b.gpu.count.to_string());
        r.limits.get_or_insert_with(BTreeMap::new).insert(b.gpu.resource_name.clone(), q.clone());
        r.requests.get_or_insert_with(BTreeMap::new).insert(b.gpu.resource_name.clone(), q);
    }
    r
}

/// WhisperLive's flags (run_server.py of collabora/WhisperLive, 0.10.0): the WebSocket port, the
/// faster-whisper backend on the local model, `--max_clients` slots, streams allowed to last the longest
/// meeting, metrics on their own port (`--metrics_port`; 0, the default, serves none), and the API key,
/// which WhisperLive reads from this flag only (no environment variable): `$(CAPTION_API_KEY)` is expanded
/// by the kubelet from the container's environment, so the key is in no pod spec. It is in the process's
/// command line, which only this container sees (the pod does not share its process namespace).
pub fn whisperlive_args(slots: &str, model_path: &str) -> Vec<String> {
    let (port, metrics) = (WHISPERLIVE_PORT.to_string(), WHISPERLIVE_METRICS_PORT.to_string());
    let longest = LONGEST_MEETING_SECS.to_string();
    [
        "--port",
        &port,
        "--backend",
        "faster_whisper",
        "--max_clients",
        slots,
        "--max_connection_time",
        &longest,
        "--faster_whisper_custom_model_path",
        model_path,
        "--metrics_port",
        &metrics,
        "--api_key",
        "$(CAPTION_API_KEY)",
    ]
    .map(String::from)
    .to_vec()
}

/// The backend container's command line and probes, per engine.
fn backend_container(cp: &CaptionPool, image: String, key_secret: &str) -> Container {
    let engine = cp.spec.engine;
    let port = backend_port(engine);
    let slots = cp.spec.backend.slots_per_pod.max(1).to_string();
    let model_path = cp.spec.model.path.clone();
    let (command, args, ready_path): (Option<Vec<String>>, Vec<String>, Option<&str>) = match engine {
        CaptionEngine::Kyutai => (
            Some(vec!["moshi-server".into()]),
            ["worker", "--config", &format!("{CONFIG_DIR}/config.toml"), "--port", &port.to_string()]
                .map(String::from)
                .to_vec(),
            // Answers without a key, and only once the modules (and so the weights) are loaded.
            Some("/api/build_info"),
        ),
        CaptionEngine::Whisperlive => {
            (Some(WHISPERLIVE_COMMAND.map(String::from).to_vec()), whisperlive_args(&slots, &model_path), None)
        }
        // The image's own entrypoint, configured by the environment (docs/captions.md: backend contract).
        CaptionEngine::Custom => (None, vec![], Some("/api/build_info")),
    };
    let mut mounts = vec![VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() }];
    if engine == CaptionEngine::Kyutai {
        mounts.push(VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    if cp.spec.model.weights_pvc.is_some() {
        mounts.push(VolumeMount {
            name: "weights".into(),
            mount_path: model_path.clone(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let readiness = match ready_path {
        Some(path) => Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(i32::from(port)),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        },
        None => Probe {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(i32::from(port)), host: None }),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        },
    };
    Container {
        name: BACKEND_CONTAINER.into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        command,
        args: (!args.is_empty()).then_some(args),
        env: Some(vec![
            // Belt and braces: the config names local files only; these make a hub client fail instead of
            // downloading.
            env("HF_HUB_OFFLINE", "1"),
            env("TRANSFORMERS_OFFLINE", "1"),
            env("HOME", "/tmp"),
            env("CAPTION_MODEL_NAME", cp.spec.model.name.clone()),
            env("CAPTION_MODEL_PATH", model_path),
            env("CAPTION_SLOTS", slots),
            env("CAPTION_PORT", port.to_string()),
            secret_env("CAPTION_API_KEY", key_secret, API_KEY),
        ]),
        ports: Some(backend_ports(engine)),
        // Loading a model takes minutes: startup gets up to 20 minutes before liveness applies.
        startup_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(i32::from(port)), host: None }),
            period_seconds: Some(10),
            failure_threshold: Some(120),
            ..Probe::default()
        }),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(i32::from(port)), host: None }),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        readiness_probe: Some(readiness),
        resources: Some(backend_resources(cp)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

fn tcp_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// The backend container's named ports. moshi-server (and a `custom` backend) serves streams and `/metrics`
/// on one port (`stt`); WhisperLive has its WebSocket (`ws`) and a metrics port (`metrics`). Prometheus
/// scrapes by name (the chart's PodMonitor: `/metrics` on `stt` or `metrics`), so the names say which port
/// answers `/metrics`. The moshi-server ports are unchanged from earlier releases: a change here changes the
/// template hash, which rolls every backend pod of that engine on an operator upgrade.
fn backend_ports(engine: CaptionEngine) -> Vec<ContainerPort> {
    match engine {
        CaptionEngine::Kyutai | CaptionEngine::Custom => vec![tcp_port(STREAM_PORT_NAME, MOSHI_PORT)],
        CaptionEngine::Whisperlive => vec![
            tcp_port(WHISPERLIVE_PORT_NAME, WHISPERLIVE_PORT),
            tcp_port(METRICS_PORT_NAME, WHISPERLIVE_METRICS_PORT),
        ],
    }
}

fn agent_container(cp: &CaptionPool, agent_image: &str) -> Container {
    let backend = match cp.spec.engine {
        CaptionEngine::Whisperlive => "whisperlive",
        CaptionEngine::Kyutai | CaptionEngine::Custom => "moshi",
    };
    let metrics = format!("http://127.0.0.1:{}/metrics", backend_metrics_port(cp.spec.engine));
    // Its readiness fails once the pod drains: the pod leaves the backend Service, its open streams continue.
    sfu_agent_container(
        agent_image,
        ["agent", "--backend", backend, "--metrics-url", &metrics, "--slots"]
            .map(String::from)
            .into_iter()
            .chain([cp.spec.backend.slots_per_pod.max(1).to_string()])
            .collect(),
        vec![],
    )
}

/// The agent beside a transcriber worker: it reports the worker's active jobs and sets the pod's deletion
/// cost to them. No readiness probe: the worker's own readiness decides, and a report that lags must not
/// take a worker out of rotation.
fn transcriber_agent_container(cp: &CaptionPool, agent_image: &str) -> Container {
    let metrics = format!("http://127.0.0.1:{TRANSCRIBER_METRICS_PORT}/metrics");
    let jobs = cp.spec.transcribers.jobs_per_worker.max(1).to_string();
    let args = ["agent", "--backend", "transcriber", "--metrics-url", &metrics, "--slots", &jobs]
        .into_iter()
        .chain(["--health-addr", TRANSCRIBER_AGENT_HEALTH])
        .map(String::from)
        .collect();
    Container { readiness_probe: None, ..sfu_agent_container(agent_image, args, vec![]) }
}

fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(CAPTION_UID),
        run_as_group: Some(CAPTION_UID),
        fs_group: Some(CAPTION_UID),
        seccomp_profile: Some(runtime_default()),
        ..PodSecurityContext::default()
    }
}

fn spread(cp: &CaptionPool, component: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(selector_labels(cp, component)),
                        match_expressions: None,
                    }),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..PodAffinityTerm::default()
                },
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// The backend pod template. `config_hash` is the hash of the generated config (a change rolls the pods).
pub fn backend_template(cp: &CaptionPool, agent_image: &str, config_hash: &str) -> Result<BackendTemplate, BuildError> {
    let pool = pool_name(cp)?;
    let image = backend_image(cp)?;
    let b = &cp.spec.backend;
    let mut volumes = vec![super::empty_dir("tmp", BACKEND_TMP_SIZE), agent_token_volume()];
    if cp.spec.engine == CaptionEngine::Kyutai {
        volumes.push(Volume {
            name: "config".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(config_secret_name(pool)),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some(pvc) = &cp.spec.model.weights_pvc {
        volumes.push(Volume {
            name: "weights".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc.clone(),
                read_only: Some(true),
            }),
            ..Volume::default()
        });
    }
    let spec = PodSpec {
        containers: vec![backend_container(cp, image, &key_secret_name(pool)), agent_container(cp, agent_image)],
        enable_service_links: Some(false),
        service_account_name: Some(agent_name(pool)),
        automount_service_account_token: Some(false),
        restart_policy: Some("Always".into()),
        // The backend has no drain on SIGTERM: the controller deletes a pod only once it holds no stream (or
        // at its drain deadline), so a long grace period would protect nothing.
        termination_grace_period_seconds: Some(30),
        security_context: Some(pod_security_context()),
        affinity: Some(b.scheduling.affinity.clone().unwrap_or_else(|| spread(cp, BACKEND_COMPONENT))),
        node_selector: (!b.scheduling.node_selector.is_empty()).then(|| b.scheduling.node_selector.clone()),
        tolerations: (!b.scheduling.tolerations.is_empty()).then(|| b.scheduling.tolerations.clone()),
        priority_class_name: b.scheduling.priority_class_name.clone(),
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    let mut hashed = spec.clone();
    for c in hashed.containers.iter_mut().filter(|c| c.name == AGENT_CONTAINER) {
        c.image = None;
    }
    let mut bytes = serde_json::to_vec(&hashed)
        .map_err(|e| BuildError::Serialization { what: "caption backend pod spec", message: e.to_string() })?;
    bytes.extend_from_slice(b"\nconfig-hash=");
    bytes.extend_from_slice(config_hash.as_bytes());
    let hash = short_hash(&bytes, 10);
    let mut labels = standard_labels(cp, BACKEND_COMPONENT);
    labels.insert(TEMPLATE_HASH_LABEL.into(), hash.clone());
    let metadata = ObjectMeta {
        namespace: Some(pool_namespace(cp)?.to_string()),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([("visio.io/config-hash".to_string(), config_hash.to_string())])),
        owner_references: Some(vec![owner_reference(cp)?]),
        ..ObjectMeta::default()
    };
    Ok(BackendTemplate { pod: Pod { metadata, spec: Some(spec), status: None }, hash })
}

/// The labels of one component's pods of this pool only: the selector and the pool's own label.
fn pool_pods(cp: &CaptionPool, component: &str) -> LabelSelector {
    let mut labels = selector_labels(cp, component);
    labels.insert(POOL_LABEL.into(), cp.meta().name.clone().unwrap_or_default());
    LabelSelector { match_labels: Some(labels), match_expressions: None }
}

/// The port the backend serves `/metrics` on: WhisperLive's own, or the stream port (moshi-server and
/// `custom` backends serve both on one).
pub fn backend_metrics_port(engine: CaptionEngine) -> u16 {
    match engine {
        CaptionEngine::Whisperlive => WHISPERLIVE_METRICS_PORT,
        CaptionEngine::Kyutai | CaptionEngine::Custom => MOSHI_PORT,
    }
}

/// `<pool>-backend`, the backend pods' ingress: the stream port from this pool's transcriber pods (same
/// namespace: a pod selector without a namespace selector), the metrics port from namespaces labelled
/// [`MONITORING_NAMESPACE_LABEL`], nothing else. Without it any pod of the cluster could open streams on
/// a ministry's GPUs (the API key is the only other lock). What stays allowed without a rule: the agent
/// reads the backend's metrics on loopback, and the kubelet's probes come from the pod's node, which a
/// NetworkPolicy never blocks. For moshi-server and `custom` backends metrics and streams share one port,
/// so monitoring namespaces reach that port too; streams there still need the API key.
pub fn backend_network_policy(cp: &CaptionPool) -> Result<NetworkPolicy, BuildError> {
    let pool = pool_name(cp)?;
    let from_transcribers =
        NetworkPolicyPeer { pod_selector: Some(pool_pods(cp, TRANSCRIBER_COMPONENT)), ..NetworkPolicyPeer::default() };
    Ok(NetworkPolicy {
        metadata: child_metadata(cp, backend_name(pool), BACKEND_COMPONENT)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pool_pods(cp, BACKEND_COMPONENT)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![from_transcribers]),
                    ports: Some(vec![policy_port(backend_port(cp.spec.engine), Protocol::Tcp)]),
                },
                NetworkPolicyIngressRule {
                    from: Some(namespaces_labelled(MONITORING_NAMESPACE_LABEL)),
                    ports: Some(vec![policy_port(backend_metrics_port(cp.spec.engine), Protocol::Tcp)]),
                },
            ]),
            egress: None,
        }),
    })
}

/// The agent's ServiceAccount, Role (get, list, watch, patch pods) and RoleBinding.
pub fn agent_access(cp: &CaptionPool) -> Result<AgentAccess, BuildError> {
    Ok(super::agent::access(child_metadata(cp, agent_name(pool_name(cp)?), BACKEND_COMPONENT)?))
}

/// The transcriber workers. Their grace period is `spec.transcribers.drainTimeout` plus a minute: a LiveKit
/// Agents worker drains on SIGTERM (finishes its rooms' captions), which the 30 s default would cut.
pub fn transcriber_deployment(cp: &CaptionPool, inputs: &CaptionInputs<'_>) -> Result<Deployment, BuildError> {
    let pool = pool_name(cp)?;
    let t = &cp.spec.transcribers;
    let drain = duration_seconds("spec.transcribers.drainTimeout", &t.drain_timeout)?;
    let grace = i64::try_from(drain).unwrap_or(i64::MAX / 2).saturating_add(60);
    let vc = &cp.spec.cluster_ref.name;
    let port = backend_port(cp.spec.engine);
    let backend_url = match cp.spec.engine {
        CaptionEngine::Whisperlive => format!("ws://{}:{port}", backend_name(pool)),
        _ => format!("ws://{}:{port}/api/asr-streaming", backend_name(pool)),
    };
    let container = Container {
        name: TRANSCRIBER_CONTAINER.into(),
        image: Some(t.image.clone().unwrap_or_else(|| TRANSCRIBER_IMAGE.into())),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(vec![
            env("LIVEKIT_URL", format!("ws://{vc}-signaling:7880")),
            secret_env("LIVEKIT_API_KEY", inputs.livekit_keys_secret, "apiKey"),
            secret_env("LIVEKIT_API_SECRET", inputs.livekit_keys_secret, "apiSecret"),
            env("CAPTION_ENGINE", format!("{:?}", cp.spec.engine).to_lowercase()),
            env("CAPTION_BACKEND_URL", backend_url),
            secret_env("CAPTION_API_KEY", &key_secret_name(pool), API_KEY),
            env("CAPTION_LANGUAGES", "fr,en"),
            env("JOBS_PER_WORKER", t.jobs_per_worker.max(1).to_string()),
            env("HOME", "/tmp"),
            env("PROMETHEUS_PORT", TRANSCRIBER_METRICS_PORT.to_string()),
            // LiveKit Agents gives up draining after `WorkerOptions.drain_timeout` (3600 s by default,
            // `worker.py`) and closes with its jobs: the image passes this to it, as PROMETHEUS_PORT.
            env("DRAIN_TIMEOUT_SECONDS", drain.to_string()),
        ]),
        ports: Some(vec![
            tcp_port("health", TRANSCRIBER_HEALTH_PORT),
            tcp_port(METRICS_PORT_NAME, TRANSCRIBER_METRICS_PORT),
        ]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/".into()),
                port: IntOrString::Int(i32::from(TRANSCRIBER_HEALTH_PORT)),
                ..Default::default()
            }),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        resources: Some(t.resources.clone().unwrap_or_else(|| ResourceRequirements {
            requests: Some(quantities(&[("cpu", "500m"), ("memory", "512Mi")])),
            limits: Some(quantities(&[("memory", "1Gi")])),
            ..ResourceRequirements::default()
        })),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() }]),
        ..Container::default()
    };
    let selector = selector_labels(cp, TRANSCRIBER_COMPONENT);
    Ok(Deployment {
        metadata: child_metadata(cp, transcriber_name(pool), TRANSCRIBER_COMPONENT)?,
        spec: Some(DeploymentSpec {
            replicas: Some(inputs.transcriber_replicas.max(0)),
            selector: LabelSelector { match_labels: Some(selector), match_expressions: None },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(standard_labels(cp, TRANSCRIBER_COMPONENT)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container, transcriber_agent_container(cp, inputs.agent_image)],
                    enable_service_links: Some(false),
                    // The token is mounted in the agent only (a projected volume), not in the worker.
                    service_account_name: Some(agent_name(pool)),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(grace),
                    security_context: Some(pod_security_context()),
                    affinity: Some(spread(cp, TRANSCRIBER_COMPONENT)),
                    volumes: Some(vec![super::empty_dir("tmp", TRANSCRIBER_TMP_SIZE), agent_token_volume()]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

/// Everything the pool owns but its backend pods.
pub fn build_captions(cp: &CaptionPool, inputs: &CaptionInputs<'_>) -> Result<CaptionStack, BuildError> {
    let pool = pool_name(cp)?;
    let config = match cp.spec.engine {
        CaptionEngine::Kyutai => moshi_config(cp, inputs.api_key)?,
        // WhisperLive is configured by its arguments, a custom backend by its environment.
        CaptionEngine::Whisperlive | CaptionEngine::Custom => String::new(),
    };
    if inputs.api_key.is_empty() {
        return Err(BuildError::MissingCredential { field: "CaptionPool API key" });
    }
    let config_hash = short_hash(format!("{config}\n{}", inputs.api_key).as_bytes(), 16);
    let backend = backend_template(cp, inputs.agent_image, &config_hash)?;
    let backend_selector = {
        let mut s = selector_labels(cp, BACKEND_COMPONENT);
        s.insert(SERVING_LABEL.into(), LABEL_TRUE.into());
        s
    };
    let mut in_use = selector_labels(cp, BACKEND_COMPONENT);
    in_use.insert(IN_USE_LABEL.into(), LABEL_TRUE.into());
    let port = backend_port(cp.spec.engine);
    Ok(CaptionStack {
        key_secret: secret(child_metadata(cp, key_secret_name(pool), "caption-key")?, &[(API_KEY, inputs.api_key)]),
        config_secret: secret(
            child_metadata(cp, config_secret_name(pool), "caption-config")?,
            &[("config.toml", config.as_str())],
        ),
        service: Service {
            metadata: child_metadata(cp, backend_name(pool), BACKEND_COMPONENT)?,
            spec: Some(ServiceSpec {
                selector: Some(backend_selector),
                ports: Some(vec![ServicePort {
                    name: Some("stt".into()),
                    port: i32::from(port),
                    target_port: Some(IntOrString::Int(i32::from(port))),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        },
        pdb: PodDisruptionBudget {
            metadata: child_metadata(cp, backend_name(pool), BACKEND_COMPONENT)?,
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(0)),
                selector: Some(LabelSelector { match_labels: Some(in_use), match_expressions: None }),
                unhealthy_pod_eviction_policy: Some("IfHealthyBudget".into()),
                ..PodDisruptionBudgetSpec::default()
            }),
            status: None,
        },
        network_policy: backend_network_policy(cp)?,
        agent: agent_access(cp)?,
        transcribers: transcriber_deployment(cp, inputs)?,
        backend,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::labels::{COMPONENT_LABEL, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
    use crate::builders::testing::pool_with;
    use proptest::prelude::*;
    use serde_json::json;

    fn inputs() -> CaptionInputs<'static> {
        CaptionInputs {
            api_key: "k3y",
            livekit_keys_secret: "visio-credentials",
            agent_image: "visio-operator:1",
            transcriber_replicas: 2,
        }
    }

    fn build(cp: &CaptionPool) -> CaptionStack {
        build_captions(cp, &inputs()).unwrap()
    }

    fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
        pod.spec.as_ref().unwrap().containers.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn moshi_config_reads_local_weights_only() {
        let cp = pool_with(json!({"backend": {"slotsPerPod": 48}, "model": {"path": "/models/stt/"}}));
        let toml = moshi_config(&cp, "k\"ey").unwrap();
        assert!(toml.contains("batch_size = 48"));
        assert!(toml.contains(r#"lm_model_file = "/models/stt/model.safetensors""#));
        let parsed: toml::Table = toml::from_str(&toml).unwrap();
        assert_eq!(
            parsed["authorized_ids"],
            toml::Value::Array(vec!["k\"ey".into()]),
            "the key, quoted by the serializer"
        );
        assert!(!toml.contains("hf://"), "never a model hub");
        assert!(moshi_config(&pool_with(json!({"model": {"path": "/a/../etc"}})), "k").is_err());
    }

    /// The config as the hand-written template rendered it before the serializer wrote it: the same keys, the
    /// same values, the same bytes (so the config hash, and the backend pods, stay as they were).
    const DEFAULT_MOSHI_CONFIG: &str = r#"# Generated by visio-operator for CaptionPool captions; edits are overwritten.
# Weights are read from /models/stt-1b-en_fr only: no model hub is contacted at run time.
static_dir = "./static/"
log_dir = "/tmp/moshi-logs"
instance_name = "stt"
authorized_ids = ["k3y"]

[modules.asr]
path = "/api/asr-streaming"
type = "BatchedAsr"
lm_model_file = "/models/stt-1b-en_fr/model.safetensors"
text_tokenizer_file = "/models/stt-1b-en_fr/tokenizer_en_fr_audio_8000.model"
audio_tokenizer_file = "/models/stt-1b-en_fr/mimi-pytorch-e351c8d8@125.safetensors"
asr_delay_in_tokens = 6
batch_size = 64
conditioning_learnt_padding = true
temperature = 0.0

[modules.asr.model]
audio_vocab_size = 2049
text_in_vocab_size = 8001
text_out_vocab_size = 8000
audio_codebooks = 32

[modules.asr.model.transformer]
d_model = 2048
num_heads = 16
num_layers = 16
dim_feedforward = 8192
causal = true
norm_first = true
bias_ff = false
bias_attn = false
context = 750
max_period = 100000
use_conv_block = false
use_conv_bias = true
gating = "silu"
norm = "RmsNorm"
positional_embedding = "Rope"
conv_layout = false
conv_kernel_size = 3
kv_repeat = 1
max_seq_len = 40960

[modules.asr.model.extra_heads]
num_heads = 4
dim = 6
"#;

    #[test]
    fn the_serialized_moshi_config_is_the_one_written_by_hand_before() {
        assert_eq!(moshi_config(&pool_with(json!({})), "k3y").unwrap(), DEFAULT_MOSHI_CONFIG);
    }

    #[test]
    fn no_spec_value_can_add_a_key_to_the_moshi_config() {
        let path = "/models\n[modules.evil]\npath = \"/api/evil\"\n#";
        let key = "k\"]\nstatic_dir = \"/\"\n#\u{7}";
        let toml = moshi_config(&pool_with(json!({"model": {"path": path}})), key).unwrap();
        let parsed: toml::Table = toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let keys = |t: &toml::Table| t.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&parsed), ["authorized_ids", "instance_name", "log_dir", "modules", "static_dir"]);
        assert_eq!(keys(parsed["modules"].as_table().unwrap()), ["asr"], "{toml}");
        assert_eq!(parsed["static_dir"].as_str(), Some("./static/"));
        assert_eq!(parsed["authorized_ids"], toml::Value::Array(vec![key.into()]));
        let asr = parsed["modules"]["asr"].as_table().unwrap();
        assert_eq!(asr["lm_model_file"].as_str(), Some(format!("{path}/model.safetensors").as_str()));
        assert_eq!(asr["path"].as_str(), Some("/api/asr-streaming"));
        // Two comment lines, then the serializer's output: the path's newlines are escaped in the comment.
        assert!(toml.lines().nth(1).unwrap().contains(r"/models\n[modules.evil]"), "{toml}");
        assert!(!toml.lines().nth(2).unwrap().starts_with('#'), "{toml}");
    }

    #[test]
    fn backend_pod_runs_moshi_and_the_agent_with_the_gpu() {
        let cp = pool_with(json!({"backend": {"gpu": {"count": 2, "resourceName": "amd.com/gpu"}}}));
        let s = build(&cp);
        let stt = container(&s.backend.pod, BACKEND_CONTAINER);
        assert_eq!(stt.image.as_deref(), Some(MOSHI_IMAGE));
        assert_eq!(stt.args.as_ref().unwrap()[..3], ["worker", "--config", "/etc/moshi/config.toml"]);
        let r = stt.resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap()["amd.com/gpu"], Quantity("2".into()));
        assert_eq!(r.requests.as_ref().unwrap()["amd.com/gpu"], Quantity("2".into()));
        let agent = container(&s.backend.pod, AGENT_CONTAINER);
        let args = agent.args.as_ref().unwrap().join(" ");
        assert!(args.contains("--backend moshi") && args.contains("--slots 64"), "{args}");
        let env = stt.env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "HF_HUB_OFFLINE" && e.value.as_deref() == Some("1")));
    }

    #[test]
    fn no_gpu_no_gpu_resource() {
        let s = build(&pool_with(json!({"backend": {"gpu": {"count": 0}}})));
        let r = container(&s.backend.pod, BACKEND_CONTAINER).resources.clone().unwrap();
        assert!(!r.limits.unwrap().contains_key("nvidia.com/gpu"));
    }

    #[test]
    fn weights_pvc_is_mounted_read_only_at_the_model_path() {
        let s = build(&pool_with(json!({"model": {"weightsPvc": "stt-weights", "path": "/weights"}})));
        let spec = s.backend.pod.spec.as_ref().unwrap();
        let vol = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "weights").unwrap();
        let pvc = vol.persistent_volume_claim.as_ref().unwrap();
        assert_eq!((pvc.claim_name.as_str(), pvc.read_only), ("stt-weights", Some(true)));
        let m = container(&s.backend.pod, BACKEND_CONTAINER).volume_mounts.clone().unwrap();
        assert!(m.iter().any(|m| m.name == "weights" && m.mount_path == "/weights" && m.read_only == Some(true)));
        // Without a PVC, no weights volume: the image bakes them in at the path.
        let s = build(&pool_with(json!({})));
        assert!(!s.backend.pod.spec.unwrap().volumes.unwrap().iter().any(|v| v.name == "weights"));
    }

    fn ports(c: &Container) -> Vec<(String, i32)> {
        c.ports.iter().flatten().map(|p| (p.name.clone().unwrap_or_default(), p.container_port)).collect()
    }

    #[test]
    fn metrics_ports_are_named_for_the_pod_monitors() {
        // moshi-server and custom backends: streams and /metrics on `stt` (unchanged, so no roll on upgrade).
        for engine in [json!({}), json!({"engine": "custom", "image": "stt:1"})] {
            let s = build(&pool_with(engine));
            assert_eq!(ports(container(&s.backend.pod, BACKEND_CONTAINER)), [("stt".to_string(), 8080)]);
        }
        // WhisperLive: its WebSocket, and its metrics on a port named `metrics`.
        let s = build(&pool_with(json!({"engine": "whisperlive"})));
        assert_eq!(
            ports(container(&s.backend.pod, BACKEND_CONTAINER)),
            [("ws".to_string(), 9090), ("metrics".to_string(), 9091)]
        );
        // The agent reads the port that is named `metrics`.
        let agent = container(&s.backend.pod, AGENT_CONTAINER).args.as_ref().unwrap().join(" ");
        assert!(agent.contains("http://127.0.0.1:9091/metrics"), "{agent}");
        // Transcribers: LiveKit Agents' health and its Prometheus port, which the worker is told.
        let t = s.transcribers.spec.unwrap().template.spec.unwrap();
        let c = &t.containers[0];
        assert_eq!(ports(c), [("health".to_string(), 8081), ("metrics".to_string(), 8082)]);
        let env = c.env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "PROMETHEUS_PORT" && e.value.as_deref() == Some("8082")));
    }

    #[test]
    fn whisperlive_and_custom() {
        let s = build(&pool_with(json!({"engine": "whisperlive", "backend": {"slotsPerPod": 4}})));
        let stt = container(&s.backend.pod, BACKEND_CONTAINER);
        let args = stt.args.as_ref().unwrap().join(" ");
        assert!(args.contains("--max_clients 4"), "{args}");
        assert!(container(&s.backend.pod, AGENT_CONTAINER).args.as_ref().unwrap().contains(&"whisperlive".into()));
        assert_eq!(s.service.spec.unwrap().ports.unwrap()[0].port, 9090);
        let custom = pool_with(json!({"engine": "custom"}));
        assert_eq!(build_captions(&custom, &inputs()).unwrap_err().label(), "invalid_value");
        let custom = pool_with(json!({"engine": "custom", "image": "stt:1"}));
        assert_eq!(container(&build(&custom).backend.pod, BACKEND_CONTAINER).image.as_deref(), Some("stt:1"));
    }

    /// The flags of WhisperLive's `run_server.py` (collabora/WhisperLive, the 0.9.0 tag and the commit
    /// after it that 0.10.0 ships, "fix: correct WebSocket authentication callback"): an argument outside
    /// this list makes the real server exit at start (argparse).
    const RUN_SERVER_FLAGS: [&str; 20] = [
        "--port",
        "--backend",
        "--faster_whisper_custom_model_path",
        "--trt_model_path",
        "--trt_multilingual",
        "--trt_py_session",
        "--omp_num_threads",
        "--no_single_model",
        "--max_clients",
        "--max_connection_time",
        "--cache_path",
        "--rest_port",
        "--enable_rest",
        "--cors-origins",
        "--batch_inference",
        "--batch_max_size",
        "--batch_window_ms",
        "--raw_pcm_input",
        "--metrics_port",
        "--api_key",
    ];

    fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
    }

    #[test]
    fn whisperlive_runs_as_the_upstream_image_does() {
        let s =
            build(&pool_with(json!({"engine": "whisperlive", "backend": {"slotsPerPod": 6, "drainTimeout": "24h"}})));
        let stt = container(&s.backend.pod, BACKEND_CONTAINER);
        assert_eq!(stt.image.as_deref(), Some("registry.visio.local/collabora/whisperlive:0.10.0"));
        // No ENTRYPOINT in the upstream image: the program must be given, or `--port` is run as one.
        assert_eq!(stt.command.as_deref(), Some(&["python".to_string(), "run_server.py".to_string()][..]));
        let args = stt.args.clone().unwrap();
        for a in args.iter().filter(|a| a.starts_with("--")) {
            assert!(RUN_SERVER_FLAGS.contains(&a.as_str()), "{a} is not a flag of run_server.py");
        }
        assert_eq!(flag(&args, "--max_clients"), Some("6"));
        assert_eq!(flag(&args, "--backend"), Some("faster_whisper"));
        // The metrics are served only with --metrics_port, on the port Prometheus and the agent read.
        assert_eq!(flag(&args, "--metrics_port"), Some("9091"));
        assert!(ports(stt).contains(&(METRICS_PORT_NAME.to_string(), 9091)));
        // Streams last as long as the longest meeting (the default, 300 s, would cut every one at 5 min),
        // at least the pool's own drain deadline.
        let longest: u64 = flag(&args, "--max_connection_time").unwrap().parse().unwrap();
        assert_eq!(longest, 24 * 3600);
        assert!(longest >= duration_seconds("d", "24h").unwrap());
        // The key the way WhisperLive reads it: the flag, expanded by the kubelet from the Secret's env.
        assert_eq!(flag(&args, "--api_key"), Some("$(CAPTION_API_KEY)"));
        let env = stt.env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "CAPTION_API_KEY" && e.value_from.is_some()));
        assert!(!args.iter().any(|a| a.contains("k3y")), "the key itself is in no pod spec");
        assert_ne!(s.backend.pod.spec.as_ref().unwrap().share_process_namespace, Some(true));
    }

    #[test]
    fn moshi_config_has_kyutais_values_for_the_model() {
        // configs/config-stt-en_fr-hf.toml of kyutai-labs/delayed-streams-modeling.
        let toml = moshi_config(&pool_with(json!({})), "k").unwrap();
        assert!(toml.contains("\naudio_codebooks = 32\n"), "{toml}");
        assert!(toml.contains("\ntemperature = 0.0\n"), "{toml}");
        for line in
            ["asr_delay_in_tokens = 6", "audio_vocab_size = 2049", "text_in_vocab_size = 8001", "d_model = 2048"]
        {
            assert!(toml.contains(line), "{line}");
        }
    }

    #[test]
    fn the_key_goes_to_both_sides() {
        let s = build(&pool_with(json!({})));
        assert_eq!(s.key_secret.data.as_ref().unwrap()[API_KEY].0, b"k3y");
        let from_secret = |c: &Container| {
            c.env.as_ref().unwrap().iter().any(|e| {
                e.name == "CAPTION_API_KEY"
                    && e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).map(|r| r.name.as_str())
                        == Some("captions-caption-key")
            })
        };
        assert!(from_secret(container(&s.backend.pod, BACKEND_CONTAINER)));
        let tpl = s.transcribers.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert!(from_secret(&tpl.containers[0]));
        let toml = String::from_utf8(s.config_secret.data.as_ref().unwrap()["config.toml"].0.clone()).unwrap();
        assert!(toml.contains("authorized_ids = [\"k3y\"]"));
        assert!(!format!("{s:?}").contains("k3y"), "Debug hides the key");
    }

    #[test]
    fn transcribers_get_a_grace_period_for_their_drain() {
        let s = build(&pool_with(json!({"transcribers": {"drainTimeout": "90m"}})));
        let d = s.transcribers.spec.unwrap();
        assert_eq!(d.replicas, Some(2));
        let pod = d.template.spec.unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(90 * 60 + 60));
        // The worker's own drain deadline (upstream default 3600 s) is the pool's, or it gives up at 1 h.
        let env = pod.containers[0].env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "DRAIN_TIMEOUT_SECONDS" && e.value.as_deref() == Some("5400")));
        let bad = pool_with(json!({"transcribers": {"drainTimeout": "soon"}}));
        assert_eq!(build_captions(&bad, &inputs()).unwrap_err().label(), "invalid_duration");
    }

    #[test]
    fn transcriber_pods_carry_an_agent_that_reports_their_jobs() {
        let cp = pool_with(json!({"transcribers": {"jobsPerWorker": 12}}));
        let s = build(&cp);
        let spec = s.transcribers.spec.unwrap().template.spec.unwrap();
        let agent = spec.containers.iter().find(|c| c.name == AGENT_CONTAINER).unwrap();
        let args = agent.args.as_ref().unwrap().join(" ");
        assert_eq!(
            args,
            "agent --backend transcriber --metrics-url http://127.0.0.1:8082/metrics --slots 12 --health-addr 127.0.0.1:8083"
        );
        assert!(agent.readiness_probe.is_none());
        assert_eq!(spec.service_account_name, Some(agent_name(cp.meta().name.as_deref().unwrap())));
        // The worker gets no token; the agent's comes from the projected volume.
        assert_eq!(spec.automount_service_account_token, Some(false));
        let worker = spec.containers.iter().find(|c| c.name == TRANSCRIBER_CONTAINER).unwrap();
        assert!(worker.volume_mounts.as_ref().unwrap().iter().all(|m| m.name != "agent-token"));
        assert!(spec.volumes.unwrap().iter().any(|v| v.name == "agent-token"));
    }

    #[test]
    fn service_routes_to_serving_pods_and_pdb_protects_busy_ones() {
        let s = build(&pool_with(json!({})));
        let sel = s.service.spec.unwrap().selector.unwrap();
        assert_eq!(sel.get(SERVING_LABEL).map(String::as_str), Some("true"));
        assert_eq!(sel.get(COMPONENT_LABEL).map(String::as_str), Some(BACKEND_COMPONENT));
        let pdb = s.pdb.spec.unwrap();
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(pdb.selector.unwrap().match_labels.unwrap().get(IN_USE_LABEL).map(String::as_str), Some("true"));
    }

    /// Whether a pod with `labels` is selected by `selector` (match labels only, as the operator writes them).
    fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
        assert!(selector.match_expressions.is_none());
        selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v))
    }

    fn transcriber_labels(s: &CaptionStack) -> BTreeMap<String, String> {
        s.transcribers.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap()
    }

    fn tcp(port: i32) -> Vec<k8s_openapi::api::networking::v1::NetworkPolicyPort> {
        vec![k8s_openapi::api::networking::v1::NetworkPolicyPort {
            port: Some(IntOrString::Int(port)),
            protocol: Some("TCP".into()),
            end_port: None,
        }]
    }

    #[test]
    fn backends_take_streams_from_their_pools_transcribers_and_scrapes_from_monitoring_only() {
        for (engine, stream, metrics) in [("kyutai", 8080, 8080), ("custom", 8080, 8080), ("whisperlive", 9090, 9091)] {
            let s = build(&pool_with(json!({"engine": engine, "image": "stt:1"})));
            let p = &s.network_policy;
            assert_eq!(p.metadata.name.as_deref(), Some("captions-backend"));
            let spec = p.spec.as_ref().unwrap();
            assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_string()][..]), "{engine}");
            let backend_labels = s.backend.pod.metadata.labels.as_ref().unwrap();
            let selector = spec.pod_selector.as_ref().unwrap();
            assert!(selects(selector, backend_labels), "{engine}: selects the backend pods");
            assert!(!selects(selector, &transcriber_labels(&s)), "{engine}: and not the transcribers");
            // Two rules, nothing else: no ipBlock, no rule open to everyone.
            let rules = spec.ingress.as_ref().unwrap();
            assert_eq!(rules.len(), 2, "{engine}: {rules:?}");
            // Streams: this pool's transcriber pods, in this namespace (no namespace selector).
            let from = rules[0].from.as_ref().unwrap();
            assert_eq!(rules[0].ports, Some(tcp(stream)), "{engine}");
            assert_eq!(from.len(), 1);
            assert!(from[0].namespace_selector.is_none() && from[0].ip_block.is_none(), "{engine}: same namespace");
            let peers = from[0].pod_selector.as_ref().unwrap();
            assert!(selects(peers, &transcriber_labels(&s)), "{engine}: the transcribers are admitted");
            assert!(!selects(peers, backend_labels), "{engine}");
            // ... on the port they dial: the Service's target port, in the URL they are given.
            let svc = s.service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].clone();
            assert_eq!(svc.target_port, Some(IntOrString::Int(stream)));
            let env = s.transcribers.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].env.clone();
            let url = env.unwrap().into_iter().find(|e| e.name == "CAPTION_BACKEND_URL").unwrap().value.unwrap();
            assert!(url.starts_with(&format!("ws://captions-backend:{stream}")), "{url}");
            // Metrics: monitoring namespaces only, on the port the PodMonitor scrapes by name. The agent
            // reads them on loopback, which no NetworkPolicy governs.
            let from = rules[1].from.as_ref().unwrap();
            assert_eq!(rules[1].ports, Some(tcp(metrics)), "{engine}");
            assert_eq!(from.len(), 1);
            assert!(from[0].pod_selector.is_none() && from[0].ip_block.is_none());
            let ns = from[0].namespace_selector.as_ref().unwrap().match_labels.clone().unwrap();
            assert_eq!(ns, BTreeMap::from([(MONITORING_NAMESPACE_LABEL.to_string(), "true".to_string())]));
            let stt = container(&s.backend.pod, BACKEND_CONTAINER);
            assert!(ports(stt)
                .iter()
                .any(|(name, n)| *n == metrics && [STREAM_PORT_NAME, METRICS_PORT_NAME].contains(&name.as_str())));
            let agent = container(&s.backend.pod, AGENT_CONTAINER).args.as_ref().unwrap().join(" ");
            assert!(agent.contains(&format!("http://127.0.0.1:{metrics}/metrics")), "{agent}");
        }
    }

    #[test]
    fn another_pools_transcribers_cannot_reach_these_backends() {
        let a = build(&pool_with(json!({})));
        let mut other = pool_with(json!({}));
        other.metadata.name = Some("autre".into());
        let b = build(&other);
        let spec = a.network_policy.spec.as_ref().unwrap();
        let peers = spec.ingress.as_ref().unwrap()[0].from.as_ref().unwrap()[0].pod_selector.clone().unwrap();
        assert!(selects(&peers, &transcriber_labels(&a)));
        assert!(!selects(&peers, &transcriber_labels(&b)), "another pool's transcribers");
        let selector = spec.pod_selector.as_ref().unwrap();
        assert!(!selects(selector, b.backend.pod.metadata.labels.as_ref().unwrap()), "another pool's backends");
        assert_eq!(peers.match_labels.unwrap().get(POOL_LABEL).map(String::as_str), Some("captions"));
    }

    #[test]
    fn every_child_is_owned_labelled_and_hardened() {
        let cp = pool_with(json!({}));
        let s = build(&cp);
        let metas = [
            &s.key_secret.metadata,
            &s.config_secret.metadata,
            &s.service.metadata,
            &s.pdb.metadata,
            &s.network_policy.metadata,
            &s.agent.service_account.metadata,
            &s.agent.role.metadata,
            &s.agent.role_binding.metadata,
            &s.transcribers.metadata,
            &s.backend.pod.metadata,
        ];
        for m in metas {
            let owner = &m.owner_references.as_ref().unwrap()[0];
            assert_eq!((owner.kind.as_str(), owner.controller), ("CaptionPool", Some(true)));
            let l = m.labels.as_ref().unwrap();
            assert_eq!(l[MANAGED_BY_LABEL], MANAGED_BY);
            assert_eq!(l[INSTANCE_LABEL], "captions");
            assert_eq!(l[CLUSTER_LABEL], "visio");
            assert_eq!(m.namespace.as_deref(), Some("minsante"));
        }
        for c in &s.backend.pod.spec.as_ref().unwrap().containers {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(sc.allow_privilege_escalation, Some(false));
        }
    }

    #[test]
    fn hash_follows_what_runs_not_the_agent_image() {
        let cp = pool_with(json!({}));
        let a = build(&cp).backend.hash;
        let other_agent = CaptionInputs { agent_image: "visio-operator:2", ..inputs() };
        assert_eq!(a, build_captions(&cp, &other_agent).unwrap().backend.hash);
        assert_ne!(a, build(&pool_with(json!({"image": "moshi:2"}))).backend.hash);
        assert_ne!(a, build(&pool_with(json!({"backend": {"slotsPerPod": 32}}))).backend.hash);
        let other_key = CaptionInputs { api_key: "other", ..inputs() };
        assert_ne!(a, build_captions(&cp, &other_key).unwrap().backend.hash);
        // Autoscaling settings do not roll pods.
        assert_eq!(
            a,
            build(&pool_with(json!({"backend": {"targetOccupancyPercent": 50, "slotBuffer": 3}}))).backend.hash
        );
    }

    #[test]
    fn bad_metadata_is_an_error_not_a_panic() {
        let mut cp = pool_with(json!({}));
        cp.metadata.name = Some("Captions_1".into());
        assert_eq!(build_captions(&cp, &inputs()).unwrap_err().label(), "invalid_name");
        let mut cp = pool_with(json!({}));
        cp.metadata.uid = None;
        assert_eq!(build_captions(&cp, &inputs()).unwrap_err().label(), "missing_uid");
        let cp = pool_with(json!({}));
        let no_key = CaptionInputs { api_key: "", ..inputs() };
        assert_eq!(build_captions(&cp, &no_key).unwrap_err().label(), "missing_credentials");
    }

    proptest! {
        #[test]
        fn never_panics(slots in -5i32..5000, gpu in -2i32..20, path in "\\PC{0,40}", image in proptest::option::of("\\PC{0,20}"),
                        engine in prop_oneof![Just("kyutai"), Just("whisperlive"), Just("custom")], drain in "\\PC{0,8}") {
            let cp = pool_with(json!({"engine": engine, "image": image, "model": {"path": path},
                "backend": {"slotsPerPod": slots, "gpu": {"count": gpu}}, "transcribers": {"drainTimeout": drain}}));
            let _ = build_captions(&cp, &inputs());
        }
    }
}
