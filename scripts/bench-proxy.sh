#!/usr/bin/env bash
# L7 proxy benchmark (issues 3 and 9): wrk against an nginx backend directly, then through
# HAProxy, nginx-as-proxy and lbd, in interleaved rounds. Prints figures, and checks each run:
# see "Checks" below.
#
#   scripts/bench-proxy.sh [--rounds N] [--duration S] [--connections C[,C...]] [--warmup S]
#                          [--targets direct,haproxy,nginx,lbd] [--lbd-config defaults|tuned|defaults,tuned]
#                          [--pinning alone|shared|both] [--rate R] [--mix] [--markdown] [--raw FILE]
#                          [--lbd-bin PATH] [--lbd2-bin PATH] [--no-build] [--sched fifo|nice|none]
#                          [--load-cpu L] [--backend-cpu L] [--proxy-cpu L] [--base-port P]
#
# Scenarios. Every round runs every scenario, and every target in each (interleaved):
#   sat   wrk -t1 -cC, GET / (3-byte body) as fast as it goes: saturation, for each C of
#         --connections (default 64). Always run.
#   rate  --rate R: h2load --h1 -t1 -cC --rps R/C (per client): the same offered rate of GET /
#         for every target, so CPU per request is compared at equal req/s, not only at
#         saturation. A target that cannot hold 95% of R gets a WARN line (its row is then at a
#         lower rate). p50/p99 come from h2load's per-request log.
#   mix   --mix: wrk -t4 -cC with scripts/bench/mix.lua: on 3/4 of the connections GET /,
#         GET /64k (65536-byte body) and POST /upload with a 4 KiB Content-Length body; on the
#         other 1/4, chunked POST /upload and HTTP/1.0 keep-alive GET / (lbd's fast path hands
#         both to hyper, for the rest of the connection). C >= 4.
#   Each scenario runs at each pinning of --pinning (default alone):
#   alone   CPU 0 (--load-cpu, --backend-cpu): the load tool and the backend nginx (one
#           worker); CPU 1 (--proxy-cpu): the proxy under test alone (HAProxy nbthread 1,
#           nginx worker_processes 1, lbd with one worker thread). The proxy's core is the
#           bottleneck, so req/s follows CPU per request.
#   shared  the load tool on CPU 0; the proxy AND the backend on CPU 1, as on a box where the
#           proxy shares its core with the application.
#   Processes are started once and re-pinned (taskset -a -p) when the pinning changes.
#
# lbd's config (--lbd-config; a list runs one lbd per config, all as targets):
#   defaults (the default)  configs/lbd.example.toml as a user gets it, with only the addresses
#           changed and the example's [[rate_limit]] tables removed (they would answer 429 to a
#           load generator on one IP): scripts/bench/lbd-defaults.sh writes it. Its access log
#           is on (plain, stdout), and lbd's stdout goes to /dev/null. Rows: "lbd-defaults".
#   tuned   scripts/bench/lbd.toml.in: the issue-3 config (pool idle_max 256, no access log, no
#           health checks, only X-Forwarded-For like the other proxies). Rows: "lbd-tuned".
#
# Per target and run it prints req/s, p50 and p99 latency, and the CPU time the proxy spent per
# request: utime+stime of every thread of the proxy's processes (nginx: master and worker), read
# from /proc/PID/stat before and after the run. Also per request: the backend's CPU (should be
# about the same for every proxy; when it isn't, the run is suspect) and the load tool's CPU.
# proxy_core% is the proxy's CPU over the run's wall time: near 95-100% the proxy's core is the
# bottleneck, so its req/s is its capacity. others% is CPU used by every other process on the
# machine (builds, fuzzers) as a share of all CPUs; in the direct run the idle proxy core is free
# for them, so only the proxied rows say whether the run competed with them.
# The summary gives medians across rounds, and each target's req/s as a ratio to the direct run
# of the same round and scenario (median of the per-round ratios).
# fast% (lbd only): the share of the load tool's requests that lbd's HTTP/1 fast path served
# (lbd_http1_fast_path_requests_total from its admin port, before and after); the rest went to
# hyper. 100 for plain GETs; below 100 in the mix, which is the point of the mix.
# `--markdown` adds the summary as a Markdown table with the commit, for BENCHMARKS.md.
#
# Checks, per run: the load tool saw no error (wrk: non-2xx/3xx responses, socket errors incl.
# timeouts; h2load: failed, errored, timed out, 4xx/5xx), and the backend served every request
# the load tool counted as answered (its stub_status request counter, read before and after the
# run: at least the answered requests, at most all counted + C in flight at the end + lbd's
# health checks). A run that fails prints a FAIL line at once, its row says FAIL, and the script
# exits 1 at the end (after printing every figure).
#
# Scheduling: the machine is shared with other people's builds. By default (--sched fifo) the
# load tool, the backend and the proxies run SCHED_FIFO (chrt -f 10) so a compiler on the same
# core cannot delay their wake-ups; the kernel still leaves other tasks ~5% of each CPU (RT
# throttling / fair server), which shows up as multi-millisecond p99 while other work is running:
# read p99 only from a quiet machine. --sched nice uses nice -15 instead, --sched none neither.
# (Under "shared" pinning the proxy and the backend share CPU 1 at the same FIFO priority: each
# runs until it blocks.)
#
# Like-for-like (HAProxy, nginx, lbd-tuned): every proxy keeps client and backend connections
# alive (nginx: upstream keepalive + HTTP/1.1; HAProxy: http-reuse always; lbd: pool keepalive)
# and adds only X-Forwarded-For. No access logs. lbd-defaults is lbd as shipped instead (all
# forwarding headers, Via, node header, sticky cookie, access log). Everything listens on
# 127.0.0.1 only, on free ports found from --base-port up. Everything started is killed by PID
# on exit, and the temp dir is removed.
#
# Installs wrk, h2load (nghttp2-client), nginx and haproxy with apt-get when missing (needs
# root), and builds lbd with `cargo build --release -p lbd` unless lbd is not among the targets
# or --no-build is given ($CARGO_TARGET_DIR is honoured).
# lbd runs as `lbd run --config {CONF} --workers 1` (without --workers if that lbd has no such
# flag: the CPU affinity alone then gives tokio one worker). LBD_ARGS overrides the arguments
# (use {CONF} for the config path); LBD_WORKERS_LINE adds a line to the tuned config's [global].
# A/B testing lbd: --lbd2-bin PATH adds the targets "lbd2-<config>", a second lbd binary with the
# same configs, measured interleaved with the others (build it from a copy of the tree).
set -euo pipefail
COMMAND_LINE=scripts/bench-proxy.sh
for arg in "$@"; do
  if [[ $arg =~ ^[A-Za-z0-9_./,=:+-]+$ ]]; then COMMAND_LINE+=" $arg"; else COMMAND_LINE+=" $(printf '%q' "$arg")"; fi
