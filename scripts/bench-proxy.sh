#!/usr/bin/env bash
# L7 proxy benchmark (issue 3): wrk against an nginx backend directly, then through HAProxy,
# nginx-as-proxy and lbd, in interleaved rounds. Prints figures; it is not a test and never fails
# on a slow result.
#
#   scripts/bench-proxy.sh [--rounds N] [--duration S] [--connections C] [--warmup S]
#                          [--targets direct,haproxy,nginx,lbd] [--markdown] [--raw FILE]
#                          [--lbd-bin PATH] [--lbd2-bin PATH] [--no-build] [--sched fifo|nice|none]
#                          [--load-cpu L] [--backend-cpu L] [--proxy-cpu L] [--base-port P]
#
# Per target and round it prints req/s, p50 and p99 latency (wrk --latency), and the CPU time the
# proxy spent per request: utime+stime of every thread of the proxy's processes (nginx: master and
# worker), read from /proc/PID/stat before and after the run. Also per request: the backend's CPU
# (should be about the same for every proxy; when it isn't, the run is suspect) and wrk's CPU.
# proxy_core% is the proxy's CPU over the run's wall time: near 95-100% the proxy's core is the
# bottleneck, so its req/s is its capacity. others% is CPU used by every other process on the
# machine (builds, fuzzers) as a share of all CPUs; in the direct run the idle proxy core is free
# for them, so only the proxied rows say whether the run competed with them.
# The summary gives medians across rounds, and each target's req/s as a ratio to the direct run
# of the same round (median of the per-round ratios: rounds vary by ±20% here, ratios much less).
# `--markdown` adds the summary as a Markdown table with the commit, for BENCHMARKS.md.
#
# Pinning (the machine has 2 cores; the same scheme for every proxy):
#   CPU 0: wrk (-t1) and the backend nginx (one worker)
#   CPU 1: the proxy under test, alone (HAProxy nbthread 1, nginx worker_processes 1, lbd with
#          one worker thread; taskset is inherited by nginx's worker and by every lbd thread)
# The direct run measures what CPU 0 can do (load generator + backend): more than one core of
# proxy can carry, so the proxied runs are bound by the proxy's core and req/s follows CPU per
# request. Only one proxy carries traffic at a time; all stay up for the whole benchmark.
#
# Scheduling: the machine is shared with other people's builds. By default (--sched fifo) wrk,
# the backend and the proxies run SCHED_FIFO (chrt -f 10) so a compiler on the same core cannot
# delay their wake-ups; the kernel still leaves other tasks ~5% of each CPU (RT throttling / fair
# server), which shows up as multi-millisecond p99 while other work is running: read p99 only
# from a quiet machine. --sched nice uses nice -15 instead, --sched none neither.
#
# Like-for-like: every proxy keeps client and backend connections alive (nginx: upstream
# keepalive + HTTP/1.1; HAProxy: http-reuse always; lbd: pool keepalive) and adds only
# X-Forwarded-For. No access logs. Everything listens on 127.0.0.1 only, on free ports found from
# --base-port up. Everything started is killed by PID on exit, and the temp dir is removed.
#
# Installs wrk, nginx and haproxy with apt-get when missing (needs root), and builds lbd with
# `cargo build --release -p lbd` unless lbd is not among the targets or --no-build is given.
# lbd runs as `lbd run --config {CONF} --workers 1` (without --workers if that lbd has no such
# flag: the CPU affinity alone then gives tokio one worker). LBD_ARGS overrides the arguments
# (use {CONF} for the config path); LBD_WORKERS_LINE adds a line to its config's [global] table.
# A/B testing lbd: --lbd2-bin PATH adds the target "lbd2", a second lbd binary with the same
# config, measured interleaved with the others (build it from a copy of the tree).
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
die() { echo "bench-proxy: $*" >&2; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
in_range() { [[ $1 =~ ^-?[0-9]+$ ]] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; } # VALUE LO HI

while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --duration) DURATION=${2:?}; shift 2 ;;
    --connections) CONNECTIONS=${2:?}; shift 2 ;;
    --warmup) WARMUP=${2:?}; shift 2 ;;
    --targets) TARGETS=${2:?}; shift 2 ;;
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
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[ -n "$WARMUP" ] || WARMUP=$(( DURATION < 3 ? DURATION : 3 ))
for v in ROUNDS DURATION CONNECTIONS WARMUP BASE_PORT; do
  is_uint "${!v}" || die "--${v,,} must be a non-negative integer, got ${!v}"
