#!/usr/bin/env bash
# One command to run maas: installs what is missing, builds a release binary and starts
# `maas serve` with the embedded store in ./maas-data. Extra arguments go to `maas serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The binary is built on, and for, this machine: llama.cpp gets its AVX2/AVX-512 kernels
# (about 2x faster decoding than the portable baseline build). Override with RUSTFLAGS.
export RUSTFLAGS="${RUSTFLAGS:--C target-cpu=native}"
cargo build --release --locked -p maas-cli
exec target/release/maas serve "$@"
