//! The bound on sweeps across all policies: at most `limit` at once (`--retention-max-concurrent-sweeps`),
//! and at most half of them (at least one) for the policies of one namespace, so that one tenant's
//! slow or hostile endpoints cannot hold every slot. Slots go to the policies in the order they
//! started waiting. A policy that gets none is requeued ([`WAIT_REQUEUE`]): no reconcile waits for a
//! slot. When a slot is released, the policies now first in line are woken at once (`wake`, fed to
//! the controller's `reconcile_on`), so a free slot does not sit idle until their next requeue.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedSender;
use prometheus::IntGaugeVec;

/// How soon a policy waiting for a slot is looked at again (when no released slot wakes it first).
pub const WAIT_REQUEUE: Duration = Duration::from_secs(10);
/// A waiting policy not seen again for this long (deleted, or no longer due) leaves the line.
const STALE: Duration = Duration::from_secs(30);

/// The slots. Keys are the policies' `namespace/name`.
pub struct Slots {
    limit: usize,
    per_namespace: usize,
    state: Mutex<Line>,
    /// `visio_retention_sweeps{state}`.
    gauge: Option<IntGaugeVec>,
    /// Where the keys of policies to wake go.
    wake: Option<UnboundedSender<String>>,
}

/// Who runs and who waits.
#[derive(Default)]
struct Line {
    /// key -> namespace.
    running: BTreeMap<String, String>,
    /// In the order they started waiting.
    waiting: Vec<Waiter>,
}

struct Waiter {
    key: String,
    namespace: String,
    seen: Instant,
}

/// A policy did not get a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Whether it just started waiting (worth one log line).
    pub first: bool,
    /// Sweeps running now.
    pub running: usize,
}

/// A slot held; released when dropped (the sweep's task ends, or panics).
pub struct Slot {
    slots: Arc<Slots>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(&self.key, Instant::now());
    }
}

impl Slots {
    pub fn new(limit: usize, gauge: Option<IntGaugeVec>, wake: Option<UnboundedSender<String>>) -> Slots {
        let limit = limit.max(1);
        Slots { limit, per_namespace: (limit / 2).max(1), state: Mutex::default(), gauge, wake }
    }

    fn lock(&self) -> MutexGuard<'_, Line> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for the policy `key` of `namespace` at `now`, if its turn has come; otherwise it is
    /// (still) in line.
    pub fn try_take(self: &Arc<Self>, key: &str, namespace: &str, now: Instant) -> Result<Slot, Waiting> {
        let mut line = self.lock();
        line.waiting.retain(|w| w.key == key || now.duration_since(w.seen) < STALE);
        let first = match line.waiting.iter_mut().find(|w| w.key == key) {
            Some(w) => {
                w.seen = now;
                false
            }
            None => {
                line.waiting.push(Waiter { key: key.into(), namespace: namespace.into(), seen: now });
                true
            }
        };
        let admitted = !line.running.contains_key(key) && self.next_in_line(&line).iter().any(|k| k == key);
        let out = if admitted {
            line.waiting.retain(|w| w.key != key);
            line.running.insert(key.into(), namespace.into());
            Ok(Slot { slots: self.clone(), key: key.into() })
        } else {
            Err(Waiting { first, running: line.running.len() })
        };
        self.publish(&line);
        out
    }

    /// Frees the slot of `key` and wakes the policies whose turn it now is.
    fn release(&self, key: &str, now: Instant) {
        let mut line = self.lock();
        line.running.remove(key);
        line.waiting.retain(|w| now.duration_since(w.seen) < STALE);
        self.publish(&line);
        if let Some(wake) = &self.wake {
            for k in self.next_in_line(&line) {
                let _ = wake.unbounded_send(k);
            }
        }
    }

    /// The waiting policies that would get a slot now, in order: first come, first served, skipping
    /// those whose namespace already holds its share.
    fn next_in_line(&self, line: &Line) -> Vec<String> {
        let mut free = self.limit.saturating_sub(line.running.len());
        let mut held: HashMap<&str, usize> = HashMap::new();
        for ns in line.running.values() {
            *held.entry(ns).or_default() += 1;
        }
        let mut out = vec![];
        for w in &line.waiting {
            if free == 0 {
                break;
            }
            let n = held.entry(&w.namespace).or_default();
            if *n < self.per_namespace {
                *n += 1;
                free -= 1;
                out.push(w.key.clone());
            }
        }
        out
    }

