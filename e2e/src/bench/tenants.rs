//! `bench tenants`: one run per N (its figures, [`Run`]), the README block and the pictures.

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use super::svg::{line_chart, Chart, Series};
use super::{fixed, Doc};

/// What one run of `bench tenants N` measured. Request counts come from the apiserver's audit log,
/// by the operator's identity (`visio_e2e::audit`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub tenants: usize,
    /// Fake nodes of the control plane.
    pub nodes: usize,
    /// /proc/loadavg when the run started (what else the machine was doing).
    pub load_at_start: String,
    /// Seconds to create every tenant's objects.
    pub created_s: f64,
    pub ready: usize,
    pub ready_p50_s: f64,
    pub ready_p95_s: f64,
    pub ready_max_s: f64,
    pub all_ready_s: f64,
    pub captionpools_ready: usize,
    pub retentionpolicies_ready: usize,
    /// The operator's writes from the first tenant's creation until 10 s after all were Ready, Events
    /// and its Lease apart.
    pub writes: u64,
    /// Owned objects (pods included) + one status write per custom resource.
    pub minimum: u64,
    /// `writes` by `resource[/subresource] verb` (audit verbs; server-side apply is `patch`).
    pub writes_by_request: BTreeMap<String, u64>,
    /// The objects the operator owns at the end, by kind (the minimum's first part).
    pub children: BTreeMap<String, u64>,
    /// The operator's Events while converging.
    pub events: u64,
    /// The operator's requests the apiserver refused, by `resource verb code` (in `writes` too).
    pub refused: BTreeMap<String, u64>,
    /// Every other client's writes while converging, by `client: resource verb`.
    pub others_writes: BTreeMap<String, u64>,
    /// The operator's reads since it started (get, list, watch) and its access reviews while converging
    /// (a `create` that stores nothing), by `resource verb`.
    pub reads_by_request: BTreeMap<String, u64>,
    /// Watch connections the operator held at the end of the idle period (opened since it started
    /// minus closed).
    pub watches_open: i64,
    pub idle_seconds: u64,
    /// The operator's writes while idle, Events and access reviews included, its Lease apart (the goal is 0).
    pub idle_writes: u64,
    pub idle_by_request: BTreeMap<String, u64>,
    /// Lease renewals while idle (leader election's heartbeat).
    pub idle_lease_writes: u64,
    /// The operator's peak RSS (`VmHWM`) and CPU seconds at the end, from /proc.
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
    /// CPU seconds each process spent while the tenants converged.
    pub converge_cpu_by_process: BTreeMap<String, f64>,
    pub reconcile_p50_ms: BTreeMap<String, f64>,
    pub reconcile_p95_ms: BTreeMap<String, f64>,
}

impl Run {
    pub fn ratio(&self) -> f64 {
        self.writes as f64 / self.minimum.max(1) as f64
    }

    fn per_tenant(&self, v: f64) -> f64 {
        v / self.tenants.max(1) as f64
    }

    fn lists(&self) -> u64 {
        self.reads_by_request.iter().filter(|(k, _)| k.ends_with(" list")).map(|(_, v)| v).sum()
    }
}

