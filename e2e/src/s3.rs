//! The S3-compatible server of the retention tests (SeaweedFS, started by `e2e/s3server` on
//! loopback): where it is, and small helpers to fill and list a bucket.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use visio_operator::api::retentionpolicy::RetentionTarget;
use visio_operator::retention::sweep::aws_sdk_s3::error::ProvideErrorMetadata;
use visio_operator::retention::sweep::aws_sdk_s3::primitives::ByteStream;
use visio_operator::retention::sweep::aws_sdk_s3::Client;
use visio_operator::retention::sweep::{self, S3Credentials};

/// The server's endpoint and its one identity.
#[derive(Clone, Debug)]
pub struct S3 {
    pub endpoint: String,
    pub creds: S3Credentials,
}

impl S3 {
    /// From `VISIO_E2E_S3_ENDPOINT`, `VISIO_E2E_S3_ACCESS_KEY`, `VISIO_E2E_S3_SECRET_KEY`
    /// (set by e2e/run-tests). Refuses any endpoint off loopback.
    pub fn from_env() -> Result<S3> {
        let endpoint =
            std::env::var("VISIO_E2E_S3_ENDPOINT").context("VISIO_E2E_S3_ENDPOINT is not set (run e2e/run-tests)")?;
        if !(endpoint.starts_with("http://127.")
            || endpoint.starts_with("http://localhost")
            || endpoint.starts_with("http://[::1]"))
        {
            bail!("refusing S3 endpoint {endpoint}: loopback only");
        }
        Ok(S3 {
            endpoint,
            creds: S3Credentials {
                access_key_id: std::env::var("VISIO_E2E_S3_ACCESS_KEY")?,
                secret_access_key: std::env::var("VISIO_E2E_S3_SECRET_KEY")?,
            },
        })
    }

    pub fn target(&self, bucket: &str) -> RetentionTarget {
        RetentionTarget {
            endpoint: self.endpoint.clone(),
            bucket: bucket.into(),
            region: "us-east-1".into(),
            credentials_secret: "s3".into(),
            path_style: true,
        }
    }

    /// A client configured exactly as the operator's sweeper configures its own.
    pub fn client(&self) -> Client {
        sweep::client(&self.target("unused"), &self.creds)
    }
}

/// Creates `bucket` (an existing one is fine).
pub async fn create_bucket(c: &Client, bucket: &str) -> Result<()> {
    match c.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou") | Some("BucketAlreadyExists")) => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "CreateBucket {bucket}: {}",
            visio_operator::retention::sweep::aws_sdk_s3::error::DisplayErrorContext(e)
        )),
    }
}

/// Writes one object; `tagging` is a URL-encoded tag set such as `visio-legal-hold=true`.
pub async fn put(c: &Client, bucket: &str, key: &str, body: Vec<u8>, tagging: Option<&str>) -> Result<()> {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .set_tagging(tagging.map(str::to_string))
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "PutObject {key}: {}",
                visio_operator::retention::sweep::aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    Ok(())
}

/// Writes many small objects, `in_flight` at a time.
pub async fn put_many(c: &Client, bucket: &str, keys: Vec<String>, size: usize, in_flight: usize) -> Result<()> {
    let results: Vec<Result<()>> = futures::stream::iter(keys)
        .map(|k| async move { put(c, bucket, &k, vec![b'x'; size], None).await })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Every key in the bucket (bounded: at most 2,000 pages).
pub async fn list_keys(c: &Client, bucket: &str) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut token = None;
    for _ in 0..2000 {
        let page = c.list_objects_v2().bucket(bucket).set_continuation_token(token).send().await.map_err(|e| {
            anyhow::anyhow!(
                "ListObjectsV2 {bucket}: {}",
                visio_operator::retention::sweep::aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
        out.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
    bail!("bucket {bucket} lists more than 2,000 pages")
}