done
cd "$(dirname "$0")/.."
ROOT=$PWD
TEMPLATES=$ROOT/scripts/bench

ROUNDS=6
DURATION=10
CONNECTIONS=64
WARMUP=""
TARGETS="direct,haproxy,nginx,lbd"
LBD_CONFIGS=defaults
PINNING=alone
RATE=""
MIX=0
MARKDOWN=0
RAW=""
LBD_BIN=""
LBD2_BIN=""
BUILD=1
BASE_PORT=18180
LOAD_CPU=0
BACKEND_CPU=0
PROXY_CPU=1
SCHED=fifo

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
full_help() { sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
BENCH_NAME=bench-proxy
# shellcheck source=scripts/bench/lib.sh
. "$TEMPLATES/lib.sh"

while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --duration) DURATION=${2:?}; shift 2 ;;
    --connections) CONNECTIONS=${2:?}; shift 2 ;;
    --warmup) WARMUP=${2:?}; shift 2 ;;
    --targets) TARGETS=${2:?}; shift 2 ;;
    --lbd-config) LBD_CONFIGS=${2:?}; shift 2 ;;
    --pinning) PINNING=${2:?}; shift 2 ;;
    --rate) RATE=${2:?}; shift 2 ;;
    --mix) MIX=1; shift ;;
    --markdown) MARKDOWN=1; shift ;;
    --raw) RAW=${2:?}; shift 2 ;;
    --lbd-bin) LBD_BIN=${2:?}; BUILD=0; shift 2 ;;
    --lbd2-bin) LBD2_BIN=${2:?}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --base-port) BASE_PORT=${2:?}; shift 2 ;;
    --load-cpu) LOAD_CPU=${2:?}; shift 2 ;;
    --backend-cpu) BACKEND_CPU=${2:?}; shift 2 ;;
    --proxy-cpu) PROXY_CPU=${2:?}; shift 2 ;;
    --sched) SCHED=${2:?}; shift 2 ;;
    -h|--help) full_help; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[ -n "$WARMUP" ] || WARMUP=$(( DURATION < 3 ? DURATION : 3 ))
for v in ROUNDS DURATION WARMUP BASE_PORT; do
  is_uint "${!v}" || die "--${v,,} must be a non-negative integer, got ${!v}"
done
in_range "$ROUNDS" 1 100 || die "--rounds must be 1..100"
in_range "$DURATION" 1 600 || die "--duration must be 1..600 seconds"
IFS=, read -ra CONN_LIST <<<"$CONNECTIONS"
[ "${#CONN_LIST[@]}" -ge 1 ] || die "--connections is empty"
for c in "${CONN_LIST[@]}"; do
  # Each client connection costs the proxy two sockets; stay well below the 20000 open-file limit.
  in_range "$c" 1 2000 || die "--connections: each must be 1..2000, got $c"
  [ "$MIX" -eq 0 ] || [ "$c" -ge 4 ] || die "--mix runs wrk -t4: --connections must be >= 4, got $c"
done
case $PINNING in
  alone|shared) PIN_LIST=("$PINNING") ;;
  both) PIN_LIST=(alone shared) ;;
  *) die "--pinning must be alone, shared or both" ;;
