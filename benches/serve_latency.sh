#!/usr/bin/env bash
# Serving latency, same machine, same sitting:
#   1. `runtime bench offline` (in-process engine, no HTTP) at concurrency 1;
#   2. `runtime bench serve` against `runtime serve` at concurrency 1 (serving overhead =
#      HTTP TTFT p50 minus in-process TTFT p50, same prompt length in tokens);
#   3. `runtime bench serve` at a Poisson request rate against `runtime serve` and
#      against llama.cpp's `llama-server -np 32`, same model, same threads.
#
#   benches/serve_latency.sh [--model PATH] [--threads N] [--num-prompts N] [--rate R]
#
# llama-server is built from the same PyPI sdist as benches/compare_llamacpp.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=2 N=64 RATE=4 OUT_LEN=64 IN_WORDS=96
KEEL_HOME=${KEEL_HOME:-$HOME/.cache/keel}
MODEL=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --num-prompts) N=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

cargo build --release --quiet
RT=target/release/runtime
[ -n "$MODEL" ] || MODEL=$($RT pull smollm2)

LCPP_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
LCPP_DIR=$KEEL_HOME/llama.cpp-$LCPP_VERSION
BIN=$LCPP_DIR/vendor/llama.cpp/build/bin
if [ ! -x "$BIN/llama-server" ]; then
  [ -d "$LCPP_DIR/vendor/llama.cpp" ] || benches/compare_llamacpp.sh --quick >/dev/null
  echo "building llama-server (several minutes)..." >&2
  (cd "$LCPP_DIR/vendor/llama.cpp" &&
    cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null &&
    cmake --build build -j"$(nproc)" --target llama-server >/dev/null)
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_url() { # $1 url: polls until 200
  for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
    sleep 0.1
  done
  echo "$1 never answered 200" >&2
  exit 1
}

field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(round(d['$1'], 2) if d['$1'] is not None else 'null')"; }

# keel server.
KPORT=18080
$RT serve --model "$MODEL" --port $KPORT --threads "$THREADS" --max-num-seqs 32 2>/tmp/keel-serve.log &
PIDS+=($!)
wait_url http://127.0.0.1:$KPORT/health/ready

# 1 + 2: one request at a time.
$RT bench serve --url http://127.0.0.1:$KPORT --num-prompts 16 --max-concurrency 1 \
  --input-len $IN_WORDS --output-len $OUT_LEN --json >/tmp/keel-serve-c1.json
IN_TOK=$(python3 -c "import json; d=json.load(open('/tmp/keel-serve-c1.json')); print(round(d['total_input_tokens']/d['completed']))")
SERVER_TTFT=$(curl -s http://127.0.0.1:$KPORT/metrics | awk '/^keel_time_to_first_token_seconds_sum/ {s=$2} /^keel_time_to_first_token_seconds_count/ {c=$2} END {printf "%.2f", 1000*s/c}')
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()
$RT bench offline --model "$MODEL" --threads "$THREADS" --num-prompts 16 --concurrency 1 \
  --input-len "$IN_TOK" --output-len $OUT_LEN --json >/tmp/keel-offline-c1.json

echo "== one request at a time ($IN_TOK prompt tokens, $OUT_LEN new tokens, $THREADS threads)"
printf '%-34s %10s %10s\n' "" "TTFT p50" "TPOT p50"
printf '%-34s %10s %10s\n' "runtime bench offline (in-process)" "$(field ttft_ms_p50 </tmp/keel-offline-c1.json)" "$(field tpot_ms_p50 </tmp/keel-offline-c1.json)"
printf '%-34s %10s %10s\n' "runtime bench serve (HTTP, SSE)" "$(field median_ttft_ms </tmp/keel-serve-c1.json)" "$(field median_tpot_ms </tmp/keel-serve-c1.json)"
echo "server-side mean TTFT (keel_time_to_first_token_seconds): $SERVER_TTFT ms"

# 3: Poisson arrivals, keel vs llama-server.
$RT serve --model "$MODEL" --port $KPORT --threads "$THREADS" --max-num-seqs 32 2>/tmp/keel-serve.log &
PIDS+=($!)
LPORT=18081
"$BIN/llama-server" -m "$MODEL" -t "$THREADS" -np 32 -c $((32 * 512)) --port $LPORT >/tmp/llama-server.log 2>&1 &
PIDS+=($!)
wait_url http://127.0.0.1:$KPORT/health/ready
wait_url http://127.0.0.1:$LPORT/health
for who in keel llama; do
  port=$KPORT; [ $who = llama ] && port=$LPORT
  # Only one server computes at a time: the other is idle.
  $RT bench serve --url http://127.0.0.1:$port --num-prompts "$N" --request-rate "$RATE" --seed 0 \
    --input-len $IN_WORDS --output-len $OUT_LEN --json >/tmp/$who-serve-rate.json
done
echo
echo "== $N requests, Poisson rate $RATE/s, $IN_WORDS-word prompts, $OUT_LEN new tokens, $THREADS threads"
printf '%-14s %9s %9s %9s %9s %9s %9s %11s\n' "" "TTFT p50" "TTFT p99" "TPOT p50" "ITL p50" "E2E p50" "req/s" "out tok/s"
for who in keel llama; do
  f=/tmp/$who-serve-rate.json
  printf '%-14s %9s %9s %9s %9s %9s %9s %11s\n' "$([ $who = keel ] && echo 'runtime serve' || echo 'llama-server')" \
    "$(field median_ttft_ms <$f)" "$(field p99_ttft_ms <$f)" "$(field median_tpot_ms <$f)" "$(field median_itl_ms <$f)" \
    "$(field median_e2el_ms <$f)" "$(field request_throughput <$f)" "$(field output_throughput <$f)"
done
