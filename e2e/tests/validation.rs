//! The apiserver rejects every invalid custom resource of the corpus (`e2e/corpus/invalid.yaml`)
//! with a message that names the field, and refuses changes to immutable fields.

use anyhow::{Context, Result};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{json, Value};
use visio_e2e::{client, merge_patch, namespace, repo};
use visio_operator::api::{CaptionPool, RetentionPolicy, VisioCluster};

fn resource(kind: &str) -> ApiResource {
    match kind {
        "VisioCluster" => ApiResource::erase::<VisioCluster>(&()),
        "CaptionPool" => ApiResource::erase::<CaptionPool>(&()),
        "RetentionPolicy" => ApiResource::erase::<RetentionPolicy>(&()),
        other => panic!("unknown kind {other}"),
    }
}

fn corpus() -> Result<Value> {
    let text = std::fs::read_to_string(repo().join("e2e/corpus/invalid.yaml"))?;
    Ok(serde_norway::from_str(&text)?)
}

fn object(corpus: &Value, kind: &str, name: &str, patch: &Value) -> Value {
    let mut obj = json!({"apiVersion": "visio.io/v1alpha1", "kind": kind, "metadata": {"name": name}});
    merge_patch(&mut obj, &corpus["bases"][kind]);
    merge_patch(&mut obj, patch);
    obj
}

/// Server-side apply, dry run, strict field validation: what `kubectl apply --server-side --dry-run=server` sends.
fn strict_dry_run() -> PatchParams {
    PatchParams::apply("e2e").force().dry_run().validation_strict()
}

#[tokio::test]
async fn valid_bases_are_accepted() -> Result<()> {
    let client = client().await?;
    namespace(&client, "e2e-validation").await?;
    let corpus = corpus()?;
    for kind in ["VisioCluster", "CaptionPool", "RetentionPolicy"] {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "e2e-validation", &resource(kind));
        let obj = object(&corpus, kind, "valid", &json!({}));
        api.patch("valid", &strict_dry_run(), &Patch::Apply(&obj))
            .await
            .with_context(|| format!("valid {kind} was refused"))?;
    }
    Ok(())
}

#[tokio::test]
async fn invalid_resources_are_rejected_naming_the_field() -> Result<()> {
    let client = client().await?;
    namespace(&client, "e2e-validation").await?;
    let corpus = corpus()?;
    let cases = corpus["cases"].as_array().context("cases")?;
    assert!(cases.len() >= 30, "the corpus holds at least 30 invalid resources");
    let mut failures = vec![];
    for case in cases {
        let (kind, name, expect) =
            (case["kind"].as_str().unwrap(), case["name"].as_str().unwrap(), case["expect"].as_str().unwrap());
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "e2e-validation", &resource(kind));
        let obj = object(&corpus, kind, name, &case["patch"]);
        match api.patch(name, &strict_dry_run(), &Patch::Apply(&obj)).await {
            Ok(_) => failures.push(format!("{kind}/{name}: accepted, expected rejection with {expect:?}")),
            Err(kube::Error::Api(s)) => {
                if !s.message.contains(expect) {
                    failures.push(format!("{kind}/{name}: message {:?} lacks {expect:?}", s.message));
                } else if !s.message.contains("spec") && !s.message.contains("metadata.name") {
                    failures.push(format!("{kind}/{name}: message {:?} names no field", s.message));
                }
            }
            Err(e) => failures.push(format!("{kind}/{name}: unexpected error {e}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    Ok(())
}

#[tokio::test]
async fn immutable_fields_cannot_change() -> Result<()> {
    let client = client().await?;
    namespace(&client, "e2e-immutable").await?;
    let corpus = corpus()?;
    let mut failures = vec![];
    for (i, case) in corpus["updates"].as_array().context("updates")?.iter().enumerate() {
        let (kind, expect) = (case["kind"].as_str().unwrap(), case["expect"].as_str().unwrap());
        let name = format!("immutable-{i}");
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "e2e-immutable", &resource(kind));
        let base: DynamicObject = serde_json::from_value(object(&corpus, kind, &name, &json!({})))?;
        let pp = PostParams { field_manager: Some("e2e".into()), ..Default::default() };
        match api.create(&pp, &base).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let changed = object(&corpus, kind, &name, &case["patch"]);
        let res = api.patch(&name, &PatchParams::apply("e2e").force(), &Patch::Apply(&changed)).await;
        match res {
            Ok(_) => failures.push(format!("{kind}: update accepted, expected {expect:?}")),
            Err(kube::Error::Api(s)) if s.message.contains(expect) => {}
            Err(e) => failures.push(format!("{kind}: unexpected error {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
