//! The reconcile test seam: a scripted apiserver behind a real kube [`Client`] (a tower service, no
//! socket), and a [`Context`] over caches the test fills. A reconcile runs in milliseconds, and its
//! writes (method, path, body) are read back in order.
//!
//! The script: a list answers empty, a get answers what was written there (else 404), a write answers
//! the object it was sent (a status write: the seeded object with that status). Secret
//! watches are refused (403), so the per-namespace Secret cache stays unlisted and Secrets are read
//! live, as on a namespace just bound.

use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use serde_json::{json, Value};

use super::children::{self, Writers};
use super::{secrets, Config, Context};
use crate::telemetry::Metrics;

/// One request the reconcile sent.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

/// The requests seen so far.
#[derive(Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<Call>>>, Arc<Mutex<std::collections::HashMap<String, Value>>>);

impl Calls {
    /// Every request, in order.
    pub fn all(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }

    /// The writes (not Events), in order.
    pub fn writes(&self) -> Vec<Call> {
        self.all().into_iter().filter(|c| c.method != Method::GET && !c.path.contains("/events")).collect()
    }

    /// Makes the apiserver hold `object` at `path` (`/apis/<group>/<version>/namespaces/<ns>/<plural>/<name>`):
    /// a status write there answers the object with the status sent.
    pub fn seed(&self, path: &str, object: Value) {
        self.1.lock().unwrap().insert(path.to_string(), object);
    }

    /// Forgets what was seen.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

fn answer(method: &Method, path: &str, query: &str, body: &Value) -> (StatusCode, Value) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // .../namespaces/<ns>/<resource>[/<name>[/<subresource>]]
    let after_ns = segments.iter().position(|s| *s == "namespaces").map(|i| segments.len() - i - 2);
    let secrets_watch = path.ends_with("/secrets") && (query.contains("labelSelector") || query.contains("watch"));
    match *method {
        _ if secrets_watch => (
            StatusCode::FORBIDDEN,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "Forbidden", "code": 403, "message": "secrets is forbidden"}),
        ),
        Method::GET if after_ns == Some(1) || after_ns.is_none() => (
            StatusCode::OK,
            json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}),
        ),
        Method::GET => (
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": "not found"}),
        ),
        Method::POST => (StatusCode::CREATED, stored(body, None)),
        _ => (
            StatusCode::OK,
            stored(body, after_ns.filter(|n| *n >= 2).map(|_| segments[segments.len() - after_ns.unwrap() + 1])),
        ),
    }
}

/// `body` as the apiserver would store it: with metadata (a status patch sends none), and a version.
fn stored(body: &Value, name: Option<&str>) -> Value {
    let mut out = body.clone();
    if let Some(o) = out.as_object_mut() {
        let meta = o.entry("metadata").or_insert_with(|| json!({}));
        if let (Some(m), Some(name)) = (meta.as_object_mut(), name) {
            m.entry("name").or_insert_with(|| json!(name));
        }
        meta["resourceVersion"] = json!("2");
    }
    out
}

/// A kube client whose every request is answered by the script above and recorded.
pub fn client() -> (Client, Calls) {
    let calls = Calls::default();
    let seen = calls.clone();
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (path, query) = (parts.uri.path().to_string(), parts.uri.query().unwrap_or("").to_string());
            let mut objects = seen.1.lock().unwrap();
            let (status, answer) = match (&parts.method, path.strip_suffix("/status")) {
                (&Method::PATCH, Some(p)) if objects.contains_key(p) => {
                    let object = objects.get_mut(p).unwrap();
                    object["status"] = body["status"].clone();
                    (StatusCode::OK, object.clone())
                }
                (&Method::GET, _) if objects.contains_key(&path) => (StatusCode::OK, objects[&path].clone()),
                _ => answer(&parts.method, &path, &query, &body),
            };
            // What was written is there to read back.
            if status.is_success() {
                match parts.method {
                    Method::PATCH => drop(objects.insert(path.clone(), answer.clone())),
                    Method::POST => {
                        let name = answer.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                        objects.insert(format!("{path}/{name}"), answer.clone());
                    }
                    _ => {}
                }
            }
            drop(objects);
            seen.0.lock().unwrap().push(Call { method: parts.method, path, body });
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(answer.to_string())))
                    .unwrap(),
            )
        }
    });
    (Client::new(service, "default"), calls)
}

/// A context over the scripted client, with every cache listed (empty) and writable by the test.
pub fn context() -> (Context, Writers, Calls) {
    let (client, calls) = client();
    let (stores, mut writers) = children::stores();
    writers.ready();
    let reporter = Reporter { controller: "visio-operator".into(), instance: Some("test".into()) };
    let config = Config {
        agent_image: "visio-operator:test".into(),
        instance: "test".into(),
        max_concurrent_reconciles: 0,
        retention: Default::default(),
        platform: None,
    };
    let ctx = Context::new(
        client.clone(),
        Arc::new(Metrics::new()),
        Recorder::new(client.clone(), reporter),
        config,
        stores,
        secrets::SecretCaches::new(client),
        None,
    );
    (ctx, writers, calls)
}
