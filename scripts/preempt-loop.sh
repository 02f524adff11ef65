#!/usr/bin/env bash
# Runs the preemption scenario of netns-tests/tests/it/pair_node_loss.rs
# (`returning_master_preempts_once_ready_without_failures`) RUNS times at each advert
# interval and prints, for every run, the failed requests of its two clients: a keep-alive
# client and a client opening a new connection per request, each sending a request every
# 5 ms (~200 req/s). A run powers the master A off, lets B take over, powers A on and
# waits until A has taken the VIP back (it preempts once its lbd is ready). Every run
# builds its own namespaces and daemons (the harness). Needs root. Exit status 1 when any
# request or run failed.
#
#   scripts/preempt-loop.sh [--runs N] [--interval-cs CS[,CS...]] [--daemon-logs] [--pcap]
#
# Defaults: 50 runs at 100, 10 and 2 cs. --daemon-logs keeps the last lines of every daemon's
# log in each run's log, and --pcap keeps a capture (dumpcap) of the client's side of every run that
# lost a request in the log directory (to find the mechanism of a lost request).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=50
intervals=100,10,2
quiet=(NETNS_QUIET=1)
pcap=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="${2:-}"; shift 2 ;;
    --interval-cs) intervals="${2:-}"; shift 2 ;;
    --daemon-logs) quiet=(); shift ;;
    --pcap) pcap=1; shift ;;
    *) echo "usage: $0 [--runs N (1..1000)] [--interval-cs CS[,CS...]] [--daemon-logs] [--pcap]" >&2; exit 2 ;;
  esac
done
if ! [[ "$runs" =~ ^[0-9]+$ ]] || (( runs < 1 || runs > 1000 )); then
  echo "preempt-loop: --runs must be 1..1000" >&2
  exit 2
fi
if ! [[ "$intervals" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
  echo "preempt-loop: --interval-cs takes centiseconds, e.g. 100,10,2" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "preempt-loop: needs root (network namespaces)" >&2
  exit 1
fi
export CARGO_TERM_COLOR=never
# The daemons and helpers the harness starts, then the test binary itself.
cargo build -q -p vrrpd -p lbd -p netns-tests --bins
# The scenarios' test binary (`it`), not the helper binaries built for it.
test_bin=$(cargo test -q -p netns-tests --test it --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\/it-[0-9a-f]*\)".*/\1/p' | tail -n 1)
if [ -z "$test_bin" ] || [ ! -x "$test_bin" ]; then
  echo "preempt-loop: could not find the netns-tests test binary" >&2
  exit 1
fi

log_dir=$(mktemp -d /tmp/preempt-loop.XXXXXX)
capture=()
[ "$pcap" = 1 ] && capture=(PREEMPT_PCAP_DIR="$log_dir")
echo "preempt-loop: $runs runs at ${intervals//,/, } cs; $(uptime)"
IFS=, read -r -a cs_list <<<"$intervals"
declare -A failed_at runs_failed_at requests_at
for cs in "${cs_list[@]}"; do
  failed_at[$cs]=0
  runs_failed_at[$cs]=0
  requests_at[$cs]=0
done
bad_runs=0
for ((i = 1; i <= runs; i++)); do
  for cs in "${cs_list[@]}"; do
    log="$log_dir/run-$i-${cs}cs.log"
    status=ok
    env "${quiet[@]}" "${capture[@]}" PREEMPT_INTERVALS_CS="$cs" timeout 300 "$test_bin" --exact \
      --test-threads=1 --nocapture pair_node_loss::returning_master_preempts_once_ready_without_failures \
      >"$log" 2>&1 || status=FAILED
    # "preempt-figures cs=2 keepalive_failed=0 keepalive_total=812 keepalive_retried=3
    #  fresh_failed=0 fresh_total=815"
    fig=$(grep -m1 "^preempt-figures cs=$cs " "$log" || true)
    if [ -z "$fig" ]; then
      echo "run $(printf '%3d' "$i") ${cs}cs: no figures ($(grep -m1 -E 'Error|VIOLATION|panicked' "$log" || echo 'see log')); FAILED"
      bad_runs=$((bad_runs + 1))
      runs_failed_at[$cs]=$((runs_failed_at[$cs] + 1))
      continue
    fi
    val() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$fig"; }
    ka_failed=$(val keepalive_failed)
    fr_failed=$(val fresh_failed)
    n=$(($(val keepalive_total) + $(val fresh_total)))
    failed=$((ka_failed + fr_failed))
    failed_at[$cs]=$((failed_at[$cs] + failed))
    requests_at[$cs]=$((requests_at[$cs] + n))
    if [ "$status" != ok ] || [ "$failed" -gt 0 ]; then
      status=FAILED
      bad_runs=$((bad_runs + 1))
      runs_failed_at[$cs]=$((runs_failed_at[$cs] + 1))
    fi
    echo "run $(printf '%3d' "$i") ${cs}cs: keep-alive ${ka_failed}/$(val keepalive_total) failed" \
      "($(val keepalive_retried) retried), fresh-connection ${fr_failed}/$(val fresh_total) failed; $status"
  done
done
for cs in "${cs_list[@]}"; do
  echo "total ${cs}cs: ${failed_at[$cs]} failed of ${requests_at[$cs]} requests; ${runs_failed_at[$cs]} of $runs runs failed"
done
echo "logs in $log_dir; $(uptime)"
[ "$bad_runs" -eq 0 ]
