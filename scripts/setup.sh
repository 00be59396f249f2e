#!/usr/bin/env bash
# Installs what building maas needs and is missing. Safe to run again: it only acts on gaps.
set -euo pipefail

# cmake and libclang build llama.cpp (the llama-cpp-2 crate); pkg-config finds system libraries;
# python3-venv holds the OpenAI client used by the compatibility test.
packages=(build-essential cmake clang libclang-dev pkg-config python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing; install the Rust toolchain (https://rustup.rs) and run this again" >&2
  exit 1
fi
