#!/usr/bin/env bash
# Install the Debian packages the network-namespace tests, the real-client HTTP/2 tests
# (lbd/tests/it_fast_path/clients.rs) and the failover measurement need.
#
# Idempotent: when every command is already present, apt is not touched at all (CI on a
# machine that already has them doesn't pay for `apt-get update`). Needs root.
set -euo pipefail

# command -> package that provides it
declare -A NEED=(
  [ip]=iproute2
  [bridge]=iproute2
  [keepalived]=keepalived
  # pair_keepalived: keepalived + HAProxy measured beside vrrpd + lbd (the report's column).
  [haproxy]=haproxy
  [tshark]=tshark
  [tcpdump]=tcpdump
  [ping]=iputils-ping
  [arping]=iputils-arping
  [curl]=curl
  [pgrep]=procps
  [fuser]=psmisc
  [setsid]=util-linux
  [taskset]=util-linux
  [systemd-analyze]=systemd
  # Peer-link fault runs: random packet loss (this kernel has no sch_netem).
  [nft]=nftables
  [tc]=iproute2
  # HTTP/2 through lbd with real clients (it_fast_path::clients): h2load, and a headless
  # browser checking the protocol it negotiated.
  [h2load]=nghttp2-client
  [chromium]=chromium
)

missing=()
for cmd in "${!NEED[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    missing+=("${NEED[$cmd]}")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: everything present"
  exit 0
fi

# Deduplicate (several commands come from one package).
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-deps: installing ${pkgs[*]}"

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: must run as root to install ${pkgs[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer "no" without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
apt-get update -q
apt-get install -y -q --no-install-recommends "${pkgs[@]}"

for cmd in "${!NEED[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    echo "install-deps: $cmd still missing after install" >&2
    exit 1
  fi
done
echo "install-deps: done"
