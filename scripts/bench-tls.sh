#!/usr/bin/env bash
# TLS termination benchmark (issue 13): lbd, HAProxy and nginx terminating TLS in front of the
# same nginx backend, in the same run, on 127.0.0.1. Prints figures; exits 1 if a run had errors
# or the backend did not serve every request.
#
#   scripts/bench-tls.sh [--rounds N] [--duration S] [--connections C] [--targets lbd,haproxy,nginx]
#                        [--keys ecdsa,rsa] [--providers ring[,aws-lc-rs]] [--idle-conns N]
#                        [--lbd-bin PATH] [--lbd-aws-bin PATH] [--no-build] [--markdown]
#
# Scenarios, every target in each, interleaved over the rounds:
#   handshake  full handshakes: openssl s_time -new, 4 clients side by side, each connection new
#              and unresumed with one request (GET /); the proxy's CPU per handshake + request.
#              Once per key type (--keys: ECDSA P-256 and RSA 2048). The clients share the load
#              CPU, so the rate is theirs as much as the proxy's: compare the CPU column;
#   resumed    the same with s_time -reuse: every connection resumes the first one's session;
#              the share actually resumed is printed (s_time marks each resumed connection);
#   keepalive  wrk -t1 -cC over kept-alive TLS connections: CPU per request once the
#              handshake is paid (bulk record encryption and decryption), small responses;
#              p99 latency from wrk --latency;
#   idle       memory per idle TLS connection: scripts/bench/idle_conns.py --tls holds
#              --idle-conns connections (default 1000), each after one request; the proxy's
#              RSS while they are held minus before (after a warm-up), over the connections held.
# resumed, keepalive and idle run with the first key type only. Certificates: openssl,
# generated per run; TLS 1.3; the same for all three. Each proxy runs one thread/worker on
# CPU 1; the load and the backend share CPU 0. CPU per operation is the proxy's utime+stime
# (/proc/PID/stat, all threads) over the run divided by the operations the client counted.
#
# lbd: its TLS listener with only the certificate set (scripts/bench/lbd-tls.toml.in: one worker,
# access log off as in the other proxies' configs here); HAProxy: `bind ... ssl crt`; nginx:
# `listen ... ssl`. lbd runs as two targets (--providers, default both): `lbd`, built with
# ring (`--no-default-features`), and `lbd-aws`, the default build with rustls's aws-lc-rs
# provider; same config.
#
# Installs wrk, nginx, haproxy, openssl, python3 and curl with apt-get when missing (needs
# root); builds lbd with `cargo build --release -p lbd --no-default-features` (ring) unless
# --lbd-bin or --no-build, and with `--features aws-lc-rs` (the default) unless --lbd-aws-bin. Every process it starts is killed by PID on exit; the
# temp dir is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TEMPLATES=$ROOT/scripts/bench
BENCH_NAME=bench-tls
# shellcheck source=scripts/bench/lib.sh
. "$TEMPLATES/lib.sh"

ROUNDS=3
DURATION=8
CONNECTIONS=50
TARGETS=lbd,haproxy,nginx
KEYS=ecdsa,rsa
PROVIDERS=ring,aws-lc-rs
IDLE_CONNS=1000
LBD_BIN=""
LBD_AWS_BIN=""
BUILD=1
MARKDOWN=0
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --duration) DURATION=${2:?}; shift 2 ;;
    --connections) CONNECTIONS=${2:?}; shift 2 ;;
    --targets) TARGETS=${2:?}; shift 2 ;;
    --keys) KEYS=${2:?}; shift 2 ;;
    --providers) PROVIDERS=${2:?}; shift 2 ;;
    --idle-conns) IDLE_CONNS=${2:?}; shift 2 ;;
    --lbd-bin) LBD_BIN=${2:?}; shift 2 ;;
    --lbd-aws-bin) LBD_AWS_BIN=${2:?}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --markdown) MARKDOWN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
