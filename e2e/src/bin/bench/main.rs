//! `e2e/bench` runs this against a control plane and operator of its own (see that script).
//!
//! - `bench fleet [--runs N]`: the SFU fleet scenarios, the operator and the chart-style baseline side
//!   by side (issue #4);
//! - `bench tenants N`: N tenants applied at once; convergence, write requests, idle writes, footprint
//!   (issue #11);
//! - `bench peak [--seed N] [--startup S] [--svg FILE]`: the Monday 9:00 ramp of 20 tenants, the chart's
//!   HPA against the operator reactive and with schedules (issue #23; a model, no control plane).

mod fleet;
mod peak;
mod tenants;

use anyhow::{bail, Context, Result};

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
        Some("tenants") => {
            let n: usize = args.get(1).context("bench tenants N")?.parse()?;
            let idle = flag(&args, "--idle").map(|r| r.parse()).transpose()?.unwrap_or(300);
            let out = flag(&args, "--out").context("--out FILE")?;
            let pid: u32 = std::env::var("VISIO_BENCH_OPERATOR_PID").context("VISIO_BENCH_OPERATOR_PID")?.parse()?;
            let figures = tenants::run(n, std::time::Duration::from_secs(idle), pid).await?;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&out)?;
            use std::io::Write as _;
            writeln!(f, "{}", serde_json::to_string(&figures)?)?;
            Ok(())
        }
        Some("peak") => {
            let p = peak::Params {
                seed: flag(&args, "--seed").map(|r| r.parse()).transpose()?.unwrap_or(23),
                tenants: flag(&args, "--tenants").map(|r| r.parse()).transpose()?.unwrap_or(20),
                startup_s: flag(&args, "--startup").map(|r| r.parse()).transpose()?.unwrap_or(90),
            };
            let svg = flag(&args, "--svg").unwrap_or_else(|| "docs/bench/peak-morning.svg".into());
            peak::run(&p, std::path::Path::new(&svg))
        }
        Some("tenants-report") => tenants::report(args.get(1).context("bench tenants-report FILE")?),
        _ => bail!(
            "usage: bench fleet [--runs N] | bench tenants N --out FILE [--idle SECONDS] | bench tenants-report FILE | \
             bench peak [--seed N] [--tenants N] [--startup SECONDS] [--svg FILE]"
        ),
    }
}
