//! The operator's metrics (Prometheus text format).
//!
//! Labels stay bounded: controller, error label, tenant namespace and resource name (`cluster`,
//! `pool`, `policy`, or `kind` + `name`), data class — never room or participant names.
//!
//! The shipped alerts (`monitoring/alerts.yaml`) and dashboard (`monitoring/dashboard.json`) are
//! written against these names; `operator/tests/monitoring.rs` fails if they use a name that is
//! not registered here. Every per-tenant series is dropped when its resource is deleted
//! ([`Metrics::forget_cluster`], [`Metrics::forget_pool`], [`Metrics::forget_policy`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc, MetricVec, MetricVecBuilder};
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::fleet::Figures;

/// Kinds as they appear in the `kind` label, and the label that names a resource of that kind
/// in the families that carry no `kind` label.
const TENANT_KINDS: [(&str, &str); 3] =
    [("VisioCluster", "cluster"), ("CaptionPool", "pool"), ("RetentionPolicy", "policy")];

/// Every metric the operator exports. Names are checked against the shipped alerts and dashboards.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub child_writes: IntCounterVec,
    /// `visio_owned_object_repairs_total{kind}`: children found edited by hand and applied again.
    pub owned_object_repairs: IntCounterVec,
    /// `visio_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
    pub sfu_pods: IntGaugeVec,
    pub participants: IntGaugeVec,
    pub rooms: IntGaugeVec,
    /// Free places on the Serving SFU pods (see [`Figures::serving_headroom`]).
    pub capacity_headroom: IntGaugeVec,
    /// `spec.autoscaling.participantBuffer`, the headroom the autoscaler keeps.
    pub sfu_participant_buffer: IntGaugeVec,
    /// Age of the oldest draining SFU pod, computed when scraped.
    pub sfu_oldest_drain: DrainAge,
    /// `spec.upgrade.drainTimeout` in seconds.
    pub sfu_drain_timeout: GaugeVec,
    /// Serving SFU pods whose agent has not reported a readable load.
    pub sfu_load_unknown: IntGaugeVec,
    /// `spec.sfu.replicas.max`, for the alert on a fleet held at its max during a schedule window.
    pub sfu_max_pods: IntGaugeVec,
    /// 1 while a schedule window holds the fleet up (opened early by the start-up lead), else 0.
    pub sfu_schedule_window_open: IntGaugeVec,
    /// How long a new SFU pod of the tenant took from creation to Ready, the slowest of its recent pods:
    /// the lead schedule windows open early by.
    pub sfu_pod_startup: GaugeVec,
    pub ready: GaugeVec,
    /// `visio_caption_slots{namespace,pool,state="used"|"total"}`.
    pub caption_slots: IntGaugeVec,
    /// Backend pods the pool's planner wants (load and open schedule window), and `spec.backend.replicas.max`:
    /// the alert on a pool held at its max during a window compares them.
    pub caption_backends_desired: IntGaugeVec,
    pub caption_max_backends: IntGaugeVec,
    /// 1 while a schedule window holds the pool's backends up (opened early by the start-up lead), else 0.
    pub caption_schedule_window_open: IntGaugeVec,
    /// Creation to Ready of the pool's recent backend pods, the slowest: the lead its windows open early by.
    pub caption_backend_startup: GaugeVec,
    /// Streams a pool's backends refused because they were full. Start it at 0 ([`Metrics::init_pool`]).
    pub caption_streams_rejected: IntCounterVec,
    /// 95th percentile of the backends' model step time, in seconds (one step is 80 ms of audio).
    pub caption_step_time_p95: GaugeVec,
    /// Share (0 to 1) of the worst backend's model steps slower than real time (above 80 ms).
    pub caption_slow_steps: GaugeVec,
    /// Sweeps by `result` (`success` | `failure`). Start both at 0 ([`Metrics::init_policy`]).
    pub retention_runs: IntCounterVec,
    /// Objects deleted (or, in DryRun, that would have been), by data `class`.
    pub retention_deleted_objects: IntCounterVec,
    /// Bytes deleted (or, in DryRun, that would have been), by data `class`.
    pub retention_deleted_bytes: IntCounterVec,
    /// Expired objects kept because they are on legal hold, at the last sweep.
    pub retention_held_objects: IntGaugeVec,
    /// Unix time (seconds) of the last successful sweep; the policy's creation time until the
    /// first success, so that a policy that never succeeds still becomes overdue.
    pub retention_last_success: GaugeVec,
    /// `spec.interval` in seconds.
    pub retention_interval: GaugeVec,
    /// `visio_retention_policy_missing{kind,namespace,name}`: 1 while a VisioCluster or CaptionPool
    /// stores data that no RetentionPolicy covers (its `RetentionPolicyMissing` condition), else 0.
    pub retention_policy_missing: IntGaugeVec,
    /// `visio_retention_sweeps{state="running"|"waiting"}`: sweeps holding one of the operator's
    /// slots (`--retention-max-concurrent-sweeps`), and policies due for a sweep waiting for one.
    pub retention_sweeps: IntGaugeVec,
    /// Every registered family, for forgetting a tenant's series and for the name checks.
    families: Vec<Box<dyn Family>>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            GaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let tenant = &["namespace", "cluster"];
        let pool = &["namespace", "pool"];
        let policy = &["namespace", "policy"];

        let reconciles =
            counter("visio_reconcile_total", "Reconciles run, by controller and result", &["controller", "result"]);
        let reconcile_errors = counter(
            "visio_reconcile_errors_total",
            "Reconcile errors, by controller and stable error label",
            &["controller", "error"],
        );
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("visio_reconcile_duration_seconds", "Time one reconcile took")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["controller"],
        )
        .expect("valid metric");
        let child_writes = counter(
            "visio_child_writes_total",
            "Writes the operator sent to the API, by kind and verb",
            &["kind", "verb"],
        );
        let owned_object_repairs = counter(
            "visio_owned_object_repairs_total",
            "Objects of the operator's found edited by hand (a Secret's data, a Role's rules) and applied again, by kind",
            &["kind"],
        );
        let build_info =
            int_gauge("visio_build_info", "Always 1; the version label is the operator's release", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let sfu_pods = int_gauge(
            "visio_sfu_pods",
            "SFU pods of a tenant's fleet, by state (desired, current, ready, updated, draining)",
            &["namespace", "cluster", "state"],
        );
        let participants = int_gauge("visio_participants", "Participants connected to a tenant's SFU fleet", tenant);
        let rooms = int_gauge("visio_rooms", "Rooms open on a tenant's SFU fleet", tenant);
        let capacity_headroom = int_gauge(
            "visio_sfu_capacity_headroom",
            "Free participant places on serving SFU pods (their capacity minus their reported load; \
             an unreported load counts as 0, see visio_sfu_load_unknown_pods)",
            tenant,
        );
        let sfu_participant_buffer = int_gauge(
            "visio_sfu_participant_buffer",
            "Free participant places the autoscaler keeps ready (spec.autoscaling.participantBuffer)",
            tenant,
        );
        let sfu_oldest_drain = DrainAge::new(gauge(
            "visio_sfu_oldest_drain_seconds",
            "Age of the oldest draining SFU pod (since its visio.io/drain-since annotation), 0 if none",
            tenant,
        ));
        let sfu_drain_timeout = gauge(
            "visio_sfu_drain_timeout_seconds",
            "Longest a draining SFU pod keeps its meetings before they are ended (spec.upgrade.drainTimeout)",
            tenant,
        );
        let sfu_load_unknown = int_gauge(
            "visio_sfu_load_unknown_pods",
            "Serving SFU pods whose agent has not reported a readable load (visio.io/load)",
            tenant,
        );
        let sfu_max_pods =
            int_gauge("visio_sfu_max_pods", "Most SFU pods the fleet may run (spec.sfu.replicas.max)", tenant);
        let sfu_schedule_window_open = int_gauge(
            "visio_sfu_schedule_window_open",
            "1 while a window of spec.autoscaling.schedules holds the SFU fleet up (opened early by the start-up lead)",
            tenant,
        );
        let sfu_pod_startup = gauge(
            "visio_sfu_pod_startup_seconds",
            "Creation to first Ready of the tenant's recent SFU pods, the slowest of them: schedule windows open this much early",
            tenant,
        );
        let ready = gauge(
            "visio_resource_ready",
            "1 when a custom resource's Ready condition is True, else 0",
            &["kind", "namespace", "name"],
        );
        let caption_slots = int_gauge(
            "visio_caption_slots",
            "Speech-to-text slots of a caption pool's backends, by state (used, total)",
            &["namespace", "pool", "state"],
        );
        let caption_backends_desired = int_gauge(
            "visio_caption_backends_desired",
            "Backend pods a caption pool's planner wants for its load and its open schedule window",
            pool,
        );
        let caption_max_backends = int_gauge(
            "visio_caption_max_backends",
            "Most backend pods a caption pool may run (spec.backend.replicas.max)",
            pool,
        );
        let caption_schedule_window_open = int_gauge(
            "visio_caption_schedule_window_open",
            "1 while a schedule window (spec.backend.schedules) holds a caption pool's backends up, opened early by \
             the measured start-up, else 0",
            pool,
        );
        let caption_backend_startup = gauge(
            "visio_caption_backend_startup_seconds",
            "Creation to Ready of a caption pool's recent backend pods, the slowest: how early its schedule windows open",
            pool,
        );
        let caption_streams_rejected = counter(
            "visio_caption_streams_rejected_total",
            "Caption streams a pool's backends refused because every slot was taken",
            pool,
        );
        let caption_step_time_p95 = gauge(
            "visio_caption_step_time_p95_seconds",
            "95th percentile of a caption pool's model step time; one step is 80 ms of audio, so above 0.08 the \
             pool runs slower than real time",
            pool,
        );
        let caption_slow_steps = gauge(
            "visio_caption_slow_steps_ratio",
            "Share (0 to 1) of a caption pool's model steps slower than real time (above 80 ms of compute for \
             80 ms of audio), on its worst backend; moshi-server's step histogram stops at 80 ms, so this is \
             what can show a step above it",
            pool,
        );
        let retention_runs = counter(
            "visio_retention_runs_total",
            "Retention sweeps of a policy, by result (success, failure)",
            &["namespace", "policy", "result"],
        );
        let retention_deleted_objects = counter(
            "visio_retention_deleted_objects_total",
            "Objects a retention policy deleted (in DryRun: would have deleted), by data class",
            &["namespace", "policy", "class"],
        );
        let retention_deleted_bytes = counter(
            "visio_retention_deleted_bytes_total",
            "Bytes a retention policy deleted (in DryRun: would have deleted), by data class",
            &["namespace", "policy", "class"],
        );
        let retention_held_objects = int_gauge(
            "visio_retention_held_objects",
            "Expired objects a retention policy kept because they are on legal hold, at its last sweep",
            policy,
        );
        let retention_last_success = gauge(
            "visio_retention_last_success_timestamp_seconds",
            "Unix time of a retention policy's last successful sweep (its creation time before the first one)",
            policy,
        );
        let retention_interval =
            gauge("visio_retention_interval_seconds", "Time between two sweeps of a retention policy", policy);
        let retention_policy_missing = int_gauge(
            "visio_retention_policy_missing",
            "1 while a resource stores meeting data that no RetentionPolicy covers, else 0",
            &["kind", "namespace", "name"],
        );
        let retention_sweeps = int_gauge(
            "visio_retention_sweeps",
            "Retention sweeps running (each holds one of --retention-max-concurrent-sweeps slots), and policies \
             due for a sweep waiting for a slot, by state (running, waiting)",
            &["state"],
        );
        for state in ["running", "waiting"] {
            retention_sweeps.with_label_values(&[state]).set(0);
        }

        let families: Vec<Box<dyn Family>> = vec![
            Box::new(reconciles.clone()),
            Box::new(reconcile_errors.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(child_writes.clone()),
            Box::new(owned_object_repairs.clone()),
            Box::new(build_info.clone()),
            Box::new(sfu_pods.clone()),
            Box::new(participants.clone()),
            Box::new(rooms.clone()),
            Box::new(capacity_headroom.clone()),
            Box::new(sfu_participant_buffer.clone()),
            Box::new(sfu_oldest_drain.clone()),
            Box::new(sfu_drain_timeout.clone()),
            Box::new(sfu_load_unknown.clone()),
            Box::new(sfu_max_pods.clone()),
            Box::new(sfu_schedule_window_open.clone()),
            Box::new(sfu_pod_startup.clone()),
            Box::new(ready.clone()),
            Box::new(caption_slots.clone()),
            Box::new(caption_backends_desired.clone()),
            Box::new(caption_max_backends.clone()),
            Box::new(caption_schedule_window_open.clone()),
            Box::new(caption_backend_startup.clone()),
            Box::new(caption_streams_rejected.clone()),
            Box::new(caption_step_time_p95.clone()),
            Box::new(caption_slow_steps.clone()),
            Box::new(retention_runs.clone()),
            Box::new(retention_deleted_objects.clone()),
            Box::new(retention_deleted_bytes.clone()),
            Box::new(retention_held_objects.clone()),
            Box::new(retention_last_success.clone()),
            Box::new(retention_interval.clone()),
            Box::new(retention_policy_missing.clone()),
            Box::new(retention_sweeps.clone()),
        ];
        for f in &families {
            registry.register(f.boxed_collector()).expect("metric registered once");
        }
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            child_writes,
            owned_object_repairs,
            build_info,
            sfu_pods,
            participants,
            rooms,
            capacity_headroom,
            sfu_participant_buffer,
            sfu_oldest_drain,
            sfu_drain_timeout,
            sfu_load_unknown,
            sfu_max_pods,
            sfu_schedule_window_open,
            sfu_pod_startup,
            ready,
            caption_slots,
            caption_backends_desired,
            caption_max_backends,
            caption_schedule_window_open,
            caption_backend_startup,
            caption_streams_rejected,
            caption_step_time_p95,
            caption_slow_steps,
            retention_runs,
            retention_deleted_objects,
            retention_deleted_bytes,
            retention_held_objects,
            retention_last_success,
            retention_interval,
            retention_policy_missing,
            retention_sweeps,
            families,
        }
    }

    /// Sets the per-tenant fleet figures the alerts compare (headroom against buffer, drain age
    /// against drain timeout, unreported loads).
    pub fn set_fleet(&self, namespace: &str, cluster: &str, f: &Figures) {
        let l = &[namespace, cluster];
        self.capacity_headroom.with_label_values(l).set(f.serving_headroom);
        self.sfu_participant_buffer.with_label_values(l).set(f.buffer);
        self.sfu_drain_timeout.with_label_values(l).set(f.drain_timeout_ms.max(0) as f64 / 1000.0);
        self.sfu_load_unknown.with_label_values(l).set(f.load_unknown_pods);
        self.sfu_max_pods.with_label_values(l).set(f.max);
        self.sfu_schedule_window_open.with_label_values(l).set(i64::from(f.window_open));
        match f.startup_lead_ms {
            Some(ms) => self.sfu_pod_startup.with_label_values(l).set(ms.max(0) as f64 / 1000.0),
            // Not measured yet: no series, rather than a 0 that reads as instant.
            None => {
                let _ = self.sfu_pod_startup.remove_label_values(l);
            }
        }
        self.sfu_oldest_drain.set_oldest(namespace, cluster, f.oldest_drain_since);
    }

    /// Sets a caption pool's backend fleet figures: desired against max, the schedule window, the lead.
    pub fn set_caption_fleet(&self, namespace: &str, pool: &str, desired: u32, f: &Figures) {
        let l = &[namespace, pool];
        self.caption_backends_desired.with_label_values(l).set(i64::from(desired));
        self.caption_max_backends.with_label_values(l).set(f.max);
        self.caption_schedule_window_open.with_label_values(l).set(i64::from(f.window_open));
        match f.startup_lead_ms {
            Some(ms) => self.caption_backend_startup.with_label_values(l).set(ms.max(0) as f64 / 1000.0),
            None => {
                let _ = self.caption_backend_startup.remove_label_values(l);
            }
        }
    }

    /// Creates a pool's counters at 0, so that the first rejection shows as an increase.
    pub fn init_pool(&self, namespace: &str, pool: &str) {
        self.caption_streams_rejected.with_label_values(&[namespace, pool]).inc_by(0);
    }

    /// Creates a policy's run counters at 0, so that the first failure shows as an increase.
    pub fn init_policy(&self, namespace: &str, policy: &str) {
        for result in ["success", "failure"] {
            self.retention_runs.with_label_values(&[namespace, policy, result]).inc_by(0);
        }
    }

    /// Removes every per-tenant series of a deleted VisioCluster, so label sets stay bounded.
    pub fn forget_cluster(&self, namespace: &str, name: &str) {
        self.forget("VisioCluster", namespace, name)
    }

    /// Removes every per-tenant series of a deleted CaptionPool.
    pub fn forget_pool(&self, namespace: &str, name: &str) {
        self.forget("CaptionPool", namespace, name)
    }

    /// Removes every per-tenant series of a deleted RetentionPolicy.
    pub fn forget_policy(&self, namespace: &str, name: &str) {
        self.forget("RetentionPolicy", namespace, name)
    }

    /// Removes, from every registered family, the series of the resource `kind` `namespace/name`:
    /// those labelled `kind`, `namespace`, `name`, and those labelled `namespace` and the kind's
    /// own label (`cluster`, `pool`, `policy`). A family added later is covered without a change
    /// here, as long as it names its resource one of these ways (a unit test checks that).
    fn forget(&self, kind: &str, namespace: &str, name: &str) {
        let Some((_, key)) = TENANT_KINDS.iter().find(|(k, _)| *k == kind) else { return };
        for f in &self.families {
            let labels = f.label_names();
            if labels.contains("kind") && labels.contains("name") {
                f.remove_matching(&[("kind", kind), ("namespace", namespace), ("name", name)]);
            } else if labels.contains(*key) {
                f.remove_matching(&[("namespace", namespace), (key, name)]);
            }
        }
    }

    /// Every sample name the registry can expose (`_bucket`, `_sum` and `_count` for a histogram):
    /// the registered families whether or not they hold series yet (from their descriptors and
    /// types), and whatever else `registry.gather()` shows. What PromQL over this operator may use.
    pub fn series_names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let families = self.families.iter().flat_map(|f| f.collect_families()).chain(self.registry.gather());
        for family in families {
            let name = family.name();
            match family.get_field_type() {
                MetricType::HISTOGRAM => out.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}"))),
                MetricType::SUMMARY => out.extend(["", "_sum", "_count"].map(|s| format!("{name}{s}"))),
                _ => {
                    out.insert(name.to_string());
                }
            }
        }
        out
    }

    /// The label names of every registered family, by family name (from the descriptors).
    pub fn family_labels(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.families
            .iter()
            .flat_map(|f| {
                f.descs().into_iter().map(|d| (d.fq_name.clone(), d.variable_labels.iter().cloned().collect()))
            })
            .collect()
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// (namespace, cluster) -> start of the tenant's oldest drain (Unix ms), `None` if none drains.
type DrainStarts = BTreeMap<(String, String), Option<i64>>;

/// `visio_sfu_oldest_drain_seconds`: the controller records when each tenant's oldest drain
/// started; the age is computed when the metric is collected. A gauge set at reconcile time
/// would freeze whenever reconciles fail or stall, which is exactly when a drain overruns its
/// deadline, and the alert on it must still fire.
#[derive(Clone)]
pub struct DrainAge {
    gauge: GaugeVec,
    since: Arc<Mutex<DrainStarts>>,
}

impl DrainAge {
    fn new(gauge: GaugeVec) -> Self {
        Self { gauge, since: Arc::default() }
    }

    /// Records the start of the tenant's oldest drain (`None`: nothing drains, the age is 0).
    pub fn set_oldest(&self, namespace: &str, cluster: &str, since_ms: Option<i64>) {
        let mut m = self.since.lock().unwrap_or_else(|p| p.into_inner());
        m.insert((namespace.to_string(), cluster.to_string()), since_ms);
        self.gauge.with_label_values(&[namespace, cluster]).set(age_seconds(since_ms, now_ms()));
    }

    /// The ages as of `now_ms`.
    fn refresh(&self, now_ms: i64) {
        let m = self.since.lock().unwrap_or_else(|p| p.into_inner());
        for ((ns, cluster), since) in m.iter() {
            self.gauge.with_label_values(&[ns, cluster]).set(age_seconds(*since, now_ms));
        }
    }
}

fn age_seconds(since_ms: Option<i64>, now_ms: i64) -> f64 {
    since_ms.map_or(0.0, |s| now_ms.saturating_sub(s).max(0) as f64 / 1000.0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Collector for DrainAge {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh(now_ms());
        self.gauge.collect()
    }
}

/// A registered family: its descriptors, its (possibly empty) families, and a way to drop series.
trait Family: Send + Sync {
    fn descs(&self) -> Vec<&Desc>;
    /// The families as collected, present even without series (type and name are known).
    fn collect_families(&self) -> Vec<MetricFamily>;
    /// Removes every series whose labels include all of `matches`.
    fn remove_matching(&self, matches: &[(&str, &str)]);
    fn boxed_collector(&self) -> Box<dyn Collector>;

    fn label_names(&self) -> BTreeSet<&str> {
        self.descs().into_iter().flat_map(|d| d.variable_labels.iter().map(String::as_str)).collect()
    }
}

impl<T: MetricVecBuilder + 'static> Family for MetricVec<T> {
    fn descs(&self) -> Vec<&Desc> {
        Collector::desc(self)
    }

    fn collect_families(&self) -> Vec<MetricFamily> {
        Collector::collect(self)
    }

    fn remove_matching(&self, matches: &[(&str, &str)]) {
        for family in Collector::collect(self) {
            for m in family.get_metric() {
                let labels: HashMap<&str, &str> = m.get_label().iter().map(|l| (l.name(), l.value())).collect();
                if matches.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                    let _ = self.remove(&labels);
                }
            }
        }
    }

    fn boxed_collector(&self) -> Box<dyn Collector> {
        Box::new(self.clone())
    }
}

