//! `bench fleet`: one [`Run`] per scenario, system and repetition, the README block (medians over the
//! repetitions; `cut` and `peak pods` the worst one) and one picture per scenario (pods and meetings
//! over time, the operator against the chart-style baseline, from the first repetition).

use std::collections::BTreeMap;

use anyhow::{ensure, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::svg::{timeline_chart, Panel, Series};
use super::Doc;
use crate::fleet::Sample;

/// One scenario played by one system once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// `1. load rises`, ...: the order of the table.
    pub scenario: String,
    /// What the scenario does, for the table (the same in every run).
    pub setting: String,
    /// `visio-operator` or `chart baseline`.
    pub system: String,
    /// Which repetition (1-based).
    pub repetition: usize,
    pub meetings: usize,
    pub cut: usize,
    /// Meetings the operator ended at a drain deadline, after a warning.
    pub ended_at_deadline: usize,
    /// Seconds from the scenario's action until done; `None`: not done within the bound (or not
    /// measured: scenario 1).
    pub done_s: Option<f64>,
    pub peak_pods: usize,
    /// The scenario measures the scale-up reaction (`reaction_ms`; the table shows it instead of a
    /// done time), whether or not the reaction came within the bound.
    #[serde(default)]
    pub measures_reaction: bool,
    /// From the load crossing the threshold to the new pod, milliseconds; `None`: none within the bound.
    pub reaction_ms: Option<i64>,
    pub note: String,
    /// The scenario's action (the upgrade, the threshold crossed, ...), Unix milliseconds: time 0 of the
    /// picture.
    pub action_ms: i64,
    pub timeline: Vec<Sample>,
}

/// The table's row of one scenario and system: medians over the repetitions, the worst `cut` and
/// `peak pods`, and each repetition's figure in the notes when there are several.
fn summary(runs: &[&Run]) -> Run {
    let mut row = runs[0].clone();
    let med_usize =
        |f: &dyn Fn(&Run) -> usize| median(&runs.iter().map(|r| Some(f(r))).collect::<Vec<_>>()).unwrap_or(0);
    row.meetings = med_usize(&|r| r.meetings);
    row.ended_at_deadline = med_usize(&|r| r.ended_at_deadline);
    row.cut = runs.iter().map(|r| r.cut).max().unwrap_or(0);
    row.peak_pods = runs.iter().map(|r| r.peak_pods).max().unwrap_or(0);
    row.done_s = median(&runs.iter().map(|r| r.done_s).collect::<Vec<_>>());
    row.reaction_ms = median(&runs.iter().map(|r| r.reaction_ms).collect::<Vec<_>>());
    if runs.len() > 1 {
        let each: Vec<String> = runs
            .iter()
            .map(|r| match (r.reaction_ms, r.done_s) {
                (Some(ms), _) => format!("{ms} ms"),
                (_, Some(s)) => format!("{s:.1} s"),
                _ => "-".into(),
            })
            .collect();
        let runs = format!("runs: {}", each.join(", "));
        row.note = if row.note.is_empty() { runs } else { format!("{}; {runs}", row.note) };
    }
    row
}

/// The median (the lower middle value for an even count); `None` if any run had none.
fn median<T: Copy + PartialOrd>(values: &[Option<T>]) -> Option<T> {
    let mut v: Vec<T> = values.iter().copied().collect::<Option<Vec<T>>>()?;
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get((v.len().max(1) - 1) / 2).copied()
}

/// A scenario's runs, by system: (system, its runs) in the order first met.
type BySystem<'a> = Vec<(String, Vec<&'a Run>)>;

/// The runs by scenario, then system, in the order first met.
fn grouped(doc: &Doc<Run>) -> Vec<(String, BySystem<'_>)> {
    let mut out: Vec<(String, BySystem)> = vec![];
    for r in &doc.runs {
        let s = match out.iter().position(|(s, _)| *s == r.scenario) {
            Some(i) => i,
            None => {
                out.push((r.scenario.clone(), vec![]));
                out.len() - 1
            }
        };
        let systems = &mut out[s].1;
        match systems.iter_mut().find(|(sys, _)| *sys == r.system) {
            Some((_, runs)) => runs.push(r),
            None => systems.push((r.system.clone(), vec![r])),
        }
    }
    out
}

