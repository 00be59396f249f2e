#!/usr/bin/env bash
# One command to run maas: installs what is missing, builds a release binary and starts
# `maas serve` with the embedded store in ./maas-data. Extra arguments go to `maas serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The binary is built on, and for, this machine (scripts/build-release.sh).
scripts/build-release.sh
exec target/release/maas serve "$@"
