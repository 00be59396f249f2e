#!/usr/bin/env bash
# Serving benchmark: maas against the reference tools, measured in one run, printed as ratios and
# written to bench/results/serving-<date>.md. Installs its own comparison tools:
#   - sentence-transformers on PyTorch (a venv in target/bench-venv),
#   - bench/llama-tg: llama-bench's token-generation test (llama-tg), llama.cpp's own embedding
#     loop (llama-embed) and its quantiser (llama-requant), written against llama.h and built from
#     the llama.cpp the llama-cpp-sys-2 crate vendors (the crate ships no tools/ sources, so
#     llama-bench itself cannot be built from it).
# Both maas and the reference are built for this machine's CPU (target-cpu=native / GGML_NATIVE).
# Usage: bench/run.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-models.sh

scripts/build-release.sh

if [ ! -x target/bench-venv/bin/python ] || ! target/bench-venv/bin/python -c "import sentence_transformers" 2>/dev/null; then
  echo "bench: installing sentence-transformers and PyTorch into target/bench-venv" >&2
  python3 -m venv target/bench-venv
  target/bench-venv/bin/pip install -q sentence-transformers==6.2.0 torch==2.15.0
fi

# The llama.cpp source the crate builds from, found through cargo's own metadata.
sys_manifest=$(cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
meta = json.load(sys.stdin)
print(next(p["manifest_path"] for p in meta["packages"] if p["name"] == "llama-cpp-sys-2"))')
llama_src="$(dirname "$sys_manifest")/llama.cpp"
llama_tg=target/bench-llama-tg/llama-tg
# Compiled as maas compiles llama.cpp: for this CPU, without the AMX kernels (.cargo/config.toml).
no_amx=""
if [ "$(uname -m)" = x86_64 ]; then no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"; fi
echo "bench: building the llama.cpp references (bench/llama-tg) from $llama_src" >&2
log=target/bench-llama-tg.log
{ cmake -S bench/llama-tg -B target/bench-llama-tg -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx" -DLLAMA_SRC="$llama_src" &&
  cmake --build target/bench-llama-tg --target llama-tg llama-embed llama-requant -j "$(nproc)"; } > "$log" 2>&1 ||
  { tail -n 40 "$log" >&2; echo "bench: building bench/llama-tg failed (log: $log)" >&2; exit 1; }

exec target/bench-venv/bin/python bench/serving.py \
  --maas target/release/maas --llama-tg "$llama_tg" \
  --llama-embed target/bench-llama-tg/llama-embed --llama-requant target/bench-llama-tg/llama-requant \
  --models "${MAAS_MODELS_DIR:-$HOME/.cache/maas/models}" --out bench/results "$@"
