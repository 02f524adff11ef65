#!/usr/bin/env bash
# Issue 11's failover promise, measured from outside: in the real pair (vrrpd + lbd on two
# nodes, three backends, network namespaces), 1000 clients hold sticky sessions in learn and
# insert mode and 1000 hold rate-limit buckets; the master is lost (kill -9 of vrrpd and
# lbd, link down) at a random moment: during steady updates, during a full resync of the
# restarted backup, and 50 ms after a burst of new sessions. After the takeover every client
# comes back. Prints, per kill and mode, the sessions, those older than 200 ms at the kill
# and the share of them that kept their backend, and per bucket the requests allowed after
# the failover against what the limit allows (in refill intervals). Prints its seed.
# Needs root. Exits 1 if a kill missed the promise (>= 99.9% kept; buckets within ±1).
#
#   scripts/bench-failover-softstate.sh                       # one round of the three kills
#   scripts/bench-failover-softstate.sh --rounds 5 --seed 42
#   scripts/bench-failover-softstate.sh --moments steady,burst --clients 2000
#   scripts/bench-failover-softstate.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bench-failover-softstate: needs root (network namespaces)" >&2
  exit 1
fi
# shellcheck source=scripts/ensure-rust.sh
. scripts/ensure-rust.sh
bash scripts/install-deps.sh >/dev/null
cargo build -q -p vrrpd -p lbd -p netns-tests --bins
target_dir="${CARGO_TARGET_DIR:-target}"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' + working tree')"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) CPUs, $(uname -r); load: $(cut -d' ' -f1-3 /proc/loadavg)"
NETNS_QUIET=1 exec "$target_dir/debug/bench-failover-softstate" "$@"
