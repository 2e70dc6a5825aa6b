//! `kubectl visio report`: one tenant's support bundle as a .tar.gz, safe to attach to a ticket.
//!
//! What goes in: the namespace's VisioClusters, CaptionPools and RetentionPolicies, its Events, its pods,
//! Services, ConfigMaps (the operator's generated config that is not secret), its Secrets with every value
//! replaced by `<redacted N bytes>`, the LiveKit config the operator generated with its API secrets and
//! passwords redacted, and the operator's log lines about the namespace when the caller may read the
//! operator pod's log (a tenant admin may not: then `NOTES.txt` says it was skipped). No secret value
//! leaves the cluster: redaction happens before anything is written, and literal environment values of
//! pods are redacted too (a tenant may put a password there).

use std::io::Write;

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, Service};
use kube::api::{Api, ListParams, LogParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::Value;
use visio_operator::api::{CaptionPool, RetentionPolicy, VisioCluster};
use visio_operator::builders::labels::{Component, COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
use visio_operator::builders::livekit_config::CONFIG_FILE;

/// How many of the operator's last log lines are searched for the tenant's namespace.
const LOG_TAIL_LINES: i64 = 20_000;

/// What replaces a secret value.
pub fn redacted(len: usize) -> String {
    format!("<redacted {len} bytes>")
}

/// Map keys whose values are secret in a config file, whatever the file (LiveKit's `keys` map holds
/// API key → API secret; `redis.password`, TURN and webhook secrets...).
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "credential", "private"].iter().any(|w| k.contains(w))
}

/// Redacts a parsed config: LiveKit's `keys` map (API key → API secret: the key names are stored in the
/// credentials Secret too, so they become `<api key N>`), and every value whose key names a secret
/// ([`secret_key`]), at any depth.
pub fn redact_config(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if let (true, Value::Object(keys)) = (k == "keys", &mut *child) {
                    let renamed = std::mem::take(keys).into_iter().enumerate().map(|(i, (_, mut secret))| {
                        redact_all(&mut secret);
                        (format!("<api key {}>", i + 1), secret)
                    });
                    *keys = renamed.collect();
                } else if k == "keys" || secret_key(k) {
                    redact_all(child);
                } else {
                    redact_config(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_config),
        _ => {}
    }
}

fn redact_all(v: &mut Value) {
    match v {
        Value::Object(map) => map.values_mut().for_each(redact_all),
        Value::Array(items) => items.iter_mut().for_each(redact_all),
        Value::Null => {}
        other => {
            let len = match &*other {
                Value::String(s) => s.len(),
                o => o.to_string().len(),
            };
            *other = Value::String(redacted(len));
        }
    }
}

/// A Secret as the bundle shows it: metadata, type and keys, every value `<redacted N bytes>`.
pub fn redact_secret(s: &Secret) -> Value {
    let mut meta = s.metadata.clone();
    meta.managed_fields = None;
    // `kubectl apply` keeps the whole object, values included, in this annotation.
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    let data: serde_json::Map<String, Value> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), Value::String(redacted(v.0.len()))))
        .chain(s.string_data.iter().flatten().map(|(k, v)| (k.clone(), Value::String(redacted(v.len())))))
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": s.type_, "data": data})
}

/// The LiveKit config in the operator's config Secret, its secrets redacted; `None` if the Secret is not
/// the operator's LiveKit config. An unreadable config is left out whole.
pub fn redacted_livekit_config(s: &Secret) -> Option<String> {
    if s.labels().get(COMPONENT_LABEL).map(String::as_str) != Some(Component::Config.as_str()) {
        return None;
    }
    let raw = s.data.as_ref()?.get(CONFIG_FILE)?;
    let text = std::str::from_utf8(&raw.0).ok();
    let parsed: Option<Value> = text.and_then(|t| serde_norway::from_str(t).ok());
    Some(match parsed {
        Some(mut v) => {
            redact_config(&mut v);
            serde_norway::to_string(&v).unwrap_or_default()
        }
        None => format!("# {CONFIG_FILE} could not be parsed: left out whole ({})\n", redacted(raw.0.len())),
    })
}

/// A pod for the bundle: literal env values redacted (only references to Secrets are safe to show).
pub fn redact_pod(p: &Pod) -> Value {
    let mut p = p.clone();
    p.metadata.managed_fields = None;
    if let Some(spec) = p.spec.as_mut() {
        let containers = spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten());
        for c in containers {
            for e in c.env.iter_mut().flatten() {
                if let Some(v) = e.value.as_mut() {
                    *v = redacted(v.len());
                }
            }
        }
    }
    serde_json::to_value(p).unwrap_or_default()
}

