#!/usr/bin/env bash
# Side-by-side CPU benchmark: keel's `runtime bench` vs llama.cpp's llama-bench and
# llama-batched-bench, same model (SmolLM2-135M-Instruct at Q4_1, Q8_0, F16, BF16), same
# thread count, same sitting. Prints both in one table.
#
#   benches/compare_llamacpp.sh [--threads N] [--reps R] [--quick]
#
# llama.cpp is built once from the PyPI source package `llama-cpp-python` (its
# `vendor/llama.cpp`, cmake Release, native) into $KEEL_HOME/llama.cpp-<version>/; the
# Q8_0, F16 and BF16 models are made from the Q4_1 GGUF with llama-quantize --allow-requantize.
# Needs cmake and a C++ compiler (Debian: cmake g++).
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=2 REPS=3 QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

KEEL_HOME=${KEEL_HOME:-$HOME/.cache/keel}
LCPP_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
LCPP_DIR=$KEEL_HOME/llama.cpp-$LCPP_VERSION
BIN=$LCPP_DIR/vendor/llama.cpp/build/bin

if [ ! -x "$BIN/llama-bench" ] || [ ! -x "$BIN/llama-batched-bench" ] || [ ! -x "$BIN/llama-quantize" ]; then
  command -v cmake >/dev/null || { echo "cmake is needed (apt-get install cmake g++)" >&2; exit 1; }
  echo "building llama.cpp from the PyPI sdist llama-cpp-python==$LCPP_VERSION (several minutes)..." >&2
  tmp=$(mktemp -d)
  python3 -m pip download --no-deps --no-binary llama-cpp-python "llama-cpp-python==$LCPP_VERSION" -d "$tmp" -q
  mkdir -p "$LCPP_DIR"
  tar xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$LCPP_DIR" --strip-components=1
  rm -rf "$tmp"
  # The compiler's warnings go to a log, shown only if the build fails.
  log=$LCPP_DIR/build.log
  (cd "$LCPP_DIR/vendor/llama.cpp" &&
    cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF &&
    cmake --build build -j"$(nproc)" --target llama-bench llama-batched-bench llama-quantize) >"$log" 2>&1 ||
    { tail -n 40 "$log" >&2; echo "llama.cpp build failed (full log: $log)" >&2; exit 1; }
fi

cargo build --release --quiet
RT=target/release/runtime
Q41=$($RT pull smollm2)
MODELS=$KEEL_HOME/models/smollm2
for q in Q8_0 F16 BF16; do
  f=$MODELS/smollm2-$q.gguf
  [ -f "$f" ] || "$BIN/llama-quantize" --allow-requantize "$Q41" "$f" "$q" >/dev/null 2>&1
done

json() { python3 -c "import json,sys; print(round(json.load(sys.stdin)['$1'], 1))"; }
lb() { # llama-bench: $1 model, $2 test (pp512|tg128) -> t/s
  "$BIN/llama-bench" -m "$1" -t "$THREADS" -r "$REPS" -o json $( [ "$2" = pp512 ] && echo "-p 512 -n 0" || echo "-p 0 -n 128" ) 2>/dev/null |
    python3 -c "import json,sys; print(round(json.load(sys.stdin)[0]['avg_ts'], 1))"
}
lbb() { # llama-batched-bench 32 x (128 in, 128 out): decode t/s (S_TG)
  "$BIN/llama-batched-bench" -m "$1" -t "$THREADS" -npp 128 -ntg 128 -npl 32 -c 16384 2>/dev/null |
    awk -F'|' '/^\|  *128/ {gsub(/ /,"",$9); print $9}'
}

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
fam=$(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs) mod=$(grep -m1 '^model\s*:' /proc/cpuinfo | cut -d: -f2 | xargs)
echo "machine: $cpu (family $fam, model $mod), $(nproc) CPUs; $THREADS threads; keel $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
printf '%-6s | %-22s | %-22s | %-26s\n' model "pp512 keel/llama (x)" "tg128 keel/llama (x)" "32-seq decode keel/llama (x)"
for spec in "Q4_1:$Q41" "Q8_0:$MODELS/smollm2-Q8_0.gguf" "F16:$MODELS/smollm2-F16.gguf" "BF16:$MODELS/smollm2-BF16.gguf"; do
  name=${spec%%:*} m=${spec#*:}
  kb=$($RT bench --model "$m" -p 512 -n 128 -r "$REPS" -t "$THREADS" --json)
  kpp=$(echo "$kb" | json prefill_tokens_per_s) ktg=$(echo "$kb" | json decode_tokens_per_s)
  lpp=$(lb "$m" pp512) ltg=$(lb "$m" tg128)
  if [ "$QUICK" = 1 ]; then kbd=- lbd=-; else
    kbd=$($RT bench offline --model "$m" --num-prompts 32 --input-len 128 --output-len 128 -t "$THREADS" --json | json decode_tokens_per_s)
    lbd=$(lbb "$m")
  fi
  ratio() { python3 -c "print('-' if '$1'=='-' or '$2'=='-' else f'{float(\"$1\")/float(\"$2\"):.2f}')"; }
  printf '%-6s | %6s / %6s (%5s) | %6s / %6s (%5s) | %7s / %7s (%5s)\n' "$name" \
    "$kpp" "$lpp" "$(ratio "$kpp" "$lpp")" "$ktg" "$ltg" "$(ratio "$ktg" "$ltg")" "$kbd" "$lbd" "$(ratio "$kbd" "$lbd")"
done
