//! Parsing of the Go-style durations the API accepts (`90s`, `5m`, `1h30m`), the same
//! grammar as `api::common::DURATION_PATTERN` and Kubernetes CEL's `duration()`.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("invalid duration {0:?}: expected a number followed by ms, s, m or h, for example 90s or 1h30m")]
    Invalid(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses `1h30m`, `90s`, `1.5h`, `250ms`.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(s.to_string());
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        if num_len == 0 {
            return Err(invalid());
        }
        let (num, tail) = rest.split_at(num_len);
        if num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = num.parse().map_err(|_| invalid())?;
        let (unit_secs, unit_len) = if tail.starts_with("ms") {
            (0.001, 2)
        } else if tail.starts_with('s') {
            (1.0, 1)
        } else if tail.starts_with('m') {
            (60.0, 1)
        } else if tail.starts_with('h') {
            (3600.0, 1)
        } else {
            return Err(invalid());
        };
        total += value * unit_secs;
        rest = &tail[unit_len..];
    }
    // Anything beyond ~3000 years is a typo, and would overflow chrono-style arithmetic downstream.
    if !total.is_finite() || total > 1e11 {
        return Err(DurationError::Overflow(s.to_string()));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_forms_the_api_documents() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("3h"), Ok(Duration::from_secs(10800)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn refuses_what_the_schema_refuses() {
        for bad in ["", "5", "m", "5d", "-5m", "1h 30m", "1..5h", ".5h", "5.h", "h5", "5mm", "１h"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(matches!(parse("99999999999999h"), Err(DurationError::Overflow(_))));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse(&s);
        }

        #[test]
        fn round_trips_hours_minutes_seconds(h in 0u64..1000, m in 0u64..60, s in 0u64..60) {
            let text = format!("{h}h{m}m{s}s");
            prop_assert_eq!(parse(&text), Ok(Duration::from_secs(h * 3600 + m * 60 + s)));
        }

        #[test]
        fn agrees_with_the_schema_pattern(s in "[0-9a-z.]{1,8}") {
            let re_ok = regex_lite_match(&s);
            prop_assert_eq!(parse(&s).is_ok() || matches!(parse(&s), Err(DurationError::Overflow(_))), re_ok);
        }
    }

    /// `^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$` written out by hand, to check the parser against the schema.
    fn regex_lite_match(s: &str) -> bool {
        let b = s.as_bytes();
        let mut i = 0;
        if b.is_empty() {
            return false;
        }
        while i < b.len() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return false;
            }
            if i < b.len() && b[i] == b'.' {
                i += 1;
                let frac = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if i == frac {
                    return false;
                }
            }
            if b[i..].starts_with(b"ms") {
                i += 2;
            } else if i < b.len() && matches!(b[i], b's' | b'm' | b'h') {
                i += 1;
            } else {
                return false;
            }
        }
        true
    }
}
