//! A cap on every S3 answer the sweeper reads.
//!
//! The SDK has none: for an operation that is not streaming (all the sweeper's), the orchestrator
//! reads the whole response body into memory before it deserializes it (`aws-smithy-runtime` 1.16,
//! `client/orchestrator/http.rs` `read_body`: `body.collect()`), and no timeout or config setting
//! bounds its size: a tenant's endpoint answering ListObjectsV2 with gigabytes would have them
//! buffered in the operator that serves every tenant. So [`AnswerCapInterceptor`] replaces the
//! response body, after transmit and before that read (`modify_before_deserialization`), with a
//! [`BoundedBody`] that fails as soon as the answer passes its operation's [`AnswerCap`]: its
//! declared `Content-Length` is refused before any byte is read, and a body without one is read a
//! frame at a time and given up when it passes the cap, so at most the cap plus one frame is ever
//! held. The same body counts tags (`<`), which bounds how many elements a dense body under the byte
//! cap makes the XML parser allocate. [`NoRetryOverCap`] stops the SDK from retrying such an answer
//! (it retries unreadable responses as transient errors): asking again would read it again.

use std::pin::Pin;
use std::task::{Context, Poll};

use aws_sdk_s3::config::interceptors::{BeforeDeserializationInterceptorContextMut, InterceptorContext};
use aws_sdk_s3::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::classifiers::RetryClassifierPriority;
use aws_smithy_types::body::SdkBody;
use hyper::body::{Body, Bytes, Frame, SizeHint};

use super::limits::AnswerCap;

/// Why an answer was given up: the cap it passed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OverCap {
    #[error("a body of {declared} bytes (its Content-Length), over the cap of {cap} bytes")]
    Declared { declared: u64, cap: u64 },
    #[error("a body of more than {cap} bytes")]
    Bytes { cap: u64 },
    #[error("a body of more than {cap} XML tags")]
    Tags { cap: u64 },
}

/// The [`OverCap`] somewhere in an error's chain of sources, if an answer was given up for its size.
pub fn over_cap<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a OverCap> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(o) = err.downcast_ref::<OverCap>() {
            return Some(o);
        }
        cur = err.source();
    }
    None
}

/// A response body that fails once it has passed `cap` (bytes or tags).
pub struct BoundedBody {
    inner: SdkBody,
    cap: AnswerCap,
    bytes: u64,
    tags: u64,
}

impl BoundedBody {
    pub fn new(inner: SdkBody, cap: AnswerCap) -> BoundedBody {
        BoundedBody { inner, cap, bytes: 0, tags: 0 }
    }

    /// Counts one frame's data; the cap it passes, if any.
    fn count(&mut self, data: &[u8]) -> Option<OverCap> {
        self.bytes += data.len() as u64;
        self.tags += data.iter().filter(|&&b| b == b'<').count() as u64;
        if self.bytes > self.cap.bytes {
            Some(OverCap::Bytes { cap: self.cap.bytes })
        } else if self.tags > self.cap.tags {
            Some(OverCap::Tags { cap: self.cap.tags })
        } else {
            None
        }
    }
}

impl Body for BoundedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(over) = frame.data_ref().and_then(|d| this.count(d)) {
                    // Dropping the frame here and the body with the response closes the connection.
                    return Poll::Ready(Some(Err(Box::new(over))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Puts every answer of the client behind its operation's [`AnswerCap`].
#[derive(Debug)]
pub struct AnswerCapInterceptor {
    /// The cap of ListObjectsV2 and DeleteObjects answers, in bytes.
    pub page_bytes: u64,
}

impl Intercept for AnswerCapInterceptor {
    fn name(&self) -> &'static str {
        "AnswerCapInterceptor"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<Metadata>().map(|m| m.name().to_string()).unwrap_or_default();
        let cap = AnswerCap::of(&operation, self.page_bytes);
        let response = context.response_mut();
        let declared = response.headers().get("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(declared) = declared.filter(|d| *d > cap.bytes) {
            return Err(Box::new(OverCap::Declared { declared, cap: cap.bytes }));
        }
        let body = std::mem::replace(response.body_mut(), SdkBody::taken());
        *response.body_mut() = SdkBody::from_body_1_x(BoundedBody::new(body, cap));
        Ok(())
    }
}

/// Forbids retrying an answer given up for its size. Runs after the SDK's own classifiers, which
/// call an unreadable response a transient error.
#[derive(Debug)]
pub struct NoRetryOverCap;

impl ClassifyRetry for NoRetryOverCap {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.output_or_error() {
            Some(Err(e)) if over_cap(e).is_some() => RetryAction::RetryForbidden,
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "NoRetryOverCap"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(chunks: Vec<&'static [u8]>, cap: AnswerCap) -> BoundedBody {
        let stream = futures::stream::iter(chunks.into_iter().map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c)))));
        BoundedBody::new(SdkBody::from_body_1_x(http_body_util::StreamBody::new(stream)), cap)
    }

    async fn read(mut b: BoundedBody) -> Result<usize, BoxError> {
        use http_body_util::BodyExt;
        let mut n = 0;
        while let Some(frame) = b.frame().await {
            n += frame?.into_data().map(|d| d.len()).unwrap_or(0);
        }
        Ok(n)
    }

    #[tokio::test]
    async fn a_body_within_its_cap_is_read_whole() {
        let cap = AnswerCap { bytes: 10, tags: 2 };
        assert_eq!(read(body_of(vec![b"<a>", b"1234</", b"a"], cap)).await.unwrap(), 10);
    }

    #[tokio::test]
    async fn a_body_is_given_up_at_the_frame_that_passes_its_cap() {
        let cap = AnswerCap { bytes: 10, tags: 100 };
        let e = read(body_of(vec![b"12345", b"67890", b"1", b"never read"], cap)).await.unwrap_err();
        assert_eq!(over_cap(e.as_ref()), Some(&OverCap::Bytes { cap: 10 }));
        let cap = AnswerCap { bytes: 1000, tags: 3 };
        let e = read(body_of(vec![b"<a><b/>", b"<c/><d/>"], cap)).await.unwrap_err();
        assert_eq!(over_cap(e.as_ref()), Some(&OverCap::Tags { cap: 3 }));
        assert!(e.to_string().contains("more than 3 XML tags"), "{e}");
    }

    #[test]
    fn the_cap_is_found_through_the_chain_of_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] BoxError);
        let e = Outer(Box::new(OverCap::Bytes { cap: 1 }));
        assert_eq!(over_cap(&e), Some(&OverCap::Bytes { cap: 1 }));
        let plain = Outer("io".into());
        assert_eq!(over_cap(&plain), None);
    }
}
