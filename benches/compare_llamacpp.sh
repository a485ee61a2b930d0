#!/usr/bin/env bash
# Side-by-side CPU benchmark: keel's `runtime bench` vs llama.cpp's llama-bench and
# llama-batched-bench, same model (SmolLM2-135M-Instruct at Q4_1, Q8_0, F16, BF16, Q4_K_M), same
# thread count, same sitting. Prints both in one table: keel's exact default path, and with
# --medium also rows "<model>-m" for its opt-in approximations, set against the same llama.cpp
# figures: --matmul-precision medium (BF16 dot products; needs AVX512-BF16) and
# --kv-cache-dtype f16 (llama.cpp's own default KV cache type). Neither is exact.
# Where BF16 dot products do not outrun f32 FMAs (`kernels/src/matmul/bf16_rate.rs`), medium
# runs the exact kernels, and the "-m" rows differ from the exact ones only by the f16 KV cache.
#
#   benches/compare_llamacpp.sh [--threads N] [--reps R] [--rounds K] [--quick] [--medium]
#
# --rounds K measures every model K times, keel and llama.cpp back to back each time, prints
# each round, then the medians (of the figures, and of each round's ratio): on a shared
# machine single runs move by ±10% or more, and a ratio from one round can mislead.
#
# llama.cpp is built once from the PyPI source package `llama-cpp-python` (its
# `vendor/llama.cpp`, cmake Release, native) into $KEEL_HOME/llama.cpp-<version>/; the
# Q8_0, F16 and BF16 models are made from the Q4_1 GGUF with llama-quantize --allow-requantize,
# the Q4_K_M one from the F16 GGUF.
# Needs cmake and a C++ compiler (Debian: cmake g++).
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=2 REPS=3 ROUNDS=1 QUICK=0 WANT_MEDIUM=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --medium) WANT_MEDIUM=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

KEEL_HOME=${KEEL_HOME:-$HOME/.cache/keel}
LCPP_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
LCPP_DIR=$KEEL_HOME/llama.cpp-$LCPP_VERSION
BIN=$LCPP_DIR/vendor/llama.cpp/build/bin

NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
# $1: extra compiler flags. The compiler's warnings go to a log, shown only if the build fails.
build_llama() {
  log=$LCPP_DIR/build.log
  (cd "$LCPP_DIR/vendor/llama.cpp" && rm -rf build &&
    cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
      -DCMAKE_C_FLAGS="$1" -DCMAKE_CXX_FLAGS="$1" &&
    cmake --build build -j"$(nproc)" --target llama-bench llama-batched-bench llama-quantize) >"$log" 2>&1 ||
    { tail -n 40 "$log" >&2; echo "llama.cpp build failed (full log: $log)" >&2; exit 1; }
}
if [ ! -x "$BIN/llama-bench" ] || [ ! -x "$BIN/llama-batched-bench" ] || [ ! -x "$BIN/llama-quantize" ]; then
  command -v cmake >/dev/null || { echo "cmake is needed (apt-get install cmake g++)" >&2; exit 1; }
  echo "building llama.cpp from the PyPI sdist llama-cpp-python==$LCPP_VERSION (several minutes)..." >&2
  tmp=$(mktemp -d)
  python3 -m pip download --no-deps --no-binary llama-cpp-python "llama-cpp-python==$LCPP_VERSION" -d "$tmp" -q
  mkdir -p "$LCPP_DIR"
  tar xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$LCPP_DIR" --strip-components=1
  rm -rf "$tmp"
  build_llama "$([ -f "$LCPP_DIR/no-amx" ] && echo "$NO_AMX")"
fi
cargo build --release --quiet
RT=target/release/runtime
Q41=$($RT pull smollm2)
MODELS=$KEEL_HOME/models/smollm2
for q in Q8_0 F16 BF16; do
  f=$MODELS/smollm2-$q.gguf
  [ -f "$f" ] || "$BIN/llama-quantize" --allow-requantize "$Q41" "$f" "$q" >/dev/null 2>&1
done
# The usual llama.cpp recipe, from the F16 file: SmolLM2's 576-wide rows are not whole
# 256-element K-quant blocks, so llama-quantize falls back to Q5_0 / Q8_0 for most matrices
# and keeps Q4_K / Q6_K for ffn_down (1536 wide): a mix of five formats.
f=$MODELS/smollm2-Q4_K_M.gguf
[ -f "$f" ] || "$BIN/llama-quantize" "$MODELS/smollm2-F16.gguf" "$f" Q4_K_M >/dev/null 2>&1

# A CPU can report AMX while its virtual machine does not enable it: llama.cpp's native
# build then dies on its first AMX instruction (SIGILL). Rebuilt once without AMX there.
if ! "$BIN/llama-bench" -m "$Q41" -t 1 -r 1 -p 32 -n 0 >/dev/null 2>&1; then
  if grep -qw amx_tile /proc/cpuinfo && [ ! -f "$LCPP_DIR/no-amx" ]; then
    echo "llama.cpp's native build fails here (AMX reported but not usable?): rebuilding without AMX..." >&2
    build_llama "$NO_AMX"
    touch "$LCPP_DIR/no-amx"
  fi
  "$BIN/llama-bench" -m "$Q41" -t 1 -r 1 -p 32 -n 0 >/dev/null || { echo "llama-bench does not run on this machine" >&2; exit 1; }
