//! What the product's tests share: where the stand-in binaries are.

use std::path::PathBuf;

/// The stand-in binary `name` (`livekit-standin`, `whisperlive-standin`, ...). The stand-ins are a package
/// of their own (`standins/`, kept out of the product), so cargo gives this package no `CARGO_BIN_EXE_` for
/// them: they are taken from the target directory this test runs from (`target/<profile>/`, where
/// `cargo test --workspace` and `make standins` build them). Built by another command, they may be stale:
/// `make unit` builds them first.
pub fn standin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>
    let path = exe.parent().and_then(|deps| deps.parent()).expect("a test under target/<profile>/deps").join(name);
    assert!(
        path.is_file(),
        "{} not found: the stand-ins are their own package; build them first with `make standins` \
         (cargo build -p visio-standins), or run the tests with `make unit`",
        path.display()
    );
    path
}
