//! The sweeper: lists one bucket page by page, asks about legal holds for the expired objects,
//! deletes (in `Enforce`) what [`super::decide`] allows in batches, and writes one audit line per
//! deletion.
//!
//! Memory is bounded by one page (at most [`PAGE_SIZE`] keys) whatever the bucket's size. The
//! listing resumes with `StartAfter` = the last key of the previous page, a position that stays
//! meaningful across restarts (unlike a continuation token), so a [`Progress`] saved after each
//! page lets an interrupted sweep continue where it was. Deletion is idempotent on its own: an
//! object deleted before a crash is no longer listed, so nothing is deleted twice; the objects
//! after the checkpoint are listed again, so nothing is missed.
//!
//! What a sweep may cost is bounded ([`super::limits`]): pages and wall time per sweep, a listing
//! that must move forward, and the size of every answer ([`super::bounded`]). A cap reached fails
//! the sweep between two pages, or before the current page's DeleteObjects: nothing is deleted
//! that was not fully decided, and the progress stays at the last page handled.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The S3 SDK, for tests and tools that fill a bucket with the same client configuration.
pub use aws_sdk_s3;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{Delete, ObjectIdentifier, ObjectLockLegalHoldStatus};
use aws_sdk_s3::Client;
use futures::StreamExt;

use super::bounded::{over_cap, AnswerCapInterceptor, NoRetryOverCap};
use super::decide::{self, Age, Hold, Holds, Rule, Verdict};
use super::limits::{self, Budget, Limits};
use crate::api::retentionpolicy::{LegalHoldSpec, RetentionMode, RetentionTarget};

/// Keys per ListObjectsV2 page, and so per DeleteObjects batch (the S3 maximum is 1000 for both).
pub const PAGE_SIZE: i32 = 1000;
/// Hold checks in flight at once.
const HOLD_CHECKS_IN_FLIGHT: usize = 16;
/// Per-object warnings (an object kept because its hold could not be read) one sweep logs; the
/// rest are counted in `errors` only, so an endpoint failing every check cannot flood the log.
const OBJECT_WARNINGS_PER_SWEEP: u32 = 100;

/// Access keys, read from the policy's Secret. `Debug` never shows the secret.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// An S3 client for `target`, with bounded timeouts and retries (a sweep must fail in seconds,
/// not hang, when the endpoint is unreachable) and answers capped at the default sizes.
pub fn client(target: &RetentionTarget, creds: &S3Credentials) -> Client {
    client_with_cap(target, creds, limits::DEFAULT_MAX_RESPONSE_BYTES)
}

/// [`client`], with ListObjectsV2 and DeleteObjects answers capped at `page_bytes`
/// ([`super::bounded`]).
pub fn client_with_cap(target: &RetentionTarget, creds: &S3Credentials, page_bytes: u64) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(target.region.clone()))
        .endpoint_url(target.endpoint.trim_end_matches('/'))
        .force_path_style(target.path_style)
        .credentials_provider(Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.clone(),
            None,
            None,
            "retentionpolicy-secret",
        ))
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(Duration::from_secs(90))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .interceptor(AnswerCapInterceptor { page_bytes })
        .retry_classifier(NoRetryOverCap)
        .build();
    Client::from_conf(conf)
}

/// Why a sweep could not run or stopped. Each names the field to look at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SweepError {
    #[error("spec.target.endpoint: cannot reach {endpoint}: {detail}")]
    EndpointUnreachable { endpoint: String, detail: String },
    #[error("spec.target.credentialsSecret: the S3 server rejected the credentials ({code})")]
    CredentialsRejected { code: String },
    #[error("spec.target.bucket: bucket {bucket:?} does not exist at {endpoint}")]
    BucketNotFound { bucket: String, endpoint: String },
    #[error("spec.target.endpoint: {endpoint} is not on loopback and this operator runs with {} set (a testing knob): not dialled", LOOPBACK_ONLY_ENV)]
    EndpointNotAllowed { endpoint: String },
    #[error("{0}")]
    InvalidSpec(String),
    #[error("S3 {operation} failed: {detail}")]
    Failed { operation: &'static str, detail: String },
    #[error("spec.target.endpoint: the sweep stopped after {pages} pages, the most one sweep may list (the operator's {}); the next run continues after the last key handled", limits::PAGES_FLAG)]
    PageLimit { pages: u64 },
    #[error("spec.target.endpoint: the sweep stopped after {} s, the longest one sweep may run (the operator's {}), having listed {pages} pages; the next run continues after the last key handled", limit.as_secs(), limits::DURATION_FLAG)]
    TimeLimit { limit: Duration, pages: u64 },
    #[error(
        "spec.target.endpoint: S3 {operation} answered {detail} (the operator's cap, {}); the answer was not used",
        limits::RESPONSE_FLAG
    )]
    ResponseTooLarge { operation: &'static str, detail: String },
    #[error("spec.target.endpoint: the listing does not move forward (the page after the last key handled ends at or before it): the endpoint loops; the sweep stopped")]
    ListingLoops,
}

