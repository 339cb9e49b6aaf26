#!/usr/bin/env bash
# Build the Debian package: the release binary, then the man pages and shell completions
# it generates from its own command-line definitions, then the .deb (cargo-deb).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "needs cargo-deb: cargo install cargo-deb" >&2; exit 1; }
cargo build --release --locked
bin=target/release/cairn
rm -rf target/man target/completions
mkdir -p target/completions
"$bin" man target/man >/dev/null
"$bin" completions bash > target/completions/cairn.bash
"$bin" completions zsh > target/completions/_cairn
"$bin" completions fish > target/completions/cairn.fish
cargo deb --no-build --strip "$@"
