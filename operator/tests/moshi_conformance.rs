//! The real `moshi-server validate` (crate `moshi-server` 0.6.4) on the config the operator generates for
//! every example CaptionPool (`manifests/examples/`), plus pools with the extremes of the fields that reach
//! the config (one slot and the most, a path with spaces and quotes, one with control characters).
//!
//! moshi-server takes about 22 minutes of both cores to build on CPU, so it is built by
//! `e2e/moshi-conformance build` (`make conformance`) into `~/.cache/visio-e2e/moshi-server-0.6.4`, never
//! by this test. Without that build the test says so and passes, unless `CONFORMANCE=1` (then it fails:
//! run `make conformance`). `validate` reads the config only: no weights are needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use visio_operator::api::captionpool::CaptionEngine;
use visio_operator::api::CaptionPool;
use visio_operator::builders::captions::moshi_config;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The cached moshi-server, where `e2e/moshi-conformance build` installs it.
fn moshi_server() -> Option<PathBuf> {
    let out = Command::new(repo().join("e2e/moshi-conformance")).arg("bin").output().ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// The CaptionPools of `manifests/examples/` that run moshi-server.
fn example_pools() -> Vec<(String, CaptionPool)> {
    let mut out = Vec::new();
    let dir = repo().join("manifests/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("manifests/examples").flatten().map(|e| e.path()).collect();
    files.sort();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(file).expect("readable example");
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value: serde_json::Value = match serde::Deserialize::deserialize(doc) {
                Ok(v) => v,
                Err(e) => panic!("{}: {e}", file.display()),
            };
            if value["kind"] != "CaptionPool" {
                continue;
            }
            let mut value = value;
            value["metadata"]["uid"] = json!("4b1c0e2a-0000-4000-8000-00000000000a");
            let cp: CaptionPool = serde_json::from_value(value).expect("an example CaptionPool");
            if cp.spec.engine == CaptionEngine::Kyutai {
                let name = format!(
                    "{}:{}",
                    file.file_name().unwrap_or_default().to_string_lossy(),
                    cp.metadata.name.clone().unwrap_or_default()
                );
                out.push((name, cp));
            }
        }
    }
    out
}

fn pool(spec: serde_json::Value) -> CaptionPool {
    let mut base = json!({"clusterRef": {"name": "visio"}});
    if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
        b.extend(s.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "visio.io/v1alpha1", "kind": "CaptionPool",
        "metadata": {"name": "captions", "namespace": "minsante", "uid": "4b1c0e2a-0000-4000-8000-00000000000b"},
        "spec": base,
    }))
    .expect("a valid pool")
}

fn write_configs(dir: &Path) -> Vec<PathBuf> {
    let mut pools = example_pools();
    assert!(!pools.is_empty(), "no kyutai CaptionPool in manifests/examples");
    pools.push(("one slot".into(), pool(json!({"backend": {"slotsPerPod": 1}}))));
    pools.push(("most slots".into(), pool(json!({"backend": {"slotsPerPod": 100000}}))));
    pools.push(("odd path".into(), pool(json!({"model": {"path": "/models/stt \"fr\" \\ en"}}))));
    // Refused by the API, but the serializer must still write a config moshi-server reads as one path.
    pools.push(("control characters".into(), pool(json!({"model": {"path": "/models/stt\n[modules.evil]\u{7}"}}))));
    let mut files = Vec::new();
    for (i, (name, cp)) in pools.iter().enumerate() {
        let toml = moshi_config(cp, "k3y \"quoted\" \\ key").unwrap_or_else(|e| panic!("{name}: {e}"));
        let file = dir.join(format!("config-{i}.toml"));
        std::fs::write(&file, format!("# {name}\n{toml}")).expect("write the config");
        files.push(file);
    }
    files
}

#[test]
fn moshi_server_validates_every_generated_config() {
    let requested = std::env::var("CONFORMANCE").is_ok_and(|v| v == "1");
    let Some(bin) = moshi_server() else {
        assert!(!requested, "CONFORMANCE=1 but moshi-server 0.6.4 is not built: run `make conformance`");
        eprintln!("SKIPPED: moshi-server 0.6.4 is not built (`make conformance` builds it, about 22 minutes)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("visio-moshi-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let files = write_configs(&dir);
    for file in &files {
        let out = Command::new(&bin).arg("validate").arg(file).output().expect("moshi-server runs");
        assert!(
            out.status.success(),
            "moshi-server validate {} failed:\n{}\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(file).unwrap_or_default()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_example_config_renders() {
    // Without moshi-server: the configs the conformance run validates are rendered at all.
    let dir = std::env::temp_dir().join(format!("visio-moshi-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let files = write_configs(&dir);
    for f in &files {
        let text = std::fs::read_to_string(f).expect("written");
        assert!(text.contains("audio_codebooks = 32") && text.contains("temperature = 0.0"), "{}", f.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