impl SweepError {
    /// Whether the sweep was stopped by one of the operator's caps ([`super::limits`]).
    pub fn is_cap(&self) -> bool {
        matches!(
            self,
            SweepError::PageLimit { .. }
                | SweepError::TimeLimit { .. }
                | SweepError::ResponseTooLarge { .. }
                | SweepError::ListingLoops
        )
    }

    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            SweepError::EndpointUnreachable { .. } => "EndpointUnreachable",
            SweepError::CredentialsRejected { .. } => "CredentialsRejected",
            SweepError::BucketNotFound { .. } => "BucketNotFound",
            SweepError::EndpointNotAllowed { .. } => "EndpointNotAllowed",
            SweepError::InvalidSpec(_) => "InvalidSpec",
            SweepError::Failed { .. } => "SweepFailed",
            SweepError::PageLimit { .. } => "PageLimitReached",
            SweepError::TimeLimit { .. } => "TimeLimitReached",
            SweepError::ResponseTooLarge { .. } => "ResponseTooLarge",
            SweepError::ListingLoops => "ListingLoops",
        }
    }
}

/// Maps an SDK error to a [`SweepError`]. Only the error code and a short kind are kept: the
/// server's message is not copied (it may echo request details).
fn classify_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    operation: &'static str,
    target: &RetentionTarget,
    e: &SdkError<E>,
) -> SweepError {
    if let Some(over) = over_cap(e) {
        return SweepError::ResponseTooLarge { operation, detail: over.to_string() };
    }
    match e {
        SdkError::DispatchFailure(d) => SweepError::EndpointUnreachable {
            endpoint: target.endpoint.clone(),
            detail: if d.is_timeout() {
                "connection timed out".into()
            } else if d.is_io() {
                "connection failed (refused or reset)".into()
            } else {
                "request could not be sent".into()
            },
        },
        SdkError::TimeoutError(_) => {
            SweepError::EndpointUnreachable { endpoint: target.endpoint.clone(), detail: "request timed out".into() }
        }
        SdkError::ResponseError(_) => SweepError::Failed { operation, detail: "unreadable response".into() },
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let code = e.code().unwrap_or("").to_string();
            match code.as_str() {
                "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "InvalidToken" | "ExpiredToken" => {
                    SweepError::CredentialsRejected { code }
                }
                "NoSuchBucket" => {
                    SweepError::BucketNotFound { bucket: target.bucket.clone(), endpoint: target.endpoint.clone() }
                }
                _ if status == 403 => SweepError::CredentialsRejected { code: format!("HTTP 403 {code}") },
                _ => SweepError::Failed { operation, detail: format!("HTTP {status} {code}") },
            }
        }
        _ => SweepError::Failed { operation, detail: "request failed".into() },
    }
}

/// Where a sweep is and what it has done so far. Saved after every page (in the policy's
/// status), so a restarted operator continues the sweep instead of starting over.
pub use crate::api::retentionpolicy::SweepProgress as Progress;

/// One deletion (or, in `DryRun`, one object that would be deleted): the audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub key: String,
    pub size: i64,
    pub age_secs: i64,
    pub prefix: String,
    pub data_class: &'static str,
}

