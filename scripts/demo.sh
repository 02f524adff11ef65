#!/usr/bin/env bash
# The lbpair demo, the first command in the README: `sudo ./scripts/demo.sh [options]`.
#
# On a fresh Debian machine, as root: installs the packages the namespaces need
# (scripts/install-deps.sh, the same the tests use), builds the workspace, then runs
# `demo` (netns-tests/src/bin/demo.rs): the pair (vrrpd + lbd on nodes A and B, three
# backends, a client) in network namespaces, live traffic, a power-off of the master and
# its return, and the report. About a minute after the build; options go to the demo
# (`--advert-cs N`, default 10; `--help` lists them).
#
# Cleanup: the demo removes its namespaces and daemons itself, also on Ctrl-C (it traps
# SIGINT/SIGTERM). This script forwards those signals to it, waits (bounded) for it, and,
# should it have died without cleaning up (SIGKILL), removes the namespaces it created,
# which carry its PID (`nnt<pid>x<n>-<role>`), and the processes inside them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (sudo ./scripts/demo.sh): it creates network namespaces" >&2
  exit 1
fi

demo_pid=""
interrupted=0

# shellcheck disable=SC2317  # trap handlers: reached through `trap`, not by a call
on_signal() {
  interrupted=1
  if [ -n "$demo_pid" ]; then
    kill -INT "$demo_pid" 2>/dev/null || true
  fi
}

# Whatever is left of a demo that is gone: only its namespaces, only their processes.
# shellcheck disable=SC2317
cleanup() {
  local rc=$?
  if [ -n "$demo_pid" ]; then
    if kill -0 "$demo_pid" 2>/dev/null; then
      # Still running after the bounded wait: it's ours, and it's stuck.
      kill -KILL "$demo_pid" 2>/dev/null || true
      sleep 0.2
    fi
    local ns p left=0
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^nnt${demo_pid}x" || true); do
      left=1
      for p in $(ip netns pids "$ns" 2>/dev/null || true); do
        kill -KILL "$p" 2>/dev/null || true
      done
      if ip netns del "$ns" 2>/dev/null; then
        echo "demo.sh: removed leftover namespace $ns" >&2
      fi
    done
    # Its config/log directory too, unless it exited by itself (it may have kept it on purpose).
    if [ "$left" -eq 1 ]; then
      rm -rf "${TMPDIR:-/tmp}/nnt${demo_pid}x"*-demo 2>/dev/null || true
    fi
  fi
  exit "$rc"
}
trap on_signal INT TERM HUP
trap cleanup EXIT

step() { printf '\n=== %s\n' "$*"; }

step "installing dependencies (scripts/install-deps.sh)"
./scripts/install-deps.sh

. ./scripts/ensure-rust.sh
[ "$interrupted" -eq 0 ] || exit 130

step "building the workspace (cargo build --workspace)"
cargo build --workspace
[ "$interrupted" -eq 0 ] || exit 130

target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/debug/demo"

step "running the demo ($bin $*)"
# In the background so the traps run at once (a foreground child would delay them); the
# demo takes SIGINT itself, and on_signal forwards one too.
"$bin" "$@" &
demo_pid=$!
rc=0
# Bounded: each `wait` ends when the demo exits or a signal arrives.
for _ in $(seq 1 50); do
  if wait "$demo_pid"; then rc=0; else rc=$?; fi
  kill -0 "$demo_pid" 2>/dev/null || break
done
if [ "$interrupted" -ne 0 ] && [ "$rc" -eq 0 ]; then
  rc=130
fi
exit "$rc"