/// The README block: provenance, the table, growth, and per-run detail lines, then the pictures.
pub fn markdown(name: &str, doc: &Doc<Run>) -> Result<String> {
    ensure!(!doc.runs.is_empty(), "docs/bench/{name}.json has no runs");
    let m = &doc.machine;
    let idle = doc.runs[0].idle_seconds;
    let mut s = String::new();
    s += &format!(
        "`{}` at commit {}, {} ({} cores, {} GiB, Linux {}; {}).\n\n",
        doc.command, doc.commit, doc.date, m.cores, m.memory_gib, m.kernel, doc.load
    );
    s += &format!("| tenants | Ready p50 / p95 / max | all Ready after | writes / tenant | minimum / tenant | ratio | idle writes ({idle} s) | peak RSS | CPU s (per tenant) | watches held | LISTs | Ready CaptionPools / RetentionPolicies |\n");
    s += "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in &doc.runs {
        s += &format!(
            "| {} | {} / {} / {} s | {} s | {} | {} | {} | {} | {} MiB | {} ({}) | {} | {} | {} / {} |\n",
            r.tenants,
            fixed(r.ready_p50_s, 1),
            fixed(r.ready_p95_s, 1),
            fixed(r.ready_max_s, 1),
            fixed(r.all_ready_s, 1),
            fixed(r.per_tenant(r.writes as f64), 2),
            fixed(r.per_tenant(r.minimum as f64), 2),
            fixed(r.ratio(), 3),
            r.idle_writes,
            fixed(r.peak_rss_mib, 1),
            fixed(r.cpu_seconds, 1),
            fixed(r.per_tenant(r.cpu_seconds), 3),
            r.watches_open,
            r.lists(),
            r.captionpools_ready,
            r.retentionpolicies_ready,
        );
    }
    if let (Some(a), Some(b)) = (doc.runs.first(), doc.runs.last()) {
        if b.tenants > a.tenants {
            s += &format!(
                "\nFrom {} to {} tenants, per tenant: writes x{}, CPU x{}, time to all Ready x{}.\n",
                a.tenants,
                b.tenants,
                fixed(b.per_tenant(b.writes as f64) / a.per_tenant(a.writes as f64).max(f64::EPSILON), 2),
                fixed(b.per_tenant(b.cpu_seconds) / a.per_tenant(a.cpu_seconds).max(f64::EPSILON), 2),
                fixed(b.per_tenant(b.all_ready_s) / a.per_tenant(a.all_ready_s).max(f64::EPSILON), 2),
            );
        }
    }
    s += &goals(&doc.runs);
    s += "\nPer run (from the audit log; `patch` includes server-side apply):\n\n";
    for r in &doc.runs {
        let list = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
            }
        };
        // Reads by verb (every resource's are in the JSON).
        let mut reads: BTreeMap<String, u64> = BTreeMap::new();
        for (k, v) in &r.reads_by_request {
            let verb = k.rsplit(' ').next().unwrap_or(k);
            let verb = if k.contains("accessreviews") { "access reviews" } else { verb };
            *reads.entry(verb.to_string()).or_default() += v;
        }
        let mut others: BTreeMap<String, u64> = BTreeMap::new();
        for (k, v) in &r.others_writes {
            *others.entry(k.split(": ").next().unwrap_or(k).to_string()).or_default() += v;
        }
        s += &format!(
            "- **{}** tenants ({} nodes, load at start {}): the operator's writes {}; refused {}; Events {}; \
             idle: {} (Lease renewals {}); other clients' writes: {}; the operator's reads since its start: {}.\n",
            r.tenants,
            r.nodes,
            r.load_at_start,
            list(&r.writes_by_request),
            list(&r.refused),
            r.events,
            list(&r.idle_by_request),
            r.idle_lease_writes,
            list(&others),
            list(&reads),
        );
    }
    s += &format!(
        "\n![time to all Ready against N](docs/bench/{name}-ready.svg)\n![writes per tenant against N](docs/bench/{name}-writes.svg)\n![peak RSS against N](docs/bench/{name}-rss.svg)\n"
    );
    Ok(s)
}

/// Issue #22's goals, each said met or missed from the runs: writes within 1.1x the minimum at every N,
/// no write while idle, peak RSS under 64 MiB at 300 tenants, time to all Ready at most linear in N.
pub fn goals(runs: &[Run]) -> String {
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let worst = runs.iter().max_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    let ratio = worst.map_or("no run".to_string(), |r| {
        format!("{} (highest {}x, at {})", verdict(r.ratio() <= 1.1), fixed(r.ratio(), 3), r.tenants)
    });
    let idle: u64 = runs.iter().map(|r| r.idle_writes).sum();
    let rss = runs.iter().find(|r| r.tenants == 300).map_or("not judged here (no 300-tenant run)".to_string(), |r| {
        format!("{} ({} MiB)", verdict(r.peak_rss_mib < 64.0), fixed(r.peak_rss_mib, 1))
    });
    // Linear at most: the time per tenant does not grow from one N to the next (5 % of noise allowed).
    // One run says nothing about growth.
    let per: Vec<f64> = runs.iter().map(|r| r.per_tenant(r.all_ready_s)).collect();
    let per_text = per.iter().map(|p| fixed(*p, 3)).collect::<Vec<_>>().join(" / ");
    let linear = if per.len() < 2 {
        format!("not judged here (one N; seconds per tenant {per_text})")
    } else {
        format!("{} (seconds per tenant {per_text})", verdict(per.windows(2).all(|w| w[1] <= w[0] * 1.05)))
    };
    format!(
        "\nGoals (issue #22): writes within 1.1x the minimum at every N: {ratio}; idle writes 0: {} ({idle} in all); \
         peak RSS under 64 MiB at 300 tenants: {rss}; time to all Ready at most linear in N: {linear}.\n",
        verdict(idle == 0),
    )
}