esac
if [ -n "$RATE" ]; then in_range "$RATE" 1 1000000 || die "--rate must be 1..1000000 req/s"; fi
IFS=, read -ra LBD_CONFIG_LIST <<<"$LBD_CONFIGS"
[ "${#LBD_CONFIG_LIST[@]}" -ge 1 ] || die "--lbd-config is empty"
for c in "${LBD_CONFIG_LIST[@]}"; do
  case $c in defaults|tuned) ;; *) die "--lbd-config must be defaults, tuned or defaults,tuned; got $c" ;; esac
done
[ "${#LBD_CONFIG_LIST[@]}" -eq "$(printf '%s\n' "${LBD_CONFIG_LIST[@]}" | sort -u | wc -l)" ] || die "--lbd-config lists a config twice"
case $SCHED in
  fifo) PRIO=(chrt -f 10) ;;
  nice) PRIO=(nice -n -15) ;;
  none) PRIO=() ;;
  *) die "--sched must be fifo, nice or none" ;;
esac
in_range "$BASE_PORT" 1024 65000 || die "--base-port must be 1024..65000"

# Targets: "lbd" becomes one target per lbd config (lbd-defaults, lbd-tuned), and --lbd2-bin
# adds lbd2-<config> for each.
IFS=, read -ra REQUESTED <<<"$TARGETS"
[ "${#REQUESTED[@]}" -ge 1 ] || die "--targets is empty"
TARGET_LIST=()
for t in "${REQUESTED[@]}"; do
  case $t in
    direct|haproxy|nginx) TARGET_LIST+=("$t") ;;
    lbd) for c in "${LBD_CONFIG_LIST[@]}"; do TARGET_LIST+=("lbd-$c"); done ;;
    *) die "unknown target $t (direct, haproxy, nginx, lbd)" ;;
  esac
done
if [ -n "$LBD2_BIN" ]; then
  [ -x "$LBD2_BIN" ] || die "no lbd binary at $LBD2_BIN"
  for c in "${LBD_CONFIG_LIST[@]}"; do TARGET_LIST+=("lbd2-$c"); done
fi
want() { local t; for t in "${TARGET_LIST[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
is_lbd() { [[ $1 == lbd-* || $1 == lbd2-* ]]; }
WANT_LBD=0
for t in "${TARGET_LIST[@]}"; do [[ $t != lbd-* ]] || WANT_LBD=1; done

# Scenarios, in the order every round runs them: KIND/PINNING/cC.
SCENARIOS=()
for pin in "${PIN_LIST[@]}"; do
  for c in "${CONN_LIST[@]}"; do
    SCENARIOS+=("sat/$pin/c$c")
    [ -z "$RATE" ] || SCENARIOS+=("rate$RATE/$pin/c$c")
    [ "$MIX" -eq 0 ] || SCENARIOS+=("mix/$pin/c$c")
  done
done

[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs (load generator and proxy on different cores)"

# ---- dependencies ----
NEED=(wrk=wrk nginx=nginx haproxy=haproxy curl=curl taskset=util-linux chrt=util-linux pgrep=procps ss=iproute2)
[ -z "$RATE" ] || NEED+=(h2load=nghttp2-client)
install_missing "${NEED[@]}"
[ "$WANT_LBD" -eq 0 ] || build_lbd

NEXT_PORT=$BASE_PORT
start_work

# ---- start everything ----
start_backend "${PRIO[@]}" taskset -c "$BACKEND_CPU"

declare -A PORT_OF PID_OF ADMIN_OF
PORT_OF[direct]=$BACKEND_PORT

if want haproxy; then
  alloc_port; PORT_OF[haproxy]=$PORT
  render "$TEMPLATES/haproxy.cfg.in" "$WORK/haproxy.cfg" PORT="$PORT" BACKEND_PORT="$BACKEND_PORT" MAXCONN=4096
  "${PRIO[@]}" taskset -c "$PROXY_CPU" haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.out" 2>&1 &
  PID_OF[haproxy]=$!; STARTED+=("$!")
  wait_ready haproxy "${PID_OF[haproxy]}" "$PORT" "$WORK/haproxy.out"
fi

if want nginx; then
  alloc_port; PORT_OF[nginx]=$PORT
  render "$TEMPLATES/proxy.nginx.conf.in" "$WORK/nginx-proxy.conf" DIR="$WORK" PORT="$PORT" BACKEND_PORT="$BACKEND_PORT" \
    WORKER_CONNECTIONS=4096 NOFILE=10000
  "${PRIO[@]}" taskset -c "$PROXY_CPU" nginx -p "$WORK" -e "$WORK/nginx-proxy.error.log" -c "$WORK/nginx-proxy.conf" \
    -g 'daemon off;' >"$WORK/nginx-proxy.out" 2>&1 &
  PID_OF[nginx]=$!; STARTED+=("$!")
  wait_ready nginx-proxy "${PID_OF[nginx]}" "$PORT" "$WORK/nginx-proxy.out"
fi

LBD_THREADS=""
start_lbd() { # TARGET BINARY CONFIG(defaults|tuned)
  local t=$1 bin=$2 cfg=$3 argv
  alloc_port; PORT_OF[$t]=$PORT
  alloc_port; ADMIN_OF[$t]=$PORT
  write_lbd_config "$WORK/$t.toml" "${PORT_OF[$t]}" "$PORT" "$cfg"
  # One worker thread, explicitly when this lbd has the flag (older builds: the CPU affinity
  # alone gives tokio one worker).
  local args=${LBD_ARGS:-"run --config {CONF}"}
  if [ -z "${LBD_ARGS:-}" ] && "$bin" run --help 2>/dev/null | grep -q -- '--workers'; then
    args+=" --workers 1"
  fi
  read -ra argv <<<"${args//\{CONF\}/$WORK/$t.toml}"
  if [ "$cfg" = tuned ]; then
    "${PRIO[@]}" taskset -c "$PROXY_CPU" "$bin" "${argv[@]}" >"$WORK/$t.out" 2>&1 &
  else
    # The shipped access log writes a line per request to stdout: it is written, and dropped.
    "${PRIO[@]}" taskset -c "$PROXY_CPU" "$bin" "${argv[@]}" >/dev/null 2>"$WORK/$t.out" &
  fi
  PID_OF[$t]=$!; STARTED+=("$!")
  wait_ready "$t" "${PID_OF[$t]}" "${PORT_OF[$t]}" "$WORK/$t.out"
  LBD_THREADS+="  $t: $bin ${argv[*]} ($(awk '/^Threads:/ {print $2}' "/proc/${PID_OF[$t]}/status") threads at startup)"$'\n'
}
LBD_DEFAULTS_INSTANCES=0
for t in "${TARGET_LIST[@]}"; do
  case $t in
    lbd-*) start_lbd "$t" "$LBD_BIN" "${t#lbd-}" ;;
    lbd2-*) start_lbd "$t" "$LBD2_BIN" "${t#lbd2-}" ;;
  esac
  [[ $t != *-defaults ]] || LBD_DEFAULTS_INSTANCES=$(( LBD_DEFAULTS_INSTANCES + 1 ))
