#!/usr/bin/env bash
# Training benchmark: maas (candle, through POST /api/v1/runs) against PyTorch on the same networks
# (MLPs, a small CNN), data, split sizes, optimiser and epochs, measured in one run: samples/s and test accuracy,
# medians of the repeats, ratios maas/PyTorch. Writes bench/results/train-<date>.md.
# Installs its own PyTorch (the PyPI wheel, ~5 GB with its CUDA libraries; run on the CPU) into
# target/bench-venv, the venv bench/run.sh uses too. Usage: bench/train.sh [--repeats N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-release.sh
venv=target/bench-venv
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "bench: installing PyTorch into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "torch==2.15.0"
fi
exec "$venv/bin/python" bench/train.py --maas target/release/maas --data testdata/datasets \
  --out bench/results "$@"
