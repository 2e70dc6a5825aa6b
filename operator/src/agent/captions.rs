//! The caption backends, moshi-server (Kyutai) and WhisperLive, and the transcriber workers (LiveKit
//! Agents), read on loopback.
//!
//! - Load: the open streams, from the backend's Prometheus endpoint (`asr_open_channels` for moshi-server,
//!   `whisperlive_connections_active` for WhisperLive). Each captioned participant holds one stream, so the
//!   load, the sessions and the used slots are the same figure. The capacity is the slot count the operator
//!   configured (moshi-server's `batch_size`, WhisperLive's `--max_clients`, given as `--slots`).
//! - Step time: the 95th percentile of `asr_model_step_duration` (moshi-server; one step is 80 ms of audio)
//!   or of `whisperlive_transcription_latency_seconds` (WhisperLive), over the observations since the
//!   previous reading (histogram buckets are cumulative since start; the difference is what happened
//!   lately). Kept as it was while nothing new was observed.
//! - Slow steps (moshi-server): the share of model steps above 80 ms (one step is 80 ms of audio) since the
//!   previous reading. moshi-server's `asr_model_step_duration` buckets stop at 0.08 s
//!   (`rust/moshi-server/src/metrics.rs`), so its p95 can never read above 80 ms: a step slower than real
//!   time lands in `+Inf`, and only this share can say how many did.
//! - Transcriber workers: the load is the active jobs, one job per room being captioned, the capacity
//!   `jobsPerWorker` (given as `--slots`); no latency, no rejection count. A worker drains by itself on
//!   SIGTERM, so the agent never signals it either. The jobs gauge is `lk_agents_active_job_count` from
//!   livekit-agents 1.2.0 (`lk_agents_running_jobs` in the commit before its rename; both are read). It is a
//!   labelled gauge created by the first `job_started()` (`telemetry/metrics.py`, incremented in
//!   `ipc/job_proc_executor.py` `launch_job`), so a worker that never had a job has no sample. That worker
//!   is idle, not unknown, when the page shows the worker's other gauges, which have a sample from the
//!   start: `lk_agents_child_process_count` (1.2.0 to 1.2.15, a `set_function`) or `lk_agents_worker_load`
//!   (from 1.3.3, set every 0.5 s by the worker's load loop). `lk_agents_worker_load` is CPU-based (the
//!   default `load_fnc`), not jobs per slot: it is never read as the load.
//! - Rejections: WhisperLive counts them (`whisperlive_connections_rejected_total`); moshi-server does not, so
//!   its rejections are known only from the slots (a pod with every slot taken refuses the next stream).
//! - Drain: neither backend drains on a signal (moshi-server just exits on SIGTERM, cutting every stream),
//!   so the agent never signals it. The pod's readiness fails (the agent's `/readyz`), the backend Service
//!   stops routing new streams to it, and the open streams go on until they close or the operator's
//!   deadline passes. The load then says `draining: true`.
//! - Warnings and forced ends: neither backend has a channel to tell a stream it ends, nor an API to close
//!   one. Both are refused ("unsupported"): at the deadline the operator deletes the pod, and the transcriber
//!   reconnects the participant's stream to a serving backend.
//!
//! Parsing is defensive and pure: a missing or nonsensical figure makes the load unknown (never zero), and
//! the reason is logged once per change of reason.

use std::time::Duration;

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use k8s_openapi::jiff::Timestamp;

use super::backend::{Backend, BackendError, DrainStatus};
use super::http::{self, LoopbackUrl};
use super::prometheus::{count_value, parse_line, sum_metric, Sum};
use crate::pod_protocol::Load;