done

BACKEND_PIDS=$(pids_of "$BACKEND_PID" | tr '\n' ' ')
declare -A PIDS_OF
for t in "${TARGET_LIST[@]}"; do
  if [ "$t" = direct ]; then PIDS_OF[direct]=""; else PIDS_OF[$t]=$(pids_of "${PID_OF[$t]}" | tr '\n' ' '); fi
done

# ---- pinning ----
CURRENT_PINNING=alone   # how everything was started
pin() { # CPU PID...: every thread of each process (new threads inherit it from their creator)
  local cpu=$1 pid
  shift
  for pid in "$@"; do taskset -a -p -c "$cpu" "$pid" >/dev/null || die "taskset -a -p -c $cpu $pid failed"; done
}
apply_pinning() { # alone|shared
  [ "$1" != "$CURRENT_PINNING" ] || return 0
  local backend_cpu=$BACKEND_CPU t pids
  [ "$1" = alone ] || backend_cpu=$PROXY_CPU
  read -ra pids <<<"$BACKEND_PIDS"
  pin "$backend_cpu" "${pids[@]}"
  for t in "${TARGET_LIST[@]}"; do
    [ "$t" != direct ] || continue
    read -ra pids <<<"${PIDS_OF[$t]}"
    pin "$PROXY_CPU" "${pids[@]}"
  done
  CURRENT_PINNING=$1
}

# The backend's request counter (stub_status "requests"; the status request itself counts).
backend_requests() {
  local n
  n=$(curl -s --max-time 5 "http://127.0.0.1:$BACKEND_PORT/nginx_status" | awk 'NR == 3 {print $3}')
  is_uint "$n" || die "could not read the backend's stub_status"
  echo "$n"
}

# lbd's count of requests its HTTP/1 fast path served (the rest went to hyper); "-" for others.
fast_path_requests() { # TARGET
  is_lbd "$1" || { echo -; return 0; }
  curl -s --max-time 5 "http://127.0.0.1:${ADMIN_OF[$1]}/metrics" |
    awk '$1 == "lbd_http1_fast_path_requests_total" { n = $2 } END { print n == "" ? "-" : n }'
}

# ---- measuring ----
to_us() { # wrk latency ("812.00us", "1.20ms", "2.00s") -> microseconds
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") m = 1; else if (u == "ms") m = 1000; else if (u == "s") m = 1e6; else if (u == "m") m = 6e7; else m = -1
    if (m < 0) print "NaN"; else printf "%.0f", n * m }'
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
FAILED=0

busy_ticks() { # non-idle ticks of all CPUs (user nice system irq softirq steal) from /proc/stat
  local user nice system irq softirq steal _
  read -r _ user nice system _ _ irq softirq steal _ </proc/stat
  echo $(( user + nice + system + irq + softirq + steal ))
}

