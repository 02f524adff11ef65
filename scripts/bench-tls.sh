#!/usr/bin/env bash
# TLS termination benchmark (issue 13): lbd, HAProxy and nginx terminating TLS in front of the
# same nginx backend, in the same run, on 127.0.0.1. Prints figures; exits 1 if a run had errors
# or the backend did not serve every request.
#
#   scripts/bench-tls.sh [--rounds N] [--duration S] [--connections C] [--targets lbd,haproxy,nginx]
#                        [--lbd-bin PATH] [--no-build] [--markdown]
#
# Scenarios, every target in each, interleaved over the rounds:
#   handshake  wrk -t1 -cC -H 'Connection: close': every request on a new TLS connection, so the
#              figure is full handshakes per second (wrk does not resume sessions) and the
#              proxy's CPU per handshake + request;
#   keepalive  wrk -t1 -cC over kept-alive TLS connections: CPU per request once the
#              handshake is paid (bulk record encryption and decryption).
# The certificate is ECDSA P-256 (openssl, generated per run), TLS 1.3, the same for all three.
# Each proxy runs one thread/worker on CPU 1; wrk and the backend share CPU 0. CPU per request is
# the proxy's utime+stime (/proc/PID/stat, all threads) over the run divided by wrk's requests.
#
# lbd: its TLS listener with only the certificate set (scripts/bench/lbd-tls.toml.in: one worker,
# access log off as in the other proxies' configs here); HAProxy: `bind ... ssl crt`; nginx:
# `listen ... ssl`. lbd's crypto provider is rustls's ring provider (the one it ships with); the
# issue's ring-versus-aws-lc-rs comparison is not in this script yet.
#
# Installs wrk, nginx, haproxy, openssl and curl with apt-get when missing (needs root); builds
# lbd with `cargo build --release -p lbd` unless --lbd-bin or --no-build. Every process it starts
# is killed by PID on exit; the temp dir is removed.
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
LBD_BIN=""
BUILD=1
MARKDOWN=0
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --duration) DURATION=${2:?}; shift 2 ;;
    --connections) CONNECTIONS=${2:?}; shift 2 ;;
    --targets) TARGETS=${2:?}; shift 2 ;;
    --lbd-bin) LBD_BIN=${2:?}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --markdown) MARKDOWN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
in_range "$ROUNDS" 1 50 || die "--rounds must be 1..50"
in_range "$DURATION" 1 600 || die "--duration must be 1..600 seconds"
in_range "$CONNECTIONS" 1 2000 || die "--connections must be 1..2000"
IFS=, read -ra TARGET_LIST <<<"$TARGETS"
for t in "${TARGET_LIST[@]}"; do
  case $t in lbd|haproxy|nginx) ;; *) die "unknown target $t (lbd, haproxy, nginx)" ;; esac
