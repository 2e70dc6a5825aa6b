//! A small parser for the Prometheus text exposition format, enough to read a backend's load gauges.
//!
//! The agent only ever sums one metric over its label sets (`livekit_participant_total` over every
//! `node_id`/`node_type`, for instance). What matters is what it refuses: a missing metric, or any sample
//! of it that is not a finite, non-negative whole number (NaN, `+Inf`, `-1`, `2.5`, `abc`), makes the sum
//! *unknown*, never zero — a pod whose load is unknown is never deleted as empty.

use std::fmt;

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample<'a> {
    /// Metric name.
    pub name: &'a str,
    /// Label pairs, values unescaped, in the order of the line.
    pub labels: Vec<(&'a str, String)>,
    /// The value token as written (`12`, `NaN`, `+Inf`, `1e3`, or anything else the line holds).
    pub value: &'a str,
}

/// The sum of one metric over its label sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sum {
    /// Every sample of the metric is a whole number >= 0 and the sum fits in a `u32`.
    Known(u32),
    /// The metric is not in the text.
    Missing,
    /// At least one sample is not a finite whole number >= 0, or the sum overflows.
    Unusable,
}

impl Sum {
    /// The known value, if any.
    pub fn known(self) -> Option<u32> {
        match self {
            Sum::Known(v) => Some(v),
            Sum::Missing | Sum::Unusable => None,
        }
    }
}

impl fmt::Display for Sum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sum::Known(v) => write!(f, "{v}"),
            Sum::Missing => f.write_str("missing"),
            Sum::Unusable => f.write_str("unusable"),
        }
    }
}

/// Parses one line. Comments (`# HELP`, `# TYPE`, `# EOF`, anything after `#`), blank lines and lines that
/// do not have the shape of a sample give `None`.
pub fn parse_line(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    // The value must be separated from the name or the label set by whitespace.
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let mut tokens = rest.split_ascii_whitespace();
    let value = tokens.next()?;
    // An optional timestamp, and nothing after it.
    if let Some(ts) = tokens.next() {
        if ts.parse::<i64>().is_err() || tokens.next().is_some() {
            return None;
        }
    }
    Some(Sample { name, labels, value })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses `label="value",...}` (the opening brace already consumed); returns the labels and what follows
/// the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let name_end = s.find(|c: char| !is_name_char(c)).unwrap_or(s.len());
        let name = &s[..name_end];
        if name.is_empty() {
            return None;
        }
        s = s[name_end..].trim_start().strip_prefix('=')?.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name, value));
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

/// Reads a sample value as a count: a finite whole number >= 0 (`3`, `3.0`, `3e0`); anything else is `None`.
pub fn count_value(token: &str) -> Option<u64> {
    let v: f64 = token.parse().ok()?;
    if !v.is_finite() || v < 0.0 || v.fract() != 0.0 || v > u64::MAX as f64 {
        return None;
    }
    Some(v as u64)
}

/// Sums `metric` over every label set in `text`.
pub fn sum_metric(text: &str, metric: &str) -> Sum {
    let mut total: u64 = 0;
    let mut seen = false;
    for line in text.lines() {
        let Some(sample) = parse_line(line) else {
            // A line that mentions the metric but cannot be read is garbage about that metric.
            if mentions(line, metric) {
                return Sum::Unusable;
            }
            continue;
        };
        if sample.name != metric {
            continue;
        }
        seen = true;
        let Some(v) = count_value(sample.value) else {
            return Sum::Unusable;
        };
        total = match total.checked_add(v) {
            Some(t) => t,
            None => return Sum::Unusable,
        };
    }
    if !seen {
        return Sum::Missing;
    }
    u32::try_from(total).map(Sum::Known).unwrap_or(Sum::Unusable)
}

/// The line is not a comment and starts with the metric's name followed by a non-name character.
fn mentions(line: &str, metric: &str) -> bool {
    let line = line.trim_start();
    !line.starts_with('#')
        && line.strip_prefix(metric).is_some_and(|rest| rest.is_empty() || !rest.starts_with(is_name_char))
}