load_command() { # KIND CONNECTIONS SECONDS URL LOGFILE: the load tool's argv, in LOAD_CMD
  local kind=$1 c=$2 secs=$3 url=$4 log=$5
  # --timeout / -N: a stalled proxy shows up as timeouts instead of a hang; both stop after the
  # duration.
  case $kind in
    sat) LOAD_CMD=(wrk -t1 -c"$c" -d"${secs}s" --timeout 5s --latency "$url") ;;
    mix) LOAD_CMD=(wrk -t4 -c"$c" -d"${secs}s" --timeout 5s --latency -s "$TEMPLATES/mix.lua" "$url") ;;
    rate*) LOAD_CMD=(h2load --h1 -t1 -c"$c" --rps "$(awk -v r="$RATE" -v c="$c" 'BEGIN {printf "%.6f", r / c}')"
                     -D "$secs" -N 5s --log-file "$log" "$url") ;;
  esac
}

# Prints "requests answered_ok rps p50_us p99_us errors" from the load tool's output.
parse_wrk() { # OUT
  local out=$1 requests rps p50 p99
  requests=$(awk '/ requests in / {print $1}' "$out")
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")
  p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")
  # Errors: non-2xx/3xx responses plus socket errors (connect, read, write, timeout).
  awk -v n="$requests" -v rps="$rps" -v p50="$p50" -v p99="$p99" '
    /Non-2xx or 3xx responses:/ { bad += $NF }
    /Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) sock += $i + 0 }
    END { print n, n - bad, rps, p50, p99, bad + sock }' "$out"
}
parse_h2load() { # OUT LOG
  local out=$1 log=$2
  awk '
    /^finished in / { rps = $4 }
    /^requests: / { done = $8; failed = $12; errored = $14; timeout = $16 }
    /^status codes: / { ok = $3 + $5; bad = $7 + $9 }
    END { print done + 0, ok + 0, rps + 0, failed + errored + timeout + bad }' "$out" | {
    read -r done ok rps errors
    # Latency percentiles (nearest rank) from the per-request log: column 3, microseconds.
    read -r p50 p99 < <(awk '{print $3}' "$log" | sort -n | awk '{ v[NR] = $1 }
      END { if (!NR) { print "NaN NaN"; exit }
            i = int(NR * 0.5); if (i < NR * 0.5) i++; j = int(NR * 0.99); if (j < NR * 0.99) j++
            print v[i < 1 ? 1 : i], v[j < 1 ? 1 : j] }')
    echo "$done $ok $rps $p50 $p99 $errors"
  }
}

fail() { # ROUND SCENARIO TARGET MESSAGE
  echo "bench-proxy: FAIL: round $1, $2, $3: $4" >&2
  CHECK=FAIL
}