fn strip<K: Resource + Serialize + Clone>(items: &[K]) -> Vec<Value> {
    items
        .iter()
        .map(|o| {
            let mut o = o.clone();
            o.meta_mut().managed_fields = None;
            if let Some(a) = o.meta_mut().annotations.as_mut() {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
            serde_json::to_value(o).unwrap_or_default()
        })
        .collect()
}

fn yaml(items: &[Value]) -> Result<Vec<u8>> {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    Ok(serde_norway::to_string(&list)?.into_bytes())
}

/// The bundle's files, in order (name, content).
pub type Files = Vec<(String, Vec<u8>)>;

/// Writes `files` as a gzip'd tar under the folder `root`.
pub fn archive(root: &str, files: &Files, out: impl Write) -> Result<()> {
    let mut tar = tar::Builder::new(GzEncoder::new(out, flate2::Compression::default()));
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, format!("{root}/{name}"), content.as_slice())?;
    }
    tar.into_inner()?.finish()?.flush()?;
    Ok(())
}

async fn list<K>(client: &Client, ns: &str, notes: &mut Vec<String>, what: &str) -> Vec<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match Api::<K>::namespaced(client.clone(), ns).list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            notes.push(format!("{what}: not collected ({e})"));
            vec![]
        }
    }
}

/// The operator's log lines that name the namespace, from the operator pods the caller may read.
async fn operator_log(client: &Client, ns: &str, notes: &mut Vec<String>) -> Option<Vec<u8>> {
    let selector = "app.kubernetes.io/name=visio-operator,app.kubernetes.io/component=operator";
    let pods = match Api::<Pod>::all(client.clone()).list(&ListParams::default().labels(selector)).await {
        Ok(l) => l.items,
        Err(e) => {
            notes.push(format!(
                "operator log: skipped, the operator pods cannot be listed with these credentials ({e})"
            ));
            return None;
        }
    };
    if pods.is_empty() {
        notes.push(format!("operator log: skipped, no operator pod ({selector}) found through the apiserver"));
        return None;
    }
    let mut out = Vec::new();
    for p in pods {
        let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
        let lp =
            LogParams { container: Some("operator".into()), tail_lines: Some(LOG_TAIL_LINES), ..LogParams::default() };
        match api.logs(&p.name_any(), &lp).await {
            Ok(text) => {
                let _ = writeln!(
                    out,
                    "# pod {}/{}: lines naming {ns} among the last {LOG_TAIL_LINES}",
                    p.namespace().unwrap_or_default(),
                    p.name_any()
                );
                for line in text.lines().filter(|l| l.contains(ns)) {
                    let _ = writeln!(out, "{line}");
                }
            }
            Err(e) => notes.push(format!("operator log of {}: skipped ({e})", p.name_any())),
        }
    }
    Some(out)
}

/// Collects the bundle of namespace `ns`.
pub async fn collect(client: &Client, ns: &str) -> Result<Files> {
    let mut notes = Vec::new();
    let mut files: Files = Vec::new();
    let vcs: Vec<VisioCluster> = list(client, ns, &mut notes, "VisioClusters").await;
    let pools: Vec<CaptionPool> = list(client, ns, &mut notes, "CaptionPools").await;
    let policies: Vec<RetentionPolicy> = list(client, ns, &mut notes, "RetentionPolicies").await;
    let events: Vec<Event> = list(client, ns, &mut notes, "Events").await;
    let pods: Vec<Pod> = list(client, ns, &mut notes, "Pods").await;
    let services: Vec<Service> = list(client, ns, &mut notes, "Services").await;
    let config_maps: Vec<ConfigMap> = list(client, ns, &mut notes, "ConfigMaps").await;
    let secrets: Vec<Secret> = list(client, ns, &mut notes, "Secrets").await;

    files.push(("visioclusters.yaml".into(), yaml(&strip(&vcs))?));
    files.push(("captionpools.yaml".into(), yaml(&strip(&pools))?));
    files.push(("retentionpolicies.yaml".into(), yaml(&strip(&policies))?));
    files.push(("events.yaml".into(), yaml(&strip(&events))?));
    files.push(("pods.yaml".into(), yaml(&pods.iter().map(redact_pod).collect::<Vec<_>>())?));
    files.push(("services.yaml".into(), yaml(&strip(&services))?));
    let ours = |c: &&ConfigMap| c.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY);
    files
        .push(("configmaps.yaml".into(), yaml(&strip(&config_maps.iter().filter(ours).cloned().collect::<Vec<_>>()))?));
    files.push(("secrets.yaml".into(), yaml(&secrets.iter().map(redact_secret).collect::<Vec<_>>())?));
    for s in &secrets {
        if let Some(config) = redacted_livekit_config(s) {
            files.push((format!("config/{}/{CONFIG_FILE}", s.name_any()), config.into_bytes()));
        }
    }
    if let Some(log) = operator_log(client, ns, &mut notes).await {
        files.push(("operator.log".into(), log));
    }
    let mut readme = format!(
        "kubectl visio report of namespace {ns}, {}\nEvery Secret value is replaced by <redacted N bytes>; the LiveKit \
         config's API secrets and passwords too; literal env values of pods too.\n",
        k8s_openapi::jiff::Timestamp::now()
    );
    for n in &notes {
        readme.push_str(&format!("- {n}\n"));
    }
    files.insert(0, ("NOTES.txt".into(), readme.into_bytes()));
    Ok(files)
}

