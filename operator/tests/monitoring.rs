//! The shipped monitoring (`monitoring/alerts.yaml`, its promtool tests, `monitoring/dashboard.json`)
//! against the metrics the operator really registers: a renamed or missing metric would leave an
//! alert that never fires or a dashboard panel that stays empty, silently.
//!
//! The registered names come from the collectors' descriptors and types (`Metrics::series_names`),
//! not from `registry.gather()`, which leaves out every family that has no series yet (all the
//! caption and retention metrics of this release, for instance).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use serde_norway::Value as Yaml;
use visio_operator::telemetry::Metrics;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `visio_*` identifier in `text` (metric names: letters, digits, `_`, `:`).
fn metric_names(text: &str) -> BTreeSet<String> {
    names_with_prefix(text, "visio_")
}

/// Every identifier starting with `prefix` in `text`.
fn names_with_prefix(text: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        let len = rest[i..].find(|c: char| !ident(c)).unwrap_or(rest.len() - i);
        if !before.is_some_and(ident) {
            // A trailing colon is prose ("visio_x: ..."), not part of a name.
            out.insert(rest[i..i + len].trim_end_matches(':').to_string());
        }
        rest = &rest[i + len..];
    }
    out
}

/// Every string in a JSON document.
fn json_strings(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::String(s) => out.push(s.clone()),
        Json::Array(a) => a.iter().for_each(|v| json_strings(v, out)),
        Json::Object(o) => o.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// Every string in a YAML document.
fn yaml_strings(v: &Yaml, out: &mut Vec<String>) {
    match v {
        Yaml::String(s) => out.push(s.clone()),
        Yaml::Sequence(a) => a.iter().for_each(|v| yaml_strings(v, out)),
        Yaml::Mapping(m) => m.iter().for_each(|(k, v)| {
            yaml_strings(k, out);
            yaml_strings(v, out);
        }),
        _ => {}
    }
}

/// The labels of every `by (...)` clause of a PromQL expression: what an alert keeps.
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for part in expr.split("by (").skip(1) {
        let list = part.split(')').next().unwrap_or_default();
        out.extend(list.split(',').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()));
    }
    out
}

