//! Pure retention decisions: which rule an object falls under, whether it is old enough, and
//! whether it may be deleted given its legal holds and the policy's mode. No I/O here; `now` is
//! a parameter, so tests (and the property tests below) control the clock.

use crate::api::retentionpolicy::{DataClass, RetentionMode, RetentionRule};

/// A rule with its `maxAge` parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub prefix: String,
    pub data_class: DataClass,
    /// `maxAge` in whole seconds.
    pub max_age_secs: i64,
}

impl Rule {
    /// The data class as written in the API (`recordings`, ...), for logs and metric labels.
    pub fn class_name(&self) -> &'static str {
        class_name(self.data_class)
    }
}

/// `recordings`, `transcripts`, ... as in the API.
pub fn class_name(c: DataClass) -> &'static str {
    match c {
        DataClass::Recordings => "recordings",
        DataClass::Transcripts => "transcripts",
        DataClass::Captions => "captions",
        DataClass::Summaries => "summaries",
        DataClass::Metadata => "metadata",
    }
}

/// Smallest `maxAge` the operator accepts, whatever the apiserver let through (the CRD says
/// the same): a typo must not wipe fresh data.
pub const MIN_MAX_AGE_SECS: i64 = 3600;

/// Parses the rules. The error names the offending field, e.g. `spec.rules[recordings/].maxAge: ...`.
pub fn compile(rules: &[RetentionRule]) -> Result<Vec<Rule>, String> {
    if rules.is_empty() {
        return Err("spec.rules: at least one rule is required".into());
    }
    let mut out: Vec<Rule> = Vec::with_capacity(rules.len());
    for r in rules {
        let field = format!("spec.rules[{}].maxAge", r.prefix);
        if r.prefix.is_empty() {
            return Err("spec.rules[].prefix: must not be empty".into());
        }
        if out.iter().any(|o| o.prefix == r.prefix) {
            return Err(format!("spec.rules[{}].prefix: appears twice", r.prefix));
        }
        let d = crate::duration::parse(&r.max_age).map_err(|e| format!("{field}: {e}"))?;
        let secs = i64::try_from(d.as_secs()).map_err(|_| format!("{field}: too large"))?;
        if secs < MIN_MAX_AGE_SECS {
            return Err(format!("{field}: {:?} is shorter than the 1h minimum", r.max_age));
        }
        out.push(Rule { prefix: r.prefix.clone(), data_class: r.data_class, max_age_secs: secs });
    }
    Ok(out)
}

/// The rule with the longest prefix of `key`, if any.
pub fn match_rule<'a>(rules: &'a [Rule], key: &str) -> Option<&'a Rule> {
    rules.iter().filter(|r| key.starts_with(r.prefix.as_str())).max_by_key(|r| r.prefix.len())
}

/// How old an object is, against its rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Age<'a> {
    /// No rule covers the key: never touched.
    Unmatched,
    /// The server gave no modification time: kept, and counted as an error.
    Undated,
    /// Not older than its rule's `maxAge` (or dated in the future).
    Young,
    /// Older than its rule's `maxAge`: a candidate, if no legal hold says otherwise.
    Expired { rule: &'a Rule, age_secs: i64 },
}

/// Classifies one listed object. `last_modified` and `now` are Unix seconds.
pub fn classify<'a>(rules: &'a [Rule], key: &str, last_modified: Option<i64>, now: i64) -> Age<'a> {
    let Some(rule) = match_rule(rules, key) else { return Age::Unmatched };
    let Some(modified) = last_modified else { return Age::Undated };
    let age = now.saturating_sub(modified);
    // Strictly older than maxAge: an object exactly maxAge old lives until the next sweep.
    if age > rule.max_age_secs {
        Age::Expired { rule, age_secs: age }
    } else {
        Age::Young
    }
}

/// What one hold check answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The object is on hold.
    On,
    /// The object is not on hold.
    Off,
    /// The check failed: we cannot tell, so the object must be kept.
    Unknown,
}

/// The answers about one expired object. `None`: that kind of hold is not checked (the policy
/// does not use it, or the bucket cannot have it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holds {
    pub tag: Option<Hold>,
    pub object_lock: Option<Hold>,
}

/// Whether the object's tags put it on hold (`tag_key` present with `tag_value`).
pub fn tag_hold<'t>(tags: impl IntoIterator<Item = (&'t str, &'t str)>, tag_key: &str, tag_value: &str) -> Hold {
    if tags.into_iter().any(|(k, v)| k == tag_key && v == tag_value) {
        Hold::On
    } else {
        Hold::Off
    }
}

