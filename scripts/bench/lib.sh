# Shared by scripts/bench-proxy.sh, scripts/bench-idle-conns.sh and scripts/bench-tls.sh (sourced, not run). The caller
# sets BENCH_NAME (message prefix) and NEXT_PORT (first port to try), and calls start_work to get
# WORK (a temp dir) and the cleanup trap. Everything started goes into STARTED and is killed by
# PID on exit; nothing is killed by name.

die() { echo "$BENCH_NAME: $*" >&2; exit 1; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
in_range() { [[ $1 =~ ^-?[0-9]+$ ]] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; } # VALUE LO HI

install_missing() { # COMMAND=PACKAGE...: apt-get install the packages of the missing commands
  local kv missing=() pkgs
  for kv in "$@"; do command -v "${kv%%=*}" >/dev/null 2>&1 || missing+=("${kv#*=}"); done
  [ "${#missing[@]}" -gt 0 ] || return 0
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  [ "$(id -u)" -eq 0 ] || die "must be root to install ${pkgs[*]}"
  echo "$BENCH_NAME: installing ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
}

dead() { # PID: gone or zombie (a zombie is dead, only not yet reaped)
  local line
  read -r line 2>/dev/null <"/proc/$1/stat" || return 0
  line=${line##*) }
  [ "${line:0:1}" = Z ] || [ "${line:0:1}" = X ]
}

STARTED=()   # every PID we started; nginx workers die with their master
cleanup() {
  local pid i
  trap - EXIT INT TERM
  for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do
    for (( i = 0; i < 50; i++ )); do dead "$pid" && break; sleep 0.1; done
    dead "$pid" || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  [ -z "${WORK:-}" ] || rm -rf "$WORK"
}
start_work() { # creates WORK and installs the cleanup trap
  WORK=$(mktemp -d "/tmp/$BENCH_NAME.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

port_free() { [ -z "$(ss -Htln "sport = :$1")" ]; }
alloc_port() { # sets PORT to a free port >= NEXT_PORT; bounded search
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
  ! grep -q '@[A-Z_0-9]*@' "$out" || die "unfilled placeholder in $out"
}

wait_ready() { # NAME PID PORT LOG [SCHEME]: until GET / answers 200 "ok", bounded to 10 s
  # SCHEME https: over TLS, any certificate accepted (the benchmarks make their own).
  local name=$1 pid=$2 port=$3 log=$4 scheme=${5:-http} i body insecure=()
  [ "$scheme" = https ] && insecure=(-k)
  for (( i = 0; i < 100; i++ )); do
    if dead "$pid"; then
      echo "$BENCH_NAME: $name exited during startup; its output:" >&2
      cat "$log" >&2 || true
      die "$name failed to start"
    fi
    body=$(curl -s "${insecure[@]}" --max-time 1 "$scheme://127.0.0.1:$port/" 2>/dev/null || true)
    [ "$body" = ok ] && return 0
    sleep 0.1
  done
  cat "$log" >&2 || true
  die "$name did not answer 200 \"ok\" on $scheme://127.0.0.1:$port within 10 s"
}

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

# A process and its children (nginx: master + worker). Children are listed once, after startup:
# nothing here reloads, so the set is stable.
pids_of() { local p=$1; echo "$p"; pgrep -P "$p" || true; }

# The bench backend (scripts/bench/backend.nginx.conf.in) on two ports, with its 64 KiB file;
# sets BACKEND_PORT, BACKEND_PORT2, BACKEND_PID. PREFIX: e.g. (chrt -f 10 taskset -c 0).
start_backend() { # PREFIX...
  alloc_port; BACKEND_PORT=$PORT
  alloc_port; BACKEND_PORT2=$PORT
  mkdir -p "$WORK/backend-tmp" "$WORK/proxy-tmp" "$WORK/www"
  head -c 65536 /dev/zero | tr '\0' x >"$WORK/www/64k"
  # nginx's workers run as nobody when started as root: they must be able to reach the file.
  chmod 755 "$WORK" "$WORK/www" && chmod 644 "$WORK/www/64k"
  render "$TEMPLATES/backend.nginx.conf.in" "$WORK/backend.conf" DIR="$WORK" BACKEND_PORT="$BACKEND_PORT" \
    BACKEND_PORT2="$BACKEND_PORT2"
  "$@" nginx -p "$WORK" -e "$WORK/backend.error.log" -c "$WORK/backend.conf" -g 'daemon off;' \
    >"$WORK/backend.out" 2>&1 &
  BACKEND_PID=$!; STARTED+=("$BACKEND_PID")
  wait_ready backend "$BACKEND_PID" "$BACKEND_PORT" "$WORK/backend.out"
}

# lbd's config for a target: "defaults" (configs/lbd.example.toml, addresses changed, see
# lbd-defaults.sh) or "tuned" (lbd.toml.in). OUT PORT ADMIN_PORT CONFIG
write_lbd_config() {
  local out=$1 port=$2 admin=$3 cfg=$4
  if [ "$cfg" = tuned ]; then
    render "$TEMPLATES/lbd.toml.in" "$out" PORT="$port" BACKEND_PORT="$BACKEND_PORT" ADMIN_PORT="$admin" \
      WORKERS_LINE="${LBD_WORKERS_LINE-}"
  else
    "$TEMPLATES/lbd-defaults.sh" "$ROOT/configs/lbd.example.toml" "$out" "$port" "$admin" \
      "$BACKEND_PORT,$BACKEND_PORT2" || die "could not write lbd's defaults config"
  fi
}

build_lbd() { # sets LBD_BIN unless given; builds it when BUILD is 1
  if [ -z "${LBD_BIN:-}" ]; then
    LBD_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/lbd
    if [ "$BUILD" -eq 1 ]; then
      echo "$BENCH_NAME: cargo build --release -p lbd" >&2
      (cd "$ROOT" && cargo build --release -p lbd) >&2 || die "lbd does not build"
    fi
  fi
  [ -x "$LBD_BIN" ] || die "no lbd binary at $LBD_BIN"
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

memory_kb() { # PIDS...: "rss_kb pss_kb" summed
  local rss=0 pss=0 pid v
  for pid in "$@"; do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status") || die "process $pid vanished"
    rss=$(( rss + v ))
    v=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup") || die "no smaps_rollup for $pid"
    pss=$(( pss + v ))
  done
  echo "$rss $pss"
}

wait_line() { # FILE PATTERN SECONDS PID: until FILE has a line starting with PATTERN (bounded)
  local i
  for (( i = 0; i < $3 * 10; i++ )); do
    grep -q "^$2" "$1" 2>/dev/null && return 0
    dead "$4" && break
    sleep 0.1
  done
  grep -q "^$2" "$1" 2>/dev/null
}

forget() { # PID: no longer ours to kill at exit (it has been reaped)
  local i
  for i in "${!STARTED[@]}"; do [ "${STARTED[$i]}" != "$1" ] || unset 'STARTED[i]'; done
}