in_range "$ROUNDS" 1 50 || die "--rounds must be 1..50"
in_range "$DURATION" 1 600 || die "--duration must be 1..600 seconds"
in_range "$CONNECTIONS" 1 2000 || die "--connections must be 1..2000"
in_range "$IDLE_CONNS" 10 15000 || die "--idle-conns must be 10..15000"
IFS=, read -ra TARGET_LIST <<<"$TARGETS"
for t in "${TARGET_LIST[@]}"; do
  case $t in lbd|haproxy|nginx) ;; *) die "unknown target $t (lbd, haproxy, nginx)" ;; esac
done
IFS=, read -ra KEY_LIST <<<"$KEYS"
for k in "${KEY_LIST[@]}"; do
  case $k in ecdsa|rsa) ;; *) die "unknown key type $k (ecdsa, rsa)" ;; esac
done
IFS=, read -ra PROVIDER_LIST <<<"$PROVIDERS"
for p in "${PROVIDER_LIST[@]}"; do
  case $p in ring|aws-lc-rs) ;; *) die "unknown provider $p (ring, aws-lc-rs)" ;; esac
done
[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs"

install_missing wrk=wrk nginx=nginx haproxy=haproxy openssl=openssl curl=curl taskset=util-linux \
  pgrep=procps ss=iproute2 python3=python3 bc=bc
want() { local t; for t in "${TARGET_LIST[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
with_provider() { local p; for p in "${PROVIDER_LIST[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

NEXT_PORT=19480
start_work
LOAD_CPU=0
PROXY_CPU=1

# lbd binaries: ring (`--no-default-features`) and, with --providers ...aws-lc-rs, the
# aws-lc-rs build (lbd's default). Both come out of the same cargo path, so each is copied
# into WORK once built.
declare -A LBD_OF
PROXIES=()
for t in "${TARGET_LIST[@]}"; do
  [ "$t" = lbd ] || { PROXIES+=("$t"); continue; }
  if with_provider ring; then
    if [ -z "${LBD_BIN:-}" ] && [ "$BUILD" -eq 1 ]; then
      echo "$BENCH_NAME: cargo build --release -p lbd --no-default-features (ring)" >&2
      (cd "$ROOT" && cargo build --release -p lbd --no-default-features) >&2 || die "lbd does not build with ring"
    fi
    build_lbd
    cp "$LBD_BIN" "$WORK/lbd-ring"; LBD_OF[lbd]=$WORK/lbd-ring; PROXIES+=(lbd)
  fi
  if with_provider aws-lc-rs; then
    if [ -z "$LBD_AWS_BIN" ]; then
      echo "$BENCH_NAME: cargo build --release -p lbd --features aws-lc-rs" >&2
      (cd "$ROOT" && cargo build --release -p lbd --features aws-lc-rs) >&2 \
        || die "lbd does not build with aws-lc-rs (it compiles AWS-LC: needs a C compiler; see above)"
      LBD_AWS_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/lbd
    fi
    [ -x "$LBD_AWS_BIN" ] || die "no lbd binary at $LBD_AWS_BIN"
    cp "$LBD_AWS_BIN" "$WORK/lbd-aws"; LBD_OF[lbd-aws]=$WORK/lbd-aws; PROXIES+=(lbd-aws)
  fi
done

# ---- certificates: one pair per key type ----
for k in "${KEY_LIST[@]}"; do
  case $k in
    ecdsa) alg=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) alg=(-newkey rsa:2048) ;;
  esac
  openssl req -x509 "${alg[@]}" -nodes -days 2 -subj "/CN=bench.test" \
    -addext "subjectAltName=DNS:bench.test" -keyout "$WORK/$k.key.pem" -out "$WORK/$k.cert.pem" 2>/dev/null \
    || die "openssl could not make the $k test certificate"
  cat "$WORK/$k.cert.pem" "$WORK/$k.key.pem" >"$WORK/$k.haproxy.pem"
  chmod 644 "$WORK/$k.cert.pem" "$WORK/$k.key.pem" "$WORK/$k.haproxy.pem"
done

start_backend taskset -c "$LOAD_CPU"

declare -A PORT_OF PID_OF
start_haproxy() { # KEY
  cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 20000
    no strict-limits
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:${PORT_OF[haproxy]} ssl crt $WORK/$1.haproxy.pem alpn http/1.1
    default_backend be
backend be
    server s1 127.0.0.1:$BACKEND_PORT
EOF
  taskset -c "$PROXY_CPU" haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.out" 2>&1 &
  PID_OF[haproxy]=$!; STARTED+=("$!")
  wait_ready haproxy "${PID_OF[haproxy]}" "${PORT_OF[haproxy]}" "$WORK/haproxy.out" https
}

start_nginx() { # KEY
  mkdir -p "$WORK/proxy-tmp"
  cat >"$WORK/proxy.conf" <<EOF
worker_processes 1;
pid $WORK/proxy.pid;
error_log $WORK/proxy.error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $WORK/proxy-tmp/body;
    proxy_temp_path $WORK/proxy-tmp/proxy;
    fastcgi_temp_path $WORK/proxy-tmp/fastcgi;
    uwsgi_temp_path $WORK/proxy-tmp/uwsgi;
    scgi_temp_path $WORK/proxy-tmp/scgi;
    keepalive_requests 100000000;
    upstream be { server 127.0.0.1:$BACKEND_PORT; keepalive 256; }
    server {
        listen 127.0.0.1:${PORT_OF[nginx]} ssl;
        ssl_certificate $WORK/$1.cert.pem;
        ssl_certificate_key $WORK/$1.key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
  taskset -c "$PROXY_CPU" nginx -p "$WORK" -e "$WORK/proxy.error.log" -c "$WORK/proxy.conf" -g 'daemon off;' \
    >"$WORK/nginx.out" 2>&1 &
  PID_OF[nginx]=$!; STARTED+=("$!")
  wait_ready nginx "${PID_OF[nginx]}" "${PORT_OF[nginx]}" "$WORK/nginx.out" https
}

start_lbd() { # TARGET KEY
  local t=$1 k=$2 admin
  alloc_port; admin=$PORT
  render "$TEMPLATES/lbd-tls.toml.in" "$WORK/$t.toml" PORT="${PORT_OF[$t]}" ADMIN_PORT="$admin" \
    BACKEND_PORT="$BACKEND_PORT" CERT="$WORK/$k.cert.pem" KEY="$WORK/$k.key.pem"
  taskset -c "$PROXY_CPU" "${LBD_OF[$t]}" run --config "$WORK/$t.toml" >/dev/null 2>"$WORK/$t.out" &
  PID_OF[$t]=$!; STARTED+=("$!")
  wait_ready "$t" "${PID_OF[$t]}" "${PORT_OF[$t]}" "$WORK/$t.out" https
}

start_proxies() { # KEY: every proxy, serving the certificate of that key type
  local t
  for t in "${PROXIES[@]}"; do
    alloc_port; PORT_OF[$t]=$PORT
    case $t in
      haproxy) start_haproxy "$1" ;;
      nginx) start_nginx "$1" ;;
      lbd|lbd-aws) start_lbd "$t" "$1" ;;
    esac
  done
}