/// Writes the bundle of `ns` to `path`; returns the notes line count for the caller's message.
pub async fn run(client: &Client, ns: &str, path: &std::path::Path) -> Result<usize> {
    let files = collect(client, ns).await?;
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let root = format!("visio-report-{ns}");
    archive(&root, &files, std::io::BufWriter::new(file))?;
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
    use serde_json::json;

    #[test]
    fn secrets_keep_their_keys_and_lose_their_values() {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": "creds", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"k\":\"c2VjcmV0\"}}"}},
            "data": {"api-secret": b64(b"hunter2hunter2")},
            "stringData": {"plain": "swordfish"}
        }))
        .unwrap();
        let v = redact_secret(&s);
        let text = v.to_string();
        assert_eq!(v["data"]["api-secret"], "<redacted 14 bytes>");
        assert_eq!(v["data"]["plain"], "<redacted 9 bytes>");
        for leak in ["hunter2", &b64(b"hunter2hunter2"), "swordfish", "c2VjcmV0"] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
    }

    #[test]
    fn the_livekit_config_keeps_its_shape_and_loses_its_secrets() {
        let config = "port: 7880\nkeys:\n  APIabc: s3cr3t-api-secret\nredis:\n  address: r:6379\n  password: r3dis\nturn:\n  enabled: true\n";
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": "vc-config", "labels": {COMPONENT_LABEL: "config"}},
            "data": {CONFIG_FILE: b64(config.as_bytes())}
        }))
        .unwrap();
        let out = redacted_livekit_config(&s).unwrap();
        assert!(!out.contains("s3cr3t") && !out.contains("r3dis"), "{out}");
        assert!(!out.contains("APIabc"), "the API key is stored in a Secret too: {out}");
        assert!(out.contains("<api key 1>") && out.contains("r:6379") && out.contains("7880"), "{out}");
        let other: Secret =
            serde_json::from_value(json!({"metadata": {"name": "x"}, "data": {CONFIG_FILE: b64(b"a: b")}})).unwrap();
        assert_eq!(redacted_livekit_config(&other), None);
    }

    #[test]
    fn pods_lose_literal_env_values_but_keep_references() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "env": [
                {"name": "TOKEN", "value": "tok-123"},
                {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ]}]}
        }))
        .unwrap();
        let v = redact_pod(&p);
        assert_eq!(v["spec"]["containers"][0]["env"][0]["value"], "<redacted 7 bytes>");
        assert_eq!(v["spec"]["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"]["name"], "s");
    }

    #[test]
    fn the_archive_reads_back() {
        let files: Files = vec![("NOTES.txt".into(), b"hello".to_vec()), ("a/b.yaml".into(), b"x: 1".to_vec())];
        let mut buf = Vec::new();
        archive("root", &files, &mut buf).unwrap();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(buf.as_slice()));
        let names: Vec<String> =
            tar.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, ["root/NOTES.txt", "root/a/b.yaml"]);
    }

    proptest::proptest! {
        #[test]
        fn redaction_never_panics_and_leaves_no_string_under_a_secret_key(s in "\\PC{0,40}", n in 0i64..1000) {
            let mut v = json!({"keys": {"k": s.clone()}, "nested": [{"password": n, "apiSecret": {"x": s.clone()}}], "plain": 1});
            redact_config(&mut v);
            proptest::prop_assert_eq!(&v["keys"]["<api key 1>"], &json!(redacted(s.len())));
            proptest::prop_assert_eq!(&v["nested"][0]["apiSecret"]["x"], &json!(redacted(s.len())));
            proptest::prop_assert_eq!(&v["nested"][0]["password"], &json!(redacted(n.to_string().len())));
            proptest::prop_assert_eq!(&v["plain"], &json!(1));
        }
    }
}
