# Sourced by demo.sh and test-all.sh: put a Rust toolchain on PATH. cargo on PATH, else
# rustup's default place, else install rustup's default profile (cargo, clippy, rustfmt).
# Debian's own cargo is too old for the workspace's dependencies.
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "ensure-rust: installing a Rust toolchain with rustup (default profile)"
    command -v curl >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q curl ca-certificates; }
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile default
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
