//! `bench-report`: the README's performance blocks and pictures, from the benches' committed results
//! (docs/bench/<name>.json, written by `e2e/bench`). Without arguments it prints each block; `--write`
//! rewrites the README's blocks (between their `<!-- bench-report <name>: ... -->` markers) and the
//! pictures docs/bench/*.svg, which tests/bench_report.rs checks for drift.

use anyhow::{bail, Context, Result};
use visio_e2e::bench::{documents, render, with_block};

fn main() -> Result<()> {
    let repo = visio_e2e::repo();
    let docs = documents(&repo.join("docs/bench"))?;
    match std::env::args().nth(1).as_deref() {
        None => {
            for (name, text) in &docs {
                println!("{}", render(name, text)?.markdown);
            }
        }
        Some("--write") => {
            let path = repo.join("README.md");
            let mut readme = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            for (name, text) in &docs {
                let r = render(name, text)?;
                readme = with_block(&readme, name, &r.markdown)
                    .with_context(|| format!("README.md has no `<!-- bench-report {name}: ... -->` markers"))?;
                for (file, svg) in r.pictures {
                    std::fs::write(repo.join("docs/bench").join(file), svg)?;
                }
            }
            std::fs::write(&path, readme)?;
        }
        Some(other) => bail!("usage: bench-report [--write] (not {other})"),
    }
    Ok(())
}
