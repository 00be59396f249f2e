#!/usr/bin/env bash
# Tensor serving benchmark (Open Inference Protocol on tract; open-nsfw and a dense tower):
# requests/s and p50/p99 at 1, 16 and 64 concurrent clients with and without dynamic batching,
# measured in one run and written to bench/results/tensors-<date>.md. Installs numpy and onnx
# into target/tensors-venv to write the dense-tower graph (bench/dense_tower.py).
# Usage: bench/tensors.sh [--quick] [--seconds N] [--threads N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-models.sh
scripts/build-release.sh
venv=target/tensors-venv
if ! "$venv/bin/python" -c "import numpy, onnx" 2>/dev/null; then
  echo "bench: installing numpy and onnx into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy==2.4.6 onnx==1.23.2
fi
exec python3 bench/tensors.py --maas target/release/maas --dense-tower-python "$venv/bin/python" \
  --models "${MAAS_MODELS_DIR:-$HOME/.cache/maas/models}" --out bench/results "$@"
