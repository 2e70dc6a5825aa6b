//! The results of `e2e/bench peak` as data: each run writes them as JSON under `docs/bench/`, and the
//! README's table and the SVG picture beside the JSON are generated from that JSON alone
//! (`bench peak-render`), so `tests/peak_report.rs` can fail when the committed picture or table and
//! the committed figures disagree.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One run of the three systems over the same morning.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeakReport {
    /// `control-plane` (the operator process and the baseline on the local control plane, kwok pods) or
    /// `model` (the planners called in simulated time).
    pub mode: String,
    /// The command that made it, with the commit and the date.
    pub command: String,
    pub commit: String,
    pub date: String,
    /// One line on the workload and the settings, printed above the table.
    pub setting: String,
    /// Simulated time per second of wall clock (1 for the model, whose time is not a clock).
    pub compression: f64,
    /// Hour of the day (Paris) at the first sample, and seconds of the morning between samples.
    pub start_hour: f64,
    pub sample_every_s: u32,
    /// Participants connected, all tenants, at each sample.
    pub participants: Vec<u32>,
    /// Perfect foresight: each second the pods its load needs at the target, at least min, Ready at once.
    pub ideal_pod_minutes: f64,
    pub rows: Vec<PeakRow>,
}

/// One system's morning.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeakRow {
    pub system: String,
    pub joins_above_capacity: u64,
    pub participant_seconds_above_target: u64,
    pub peak_pods: u32,
    pub pod_minutes: f64,
    pub meetings_cut: u64,
    /// Pods of the fleet (every state) at each sample, all tenants.
    pub pods: Vec<u32>,
}

impl PeakReport {
    pub fn read(path: &Path) -> Result<PeakReport> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(())
    }

    /// The README's table: the command, the setting, one line per system.
    pub fn markdown(&self) -> String {
        let mut out = format!("`{}` at commit {}, {}: {}\n\n", self.command, self.commit, self.date, self.setting);
        out += "| system | joins above capacity | participant-seconds above target utilisation | peak pods | SFU pod-minutes (x ideal) | meetings cut |\n";
        out += "|---|---:|---:|---:|---:|---:|\n";
        for r in &self.rows {
            out += &format!(
                "| {} | {} | {} | {} | {:.0} ({:.2}x) | {} |\n",
                r.system,
                r.joins_above_capacity,
                r.participant_seconds_above_target,
                r.peak_pods,
                r.pod_minutes,
                r.pod_minutes / self.ideal_pod_minutes.max(1e-9),
                r.meetings_cut
            );
        }
        out += &format!(
            "\nIdeal: {:.0} pod-minutes (perfect foresight: each second the pods its load needs at the target, at least min, Ready at once).\n",
            self.ideal_pod_minutes
        );
        out
    }

    /// The picture: pods of each system over the morning, and the participants connected.
    pub fn svg(&self) -> Result<String> {
        use plotters::prelude::*;
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (1000, 720)).into_drawing_area();
            root.fill(&WHITE)?;
            let (top, bottom) = root.split_vertically(400);
            let hour = |i: usize| self.start_hour + (i as f64 * f64::from(self.sample_every_s)) / 3600.0;
            let hours = self.start_hour..hour(self.participants.len().saturating_sub(1)).max(self.start_hour + 0.1);
            let max_pods = self.rows.iter().flat_map(|r| r.pods.iter()).copied().max().unwrap_or(1) + 5;
            let title = match self.mode.as_str() {
                "model" => "bench peak --model: SFU pods, the planners in simulated time".to_string(),
                _ => format!("bench peak: SFU pods on the local control plane (time x{})", self.compression),
            };
            let mut chart = ChartBuilder::on(&top)
                .caption(title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(hours.clone(), 0u32..max_pods)?;
            chart.configure_mesh().x_desc("hour (Paris, simulated)").y_desc("pods").draw()?;
            let colours = [RED, BLUE, RGBColor(0, 140, 60)];
            for (r, colour) in self.rows.iter().zip(colours) {
                chart
                    .draw_series(LineSeries::new(
                        r.pods.iter().enumerate().map(|(i, &n)| (hour(i), n)),
                        colour.stroke_width(2),
                    ))?
                    .label(r.system.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
            let max_p = self.participants.iter().copied().max().unwrap_or(1) * 11 / 10 + 1;
            let mut chart = ChartBuilder::on(&bottom)
                .caption("participants connected (all tenants, the same workload for the three)", ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(hours, 0u32..max_p)?;
            chart.configure_mesh().x_desc("hour (Paris, simulated)").y_desc("participants").draw()?;
            chart.draw_series(LineSeries::new(
                self.participants.iter().enumerate().map(|(i, &n)| (hour(i), n)),
                BLACK.stroke_width(2),
            ))?;
            root.present()?;
        }
        Ok(out)
    }
}

/// The reports the README shows: (JSON, its picture, the README's marker name).
pub fn committed() -> Vec<(PathBuf, PathBuf, &'static str)> {
    let dir = crate::repo().join("docs/bench");
    vec![
        (dir.join("peak.json"), dir.join("peak-morning.svg"), "peak"),
        (dir.join("peak-model.json"), dir.join("peak-model.svg"), "peak-model"),
    ]
}

/// `readme` with the table between `<!-- bench NAME: ... -->` and `<!-- bench NAME: end -->` replaced by
/// `report`'s; `None` without the markers.
pub fn with_table(readme: &str, name: &str, report: &PeakReport) -> Option<String> {
    let begin_marker =
        format!("<!-- bench {name}: generated by `e2e/bench peak-render` from docs/bench/{name}.json -->");
    let end_marker = format!("<!-- bench {name}: end -->");
    let begin = readme.find(&begin_marker)? + begin_marker.len();
    let end = begin + readme[begin..].find(&end_marker)?;
    Some(format!("{}\n\n{}\n{}", &readme[..begin], report.markdown(), &readme[end..]))
}

/// Writes every committed report's picture and README table from its JSON (a missing JSON is skipped).
pub fn render_all() -> Result<()> {
    let readme_path = crate::repo().join("README.md");
    let mut readme = std::fs::read_to_string(&readme_path)?;
    for (json, svg, name) in committed() {
        if !json.exists() {
            continue;
        }
        let report = PeakReport::read(&json)?;
        std::fs::write(&svg, report.svg()?)?;
        readme = with_table(&readme, name, &report)
            .with_context(|| format!("README.md has no `<!-- bench {name}: ... -->` markers"))?;
    }
    std::fs::write(&readme_path, readme)?;
    Ok(())
}