/// One page, listed and decided, before anything of it is deleted.
struct Decided<'r> {
    /// (key, size, verdict) of each object of the page.
    verdicts: Vec<(String, i64, Verdict<'r>)>,
    /// The progress once the page is handled.
    next: Progress,
    /// Whether this is the last page.
    done: bool,
}

/// One sweep of one bucket.
pub struct Sweeper {
    client: Client,
    target: RetentionTarget,
    rules: Vec<Rule>,
    hold: LegalHoldSpec,
    /// The platform's hold tags, honoured besides the policy's own (`crate::platform::holds`).
    platform_tags: Vec<(String, String)>,
    object_lock: bool,
    mode: RetentionMode,
    now: i64,
    page_size: i32,
    /// What was done so far (and where to continue).
    pub progress: Progress,
    done: bool,
    budget: Budget,
    /// Per-object warnings logged so far (see [`OBJECT_WARNINGS_PER_SWEEP`]).
    warned: AtomicU32,
}

impl Sweeper {
    /// Checks the bucket (reachable, credentials accepted, exists) and whether Object Lock legal
    /// holds can exist in it, then returns a sweeper positioned at `resume` (or at the start).
    /// `now` is the sweep's clock in Unix seconds: every age is measured against it.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        client: Client,
        target: &RetentionTarget,
        rules: Vec<Rule>,
        hold: &LegalHoldSpec,
        mode: RetentionMode,
        now: i64,
        resume: Option<Progress>,
    ) -> Result<Sweeper, SweepError> {
        if loopback_only() && !is_loopback(&target.endpoint) {
            return Err(SweepError::EndpointNotAllowed { endpoint: target.endpoint.clone() });
        }
        if hold.tag_key.is_empty() {
            return Err(SweepError::InvalidSpec("spec.legalHold.tagKey: must not be empty".into()));
        }
        // A one-key listing proves reachability, credentials and the bucket in one request.
        client
            .list_objects_v2()
            .bucket(&target.bucket)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| classify_error("ListObjectsV2", target, &e))?;
        let object_lock = hold.object_lock && object_lock_enabled(&client, target).await?;
        Ok(Sweeper {
            client,
            target: target.clone(),
            rules,
            hold: hold.clone(),
            platform_tags: Vec::new(),
            object_lock,
            mode,
            now,
            page_size: PAGE_SIZE,
            progress: resume.unwrap_or_default(),
            done: false,
            budget: Budget::new(Limits::default(), Instant::now()),
            warned: AtomicU32::new(0),
        })
    }

    /// Also holds every object tagged with one of `tags` (the platform's holds, which no policy can lift).
    pub fn holding_also(mut self, tags: Vec<(String, String)>) -> Self {
        self.platform_tags = tags;
        self
    }

    /// Smaller pages (tests use them to interrupt a sweep between pages of a small bucket).
    pub fn with_page_size(mut self, n: i32) -> Self {
        self.page_size = n.clamp(1, PAGE_SIZE);
        self
    }

    /// Pages and time of this sweep bounded by `limits` (the defaults otherwise), its time counted
    /// from now.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.budget = Budget::new(limits, Instant::now());
        self
    }

    /// Pages listed so far by this sweep (not counting the ones of a run it resumes).
    pub fn pages(&self) -> u64 {
        self.budget.pages()
    }

    /// Whether one more per-object warning may be logged; says so once when the quota is spent.
    fn may_warn(&self) -> bool {
        let n = self.warned.fetch_add(1, Ordering::Relaxed);
        if n == OBJECT_WARNINGS_PER_SWEEP {
            tracing::warn!(bucket = %self.target.bucket, "retention: {OBJECT_WARNINGS_PER_SWEEP} objects of this sweep kept for a failed check; the others are counted in errors, not logged");
        }
        n < OBJECT_WARNINGS_PER_SWEEP
    }

    /// Whether Object Lock legal holds are checked in this bucket.
    pub fn checks_object_lock(&self) -> bool {
        self.object_lock
    }

    /// Whether the listing is finished.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Handles the next page: list, check holds of the expired objects, delete (in `Enforce`),
    /// then call `audit` once per deletion actually confirmed by the server (or, in `DryRun`,
    /// per object that would be deleted), and advance [`Sweeper::progress`]. Returns whether
    /// more pages remain. On error the progress is left at the previous page, so a retry
    /// handles this page again (safely: what was deleted is no longer listed).
    ///
    /// A cap ([`super::limits`]) is an error too: before the page when the sweep has listed its
    /// pages or spent its time; during the listing and hold checks when the time runs out (the
    /// page is then dropped undecided, nothing of it deleted); after the listing when the page does
    /// not move forward or holds more keys than asked.
    pub async fn next_page(&mut self, audit: impl FnMut(&Deletion)) -> Result<bool, SweepError> {
        if self.done {
            return Ok(false);
        }
        self.budget.take_page(Instant::now())?;
        let deadline = tokio::time::Instant::from_std(self.budget.deadline());
        let this = &*self;
        let decided = match tokio::time::timeout_at(deadline, this.list_and_decide()).await {
            Ok(decided) => decided?,
            Err(_) => return Err(this.budget.out_of_time()),
        };
        let (progress, done) = this.carry_out(decided, audit).await?;
        self.progress = progress;
        self.done = done;
        Ok(!done)
    }

    /// Lists the next page, asks about the holds of its expired objects and decides each one:
    /// nothing is deleted yet, nothing of `self` changed.
    async fn list_and_decide(&self) -> Result<Decided<'_>, SweepError> {
        let this = self;
        let page = this
            .client
            .list_objects_v2()
            .bucket(&this.target.bucket)
            .max_keys(this.page_size)
            .set_start_after(this.progress.start_after.clone())
            .send()
            .await
            .map_err(|e| classify_error("ListObjectsV2", &this.target, &e))?;
        let objects = page.contents();
        if objects.len() > this.page_size as usize {
            return Err(SweepError::ResponseTooLarge {
                operation: "ListObjectsV2",
                detail: format!("{} keys for a page of at most {}", objects.len(), this.page_size),
            });
        }
        let more = page.is_truncated().unwrap_or(false) && !objects.is_empty();
        let last = objects.last().and_then(|o| o.key());
        if more && !limits::advances(this.progress.start_after.as_deref(), last) {
            return Err(SweepError::ListingLoops);
        }
        let mut next = this.progress.clone();
        next.scanned += objects.len() as i64;
        if let Some(last) = last {
            next.start_after = Some(last.to_string());
        }

        // Classify (pure), then ask about holds for the expired ones only.
        let ages: Vec<(&str, i64, Age)> = objects
            .iter()
            .filter_map(|o| {
                let key = o.key()?;
                let modified = o.last_modified().map(|t| t.secs());
                Some((key, o.size().unwrap_or(0), decide::classify(&this.rules, key, modified, this.now)))
            })
            .collect();
        // Owned keys into the stream: borrowed ones trip the Send check of the spawned sweep.
        let expired: Vec<(usize, String)> = ages
            .iter()
            .enumerate()
            .filter(|(_, (_, _, age))| matches!(age, Age::Expired { .. }))
            .map(|(i, (k, _, _))| (i, k.to_string()))
            .collect();
        let answers: Vec<(usize, Holds)> = futures::stream::iter(expired)
            .map(|(i, k)| async move { (i, this.holds(&k).await) })
            .buffered(HOLD_CHECKS_IN_FLIGHT)
            .collect()
            .await;
        let mut holds = vec![Holds::default(); ages.len()];
        for (i, h) in answers {
            holds[i] = h;
        }
        let verdicts: Vec<(String, i64, Verdict)> =
            ages.iter().zip(holds).map(|((k, size, age), h)| (k.to_string(), *size, decide::verdict(age, h))).collect();
        for (key, _, v) in &verdicts {
            match v {
                Verdict::Held => next.held += 1,
                Verdict::Error => {
                    next.errors += 1;
                    if this.may_warn() {
                        tracing::warn!(bucket = %this.target.bucket, key = %key, "retention: object kept, its age or legal hold could not be checked");
                    }
                }
                _ => {}
            }
        }
        Ok(Decided { verdicts, next, done: !more })
    }

    /// Deletes (in `Enforce`) what `decided` allows, audits each deletion the server confirmed,
    /// and returns the progress after the page and whether the listing is finished.
    async fn carry_out(
        &self,
        decided: Decided<'_>,
        mut audit: impl FnMut(&Deletion),
    ) -> Result<(Progress, bool), SweepError> {
        let Decided { verdicts, mut next, done } = decided;
        let pairs: Vec<(&str, Verdict)> = verdicts.iter().map(|(k, _, v)| (k.as_str(), v.clone())).collect();
        let keys = decide::to_delete(&pairs, self.mode);
        let confirmed: std::collections::HashSet<String> =
            if keys.is_empty() { Default::default() } else { self.delete_batch(&keys, &mut next).await? };
        let mode = match self.mode {
            RetentionMode::Enforce => "Enforce",
            RetentionMode::DryRun => "DryRun",
        };
        for (key, size, v) in &verdicts {
            let Verdict::Expired { rule, age_secs } = v else { continue };
            if decide::deletes(self.mode) && !confirmed.contains(key) {
                continue;
            }
            next.deleted += 1;
            next.bytes_deleted += size;
            let d = Deletion {
                key: key.clone(),
                size: *size,
                age_secs: *age_secs,
                prefix: rule.prefix.clone(),
                data_class: rule.class_name(),
            };
            tracing::info!(
                target: "visio_operator::retention::audit",
                bucket = %self.target.bucket,
                key = %d.key,
                size = d.size,
                age_seconds = d.age_secs,
                rule = %d.prefix,
                data_class = d.data_class,
                mode,
                "{}",
                if decide::deletes(self.mode) { "retention: deleted" } else { "retention: would delete (DryRun)" }
            );
            audit(&d);
        }
        Ok((next, done))
    }

    /// Runs the remaining pages to the end.
    pub async fn run(&mut self, mut audit: impl FnMut(&Deletion)) -> Result<(), SweepError> {
        while self.next_page(&mut audit).await? {}
        Ok(())
    }

    /// The hold answers for one expired key.
    async fn holds(&self, key: &str) -> Holds {
        let bucket = &self.target.bucket;
        let tag = match self.client.get_object_tagging().bucket(bucket).key(key).send().await {
            Ok(out) => {
                let tags = || out.tag_set().iter().map(|t| (t.key(), t.value()));
                let held = std::iter::once((self.hold.tag_key.as_str(), self.hold.tag_value.as_str()))
                    .chain(self.platform_tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .any(|(k, v)| decide::tag_hold(tags(), k, v) == Hold::On);
                if held {
                    Hold::On
                } else {
                    Hold::Off
                }
            }
            Err(e) => {
                if self.may_warn() {
                    tracing::warn!(bucket = %bucket, key = %key, code = e.code().unwrap_or("-"), "retention: GetObjectTagging failed");
                }
                Hold::Unknown
            }
        };
        let object_lock = if self.object_lock {
            Some(match self.client.get_object_legal_hold().bucket(bucket).key(key).send().await {
                Ok(out) => match out.legal_hold().and_then(|h| h.status()) {
                    Some(ObjectLockLegalHoldStatus::On) => Hold::On,
                    Some(ObjectLockLegalHoldStatus::Off) | None => Hold::Off,
                    Some(_) => Hold::Unknown,
                },
                // The object never had a legal hold set.
                Err(e) if legal_hold_absent(e.code()) => Hold::Off,
                Err(e) => {
                    if self.may_warn() {
                        tracing::warn!(bucket = %bucket, key = %key, code = e.code().unwrap_or("-"), "retention: GetObjectLegalHold failed");
                    }
                    Hold::Unknown
                }
            })
        } else {
            None
        };
        Holds { tag: Some(tag), object_lock }
    }

    /// Deletes `keys` (at most one page) in one DeleteObjects call and returns the keys the
    /// server confirmed. Keys it refused are kept and counted as errors.
    async fn delete_batch(
        &self,
        keys: &[&str],
        next: &mut Progress,
    ) -> Result<std::collections::HashSet<String>, SweepError> {
        let mut ids = Vec::with_capacity(keys.len());
        for k in keys {
            ids.push(
                ObjectIdentifier::builder()
                    .key(*k)
                    .build()
                    .map_err(|e| SweepError::Failed { operation: "DeleteObjects", detail: e.to_string() })?,
            );
        }
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(false)
            .build()
            .map_err(|e| SweepError::Failed { operation: "DeleteObjects", detail: e.to_string() })?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.target.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| classify_error("DeleteObjects", &self.target, &e))?;
        for err in out.errors() {
            next.errors += 1;
            if !self.may_warn() {
                continue;
            }
            tracing::warn!(bucket = %self.target.bucket, key = err.key().unwrap_or("-"), code = err.code().unwrap_or("-"), "retention: the server refused to delete an object; kept");
        }
        Ok(out.deleted().iter().filter_map(|d| d.key().map(str::to_string)).collect())
    }
}