/// Renders one sample line (used by the LiveKit stand-in and by the round-trip tests).
pub fn render_sample(name: &str, labels: &[(&str, &str)], value: &str) -> String {
    let mut out = String::from(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What LiveKit's `/metrics` looks like (trimmed): two label sets, plus neighbours with similar names.
    const LIVEKIT: &str = r#"# HELP livekit_participant_total Number of participants
# TYPE livekit_participant_total gauge
livekit_participant_total{node_id="ND_abc",node_type="SERVER"} 12
livekit_participant_total{node_id="ND_abc",node_type="MEDIA"} 3
# HELP livekit_room_total Number of rooms
# TYPE livekit_room_total gauge
livekit_room_total{node_id="ND_abc",node_type="SERVER"} 4
# TYPE livekit_participant_join_total counter
livekit_participant_join_total{node_id="ND_abc",node_type="SERVER",state="signal_connected"} 900
livekit_room_total_seconds_bucket{le="+Inf"} 7
go_goroutines 151
"#;

    #[test]
    fn sums_over_label_sets() {
        assert_eq!(sum_metric(LIVEKIT, "livekit_participant_total"), Sum::Known(15));
        assert_eq!(sum_metric(LIVEKIT, "livekit_room_total"), Sum::Known(4));
        assert_eq!(sum_metric(LIVEKIT, "go_goroutines"), Sum::Known(151));
    }

    #[test]
    fn missing_is_not_zero() {
        assert_eq!(sum_metric(LIVEKIT, "livekit_track_published_total"), Sum::Missing);
        assert_eq!(sum_metric("", "livekit_room_total"), Sum::Missing);
        assert_eq!(sum_metric("# livekit_room_total 3\n", "livekit_room_total"), Sum::Missing);
        assert_eq!(Sum::Missing.known(), None);
    }

    #[test]
    fn garbage_is_unusable_not_zero() {
        for bad in [
            "livekit_room_total NaN",
            "livekit_room_total -1",
            "livekit_room_total +Inf",
            "livekit_room_total -Inf",
            "livekit_room_total 2.5",
            "livekit_room_total abc",
            "livekit_room_total",
            "livekit_room_total{node_id=\"a\" 3",
            "livekit_room_total{node_id=a} 3",
            "livekit_room_total 3 4 5",
            "livekit_room_total 3 notatimestamp",
            "livekit_room_total 1e30",
        ] {
            let text = format!("livekit_room_total{{node_id=\"x\"}} 2\n{bad}\n");
            assert_eq!(sum_metric(&text, "livekit_room_total"), Sum::Unusable, "{bad:?}");
        }
    }

    #[test]
    fn accepts_the_forms_a_count_takes() {
        for (line, want) in [
            ("livekit_room_total 3", 3),
            ("livekit_room_total 3.0", 3),
            ("livekit_room_total 3e0", 3),
            ("livekit_room_total 0", 0),
            ("livekit_room_total -0", 0),
            ("livekit_room_total{} 3", 3),
            ("livekit_room_total 3 1712345678000", 3),
            ("  livekit_room_total{ a = \"b\" , } 3\r", 3),
            ("livekit_room_total{a=\"} 9 {\"} 3", 3),
            ("livekit_room_total{a=\"x\\\"y\\\\\"} 3", 3),
        ] {
            assert_eq!(sum_metric(line, "livekit_room_total"), Sum::Known(want), "{line:?}");
        }
    }

    #[test]
    fn other_metrics_garbage_does_not_matter() {
        let text = "go_gc_weird NaN\nsomething odd here\nlivekit_room_total 2\n";
        assert_eq!(sum_metric(text, "livekit_room_total"), Sum::Known(2));
    }

    #[test]
    fn overflow_is_unusable() {
        let text = "m{a=\"1\"} 4294967295\nm{a=\"2\"} 1\n";
        assert_eq!(sum_metric(text, "m"), Sum::Unusable);
        assert_eq!(sum_metric("m 4294967295", "m"), Sum::Known(u32::MAX));
    }

    #[test]
    fn parses_labels_with_escapes() {
        let s = parse_line(r#"m{a="x\"y",b="back\\slash",c="new\nline"} 1 123"#).unwrap();
        assert_eq!(s.name, "m");
        assert_eq!(s.labels, vec![("a", "x\"y".to_string()), ("b", "back\\slash".into()), ("c", "new\nline".into())]);
        assert_eq!(s.value, "1");
        assert_eq!(parse_line("# HELP m help"), None);
        assert_eq!(parse_line("   "), None);
        assert_eq!(parse_line("9m 1"), None);
    }

    fn label_value() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 _\"\\\\\n{},=#-]{0,12}"
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = sum_metric(&s, "livekit_room_total");
            for line in s.lines() {
                let _ = parse_line(line);
            }
        }

        #[test]
        fn never_panics_on_near_misses(
            prefix in "(livekit_room_total|livekit_room_total\\{|livekit_room_total\\{a=\")?",
            tail in "[ -~\\\\\"{}=,\t\r\n]{0,60}",
        ) {
            let _ = sum_metric(&format!("{prefix}{tail}"), "livekit_room_total");
        }

        #[test]
        fn round_trips(
            series in proptest::collection::vec(
                (proptest::collection::vec(("[a-z_][a-z0-9_]{0,8}", label_value()), 0..4), 0u32..100_000),
                1..8,
            ),
            noise in proptest::collection::vec("noise_[a-z]{1,6} [0-9]{1,5}", 0..4),
        ) {
            let mut text = String::from("# HELP lk_total gauge\n# TYPE lk_total gauge\n");
            for n in &noise {
                text.push_str(n);
                text.push('\n');
            }
            let mut want = 0u64;
            for (labels, v) in &series {
                let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let line = render_sample("lk_total", &pairs, &v.to_string());
                let parsed = parse_line(&line).expect("a rendered line parses");
                prop_assert_eq!(parsed.name, "lk_total");
                let got: Vec<(&str, &str)> = parsed.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                prop_assert_eq!(got, pairs);
                prop_assert_eq!(count_value(parsed.value), Some(u64::from(*v)));
                text.push_str(&line);
                text.push('\n');
                want += u64::from(*v);
            }
            prop_assert_eq!(sum_metric(&text, "lk_total"), Sum::Known(want as u32));
        }

        #[test]
        fn one_bad_sample_spoils_the_sum(
            good in proptest::collection::vec(0u32..1000, 0..5),
            bad in prop_oneof![
                Just("NaN".to_string()), Just("-1".to_string()), Just("+Inf".to_string()),
                "[a-z]{1,5}", "[0-9]{1,3}\\.[1-9]",
            ],
        ) {
            let mut text = String::new();
            for (i, v) in good.iter().enumerate() {
                text.push_str(&render_sample("lk_total", &[("i", &i.to_string())], &v.to_string()));
                text.push('\n');
            }
            text.push_str(&render_sample("lk_total", &[("i", "bad")], &bad));
            prop_assert_eq!(sum_metric(&text, "lk_total"), Sum::Unusable);
        }
    }
}