done
in_range "$ROUNDS" 1 100 || die "--rounds must be 1..100"
in_range "$DURATION" 1 600 || die "--duration must be 1..600 seconds"
# Each client connection costs the proxy two sockets; stay well below the 20000 open-file limit.
in_range "$CONNECTIONS" 1 2000 || die "--connections must be 1..2000"
case $SCHED in
  fifo) PRIO=(chrt -f 10) ;;
  nice) PRIO=(nice -n -15) ;;
  none) PRIO=() ;;
  *) die "--sched must be fifo, nice or none" ;;
esac
in_range "$BASE_PORT" 1024 65000 || die "--base-port must be 1024..65000"

IFS=, read -ra TARGET_LIST <<<"$TARGETS"
[ "${#TARGET_LIST[@]}" -ge 1 ] || die "--targets is empty"
want() { local t; for t in "${TARGET_LIST[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
for t in "${TARGET_LIST[@]}"; do
  case $t in direct|haproxy|nginx|lbd) ;; *) die "unknown target $t (direct, haproxy, nginx, lbd)" ;; esac
done
if [ -n "$LBD2_BIN" ]; then
  [ -x "$LBD2_BIN" ] || die "no lbd binary at $LBD2_BIN"
  TARGET_LIST+=(lbd2)
fi

[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs (load generator and proxy on different cores)"

# ---- dependencies ----
declare -A NEED=([wrk]=wrk [nginx]=nginx [haproxy]=haproxy [curl]=curl [taskset]=util-linux [chrt]=util-linux [pgrep]=procps [ss]=iproute2)
missing=()
for cmd in "${!NEED[@]}"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}"); done
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  [ "$(id -u)" -eq 0 ] || die "must be root to install ${pkgs[*]}"
  echo "bench-proxy: installing ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
fi

if want lbd; then
  if [ -z "$LBD_BIN" ]; then
    LBD_BIN=$ROOT/target/release/lbd
    if [ "$BUILD" -eq 1 ]; then
      echo "bench-proxy: cargo build --release -p lbd" >&2
      cargo build --release -p lbd >&2 || die "lbd does not build; run with --targets direct,haproxy,nginx"
    fi
  fi
  [ -x "$LBD_BIN" ] || die "no lbd binary at $LBD_BIN"
fi

# ---- process bookkeeping ----
WORK=$(mktemp -d /tmp/bench-proxy.XXXXXX)
STARTED=()   # every PID we started; nginx workers die with their master

