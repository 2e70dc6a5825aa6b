use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use super::*;
use crate::api::retentionpolicy::LegalHoldSpec;
use crate::api::visioplatform::{HoldTag, PlatformRetention};
use crate::api::{CaptionPool, RetentionPolicy, VisioCluster};

/// `e2e/corpus/platform.yaml`, the cases the admission policy decides on the real apiserver.
fn corpus() -> Value {
    let text = include_str!("../../../e2e/corpus/platform.yaml");
    serde_norway::from_str(text).expect("the corpus parses")
}

/// The case's object as the apiserver would store it (its name, the schema's defaults through serde's).
fn decide(
    platform: &VisioPlatformSpec,
    namespace: &str,
    kind: &str,
    name: &str,
    object: Value,
) -> Result<(), Violation> {
    let mut object = object;
    json_patch::merge(
        &mut object,
        &serde_json::json!({"apiVersion": "visio.io/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": namespace}}),
    );
    match kind {
        "VisioCluster" => {
            let vc: VisioCluster = serde_json::from_value(object).expect("a VisioCluster");
            check_cluster(platform, namespace, &vc.spec)
        }
        "CaptionPool" => {
            let cp: CaptionPool = serde_json::from_value(object).expect("a CaptionPool");
            check_pool(platform, namespace, &cp.spec)
        }
        "RetentionPolicy" => {
            let rp: RetentionPolicy = serde_json::from_value(object).expect("a RetentionPolicy");
            check_policy(platform, namespace, &rp.spec)
        }
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn the_corpus_is_decided_as_the_admission_policies_decide() {
    let corpus = corpus();
    let platform: VisioPlatformSpec = serde_json::from_value(corpus["platform"].clone()).expect("the platform");
    let mut refused = 0;
    for case in corpus["cases"].as_array().expect("cases") {
        let kind = case["kind"].as_str().unwrap();
        let name = case["name"].as_str().unwrap();
        let ns_key = case["namespace"].as_str().unwrap_or("tenant");
        let namespace = corpus["namespaces"][ns_key].as_str().unwrap();
        let mut object = corpus["bases"][kind].clone();
        json_patch::merge(&mut object, &case["patch"]);
        let decided = decide(&platform, namespace, kind, name, object);
        match case["expect"].as_str() {
            None => assert_eq!(decided, Ok(()), "{name} is allowed"),
            Some(expect) => {
                let e = decided.expect_err(name);
                assert!(e.to_string().contains(expect), "{name}: {e} names {expect}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 20, "the corpus attacks every rule: {refused}");
}

#[test]
fn a_platform_without_rules_allows_everything_and_one_without_classes_has_no_tenant_check() {
    let corpus = corpus();
    let empty = VisioPlatformSpec::default();
    for case in corpus["cases"].as_array().unwrap() {
        let kind = case["kind"].as_str().unwrap();
        let mut object = corpus["bases"][kind].clone();
        json_patch::merge(&mut object, &case["patch"]);
        assert_eq!(decide(&empty, "anywhere", kind, "x", object), Ok(()), "{}", case["name"]);
    }
}

#[test]
fn the_first_class_listing_a_namespace_is_its_class_and_a_star_takes_the_rest() {
    let class = |name: &str, namespaces: &[&str]| TenantClass {
        name: name.into(),
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        ..TenantClass::default()
    };
    let p = VisioPlatformSpec {
        tenant_classes: Some(vec![
            class("armees", &["minarmees"]),
            class("rest", &["*"]),
            class("never", &["minarmees"]),
        ]),
        ..VisioPlatformSpec::default()
    };
    assert_eq!(class_of(&p, "minarmees").map(|c| c.name.as_str()), Some("armees"));
    assert_eq!(class_of(&p, "minculture").map(|c| c.name.as_str()), Some("rest"));
    let closed = VisioPlatformSpec { tenant_classes: Some(vec![class("armees", &["minarmees"])]), ..p.clone() };
    assert_eq!(class_of(&closed, "minculture"), None);
}

#[test]
fn platform_holds_are_added_to_the_policys_own_and_a_held_namespace_deletes_nothing() {
    let own = LegalHoldSpec { tag_key: "mine".into(), tag_value: "yes".into(), object_lock: false };
    let none = holds(None, "ns", &own);
    assert_eq!(none.tags, vec![("mine".to_string(), "yes".to_string())]);
    assert!(!none.object_lock && !none.namespace_held);
    let p = VisioPlatformSpec {
        retention: Some(PlatformRetention {
            hold_tags: vec![
                HoldTag { key: "cnil-inquiry".into(), value: "2026-17".into() },
                HoldTag { key: "mine".into(), value: "yes".into() },
            ],
            object_lock: true,
            held_namespaces: vec!["ns".into()],
        }),
        ..VisioPlatformSpec::default()
    };
    let h = holds(Some(&p), "ns", &own);
    assert_eq!(h.tags.len(), 2, "the policy's tag and the platform's, once each: {:?}", h.tags);
    assert!(h.tags.contains(&("cnil-inquiry".to_string(), "2026-17".to_string())));
    assert!(h.object_lock && h.namespace_held);
    assert!(!holds(Some(&p), "other", &own).namespace_held);
}

fn toleration() -> impl Strategy<Value = Toleration> {
    (
        prop::option::of(prop::sample::select(vec!["a", "b", "node-role.kubernetes.io/control-plane"])),
        // Always set: an unset operator reads as Equal, which `contains` below would not see.
        prop::sample::select(vec!["Equal", "Exists"]).prop_map(Some),
        prop::option::of(prop::sample::select(vec!["x", "y"])),
    )
        .prop_map(|(key, operator, value)| Toleration {
            key: key.map(String::from),
            operator: operator.map(String::from),
            value: value.map(String::from),
            ..Toleration::default()
        })
}

fn selector() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(vec!["pool", "zone", "gpu"]).prop_map(String::from),
        prop::sample::select(vec!["1", "2"]).prop_map(String::from),
        0..3,
    )
}

proptest! {
    /// Narrowing never leaves the pool: a scheduling that fits a pool keeps fitting when it adds labels or
    /// drops tolerations, and one that carries a toleration the pool lacks never fits.
    #[test]
    fn a_tenant_may_only_narrow_a_node_pool(
        pool_sel in selector(), pool_tols in prop::collection::vec(toleration(), 0..3),
        extra in selector(), tenant_tols in prop::collection::vec(toleration(), 0..3),
    ) {
        let pool = NodePool { name: "p".into(), node_selector: pool_sel.clone(), tolerations: pool_tols.clone() };
        let mut node_selector = extra.clone();
        node_selector.extend(pool_sel.clone());
        let narrowed = Scheduling { node_selector, tolerations: pool_tols.iter().take(1).cloned().collect(), ..Scheduling::default() };
        prop_assert!(fits_pool(&narrowed, &pool, "ns"));
        let s = Scheduling { node_selector: extra, tolerations: tenant_tols.clone(), ..Scheduling::default() };
        if tenant_tols.iter().any(|t| !pool_tols.contains(t)) {
            prop_assert!(!fits_pool(&s, &pool, "ns"));
        }
        if pool_sel.iter().any(|(k, v)| s.node_selector.get(k) != Some(v)) {
            prop_assert!(!fits_pool(&s, &pool, "ns"));
        }
    }
}

/// The chart's default VisioPlatform keeps manifests/examples working: every example resource passes it.
#[test]
fn the_charts_default_platform_allows_every_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let install = std::fs::read_to_string(root.join("manifests/install.yaml")).expect("install.yaml");
    let platform: crate::api::VisioPlatform = install
        .split("\n---\n")
        .find(|d| d.contains("\nkind: VisioPlatform\n"))
        .map(|d| serde_norway::from_str(d).expect("the VisioPlatform parses"))
        .expect("install.yaml ships a VisioPlatform");
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("manifests/examples")).expect("examples") {
        let text = std::fs::read_to_string(entry.expect("an entry").path()).expect("an example");
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).expect("YAML");
            let (Some(kind), Some(ns)) = (v["kind"].as_str(), v["metadata"]["namespace"].as_str()) else { continue };
            let name = v["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if ["VisioCluster", "CaptionPool", "RetentionPolicy"].contains(&kind) {
                assert_eq!(decide(&platform.spec, ns, kind, &name, v.clone()), Ok(()), "{kind} {ns}/{name}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 6, "the examples' custom resources: {checked}");
}
