//! What one sweep may cost the operator, which serves every tenant from one process: a tenant
//! chooses its S3 endpoint, so the endpoint may be honest but huge, broken, or hostile.
//!
//! Per sweep: at most [`Limits::max_sweep_pages`] pages and [`Limits::max_sweep_duration`] of wall
//! time ([`Budget`]), a listing that moves forward ([`advances`]), and answers of bounded size
//! ([`super::bounded`]). Across sweeps: at most [`Limits::max_concurrent_sweeps`] at once (the
//! RetentionPolicy controller's slots). A sweep stopped by a cap fails with a reason naming it and
//! keeps its checkpoint, so an honest bucket too big for one run goes on at the next run.
//!
//! Everything here is pure (the clock is a parameter) and unit-tested.

use std::time::{Duration, Instant};

use super::sweep::{SweepError, PAGE_SIZE};

/// Sweeps running at once across all policies, by default.
pub const DEFAULT_MAX_CONCURRENT_SWEEPS: usize = 4;
/// Pages one sweep may list, by default: 10 million keys at 1,000 a page.
pub const DEFAULT_MAX_SWEEP_PAGES: u64 = 10_000;
/// Wall time of one sweep, by default (an honest sweep handles about 1,000 objects a second when
/// most are expired, README "Retention").
pub const DEFAULT_MAX_SWEEP_DURATION: Duration = Duration::from_secs(3600);
/// Bytes of one ListObjectsV2 or DeleteObjects answer, by default. An honest page of 1,000 keys is
/// about 300 bytes a key plus the key itself (at most 1,024 bytes, more once XML-escaped): 1.3 MiB
/// with keys of the maximum length.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 4 << 20;
/// Bytes of the answers about one object or the bucket's configuration (GetObjectTagging, at most 10
/// tags on AWS; GetObjectLegalHold; GetObjectLockConfiguration): a few hundred honest bytes.
pub const SMALL_RESPONSE_BYTES: u64 = 64 << 10;
/// XML tags (`<` characters) per key of a page. An honest `<Contents>` has at most about 14
/// elements (28 tags, with owner and restore status); the cap bounds how many objects a body under
/// the byte cap can make the parser allocate (a few bytes each as `<Contents/>`, hundreds once parsed).
pub const TAGS_PER_KEY: u64 = 48;
/// Tags of the envelope of an answer, and the cap of the small answers.
pub const TAGS_OVERHEAD: u64 = 1024;

/// The bounds of sweeps (operator flags, `visio-operator run --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Sweeps at once across all policies.
    pub max_concurrent_sweeps: usize,
    /// Pages (ListObjectsV2 calls after the first probe) per sweep.
    pub max_sweep_pages: u64,
    /// Wall time per sweep, from its first page.
    pub max_sweep_duration: Duration,
    /// Bytes of one ListObjectsV2 or DeleteObjects answer.
    pub max_response_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_sweeps: DEFAULT_MAX_CONCURRENT_SWEEPS,
            max_sweep_pages: DEFAULT_MAX_SWEEP_PAGES,
            max_sweep_duration: DEFAULT_MAX_SWEEP_DURATION,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// The flags that set each bound, named in the failure messages.
pub const PAGES_FLAG: &str = "--retention-max-sweep-pages";
pub const DURATION_FLAG: &str = "--retention-max-sweep-duration";
pub const RESPONSE_FLAG: &str = "--retention-max-response-bytes";

/// The page and time account of one sweep.
#[derive(Clone, Debug)]
pub struct Budget {
    limits: Limits,
    started: Instant,
    pages: u64,
}

impl Budget {
    pub fn new(limits: Limits, started: Instant) -> Budget {
        Budget { limits, started, pages: 0 }
    }

    /// When the sweep's time is up: listing and hold checks stop there (a DeleteObjects already
    /// sent is let finish, so that what the server deleted is audited).
    pub fn deadline(&self) -> Instant {
        self.started + self.limits.max_sweep_duration
    }

    /// Pages listed so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Takes one page out of the budget at `now`, or says which cap is reached.
    pub fn take_page(&mut self, now: Instant) -> Result<(), SweepError> {
        if self.pages >= self.limits.max_sweep_pages {
            return Err(SweepError::PageLimit { pages: self.pages });
        }
        if now >= self.deadline() {
            return Err(self.out_of_time());
        }
        self.pages += 1;
        Ok(())
    }

    /// The error of a sweep whose time is up.
    pub fn out_of_time(&self) -> SweepError {
        SweepError::TimeLimit { limit: self.limits.max_sweep_duration, pages: self.pages }
    }
}