/// The README block: provenance, the table, the pictures.
pub fn markdown(name: &str, doc: &Doc<Run>) -> Result<String> {
    ensure!(!doc.runs.is_empty(), "docs/bench/{name}.json has no runs");
    let repetitions = doc.runs.iter().map(|r| r.repetition).max().unwrap_or(1);
    let mut md = format!(
        "`{}` at commit {}, {} ({} cores, {} GiB, Linux {}; {}). {}\n\n",
        doc.command,
        doc.commit,
        doc.date,
        doc.machine.cores,
        doc.machine.memory_gib,
        doc.machine.kernel,
        doc.load,
        if repetitions > 1 {
            format!("Medians of {repetitions} runs; `cut` and `peak pods` are the worst run.")
        } else {
            "One run.".into()
        }
    );
    md += "| scenario | system | meetings | cut | ended at deadline, warned | done after | peak pods | scale-up reaction | notes |\n";
    md += "|---|---|---:|---:|---:|---:|---:|---:|---|\n";
    for (scenario, systems) in grouped(doc) {
        for (i, (system, runs)) in systems.iter().enumerate() {
            let r = summary(runs);
            let reaction_scenario = r.measures_reaction;
            let label = if i == 0 { format!("{scenario} ({})", r.setting) } else { String::new() };
            let done = match (reaction_scenario, r.done_s) {
                (true, _) => "-".to_string(),
                (false, Some(s)) => format!("{s:.1} s"),
                (false, None) => "not done (bound)".to_string(),
            };
            let reaction = match (reaction_scenario, r.reaction_ms) {
                (false, _) => "-".to_string(),
                (true, Some(ms)) => format!("{:.1} s", ms as f64 / 1000.0),
                (true, None) => "none within the bound".to_string(),
            };
            md += &format!(
                "| {label} | {system} | {} | {} | {} | {done} | {} | {reaction} | {} |\n",
                r.meetings, r.cut, r.ended_at_deadline, r.peak_pods, r.note
            );
        }
    }
    md += "\n";
    for (file, _) in pictures(name, doc)? {
        md += &format!("![pods and meetings over time](docs/bench/{file})\n");
    }
    Ok(md)
}