/// moshi-server's open streams (gauge).
pub const MOSHI_OPEN: &str = "asr_open_channels";
/// moshi-server's model step duration (histogram, seconds).
pub const MOSHI_STEP: &str = "asr_model_step_duration";
/// WhisperLive's open connections (gauge).
pub const WHISPER_ACTIVE: &str = "whisperlive_connections_active";
/// WhisperLive's refused connections (counter, by reason).
pub const WHISPER_REJECTED: &str = "whisperlive_connections_rejected_total";
/// WhisperLive's transcription latency (histogram, seconds).
pub const WHISPER_LATENCY: &str = "whisperlive_transcription_latency_seconds";
/// A LiveKit Agents worker's active jobs (gauge, livekit-agents >= 1.2.0).
pub const AGENT_JOBS: &str = "lk_agents_active_job_count";
/// The same gauge's name before its rename (livekit-agents commit 173e8647d, renamed in f32f19d41).
pub const AGENT_JOBS_OLD: &str = "lk_agents_running_jobs";
/// Gauges a LiveKit Agents worker serves from its start (before any job): the child processes
/// (1.2.0 to 1.2.15, a `set_function`; later only in multiprocess mode) and the CPU-based worker load
/// (from 1.3.3, set every 0.5 s).
pub const AGENT_ALWAYS: [&str; 2] = ["lk_agents_worker_load", "lk_agents_child_process_count"];
/// One moshi-server model step processes 80 ms of audio: a slower step falls behind real time.
pub const REAL_TIME_STEP_SECONDS: f64 = 0.08;
/// Default metrics endpoint of moshi-server in the pod (its HTTP port).
pub const MOSHI_METRICS_URL: &str = "http://127.0.0.1:8080/metrics";
/// Default metrics endpoint of WhisperLive in the pod.
pub const WHISPER_METRICS_URL: &str = "http://127.0.0.1:9091/metrics";
/// Default metrics endpoint of a transcriber worker in the pod (`PROMETHEUS_PORT`).
pub const TRANSCRIBER_METRICS_URL: &str = "http://127.0.0.1:8082/metrics";

/// Largest metrics body read.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Most histogram buckets read (a real histogram has a dozen or two).
const MAX_BUCKETS: usize = 256;

/// Which caption process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Moshi,
    WhisperLive,
    /// A transcriber worker (LiveKit Agents): jobs, not streams.
    Transcriber,
}

impl Engine {
    fn open_metric(self) -> &'static str {
        match self {
            Engine::Moshi => MOSHI_OPEN,
            Engine::WhisperLive => WHISPER_ACTIVE,
            Engine::Transcriber => AGENT_JOBS,
        }
    }

    fn latency_metric(self) -> Option<&'static str> {
        match self {
            Engine::Moshi => Some(MOSHI_STEP),
            Engine::WhisperLive => Some(WHISPER_LATENCY),
            Engine::Transcriber => None,
        }
    }
}

/// Cumulative histogram buckets: (upper bound in seconds, observations at or under it), sorted by bound.
pub type Buckets = Vec<(f64, u64)>;

/// One reading of a caption backend's metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// Open streams.
    pub open: u32,
    /// Streams refused since start, when the backend counts them.
    pub rejected: Option<u32>,
    /// The latency histogram, when the backend exposes one.
    pub latency: Option<Buckets>,
}

/// The jobs of a LiveKit Agents worker: either name of the jobs gauge, and no sample of it means no job yet
/// only when the page is the worker's (one of [`AGENT_ALWAYS`] has a sample).
fn worker_jobs(text: &str) -> Result<u32, BackendError> {
    let (new, old) = (sum_metric(text, AGENT_JOBS), sum_metric(text, AGENT_JOBS_OLD));
    match (new, old) {
        (Sum::Known(a), Sum::Known(b)) => {
            a.checked_add(b).ok_or_else(|| BackendError::Malformed("jobs overflow".into()))
        }
        (Sum::Known(v), Sum::Missing) | (Sum::Missing, Sum::Known(v)) => Ok(v),
        (Sum::Missing, Sum::Missing) if AGENT_ALWAYS.iter().any(|m| has_sample(text, m)) => Ok(0),
        (a, b) => Err(BackendError::Malformed(format!("{AGENT_JOBS}: {a}, {AGENT_JOBS_OLD}: {b}"))),
    }
}

