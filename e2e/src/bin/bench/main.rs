//! `e2e/bench` runs this against a control plane and operator of its own (see that script).
//!
//! - `bench fleet [--runs N]`: the SFU fleet scenarios, the operator and the chart-style baseline side
//!   by side (issue #4);
//! - `bench tenants N`: N tenants applied at once; convergence, write requests, idle writes, footprint
//!   (issue #11).

mod fleet;

use anyhow::{bail, Result};

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fleet") => {
            let runs = flag(&args, "--runs").map(|r| r.parse()).transpose()?.unwrap_or(3);
            fleet::run(runs).await
        }
        _ => bail!("usage: bench fleet [--runs N]"),
    }
}