    fn publish(&self, line: &Line) {
        if let Some(g) = &self.gauge {
            g.with_label_values(&["running"]).set(line.running.len() as i64);
            g.with_label_values(&["waiting"]).set(line.waiting.len() as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(limit: usize) -> (Arc<Slots>, futures::channel::mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        (Arc::new(Slots::new(limit, None, Some(tx))), rx)
    }

    fn woken(rx: &mut futures::channel::mpsc::UnboundedReceiver<String>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn at_most_the_limit_run_and_a_namespace_holds_at_most_half() {
        let t = Instant::now();
        let (s, _rx) = slots(4);
        let a1 = s.try_take("a/1", "a", t).unwrap();
        let _a2 = s.try_take("a/2", "a", t).unwrap();
        let w = s.try_take("a/3", "a", t).err().unwrap();
        assert_eq!(w, Waiting { first: true, running: 2 }, "namespace a holds its half");
        let _b1 = s.try_take("b/1", "b", t).unwrap();
        let _c1 = s.try_take("c/1", "c", t).unwrap();
        assert!(s.try_take("d/1", "d", t).is_err(), "all four slots taken");
        drop(a1);
        // a/3 waited first, and namespace a has room again.
        assert!(s.try_take("d/1", "d", t).is_err(), "not d's turn: a/3 came first");
        assert!(s.try_take("a/3", "a", t).is_ok());
    }

    #[test]
    fn a_released_slot_wakes_the_first_in_line_and_keeps_its_turn() {
        let t = Instant::now();
        let (s, mut rx) = slots(2);
        let x = s.try_take("hostile/x", "hostile", t).unwrap();
        let _y = s.try_take("honest/y", "honest", t).unwrap();
        assert_eq!(s.try_take("honest/z", "honest", t).err().map(|w| w.first), Some(true));
        assert_eq!(s.try_take("hostile/x2", "hostile", t).err().map(|w| w.first), Some(true));
        drop(x);
        assert_eq!(woken(&mut rx), vec!["hostile/x2".to_string()], "honest/z is blocked by its namespace's share");
        // The hostile policy whose sweep just failed comes back at once: behind the line.
        assert!(s.try_take("hostile/x", "hostile", t).is_err());
        assert!(s.try_take("hostile/x2", "hostile", t).is_ok());
    }

    #[test]
    fn a_waiter_that_does_not_come_back_leaves_the_line() {
        let t = Instant::now();
        let (s, _rx) = slots(1);
        let a = s.try_take("a/1", "a", t).unwrap();
        assert!(s.try_take("b/gone", "b", t).is_err());
        assert!(s.try_take("c/1", "c", t + Duration::from_secs(5)).is_err());
        drop(a);
        // b/gone was first but was not seen for 30 s: c/1 goes.
        let later = t + STALE + Duration::from_secs(1);
        assert_eq!(s.try_take("c/1", "c", later).err(), None);
    }

    #[test]
    fn the_gauge_counts_running_and_waiting() {
        let m = crate::telemetry::Metrics::new();
        let s = Arc::new(Slots::new(1, Some(m.retention_sweeps.clone()), None));
        let t = Instant::now();
        let a = s.try_take("a/1", "a", t).unwrap();
        let _ = s.try_take("b/1", "b", t);
        let g = |state: &str| m.retention_sweeps.with_label_values(&[state]).get();
        assert_eq!((g("running"), g("waiting")), (1, 1));
        drop(a);
        assert_eq!((g("running"), g("waiting")), (0, 1));
        let _b = s.try_take("b/1", "b", t).unwrap();
        assert_eq!((g("running"), g("waiting")), (1, 0));
    }

    #[test]
    fn one_slot_and_one_namespace_still_sweeps() {
        let (s, _rx) = slots(1);
        let t = Instant::now();
        let a = s.try_take("a/1", "a", t).unwrap();
        assert!(s.try_take("a/2", "a", t).is_err());
        drop(a);
        assert!(s.try_take("a/2", "a", t).is_ok());
    }
}