/// `name` has at least one sample with a finite value.
fn has_sample(text: &str, name: &str) -> bool {
    text.lines().filter_map(parse_line).any(|s| s.name == name && s.value.parse::<f64>().is_ok_and(f64::is_finite))
}

/// Reads the metrics text of `engine`. The open-streams gauge is required; the rest is optional.
pub fn parse_metrics(engine: Engine, text: &str) -> Result<Reading, BackendError> {
    let open = match (engine, sum_metric(text, engine.open_metric())) {
        (Engine::Transcriber, _) => worker_jobs(text)?,
        (_, Sum::Known(v)) => v,
        (_, other) => return Err(BackendError::Malformed(format!("{}: {other}", engine.open_metric()))),
    };
    let rejected = match engine {
        Engine::Moshi | Engine::Transcriber => None,
        // A labelled counter with no sample before the first rejection (whisper_live/metrics.py): none yet.
        Engine::WhisperLive => match sum_metric(text, WHISPER_REJECTED) {
            Sum::Known(v) => Some(v),
            Sum::Missing => Some(0),
            Sum::Unusable => None,
        },
    };
    Ok(Reading { open, rejected, latency: engine.latency_metric().and_then(|m| histogram(text, m)) })
}

/// The cumulative buckets of histogram `name`, summed over its label sets other than `le`. `None` when the
/// histogram is absent or any of its bucket lines is unreadable (a bound or count that is not a number,
/// counts that decrease with the bound, too many buckets).
pub fn histogram(text: &str, name: &str) -> Option<Buckets> {
    let bucket = format!("{name}_bucket");
    let mut out: Vec<(f64, u64)> = Vec::new();
    for line in text.lines() {
        let Some(s) = parse_line(line) else { continue };
        if s.name != bucket {
            continue;
        }
        let le = s.labels.iter().find(|(k, _)| *k == "le")?.1.as_str();
        let bound: f64 = match le {
            "+Inf" | "Inf" => f64::INFINITY,
            b => b.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0)?,
        };
        let count = count_value(s.value)?;
        match out.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, c)) => *c = c.checked_add(count)?,
            None => {
                if out.len() >= MAX_BUCKETS {
                    return None;
                }
                out.push((bound, count));
            }
        }
    }
    if out.is_empty() {
        return None;
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out.windows(2).all(|w| w[0].1 <= w[1].1).then_some(out)
}

/// The observations between two readings of the same histogram (`None` when the bounds differ or a count
/// went down: the backend restarted, and `now` alone is the delta).
pub fn delta(prev: &Buckets, now: &Buckets) -> Buckets {
    let same_bounds = prev.len() == now.len() && prev.iter().zip(now).all(|(a, b)| a.0 == b.0);
    if same_bounds && prev.iter().zip(now).all(|(a, b)| a.1 <= b.1) {
        prev.iter().zip(now).map(|(a, b)| (b.0, b.1 - a.1)).collect()
    } else {
        now.clone()
    }
}

/// Quantile `q` (0..=1) of cumulative buckets, as the upper bound of the bucket holding it (the largest
/// finite bound when it falls in `+Inf`). `None` when there are no observations.
pub fn quantile(buckets: &Buckets, q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
    let largest_finite = buckets.iter().rev().map(|b| b.0).find(|b| b.is_finite()).unwrap_or(0.0);
    buckets.iter().find(|(_, c)| *c >= rank).map(|(b, _)| if b.is_finite() { *b } else { largest_finite })
}

/// Per mille of the observations above `limit` seconds, rounded up (one slow step is never 0), from the
/// count at the largest bound at or under `limit`. `None` without observations, or when no bound is at or
/// under `limit` (the share cannot be told).
pub fn permille_above(buckets: &Buckets, limit: f64) -> Option<u32> {
    let total = buckets.last()?.1;
    let under = buckets.iter().rev().find(|(b, _)| *b <= limit)?.1;
    if total == 0 {
        return None;
    }
    let above = total.saturating_sub(under);
    Some(((above as u128 * 1000).div_ceil(total as u128)).min(1000) as u32)
}

