//! The VisioCluster reconcile, whole, against the scripted apiserver (`runtime::testing`): its writes
//! in step order, and none on a second pass once the caches show them.

use hyper::Method;
use kube::runtime::controller::Action;
use serde_json::Value;

use super::reconcile_stack;
use crate::builders::testing::test_cluster;
use crate::runtime::children::Child;
use crate::runtime::testing::{context, Call};

fn kind_of(c: &Call) -> String {
    c.body.get("kind").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn name_of(c: &Call) -> String {
    c.body.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_first_reconcile_writes_children_then_pods_then_status_and_a_second_writes_nothing() {
    let (ctx, mut writers, calls) = context();
    let mut vc = test_cluster();
    let path = format!(
        "/apis/visio.io/v1alpha1/namespaces/{}/visioclusters/{}",
        vc.metadata.namespace.clone().unwrap(),
        vc.metadata.name.clone().unwrap()
    );
    calls.seed(&path, serde_json::to_value(&vc).unwrap());
    let action = reconcile_stack(&vc, &ctx).await.expect("reconcile");
    assert_ne!(action, Action::await_change());
    let writes = calls.writes();

    // Children first, in the ChildSet's order (which the apply step's own test ties to the stack)...
    let stack = crate::builders::stack::build_stack(
        &vc,
        &super::validate::validate(&vc, dereferenced(&calls)).unwrap().credentials,
        &ctx.config.agent_image,
    )
    .unwrap();
    let want: Vec<(String, String)> = super::apply::children(&vc, &stack, None)
        .unwrap()
        .names()
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    let children: Vec<(String, String)> = writes.iter().take(want.len()).map(|c| (kind_of(c), name_of(c))).collect();
    assert_eq!(children, want, "children applied in order");
    assert!(writes.iter().take(want.len()).all(|c| c.method == Method::PATCH), "server-side applies");
    // ...then the SFU pods the planner asked for (spec.sfu.replicas.min), then one status write.
    let rest = &writes[want.len()..];
    let pods: Vec<&Call> = rest.iter().filter(|c| c.method == Method::POST && c.path.ends_with("/pods")).collect();
    assert_eq!(pods.len(), vc.spec.sfu.replicas.min as usize, "{rest:#?}");
    let status: Vec<&Call> = rest.iter().filter(|c| c.path.ends_with("/status")).collect();
    assert_eq!(status.len(), 1);
    assert_eq!(rest.len(), pods.len() + 1, "nothing else: {rest:#?}");
    assert!(rest.iter().position(|c| c.path.ends_with("/status")) > rest.iter().position(|c| c.method == Method::POST));

    // The caches lag behind: the children and pods written are not in them yet. The pods are not
    // created again (the children's applies are skipped as in flight, see `recent`).
    calls.clear();
    reconcile_stack(&vc, &ctx).await.expect("a reconcile before the caches catch up");
    let creates: Vec<Call> = calls.writes().into_iter().filter(|c| c.method == Method::POST).collect();
    assert!(creates.is_empty(), "pods created again: {creates:#?}");

    // The caches now show what was written (as the watches would): the same reconcile writes nothing.
    for c in writes.iter().take(want.len()) {
        writers.cache(Child::from_json(&kind_of(c), c.body.clone()).expect("a child kind"));
    }
    for c in &pods {
        let mut pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(c.body.clone()).unwrap();
        pod.metadata.uid = Some(format!("uid-{}", pod.metadata.name.clone().unwrap_or_default()));
        // Just created, as the apiserver stamps it (a pod Pending since the epoch would be replaced).
        pod.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        writers.cache_pod(pod);
    }
    vc.status = serde_json::from_value(status[0].body["status"].clone()).unwrap();
    calls.clear();
    reconcile_stack(&vc, &ctx).await.expect("second reconcile");
    let again: Vec<(Method, String)> = calls.writes().into_iter().map(|c| (c.method, c.path)).collect();
    assert_eq!(again, vec![], "a reconcile that changes nothing writes nothing");
}

/// The credentials the first reconcile generated, as it wrote them.
fn dereferenced(calls: &crate::runtime::testing::Calls) -> super::dereference::Dereferenced {
    let secret = calls
        .writes()
        .into_iter()
        .find(|c| name_of(c).ends_with("-credentials"))
        .expect("the credentials Secret was written");
    let data = |k: &str| -> String {
        let b64 = secret.body.pointer(&format!("/data/{k}")).and_then(Value::as_str).unwrap_or_default();
        use base64::Engine;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
    };
    super::dereference::Dereferenced {
        credentials: crate::builders::stack::Credentials {
            api_key: data("apiKey"),
            api_secret: data("apiSecret"),
            redis_password: data("redisPassword"),
        },
    }
}