fi

json() { python3 -c "import json,sys; print(round(json.load(sys.stdin)['$1'], 1))"; }
lb() { # llama-bench: $1 model, $2 test (pp512|tg128) -> t/s
  "$BIN/llama-bench" -m "$1" -t "$THREADS" -r "$REPS" -o json $( [ "$2" = pp512 ] && echo "-p 512 -n 0" || echo "-p 0 -n 128" ) 2>/dev/null |
    python3 -c "import json,sys; print(round(json.load(sys.stdin)[0]['avg_ts'], 1))"
}
lbb() { # llama-batched-bench 32 x (128 in, 128 out): decode t/s (S_TG)
  "$BIN/llama-batched-bench" -m "$1" -t "$THREADS" -npp 128 -ntg 128 -npl 32 -c 16384 2>/dev/null |
    awk -F'|' '/^\|  *128/ {gsub(/ /,"",$9); print $9}'
}

SPECS="Q4_1:$Q41 Q8_0:$MODELS/smollm2-Q8_0.gguf F16:$MODELS/smollm2-F16.gguf BF16:$MODELS/smollm2-BF16.gguf"
SPECS="$SPECS Q4_K_M:$MODELS/smollm2-Q4_K_M.gguf"
if [ "$WANT_MEDIUM" = 1 ]; then
  grep -qw avx512_bf16 /proc/cpuinfo || { echo "--medium needs a CPU with AVX512-BF16" >&2; exit 2; }
  SPECS="$SPECS Q4_1-m:$Q41:medium Q8_0-m:$MODELS/smollm2-Q8_0.gguf:medium F16-m:$MODELS/smollm2-F16.gguf:medium BF16-m:$MODELS/smollm2-BF16.gguf:medium"
fi
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
fam=$(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs) mod=$(grep -m1 '^model\s*:' /proc/cpuinfo | cut -d: -f2 | xargs)
echo "machine: $cpu (family $fam, model $mod), $(nproc) CPUs; $THREADS threads; keel $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
header() { printf '%-6s | %-22s | %-22s | %-26s\n' model "pp512 keel/llama (x)" "tg128 keel/llama (x)" "32-seq decode keel/llama (x)"; }
# Prints the table rows of "name kpp lpp ktg ltg kbd lbd" lines on stdin; with several
# rounds of one model, the medians of each figure and of the rounds' ratios.
table() {
  python3 -c '
import sys, statistics as st
rows = {}
for line in sys.stdin:
    name, *v = line.split()
    rows.setdefault(name, []).append([None if x == "-" else float(x) for x in v])
def med(xs):
    xs = [x for x in xs if x is not None]
    return st.median(xs) if xs else None
for name, rs in rows.items():
    cells = []
    for k, l in ((0, 1), (2, 3), (4, 5)):
        kv, lv = med([r[k] for r in rs]), med([r[l] for r in rs])
        ratio = med([r[k] / r[l] if r[k] and r[l] else None for r in rs])
        w = 6 if k < 4 else 7
        f = lambda x: "-".rjust(w) if x is None else f"{x:{w}.1f}"
        rt = "-" if ratio is None else f"{ratio:.2f}"
        cells.append(f"{f(kv)} / {f(lv)} ({rt:>5})")
    print(f"{name:<6} | " + " | ".join(cells))
'
}
for round in $(seq "$ROUNDS"); do
  [ "$ROUNDS" = 1 ] || echo "round $round of $ROUNDS"
  declare -A LPP=() LTG=() LBD=()
  header
  for spec in $SPECS; do
    name=${spec%%:*} rest=${spec#*:}
    m=${rest%%:*} opts=()
    [ "$m" = "$rest" ] || opts=(--matmul-precision medium --kv-cache-dtype f16)
    kb=$($RT bench --model "$m" -p 512 -n 128 -r "$REPS" -t "$THREADS" "${opts[@]}" --json)
    kpp=$(echo "$kb" | json prefill_tokens_per_s) ktg=$(echo "$kb" | json decode_tokens_per_s)
    # llama.cpp runs once per model and round; a "-m" row reuses its model's figures.
    if [ -z "${LPP[$m]:-}" ]; then
      LPP[$m]=$(lb "$m" pp512) LTG[$m]=$(lb "$m" tg128)
      if [ "$QUICK" = 1 ]; then LBD[$m]=-; else LBD[$m]=$(lbb "$m"); fi
    fi
    lpp=${LPP[$m]} ltg=${LTG[$m]} lbd=${LBD[$m]}
    if [ "$QUICK" = 1 ]; then kbd=-; else
      kbd=$($RT bench offline --model "$m" --num-prompts 32 --input-len 128 --output-len 128 -t "$THREADS" "${opts[@]}" --json | json decode_tokens_per_s)
    fi
    echo "$name $kpp $lpp $ktg $ltg $kbd $lbd" | tee -a "$rows" | table
  done
done
if [ "$ROUNDS" != 1 ]; then
  echo "median of $ROUNDS rounds (figures: medians; ratios: median of the rounds' ratios)"
  header
  table <"$rows"
fi
