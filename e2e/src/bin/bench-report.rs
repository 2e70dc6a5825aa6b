//! `bench-report`: the README's performance blocks and pictures, from the benches' committed results
//! (docs/bench/<name>.json, written by `e2e/bench`). Without arguments it prints each block; `--write`
//! rewrites the README's blocks (between their `<!-- bench-report <name>: ... -->` markers) and the
//! pictures docs/bench/*.svg, which tests/bench_report.rs checks for drift.

use anyhow::{bail, Result};
use visio_e2e::bench::{documents, render, write_all};

fn main() -> Result<()> {
    let repo = visio_e2e::repo();
    let docs = documents(&repo.join("docs/bench"))?;
    match std::env::args().nth(1).as_deref() {
        None => {
            for (name, text) in &docs {
                println!("{}", render(name, text)?.markdown);
            }
        }
        Some("--write") => write_all(&repo)?,
        Some(other) => bail!("usage: bench-report [--write] (not {other})"),
    }
    Ok(())
}
