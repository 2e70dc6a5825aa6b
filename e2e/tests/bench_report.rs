//! The README's performance blocks and the pictures under docs/bench/ are generated from the committed
//! results (docs/bench/*.json): a figure edited by hand, or results committed without regenerating, fail
//! here. No cluster needed.

use anyhow::{Context, Result};
use visio_e2e::bench::{documents, render, with_block};
use visio_e2e::repo;

#[test]
fn the_readme_and_the_pictures_are_generated_from_the_committed_results() -> Result<()> {
    let readme = std::fs::read_to_string(repo().join("README.md"))?;
    let docs = documents(&repo().join("docs/bench"))?;
    assert!(!docs.is_empty(), "no results under docs/bench/");
    let fix = "run `cargo run -p visio-e2e --bin bench-report -- --write`";
    for (name, text) in &docs {
        let r = render(name, text)?;
        let generated = with_block(&readme, name, &r.markdown)
            .with_context(|| format!("README.md has no `<!-- bench-report {name}: ... -->` markers"))?;
        assert!(generated == readme, "README.md's block of docs/bench/{name}.json differs from the JSON: {fix}");
        for (file, svg) in &r.pictures {
            let have = std::fs::read_to_string(repo().join("docs/bench").join(file))
                .with_context(|| format!("docs/bench/{file}: {fix}"))?;
            assert!(&have == svg, "docs/bench/{file} differs from docs/bench/{name}.json: {fix}");
        }
    }
    Ok(())
}
