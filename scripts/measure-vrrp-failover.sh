#!/usr/bin/env bash
# Prints the failover gap a client sees (fault -> first answer from the new master) for
# vrrpd and, in the same run for comparison, keepalived: node lost (kill -9 + link down)
# and SIGTERM, at advert intervals 100 cs and 10 cs, median of 3 rounds, next to
# keepalived's reference figures. A measurement, not a pass/fail test. Needs root.
#
# Options are passed through: --rounds N, --intervals 100,10, --daemons vrrpd,keepalived.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "measure-vrrp-failover: needs root (network namespaces)" >&2
  exit 1
fi
bash scripts/install-deps.sh >/dev/null
cargo build -q -p vrrpd -p netns-tests --bins
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/debug/measure-vrrp-failover" "$@"
