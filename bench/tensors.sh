#!/usr/bin/env bash
# Tensor serving benchmark (Open Inference Protocol, open-nsfw on tract): requests/s and p50/p99
# at 1, 16 and 64 concurrent clients with and without dynamic batching, measured in one run and
# written to bench/results/tensors-<date>.md. Needs only python3 (standard library).
# Usage: bench/tensors.sh [--quick] [--seconds N] [--threads N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-models.sh
export RUSTFLAGS="${RUSTFLAGS:--C target-cpu=native}"
cargo build --release --locked -p maas-cli
exec python3 bench/tensors.py --maas target/release/maas \
  --models "${MAAS_MODELS_DIR:-$HOME/.cache/maas/models}" --out bench/results "$@"
