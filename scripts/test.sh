#!/usr/bin/env bash
# One command to pass the tests: installs what is missing, fetches the real test models, and
# runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-models.sh
cargo test --workspace --locked "$@"