run_one() { # ROUND SCENARIO TARGET SECONDS: one load run; appends a row to RESULTS unless ROUND is "warmup"
  local round=$1 scen=$2 t=$3 secs=$4 kind pinning c
  IFS=/ read -r kind pinning c <<<"$scen"
  c=${c#c}
  local out="$WORK/load.$t.$round.${scen//\//.}.out"
  apply_pinning "$pinning"
  load_command "$kind" "$c" "$secs" "http://127.0.0.1:${PORT_OF[$t]}/" "$out.log"
  local -a ppids bpids
  read -ra ppids <<<"${PIDS_OF[$t]}"
  read -ra bpids <<<"$BACKEND_PIDS"
  local p0=0 p1=0 ps0=0 ps1=0 b0 b1 s0 s1 r0 r1 f0 f1 wcpu _
  r0=$(backend_requests)
  f0=$(fast_path_requests "$t")
  [ "${#ppids[@]}" -eq 0 ] || read -r p0 ps0 < <(ticks_of "${ppids[@]}")
  read -r b0 _ < <(ticks_of "${bpids[@]}")
  s0=$(busy_ticks)
  # bash's `time` gives the load tool's own CPU time, so that the rest of the machine's load can
  # be told apart.
  if ! { TIMEFORMAT='%U %S'; time "${PRIO[@]}" taskset -c "$LOAD_CPU" "${LOAD_CMD[@]}" >"$out" 2>&1; } 2>"$out.time"; then
    cat "$out" >&2
    die "${LOAD_CMD[0]} failed against $t ($scen)"
  fi
  s1=$(busy_ticks)
  local pid
  for pid in "${ppids[@]}" "${bpids[@]}"; do
    ! dead "$pid" || die "process $pid ($t or the backend) died during the run"
  done
  [ "${#ppids[@]}" -eq 0 ] || read -r p1 ps1 < <(ticks_of "${ppids[@]}")
  read -r b1 _ < <(ticks_of "${bpids[@]}")
  r1=$(backend_requests)
  f1=$(fast_path_requests "$t")
  [ "$round" = warmup ] && return 0
  wcpu=$(awk '{print $1 + $2}' "$out.time")

  local requests ok rps p50 p99 errors
  if [[ $kind == rate* ]]; then
    read -r requests ok rps p50 p99 errors < <(parse_h2load "$out" "$out.log")
  else
    read -r requests ok rps p50 p99 errors < <(parse_wrk "$out")
  fi
  if ! is_uint "${requests:-x}" || [ -z "$rps" ] || [ "$requests" -eq 0 ]; then
    cat "$out" >&2
    die "could not parse ${LOAD_CMD[0]}'s output for $t ($scen), or it made no request"
  fi

  # Checks. The backend's count includes the second status request, up to C requests still in
  # flight when the load tool stopped (sent, never counted), and lbd-defaults' health checks
  # (GET /healthz every 2 s to each of its two "web" backends: 1/s per instance, all running).
  CHECK=ok
  local served=$(( r1 - r0 - 1 )) slack=$(( c + LBD_DEFAULTS_INSTANCES * (secs + 3) + 5 ))
  [ "$errors" -eq 0 ] || fail "$round" "$scen" "$t" "${LOAD_CMD[0]} saw $errors errors (non-2xx, socket errors, timeouts) in $requests requests"
  [ "$served" -ge "$ok" ] || fail "$round" "$scen" "$t" "the backend served $served requests, fewer than the $ok answered ones ${LOAD_CMD[0]} counted"
  [ "$served" -le $(( requests + slack )) ] ||
    fail "$round" "$scen" "$t" "the backend served $served requests, more than the $requests counted + $slack in flight or health checks (retries?)"
  [ "$CHECK" = ok ] || FAILED=$(( FAILED + 1 ))
  if [[ $kind == rate* ]] && awk -v r="$rps" -v want="$RATE" 'BEGIN { exit !(r < 0.95 * want) }'; then
    echo "bench-proxy: WARN: round $round, $scen, $t: held only $rps of the $RATE req/s offered; its CPU per request is at a lower rate" >&2
  fi

  # others%: CPU used by everything but the load tool, backend and proxy, as a share of all CPUs.
  # Anything well above 0 means the run competed with other work (builds) and its req/s is suspect.
  awk -v r="$round" -v scen="$scen" -v t="$t" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v n="$requests" -v e="$errors" \
      -v dp=$(( p1 - p0 )) -v db=$(( b1 - b0 )) -v ds=$(( s1 - s0 )) -v dps=$(( ps1 - ps0 )) -v wcpu="$wcpu" -v hz="$CLK_TCK" \
      -v secs="$secs" -v ncpu="$(nproc --all)" -v isproxy="${#ppids[@]}" -v check="$CHECK" -v f0="$f0" -v f1="$f1" \
    'BEGIN {
      pcpu = isproxy ? sprintf("%.2f", dp / hz * 1e6 / n) : "-"
      psys = isproxy ? sprintf("%.2f", dps / hz * 1e6 / n) : "-"
      pcore = isproxy ? sprintf("%.0f", dp / hz / secs * 100) : "-"
      others = (ds - dp - db - wcpu * hz) / (ncpu * secs * hz) * 100
      if (others < 0) others = 0
      fast = f0 == "-" || f1 == "-" ? "-" : sprintf("%.0f", (f1 - f0) / n * 100)
      printf "%s\t%s\t%s\t%.0f\t%s\t%s\t%d\t%d\t%s\t%.2f\t%s\t%.2f\t%.0f\t%s\t%s\t%s\n", r, scen, t, rps, p50, p99, n, e, pcpu,
        db / hz * 1e6 / n, pcore, wcpu * 1e6 / n, others, psys, check, fast
    }' >>"$RESULTS"
}

# Columns of RESULTS: 1 round, 2 scenario, 3 target, 4 rps, 5 p50_us, 6 p99_us, 7 requests,
# 8 errors, 9 proxy_cpu_us_per_req, 10 backend_cpu_us_per_req, 11 proxy_core_pct,
# 12 load_cpu_us_per_req, 13 others_pct, 14 proxy_sys_cpu_us_per_req, 15 check (ok/FAIL),
# 16 fast_pct (lbd: share of the requests its HTTP/1 fast path served; "-" for the others)
RAW_HEADER=$'round\tscenario\ttarget\trps\tp50_us\tp99_us\trequests\terrors\tproxy_cpu_us_per_req\tbackend_cpu_us_per_req\tproxy_core_pct\tload_cpu_us_per_req\tothers_pct\tproxy_sys_cpu_us_per_req\tcheck\tfast_pct'
TABLE_FMT="%-13s %9s %9s %8s %8s %7s %13s %12s %15s %11s %12s %8s %6s %6s\n"
table_header() {
  # shellcheck disable=SC2059 # the format is ours
  printf "$TABLE_FMT" target req/s vs_direct p50_us p99_us errors proxy_us/req "(of it sys)" backend_us/req proxy_core% load_us/req others% check fast%
}
print_round() { # ROUND
  local scen
  for scen in "${SCENARIOS[@]}"; do
    echo "  $scen"
    table_header
    awk -F'\t' -v r="$1" -v s="$scen" -v fmt="$TABLE_FMT" '
      $1 == r && $2 == s { row[++n] = $0; if ($3 == "direct") d = $4 }
      END { for (i = 1; i <= n; i++) { split(row[i], f, "\t")
              printf fmt, f[3], f[4], d ? sprintf("%.3f", f[4] / d) : "-", f[5], f[6], f[8], f[9], f[14], f[10], f[11], f[12], f[13], f[15], f[16] } }' "$RESULTS"
  done
}

