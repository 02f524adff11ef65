#!/usr/bin/env bash
# Memory per idle keep-alive client connection (issue 9): lbd, HAProxy and nginx as proxies in
# front of one nginx backend, all on 127.0.0.1, measured in the same run.
#
#   scripts/bench-idle-conns.sh [--conns N] [--targets lbd,haproxy,nginx] [--concurrency C]
#                               [--lbd-config defaults|tuned] [--lbd-bin PATH] [--no-build]
#                               [--settle S] [--base-port P] [--markdown]
#
# For each proxy in turn, scripts/bench/idle_conns.py opens N connections (default 15000, at
# most C = 500 connecting at a time); each sends ONE request (GET /, keep-alive), reads the
# response, and then sits idle. The proxy's memory is read before (after a warm-up of 200
# connections, opened and closed, so one-time allocations are in the baseline) and S seconds
# (default 1) after the last connection was answered, while all are held:
#   RSS: VmRSS from /proc/PID/status, summed over the proxy's processes (nginx: master + worker);
#   PSS: Pss from /proc/PID/smaps_rollup, summed likewise (shared pages split between sharers).
# Per idle connection = (while held - before) / the connections still open at that moment (the
# client's count, which it prints when told to close them; `ss` gives the server side too).
# Then the client closes them all (RST) and the next proxy is measured. A connection not
# answered within 2 s counts as failed; after one wave of failures (C) the client opens no more
# (a proxy at its connection limit leaves the rest waiting, and waiting for each would let the
# held ones reach the proxy's idle timeout first). NOTE lines say where a proxy answered fewer
# than N, or closed some of the held connections before the memory was read.
#
# Configs: lbd runs the shipped defaults (--lbd-config defaults: configs/lbd.example.toml with
# only addresses changed and its rate limiters removed, see scripts/bench/lbd-defaults.sh; its
# access log goes to /dev/null) with one worker thread; two of those defaults bound this test
# and are reported, not changed: max_client_conns = 10000 (beyond it clients wait in the kernel
# backlog, unanswered) and request_header_ms = 10000 (an idle keep-alive connection is closed
# after 10 s, so the measurement must be taken sooner: the script says how long opening took,
# and how many the proxy had closed by then). HAProxy (nbthread 1, maxconn N + 100) and nginx
# (worker_processes 1, worker_connections N + 2000) use the bench configs of
# scripts/bench-proxy.sh, whose keep-alive timeouts are 300 s.
#
# File descriptors: the soft limit is raised to the hard limit (ulimit -n); N must leave room
# under it for the client (one per connection) and the proxy (one per connection + backend
# connections). The hard limit on this machine is 20000 and cannot be raised without
# CAP_SYS_RESOURCE, so N is at most ~18000 here; HAProxy then runs with fewer FDs than its maxconn
# asks for (no strict-limits), which is fine with few backend connections.
#
# Installs nginx, haproxy and python3 with apt-get when missing (needs root); builds lbd with
# `cargo build --release -p lbd` ($CARGO_TARGET_DIR honoured) unless --lbd-bin or --no-build.
# Every process it starts is killed by PID on exit; the temp dir is removed.
set -euo pipefail
COMMAND_LINE=scripts/bench-idle-conns.sh
for arg in "$@"; do
  if [[ $arg =~ ^[A-Za-z0-9_./,=:+-]+$ ]]; then COMMAND_LINE+=" $arg"; else COMMAND_LINE+=" $(printf '%q' "$arg")"; fi
done
cd "$(dirname "$0")/.."
ROOT=$PWD
TEMPLATES=$ROOT/scripts/bench

CONNS=15000
CONCURRENCY=500
TARGETS=lbd,haproxy,nginx
LBD_CONFIG=defaults
LBD_BIN=""
BUILD=1
SETTLE=1
BASE_PORT=18380
MARKDOWN=0

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
full_help() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
BENCH_NAME=bench-idle-conns
# shellcheck source=scripts/bench/lib.sh
. "$TEMPLATES/lib.sh"

while [ $# -gt 0 ]; do
  case $1 in
    --conns) CONNS=${2:?}; shift 2 ;;
    --concurrency) CONCURRENCY=${2:?}; shift 2 ;;
    --targets) TARGETS=${2:?}; shift 2 ;;
    --lbd-config) LBD_CONFIG=${2:?}; shift 2 ;;
    --lbd-bin) LBD_BIN=${2:?}; BUILD=0; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --settle) SETTLE=${2:?}; shift 2 ;;
    --base-port) BASE_PORT=${2:?}; shift 2 ;;
    --markdown) MARKDOWN=1; shift ;;
    -h|--help) full_help; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
in_range "$CONCURRENCY" 1 10000 || die "--concurrency must be 1..10000"
in_range "$SETTLE" 0 60 || die "--settle must be 0..60 seconds"
in_range "$BASE_PORT" 1024 65000 || die "--base-port must be 1024..65000"
case $LBD_CONFIG in defaults|tuned) ;; *) die "--lbd-config must be defaults or tuned" ;; esac
IFS=, read -ra TARGET_LIST <<<"$TARGETS"
[ "${#TARGET_LIST[@]}" -ge 1 ] || die "--targets is empty"
for t in "${TARGET_LIST[@]}"; do
  case $t in lbd|haproxy|nginx) ;; *) die "unknown target $t (lbd, haproxy, nginx)" ;; esac
