#!/usr/bin/env bash
# Writes the "defaults" lbd config of the benchmarks: configs/lbd.example.toml as a user gets it,
# with only what a benchmark on loopback cannot keep changed:
#   - addresses: the listener (0.0.0.0:8080 -> 127.0.0.1:PORT), the admin listener
#     (-> 127.0.0.1:ADMIN_PORT), and the [[pool.backend]] addresses: the Nth backend of each pool
#     -> 127.0.0.1:(Nth port of BACKEND_PORTS, a comma list). The bench backend listens on two
#     ports, so the default pool "web" keeps its two backends, web-1 and web-2, both served by
#     the one bench backend (lbd refuses one address listed twice in a pool), and the other
#     pools' health checks probe it instead of 192.0.2.x;
#   - the state file (soft_state_file, /var/lib/lbd/softstate as shipped) moves next to OUT
#     (the benchmark's private mktemp directory), so the journal still runs;
#   - the [[rate_limit]] tables are removed: the example's "per-client" limiter (50 req/s, burst
#     100, every route) would answer 429 to nearly every request of a load generator on one IP.
# Everything else stays as shipped: pool "web" with least_conn, max_conns 200 per backend, queue
# 100, idle_max 32, active HTTP health checks, sticky cookies (insert mode, random key: lbd warns
# at startup), all forwarding headers, Via, the node header, and the plain access log on stdout
# (the benchmark scripts send lbd's stdout to /dev/null).
#
#   scripts/bench/lbd-defaults.sh EXAMPLE OUT PORT ADMIN_PORT BACKEND_PORTS
set -euo pipefail
[ $# -eq 5 ] || { echo "usage: $0 EXAMPLE OUT PORT ADMIN_PORT BACKEND_PORT[,BACKEND_PORT...]" >&2; exit 2; }
example=$1 out=$2 port=$3 admin_port=$4 backend_ports=$5

# The table a line belongs to decides which address it is; a line is dropped only inside a
# [[rate_limit]] table (up to the next table header).
state="$(cd "$(dirname "$out")" && pwd)/lbd.softstate"
awk -v port="$port" -v admin="$admin_port" -v backend_ports="$backend_ports" -v state="$state" '
  BEGIN { nports = split(backend_ports, ports, ",") }
  /^[[:space:]]*\[/ { table = $0; gsub(/[[:space:]]/, "", table); if (table == "[[pool]]") nth = 0 }
  table == "[[rate_limit]]" { dropped++; next }
  table == "[global]" && /^admin[[:space:]]*=/ { $0 = "admin = \"127.0.0.1:" admin "\""; admin_done++ }
  table == "[global]" && /^soft_state_file[[:space:]]*=/ { $0 = "soft_state_file = \"" state "\"" }
  table == "[[listener]]" && /^address[[:space:]]*=/ { $0 = "address = \"127.0.0.1:" port "\""; listeners++ }
  table == "[[pool.backend]]" && /^address[[:space:]]*=/ {
    $0 = "address = \"127.0.0.1:" ports[nth % nports + 1] "\""; nth++; backends++
  }
  { print }
  END {
    if (admin_done != 1 || listeners != 1 || backends < 1 || !dropped) {
      printf "lbd-defaults: unexpected example layout (admin %d, listeners %d, backends %d, rate_limit lines %d)\n", \
        admin_done, listeners, backends, dropped > "/dev/stderr"
      exit 1
    }
  }' "$example" >"$out"