# Medians per scenario and target; ratios are medians of per-round ratios (same round and
# scenario only). Prints: scenario target rps ratio_vs_direct p50 p99 errors_total proxy_us
# backend_us core_pct load_us others_pct rounds proxy_sys_us failed_runs fast_pct
summary_tsv() {
  local s t
  for s in "${SCENARIOS[@]}"; do
    for t in "${TARGET_LIST[@]}"; do
      awk -F'\t' -v s="$s" -v t="$t" '
        function median(a, n,   i, j, x) {
          for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
          return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        $2 != s { next }
        $3 == "direct" { d[$1] = $4 }
        $3 == t { n++; rps[n] = $4; p50[n] = $5; p99[n] = $6; err += $8; pc[n] = $9; bc[n] = $10; core[n] = $11; rd[n] = $1
                  wc[n] = $12; oth[n] = $13; ps[n] = $14; if ($15 != "ok") failed++; fp[n] = $16 }
        END {
          if (!n) exit
          m = 0; for (i = 1; i <= n; i++) if (d[rd[i]]) ratio[++m] = rps[i] / d[rd[i]]
          printf "%s\t%s\t%.0f\t%s\t%.0f\t%.0f\t%d\t%s\t%.2f\t%s\t%.2f\t%.0f\t%d\t%s\t%d\t%s\n", s, t, median(rps, n),
            m ? sprintf("%.3f", median(ratio, m)) : "-", median(p50, n), median(p99, n), err,
            pc[1] == "-" ? "-" : sprintf("%.2f", median(pc, n)), median(bc, n),
            core[1] == "-" ? "-" : sprintf("%.0f", median(core, n)), median(wc, n), median(oth, n), n,
            ps[1] == "-" ? "-" : sprintf("%.2f", median(ps, n)), failed, fp[1] == "-" ? "-" : sprintf("%.0f", median(fp, n))
        }' "$RESULTS"
    done
  done
}

# A against B in one scenario, round by round: prints "req/s-ratio cpu-ratio A-faster-rounds
# A-cheaper-rounds rounds" (ratios are medians of per-round ratios), or nothing when they share
# no round.
compare() { # SCENARIO A B
  awk -F'\t' -v s="$1" -v a="$2" -v b="$3" '
    function median(x, n,   i, j, v) {
      for (i = 2; i <= n; i++) { v = x[i]; for (j = i - 1; j >= 1 && x[j] > v; j--) x[j + 1] = x[j]; x[j + 1] = v }
      return n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
    }
    $2 != s { next }
    $3 == a { ar[$1] = $4; ac[$1] = $9 } $3 == b { br[$1] = $4; bc[$1] = $9 }
    END {
      for (k in ar) if (k in br) { n++; rr[n] = ar[k] / br[k]; cr[n] = ac[k] / bc[k]; if (ar[k] >= br[k]) wr++; if (ac[k] < bc[k]) wc++ }
      if (!n) exit
      printf "%.3f\t%.3f\t%d\t%d\t%d\n", median(rr, n), median(cr, n), wr, wc, n
    }' "$RESULTS"
}

# Per scenario: each lbd against each other proxy, lbd2-X against lbd-X, and the issue-3 target
# (less CPU per request than HAProxy and nginx, at least their req/s) for each lbd at saturation.
lbd_verdict() {
  local s a b r rr cr wr wc n compared ok verdict
  for s in "${SCENARIOS[@]}"; do
    for a in "${TARGET_LIST[@]}"; do
      is_lbd "$a" || continue
      compared=() ok=1
      for b in haproxy nginx "lbd-${a#lbd2-}"; do
        if [ "$a" = "$b" ] || ! want "$b"; then continue; fi
        r=$(compare "$s" "$a" "$b")
        [ -n "$r" ] || continue
        IFS=$'\t' read -r rr cr wr wc n <<<"$r"
        echo "$s: $a vs $b: req/s ratio $rr ($a >= $b in $wr/$n rounds), CPU/request ratio $cr ($a lower in $wc/$n rounds)"
        if [[ $a == lbd-* ]]; then
          compared+=("$b")
          awk -v rr="$rr" -v cr="$cr" 'BEGIN { exit !(rr >= 1 && cr < 1) }' || ok=0
        fi
      done
      [[ $s == sat/* ]] && [ "${#compared[@]}" -gt 0 ] || continue
      verdict="NOT MET"
      [ "$ok" -eq 0 ] || verdict=MET
      echo "$s: target ($a: less CPU per request than ${compared[*]}, at least their req/s; medians): $verdict"
    done
  done
}

LBD_CONFIG_DESC=""
for c in "${LBD_CONFIG_LIST[@]}"; do
  case $c in
    defaults) LBD_CONFIG_DESC+="lbd-defaults = configs/lbd.example.toml with only the addresses changed and [[rate_limit]] removed (scripts/bench/lbd-defaults.sh; access log on, stdout to /dev/null). " ;;
    tuned) LBD_CONFIG_DESC+="lbd-tuned = scripts/bench/lbd.toml.in (pool idle_max 256, no access log, no health checks, only X-Forwarded-For). " ;;
  esac
done
LOAD_TOOLS="$(wrk -v 2>&1 | awk 'NR == 1 {print $1, $2}' || true)"
[ -z "$RATE" ] || LOAD_TOOLS+=", $(h2load --version 2>&1 | head -1 || true)"
pinning_desc() {
  local p out=""
  for p in "${PIN_LIST[@]}"; do
    case $p in
      alone) out+="alone = load tool and backend on CPU $LOAD_CPU/$BACKEND_CPU, proxy alone on CPU $PROXY_CPU; " ;;
      shared) out+="shared = load tool on CPU $LOAD_CPU, backend and proxy on CPU $PROXY_CPU; " ;;
    esac
  done
  echo "${out%; }"
}

# ---- run ----
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo "bench-proxy: $(commit_desc); $(nproc --all) CPUs ($CPU_MODEL), kernel $(uname -r)"
echo "  $(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy $(haproxy -v | awk 'NR == 1 {print $3}'), $LOAD_TOOLS"
echo "  pinning: $(pinning_desc)"
echo "  rounds $ROUNDS of ${DURATION}s per target and scenario, warm-up ${WARMUP}s per target; scheduling: $SCHED"
echo "  scenarios: ${SCENARIOS[*]}"
echo "  targets: ${TARGET_LIST[*]}"
[ "$WANT_LBD" -eq 0 ] && [ -z "$LBD2_BIN" ] || echo "  lbd config: $LBD_CONFIG_DESC"
[ -z "$LBD_THREADS" ] || printf '%s' "$LBD_THREADS"

if [ "$WARMUP" -gt 0 ]; then
  for t in "${TARGET_LIST[@]}"; do run_one warmup "${SCENARIOS[0]}" "$t" "$WARMUP"; done
fi
for (( round = 1; round <= ROUNDS; round++ )); do
  for scen in "${SCENARIOS[@]}"; do
    for t in "${TARGET_LIST[@]}"; do run_one "$round" "$scen" "$t" "$DURATION"; done
  done
  echo
  echo "round $round/$ROUNDS"
  print_round "$round"
done

SUMMARY=$(summary_tsv)
echo
echo "summary: medians over $ROUNDS rounds (vs_direct = median of per-round req/s ratios; check: runs that failed their checks)"
for scen in "${SCENARIOS[@]}"; do
  echo "  $scen"
  table_header
  awk -F'\t' -v s="$scen" -v fmt="$TABLE_FMT" '$1 == s { printf fmt, $2, $3, $4, $5, $6, $7, $8, $14, $9, $10, $11, $12, $15 ? "FAIL:" $15 : "ok", $16 }' <<<"$SUMMARY"
done
VERDICT=$(lbd_verdict)
[ -z "$VERDICT" ] || { echo; echo "$VERDICT"; }

[ -z "$RAW" ] || { echo "$RAW_HEADER"; cat "$RESULTS"; } >"$RAW"

if [ "$MARKDOWN" -eq 1 ]; then
  echo
  echo "Commit: $(commit_desc). $(date -u +%Y-%m-%d). $(nproc --all) CPUs ($CPU_MODEL), kernel $(uname -r)."
  echo "Command: \`$COMMAND_LINE\` ($ROUNDS rounds of ${DURATION}s; $LOAD_TOOLS; pinning: $(pinning_desc); scheduling: $SCHED)."
  [ "$WANT_LBD" -eq 0 ] && [ -z "$LBD2_BIN" ] || echo "lbd config: $LBD_CONFIG_DESC"
  echo "Scenarios: sat = wrk GET / at saturation, rateR = h2load at R req/s, mix = scripts/bench/mix.lua; cC = C connections."
  echo
  echo "| scenario | target | req/s | vs direct | p50 µs | p99 µs | errors | proxy CPU µs/req | of it kernel | backend CPU µs/req | proxy core % | load tool CPU µs/req | others % | lbd fast path % | checks |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $14, $9, $10, $11, $12,
    $16, $15 ? "**FAIL** " $15 "/" $13 : "ok" }' <<<"$SUMMARY"
  if [ -n "$VERDICT" ]; then
    echo
    while IFS= read -r line; do echo "- $line"; done <<<"$VERDICT"
  fi
fi

if [ "$FAILED" -gt 0 ]; then
  echo >&2
  echo "bench-proxy: FAIL: $FAILED run(s) failed their checks (FAIL lines above; the figures are printed all the same)" >&2
  exit 1
fi
