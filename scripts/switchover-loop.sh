#!/usr/bin/env bash
# Runs the planned-switchover scenarios of netns-tests/tests/it/pair_planned.rs RUNS times
# (default 50, at most 1000) and prints, for every run, the failed requests of each client
# (a keep-alive client and a fresh-connection client, a request every 5 ms, each at advert
# intervals 100 and 10 cs) and whether the slow-request test passed; then the totals. Every
# test of a run builds its own namespaces and daemons (the harness); a run takes about 30 s.
# Needs root. Exit status 1 when any request or test failed in any run.
#
#   scripts/switchover-loop.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-50}"
if ! [[ "$runs" =~ ^[0-9]+$ ]] || (( runs < 1 || runs > 1000 )); then
  echo "usage: $0 [RUNS, 1..1000]" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "switchover-loop: needs root (network namespaces)" >&2
  exit 1
fi
export CARGO_TERM_COLOR=never
# The daemons and helpers the harness starts, then the test binary itself.
cargo build -q -p vrrpd -p lbd -p netns-tests --bins
# The scenarios' test binary (`it`), not the helper binaries built for it.
test_bin=$(cargo test -q -p netns-tests --test it --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\/it-[0-9a-f]*\)".*/\1/p' | tail -n 1)
if [ -z "$test_bin" ] || [ ! -x "$test_bin" ]; then
  echo "switchover-loop: could not find the netns-tests test binary" >&2
  exit 1
fi

log_dir=$(mktemp -d /tmp/switchover-loop.XXXXXX)
total_failed=0
total_requests=0
bad_runs=0
# Runs one test of pair_planned; its log is $log_dir/run-$i-$2.log. Status 1 if it failed.
run_test() {
  NETNS_QUIET=1 timeout 300 "$test_bin" --exact --test-threads=1 --nocapture "pair_planned::$1" \
    >"$log_dir/run-$i-$2.log" 2>&1
}
# "switchover at 100 cs, keep-alive client (...): 426 requests, 0 failed, ... retried 23, ..."
# -> "0 426 23"
figures() {
  sed -n "s/^switchover at $1 cs, $2 client .*: \([0-9]*\) requests, \([0-9]*\) failed,[^;]*retried \([0-9]*\),.*/\2 \1 \3/p" \
    "$3" | head -n 1
}
for ((i = 1; i <= runs; i++)); do
  status=ok
  line="run $(printf '%3d' "$i"):"
  run_failed=0
  # A run is a fresh pair of namespaces per test and interval; about 30 s in all.
  run_test switchover_under_load_fails_no_request keepalive || status=FAILED
  run_test switchover_under_fresh_connection_load_fails_no_request fresh || status=FAILED
  slow=ok
  run_test slow_requests_in_flight_across_the_switchover_complete slow || slow=FAILED
  for client in keep-alive fresh-connection; do
    log="$log_dir/run-$i-keepalive.log"
    [ "$client" = fresh-connection ] && log="$log_dir/run-$i-fresh.log"
    for cs in 100 10; do
      read -r failed requests retried <<<"$(figures "$cs" "$client" "$log")" || true
      if [ -z "${failed:-}" ]; then
        line+=" ${cs}cs $client: no figures;"
        status=FAILED
        continue
      fi
      run_failed=$((run_failed + failed))
      total_requests=$((total_requests + requests))
      line+=" ${cs}cs $client ${failed}/${requests} failed"
      [ "$client" = keep-alive ] && line+=" (${retried} retried)"
      line+=";"
    done
  done
  total_failed=$((total_failed + run_failed))
  if [ "$status" != ok ] || [ "$run_failed" -gt 0 ] || [ "$slow" != ok ]; then
    bad_runs=$((bad_runs + 1))
    status=FAILED
  fi
  echo "$line slow requests $slow; $status"
done
echo "total: $total_failed failed of $total_requests requests; $bad_runs of $runs runs failed (logs in $log_dir)"
[ "$bad_runs" -eq 0 ]