/// The verdict on one listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Not covered by any rule.
    Unmatched,
    /// Younger than its rule.
    Young,
    /// Expired but on legal hold.
    Held,
    /// We could not tell (no date, or a hold check failed): kept, counted as an error.
    Error,
    /// Expired and not on hold: deleted in `Enforce`, reported in `DryRun`.
    Expired { rule: &'a Rule, age_secs: i64 },
}

/// Combines the age and the hold answers. Any hold `On` wins; any `Unknown` keeps the object.
pub fn verdict<'a>(age: &Age<'a>, holds: Holds) -> Verdict<'a> {
    match age {
        Age::Unmatched => Verdict::Unmatched,
        Age::Young => Verdict::Young,
        Age::Undated => Verdict::Error,
        Age::Expired { rule, age_secs } => {
            let answers = [holds.tag, holds.object_lock];
            if answers.contains(&Some(Hold::On)) {
                Verdict::Held
            } else if answers.contains(&Some(Hold::Unknown)) {
                Verdict::Error
            } else {
                Verdict::Expired { rule, age_secs: *age_secs }
            }
        }
    }
}

/// Whether an `Expired` verdict may actually be deleted in this mode (never in `DryRun`).
pub fn deletes(mode: RetentionMode) -> bool {
    matches!(mode, RetentionMode::Enforce)
}