/// Testing knob: when `VISIO_RETENTION_LOOPBACK_ONLY` is set (non-empty), the sweeper dials no
/// endpoint outside the loopback range. e2e/run-tests and e2e/demo set it, so the sample
/// policies (endpoints such as `https://s3.culture.gouv.fr`) never make a test reach out.
pub const LOOPBACK_ONLY_ENV: &str = "VISIO_RETENTION_LOOPBACK_ONLY";

fn loopback_only() -> bool {
    std::env::var_os(LOOPBACK_ONLY_ENV).is_some_and(|v| !v.is_empty())
}

/// Whether an endpoint URL's host is on loopback (127.0.0.0/8, `localhost`, `[::1]`).
pub fn is_loopback(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next() == Some("::1");
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Answers meaning "this object has no legal hold" (never set on it): AWS says
/// `NoSuchObjectLockConfiguration`, SeaweedFS `NoSuchObjectLegalHold`. Any other error keeps the
/// object (counted as an error).
fn legal_hold_absent(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("NoSuchObjectLockConfiguration")
            | Some("ObjectLockConfigurationNotFoundError")
            | Some("NoSuchObjectLegalHold")
    )
}

/// Whether the bucket can hold Object Lock legal holds. A bucket without an Object Lock
/// configuration (or a server without Object Lock at all) cannot: its objects have no legal
/// hold to check. Any other failure stops the sweep (we cannot tell, so we delete nothing).
async fn object_lock_enabled(client: &Client, target: &RetentionTarget) -> Result<bool, SweepError> {
    match client.get_object_lock_configuration().bucket(&target.bucket).send().await {
        Ok(out) => Ok(out
            .object_lock_configuration()
            .and_then(|c| c.object_lock_enabled())
            .is_some_and(|e| e.as_str() == "Enabled")),
        Err(e) if object_lock_unsupported(e.code(), e.raw_response().map(|r| r.status().as_u16())) => Ok(false),
        Err(e) => Err(classify_error("GetObjectLockConfiguration", target, &e)),
    }
}

