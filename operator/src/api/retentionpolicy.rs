//! `RetentionPolicy`: how long meeting data lives in a bucket, and the legal holds that stop deletion.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DURATION_PATTERN, NAME_PATTERN};

/// Deletes meeting data older than its rule's `maxAge` from one S3-compatible bucket, never an
/// object on legal hold, and records every deletion (log line, metric, Event, status).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "visio.io",
    version = "v1alpha1",
    kind = "RetentionPolicy",
    plural = "retentionpolicies",
    shortname = "rp",
    category = "visio",
    namespaced,
    status = "RetentionPolicyStatus",
    printcolumn = r#"{"name":"Bucket","type":"string","jsonPath":".spec.target.bucket"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Last-Run","type":"date","jsonPath":".status.lastRun.finished"}"#,
    printcolumn = r#"{"name":"Deleted","type":"integer","jsonPath":".status.lastRun.deleted","description":"Objects deleted by the last run"}"#,
    printcolumn = r#"{"name":"Held","type":"integer","jsonPath":".status.lastRun.held","description":"Objects kept because of a legal hold"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicySpec {
    /// The bucket this policy governs. Its endpoint and bucket are immutable, so a policy can never
    /// be pointed at another ministry's data by an edit.
    pub target: RetentionTarget,
    /// One rule per data class and prefix. An object matches the rule with the longest matching prefix.
    #[schemars(length(min = 1, max = 32), extend("x-kubernetes-validations" = [
        {"rule": "self.all(r, self.exists_one(o, o.prefix == r.prefix))", "message": "spec.rules: each prefix may appear only once"}
    ]))]
    pub rules: Vec<RetentionRule>,
    /// How legal holds are recognised. Objects on hold are never deleted.
    #[serde(default)]
    pub legal_hold: LegalHoldSpec,
    /// Time between two sweeps.
    #[serde(default = "default_interval")]
    #[schemars(extend("pattern" = DURATION_PATTERN, "x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1m') && duration(self) <= duration('168h')", "message": "spec.interval must be between 1m and 168h"}
    ]))]
    pub interval: String,
    /// `Enforce` deletes expired objects; `DryRun` only reports what it would delete. Required,
    /// so that deletion is always an explicit choice.
    pub mode: RetentionMode,
}

fn default_interval() -> String {
    "1h".into()
}

/// Sweep mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RetentionMode {
    /// Delete expired objects.
    Enforce,
    /// Report what would be deleted, delete nothing.
    DryRun,
}

/// An S3-compatible bucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.endpoint == oldSelf.endpoint && self.bucket == oldSelf.bucket", "message": "spec.target.endpoint and spec.target.bucket are immutable: create a new RetentionPolicy for another bucket"}
]))]
pub struct RetentionTarget {
    /// S3 endpoint URL.
    #[schemars(length(min = 1, max = 2048), extend("pattern" = r"^https?://[^\s/]+(/.*)?$"))]
    pub endpoint: String,
    /// Bucket name.
    #[schemars(length(min = 3, max = 63), extend("pattern" = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,
    /// Region used to sign requests.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Secret (same namespace) with the keys `accessKeyId` and `secretAccessKey`.
    #[schemars(length(min = 1, max = 253), extend("pattern" = NAME_PATTERN))]
    pub credentials_secret: String,
    /// Use path-style addressing (`endpoint/bucket/key`), as most on-premises S3 servers need.
    #[serde(default = "yes")]
    pub path_style: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn yes() -> bool {
    true
}

/// Kinds of meeting data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DataClass {
    /// Audio/video recordings.
    Recordings,
    /// Stored transcripts.
    Transcripts,
    /// Stored live captions.
    Captions,
    /// AI meeting summaries.
    Summaries,
    /// Speaker and participation metadata.
    Metadata,
}

/// How long one class of data lives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionRule {
    /// What kind of data the prefix holds (reported in the audit trail).
    pub data_class: DataClass,
    /// Object key prefix, for example `recordings/`. Must not start with `/`.
    #[schemars(length(min = 1, max = 1024), extend("pattern" = r"^[^/].*$"))]
    pub prefix: String,
    /// Age after which an object is deleted. At least 1h, so a typo cannot wipe fresh data.
    #[schemars(extend("pattern" = DURATION_PATTERN, "x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1h')", "message": "maxAge must be at least 1h"}
    ]))]
    pub max_age: String,
}

/// How legal holds are marked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegalHoldSpec {
    /// Object tag whose presence (with `tagValue`) puts an object on hold.
    #[serde(default = "default_hold_tag")]
    #[schemars(length(min = 1, max = 128))]
    pub tag_key: String,
    /// Tag value meaning "on hold".
    #[serde(default = "default_hold_value")]
    #[schemars(length(min = 1, max = 256))]
    pub tag_value: String,
    /// Also honour S3 Object Lock legal holds (`GetObjectLegalHold`).
    #[serde(default = "yes")]
    pub object_lock: bool,
}

impl Default for LegalHoldSpec {
    fn default() -> Self {
        Self { tag_key: default_hold_tag(), tag_value: default_hold_value(), object_lock: true }
    }
}

fn default_hold_tag() -> String {
    "visio-legal-hold".into()
}
fn default_hold_value() -> String {
    "true".into()
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicyStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last finished sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<SweepSummary>,
    /// When the last successful sweep finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Time>,
    /// When the next sweep is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Time>,
    /// The sweep under way (or interrupted): where it is, saved after each page, so a restarted
    /// operator continues it instead of starting over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<SweepCheckpoint>,
}

/// A sweep under way.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SweepCheckpoint {
    /// When the sweep started.
    pub started: Option<Time>,
    /// `Enforce` or `DryRun`: a checkpoint is only resumed in the same mode.
    pub mode: String,
    /// The spec generation the sweep runs: a checkpoint is only resumed for the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Where the sweep is and what it did so far.
    pub progress: SweepProgress,
}

/// Where a sweep is and what it has done so far.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SweepProgress {
    /// The last key fully handled; the listing continues after it. Absent: from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_after: Option<String>,
    /// Objects listed.
    pub scanned: i64,
    /// Objects deleted (in `DryRun`: that would have been).
    pub deleted: i64,
    /// Bytes deleted (in `DryRun`: that would have been).
    pub bytes_deleted: i64,
    /// Expired objects kept because of a legal hold.
    pub held: i64,
    /// Objects kept because something could not be checked.
    pub errors: i64,
}

/// Figures of one sweep.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SweepSummary {
    /// When the sweep started.
    pub started: Option<Time>,
    /// When it finished.
    pub finished: Option<Time>,
    /// `Enforce` or `DryRun`.
    pub mode: String,
    /// Objects listed.
    pub scanned: i64,
    /// Objects deleted (or, in `DryRun`, that would have been).
    pub deleted: i64,
    /// Bytes deleted (or that would have been).
    pub bytes_deleted: i64,
    /// Expired objects kept because of a legal hold.
    pub held: i64,
    /// Errors met (the object is kept and retried next sweep).
    pub errors: i64,
}