/// One picture per scenario, from the first repetition: pods holding a node (and those on their way
/// out) above, meetings open below, time 0 at the scenario's action.
pub fn pictures(name: &str, doc: &Doc<Run>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, (scenario, systems)) in grouped(doc).into_iter().enumerate() {
        let mut pods = vec![];
        let mut meetings = vec![];
        for (system, runs) in &systems {
            let run = runs.iter().min_by_key(|r| r.repetition).context("a run")?;
            ensure!(!run.timeline.is_empty(), "{scenario}, {system}: no timeline");
            let t = |s: &Sample| (s.at_ms - run.action_ms) as f64 / 1000.0;
            pods.push(Series {
                name: format!("{system}: pods"),
                points: run.timeline.iter().map(|s| (t(s), s.pods as f64)).collect(),
            });
            pods.push(Series {
                name: format!("{system}: draining or terminating"),
                points: run.timeline.iter().map(|s| (t(s), s.leaving as f64)).collect(),
            });
            meetings.push(Series {
                name: format!("{system}: meetings open"),
                points: run.timeline.iter().map(|s| (t(s), s.meetings as f64)).collect(),
            });
        }
        let title = format!("{scenario} ({})", systems[0].1[0].setting);
        let svg = timeline_chart(
            &title,
            "seconds from the scenario's action",
            &[Panel { y_label: "SFU pods", series: pods }, Panel { y_label: "meetings", series: meetings }],
        )?;
        out.insert(format!("{name}-{}.svg", k + 1), svg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Machine;

    fn run(scenario: &str, system: &str, repetition: usize, done: Option<f64>, cut: usize) -> Run {
        Run {
            scenario: scenario.into(),
            setting: "10 pods".into(),
            system: system.into(),
            repetition,
            meetings: 40 + repetition,
            cut,
            done_s: done,
            peak_pods: 10 + repetition,
            note: "n".into(),
            action_ms: 1_000,
            timeline: vec![
                Sample { at_ms: 0, pods: 10, leaving: 0, meetings: 40, participants: 60 },
                Sample { at_ms: 5_000, pods: 12, leaving: 2, meetings: 30, participants: 45 },
            ],
            ..Run::default()
        }
    }

    fn doc(runs: Vec<Run>) -> Doc<Run> {
        Doc {
            bench: "fleet".into(),
            commit: "abc1234".into(),
            date: "2026-12-05 22:00 UTC".into(),
            command: "e2e/bench fleet --runs 3".into(),
            machine: Machine { cores: 2, memory_gib: 23.5, kernel: "6".into() },
            load: "load".into(),
            runs,
        }
    }

    #[test]
    fn the_table_gives_medians_and_the_worst_cut_and_peak() {
        let d = doc(vec![
            run("3. upgrade", "visio-operator", 1, Some(50.0), 0),
            run("3. upgrade", "chart baseline", 1, Some(36.0), 0),
            run("3. upgrade", "visio-operator", 2, Some(40.0), 1),
            run("3. upgrade", "chart baseline", 2, None, 0),
            run("3. upgrade", "visio-operator", 3, Some(45.0), 0),
            run("3. upgrade", "chart baseline", 3, Some(30.0), 0),
        ]);
        let md = markdown("fleet", &d).unwrap();
        assert!(md.contains("Medians of 3 runs"), "{md}");
        // Operator: done median 45.0, meetings median 42, cut worst 1, peak worst 13.
        assert!(md.contains("| 3. upgrade (10 pods) | visio-operator | 42 | 1 | 0 | 45.0 s | 13 | - | n; runs: 50.0 s, 40.0 s, 45.0 s |"), "{md}");
        // A run not done: no median.
        assert!(md.contains("|  | chart baseline | 42 | 0 | 0 | not done (bound) | 13 |"), "{md}");
        assert!(md.contains("![pods and meetings over time](docs/bench/fleet-1.svg)"), "{md}");

        // A reaction scenario is one by what it measures, also when no run saw a reaction in time.
        let reacting = |system: &str, ms: Option<i64>| Run {
            measures_reaction: true,
            reaction_ms: ms,
            ..run("1. load rises", system, 1, None, 0)
        };
        let md =
            markdown("fleet", &doc(vec![reacting("visio-operator", Some(5_600)), reacting("chart baseline", None)]))
                .unwrap();
        assert!(md.contains("| visio-operator | 41 | 0 | 0 | - | 11 | 5.6 s |"), "{md}");
        assert!(md.contains("| chart baseline | 41 | 0 | 0 | - | 11 | none within the bound |"), "{md}");
    }

    #[test]
    fn one_picture_per_scenario_from_the_first_repetition_and_the_same_bytes_each_time() {
        let d = doc(vec![
            run("1. load rises", "visio-operator", 1, None, 0),
            run("1. load rises", "chart baseline", 1, None, 0),
            run("2. load falls", "visio-operator", 1, Some(40.0), 0),
            run("2. load falls", "chart baseline", 1, Some(45.0), 0),
        ]);
        let pics = pictures("fleet", &d).unwrap();
        assert_eq!(pics.keys().collect::<Vec<_>>(), ["fleet-1.svg", "fleet-2.svg"]);
        let svg = &pics["fleet-2.svg"];
        assert!(svg.contains("2. load falls") && svg.contains("chart baseline: meetings open"), "{svg:.400}");
        assert_eq!(pics, pictures("fleet", &d).unwrap());
        let mut empty = run("1. load rises", "visio-operator", 1, None, 0);
        empty.timeline.clear();
        assert!(pictures("fleet", &doc(vec![empty])).is_err(), "a run without a timeline cannot be drawn");
        assert!(markdown("fleet", &doc(vec![])).is_err());
    }
}
