//! Issue #10: the builders' output, for a sample of arbitrary specs the API accepts, is accepted by a
//! real apiserver (server-side dry run: schema, defaulting, validation, admission).
//!
//! The specs come from the same proptest strategy as the builders' property test
//! (`visio_operator::builders::testing::arb_spec`), with a fixed seed. A spec the CRD itself refuses
//! (its CEL rules) is skipped, as the API would never hand it to the operator. Every object the
//! builders make for an accepted spec must pass `create --dry-run=server`; in pod network mode the SFU
//! pod must also pass in a namespace that enforces the `restricted` Pod Security Standard.

use anyhow::{Context, Result};
use kube::api::{DynamicObject, PostParams};
use kube::Client;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};
use visio_e2e::{client, dynamic_api, kubectl, namespace};
use visio_operator::api::visiocluster::NetworkMode;
use visio_operator::builders::stack::{build_stack, Credentials};
use visio_operator::builders::testing::{arb_spec, cluster_with};

const NS: &str = "e2e-builders";
const RESTRICTED_NS: &str = "e2e-builders-restricted";
/// Specs accepted by the CRD to send through the builders (drawn from at most `MAX_DRAWS`).
const SAMPLE: usize = 30;
const MAX_DRAWS: usize = 300;

async fn dry_run(client: &Client, obj: Value) -> Result<()> {
    let api = dynamic_api(client, &obj)?;
    let what = format!(
        "{} {}",
        obj["kind"],
        obj["metadata"]["name"].as_str().or(obj["metadata"]["generateName"].as_str()).unwrap_or("?")
    );
    let o: DynamicObject = serde_json::from_value(obj)?;
    api.create(&PostParams { dry_run: true, ..PostParams::default() }, &o).await.with_context(|| what)?;
    Ok(())
}

fn with_type<T: serde::Serialize>(api_version: &str, kind: &str, obj: &T) -> Result<Value> {
    let mut v = serde_json::to_value(obj)?;
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}

#[tokio::test]
async fn builder_output_for_a_sample_of_specs_passes_server_side_dry_run() -> Result<()> {
    let client = client().await?;
    namespace(&client, NS).await?;
    namespace(&client, RESTRICTED_NS).await?;
    kubectl(
        &["label", "namespace", RESTRICTED_NS, "--overwrite", "pod-security.kubernetes.io/enforce=restricted"],
        None,
    )?;
    let creds = Credentials {
        api_key: "APIsample0001".into(),
        api_secret: "sample-secret-0123456789abcdef0123456789".into(),
        redis_password: "sample-redis-password-0123456789".into(),
    };
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let (mut accepted, mut refused_by_crd, mut refused_by_builders, mut objects, mut restricted) = (0, 0, 0, 0, 0);
    let mut refusals: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for i in 0..MAX_DRAWS {
        if accepted == SAMPLE {
            break;
        }
        let patch = arb_spec().new_tree(&mut runner).map_err(|e| anyhow::anyhow!("{e}"))?.current();
        let mut vc = cluster_with(patch);
        vc.metadata.namespace = Some(NS.into());
        vc.metadata.name = Some(format!("sample-{i}"));
        // What the API would accept: the CRD's schema and CEL rules decide.
        let mut as_object = with_type("visio.io/v1alpha1", "VisioCluster", &vc)?;
        as_object["metadata"] = json!({"name": format!("sample-{i}"), "namespace": NS});
        as_object.as_object_mut().map(|o| o.remove("status"));
        if let Err(e) = dry_run(&client, as_object).await {
            refused_by_crd += 1;
            // The CRD's message, without the object's name: which rule refused it.
            let why = format!("{:#}", e.root_cause());
            let why = why
                .split_once("VisioCluster.visio.io \"")
                .map_or(why.clone(), |(_, r)| r.split_once(": ").map_or(r, |(_, m)| m).to_string());
            *refusals.entry(why.chars().take(120).collect()).or_insert(0) += 1;
            continue;
        }
        accepted += 1;
        let stack = match build_stack(&vc, &creds, "visio-operator:e2e") {
            Ok(s) => s,
            Err(e) => {
                // Documented refusals (a port clash the CRD cannot see) become a condition, not objects.
                anyhow::ensure!(matches!(e.label(), "port_conflict" | "unsupported"), "spec {i}: {e}");
                refused_by_builders += 1;
                continue;
            }
        };
        let mut docs = Vec::new();
        if let Some(s) = &stack.credentials_secret {
            docs.push(with_type("v1", "Secret", s)?);
        }
        docs.push(with_type("v1", "Secret", &stack.config_secret)?);
        docs.push(with_type("rbac.authorization.k8s.io/v1", "Role", &stack.agent.role)?);
        docs.push(with_type("rbac.authorization.k8s.io/v1", "RoleBinding", &stack.agent.role_binding)?);
        if let Some((d, s)) = &stack.redis {
            docs.push(with_type("apps/v1", "Deployment", d)?);
            docs.push(with_type("v1", "Service", s)?);
        }
        for s in &stack.services {
            docs.push(with_type("v1", "Service", s)?);
        }
        docs.push(with_type("policy/v1", "PodDisruptionBudget", &stack.pdb)?);
        if let Some(ing) = &stack.ingress {
            docs.push(with_type("networking.k8s.io/v1", "Ingress", ing)?);
        }
        for p in &stack.network_policies {
            docs.push(with_type("networking.k8s.io/v1", "NetworkPolicy", p)?);
        }
        if let Some(b) = &stack.admin_binding {
            docs.push(with_type("rbac.authorization.k8s.io/v1", "RoleBinding", b)?);
        }
        // The ServiceAccount admission plugin wants the pod's ServiceAccount to exist: it is created for
        // real (so it is not dry-run with the rest).
        let sa = with_type("v1", "ServiceAccount", &stack.agent.service_account)?;
        for ns in [NS, RESTRICTED_NS] {
            let mut sa = sa.clone();
            sa["metadata"] = json!({"name": sa["metadata"]["name"], "namespace": ns});
            let api = dynamic_api(&client, &sa)?;
            match api.create(&PostParams::default(), &serde_json::from_value(sa)?).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let pod = with_type("v1", "Pod", &stack.sfu.pod)?;
        docs.push(pod.clone());
        for doc in docs {
            objects += 1;
            dry_run(&client, doc).await.with_context(|| format!("spec {i}: {:?}", vc.spec))?;
        }
        if vc.spec.sfu.network.mode == NetworkMode::PodNetwork {
            let mut pod = pod;
            pod["metadata"]["namespace"] = json!(RESTRICTED_NS);
            dry_run(&client, pod)
                .await
                .with_context(|| format!("spec {i} under the restricted Pod Security Standard"))?;
            restricted += 1;
        }
    }
    eprintln!("=== CRD refusals of the drawn specs: {refusals:#?}");
    eprintln!(
        "=== builders against the apiserver: {} specs drawn, {accepted} accepted by the CRD ({refused_by_crd} refused by it), \
         {refused_by_builders} refused by the builders (documented), {objects} objects passed dry-run, \
         {restricted} pod-network SFU pods passed the restricted Pod Security Standard",
        accepted + refused_by_crd
    );
    anyhow::ensure!(accepted == SAMPLE, "only {accepted} of {MAX_DRAWS} specs accepted by the CRD: {refusals:#?}");
    anyhow::ensure!(restricted > 0, "the sample holds no pod-network spec");
    Ok(())
}
