#!/usr/bin/env bash
# Verify the shipped systemd units with systemd-analyze. The copies checked point at the
# freshly built binaries instead of /usr/local/bin, so the binaries' presence is checked
# too. Any complaint about our units fails the check.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || { echo "check-units: systemd-analyze missing (apt-get install systemd)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target=$(realpath "${CARGO_TARGET_DIR:-target}")
for bin in vrrpd lbd; do
  [ -x "$target/debug/$bin" ] || { echo "check-units: build $bin first" >&2; exit 1; }
done
for unit in deploy/systemd/*.service; do
  sed "s#/usr/local/bin/#$target/debug/#g" "$unit" > "$work/$(basename "$unit")"
done
out=$(cd "$work" && systemd-analyze verify --man=no ./*.service 2>&1 || true)
complaints=$(printf '%s\n' "$out" | grep -v '^$' || true)
if [ -n "$complaints" ]; then
  printf 'check-units: systemd-analyze complains:\n%s\n' "$complaints" >&2
  exit 1
fi
echo "check-units: $(ls deploy/systemd/*.service | wc -l) units verified"
