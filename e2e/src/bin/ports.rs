//! `ports`: the table of every control plane the harness starts (`visio_e2e::ports`), as e2e/README.md
//! shows it. Without arguments it prints the table; `--write` rewrites the README's copy (between its
//! `<!-- ports: ... -->` markers), which `tests/ports.rs` checks for drift.

use anyhow::{bail, Context, Result};
use visio_e2e::ports::{markdown_table, with_table};

fn main() -> Result<()> {
    match std::env::args().nth(1).as_deref() {
        None => print!("{}", markdown_table()),
        Some("--write") => {
            let path = visio_e2e::repo().join("e2e/README.md");
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let new = with_table(&text).context("e2e/README.md has no `<!-- ports: ... -->` markers")?;
            std::fs::write(&path, new)?;
        }
        Some(other) => bail!("usage: ports [--write] (not {other})"),
    }
    Ok(())
}
