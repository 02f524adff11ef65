#!/usr/bin/env bash
# Every test lbpair has, in the order CI runs them. Run as root on Debian: it installs what
# the tests need (apt packages), builds everything, then runs format and lint checks, unit
# and integration tests, and the network-namespace suites (real daemons, real raw sockets).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s (%s)\n' "$*" "$(date +%T)"; }

step "installing test dependencies"
./scripts/install-deps.sh

export CARGO_TERM_COLOR=never
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "build"
cargo build --workspace --all-targets

step "systemd units"
./scripts/check-units.sh

step "unit and integration tests (shared, vrrpd, lbd)"
cargo test -p shared -p vrrpd -p lbd

step "network-namespace suites (root, serial)"
cargo test -p netns-tests -- --test-threads=1

step "all tests passed"