stop_proxies() { # by PID, as cleanup does
  local t pid i
  for t in "${PROXIES[@]}"; do
    pid=${PID_OF[$t]}
    kill -TERM "$pid" 2>/dev/null || true
    for (( i = 0; i < 50; i++ )); do dead "$pid" && break; sleep 0.1; done
    dead "$pid" || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget "$pid"
  done
}

# wrk's latency percentile line ("99%  1.23ms") in milliseconds.
p99_ms() {
  awk '$1 == "99%" {
    v = $2; u = v; sub(/^[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
    printf "%.2f", (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : (u == "m") ? v * 60000 : v }'
}

# Each run prints "ops/s cpu_us_per_op p99_ms errors extra" ("-" where it has no such figure).

run_wrk() { # TARGET
  local t=$1 pids out t0 t1 reqs rps errs p99
  mapfile -t pids < <(pids_of "${PID_OF[$t]}")
  read -r t0 _ < <(ticks_of "${pids[@]}")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    "https://127.0.0.1:${PORT_OF[$t]}/" 2>&1) || die "wrk failed against $t: $out"
  read -r t1 _ < <(ticks_of "${pids[@]}")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(p99_ms <<<"$out")
  errs=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10} /Non-2xx/ {print $4}' <<<"$out" | paste -sd+ | bc 2>/dev/null || echo 0)
  is_uint "$reqs" && [ "$reqs" -gt 0 ] || die "wrk counted no requests against $t: $out"
  awk -v r="$rps" -v d=$(( t1 - t0 )) -v n="$reqs" -v hz="$CLK_TCK" -v e="${errs:-0}" -v p="${p99:--}" \
    'BEGIN { printf "%.0f %.2f %s %d -\n", r, d / hz * 1e6 / n, p, e }'
}