struct Alert {
    name: String,
    expr: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn alerts() -> Vec<Alert> {
    let doc: Yaml = serde_norway::from_str(&read("monitoring/alerts.yaml")).expect("alerts.yaml is YAML");
    let map = |v: &Yaml| -> BTreeMap<String, String> {
        v.as_mapping()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (k.as_str().unwrap_or_default().to_string(), v.as_str().unwrap_or_default().to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = vec![];
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let Some(name) = rule["alert"].as_str() else { continue };
            out.push(Alert {
                name: name.to_string(),
                expr: rule["expr"].as_str().expect("expr").to_string(),
                labels: map(&rule["labels"]),
                annotations: map(&rule["annotations"]),
            });
        }
    }
    out
}

fn dashboard() -> Json {
    serde_json::from_str(&read("monitoring/dashboard.json")).expect("dashboard.json is JSON")
}

/// Names used in `text` that the operator does not expose.
fn unknown(text_names: BTreeSet<String>, registered: &BTreeSet<String>) -> Vec<String> {
    text_names.into_iter().filter(|n| !registered.contains(n)).collect()
}

#[test]
fn every_metric_the_alerts_use_is_registered() {
    let registered = Metrics::new().series_names();
    let alerts = alerts();
    assert!(alerts.len() >= 15, "only {} alerts", alerts.len());
    let mut used = BTreeSet::new();
    for a in &alerts {
        used.extend(metric_names(&a.expr));
        for v in a.annotations.values() {
            used.extend(metric_names(v));
        }
    }
    assert!(used.len() >= 15, "suspiciously few metric names found in alerts.yaml: {used:?}");
    assert_eq!(
        unknown(used, &registered),
        Vec::<String>::new(),
        "alerts.yaml uses metrics the operator does not register"
    );

    // The promtool tests feed series by name: a name the operator does not expose tests nothing.
    let tests: Yaml = serde_norway::from_str(&read("monitoring/alerts.test.yaml")).expect("alerts.test.yaml is YAML");
    let mut strings = vec![];
    yaml_strings(&tests, &mut strings);
    let fed: BTreeSet<String> = strings.iter().flat_map(|s| metric_names(s)).collect();
    assert_eq!(
        unknown(fed, &registered),
        Vec::<String>::new(),
        "alerts.test.yaml feeds series the operator never exposes"
    );
}

#[test]
fn every_metric_the_dashboard_uses_is_registered() {
    let registered = Metrics::new().series_names();
    let mut strings = vec![];
    json_strings(&dashboard(), &mut strings);
    let used: BTreeSet<String> = strings.iter().flat_map(|s| metric_names(s)).collect();
    assert!(used.len() >= 20, "suspiciously few metric names found in dashboard.json: {used:?}");
    assert_eq!(
        unknown(used, &registered),
        Vec::<String>::new(),
        "dashboard.json uses metrics the operator does not register"
    );
}

#[test]
fn the_dashboard_shows_every_registered_metric() {
    let mut strings = vec![];
    json_strings(&dashboard(), &mut strings);
    let used: BTreeSet<String> = strings.iter().flat_map(|s| metric_names(s)).collect();
    let missing: Vec<String> = Metrics::new()
        .family_labels()
        .into_keys()
        .filter(|family| {
            !used.iter().any(|u| u == family || u.strip_prefix(family.as_str()).is_some_and(|s| s.starts_with('_')))
        })
        .collect();
    assert_eq!(missing, Vec::<String>::new(), "registered metrics no dashboard panel shows");
}

#[test]
fn grouping_labels_are_read_from_by_clauses() {
    let expr = "max by (namespace, cluster) (a) > on (namespace) max by (namespace,name) (b) and on() c";
    assert_eq!(grouping_labels(expr), ["cluster", "name", "namespace"].map(String::from).into());
    assert!(grouping_labels("absent(up == 1)").is_empty());
}

#[test]
fn the_name_check_itself_catches_a_wrong_name() {
    let registered = Metrics::new().series_names();
    let names = metric_names(
        r#"max by (ns) (visio_sfu_pods{state="ready"}) / visio_sfu_podz + rate(visio_reconcile_duration_seconds_bucket[5m]) + visio_reconcile_duration_seconds + not_visio_x; visio_rooms: prose"#,
    );
    assert_eq!(
        names,
        [
            "visio_reconcile_duration_seconds",
            "visio_reconcile_duration_seconds_bucket",
            "visio_rooms",
            "visio_sfu_podz",
            "visio_sfu_pods"
        ]
        .map(String::from)
        .into()
    );
    // A typo, and a histogram's bare name (it has no such sample), are refused.
    assert_eq!(unknown(names, &registered), vec!["visio_reconcile_duration_seconds", "visio_sfu_podz"]);
}

#[test]
fn every_alert_has_severity_annotations_and_a_runbook() {
    let runbooks = repo().join("docs/runbooks");
    let mut names = BTreeSet::new();
    for a in alerts() {
        assert!(names.insert(a.name.clone()), "alert {} defined twice", a.name);
        assert!(a.name.starts_with("Visio") && a.name.chars().all(|c| c.is_ascii_alphanumeric()), "{}", a.name);
        let severity = a.labels.get("severity").map(String::as_str);
        assert!(matches!(severity, Some("critical" | "warning" | "info")), "{}: severity {severity:?}", a.name);
        for key in ["summary", "description"] {
            let text = a.annotations.get(key).unwrap_or_else(|| panic!("{}: no {key}", a.name));
            assert!(!text.trim().is_empty(), "{}: empty {key}", a.name);
            // The tenant labels the expression keeps must be named in the text.
            for label in grouping_labels(&a.expr) {
                assert!(text.contains(&format!("$labels.{label}")), "{}: {key} does not name the {label}", a.name);
            }
        }
        let url = format!("https://github.com/visio/visio-operator/blob/main/docs/runbooks/{}.md", a.name);
        assert_eq!(a.annotations.get("runbook_url"), Some(&url), "{}", a.name);
        let page = std::fs::read_to_string(runbooks.join(format!("{}.md", a.name)))
            .unwrap_or_else(|e| panic!("{}: runbook docs/runbooks/{}.md: {e}", a.name, a.name));
        assert!(page.starts_with(&format!("# {}\n", a.name)), "{}: the runbook's title is not the alert name", a.name);
        for section in ["## Meaning", "## Impact on meetings", "## Confirm", "## Fix", "## Escalate"] {
            assert!(page.contains(section), "{}: runbook lacks {section}", a.name);
        }
    }
    for entry in std::fs::read_dir(&runbooks).expect("docs/runbooks") {
        let file = entry.expect("entry").file_name().to_string_lossy().to_string();
        let Some(stem) = file.strip_suffix(".md") else { continue };
        assert!(stem == "README" || names.contains(stem), "docs/runbooks/{file} has no alert");
    }
}

#[test]
fn the_dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "visio-operator");
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(ids.insert(p["id"].as_u64().expect("numeric id")), "duplicate panel id ({title})");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().expect("x"), g["w"].as_u64().expect("w"));
        assert!(x + w <= 24, "{title} overflows the grid");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: empty query");
            queries += 1;
        }
    }
    assert!(queries >= 30, "{queries} queries");
    let vars: BTreeSet<&str> =
        d["templating"]["list"].as_array().expect("templating").iter().filter_map(|v| v["name"].as_str()).collect();
    for v in ["datasource", "namespace", "cluster", "pool", "policy"] {
        assert!(vars.contains(v), "no ${v} variable");
    }
    // Every section the dashboard promises.
    let rows: Vec<&str> = panels.iter().filter(|p| p["type"] == "row").filter_map(|p| p["title"].as_str()).collect();
    for row in
        ["Operator health", "Tenants", "SFU capacity and participants", "Upgrades and drains", "Captions", "Retention"]
    {
        assert!(rows.contains(&row), "no {row:?} row");
    }
}