impl Family for DrainAge {
    fn descs(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect_families(&self) -> Vec<MetricFamily> {
        self.gauge.collect()
    }

    fn remove_matching(&self, matches: &[(&str, &str)]) {
        let mut m = self.since.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|(ns, cluster), _| {
            !matches.iter().all(|(k, v)| match *k {
                "namespace" => ns == v,
                "cluster" => cluster == v,
                _ => false,
            })
        });
        self.gauge.remove_matching(matches);
    }

    fn boxed_collector(&self) -> Box<dyn Collector> {
        Box::new(self.clone())
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Every series of `name` in the registry, as label maps.
    fn series(m: &Metrics, name: &str) -> Vec<BTreeMap<String, String>> {
        m.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .map(|s| s.get_label().iter().map(|l| (l.name().to_string(), l.value().to_string())).collect())
            .collect()
    }

    /// Every series in the registry: family name and labels.
    fn all_series(m: &Metrics) -> BTreeSet<(String, BTreeMap<String, String>)> {
        m.registry
            .gather()
            .iter()
            .flat_map(|f| {
                f.get_metric().iter().map(|s| {
                    let l = s.get_label().iter().map(|l| (l.name().to_string(), l.value().to_string()));
                    (f.name().to_string(), l.collect())
                })
            })
            .collect()
    }

    /// Every series in the registry that belongs to the resource (any family, any labels).
    fn series_of(m: &Metrics, kind: &str, ns: &str, name: &str) -> Vec<String> {
        let key = TENANT_KINDS.iter().find(|(k, _)| *k == kind).unwrap().1;
        let mut out = vec![];
        for f in m.registry.gather() {
            for s in f.get_metric() {
                let l: HashMap<&str, &str> = s.get_label().iter().map(|l| (l.name(), l.value())).collect();
                let by_key = l.get(key) == Some(&name);
                let by_kind = l.get("kind") == Some(&kind) && l.get("name") == Some(&name);
                if l.get("namespace") == Some(&ns) && (by_key || by_kind) {
                    out.push(format!("{} {l:?}", f.name()));
                }
            }
        }
        out
    }

    /// Sets every per-tenant series of one cluster, one pool and one policy named `name` in `ns`.
    fn populate(m: &Metrics, ns: &str, name: &str) {
        for state in ["desired", "current", "ready", "updated", "draining"] {
            m.sfu_pods.with_label_values(&[ns, name, state]).set(2);
        }
        m.participants.with_label_values(&[ns, name]).set(3);
        m.rooms.with_label_values(&[ns, name]).set(1);
        let f = Figures {
            serving_headroom: 197,
            buffer: 50,
            drain_timeout_ms: 7_200_000,
            oldest_drain_since: Some(now_ms() - 60_000),
            load_unknown_pods: 1,
            max: 10,
            window_open: true,
            startup_lead_ms: Some(42_000),
        };
        m.set_fleet(ns, name, &f);
        m.set_caption_fleet(ns, name, 4, &f);
        for kind in ["VisioCluster", "CaptionPool", "RetentionPolicy"] {
            m.ready.with_label_values(&[kind, ns, name]).set(1.0);
        }
        for kind in ["VisioCluster", "CaptionPool"] {
            m.retention_policy_missing.with_label_values(&[kind, ns, name]).set(1);
        }
        m.caption_slots.with_label_values(&[ns, name, "used"]).set(10);
        m.caption_slots.with_label_values(&[ns, name, "total"]).set(64);
        m.init_pool(ns, name);
        m.caption_step_time_p95.with_label_values(&[ns, name]).set(0.05);
        m.caption_slow_steps.with_label_values(&[ns, name]).set(0.02);
        m.init_policy(ns, name);
        m.retention_runs.with_label_values(&[ns, name, "success"]).inc();
        for class in ["recordings", "transcripts", "captions", "summaries", "metadata"] {
            m.retention_deleted_objects.with_label_values(&[ns, name, class]).inc_by(2);
            m.retention_deleted_bytes.with_label_values(&[ns, name, class]).inc_by(2048);
        }
        m.retention_held_objects.with_label_values(&[ns, name]).set(1);
        m.retention_last_success.with_label_values(&[ns, name]).set(1.7e9);
        m.retention_interval.with_label_values(&[ns, name]).set(3600.0);
    }

    #[test]
    fn build_info_is_one_with_the_release() {
        let body = Metrics::new().render();
        let line = format!("visio_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        assert!(body.contains(&line), "{body}");
    }

    #[test]
    fn set_fleet_exports_every_figure() {
        let m = Metrics::new();
        let f = Figures {
            serving_headroom: 20,
            buffer: 50,
            drain_timeout_ms: 5_400_000,
            oldest_drain_since: None,
            load_unknown_pods: 2,
            max: 12,
            window_open: true,
            startup_lead_ms: Some(95_500),
        };
        m.set_fleet("mininterieur", "visio", &f);
        let body = m.render();
        for line in [
            r#"visio_sfu_capacity_headroom{cluster="visio",namespace="mininterieur"} 20"#,
            r#"visio_sfu_participant_buffer{cluster="visio",namespace="mininterieur"} 50"#,
            r#"visio_sfu_drain_timeout_seconds{cluster="visio",namespace="mininterieur"} 5400"#,
            r#"visio_sfu_load_unknown_pods{cluster="visio",namespace="mininterieur"} 2"#,
            r#"visio_sfu_oldest_drain_seconds{cluster="visio",namespace="mininterieur"} 0"#,
            r#"visio_sfu_max_pods{cluster="visio",namespace="mininterieur"} 12"#,
            r#"visio_sfu_schedule_window_open{cluster="visio",namespace="mininterieur"} 1"#,
            r#"visio_sfu_pod_startup_seconds{cluster="visio",namespace="mininterieur"} 95.5"#,
        ] {
            assert!(body.contains(line), "missing {line} in\n{body}");
        }
        m.set_caption_fleet("mininterieur", "captions", 7, &f);
        let body = m.render();
        for line in [
            r#"visio_caption_backends_desired{namespace="mininterieur",pool="captions"} 7"#,
            r#"visio_caption_max_backends{namespace="mininterieur",pool="captions"} 12"#,
            r#"visio_caption_schedule_window_open{namespace="mininterieur",pool="captions"} 1"#,
            r#"visio_caption_backend_startup_seconds{namespace="mininterieur",pool="captions"} 95.5"#,
        ] {
            assert!(body.contains(line), "missing {line} in\n{body}");
        }
        m.set_caption_fleet("mininterieur", "captions", 7, &Figures { startup_lead_ms: None, ..f });
        assert!(!m.render().contains("visio_caption_backend_startup_seconds{"), "not measured: no series");
    }

    #[test]
    fn drain_age_is_computed_when_collected() {
        let m = Metrics::new();
        let d = &m.sfu_oldest_drain;
        d.set_oldest("ns", "vc", Some(1_000_000));
        d.set_oldest("ns", "idle", None);
        d.set_oldest("ns", "skewed", Some(5_000_000));
        d.refresh(1_125_500);
        assert_eq!(d.gauge.with_label_values(&["ns", "vc"]).get(), 125.5);
        assert_eq!(d.gauge.with_label_values(&["ns", "idle"]).get(), 0.0);
        assert_eq!(d.gauge.with_label_values(&["ns", "skewed"]).get(), 0.0, "a start in the future is age 0");
        d.refresh(1_600_000);
        assert_eq!(d.gauge.with_label_values(&["ns", "vc"]).get(), 600.0, "grows without a new set_oldest");
        // Through the registry, with the real clock: a drain that started 90 s ago.
        d.set_oldest("ns", "vc", Some(now_ms() - 90_000));
        let age: f64 = m
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(r#"visio_sfu_oldest_drain_seconds{cluster="vc",namespace="ns"} "#))
            .expect("series rendered")
            .parse()
            .unwrap();
        assert!((90.0..120.0).contains(&age), "{age}");
    }

    #[test]
    fn forgetting_a_resource_removes_all_of_its_series_and_nothing_else() {
        let m = Metrics::new();
        for (ns, name) in [("ns", "visio"), ("ns", "other"), ("other-ns", "visio")] {
            populate(&m, ns, name);
        }
        let before = all_series(&m);
        assert!(!series_of(&m, "VisioCluster", "ns", "visio").is_empty());

        m.forget_cluster("ns", "visio");
        assert_eq!(series_of(&m, "VisioCluster", "ns", "visio"), Vec::<String>::new());
        // The drain age is not re-created from its remembered start at the next scrape.
        assert!(!m.render().contains(r#"visio_sfu_oldest_drain_seconds{cluster="visio",namespace="ns"}"#));
        // The pool and the policy of the same name, and other tenants, are untouched.
        assert!(!series_of(&m, "CaptionPool", "ns", "visio").is_empty());
        assert!(!series_of(&m, "RetentionPolicy", "ns", "visio").is_empty());
        assert!(!series_of(&m, "VisioCluster", "ns", "other").is_empty());
        assert!(!series_of(&m, "VisioCluster", "other-ns", "visio").is_empty());

        m.forget_pool("ns", "visio");
        assert_eq!(series_of(&m, "CaptionPool", "ns", "visio"), Vec::<String>::new());
        assert!(!series_of(&m, "RetentionPolicy", "ns", "visio").is_empty());

        m.forget_policy("ns", "visio");
        assert_eq!(series_of(&m, "RetentionPolicy", "ns", "visio"), Vec::<String>::new());

        // Exactly the other tenants' series are left, all of them.
        let ours = |(name, l): &(String, BTreeMap<String, String>)| {
            let is = |k: &str, v: &str| l.get(k).map(String::as_str) == Some(v);
            is("namespace", "ns")
                && (is("cluster", "visio") || is("pool", "visio") || is("policy", "visio") || is("name", "visio"))
                && !name.is_empty()
        };
        let expected: BTreeSet<_> = before.into_iter().filter(|s| !ours(s)).collect();
        assert_eq!(all_series(&m), expected);
        // Forgetting twice, or something unknown, is harmless.
        m.forget_cluster("ns", "visio");
        m.forget_cluster("nowhere", "nothing");
    }

    #[test]
    fn every_family_with_a_namespace_is_forgotten_with_its_resource() {
        // `forget` finds a family's series by its labels: a per-tenant family must name its
        // resource by `kind` + `name`, or by the label of its kind.
        let keys: Vec<&str> = TENANT_KINDS.iter().map(|(_, k)| *k).collect();
        for (name, labels) in Metrics::new().family_labels() {
            if !labels.contains("namespace") {
                continue;
            }
            let by_kind = labels.contains("kind") && labels.contains("name");
            let by_key = keys.iter().filter(|k| labels.contains(**k)).count() == 1;
            assert!(by_kind ^ by_key, "{name} {labels:?}: per-tenant, but forget_* cannot find its series");
        }
    }

    #[test]
    fn labels_stay_bounded() {
        let allowed: BTreeSet<&str> = [
            "controller",
            "result",
            "error",
            "kind",
            "verb",
            "version",
            "namespace",
            "name",
            "cluster",
            "pool",
            "policy",
            "state",
            "class",
        ]
        .into();
        for (name, labels) in Metrics::new().family_labels() {
            assert!(name.starts_with("visio_"), "{name}");
            for l in &labels {
                assert!(allowed.contains(l.as_str()), "{name} has label {l}: labels must stay bounded");
            }
        }
    }

    #[test]
    fn counters_the_alerts_rate_start_at_zero() {
        let m = Metrics::new();
        m.init_policy("ns", "meetings");
        m.init_pool("ns", "captions");
        let body = m.render();
        for line in [
            r#"visio_retention_runs_total{namespace="ns",policy="meetings",result="failure"} 0"#,
            r#"visio_retention_runs_total{namespace="ns",policy="meetings",result="success"} 0"#,
            r#"visio_caption_streams_rejected_total{namespace="ns",pool="captions"} 0"#,
        ] {
            assert!(body.contains(line), "missing {line}");
        }
        assert_eq!(series(&m, "visio_retention_runs_total").len(), 2);
    }

    #[test]
    fn series_names_cover_empty_families_and_histogram_samples() {
        let m = Metrics::new();
        let names = m.series_names();
        // Families without any series yet are not in gather(), but they are registered.
        assert!(m.registry.gather().iter().all(|f| f.name() != "visio_caption_slots"));
        assert!(names.contains("visio_caption_slots"));
        assert!(names.contains("visio_sfu_oldest_drain_seconds"));
        for s in ["_bucket", "_sum", "_count"] {
            assert!(names.contains(&format!("visio_reconcile_duration_seconds{s}")));
        }
        assert!(!names.contains("visio_reconcile_duration_seconds"), "a histogram has no sample of its bare name");
        // What gather() shows is a subset of what series_names() knows.
        populate(&m, "ns", "x");
        m.reconcile_duration.with_label_values(&["visiocluster"]).observe(0.1);
        for f in m.registry.gather() {
            let n = f.name();
            assert!(names.contains(n) || names.contains(&format!("{n}_count")), "{n} not in series_names");
        }
    }
}
