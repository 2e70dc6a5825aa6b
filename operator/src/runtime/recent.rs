//! Memory of our own recent writes, so that a cache lagging behind them does not cause them again.
//!
//! A reconcile compares what it wants with the cache, and the cache learns of our writes only through
//! the watch. Under load (300 tenants, measured by `e2e/bench tenants`) reconciles came faster than
//! the watch events: Services were applied 3.2 times each and CaptionPool status 3.7 times each on
//! the way to Ready. What is remembered here: per object, the hash of what we last wrote and the
//! resourceVersion the cache showed when we wrote it. The same write is skipped while the cache
//! still shows that resourceVersion (it has not caught up) and for at most [`HOLD`] (at 300 tenants
//! the watches lagged by more than 30 s); any other resourceVersion (our write arrived, or someone
//! else's) and the normal comparison decides again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a write is trusted to be on its way to the cache.
pub const HOLD: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Write {
    hash: String,
    seen_version: Option<String>,
    at: Instant,
}

/// Our recent writes, by object key (`Kind/namespace/name`, `Kind/namespace/name/status`).
#[derive(Debug, Default)]
pub struct RecentWrites {
    writes: Mutex<HashMap<String, Write>>,
}

impl RecentWrites {
    /// Whether writing `hash` to `key` would repeat a write the cache (still at `seen_version`) has
    /// not shown yet.
    pub fn in_flight(&self, key: &str, hash: &str, seen_version: Option<&str>) -> bool {
        self.in_flight_at(key, hash, seen_version, Instant::now())
    }

    fn in_flight_at(&self, key: &str, hash: &str, seen_version: Option<&str>, now: Instant) -> bool {
        let mut writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        match writes.get(key) {
            Some(w) if now.duration_since(w.at) >= HOLD || w.seen_version.as_deref() != seen_version => {
                writes.remove(key);
                false
            }
            Some(w) => w.hash == hash,
            None => false,
        }
    }

    /// Records that `hash` was written to `key` while the cache showed `seen_version`.
    pub fn wrote(&self, key: &str, hash: &str, seen_version: Option<&str>) {
        self.wrote_at(key, hash, seen_version, Instant::now());
    }

    fn wrote_at(&self, key: &str, hash: &str, seen_version: Option<&str>, now: Instant) {
        let mut writes = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: entries older than HOLD are worthless; drop them when the map grows.
        if writes.len() > 4096 {
            writes.retain(|_, w| now.duration_since(w.at) < HOLD);
        }
        writes.insert(
            key.to_string(),
            Write { hash: hash.to_string(), seen_version: seen_version.map(str::to_string), at: now },
        );
    }

    /// Forgets `key` (the cache shows what we wrote).
    pub fn settled(&self, key: &str) {
        self.writes.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.writes.lock().unwrap().len()
    }
}

/// Hash of a status for [`RecentWrites`]: conditions' `lastTransitionTime` left out, since a stale
/// status makes each reconcile stamp a condition change with a new time (pure).
pub fn status_hash(status: &serde_json::Value) -> String {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("lastTransitionTime");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = status.clone();
    strip(&mut v);
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(v.to_string().as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_write_is_not_repeated_while_the_cache_lags() {
        let r = RecentWrites::default();
        let t0 = Instant::now();
        assert!(!r.in_flight_at("Service/a/b", "h1", Some("10"), t0));
        r.wrote_at("Service/a/b", "h1", Some("10"), t0);
        // Same wish, cache still at 10: in flight.
        assert!(r.in_flight_at("Service/a/b", "h1", Some("10"), t0 + Duration::from_secs(1)));
        // A different wish is written.
        assert!(!r.in_flight_at("Service/a/b", "h2", Some("10"), t0 + Duration::from_secs(1)));
        // The cache moved (our write or anyone's): decide again from the cache.
        assert!(!r.in_flight_at("Service/a/b", "h1", Some("11"), t0 + Duration::from_secs(1)));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn trust_expires() {
        let r = RecentWrites::default();
        let t0 = Instant::now();
        r.wrote_at("k", "h", None, t0);
        assert!(r.in_flight_at("k", "h", None, t0 + HOLD - Duration::from_millis(1)));
        assert!(!r.in_flight_at("k", "h", None, t0 + HOLD));
        r.wrote_at("k", "h", None, t0);
        r.settled("k");
        assert!(!r.in_flight_at("k", "h", None, t0));
    }

    #[test]
    fn status_hash_ignores_transition_times_only() {
        let a = json!({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}], "ready": 1});
        let b = json!({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T00:00:00Z"}], "ready": 1});
        let c = json!({"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"}], "ready": 1});
        assert_eq!(status_hash(&a), status_hash(&b));
        assert_ne!(status_hash(&a), status_hash(&c));
    }

    proptest! {
        /// Against a model: a write is skipped only when it repeats the last write, the cache shows
        /// the version seen then, and HOLD has not passed since.
        #[test]
        fn skips_only_exact_repeats_on_a_lagging_cache(
            ops in proptest::collection::vec((0u8..3, 0u8..3, 0u64..20, any::<bool>()), 1..60)
        ) {
            let r = RecentWrites::default();
            let mut now = Instant::now();
            let mut model: Option<(u8, u8, Instant)> = None;
            for (hash, version, step, write) in ops {
                now += Duration::from_secs(step);
                let (h, v) = (hash.to_string(), version.to_string());
                if model.is_some_and(|(_, mv, at)| mv != version || now.duration_since(at) >= HOLD) {
                    model = None;
                }
                let expected = model.is_some_and(|(mh, _, _)| mh == hash);
                prop_assert_eq!(r.in_flight_at("k", &h, Some(&v), now), expected);
                if !expected && write {
                    r.wrote_at("k", &h, Some(&v), now);
                    model = Some((hash, version, now));
                }
            }
        }
    }
}
