//! `e2e/bench` runs this against a control plane and operator of its own (see that script).
//!
//! - `bench fleet [--runs N]`: the SFU fleet scenarios, the operator and the chart-style baseline side
//!   by side (issue #4);
//! - `bench tenants N`: N tenants applied at once; convergence, write requests, idle writes, footprint
//!   (issue #11);
//! - `bench peak [--seed N] [--tenants N] [--startup S] [--compression F]`: the Monday 9:00 ramp of 20 tenants
//!   on the local control plane, the chart's Deployment + HPA against the operator process reactive and with
//!   schedules, time compressed (issue #23, `peak_live.rs`); `--model`: the same in model time, no control
//!   plane (`peak.rs`); `bench peak-render`: the README tables and pictures from the committed JSON.

mod fleet;
mod peak;
mod peak_live;
mod tenants;

use anyhow::{bail, Context, Result};

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// The commit (short) and the date (UTC, to the minute) a report is made at.
fn provenance() -> Result<(String, String)> {
    let out = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output()?;
    let commit = String::from_utf8(out.stdout)?.trim().to_string();
    anyhow::ensure!(!commit.is_empty(), "git rev-parse gave no commit");
    let now = k8s_openapi::jiff::Timestamp::now();
    Ok((commit, now.strftime("%Y-%m-%d %H:%M UTC").to_string()))
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
                pack: args.iter().any(|a| a == "--pack"),
            };
            anyhow::ensure!(
                !p.pack || args.iter().any(|a| a == "--model"),
                "--pack is a what-if of the model (--model)"
            );
            let command = format!("e2e/bench {}", args.join(" "));
            let (commit, date) = provenance()?;
            let (report, name) = if args.iter().any(|a| a == "--model") {
                (peak::run(&p, command, commit, date)?, "peak-model.json")
            } else {
                let compression = flag(&args, "--compression").map(|r| r.parse()).transpose()?.unwrap_or(10);
                (peak_live::run(&p, compression, command, commit, date).await?, "peak.json")
            };
            println!("\n{}", report.markdown());
            if p.pack {
                println!("(what-if: packed placement; nothing written)");
                return Ok(());
            }
            let json = visio_e2e::repo().join("docs/bench").join(name);
            report.write(&json)?;
            visio_e2e::peak_report::render_all()?;
            println!("written: {} (and the README's table and the picture beside it)", json.display());
            Ok(())
        }
        Some("peak-render") => visio_e2e::peak_report::render_all(),
        Some("tenants-report") => tenants::report(
            args.get(1).context("bench tenants-report FILE --doc JSON")?,
            &flag(&args, "--doc").context("--doc JSON (docs/bench/tenants.json)")?,
        ),
        _ => bail!(
            "usage: bench fleet [--runs N] | bench tenants N --out FILE [--idle SECONDS] | bench tenants-report FILE --doc JSON | \
             bench peak [--model] [--seed N] [--tenants N] [--startup SECONDS] [--compression F] | bench peak-render"
        ),
    }
}