/// Answers to GetObjectLockConfiguration meaning "no Object Lock here".
pub fn object_lock_unsupported(code: Option<&str>, status: Option<u16>) -> bool {
    matches!(code, Some("ObjectLockConfigurationNotFoundError") | Some("NotImplemented"))
        || (code.is_none() && status == Some(501))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_the_secret() {
        let c = S3Credentials { access_key_id: "AK".into(), secret_access_key: "very-secret".into() };
        let s = format!("{c:?}");
        assert!(s.contains("AK") && !s.contains("very-secret"), "{s}");
    }

    #[test]
    fn object_lock_answers() {
        assert!(object_lock_unsupported(Some("ObjectLockConfigurationNotFoundError"), Some(404)));
        assert!(object_lock_unsupported(Some("NotImplemented"), Some(501)));
        assert!(object_lock_unsupported(None, Some(501)));
        assert!(!object_lock_unsupported(Some("AccessDenied"), Some(403)));
        assert!(!object_lock_unsupported(None, Some(500)));
        assert!(legal_hold_absent(Some("NoSuchObjectLockConfiguration")));
        assert!(legal_hold_absent(Some("NoSuchObjectLegalHold")));
        assert!(!legal_hold_absent(Some("NoSuchKey")), "a vanished object is an error, not a verdict");
        assert!(!legal_hold_absent(Some("InternalError")));
        assert!(!legal_hold_absent(None));
    }

    #[test]
    fn loopback_endpoints() {
        for e in ["http://127.0.0.1:9000", "http://127.3.4.5", "https://localhost:1/x", "http://[::1]:9000/"] {
            assert!(is_loopback(e), "{e}");
        }
        for e in [
            "https://s3.culture.gouv.fr",
            "http://10.0.0.1:9000",
            "http://127.0.0.1.nip.io",
            "http://user@evil/127.0.0.1",
            "http://[::2]:1",
        ] {
            assert!(!is_loopback(e), "{e}");
        }
    }

    /// A loopback server answering every request on every connection with `head` then `body`
    /// (repeated `repeat` times); returns its endpoint and the count of requests it read.
    async fn answering(
        head: String,
        body: &'static [u8],
        repeat: usize,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (head, count) = (head.clone(), count.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 << 10];
                    let mut seen = vec![];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = conn.write_all(head.as_bytes()).await;
                    for _ in 0..repeat {
                        if conn.write_all(body).await.is_err() {
                            return; // the client gave up
                        }
                    }
                });
            }
        });
        (endpoint, requests)
    }

    fn target(endpoint: &str) -> RetentionTarget {
        RetentionTarget {
            endpoint: endpoint.into(),
            bucket: "b".into(),
            region: "us-east-1".into(),
            credentials_secret: "s3".into(),
            path_style: true,
        }
    }

    #[tokio::test]
    async fn the_sdk_gives_up_an_answer_over_its_cap_and_does_not_ask_again() {
        let creds = S3Credentials { access_key_id: "AK".into(), secret_access_key: "SK".into() };
        let xml = "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\n";
        // (head, body, times, what the refusal says)
        let cases: [(String, &'static [u8], usize, &str); 3] = [
            // A Content-Length over the cap: refused before the body is read.
            (format!("{xml}content-length: {}\r\n\r\n", 1u64 << 40), b"<ListBucketResult>", 1, "Content-Length"),
            // No length, a body that never ends: read up to the cap, then given up.
            (
                format!("{xml}connection: close\r\n\r\n<ListBucketResult>"),
                &[b' '; 64 << 10],
                1 << 20,
                "more than 1048576 bytes",
            ),
            // Under the byte cap, but denser in elements than any honest page.
            (format!("{xml}connection: close\r\n\r\n<ListBucketResult>"), b"<Contents/>", 60_000, "XML tags"),
        ];
        for (head, body, times, says) in cases {
            let (endpoint, requests) = answering(head, body, times).await;
            let t = target(&endpoint);
            let c = client_with_cap(&t, &creds, 1 << 20);
            let started = std::time::Instant::now();
            let e = c.list_objects_v2().bucket("b").send().await.unwrap_err();
            let e = classify_error("ListObjectsV2", &t, &e);
            assert_eq!(e.reason(), "ResponseTooLarge", "{e}");
            assert!(e.to_string().contains(says) && e.to_string().contains(limits::RESPONSE_FLAG), "{e}");
            assert!(e.to_string().starts_with("spec.target.endpoint: S3 ListObjectsV2 answered "), "{e}");
            assert_eq!(requests.load(Ordering::SeqCst), 1, "{says}: an answer over the cap is not asked for again");
            assert!(started.elapsed() < Duration::from_secs(10), "{says}: {:?}", started.elapsed());
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = SweepError::BucketNotFound { bucket: "meet".into(), endpoint: "http://127.0.0.1:1".into() };
        assert!(e.to_string().starts_with("spec.target.bucket: "));
        assert_eq!(e.reason(), "BucketNotFound");
        let e = SweepError::CredentialsRejected { code: "InvalidAccessKeyId".into() };
        assert!(e.to_string().starts_with("spec.target.credentialsSecret: "));
        assert!(!e.is_cap());
        for e in [
            SweepError::PageLimit { pages: 1 },
            SweepError::TimeLimit { limit: Duration::from_secs(60), pages: 1 },
            SweepError::ResponseTooLarge { operation: "ListObjectsV2", detail: "x".into() },
            SweepError::ListingLoops,
        ] {
            assert!(e.is_cap() && e.to_string().starts_with("spec.target.endpoint: "), "{e}");
        }
    }
}