# Handshakes with openssl s_time: -new (full handshakes) or -reuse (every connection resumes
# the first one's session), each connection with one request (-www /). s_time runs one
# connection at a time, so S_TIME_CLIENTS of them run side by side on the load CPU. s_time
# prints one character per connection, 'r' when its session was resumed: "extra" is the share
# resumed, which must be 0% for -new and 100% for -reuse (else the row measured the other).
# (wrk cannot measure full handshakes: it keeps each connection's session across its
# reconnects, so its `Connection: close` runs are resumed handshakes where the server allows.)
S_TIME_CLIENTS=4
run_s_time() { # TARGET MODE
  local t=$1 mode=$2 pids t0 t1 s0 s1 i n=0 c reused=0 out runs=()
  mapfile -t pids < <(pids_of "${PID_OF[$t]}")
  read -r t0 _ < <(ticks_of "${pids[@]}")
  s0=$(date +%s.%N)
  for (( i = 0; i < S_TIME_CLIENTS; i++ )); do
    taskset -c "$LOAD_CPU" openssl s_time -connect "127.0.0.1:${PORT_OF[$t]}" "-$mode" \
      -time "$DURATION" -www / >"$WORK/s_time.$i" 2>&1 &
    runs+=("$!"); STARTED+=("$!")
  done
  for i in "${!runs[@]}"; do
    wait "${runs[$i]}" || die "openssl s_time failed against $t: $(cat "$WORK/s_time.$i")"
    forget "${runs[$i]}"
  done
  s1=$(date +%s.%N)
  read -r t1 _ < <(ticks_of "${pids[@]}")
  for (( i = 0; i < S_TIME_CLIENTS; i++ )); do
    out=$(cat "$WORK/s_time.$i")
    c=$(awk '/connections in .* real seconds/ {print $1}' <<<"$out" | tail -1)
    is_uint "$c" && [ "$c" -gt 0 ] || die "s_time counted no connections against $t: $out"
    n=$(( n + c ))
    reused=$(( reused + $(grep -v 'connections\|Collecting\|timing\|Now' <<<"$out" | tr -cd 'r' | wc -c) ))
  done
  awk -v s="$s0" -v e="$s1" -v d=$(( t1 - t0 )) -v n="$n" -v hz="$CLK_TCK" -v r="$reused" \
    'BEGIN { printf "%.0f %.2f - 0 %.0f%%resumed\n", n / (e - s), d / hz * 1e6 / n, 100 * r / n }'
}

run_idle() { # TARGET
  local t=$1 pids out="$WORK/idle.$1.out" warm="$WORK/idle.$1.warm" rss0 rss1 open failed client
  mapfile -t pids < <(pids_of "${PID_OF[$t]}")
  python3 "$TEMPLATES/idle_conns.py" --tls --port "${PORT_OF[$t]}" --conns 100 --hold-max 0 \
    --timeout 5 >"$warm" 2>&1 || die "the warm-up client against $t failed: $(cat "$warm")"
  sleep 1
  read -r rss0 _ < <(memory_kb "${pids[@]}")
  python3 "$TEMPLATES/idle_conns.py" --tls --port "${PORT_OF[$t]}" --conns "$IDLE_CONNS" \
    --concurrency 200 --timeout 5 --deadline 60 --hold-max 60 >"$out" 2>&1 &
  client=$!; STARTED+=("$client")
  wait_line "$out" ready 90 "$client" || die "the idle client against $t did not get ready: $(cat "$out")"
  sleep 1
  read -r rss1 _ < <(memory_kb "${pids[@]}")
  kill -TERM "$client"
  wait_line "$out" done 30 "$client" || die "the idle client against $t did not close: $(cat "$out")"
  wait "$client" || true; forget "$client"
  open=$(sed -n 's/^done open=\([0-9]*\).*/\1/p' "$out")
  failed=$(awk '/^ready/ { for (i = 1; i <= NF; i++) if ($i ~ /^failed_/) { split($i, kv, "="); f += kv[2] } } END { print f + 0 }' "$out")
  is_uint "$open" && [ "$open" -gt 0 ] || die "no idle connection held against $t: $(cat "$out")"
  awk -v a="$rss0" -v b="$rss1" -v n="$open" -v f="$failed" \
    'BEGIN { printf "- - - %d %.1fKiB/conn\n", f, (b - a) / n }'
}

