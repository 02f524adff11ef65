#!/usr/bin/env bash
# The peer link's benchmark (issue 5): replication throughput, lag and CPU at a steady update
# rate (default 10k updates/s), and a full resync of 1M entries. Two in-process lbd nodes
# linked over loopback TCP with the real PSK-authenticated replicator; see
# lbd/examples/sync_bench.rs for the method. Prints figures; exits 1 if an update never
# arrived or the nodes' digests never matched.
#
#   scripts/bench-sync.sh                      # 10 s at 10k/s, then 1M entries resynced
#   scripts/bench-sync.sh --markdown           # plus a Markdown table for BENCHMARKS.md
#   scripts/bench-sync.sh --rate 50000 --seconds 5 --resync-entries 0
#   scripts/bench-sync.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/ensure-rust.sh
. scripts/ensure-rust.sh
cargo build --release -q -p lbd --example sync_bench
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' + working tree')"
echo "machine: $(nproc) CPUs, $(uname -r)"
exec "${CARGO_TARGET_DIR:-target}/release/examples/sync_bench" "$@"
