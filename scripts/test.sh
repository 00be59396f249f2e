#!/usr/bin/env bash
# One command to pass the tests: installs what is missing, fetches the real test models, and
# runs every test of the workspace. Ends with one summary line: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-models.sh
# The official OpenAI and Triton Python clients, for the compatibility tests (target/ is
# outside git).
venv=target/test-venv
if ! "$venv/bin/python" -c "import openai, tritonclient.http" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "openai==3.57.0" "tritonclient[http]==2.73.0"
fi
export MAAS_TEST_PYTHON="$PWD/$venv/bin/python"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