/// Seconds as whole microseconds for the load (saturating).
fn micros(seconds: f64) -> u32 {
    (seconds * 1e6).round().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// A caption backend next to the agent.
pub struct Caption {
    engine: Engine,
    metrics_url: LoopbackUrl,
    slots: u32,
    timeout: Duration,
    draining: bool,
    last_buckets: Option<Buckets>,
    last_p95_us: Option<u32>,
    last_slow_permille: Option<u32>,
}

impl Caption {
    pub fn new(engine: Engine, metrics_url: LoopbackUrl, slots: u32) -> Self {
        Caption {
            engine,
            metrics_url,
            slots,
            timeout: Duration::from_secs(2),
            draining: false,
            last_buckets: None,
            last_p95_us: None,
            last_slow_permille: None,
        }
    }

    /// The load from one reading (pure apart from the step-time memory).
    pub fn load_of(&mut self, reading: Reading) -> Load {
        if let Some(now) = reading.latency {
            let fresh = match &self.last_buckets {
                Some(prev) => delta(prev, &now),
                None => now.clone(),
            };
            if let Some(p95) = quantile(&fresh, 0.95) {
                self.last_p95_us = Some(micros(p95));
            }
            if self.engine == Engine::Moshi {
                if let Some(slow) = permille_above(&fresh, REAL_TIME_STEP_SECONDS) {
                    self.last_slow_permille = Some(slow);
                }
            }
            self.last_buckets = Some(now);
        }
        Load {
            participants: reading.open,
            rooms: reading.open,
            capacity: Some(self.slots),
            draining: self.draining,
            rejected: reading.rejected,
            step_p95_us: self.last_p95_us,
            slow_step_permille: self.last_slow_permille,
        }
    }
}

impl Backend for Caption {
    async fn read_load(&mut self) -> Result<Load, BackendError> {
        let resp = http::call(Method::GET, &self.metrics_url, &[], Bytes::new(), self.timeout, MAX_BODY)
            .await
            .map_err(|e| BackendError::Unreachable(e.to_string()))?;
        if resp.status != StatusCode::OK {
            return Err(BackendError::Status {
                call: "metrics",
                status: resp.status.as_u16(),
                message: String::from_utf8_lossy(&resp.body).chars().take(200).collect(),
            });
        }
        let text = std::str::from_utf8(&resp.body).map_err(|e| BackendError::Malformed(e.to_string()))?;
        let reading = parse_metrics(self.engine, text)?;
        Ok(self.load_of(reading))
    }

    fn drain(&mut self) -> Result<DrainStatus, BackendError> {
        let first = !self.draining;
        self.draining = true;
        Ok(DrainStatus::Unrouted { first })
    }

    async fn warn(&mut self, _deadline: Timestamp) -> Result<bool, BackendError> {
        Err(BackendError::Unsupported("warn its streams (no channel to them)"))
    }

    async fn end_sessions(&mut self) -> Result<usize, BackendError> {
        Err(BackendError::Unsupported("close its streams (the operator deletes the pod at the deadline)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MOSHI: &str =
        "# HELP asr_open_channels open channels\n# TYPE asr_open_channels gauge\nasr_open_channels 12\n\
        # TYPE asr_connect counter\nasr_connect 40\n\
        asr_model_step_duration_bucket{le=\"0.01\"} 10\nasr_model_step_duration_bucket{le=\"0.05\"} 90\n\
        asr_model_step_duration_bucket{le=\"0.1\"} 100\nasr_model_step_duration_bucket{le=\"+Inf\"} 100\n\
        asr_model_step_duration_sum 3.1\nasr_model_step_duration_count 100\n";

    fn url() -> LoopbackUrl {
        LoopbackUrl::parse(MOSHI_METRICS_URL).unwrap()
    }

    #[test]
    fn moshi_open_channels_and_step_time() {
        let r = parse_metrics(Engine::Moshi, MOSHI).unwrap();
        assert_eq!(r.open, 12);
        assert_eq!(r.rejected, None);
        let mut c = Caption::new(Engine::Moshi, url(), 64);
        let load = c.load_of(r);
        assert_eq!((load.participants, load.rooms, load.capacity), (12, 12, Some(64)));
        assert_eq!(load.step_p95_us, Some(100_000), "95th of 100 lies in the 0.1 s bucket");
        assert!(!load.draining);
    }

    #[test]
    fn whisperlive_active_rejected_latency() {
        let text = "whisperlive_connections_active 3\n\
            whisperlive_connections_rejected_total{reason=\"max_clients\"} 2\n\
            whisperlive_connections_rejected_total{reason=\"auth\"} 1\n\
            whisperlive_transcription_latency_seconds_bucket{le=\"0.5\"} 4\n\
            whisperlive_transcription_latency_seconds_bucket{le=\"1\"} 4\n\
            whisperlive_transcription_latency_seconds_bucket{le=\"+Inf\"} 4\n";
        let r = parse_metrics(Engine::WhisperLive, text).unwrap();
        assert_eq!((r.open, r.rejected), (3, Some(3)));
        let load = Caption::new(Engine::WhisperLive, url(), 4).load_of(r);
        assert_eq!(load.step_p95_us, Some(500_000));
    }

    #[test]
    fn transcriber_jobs() {
        let text = "# TYPE lk_agents_active_job_count gauge\n\
            lk_agents_active_job_count{nodename=\"w-1\"} 3\n\
            lk_agents_worker_load{nodename=\"w-1\"} 0.41\n";
        let r = parse_metrics(Engine::Transcriber, text).unwrap();
        assert_eq!(r, Reading { open: 3, rejected: None, latency: None });
        let load = Caption::new(Engine::Transcriber, url(), 20).load_of(r);
        assert_eq!((load.participants, load.rooms, load.capacity, load.step_p95_us), (3, 3, Some(20), None));
        assert!(parse_metrics(Engine::Transcriber, "process_cpu_seconds_total 2\n").is_err(), "not a worker: unknown");
    }

    #[test]
    fn transcriber_jobs_under_either_name() {
        // `lk_agents_running_jobs` before the rename (livekit-agents 173e8647d..f32f19d41).
        let old = "lk_agents_running_jobs{nodename=\"w\"} 2.0\n";
        assert_eq!(parse_metrics(Engine::Transcriber, old).unwrap().open, 2);
        let new = "lk_agents_active_job_count{nodename=\"w\"} 4.0\n";
        assert_eq!(parse_metrics(Engine::Transcriber, new).unwrap().open, 4);
        assert!(parse_metrics(Engine::Transcriber, "lk_agents_active_job_count{nodename=\"w\"} -1\n").is_err());
    }

    #[test]
    fn a_worker_before_its_first_job_is_idle_only_on_its_own_page() {
        // livekit-agents 1.3.3+: the CPU-based load is set from the start, the jobs gauge only by a job.
        let fresh = "# HELP lk_agents_active_job_count Active jobs\n# TYPE lk_agents_active_job_count gauge\n\
            # TYPE lk_agents_worker_load gauge\nlk_agents_worker_load{nodename=\"w\"} 0.93\n";
        let r = parse_metrics(Engine::Transcriber, fresh).unwrap();
        assert_eq!(r.open, 0, "never had a job: idle");
        let load = Caption::new(Engine::Transcriber, url(), 20).load_of(r);
        assert_eq!((load.participants, load.capacity), (0, Some(20)), "the CPU load 0.93 is not the jobs");
        // 1.2.0..1.2.15: the child-process gauge (a set_function) is there from the start.
        let older = "lk_agents_child_process_count{nodename=\"w\"} 3.0\n";
        assert_eq!(parse_metrics(Engine::Transcriber, older).unwrap().open, 0);
        // Not a worker's page, an empty page, or a broken worker gauge: unknown, never zero.
        for bad in ["", "python_info{version=\"3.11\"} 1.0\n", "lk_agents_worker_load{nodename=\"w\"} NaN\n"] {
            assert!(parse_metrics(Engine::Transcriber, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn whisperlive_rejections_start_at_zero() {
        // The labelled counter has no sample before the first rejection (whisper_live/metrics.py).
        let real = "whisperlive_connections_active 0.0\n\
            # TYPE whisperlive_connections_rejected_total counter\n";
        assert_eq!(parse_metrics(Engine::WhisperLive, real).unwrap().rejected, Some(0));
        let broken = "whisperlive_connections_active 0.0\nwhisperlive_connections_rejected_total{reason=\"full\"} x\n";
        assert_eq!(parse_metrics(Engine::WhisperLive, broken).unwrap().rejected, None);
    }

    /// moshi-server's buckets (rust/moshi-server/src/metrics.rs): 20 to 80 ms, then +Inf.
    fn moshi_steps(counts: [u64; 8]) -> Buckets {
        let bounds = [0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, f64::INFINITY];
        let mut cum = 0;
        bounds
            .iter()
            .zip(counts)
            .map(|(b, c)| {
                cum += c;
                (*b, cum)
            })
            .collect()
    }

    #[test]
    fn moshi_steps_slower_than_real_time_are_seen_beyond_the_last_bucket() {
        let mut c = Caption::new(Engine::Moshi, url(), 64);
        let reading = |h| Reading { open: 8, rejected: None, latency: Some(h) };
        // 100 steps, 30 of them above 80 ms: the p95 is capped at the last bound, the share is not.
        let load = c.load_of(reading(moshi_steps([10, 20, 20, 10, 5, 5, 0, 30])));
        assert_eq!(load.step_p95_us, Some(80_000), "the p95 cannot read above 80 ms");
        assert_eq!(load.slow_step_permille, Some(300));
        // The next readings count only the new steps: 10 more, all fast.
        let load = c.load_of(reading(moshi_steps([20, 20, 20, 10, 5, 5, 0, 30])));
        assert_eq!(load.slow_step_permille, Some(0));
        // Nothing new: the last share stays.
        assert_eq!(c.load_of(reading(moshi_steps([20, 20, 20, 10, 5, 5, 0, 30]))).slow_step_permille, Some(0));
        // One slow step in a thousand is never rounded to 0.
        assert_eq!(permille_above(&moshi_steps([0, 0, 0, 0, 0, 0, 1999, 1]), 0.08), Some(1));
        // WhisperLive's latency is not a model step: no share.
        let mut w = Caption::new(Engine::WhisperLive, url(), 4);
        assert_eq!(w.load_of(reading(moshi_steps([0, 0, 0, 0, 0, 0, 0, 9]))).slow_step_permille, None);
    }

    #[test]
    fn nonsense_is_unknown_never_zero() {
        for bad in ["", "asr_open_channels -1\n", "asr_open_channels NaN\n", "asr_open_channels 1.5\n", "garbage"] {
            assert!(parse_metrics(Engine::Moshi, bad).is_err(), "{bad:?}");
        }
        // The optional figures may be missing or broken without making the load unknown.
        let r = parse_metrics(Engine::Moshi, "asr_open_channels 2\nasr_model_step_duration_bucket{le=\"x\"} 3\n");
        assert_eq!(r.unwrap(), Reading { open: 2, rejected: None, latency: None });
    }

    #[test]
    fn step_time_covers_the_last_readings_and_is_kept_while_idle() {
        let mut c = Caption::new(Engine::Moshi, url(), 64);
        let with = |fast: u64, slow: u64| Reading {
            open: 1,
            rejected: None,
            latency: Some(vec![(0.05, fast), (0.1, fast + slow), (f64::INFINITY, fast + slow)]),
        };
        assert_eq!(c.load_of(with(100, 0)).step_p95_us, Some(50_000));
        // Then every new step is slow: the delta says so although the lifetime histogram is mostly fast.
        assert_eq!(c.load_of(with(100, 20)).step_p95_us, Some(100_000));
        // Nothing new observed: the last figure stays.
        assert_eq!(c.load_of(with(100, 20)).step_p95_us, Some(100_000));
        // A restarted backend (counts went down): the new histogram alone.
        assert_eq!(c.load_of(with(5, 0)).step_p95_us, Some(50_000));
    }

    #[test]
    fn histogram_edge_cases() {
        assert_eq!(histogram("", "h"), None);
        assert_eq!(histogram("h_bucket{le=\"1\"} 5\nh_bucket{le=\"0.5\"} 6\n", "h"), None, "decreasing counts");
        assert_eq!(histogram("h_bucket{x=\"1\"} 5\n", "h"), None, "no le");
        let two = "h_bucket{a=\"1\",le=\"1\"} 2\nh_bucket{a=\"2\",le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 5\n";
        assert_eq!(histogram(two, "h"), Some(vec![(1.0, 5), (f64::INFINITY, 5)]));
        assert_eq!(quantile(&vec![(1.0, 0), (f64::INFINITY, 0)], 0.95), None);
        assert_eq!(quantile(&vec![(1.0, 0), (f64::INFINITY, 3)], 0.95), Some(1.0), "+Inf reads as the largest bound");
    }

    #[test]
    fn drain_is_by_readiness_and_never_signals() {
        let mut c = Caption::new(Engine::Moshi, url(), 64);
        assert_eq!(c.drain().unwrap(), DrainStatus::Unrouted { first: true });
        assert_eq!(c.drain().unwrap(), DrainStatus::Unrouted { first: false });
        let load = c.load_of(Reading { open: 3, rejected: None, latency: None });
        assert!(load.draining);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,300}") {
            let _ = parse_metrics(Engine::Moshi, &text);
            let _ = parse_metrics(Engine::WhisperLive, &text);
            let _ = parse_metrics(Engine::Transcriber, &text);
        }

        #[test]
        fn open_streams_round_trip(open in any::<u32>(), noise in "[a-z_]{1,12}") {
            let text = format!("{noise} 7\nasr_open_channels {open}\n");
            prop_assume!(noise != MOSHI_OPEN);
            prop_assert_eq!(parse_metrics(Engine::Moshi, &text).unwrap().open, open);
        }

        #[test]
        fn slow_share_is_the_share_above_the_bound(fast in 0u64..10_000, slow in 0u64..10_000) {
            let h: Buckets = vec![(0.05, fast / 2), (0.08, fast), (f64::INFINITY, fast + slow)];
            match permille_above(&h, REAL_TIME_STEP_SECONDS) {
                None => prop_assert_eq!(fast + slow, 0),
                Some(pm) => {
                    prop_assert!(pm <= 1000);
                    prop_assert_eq!(pm == 0, slow == 0);
                    prop_assert!(u128::from(pm) * u128::from(fast + slow) >= u128::from(slow) * 1000);
                }
            }
        }

        #[test]
        fn quantile_is_a_bound_of_the_histogram(counts in proptest::collection::vec(0u64..1000, 1..10), q in 0.0f64..=1.0) {
            let mut cum = 0;
            let buckets: Buckets = counts.iter().enumerate().map(|(i, c)| { cum += c; ((i + 1) as f64, cum) }).collect();
            match quantile(&buckets, q) {
                None => prop_assert_eq!(cum, 0),
                Some(b) => prop_assert!(buckets.iter().any(|(x, _)| *x == b)),
            }
        }
    }
}
