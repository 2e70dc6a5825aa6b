//! Every manifest the project ships passes `kubectl apply --dry-run=server` against the real apiserver.

use anyhow::Result;
use visio_e2e::{kubectl, repo};

#[test]
fn crds_pass_server_side_dry_run() -> Result<()> {
    let dir = repo().join("crds");
    kubectl(&["apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", dir.to_str().unwrap()], None)?;
    Ok(())
}

#[test]
fn examples_pass_server_side_dry_run() -> Result<()> {
    let dir = repo().join("manifests/examples");
    // Namespaces first (a dry run does not create them), then everything with strict field validation.
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        for doc in text.split("\n---") {
            if doc.contains("kind: Namespace") {
                kubectl(&["apply", "-f", "-"], Some(doc))?;
            }
        }
    }
    let out = kubectl(&["apply", "--dry-run=server", "--validate=strict", "-f", dir.to_str().unwrap()], None)?;
    assert!(out.contains("visiocluster.visio.io/visio"), "{out}");
    assert!(out.contains("captionpool.visio.io/captions"), "{out}");
    assert!(out.contains("retentionpolicy.visio.io/meetings"), "{out}");
    Ok(())
}
