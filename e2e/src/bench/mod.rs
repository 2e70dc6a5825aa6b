//! The benches' raw results, as committed under docs/bench/ (one JSON document per bench), and what
//! turns them into the README's performance tables and pictures (`bench-report`, drift-checked by
//! tests/bench_report.rs).
//!
//! A document is the envelope [`Doc`] (commit, date, machine, command) around the runs of one bench;
//! each bench has its own run type and renderer ([`tenants`]). A new bench adds a module with its run
//! type, a `markdown` and a `pictures` function, and one arm in [`render`].

pub mod fleet;
pub mod svg;
pub mod tenants;

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The machine a bench ran on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    /// This machine, from /proc; a value that cannot be read fails.
    pub fn read() -> Result<Machine> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("MemTotal in /proc/meminfo")?;
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").context("reading the kernel release")?;
        Ok(Machine {
            cores: std::thread::available_parallelism().context("the number of cores")?.get(),
            memory_gib: (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: kernel.trim().to_string(),
        })
    }
}

/// One committed result file: a bench's runs and where they come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Doc<R> {
    /// Which bench: `tenants`, `fleet`, ...; names the renderer.
    pub bench: String,
    /// The commit measured (short hash).
    pub commit: String,
    /// When the bench started, UTC.
    pub date: String,
    /// The command that made the figures, as typed.
    pub command: String,
    pub machine: Machine,
    /// What else the machine did meanwhile (the bench's own note, e.g. load averages).
    #[serde(default)]
    pub load: String,
    pub runs: Vec<R>,
}

/// What a document renders to: its README block and its pictures (file name -> SVG).
pub struct Rendered {
    pub markdown: String,
    pub pictures: BTreeMap<String, String>,
}

/// Renders the document `name` (its file is docs/bench/<name>.json) by its bench's renderer.
pub fn render(name: &str, text: &str) -> Result<Rendered> {
    let v: Value = serde_json::from_str(text).with_context(|| format!("docs/bench/{name}.json"))?;
    match v["bench"].as_str() {
        Some("tenants") => {
            let doc: Doc<tenants::Run> = serde_json::from_value(v)?;
            Ok(Rendered { markdown: tenants::markdown(name, &doc)?, pictures: tenants::pictures(name, &doc)? })
        }
        Some("fleet") => {
            let doc: Doc<fleet::Run> = serde_json::from_value(v)?;
            Ok(Rendered { markdown: fleet::markdown(name, &doc)?, pictures: fleet::pictures(name, &doc)? })
        }
        other => bail!("docs/bench/{name}.json: no renderer for bench {other:?}"),
    }
}

/// The README block of document `name` sits between these two lines.
pub fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- bench-report {name}: generated from docs/bench/{name}.json by `cargo run -p visio-e2e --bin bench-report -- --write`; do not edit -->"),
        format!("<!-- bench-report {name}: end -->"),
    )
}

/// `readme` with the block of `name` replaced by `block`; None when the markers are missing.
pub fn with_block(readme: &str, name: &str, block: &str) -> Option<String> {
    let (begin, end) = markers(name);
    let start = readme.find(&begin)? + begin.len();
    let stop = start + readme[start..].find(&end)?;
    Some(format!("{}\n{}{}", &readme[..start], block, &readme[stop..]))
}

/// Renders every committed document into the README's blocks and docs/bench/'s pictures (what
/// `bench-report --write` does, and `e2e/bench fleet` once it wrote its document).
pub fn write_all(repo: &std::path::Path) -> Result<()> {
    let path = repo.join("README.md");
    let mut readme = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for (name, text) in documents(&repo.join("docs/bench"))? {
        let r = render(&name, &text)?;
        readme = with_block(&readme, &name, &r.markdown)
            .with_context(|| format!("README.md has no `<!-- bench-report {name}: ... -->` markers"))?;
        for (file, svg) in r.pictures {
            std::fs::write(repo.join("docs/bench").join(file), svg)?;
        }
    }
    std::fs::write(&path, readme)?;
    Ok(())
}

/// Every document under docs/bench/, by name (the file stem), in name order; but the morning-peak reports,
/// which `e2e/bench peak-render` renders (`crate::peak_report`, checked by tests/peak_report.rs).
pub fn documents(dir: &std::path::Path) -> Result<Vec<(String, String)>> {
    let peak: Vec<_> = crate::peak_report::committed()
        .into_iter()
        .filter_map(|(json, _, _)| json.file_name().map(|n| n.to_owned()))
        .collect();
    let mut out = vec![];
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.file_name().is_some_and(|n| peak.iter().any(|q| q == n)) {
            continue;
        }
        if p.extension().and_then(|x| x.to_str()) == Some("json") {
            let name = p.file_stem().and_then(|s| s.to_str()).context("a file name")?.to_string();
            out.push((name, std::fs::read_to_string(&p)?));
        }
    }
    out.sort();
    Ok(out)
}

/// A figure with a fixed number of decimals.
pub fn fixed(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_replaced_between_its_markers_only() {
        let (b, e) = markers("tenants");
        let readme = format!("intro\n{b}\nold\n{e}\nafter\n");
        assert_eq!(with_block(&readme, "tenants", "new\n").unwrap(), format!("intro\n{b}\nnew\n{e}\nafter\n"));
        assert!(with_block(&readme, "fleet", "new\n").is_none());
        assert!(render("x", r#"{"bench": "unknown"}"#).is_err());
    }
}