dead() { # PID: gone or zombie (a zombie is dead, only not yet reaped)
  local line
  read -r line 2>/dev/null <"/proc/$1/stat" || return 0
  line=${line##*) }
  [ "${line:0:1}" = Z ] || [ "${line:0:1}" = X ]
}

cleanup() {
  local pid i
  trap - EXIT INT TERM
  for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do
    for (( i = 0; i < 50; i++ )); do dead "$pid" && break; sleep 0.1; done
    dead "$pid" || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { [ -z "$(ss -Htln "sport = :$1")" ]; }
NEXT_PORT=$BASE_PORT
alloc_port() { # prints a free port >= NEXT_PORT; bounded search
  local p
  for (( p = NEXT_PORT; p < NEXT_PORT + 200; p++ )); do
    if port_free "$p"; then NEXT_PORT=$(( p + 1 )); PORT=$p; return 0; fi
  done
  die "no free port in $NEXT_PORT..$(( NEXT_PORT + 199 ))"
}

render() { # TEMPLATE OUT KEY=VALUE...
  local tpl=$1 out=$2 kv expr=()
  shift 2
  for kv in "$@"; do expr+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${expr[@]}" "$tpl" >"$out"
  ! grep -q '@[A-Z_]*@' "$out" || die "unfilled placeholder in $out"
}

wait_ready() { # NAME PID PORT LOG: until GET / answers 200 "ok", bounded to 10 s
  local name=$1 pid=$2 port=$3 log=$4 i body
  for (( i = 0; i < 100; i++ )); do
    if dead "$pid"; then
      echo "bench-proxy: $name exited during startup; its output:" >&2
      cat "$log" >&2 || true
      die "$name failed to start"
    fi
    body=$(curl -s --max-time 1 "http://127.0.0.1:$port/" 2>/dev/null || true)
    [ "$body" = ok ] && return 0
    sleep 0.1
  done
  cat "$log" >&2 || true
  die "$name did not answer 200 \"ok\" on 127.0.0.1:$port within 10 s"
}

# ---- start everything ----
alloc_port; BACKEND_PORT=$PORT
mkdir -p "$WORK/backend-tmp" "$WORK/proxy-tmp"
render "$TEMPLATES/backend.nginx.conf.in" "$WORK/backend.conf" DIR="$WORK" BACKEND_PORT="$BACKEND_PORT"
"${PRIO[@]}" taskset -c "$BACKEND_CPU" nginx -p "$WORK" -e "$WORK/backend.error.log" -c "$WORK/backend.conf" \
  -g 'daemon off;' >"$WORK/backend.out" 2>&1 &
BACKEND_PID=$!; STARTED+=("$BACKEND_PID")
wait_ready backend "$BACKEND_PID" "$BACKEND_PORT" "$WORK/backend.out"

declare -A PORT_OF PID_OF
PORT_OF[direct]=$BACKEND_PORT

if want haproxy; then
  alloc_port; PORT_OF[haproxy]=$PORT
  render "$TEMPLATES/haproxy.cfg.in" "$WORK/haproxy.cfg" PORT="$PORT" BACKEND_PORT="$BACKEND_PORT"
  "${PRIO[@]}" taskset -c "$PROXY_CPU" haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.out" 2>&1 &
  PID_OF[haproxy]=$!; STARTED+=("$!")
  wait_ready haproxy "${PID_OF[haproxy]}" "$PORT" "$WORK/haproxy.out"
fi

if want nginx; then
  alloc_port; PORT_OF[nginx]=$PORT
  render "$TEMPLATES/proxy.nginx.conf.in" "$WORK/nginx-proxy.conf" DIR="$WORK" PORT="$PORT" BACKEND_PORT="$BACKEND_PORT"
  "${PRIO[@]}" taskset -c "$PROXY_CPU" nginx -p "$WORK" -e "$WORK/nginx-proxy.error.log" -c "$WORK/nginx-proxy.conf" \
    -g 'daemon off;' >"$WORK/nginx-proxy.out" 2>&1 &
  PID_OF[nginx]=$!; STARTED+=("$!")
  wait_ready nginx-proxy "${PID_OF[nginx]}" "$PORT" "$WORK/nginx-proxy.out"
fi

LBD_THREADS=""
start_lbd() { # TARGET BINARY
  local t=$1 bin=$2 argv
  alloc_port; PORT_OF[$t]=$PORT
  alloc_port
  render "$TEMPLATES/lbd.toml.in" "$WORK/$t.toml" PORT="${PORT_OF[$t]}" BACKEND_PORT="$BACKEND_PORT" \
    ADMIN_PORT="$PORT" WORKERS_LINE="${LBD_WORKERS_LINE-}"
  # One worker thread, explicitly when this lbd has the flag (older builds: the CPU affinity
  # alone gives tokio one worker).
  local args=${LBD_ARGS:-"run --config {CONF}"}
  if [ -z "${LBD_ARGS:-}" ] && "$bin" run --help 2>/dev/null | grep -q -- '--workers'; then
    args+=" --workers 1"
  fi
  read -ra argv <<<"${args//\{CONF\}/$WORK/$t.toml}"
  "${PRIO[@]}" taskset -c "$PROXY_CPU" "$bin" "${argv[@]}" >"$WORK/$t.out" 2>&1 &
  PID_OF[$t]=$!; STARTED+=("$!")
  wait_ready "$t" "${PID_OF[$t]}" "${PORT_OF[$t]}" "$WORK/$t.out"
  LBD_THREADS+="  $t: $bin ${argv[*]} ($(awk '/^Threads:/ {print $2}' "/proc/${PID_OF[$t]}/status") threads at startup)"$'\n'
}
if want lbd; then start_lbd lbd "$LBD_BIN"; fi
if want lbd2; then start_lbd lbd2 "$LBD2_BIN"; fi

# A process and its children (nginx: master + worker). Children are listed once, after startup:
# nothing here reloads, so the set is stable.
pids_of() { local p=$1; echo "$p"; pgrep -P "$p" || true; }
BACKEND_PIDS=$(pids_of "$BACKEND_PID" | tr '\n' ' ')
declare -A PIDS_OF
for t in haproxy nginx lbd lbd2; do want "$t" && PIDS_OF[$t]=$(pids_of "${PID_OF[$t]}" | tr '\n' ' '); done
PIDS_OF[direct]=""

CLK_TCK=$(getconf CLK_TCK)
ticks_of() { # PIDS...: "utime+stime stime" (fields 14 and 15, all threads) summed, in clock ticks
  local total=0 sys=0 pid line f
  for pid in "$@"; do
    read -r line <"/proc/$pid/stat" || die "process $pid vanished"
    # Field 2 (comm) may contain spaces; everything after the last ')' starts at field 3.
    read -ra f <<<"${line##*) }"
    total=$(( total + f[11] + f[12] ))
    sys=$(( sys + f[12] ))
  done
  echo "$total $sys"
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

busy_ticks() { # non-idle ticks of all CPUs (user nice system irq softirq steal) from /proc/stat
  local user nice system irq softirq steal _
  read -r _ user nice system _ _ irq softirq steal _ </proc/stat
  echo $(( user + nice + system + irq + softirq + steal ))
}

run_one() { # ROUND TARGET SECONDS: one wrk run; appends a row to RESULTS unless ROUND is "warmup"
  local round=$1 t=$2 secs=$3 out="$WORK/wrk.$2.$1.out"
  local -a ppids bpids
  read -ra ppids <<<"${PIDS_OF[$t]}"
  read -ra bpids <<<"$BACKEND_PIDS"
  local p0=0 p1=0 ps0=0 ps1=0 b0 b1 s0 s1 wcpu _
  [ "${#ppids[@]}" -eq 0 ] || read -r p0 ps0 < <(ticks_of "${ppids[@]}")
  read -r b0 _ < <(ticks_of "${bpids[@]}")
  s0=$(busy_ticks)
  # --timeout: a stalled proxy shows up as timeouts instead of a hang; wrk itself stops after -d.
  # bash's `time` gives wrk's own CPU time, so that the rest of the machine's load can be told apart.
  if ! { TIMEFORMAT='%U %S'; time "${PRIO[@]}" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${secs}s" \
           --timeout 5s --latency "http://127.0.0.1:${PORT_OF[$t]}/" >"$out" 2>&1; } 2>"$out.time"; then
    cat "$out" >&2
    die "wrk failed against $t"
  fi
  s1=$(busy_ticks)
  local pid
  for pid in "${ppids[@]}" "${bpids[@]}"; do
    ! dead "$pid" || die "process $pid ($t or the backend) died during the run"
  done
  [ "${#ppids[@]}" -eq 0 ] || read -r p1 ps1 < <(ticks_of "${ppids[@]}")
  read -r b1 _ < <(ticks_of "${bpids[@]}")
  [ "$round" = warmup ] && return 0
  wcpu=$(awk '{print $1 + $2}' "$out.time")

  local requests rps p50 p99 errors
  requests=$(awk '/ requests in / {print $1}' "$out")
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")
  p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")
  # Errors: non-2xx responses plus socket errors (connect, read, write, timeout).
  errors=$(awk '/Non-2xx or 3xx responses:/ {e += $NF}
    /Socket errors:/ {for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) e += $i + 0}
    END {print e + 0}' "$out")
  if [ -z "$requests" ] || [ -z "$rps" ] || [ "$requests" -eq 0 ]; then
    cat "$out" >&2
    die "could not parse wrk output for $t (or it made no request)"
  fi
  # others%: CPU used by everything but wrk, backend and proxy, as a share of all CPUs. Anything
  # well above 0 means the run competed with other work (builds) and its req/s is suspect.
  awk -v r="$round" -v t="$t" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v n="$requests" -v e="$errors" \
      -v dp=$(( p1 - p0 )) -v db=$(( b1 - b0 )) -v ds=$(( s1 - s0 )) -v dps=$(( ps1 - ps0 )) -v wcpu="$wcpu" -v hz="$CLK_TCK" \
      -v secs="$secs" -v ncpu="$(nproc --all)" -v isproxy="${#ppids[@]}" \
    'BEGIN {
      pcpu = isproxy ? sprintf("%.2f", dp / hz * 1e6 / n) : "-"
      psys = isproxy ? sprintf("%.2f", dps / hz * 1e6 / n) : "-"
      pcore = isproxy ? sprintf("%.0f", dp / hz / secs * 100) : "-"
      others = (ds - dp - db - wcpu * hz) / (ncpu * secs * hz) * 100
      if (others < 0) others = 0
      printf "%s\t%s\t%.0f\t%s\t%s\t%d\t%d\t%s\t%.2f\t%s\t%.2f\t%.0f\t%s\n", r, t, rps, p50, p99, n, e, pcpu,
        db / hz * 1e6 / n, pcore, wcpu * 1e6 / n, others, psys
    }' >>"$RESULTS"
}

# Columns of RESULTS: round target rps p50_us p99_us requests errors proxy_cpu_us_per_req
#                     backend_cpu_us_per_req proxy_core_pct wrk_cpu_us_per_req others_pct
#                     proxy_sys_cpu_us_per_req
TABLE_FMT="%-8s %9s %9s %8s %8s %7s %13s %12s %15s %11s %11s %8s\n"
table_header() {
  # shellcheck disable=SC2059 # the format is ours
  printf "$TABLE_FMT" target req/s vs_direct p50_us p99_us errors proxy_us/req "(of it sys)" backend_us/req proxy_core% wrk_us/req others%
}
print_round() { # ROUND
  table_header
  awk -F'\t' -v r="$1" -v fmt="$TABLE_FMT" '
    $1 == r { row[++n] = $0; if ($2 == "direct") d = $3 }
    END { for (i = 1; i <= n; i++) { split(row[i], f, "\t")
            printf fmt, f[2], f[3], d ? sprintf("%.3f", f[3] / d) : "-", f[4], f[5], f[7], f[8], f[13], f[9], f[10], f[11], f[12] } }' "$RESULTS"
}

# Medians per target; ratios are medians of per-round ratios (same-round comparisons only).
summary_tsv() { # prints: target rps ratio_vs_direct p50 p99 errors_total proxy_us backend_us core_pct wrk_us others_pct
                #         rounds proxy_sys_us
  local t
  for t in "${TARGET_LIST[@]}"; do
    awk -F'\t' -v t="$t" '
      function median(a, n,   i, j, x) {
        for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      }
      $2 == "direct" { d[$1] = $3 }
      $2 == t { n++; rps[n] = $3; p50[n] = $4; p99[n] = $5; err += $7; pc[n] = $8; bc[n] = $9; core[n] = $10; rd[n] = $1
                wc[n] = $11; oth[n] = $12; ps[n] = $13 }
      END {
        if (!n) exit
        m = 0; for (i = 1; i <= n; i++) if (d[rd[i]]) ratio[++m] = rps[i] / d[rd[i]]
        printf "%s\t%.0f\t%s\t%.0f\t%.0f\t%d\t%s\t%.2f\t%s\t%.2f\t%.0f\t%d\t%s\n", t, median(rps, n),
          m ? sprintf("%.3f", median(ratio, m)) : "-", median(p50, n), median(p99, n), err,
          pc[1] == "-" ? "-" : sprintf("%.2f", median(pc, n)), median(bc, n),
          core[1] == "-" ? "-" : sprintf("%.0f", median(core, n)), median(wc, n), median(oth, n), n,
          ps[1] == "-" ? "-" : sprintf("%.2f", median(ps, n))
      }' "$RESULTS"
  done
}

# A against B, round by round: prints "req/s-ratio cpu-ratio A-faster-rounds A-cheaper-rounds
# rounds" (ratios are medians of per-round ratios), or nothing when they share no round.
compare() { # A B
  awk -F'\t' -v a="$1" -v b="$2" '
    function median(x, n,   i, j, v) {
      for (i = 2; i <= n; i++) { v = x[i]; for (j = i - 1; j >= 1 && x[j] > v; j--) x[j + 1] = x[j]; x[j + 1] = v }
      return n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
    }
    $2 == a { ar[$1] = $3; ac[$1] = $8 } $2 == b { br[$1] = $3; bc[$1] = $8 }
    END {
      for (k in ar) if (k in br) { n++; rr[n] = ar[k] / br[k]; cr[n] = ac[k] / bc[k]; if (ar[k] >= br[k]) wr++; if (ac[k] < bc[k]) wc++ }
      if (!n) exit
      printf "%.3f\t%.3f\t%d\t%d\t%d\n", median(rr, n), median(cr, n), wr, wc, n
    }' "$RESULTS"
}

# lbd against each other proxy, and the issue's target; lbd2 (if any) against lbd.
lbd_verdict() {
  local a b lines="" ok=1 r compared=() rr cr wr wc n
  for a in lbd lbd2; do
    want "$a" || continue
    for b in haproxy nginx lbd; do
      if [ "$a" = "$b" ] || ! want "$b"; then continue; fi
      r=$(compare "$a" "$b")
      [ -n "$r" ] || continue
      IFS=$'\t' read -r rr cr wr wc n <<<"$r"
      lines+="$a vs $b: req/s ratio $rr ($a >= $b in $wr/$n rounds), CPU/request ratio $cr ($a lower in $wc/$n rounds)"$'\n'
      if [ "$a" = lbd ]; then
        compared+=("$b")
        awk -v rr="$rr" -v cr="$cr" 'BEGIN { exit !(rr >= 1 && cr < 1) }' || ok=0
      fi
    done
  done
  [ -n "$lines" ] || return 0
  printf '%s' "$lines"
  [ "${#compared[@]}" -gt 0 ] || return 0
  local verdict="NOT MET"
  [ "$ok" -eq 0 ] || verdict=MET
  echo "target (lbd: less CPU per request than ${compared[*]}, at least their req/s; medians): $verdict"
}

commit_desc() {
  local head
  head=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -1)" ]; then
    echo "working tree on top of $head (uncommitted changes)"
  else
    echo "$head"
  fi
}

# ---- run ----
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo "bench-proxy: $(commit_desc); $(nproc --all) CPUs ($CPU_MODEL), kernel $(uname -r)"
echo "  $(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy $(haproxy -v | awk 'NR == 1 {print $3}'), $(wrk -v 2>&1 | awk 'NR == 1 {print $1, $2}')"
echo "  wrk -t1 -c$CONNECTIONS -d${DURATION}s on CPU $LOAD_CPU; backend nginx on CPU $BACKEND_CPU; proxy on CPU $PROXY_CPU"
echo "  rounds $ROUNDS, warm-up ${WARMUP}s per target, targets: ${TARGET_LIST[*]}"
[ -z "$LBD_THREADS" ] || printf '%s' "$LBD_THREADS"

if [ "$WARMUP" -gt 0 ]; then
  for t in "${TARGET_LIST[@]}"; do run_one warmup "$t" "$WARMUP"; done
fi
for (( round = 1; round <= ROUNDS; round++ )); do
  for t in "${TARGET_LIST[@]}"; do run_one "$round" "$t" "$DURATION"; done
  echo
  echo "round $round/$ROUNDS"
  print_round "$round"
done

SUMMARY=$(summary_tsv)
echo
echo "summary: medians over $ROUNDS rounds (vs_direct = median of per-round req/s ratios)"
table_header
awk -F'\t' -v fmt="$TABLE_FMT" '{ printf fmt, $1, $2, $3, $4, $5, $6, $7, $13, $8, $9, $10, $11 }' <<<"$SUMMARY"
VERDICT=$(lbd_verdict)
[ -z "$VERDICT" ] || { echo; echo "$VERDICT"; }

[ -z "$RAW" ] || { printf 'round\ttarget\trps\tp50_us\tp99_us\trequests\terrors\tproxy_cpu_us_per_req\tbackend_cpu_us_per_req\tproxy_core_pct\twrk_cpu_us_per_req\tothers_pct\tproxy_sys_cpu_us_per_req\n'; cat "$RESULTS"; } >"$RAW"

if [ "$MARKDOWN" -eq 1 ]; then
  echo
  echo "Commit: $(commit_desc). $(date -u +%Y-%m-%d). $(nproc --all) CPUs ($CPU_MODEL), kernel $(uname -r)."
  echo "Command: \`$COMMAND_LINE\` ($ROUNDS rounds of ${DURATION}s, wrk -t1 -c$CONNECTIONS on CPU $LOAD_CPU," \
    "backend on CPU $BACKEND_CPU, proxy on CPU $PROXY_CPU, scheduling: $SCHED)."
  echo
  echo "| target | req/s | vs direct | p50 µs | p99 µs | errors | proxy CPU µs/req | of it kernel | backend CPU µs/req | proxy core % | wrk CPU µs/req | others % |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $13, $8, $9, $10, $11 }' <<<"$SUMMARY"
  if [ -n "$VERDICT" ]; then
    echo
    while IFS= read -r line; do echo "- $line"; done <<<"$VERDICT"
  fi
fi