/// Metrics of the pods the operator runs (scraped by the chart's PodMonitors), as named in the design
/// contracts (LiveKit server, moshi-server, WhisperLive, LiveKit Agents): the only outside metrics the
/// dashboard may use. Histograms are listed by family; only their `_bucket`, `_sum`, `_count` exist.
const EXTERNAL: &[&str] = &[
    "livekit_room_total",
    "livekit_participant_total",
    "livekit_track_published_total",
    "livekit_track_subscribed_total",
    "livekit_packet_loss_percent",
    "livekit_jitter_us",
    "livekit_rtt_ms",
    "livekit_node_packet_total",
    "livekit_participant_join_total",
    "livekit_connection_total",
    "livekit_quality_score",
    "asr_open_channels",
    "asr_connect",
    "asr_connection_num_steps",
    "whisperlive_connections_active",
    "whisperlive_connections_rejected_total",
    "lk_agents_active_job_count",
    "lk_agents_worker_load",
];
const EXTERNAL_HISTOGRAMS: &[&str] = &[
    "asr_model_step_duration",
    "whisperlive_transcription_latency_seconds",
    "livekit_room_duration_seconds",
    "livekit_session_join_latency_ms",
];

fn known_external(name: &str) -> bool {
    EXTERNAL.contains(&name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|family| EXTERNAL_HISTOGRAMS.contains(&family)))
}

#[test]
fn every_outside_metric_the_dashboard_queries_is_one_the_backends_export() {
    let mut exprs = vec![];
    for p in dashboard()["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap_or_default().to_string());
        }
    }
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| ["livekit_", "asr_", "whisperlive_", "lk_agents_"].map(|p| names_with_prefix(e, p)))
        .flatten()
        .collect();
    assert!(used.len() >= 4, "the tenant pod panels are gone: {used:?}");
    let unknown: Vec<&String> = used.iter().filter(|n| !known_external(n)).collect();
    assert_eq!(unknown, Vec::<&String>::new(), "dashboard.json queries outside metrics no backend exports");
    // The check itself: a typo and a histogram's bare name are refused.
    assert!(!known_external("asr_open_channel") && !known_external("asr_model_step_duration"));
    assert!(known_external("asr_model_step_duration_bucket"));
}
