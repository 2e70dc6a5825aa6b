//! `e2e/bench peak`'s committed results: the README's tables and the pictures under docs/bench/ are the
//! ones `e2e/bench peak-render` generates from the committed JSON, and each JSON agrees with itself
//! (its peak pods are the top of its series). No cluster needed.

use anyhow::{Context, Result};
use visio_e2e::peak_report::{committed, with_table, PeakReport};

#[test]
fn the_tables_and_pictures_are_generated_from_the_committed_json() -> Result<()> {
    let readme = std::fs::read_to_string(visio_e2e::repo().join("README.md"))?;
    let mut found = 0;
    for (json, svg, name) in committed() {
        if !json.exists() {
            continue;
        }
        found += 1;
        let report = PeakReport::read(&json)?;
        let generated = with_table(&readme, name, &report).context(format!("README.md has no `{name}` markers"))?;
        assert!(
            generated == readme,
            "README.md's {name} table differs from {}: run `e2e/bench peak-render`",
            json.display()
        );
        let drawn = std::fs::read_to_string(&svg).with_context(|| format!("reading {}", svg.display()))?;
        assert!(
            drawn == report.svg()?,
            "{} differs from {}: run `e2e/bench peak-render`",
            svg.display(),
            json.display()
        );
        for row in &report.rows {
            assert_eq!(
                row.pods.len(),
                report.participants.len(),
                "{name}: {} has a series of another length",
                row.system
            );
            assert_eq!(
                Some(&row.peak_pods),
                row.pods.iter().max(),
                "{name}: {}'s peak is not its series' top",
                row.system
            );
        }
    }
    assert!(found > 0, "no docs/bench/peak*.json committed");
    Ok(())
}
