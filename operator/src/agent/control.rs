//! The agent's loop: every interval, read the backend's load and report it when it changed meaningfully;
//! on every change of the pod's marks (and every interval while they hold), drain, warn, end sessions.
//!
//! Each step has a deadline (the backend calls, the pod write), every repeated action has a bound, and the
//! loop ends as soon as `shutdown` resolves, whatever it is doing.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use tokio::time::{Instant, MissedTickBehavior};

use super::backend::{Backend, DrainStatus};
use super::health::Health;
use super::pod::{Marks, OwnPod};
use super::report::{should_report, Report};

/// Attempts at warning the sessions (each interval) before giving up.
pub const MAX_WARN_ATTEMPTS: u32 = 10;
/// Rounds of ending sessions (each interval) before giving up: participants who reconnect land on serving
/// nodes, so rooms left after this many rounds are a backend problem the operator's deadline covers.
pub const MAX_END_ROUNDS: u32 = 30;

/// Timing of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How often the backend is read.
    pub interval: Duration,
    /// Least time between two writes of the load annotation (zero-load reports excepted).
    pub min_report_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self { interval: Duration::from_secs(2), min_report_interval: Duration::from_secs(5) }
    }
}

/// How far the drain went; only ever moves forward (LiveKit cannot be undrained).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainProgress {
    pub draining: bool,
    pub warn_attempts: u32,
    pub warned: bool,
    pub end_rounds: u32,
    pub ended: bool,
}

/// What the marks ask for now, given the progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// Start draining (false once started).
    pub start_drain: bool,
    /// Warn, with the deadline; `Err` holds an unreadable deadline.
    pub warn: Option<Result<Timestamp, String>>,
    pub end_sessions: bool,
}

/// Pure: what to do for `marks`. Any mark means draining (warnings and forced ends only come to a draining
/// pod, and a lost `drain-since` must not leave a pod serving while its sessions are ended).
pub fn due(marks: &Marks, progress: &DrainProgress) -> Due {
    let any = marks.drain_since.is_some() || marks.warn_deadline.is_some() || marks.end_sessions;
    let warn = match &marks.warn_deadline {
        Some(d) if !progress.warned && progress.warn_attempts < MAX_WARN_ATTEMPTS => {
            Some(d.trim().parse::<Timestamp>().map_err(|_| d.clone()))
        }
        _ => None,
    };
    Due {
        start_drain: any && !progress.draining,
        warn,
        end_sessions: marks.end_sessions && !progress.ended && progress.end_rounds < MAX_END_ROUNDS,
    }
}

/// The agent's state between steps.
struct Agent<'a, P, B> {
    pod: &'a P,
    backend: &'a mut B,
    settings: Settings,
    health: Health,
    marks: Marks,
    progress: DrainProgress,
    /// The last report written and when.
    last: Option<(Report, Instant)>,
    /// When the last write failed, if the one before it did not succeed since: failed writes are retried no
    /// more often than the floor either (a missing pod or a denied patch must not turn into a write loop).
    write_failed_at: Option<Instant>,
    last_read_ok: Option<bool>,
    last_drain: Option<DrainStatus>,
}

enum Event {
    Marks(Marks),
    MarksEnded,
    Tick,
}

/// Runs the agent until `shutdown` resolves.
pub async fn run<P: OwnPod, B: Backend>(
    pod: &P,
    backend: &mut B,
    settings: Settings,
    health: Health,
    shutdown: impl Future<Output = ()>,
) {
    let mut agent = Agent {
        pod,
        backend,
        settings,
        health,
        marks: Marks::default(),
        progress: DrainProgress::default(),
        last: None,
        write_failed_at: None,
        last_read_ok: None,
        last_drain: None,
    };
    let mut marks = pod.marks();
    let mut marks_open = true;
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let event = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            m = marks.next(), if marks_open => m.map(Event::Marks).unwrap_or(Event::MarksEnded),
            _ = ticker.tick() => Event::Tick,
        };
        let step = async {
            match event {
                Event::Marks(m) => {
                    if m != agent.marks {
                        tracing::info!(marks = ?m, "pod marks changed");
                        agent.marks = m;
                        agent.act().await;
                    }
                }
                Event::MarksEnded => {
                    tracing::warn!("the pod watch ended; keeping the last marks");
                    marks_open = false;
                }
                Event::Tick => {
                    agent.report().await;
                    agent.act().await;
                }
            }
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = step => {}
        }
    }
    tracing::info!("agent stopped");
}

