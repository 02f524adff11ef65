#!/bin/bash
# Regenerates the keepalived VRRPv3 captures in this directory.
#
# Needs root, iproute2, keepalived and tcpdump. Everything happens inside a
# throwaway pair of network namespaces joined by a veth pair (names start
# with wcap<pid>-), removed on exit even on failure. No traffic leaves them.
#
# keepalived (state MASTER, VRRPv3, VRID 51, priority 150, advert_int 1,
# VIPs 192.0.2.100 and 192.0.2.101) runs in namespace A on 192.0.2.1;
# tcpdump in namespace B captures protocol 112. After 4 adverts keepalived
# gets SIGTERM, and as Master it sends a final priority-0 advert
# (RFC 5798 §6.4.3). Outputs: capture.pcap and one .hex file per advert
# (whole IPv4 datagrams, which is what a raw socket receives).
set -euo pipefail
OUT=$(cd "$(dirname "$0")" && pwd)
P=wcap$$
NSA=$P-a
NSB=$P-b
D=$(mktemp -d /tmp/$P.XXXXXX)
cleanup() {
  for f in tcpdump.bgpid ka.bgpid; do
    [ -f "$D/$f" ] && kill "$(cat "$D/$f")" 2>/dev/null || true
  done
  sleep 0.5
  ip netns del "$NSA" 2>/dev/null || true
  ip netns del "$NSB" 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT

ip netns add "$NSA"
ip netns add "$NSB"
ip link add "$P-va" type veth peer name "$P-vb"
ip link set "$P-va" netns "$NSA"
ip link set "$P-vb" netns "$NSB"
ip -n "$NSA" addr add 192.0.2.1/24 dev "$P-va"
ip -n "$NSA" link set "$P-va" up
ip -n "$NSB" addr add 192.0.2.2/24 dev "$P-vb"
ip -n "$NSB" link set "$P-vb" up

cat > "$D/keepalived.conf" <<CONF
global_defs {
  router_id wcap
  vrrp_version 3
  script_user root
  enable_script_security
}
vrrp_instance VI_1 {
  state MASTER
  interface $P-va
  virtual_router_id 51
  priority 150
  advert_int 1
  virtual_ipaddress {
    192.0.2.100/24
    192.0.2.101/24
  }
}
CONF

ip netns exec "$NSB" tcpdump -i "$P-vb" -U -w "$D/cap.pcap" 'ip proto 112' >"$D/tcpdump.log" 2>&1 &
echo $! >"$D/tcpdump.bgpid"
for _ in $(seq 1 50); do grep -q listening "$D/tcpdump.log" && break; sleep 0.1; done

ip netns exec "$NSA" keepalived -f "$D/keepalived.conf" -n -l -D --vrrp \
  -p "$D/keepalived.pid" -r "$D/vrrp.pid" >"$D/keepalived.log" 2>&1 &
echo $! >"$D/ka.bgpid"

count() { tcpdump -r "$D/cap.pcap" 2>/dev/null | wc -l; }
for _ in $(seq 1 100); do [ "$(count)" -ge 4 ] && break; sleep 0.2; done
kill -TERM "$(cat "$D/ka.bgpid")"
for _ in $(seq 1 50); do kill -0 "$(cat "$D/ka.bgpid")" 2>/dev/null || break; sleep 0.2; done
rm -f "$D/ka.bgpid"
for _ in $(seq 1 50); do [ "$(count)" -ge 5 ] && break; sleep 0.1; done
kill "$(cat "$D/tcpdump.bgpid")"; rm -f "$D/tcpdump.bgpid"; sleep 0.3

cp "$D/cap.pcap" "$OUT/capture.pcap"
VERSION=$(keepalived --version 2>&1 | head -1)
# One hex file per packet: '#' comment lines, then the datagram as hex bytes
# (the Ethernet header, 14 bytes, is dropped).
tcpdump -r "$OUT/capture.pcap" -nn -v -xx 2>/dev/null | awk -v out="$OUT" -v ver="$VERSION" '
  /^[0-9][0-9]:/ { n++; hdr=$0; next }
  /^    [0-9]/ { desc=$0; next }
  /^\t0x/ { for (i = 2; i <= NF; i++) hex[n] = hex[n] $i; next }
  /^ / { desc=desc $0; next }
  { next }
  END {
    for (k = 1; k <= n; k++) {
      h = substr(hex[k], 29)
      f = sprintf("%s/advert-%d.hex", out, k)
      print "# captured with tcpdump from " ver " (see capture.sh)" > f
      printf "# packet %d of capture.pcap\n", k >> f
      for (i = 1; i <= length(h); i += 32) {
        line = ""
        for (j = i; j < i + 32 && j <= length(h); j += 2) line = line substr(h, j, 2) " "
        sub(/ $/, "", line)
        print line >> f
      }
      close(f)
    }
  }'
tcpdump -r "$OUT/capture.pcap" -nn -v 2>/dev/null
