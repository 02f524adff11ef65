#!/bin/bash
# Time-boxed coverage-guided fuzzing of one target, on stable Rust.
#
# cargo-fuzz needs nightly only for -Zsanitizer; libFuzzer's coverage
# instrumentation (sancov) works on stable, so this builds the target the
# way cargo-fuzz does minus ASan (our code is forbid(unsafe_code), so ASan
# adds little). New inputs go to a scratch corpus; the committed seeds in
# corpus/<target> are only read. A crash leaves artifacts/<target>/crash-*
# and a non-zero exit; commit it as a named regression under corpus/.
#
#   fuzz/run.sh [target=vrrp_parse] [seconds=60]
set -euo pipefail
cd "$(dirname "$0")"
TARGET=${1:-vrrp_parse}
SECS=${2:-60}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps these flags off build scripts and proc-macros.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo build --release --bin "$TARGET" --target "$TRIPLE" --target-dir target/sancov
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "artifacts/$TARGET"
"target/sancov/$TRIPLE/release/$TARGET" "$SCRATCH" "corpus/$TARGET" \
  -max_total_time="$SECS" -max_len=1100 -artifact_prefix="artifacts/$TARGET/"