/// Whether a truncated page moves the listing forward: its last key must sort strictly after the
/// position it was asked to start after (S3 lists keys in ascending UTF-8 binary order, Rust's
/// `str` order). A page that repeats the position (the same page again, or a page of keys without
/// a name) would make the sweep ask for the same page for ever: an endpoint that loops.
pub fn advances(start_after: Option<&str>, last_key: Option<&str>) -> bool {
    match (start_after, last_key) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(before), Some(last)) => last > before,
    }
}

/// The answer caps of one S3 operation: `bytes` of body and `tags` (`<` characters) in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerCap {
    pub bytes: u64,
    pub tags: u64,
}

impl AnswerCap {
    /// The caps of `operation` (the SDK's operation name): the per-object and configuration answers
    /// are small; listings, deletions and anything else get `page_bytes` and tags for a full page.
    pub fn of(operation: &str, page_bytes: u64) -> AnswerCap {
        match operation {
            "GetObjectTagging" | "GetObjectLegalHold" | "GetObjectLockConfiguration" => {
                AnswerCap { bytes: SMALL_RESPONSE_BYTES.min(page_bytes), tags: TAGS_OVERHEAD }
            }
            _ => AnswerCap { bytes: page_bytes, tags: TAGS_PER_KEY * PAGE_SIZE as u64 + TAGS_OVERHEAD },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(pages: u64, secs: u64) -> Limits {
        Limits { max_sweep_pages: pages, max_sweep_duration: Duration::from_secs(secs), ..Limits::default() }
    }

    #[test]
    fn pages_are_counted_and_capped() {
        let t0 = Instant::now();
        let mut b = Budget::new(limits(3, 3600), t0);
        for _ in 0..3 {
            b.take_page(t0).unwrap();
        }
        assert_eq!(b.pages(), 3);
        let e = b.take_page(t0).unwrap_err();
        assert_eq!(e, SweepError::PageLimit { pages: 3 });
        assert_eq!(e.reason(), "PageLimitReached");
        assert!(e.to_string().contains("3 pages") && e.to_string().contains(PAGES_FLAG), "{e}");
        assert_eq!(b.pages(), 3, "a refused page is not counted");
    }

    #[test]
    fn time_is_measured_from_the_start_and_capped() {
        let t0 = Instant::now();
        let mut b = Budget::new(limits(100, 60), t0);
        b.take_page(t0 + Duration::from_secs(59)).unwrap();
        assert_eq!(b.deadline(), t0 + Duration::from_secs(60));
        let e = b.take_page(t0 + Duration::from_secs(60)).unwrap_err();
        assert_eq!(e, SweepError::TimeLimit { limit: Duration::from_secs(60), pages: 1 });
        assert_eq!(e.reason(), "TimeLimitReached");
        assert!(e.to_string().contains(DURATION_FLAG) && e.to_string().contains("60 s"), "{e}");
    }

    #[test]
    fn the_page_cap_is_checked_before_the_clock() {
        let t0 = Instant::now();
        let mut b = Budget::new(limits(1, 1), t0);
        b.take_page(t0).unwrap();
        assert_eq!(b.take_page(t0 + Duration::from_secs(5)).unwrap_err().reason(), "PageLimitReached");
    }

    #[test]
    fn a_listing_that_does_not_move_forward_loops() {
        assert!(advances(None, Some("a")));
        assert!(advances(Some("a"), Some("b")));
        assert!(advances(Some("a"), Some("a/")));
        assert!(!advances(Some("b"), Some("b")), "the same page again");
        assert!(!advances(Some("b"), Some("a")), "backwards");
        assert!(!advances(Some("b"), None), "keys without a name");
        assert!(!advances(None, None));
        // Binary order, as S3's: "Z" (0x5A) sorts before "a" (0x61), "é" after "z".
        assert!(advances(Some("Z"), Some("a")) && advances(Some("z"), Some("é")));
    }

    #[test]
    fn small_answers_have_small_caps() {
        let page = AnswerCap::of("ListObjectsV2", DEFAULT_MAX_RESPONSE_BYTES);
        assert_eq!(page.bytes, DEFAULT_MAX_RESPONSE_BYTES);
        assert!(page.tags >= 28 * PAGE_SIZE as u64, "an honest full page fits");
        assert_eq!(AnswerCap::of("DeleteObjects", 1 << 20).bytes, 1 << 20);
        for op in ["GetObjectTagging", "GetObjectLegalHold", "GetObjectLockConfiguration"] {
            assert_eq!(AnswerCap::of(op, DEFAULT_MAX_RESPONSE_BYTES), AnswerCap { bytes: 64 << 10, tags: 1024 });
        }
    }
}