/// Time to all Ready, writes per tenant and peak RSS against N.
pub fn pictures(name: &str, doc: &Doc<Run>) -> Result<BTreeMap<String, String>> {
    let pts = |f: &dyn Fn(&Run) -> f64| doc.runs.iter().map(|r| (r.tenants as f64, f(r))).collect::<Vec<_>>();
    let mut out = BTreeMap::new();
    out.insert(
        format!("{name}-ready.svg"),
        line_chart(&Chart {
            title: "Tenants applied at once: time until Ready",
            x_label: "tenants (log scale)",
            y_label: "seconds",
            series: vec![
                Series { name: "all Ready".into(), points: pts(&|r| r.all_ready_s) },
                Series { name: "p50 per tenant".into(), points: pts(&|r| r.ready_p50_s) },
            ],
            goal: None,
            log_x: true,
        })?,
    );
    out.insert(
        format!("{name}-writes.svg"),
        line_chart(&Chart {
            title: "The operator's writes per tenant (audit log)",
            x_label: "tenants (log scale)",
            y_label: "writes per tenant",
            series: vec![
                Series { name: "writes".into(), points: pts(&|r| r.per_tenant(r.writes as f64)) },
                Series { name: "minimum".into(), points: pts(&|r| r.per_tenant(r.minimum as f64)) },
            ],
            goal: None,
            log_x: true,
        })?,
    );
    out.insert(
        format!("{name}-rss.svg"),
        line_chart(&Chart {
            title: "The operator's peak RSS",
            x_label: "tenants (log scale)",
            y_label: "MiB",
            series: vec![Series { name: "peak RSS (VmHWM)".into(), points: pts(&|r| r.peak_rss_mib) }],
            goal: Some(("goal: 64 MiB at 300 tenants", 64.0)),
            log_x: true,
        })?,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Machine;

    fn doc() -> Doc<Run> {
        let run = |n: usize, w: u64, rss: f64| Run {
            tenants: n,
            nodes: 80,
            writes: w,
            minimum: 27 * n as u64,
            all_ready_s: n as f64 / 4.0,
            peak_rss_mib: rss,
            cpu_seconds: n as f64 / 20.0,
            idle_seconds: 300,
            writes_by_request: [("pods create".to_string(), n as u64)].into(),
            others_writes: [
                ("a (kwok): pods/status patch".to_string(), 2),
                ("a (kwok): nodes/status patch".to_string(), 3),
            ]
            .into(),
            reads_by_request: [("pods list".to_string(), 2), ("pods watch".to_string(), 3)].into(),
            ..Default::default()
        };
        Doc {
            bench: "tenants".into(),
            commit: "abc1234".into(),
            date: "2026-12-05T03:00Z".into(),
            command: "e2e/bench tenants 10 100".into(),
            machine: Machine { cores: 2, memory_gib: 23.4, kernel: "6.1.0".into() },
            load: "load 1.0".into(),
            runs: vec![run(10, 290, 30.0), run(100, 2900, 50.0)],
        }
    }

    #[test]
    fn the_table_row_says_the_figures_of_the_json() {
        let md = markdown("tenants", &doc()).unwrap();
        assert!(md.contains("`e2e/bench tenants 10 100` at commit abc1234"), "{md}");
        assert!(md.contains("| 100 | 0.0 / 0.0 / 0.0 s | 25.0 s | 29.00 | 27.00 | 1.074 | 0 | 50.0 MiB | 5.0 (0.050) | 0 | 2 | 0 / 0 |"), "{md}");
        assert!(md.contains("other clients' writes: a (kwok) 5"), "{md}");
        assert!(md.contains("writes x1.00"), "{md}");
        let pics = pictures("tenants", &doc()).unwrap();
        assert_eq!(
            pics.keys().cloned().collect::<Vec<_>>(),
            ["tenants-ready.svg", "tenants-rss.svg", "tenants-writes.svg"]
        );
        assert!(md.contains("writes within 1.1x the minimum at every N: met (highest 1.074x, at 100)"), "{md}");
        assert!(md.contains("peak RSS under 64 MiB at 300 tenants: not judged here (no 300-tenant run)"), "{md}");
        assert!(md.contains("time to all Ready at most linear in N: met (seconds per tenant 0.250 / 0.250)"), "{md}");
        let mut big = doc();
        big.runs[1].tenants = 300;
        big.runs[1].peak_rss_mib = 70.0;
        big.runs[1].all_ready_s = 300.0;
        big.runs[1].idle_writes = 1;
        let g = goals(&big.runs);
        assert!(
            g.contains("at 300 tenants: **missed** (70.0 MiB)") && g.contains("idle writes 0: **missed** (1 in all)"),
            "{g}"
        );
        assert!(g.contains("linear in N: **missed**"), "{g}");
        // One N (the 1,000-tenant document): growth is not judged.
        let one = goals(&big.runs[1..]);
        assert!(one.contains("linear in N: not judged here (one N; seconds per tenant 1.000)"), "{one}");
        let empty = Doc { runs: vec![], ..doc() };
        assert!(markdown("tenants", &empty).is_err());
    }
}