/// The keys to send to DeleteObjects, in order: the expired ones, and none in `DryRun`.
pub fn to_delete<'k>(verdicts: &[(&'k str, Verdict<'_>)], mode: RetentionMode) -> Vec<&'k str> {
    if !deletes(mode) {
        return vec![];
    }
    verdicts.iter().filter(|(_, v)| matches!(v, Verdict::Expired { .. })).map(|(k, _)| *k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(prefix: &str, class: DataClass, max_age: &str) -> RetentionRule {
        RetentionRule { data_class: class, prefix: prefix.into(), max_age: max_age.into() }
    }

    fn rules() -> Vec<Rule> {
        compile(&[
            rule("recordings/", DataClass::Recordings, "720h"),
            rule("recordings/legal/", DataClass::Recordings, "8760h"),
            rule("transcripts/", DataClass::Transcripts, "24h"),
        ])
        .unwrap()
    }

    const H: i64 = 3600;

    #[test]
    fn longest_prefix_wins() {
        let r = rules();
        assert_eq!(match_rule(&r, "recordings/a.mp4").unwrap().max_age_secs, 720 * H);
        assert_eq!(match_rule(&r, "recordings/legal/a.mp4").unwrap().max_age_secs, 8760 * H);
        assert_eq!(match_rule(&r, "transcripts/x").unwrap().data_class, DataClass::Transcripts);
        assert!(match_rule(&r, "captions/x").is_none());
        assert!(match_rule(&r, "recordings").is_none(), "a prefix is matched whole");
    }

    #[test]
    fn malformed_or_too_short_durations_name_the_field() {
        let e = compile(&[rule("recordings/", DataClass::Recordings, "30 days")]).unwrap_err();
        assert!(e.starts_with("spec.rules[recordings/].maxAge: "), "{e}");
        let e = compile(&[rule("recordings/", DataClass::Recordings, "10m")]).unwrap_err();
        assert!(e.contains("shorter than the 1h minimum"), "{e}");
        assert!(compile(&[]).is_err());
        let dup = [rule("a/", DataClass::Recordings, "1h"), rule("a/", DataClass::Captions, "2h")];
        assert!(compile(&dup).unwrap_err().contains("appears twice"));
    }

    #[test]
    fn age_boundaries() {
        let r = rules();
        let now = 1_000_000_000;
        let at = |age| classify(&r, "transcripts/t", Some(now - age), now);
        assert_eq!(at(24 * H), Age::Young, "exactly maxAge is not older than maxAge");
        assert!(matches!(at(24 * H + 1), Age::Expired { age_secs, .. } if age_secs == 24 * H + 1));
        assert_eq!(at(-5 * H), Age::Young, "dated in the future");
        assert_eq!(classify(&r, "transcripts/t", None, now), Age::Undated);
        assert_eq!(classify(&r, "other/t", Some(0), now), Age::Unmatched);
    }

    #[test]
    fn holds_win_and_doubt_keeps() {
        let r = rules();
        let age = classify(&r, "transcripts/t", Some(0), 1_000_000_000);
        let h = |tag, object_lock| verdict(&age, Holds { tag, object_lock });
        assert!(matches!(h(Some(Hold::Off), None), Verdict::Expired { .. }));
        assert!(matches!(h(None, None), Verdict::Expired { .. }));
        assert_eq!(h(Some(Hold::On), Some(Hold::Off)), Verdict::Held);
        assert_eq!(h(Some(Hold::Off), Some(Hold::On)), Verdict::Held);
        assert_eq!(h(Some(Hold::On), Some(Hold::Unknown)), Verdict::Held);
        assert_eq!(h(Some(Hold::Unknown), Some(Hold::Off)), Verdict::Error);
        assert_eq!(h(None, Some(Hold::Unknown)), Verdict::Error);
    }

    #[test]
    fn tag_hold_needs_key_and_value() {
        assert_eq!(tag_hold([("visio-legal-hold", "true")], "visio-legal-hold", "true"), Hold::On);
        assert_eq!(tag_hold([("visio-legal-hold", "false")], "visio-legal-hold", "true"), Hold::Off);
        assert_eq!(tag_hold([("other", "true")], "visio-legal-hold", "true"), Hold::Off);
        assert_eq!(tag_hold([], "visio-legal-hold", "true"), Hold::Off);
    }

    fn any_hold() -> impl Strategy<Value = Option<Hold>> {
        prop_oneof![Just(None), Just(Some(Hold::On)), Just(Some(Hold::Off)), Just(Some(Hold::Unknown))]
    }

    fn any_class() -> impl Strategy<Value = DataClass> {
        prop_oneof![Just(DataClass::Recordings), Just(DataClass::Transcripts), Just(DataClass::Captions)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The invariant of the whole feature: an object is only ever sent for deletion when it
        /// is strictly older than the maxAge of the longest rule matching its key, no hold check
        /// said On or could not answer, and the mode is Enforce.
        #[test]
        fn never_deletes_young_held_or_doubtful_objects(
            rule_set in proptest::collection::vec(("[a-c]{1,3}/", any_class(), 1i64..2000), 1..5),
            objects in proptest::collection::vec(("[a-c]{0,3}/?[a-c]{0,3}", proptest::option::of(-10_000_000i64..10_000_000), any_hold(), any_hold()), 0..60),
            now in 0i64..20_000_000,
            enforce in any::<bool>(),
        ) {
            let mut api_rules: Vec<RetentionRule> = vec![];
            for (p, c, h) in rule_set {
                if api_rules.iter().all(|r| r.prefix != p) {
                    api_rules.push(RetentionRule { data_class: c, prefix: p, max_age: format!("{h}h") });
                }
            }
            let rules = compile(&api_rules).unwrap();
            // Keys are unique in a bucket: suffix each with its index.
            let objects: Vec<_> = objects.into_iter().enumerate().map(|(i, (k, m, t, l))| (format!("{k}#{i}"), m, t, l)).collect();
            let mode = if enforce { RetentionMode::Enforce } else { RetentionMode::DryRun };
            let verdicts: Vec<(&str, Verdict)> = objects
                .iter()
                .map(|(k, m, t, l)| (k.as_str(), verdict(&classify(&rules, k, *m, now), Holds { tag: *t, object_lock: *l })))
                .collect();
            let deleted = to_delete(&verdicts, mode);
            if !enforce {
                prop_assert!(deleted.is_empty());
            }
            for key in deleted {
                let (_, m, t, l) = objects.iter().find(|(k, ..)| k == key).unwrap();
                let rule = api_rules
                    .iter()
                    .filter(|r| key.starts_with(r.prefix.as_str()))
                    .max_by_key(|r| r.prefix.len())
                    .expect("a deleted key matches a rule");
                let max_age = crate::duration::parse(&rule.max_age).unwrap().as_secs() as i64;
                let modified = m.expect("a deleted object has a date");
                prop_assert!(now - modified > max_age, "{key}: age {} <= maxAge {max_age}", now - modified);
                prop_assert!(*t != Some(Hold::On) && *l != Some(Hold::On), "{key} was on hold");
                prop_assert!(*t != Some(Hold::Unknown) && *l != Some(Hold::Unknown), "{key}: hold unknown");
            }
        }

        /// Every expired, unheld, dated object is deleted in Enforce: nothing is missed.
        #[test]
        fn deletes_every_expired_unheld_object(age in 3601i64..10_000_000, off_or_none in any::<bool>()) {
            let rules = compile(&[rule("r/", DataClass::Recordings, "1h")]).unwrap();
            let hold = if off_or_none { Some(Hold::Off) } else { None };
            let v = verdict(&classify(&rules, "r/x", Some(0), age), Holds { tag: hold, object_lock: hold });
            let verdicts = [("r/x", v)];
            prop_assert_eq!(to_delete(&verdicts, RetentionMode::Enforce), vec!["r/x"]);
        }
    }
}
