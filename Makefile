# visio-operator — the two commands: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help demo test lint unit alerts e2e crds manifests cluster-up cluster-down build standins fuzz bench conformance image release licenses sbom

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

build: ## Build the operator and kubectl-visio binaries (the product only: no test code)
	$(CARGO) build -p visio-operator -p kubectl-visio --bins

standins: ## Build the loopback stand-ins the tests drive (standins/: LiveKit, moshi-server, WhisperLive, transcriber worker)
	$(CARGO) build -p visio-standins --bins

demo: build standins ## Run the operator on the embedded local control plane with two sample ministries
	e2e/demo

test: lint licenses unit alerts e2e ## Run every test: fmt, clippy, crate licenses, unit and property tests, drift checks, alert rules, e2e on the local control plane

lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: standins ## Unit, property and drift tests (no cluster needed), and the real WhisperLive (a venv from PyPI, cached)
	e2e/whisperlive/setup >/dev/null
	$(CARGO) test --workspace --exclude visio-e2e

alerts: ## promtool check/test of the shipped alerts (installs Debian's prometheus package for promtool if missing)
	bash monitoring/test

e2e: build standins image ## End-to-end tests against a fresh local control plane (built once, cached), the operator's image among them
	e2e/run-tests

conformance: standins ## The real caption servers against what the operator renders: WhisperLive (PyPI, a venv in ~/.cache/visio-e2e) and moshi-server validate (cargo install; cold build about 22 min)
	e2e/whisperlive/setup >/dev/null
	CONFORMANCE=1 $(CARGO) test -p visio-operator --test whisperlive_conformance
	e2e/moshi-conformance test

crds: build ## Regenerate crds/ from the Rust types (and the chart's copies, install.yaml)
	rm -f crds/*.yaml
	target/debug/visio-operator crds --out-dir crds
	e2e/render-manifests

manifests: ## Regenerate helm/visio-operator/crds/ (from crds/) and manifests/install.yaml (the chart rendered)
	e2e/render-manifests

image: ## The operator's image (with kubectl-visio), built here with buildah from the release binaries: dist/visio-operator-<version>.oci.tar
	$(CARGO) build --locked --release -p visio-operator --bin visio-operator -p kubectl-visio --bin kubectl-visio
	packaging/build-image

release: image ## dist/release-<version>/: image archive, chart package, CRDs, install.yaml, SBOM, kubectl-visio + krew manifest, SHA256SUMS (docs/release.md)
	packaging/release

licenses: ## Every crate's license against deny.toml (cargo deny, offline; installs cargo-deny once if missing)
	packaging/cargo-tools cargo-deny
	$(CARGO) deny --log-level error check licenses

sbom: ## dist/visio-operator-<version>.cdx.json: CycloneDX SBOM of the operator's crates (installs cargo-cyclonedx once)
	mkdir -p dist
	packaging/sbom dist/visio-operator-$$(packaging/version).cdx.json

cluster-up: ## Start the local control plane (kept running)
	e2e/cluster up

cluster-down: ## Stop the local control plane
	e2e/cluster down

FUZZ_SECONDS ?= 60
fuzz: ## Fuzz the agent's metrics parser, the duration grammar and the load annotation (libFuzzer, nightly; FUZZ_SECONDS each)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	for t in agent_metrics duration pod_load; do \
	  $(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 || exit 1; \
	done

bench: build standins ## Benchmarks (not tests): e2e/bench fleet (operator vs chart baseline) and e2e/bench tenants (10, 100, 300)
	e2e/bench fleet
	e2e/bench tenants