impl<P: OwnPod, B: Backend> Agent<'_, P, B> {
    async fn report(&mut self) {
        let next: Report = match self.backend.read_load().await {
            Ok(load) => {
                if self.last_read_ok != Some(true) {
                    tracing::info!(?load, "reading the backend's load");
                }
                self.last_read_ok = Some(true);
                Some(load)
            }
            Err(e) => {
                if self.last_read_ok != Some(false) {
                    tracing::warn!(error = %e, label = e.label(), "backend load unknown: the load annotation is removed");
                } else {
                    tracing::debug!(error = %e, "backend load still unknown");
                }
                self.last_read_ok = Some(false);
                None
            }
        };
        let (prev, elapsed) = match &self.last {
            Some((r, at)) => (Some(r), at.elapsed()),
            None => (None, Duration::MAX),
        };
        let floor = self.settings.min_report_interval;
        if !should_report(prev, &next, elapsed, floor) {
            return;
        }
        if self.write_failed_at.is_some_and(|at| at.elapsed() < floor) {
            return;
        }
        match self.pod.write_load(next).await {
            Ok(()) => {
                tracing::debug!(load = ?next, "load reported");
                if self.write_failed_at.take().is_some() {
                    tracing::info!("load reported again");
                }
                self.last = Some((next, Instant::now()));
            }
            Err(e) => {
                if self.write_failed_at.is_none() {
                    tracing::warn!(error = %e, "could not report the load; retrying every {floor:?}");
                } else {
                    tracing::debug!(error = %e, "could not report the load");
                }
                self.write_failed_at = Some(Instant::now());
            }
        }
    }

    async fn act(&mut self) {
        let due = due(&self.marks, &self.progress);
        if due.start_drain {
            self.progress.draining = true;
            self.health.set_draining();
            tracing::info!(since = ?self.marks.drain_since, "draining: readyz now fails, telling the backend to drain");
        }
        if self.progress.draining {
            self.drain();
        }
        if let Some(deadline) = due.warn {
            self.progress.warn_attempts += 1;
            match deadline {
                Ok(deadline) => match self.backend.warn(deadline).await {
                    Ok(true) => {
                        self.progress.warned = true;
                        tracing::info!(%deadline, "participants warned of the end of their sessions");
                    }
                    Ok(false) => tracing::info!("some sessions not warned yet; retrying next interval"),
                    Err(e) => tracing::warn!(error = %e, attempt = self.progress.warn_attempts, "warning failed"),
                },
                Err(raw) => tracing::warn!(deadline = %raw, "unreadable warn deadline; not warning"),
            }
            if !self.progress.warned && self.progress.warn_attempts >= MAX_WARN_ATTEMPTS {
                tracing::error!("giving up warning the sessions");
            }
        }
        if due.end_sessions {
            self.progress.end_rounds += 1;
            match self.backend.end_sessions().await {
                Ok(0) => {
                    self.progress.ended = true;
                    tracing::info!("no session left");
                }
                Ok(n) => {
                    tracing::info!(sessions = n, round = self.progress.end_rounds, "ending the remaining sessions")
                }
                Err(e) => tracing::warn!(error = %e, round = self.progress.end_rounds, "ending sessions failed"),
            }
            if !self.progress.ended && self.progress.end_rounds >= MAX_END_ROUNDS {
                tracing::error!("giving up ending sessions; the operator's deadline removes the pod");
            }
        }
    }

    fn drain(&mut self) {
        let status = self.backend.drain();
        let changed = match &status {
            Ok(s) => self.last_drain.as_ref() != Some(s),
            Err(_) => true,
        };
        if changed {
            match &status {
                Ok(DrainStatus::Signalled(pid)) => tracing::info!(pid, "backend told to drain (SIGTERM)"),
                Ok(DrainStatus::AlreadySignalled(pid)) => tracing::debug!(pid, "backend draining"),
                Ok(DrainStatus::NotFound)
                    if matches!(
                        self.last_drain,
                        Some(DrainStatus::Signalled(_) | DrainStatus::AlreadySignalled(_))
                    ) =>
                {
                    tracing::info!("the drained backend exited")
                }
                Ok(DrainStatus::NotFound) => tracing::warn!("no backend process to drain"),
                Ok(DrainStatus::Unrouted { first: true }) => {
                    tracing::info!("backend has no drain of its own: readiness fails, open sessions continue")
                }
                Ok(DrainStatus::Unrouted { first: false }) => {}
                Ok(DrainStatus::Ambiguous(pids)) => {
                    tracing::error!(?pids, "several processes match the backend: not signalling any")
                }
                Err(e) => tracing::error!(error = %e, "could not tell the backend to drain"),
            }
        }
        self.last_drain = status.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(drain: bool, warn: Option<&str>, end: bool) -> Marks {
        Marks {
            drain_since: drain.then(|| "2026-11-27T10:00:00Z".to_string()),
            warn_deadline: warn.map(String::from),
            end_sessions: end,
        }
    }

    #[test]
    fn nothing_due_without_marks() {
        let d = due(&Marks::default(), &DrainProgress::default());
        assert_eq!(d, Due { start_drain: false, warn: None, end_sessions: false });
    }

    #[test]
    fn drain_starts_once() {
        let m = marks(true, None, false);
        assert!(due(&m, &DrainProgress::default()).start_drain);
        assert!(!due(&m, &DrainProgress { draining: true, ..Default::default() }).start_drain);
    }

    #[test]
    fn a_warning_or_an_end_alone_also_drains() {
        assert!(due(&marks(false, Some("2026-11-27T13:00:00Z"), false), &DrainProgress::default()).start_drain);
        assert!(due(&marks(false, None, true), &DrainProgress::default()).start_drain);
    }

    #[test]
    fn warns_once_and_gives_up_after_the_bound() {
        let m = marks(true, Some("2026-11-27T13:00:00Z"), false);
        let deadline: Timestamp = "2026-11-27T13:00:00Z".parse().unwrap();
        assert_eq!(due(&m, &DrainProgress::default()).warn, Some(Ok(deadline)));
        assert_eq!(due(&m, &DrainProgress { warned: true, ..Default::default() }).warn, None);
        let spent = DrainProgress { warn_attempts: MAX_WARN_ATTEMPTS, ..Default::default() };
        assert_eq!(due(&m, &spent).warn, None);
        let bad = marks(true, Some("tomorrow"), false);
        assert_eq!(due(&bad, &DrainProgress::default()).warn, Some(Err("tomorrow".into())));
    }

    #[test]
    fn ends_sessions_until_none_left_or_the_bound() {
        let m = marks(true, None, true);
        assert!(due(&m, &DrainProgress::default()).end_sessions);
        assert!(!due(&m, &DrainProgress { ended: true, ..Default::default() }).end_sessions);
        assert!(!due(&m, &DrainProgress { end_rounds: MAX_END_ROUNDS, ..Default::default() }).end_sessions);
        assert!(!due(&marks(true, None, false), &DrainProgress::default()).end_sessions);
    }
}
