//! The retention benchmark's two halves, run by e2e/bench-retention against a SeaweedFS on
//! loopback (endpoint and keys from the VISIO_E2E_S3_* variables):
//!
//!   bench-retention fill BUCKET N     N objects: 60% recordings/ (expired, 1 in 200 on legal
//!                                     hold), 20% captions/ (young), 20% other/ (no rule)
//!   bench-retention sweep BUCKET      one Enforce sweep with the operator's sweeper, clock 1000 h
//!                                     ahead; prints the figures as one JSON line
//!
//! The sweep runs in its own process so that its peak RSS (measured by /usr/bin/time) is the
//! sweeper's alone.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use visio_e2e::s3::{self, S3};
use visio_operator::api::retentionpolicy::{DataClass, LegalHoldSpec, RetentionMode, RetentionRule};
use visio_operator::retention::decide;
use visio_operator::retention::sweep::Sweeper;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let s3 = S3::from_env()?;
    let c = s3.client();
    match args.get(1).map(String::as_str) {
        Some("fill") => {
            let bucket = args.get(2).context("bucket")?;
            let n: usize = args.get(3).context("N")?.parse()?;
            s3::create_bucket(&c, bucket).await?;
            let started = Instant::now();
            let (rec, cap) = (n * 6 / 10, n * 2 / 10);
            let mut keys = vec![];
            let mut held = vec![];
            for i in 0..n {
                let k = if i < rec {
                    format!("recordings/{:03}/meeting-{i:07}.webm", i % 997)
                } else if i < rec + cap {
                    format!("captions/{:03}/c-{i:07}.json", i % 997)
                } else {
                    format!("other/{:03}/o-{i:07}", i % 997)
                };
                if i < rec && i % 200 == 0 {
                    held.push(k)
                } else {
                    keys.push(k)
                }
            }
            let n_held = held.len();
            for chunk in keys.chunks(5000) {
                s3::put_many(&c, bucket, chunk.to_vec(), 64, 64).await?;
            }
            for k in held {
                s3::put(&c, bucket, &k, vec![b'x'; 64], Some("visio-legal-hold=true")).await?;
            }
            println!(
                "{{\"filled\": {n}, \"expected_deleted\": {}, \"held\": {n_held}, \"seconds\": {:.1}}}",
                rec - n_held,
                started.elapsed().as_secs_f64()
            );
        }
        Some("sweep") => {
            let bucket = args.get(2).context("bucket")?;
            let rules = decide::compile(&[
                RetentionRule {
                    data_class: DataClass::Recordings,
                    prefix: "recordings/".into(),
                    max_age: "720h".into(),
                },
                RetentionRule { data_class: DataClass::Captions, prefix: "captions/".into(), max_age: "2000h".into() },
            ])
            .map_err(anyhow::Error::msg)?;
            let now = visio_operator::retention::now_secs() + 1000 * 3600;
            let started = Instant::now();
            let mut s = Sweeper::start(
                c,
                &s3.target(bucket),
                rules,
                &LegalHoldSpec::default(),
                RetentionMode::Enforce,
                now,
                None,
            )
            .await?;
            let mut pages = 0u32;
            let mut audited = 0u64;
            while s.next_page(|_| audited += 1).await? {
                pages += 1;
                if pages > 100_000 {
                    bail!("more than 100,000 pages");
                }
            }
            let p = &s.progress;
            println!(
                "{{\"seconds\": {:.1}, \"pages\": {}, \"scanned\": {}, \"deleted\": {}, \"audited\": {audited}, \"held\": {}, \"errors\": {}}}",
                started.elapsed().as_secs_f64(),
                pages + 1,
                p.scanned,
                p.deleted,
                p.held,
                p.errors
            );
        }
        _ => bail!("usage: bench-retention fill BUCKET N | sweep BUCKET"),
    }
    Ok(())
}
