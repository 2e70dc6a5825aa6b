//! The load a scenario drives through a [`Fleet`]: meetings opened in bulk, closed at planned
//! (seeded, random) times, and a stream of short meetings arriving.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};

use super::{Fleet, Join, View};
use crate::rng::Rng;

/// Meetings opened in bulk, closed at planned times, and a stream of short meetings arriving: the
/// load a scenario drives through a [`Fleet`]. Every step does a bounded amount of work.
pub struct Workload {
    rng: Rng,
    /// Open meetings the workload will close, and when.
    planned: BTreeMap<String, Instant>,
    churn: Option<Churn>,
    next_churn: Option<Instant>,
    counter: u64,
    /// Meetings that found no serving pod (the churn only; bulk opens fail instead).
    pub unplaced: u32,
}

/// Short meetings arriving one every `every`, each lasting between `lasting.0` and `lasting.1`.
#[derive(Clone, Debug)]
pub struct Churn {
    pub prefix: String,
    pub every: Duration,
    pub participants: (u32, u32),
    pub lasting: (Duration, Duration),
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        Workload {
            rng: Rng::new(seed),
            planned: BTreeMap::new(),
            churn: None,
            next_churn: None,
            counter: 0,
            unplaced: 0,
        }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Opens `count` meetings named `<prefix>-<n>`, each with `participants.0..=participants.1`
    /// participants; fails if one finds no serving pod.
    pub async fn open_many(
        &mut self,
        fleet: &Fleet,
        prefix: &str,
        count: usize,
        participants: (u32, u32),
    ) -> Result<Vec<String>> {
        let mut names = Vec::with_capacity(count);
        for i in 0..count {
            let name = format!("{prefix}-{i}");
            let n = self.rng.range(u64::from(participants.0), u64::from(participants.1)) as u32;
            match fleet.open(&name, n).await? {
                Join::Joined(_) => names.push(name),
                Join::NoServingPod => bail!("no serving pod for meeting {name}"),
            }
        }
        Ok(names)
    }

    /// Plans the end of each of `names` at a random instant between `from + lo` and `from + hi`.
    pub fn end_between(&mut self, names: &[String], from: Instant, lo: Duration, hi: Duration) {
        for name in names {
            let at = from + self.rng.duration(lo, hi);
            self.planned.insert(name.clone(), at);
        }
    }

    /// Starts (or, with `None`, stops) the stream of short meetings.
    pub fn churn(&mut self, churn: Option<Churn>) {
        self.next_churn = churn.as_ref().map(|_| Instant::now());
        self.churn = churn;
    }

    /// Meetings still planned to close.
    pub fn planned(&self) -> usize {
        self.planned.len()
    }

    /// Closes the meetings that are due and opens the short meeting that is due, if any.
    pub async fn step(&mut self, fleet: &Fleet) -> Result<()> {
        let now = Instant::now();
        let due: Vec<String> = self.planned.iter().filter(|(_, at)| **at <= now).map(|(n, _)| n.clone()).collect();
        for name in due {
            self.planned.remove(&name);
            fleet.close(&name).await?;
        }
        if let (Some(churn), Some(next)) = (self.churn.clone(), self.next_churn) {
            if next <= now {
                self.next_churn = Some(next + churn.every);
                self.counter += 1;
                let name = format!("{}-{}", churn.prefix, self.counter);
                let n = self.rng.range(u64::from(churn.participants.0), u64::from(churn.participants.1)) as u32;
                match fleet.open(&name, n).await? {
                    Join::Joined(_) => {
                        let at = now + self.rng.duration(churn.lasting.0, churn.lasting.1);
                        self.planned.insert(name, at);
                    }
                    Join::NoServingPod => self.unplaced += 1,
                }
            }
        }
        Ok(())
    }

    /// Runs [`Workload::step`] every 100 ms for `duration`.
    pub async fn run_for(&mut self, fleet: &Fleet, duration: Duration) -> Result<()> {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            self.step(fleet).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Runs [`Workload::step`] every 100 ms until `check` returns `Some` for the fleet's view; fails at
    /// `deadline`, saying it was waiting for `what`.
    pub async fn run_until<T>(
        &mut self,
        fleet: &Fleet,
        what: &str,
        deadline: Instant,
        mut check: impl FnMut(&View) -> Option<T>,
    ) -> Result<T> {
        loop {
            ensure!(Instant::now() < deadline, "timed out waiting for {what}");
            self.step(fleet).await?;
            if let Some(v) = check(&fleet.view().await) {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the stream and closes every meeting still planned.
    pub async fn close_all(&mut self, fleet: &Fleet) -> Result<()> {
        self.churn(None);
        let names: Vec<String> = self.planned.keys().cloned().collect();
        self.planned.clear();
        for name in names {
            fleet.close(&name).await?;
        }
        Ok(())
    }
}