run_one() { # TARGET SCENARIO
  case $2 in
    keepalive) run_wrk "$1" ;;
    handshake) run_s_time "$1" new ;;
    resumed) run_s_time "$1" reuse ;;
    idle) run_idle "$1" ;;
  esac
}

PROVIDER_DESC=""
[ -z "${LBD_OF[lbd]:-}" ] || PROVIDER_DESC="lbd: rustls + ring"
[ -z "${LBD_OF[lbd-aws]:-}" ] || PROVIDER_DESC="$PROVIDER_DESC; lbd-aws: rustls + aws-lc-rs"
echo "bench-tls: $(commit_desc); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r)"
echo "  $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{print "HAProxy " $3}'), $(openssl version | awk '{print $1, $2}'), $PROVIDER_DESC"
echo "  $ROUNDS rounds x $DURATION s, wrk -t1 -c$CONNECTIONS, keys ${KEY_LIST[*]}, $IDLE_CONNS idle connections, load and backend on CPU $LOAD_CPU, proxies on CPU $PROXY_CPU"
declare -A RESULTS
FAILED=0
ROWS=()
for key in "${KEY_LIST[@]}"; do
  scenarios=(handshake)
  [ "$key" != "${KEY_LIST[0]}" ] || scenarios=(handshake resumed keepalive idle)
  start_proxies "$key"
  for (( r = 1; r <= ROUNDS; r++ )); do
    for scen in "${scenarios[@]}"; do
      for t in "${PROXIES[@]}"; do
        read -r ops cpu p99 errs extra < <(run_one "$t" "$scen")
        echo "round $r $key $scen $t: $ops ops/s, $cpu us CPU/op, p99 $p99 ms, errors $errs, $extra"
        [ "$errs" -eq 0 ] || FAILED=1
        RESULTS["$key/$scen/$t"]+="$ops:$cpu:$p99:$extra "
      done
    done
  done
  stop_proxies
  for scen in "${scenarios[@]}"; do ROWS+=("$key/$scen"); done
done

median() { { grep -v '^-*$' || true; } | sed 's/[^0-9.]//g' | sort -n | awk '{a[NR] = $1} END {if (NR == 0) print "-"; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
col() { tr ' ' '\n' <<<"$1" | grep -v '^$' | cut -d: -f"$2" | median; } # VALUES FIELD
echo
echo "medians over $ROUNDS rounds (ops: handshakes for handshake and resumed, requests for keepalive)"
if [ "$MARKDOWN" -eq 1 ]; then
  echo "| key | scenario | proxy | ops/s | proxy CPU µs per op | p99 ms | resumed % / KiB per idle connection |"
  echo "|---|---|---|---:|---:|---:|---:|"
fi
for row in "${ROWS[@]}"; do
  key=${row%%/*}; scen=${row#*/}
  for t in "${PROXIES[@]}"; do
    vals=${RESULTS["$row/$t"]}
    ops=$(col "$vals" 1); cpu=$(col "$vals" 2); p99=$(col "$vals" 3); extra=$(col "$vals" 4)
    if [ "$MARKDOWN" -eq 1 ]; then
      echo "| $key | $scen | $t | $ops | $cpu | $p99 | $extra |"
    else
      printf '%-6s %-10s %-8s %10s ops/s %8s us CPU/op  p99 %6s ms  %s\n' "$key" "$scen" "$t" "$ops" "$cpu" "$p99" "$extra"
    fi
  done
done
[ "$FAILED" -eq 0 ] || die "some runs had errors"