done
want() { local t; for t in "${TARGET_LIST[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

# ---- file descriptors ----
HARD=$(ulimit -Hn)
[ "$HARD" != unlimited ] || HARD=1048576
ulimit -n "$HARD" || die "could not raise the soft FD limit to the hard limit $HARD"
# The client holds N sockets, the proxy N + its backend connections (up to C while opening).
in_range "$CONNS" 1 $(( HARD - CONCURRENCY - 200 )) ||
  die "--conns must be 1..$(( HARD - CONCURRENCY - 200 )) with the hard FD limit $HARD and --concurrency $CONCURRENCY"

# ---- dependencies ----
install_missing nginx=nginx haproxy=haproxy curl=curl python3=python3 pgrep=procps ss=iproute2
! want lbd || build_lbd

NEXT_PORT=$BASE_PORT
start_work

# ---- start everything ----
start_backend
declare -A PORT_OF PID_OF PIDS_OF

if want lbd; then
  alloc_port; PORT_OF[lbd]=$PORT
  alloc_port
  write_lbd_config "$WORK/lbd.toml" "${PORT_OF[lbd]}" "$PORT" "$LBD_CONFIG"
  # One worker thread, like the other proxies' one thread / one worker. The shipped access log
  # writes to stdout: dropped.
  "$LBD_BIN" run --config "$WORK/lbd.toml" --workers 1 >/dev/null 2>"$WORK/lbd.out" &
  PID_OF[lbd]=$!; STARTED+=("$!")
  wait_ready lbd "${PID_OF[lbd]}" "${PORT_OF[lbd]}" "$WORK/lbd.out"
fi
if want haproxy; then
  alloc_port; PORT_OF[haproxy]=$PORT
  render "$TEMPLATES/haproxy.cfg.in" "$WORK/haproxy.cfg" PORT="$PORT" BACKEND_PORT="$BACKEND_PORT" \
    MAXCONN=$(( CONNS + 100 ))
  haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.out" 2>&1 &
  PID_OF[haproxy]=$!; STARTED+=("$!")
  wait_ready haproxy "${PID_OF[haproxy]}" "$PORT" "$WORK/haproxy.out"
fi
if want nginx; then
  alloc_port; PORT_OF[nginx]=$PORT
  render "$TEMPLATES/proxy.nginx.conf.in" "$WORK/nginx-proxy.conf" DIR="$WORK" PORT="$PORT" \
    BACKEND_PORT="$BACKEND_PORT" WORKER_CONNECTIONS=$(( CONNS + 2000 )) NOFILE="$HARD"
  nginx -p "$WORK" -e "$WORK/nginx-proxy.error.log" -c "$WORK/nginx-proxy.conf" -g 'daemon off;' \
    >"$WORK/nginx-proxy.out" 2>&1 &
  PID_OF[nginx]=$!; STARTED+=("$!")
  wait_ready nginx-proxy "${PID_OF[nginx]}" "$PORT" "$WORK/nginx-proxy.out"
fi
for t in "${TARGET_LIST[@]}"; do PIDS_OF[$t]=$(pids_of "${PID_OF[$t]}" | tr '\n' ' '); done

# ---- measuring ----
established() { ss -Htn state established "( sport = :$1 )" | wc -l; }

field() { # LINE KEY: the value of KEY=value in LINE
  local kv
  for kv in $1; do [ "${kv%%=*}" != "$2" ] || { echo "${kv#*=}"; return 0; }; done
  echo ""
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"

run_client() { # PORT CONNS HOLD_MAX OUT: starts the client in the background, sets CLIENT_PID
  python3 "$TEMPLATES/idle_conns.py" --port "$1" --conns "$2" --concurrency "$CONCURRENCY" \
    --timeout 2 --deadline 120 --hold-max "$3" >"$4" 2>&1 &
  CLIENT_PID=$!; STARTED+=("$CLIENT_PID")
}

measure() { # TARGET
  local t=$1 port=${PORT_OF[$1]} pids out="$WORK/client.$1.out" warm="$WORK/client.$1.warm"
  read -ra pids <<<"${PIDS_OF[$t]}"
  # Warm-up: 200 connections opened, answered, closed.
  run_client "$port" 200 0 "$warm"
  wait_line "$warm" done 60 "$CLIENT_PID" || { cat "$warm" >&2; die "the warm-up client against $t did not finish"; }
  wait "$CLIENT_PID" || true; forget "$CLIENT_PID"
  sleep 1
  local rss0 pss0 rss1 pss1 ss_open ready done_line
  read -r rss0 pss0 < <(memory_kb "${pids[@]}")
  run_client "$port" "$CONNS" 300 "$out"
  wait_line "$out" ready 150 "$CLIENT_PID" || { cat "$out" >&2; die "the client against $t did not get ready"; }
  sleep "$SETTLE"
  read -r rss1 pss1 < <(memory_kb "${pids[@]}")
  ss_open=$(established "$port")
  kill -TERM "$CLIENT_PID"
  wait_line "$out" done 30 "$CLIENT_PID" || { cat "$out" >&2; die "the client against $t did not close"; }
  wait "$CLIENT_PID" || true; forget "$CLIENT_PID"
  for pid in "${pids[@]}"; do ! dead "$pid" || die "$t (process $pid) died while holding the connections"; done
  ready=$(grep '^ready' "$out")
  done_line=$(grep '^done' "$out")
  local open answered
  open=$(field "$done_line" open)
  answered=$(field "$ready" answered)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$CONNS" "$answered" "$open" "$ss_open" \
    "$rss0" "$rss1" "$pss0" "$pss1" "$(field "$ready" seconds)" "$(field "$done_line" closed_by_peer)" \
    "$(( $(field "$ready" failed_connect) + $(field "$ready" failed_response) ))" "$(field "$ready" unfinished)" \
    "$(field "$ready" not_tried)" >>"$RESULTS"
  # Let the proxy see the resets before the next one is measured (bounded).
  local i
  for (( i = 0; i < 100; i++ )); do [ "$(established "$port")" -lt 10 ] && break; sleep 0.1; done
}

# ---- run ----
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo "bench-idle-conns: $(commit_desc); $(nproc --all) CPUs ($CPU_MODEL), kernel $(uname -r); FD limit $HARD"
echo "  $(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy $(haproxy -v | awk 'NR == 1 {print $3}'), $(python3 --version)"
echo "  $CONNS idle connections per proxy, at most $CONCURRENCY connecting at a time; memory read ${SETTLE}s after the last answer"
if want lbd; then
  echo "  lbd: $LBD_BIN, --lbd-config $LBD_CONFIG, --workers 1; max_client_conns = $(awk -F' = ' '/^max_client_conns/ {print $2}' "$WORK/lbd.toml" | head -1)" \
    "(absent: 10000), request_header_ms = $(awk -F' = ' '/^request_header_ms/ {print $2}' "$WORK/lbd.toml" | head -1) (absent: 10000)"
fi
for t in "${TARGET_LIST[@]}"; do measure "$t"; done

# Columns of RESULTS: target asked answered open_at_measure ss_established rss0 rss1 pss0 pss1
# open_seconds closed_by_peer failed unfinished not_tried
echo
FMT="%-8s %7s %9s %6s %9s %11s %11s %10s %11s %11s %10s %9s %8s\n"
# shellcheck disable=SC2059 # the format is ours
printf "$FMT" target asked answered open rss_before rss_held "RSS B/conn" pss_before pss_held "PSS B/conn" open_secs peer_closed failed
awk -F'\t' -v fmt="$FMT" '{
  per = $4 > 0 ? sprintf("%.0f", ($7 - $6) * 1024 / $4) : "-"
  pper = $4 > 0 ? sprintf("%.0f", ($9 - $8) * 1024 / $4) : "-"
  printf fmt, $1, $2, $3, $4, $6 " kB", $7 " kB", per, $8 " kB", $9 " kB", pper, $10, $11, $12 }' "$RESULTS"
echo "(open: connections the client still held when the memory was read; the proxy side counted by ss: $(awk -F'\t' '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $5}' "$RESULTS"))"

# Loud notes where the figures do not cover all N connections.
NOTES=$(awk -F'\t' '{
  if ($3 < $2) printf "NOTE: %s answered %d of %d connections: %d failed (no answer within 2 s), %d not tried after that%s\n",
    $1, $3, $2, $12, $14, ($13 != "" ? ", " $13 " unfinished at the deadline" : "")
  if ($11 > 0) printf "NOTE: %s closed %d idle connections while they were held (its keep-alive idle timeout); the figure is per connection still open\n", $1, $11
}' "$RESULTS")
[ -z "$NOTES" ] || echo "$NOTES"

if [ "$MARKDOWN" -eq 1 ]; then
  echo
  echo "Commit: $(commit_desc). $(date -u +%Y-%m-%d). $(nproc --all) CPUs ($CPU_MODEL), kernel $(uname -r)."
  echo "Command: \`$COMMAND_LINE\` ($CONNS connections per proxy; lbd config: $LBD_CONFIG)."
  echo
  echo "| proxy | connections answered | open when measured | RSS before | RSS held | RSS per idle connection | PSS before | PSS held | PSS per idle connection | seconds to open |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' '{
    per = $4 > 0 ? sprintf("%.0f B", ($7 - $6) * 1024 / $4) : "-"
    pper = $4 > 0 ? sprintf("%.0f B", ($9 - $8) * 1024 / $4) : "-"
    printf "| %s | %s of %s | %s | %s kB | %s kB | %s | %s kB | %s kB | %s | %s |\n", $1, $3, $2, $4, $6, $7, per, $8, $9, pper, $10 }' "$RESULTS"
  if [ -n "$NOTES" ]; then
    echo
    while IFS= read -r line; do echo "- $line"; done <<<"$NOTES"
  fi
fi
