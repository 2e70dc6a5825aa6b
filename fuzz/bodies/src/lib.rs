//! Bodies of the fuzz targets (`fuzz/`, run with `make fuzz` under cargo-fuzz and libFuzzer), kept in a
//! library of the workspace so that `tests/fuzz_smoke.rs` runs the very same checks on stable Rust with
//! generated inputs in every `make test`, and out of the product's crate, which holds no test code.
//!
//! Each body takes arbitrary bytes, must never panic on them, and asserts what a parser promises about
//! what it accepts.

use visio_operator::agent::prometheus::{count_value, parse_line, sum_metric, Sum};
use visio_operator::pod_protocol::{parse_load, render_load};

/// The agent reading a backend's metrics endpoint. A known sum means every sample of the metric was a
/// readable count: summing them again gives the same figure. Garbage is never read as zero load.
pub fn agent_metrics(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Some(sample) = parse_line(line) {
            let _ = count_value(sample.value);
        }
    }
    for metric in ["livekit_participant_total", "livekit_room_total"] {
        match sum_metric(&text, metric) {
            Sum::Known(n) => {
                let again: u64 = text
                    .lines()
                    .filter_map(parse_line)
                    .filter(|s| s.name == metric)
                    .map(|s| count_value(s.value).expect("a known sum has only readable samples"))
                    .sum();
                assert_eq!(again, u64::from(n), "{metric} in {text:?}");
            }
            Sum::Missing => {
                assert!(text.lines().filter_map(parse_line).all(|s| s.name != metric), "{metric} is in {text:?}");
            }
            Sum::Unusable => {}
        }
    }
}

/// The API's duration grammar: what parses is finite, and `<n>ms`/`<n>s`/`<n>m`/`<n>h` of a whole
/// number reads as exactly that.
pub fn duration(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(d) = visio_operator::duration::parse(s) {
        assert!(d.as_secs_f64().is_finite(), "{s:?}");
        assert!(!s.is_empty() && s.chars().next().is_some_and(|c| c.is_ascii_digit()), "{s:?} parsed");
    }
    let digits: String = s.chars().filter(char::is_ascii_digit).take(6).collect();
    if let Ok(n) = digits.parse::<u64>() {
        assert_eq!(visio_operator::duration::parse(&format!("{n}s")).map(|d| d.as_secs()), Ok(n));
        assert_eq!(visio_operator::duration::parse(&format!("{n}m")).map(|d| d.as_secs()), Ok(n * 60));
    }
}

/// The load annotation the operator reads from every pod: what parses renders back to itself.
pub fn pod_load(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(load) = parse_load(s) {
        assert_eq!(parse_load(&render_load(&load)), Ok(load), "{s:?}");
    }
}
