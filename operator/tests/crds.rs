//! The committed CRDs (`crds/`) are exactly what `visio-operator crds` generates, and every
//! field is described (so `kubectl explain` teaches the API).

use std::path::Path;

use serde_json::Value;

#[test]
fn committed_crds_match_the_generated_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let generated = visio_operator::api::crd_files().expect("CRDs serialise");
    let mut committed: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    committed.sort();
    let mut names: Vec<String> = generated.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(committed, names, "crds/ holds other files than the generated CRDs: run `make crds`");
    for (name, yaml) in generated {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(on_disk == yaml, "crds/{name} differs from the generated CRD: run `make crds` and commit the result");
    }
}

/// How a schema sits in its parent.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    Property,
    Items,
    MapValues,
}

/// Calls `visit` with every schema below `schema` (properties, list items, map values), its path and place.
fn each_schema(schema: &Value, path: &str, visit: &mut dyn FnMut(&Value, &str, Place)) {
    let props = schema.get("properties").and_then(Value::as_object).into_iter().flatten();
    let below = props
        .map(|(name, sub)| (sub, format!("{path}.{name}"), Place::Property))
        .chain(schema.get("items").map(|i| (i, format!("{path}[]"), Place::Items)))
        .chain(
            schema
                .get("additionalProperties")
                .filter(|v| v.is_object())
                .map(|v| (v, format!("{path}{{}}"), Place::MapValues)),
        );
    for (sub, p, place) in below {
        visit(sub, &p, place);
        each_schema(sub, &p, visit);
    }
}

/// Walks a schema and collects the paths of properties without a description.
fn undescribed(schema: &Value, path: &str, out: &mut Vec<String>) {
    each_schema(schema, path, &mut |sub, p, place| {
        if place == Place::Property && sub.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
            out.push(p.to_string());
        }
    });
}

#[test]
fn every_field_of_spec_and_status_is_described() {
    for crd in visio_operator::api::crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let root = &schema["openAPIV3Schema"]["properties"];
        let mut missing = vec![];
        for part in ["spec", "status"] {
            undescribed(&root[part], &format!("{kind}.{part}"), &mut missing);
        }
        // Fields of upstream Kubernetes types (tolerations, affinity, resources) carry upstream's own
        // descriptions; anything missing here is ours.
        assert!(missing.is_empty(), "fields without a description: {missing:#?}");
    }
}

#[test]
fn crds_are_namespaced_with_status_and_short_names() {
    let expected = [("VisioCluster", "vc"), ("CaptionPool", "cp"), ("RetentionPolicy", "rp")];
    for (crd, (kind, short)) in visio_operator::api::crds().iter().zip(expected) {
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.group, "visio.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&[short.to_string()][..]));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{kind} has a status subresource");
        assert!(v.additional_printer_columns.as_ref().is_some_and(|c| c.len() >= 5), "{kind} has printer columns");
    }
}

/// The string schemas below `schema`: path, the patterns a value must match (its own and those of `allOf`),
/// its `enum` if any, its `default` if any.
type StringSchema = (String, Vec<String>, bool, Option<String>);

fn strings(schema: &Value, path: &str, out: &mut Vec<StringSchema>) {
    each_schema(schema, path, &mut |sub, p, _| {
        let is_string = sub.get("type").and_then(Value::as_str) == Some("string")
            || sub.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
        if !is_string {
            return;
        }
        let own = sub.get("pattern").and_then(Value::as_str).map(String::from);
        let all_of = sub.get("allOf").and_then(Value::as_array).into_iter().flatten();
        let patterns =
            own.into_iter().chain(all_of.filter_map(|s| s.get("pattern").and_then(Value::as_str).map(String::from)));
        let default = sub.get("default").and_then(Value::as_str).map(String::from);
        out.push((p.to_string(), patterns.collect(), sub.get("enum").is_some(), default));
    });
}

/// Issue #19: no string a tenant writes in a `spec` (ours, upstream Kubernetes types', map values) accepts
/// an ASCII control character, read with the RE2 syntax the apiserver uses; and every default still
/// matches every pattern of its field (the apiserver refuses a CRD whose default does not).
#[test]
fn no_string_of_a_spec_accepts_a_control_character() {
    for crd in visio_operator::api::crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let mut found = vec![];
        strings(&schema["openAPIV3Schema"]["properties"]["spec"], "spec", &mut found);
        assert!(found.len() > 10, "{kind}: {} strings", found.len());
        let mut open = vec![];
        for (path, patterns, is_enum, default) in &found {
            let patterns: Vec<regex::Regex> =
                patterns.iter().map(|p| regex::Regex::new(p).unwrap_or_else(|e| panic!("{path}: {e}"))).collect();
            if let Some(value) = default {
                assert!(patterns.iter().all(|p| p.is_match(value)), "{kind} {path}: default {value:?}");
            }
            if *is_enum {
                continue;
            }
            for c in (0u8..0x20).chain([0x7f]).map(char::from) {
                if patterns.iter().all(|p| p.is_match(&format!("a{c}a"))) {
                    open.push(format!("{path} accepts {c:?}"));
                }
            }
        }
        assert!(open.is_empty(), "{kind}: {open:#?}");
    }
    // What a tenant writes passes.
    let plain = regex::Regex::new(visio_operator::api::NO_CONTROL_CHARACTERS).unwrap();
    for ok in ["", "Ministère de l'Intérieur", "registry.visio.local/kyutai/moshi-server:0.6.4", "/models/stt «fr»"]
    {
        assert!(plain.is_match(ok), "{ok:?}");
    }
}
