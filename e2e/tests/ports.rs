//! The port table (`visio_e2e::ports`) is the one source of the control planes' ports: the README's copy
//! is generated from it, the shell scripts' defaults agree with it, no two clusters share a port, and
//! every state directory is git-ignored. No cluster needed.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use visio_e2e::ports::{self, Ports};
use visio_e2e::repo;

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(repo().join(path)).with_context(|| format!("reading {path}"))
}

/// The value a script gives `var` when the environment does not: `${VAR:-value}`, or `VAR=value`.
fn shell_default(script: &str, var: &str) -> Option<String> {
    let defaulted = format!("${{{var}:-");
    if let Some(at) = script.find(&defaulted) {
        let rest = &script[at + defaulted.len()..];
        return rest.split('}').next().map(str::to_string);
    }
    let assigned = format!("{var}=");
    let at = script.match_indices(&assigned).map(|(i, _)| i).find(|&i| {
        // A whole name: not the tail of a longer one.
        script[..i].chars().last().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
    })?;
    script[at + assigned.len()..].split_whitespace().next().map(str::to_string)
}

/// What `script` starts a cluster with, as a row of the table would give it.
fn check_script(path: &str, want: &Ports) -> Result<Vec<String>> {
    let text = read(path)?;
    let mut problems = vec![];
    for (var, port) in want.env() {
        let have = shell_default(&text, var);
        if have.as_deref() != Some(port.to_string().as_str()) {
            problems.push(format!("{path}: {var} is {have:?}, the table says {port} ({})", want.cluster));
        }
    }
    let state = shell_default(&text, "VISIO_E2E_STATE");
    if state.as_deref() != Some(format!("$repo/{}", want.state).as_str()) {
        problems.push(format!("{path}: VISIO_E2E_STATE is {state:?}, the table says $repo/{}", want.state));
    }
    Ok(problems)
}

#[test]
fn the_readme_table_is_generated_from_the_port_table() -> Result<()> {
    let readme = read("e2e/README.md")?;
    let generated = ports::with_table(&readme).context("e2e/README.md has no `<!-- ports: ... -->` markers")?;
    assert!(
        generated == readme,
        "e2e/README.md's port table differs from e2e/src/ports.rs: run `cargo run -q -p visio-e2e --bin ports -- --write`"
    );
    Ok(())
}

#[test]
fn the_scripts_start_their_clusters_on_the_table_s_ports() -> Result<()> {
    let mut problems = vec![];
    problems.extend(check_script("e2e/cluster", &ports::DEMO)?);
    // e2e/demo names the state directory only; its ports are e2e/cluster's defaults.
    let demo_state = shell_default(&read("e2e/demo")?, "VISIO_E2E_STATE");
    if demo_state != Some(format!("$repo/{}", ports::DEMO.state)) {
        problems.push(format!("e2e/demo: VISIO_E2E_STATE is {demo_state:?}, the table says {}", ports::DEMO.state));
    }
    problems.extend(check_script("e2e/run-tests", &ports::SUITE)?);
    problems.extend(check_script("e2e/bench", &ports::BENCH)?);
    // e2e/run-tests stops the chart proof's cluster if an interrupted run left it behind.
    let run_tests = read("e2e/run-tests")?;
    let chart_state = format!("VISIO_E2E_STATE=$repo/{} ", ports::CHART.state);
    if !run_tests.contains(&chart_state) {
        problems.push(format!("e2e/run-tests does not clean up {} (the chart proof's state)", ports::CHART.state));
    }
    assert!(problems.is_empty(), "the scripts and e2e/src/ports.rs disagree:\n{}", problems.join("\n"));
    Ok(())
}

#[test]
fn no_two_clusters_share_a_port_or_a_state_directory() {
    let mut owner: BTreeMap<u16, &str> = BTreeMap::new();
    let mut states: BTreeMap<&str, &str> = BTreeMap::new();
    for p in ports::ALL {
        for port in p.listening() {
            if let Some(other) = owner.insert(port, p.cluster) {
                panic!("port {port} is both {other}'s and {}'s", p.cluster);
            }
        }
        if let Some(other) = states.insert(p.state, p.cluster) {
            panic!("state {} is both {other}'s and {}'s", p.state, p.cluster);
        }
    }
}

#[test]
fn every_state_directory_is_git_ignored() -> Result<()> {
    let ignored: Vec<String> =
        read(".gitignore")?.lines().map(|l| l.trim().trim_end_matches('/').to_string()).collect();
    for p in ports::ALL {
        let top = format!("/{}", p.state.split('/').next().unwrap_or_default());
        assert!(ignored.contains(&top), "{} ({}) is not in .gitignore", top, p.cluster);
    }
    Ok(())
}