done
[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs"

install_missing wrk=wrk nginx=nginx haproxy=haproxy openssl=openssl curl=curl taskset=util-linux pgrep=procps ss=iproute2
want() { local t; for t in "${TARGET_LIST[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
! want lbd || build_lbd

NEXT_PORT=19480
start_work
LOAD_CPU=0
PROXY_CPU=1

# ---- certificate ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench.test" \
  -addext "subjectAltName=DNS:bench.test" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null \
  || die "openssl could not make the test certificate"
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/haproxy.pem"
chmod 644 "$WORK/cert.pem" "$WORK/key.pem" "$WORK/haproxy.pem"

start_backend taskset -c "$LOAD_CPU"

declare -A PORT_OF PID_OF
if want haproxy; then
  alloc_port; PORT_OF[haproxy]=$PORT
  cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8192
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
    bind 127.0.0.1:$PORT ssl crt $WORK/haproxy.pem alpn http/1.1
    default_backend be
backend be
    server s1 127.0.0.1:$BACKEND_PORT
EOF
  taskset -c "$PROXY_CPU" haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.out" 2>&1 &
  PID_OF[haproxy]=$!; STARTED+=("$!")
  wait_ready haproxy "${PID_OF[haproxy]}" "$PORT" "$WORK/haproxy.out" https
fi
if want nginx; then
  alloc_port; PORT_OF[nginx]=$PORT
  mkdir -p "$WORK/proxy-tmp"
  cat >"$WORK/proxy.conf" <<EOF
worker_processes 1;
pid $WORK/proxy.pid;
error_log $WORK/proxy.error.log warn;
events { worker_connections 8192; }
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
        listen 127.0.0.1:$PORT ssl;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
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
  wait_ready nginx "${PID_OF[nginx]}" "$PORT" "$WORK/nginx.out" https
fi
if want lbd; then
  alloc_port; PORT_OF[lbd]=$PORT
  alloc_port; ADMIN=$PORT
  render "$TEMPLATES/lbd-tls.toml.in" "$WORK/lbd.toml" PORT="${PORT_OF[lbd]}" ADMIN_PORT="$ADMIN" \
    BACKEND_PORT="$BACKEND_PORT" CERT="$WORK/cert.pem" KEY="$WORK/key.pem"
  taskset -c "$PROXY_CPU" "$LBD_BIN" run --config "$WORK/lbd.toml" >/dev/null 2>"$WORK/lbd.out" &
  PID_OF[lbd]=$!; STARTED+=("$!")
  wait_ready lbd "${PID_OF[lbd]}" "${PORT_OF[lbd]}" "$WORK/lbd.out" https
fi

# One wrk run: prints "req/s cpu_us_per_req errors".
run_one() { # TARGET SCENARIO
  local t=$1 scen=$2 pids hdr=() out t0 t1 reqs rps errs
  mapfile -t pids < <(pids_of "${PID_OF[$t]}")
  [ "$scen" = handshake ] && hdr=(-H "Connection: close")
  read -r t0 _ < <(ticks_of "${pids[@]}")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "${hdr[@]}" \
    "https://127.0.0.1:${PORT_OF[$t]}/" 2>&1) || die "wrk failed against $t: $out"
  read -r t1 _ < <(ticks_of "${pids[@]}")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  errs=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10} /Non-2xx/ {print $4}' <<<"$out" | paste -sd+ | bc 2>/dev/null || echo 0)
  is_uint "$reqs" && [ "$reqs" -gt 0 ] || die "wrk counted no requests against $t: $out"
  awk -v r="$rps" -v d=$(( t1 - t0 )) -v n="$reqs" -v hz="$CLK_TCK" -v e="${errs:-0}" \
    'BEGIN { printf "%.0f %.2f %d\n", r, d / hz * 1e6 / n, e }'
}

echo "bench-tls: $(commit_desc); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r)"
echo "  $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{print "HAProxy " $3}'), $(openssl version | awk '{print $1, $2}'), lbd: $LBD_BIN (rustls, ring)"
echo "  $ROUNDS rounds x $DURATION s, wrk -t1 -c$CONNECTIONS, ECDSA P-256, load and backend on CPU $LOAD_CPU, proxy on CPU $PROXY_CPU"
declare -A RESULTS
FAILED=0
for (( r = 1; r <= ROUNDS; r++ )); do
  for scen in handshake keepalive; do
    for t in "${TARGET_LIST[@]}"; do
      read -r rps cpu errs < <(run_one "$t" "$scen")
      echo "round $r $scen $t: $rps req/s, $cpu us CPU/req, errors $errs"
      [ "$errs" -eq 0 ] || FAILED=1
      RESULTS["$scen/$t"]+="$rps:$cpu "
    done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
echo
echo "medians over $ROUNDS rounds"
[ "$MARKDOWN" -eq 0 ] || { echo "| scenario | proxy | req/s | proxy CPU µs per request |"; echo "|---|---|---:|---:|"; }
for scen in handshake keepalive; do
  for t in "${TARGET_LIST[@]}"; do
    vals=${RESULTS["$scen/$t"]}
    rps=$(tr ' ' '\n' <<<"$vals" | cut -d: -f1 | median)
    cpu=$(tr ' ' '\n' <<<"$vals" | cut -d: -f2 | median)
    if [ "$MARKDOWN" -eq 1 ]; then
      echo "| $scen | $t | $rps | $cpu |"
    else
      printf '%-10s %-8s %10s req/s %8s us CPU/req\n' "$scen" "$t" "$rps" "$cpu"
    fi
  done
done
[ "$FAILED" -eq 0 ] || die "some runs had errors"
