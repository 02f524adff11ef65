#!/usr/bin/env bash
# Every test lbpair has, in the order CI runs them. Run as root on Debian: it installs what
# the tests need (apt packages), builds everything, then runs format and lint checks, unit
# and integration tests, and the network-namespace suites (real daemons, real raw sockets).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s (%s)\n' "$*" "$(date +%T)"; }

step "installing test dependencies"
./scripts/install-deps.sh
. ./scripts/ensure-rust.sh
# The netns suites run under nextest on every machine, never under plain `cargo test`: its
# config (.config/nextest.toml) is what says no test is retried and a pass on a retry fails.
# A missing or too old nextest is installed (a few minutes, once).
if ! cargo nextest show-config version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

export CARGO_TERM_COLOR=never
# CI builds once from clean: incremental caches would only cost disk (3.7 GB of a clean target).
export CARGO_INCREMENTAL=0
df -h . | sed 's/^/disk: /'
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "build"
cargo build --workspace --all-targets

step "systemd units"
./scripts/check-units.sh

step "unit and integration tests (shared, vrrpd, lbd)"
cargo test -p shared -p vrrpd -p lbd --no-fail-fast

# The peer-link benchmark, small and in a debug build: not for its figures (BENCHMARKS.md has
# those, from scripts/bench-sync.sh), but so it keeps working. It fails if an update never
# reaches the other node or their digests never match.
step "peer-link benchmark smoke run"
cargo run -q -p lbd --example sync_bench -- --seconds 2 --rate 2000 --resync-entries 20000

# Real daemons, real time, one test at a time. No retries and FLAKY fails the run, except for
# the one test .config/nextest.toml names with its measured failure rate.
step "network-namespace suites (root, serial)"
cargo nextest run -p netns-tests --test-threads 1 --no-fail-fast

df -h . | sed 's/^/disk: /'
du -sh target 2>/dev/null | sed 's/^/build tree: /' || true
step "all tests passed"
