#!/usr/bin/env bash
# Batch-mode throughput against the engine's own ceiling: `runtime batch` summarizing real
# documents (ACLSum, via tools/make_aclsum_parquet.py) vs `runtime bench offline` with the
# same concurrency and the batch run's average prompt and completion lengths, same model
# (the default, SmolLM2-135M-Instruct Q4_1), same threads, same sitting. Target: batch
# tokens/s >= 90% of bench offline's. Also llama.cpp's llama-batched-bench at the same
# shape when benches/compare_llamacpp.sh has built it.
#
#   benches/batch_throughput.sh [--docs 64] [--words 300] [--max-tokens 64] [--max-num-seqs 32] [--threads N]
#
# Documents are the abstract + introduction of ACLSum's test split cut to --words words.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCS=64 WORDS=300 MAX_TOKENS=64 SEQS=32 THREADS=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --docs) DOCS=$2; shift 2 ;;
    --words) WORDS=$2; shift 2 ;;
    --max-tokens) MAX_TOKENS=$2; shift 2 ;;
    --max-num-seqs) SEQS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

KEEL_HOME=${KEEL_HOME:-$HOME/.cache/keel}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

tools/make_aclsum_parquet.py --split test --limit "$DOCS" --max-words "$WORDS" --output "$WORK/docs.parquet"
cargo build --release --quiet
RT=target/release/runtime
MODEL=$($RT pull smollm2)

get() { python3 -c "import json,sys; print(json.load(open('$1'))['$2'])"; }

set -x
$RT batch --input "$WORK/docs.parquet" --output "$WORK/summaries.parquet" --model "$MODEL" \
  --max-tokens "$MAX_TOKENS" --max-num-seqs "$SEQS" --threads "$THREADS" --json-summary >"$WORK/batch.json"
{ set +x; } 2>/dev/null
"$KEEL_HOME/venvs/pyarrow/bin/python" - "$WORK/summaries.parquet" <<'EOF' || true
import sys, pyarrow.parquet as pq
r = pq.read_table(sys.argv[1]).slice(0, 1).to_pylist()[0]
print(f"first row: {r['id']} ({r['title']}): {r['completion_tokens']} tokens, {r['finish_reason']}:\n  {r['generated_text']!r}")
EOF
ROWS=$(get "$WORK/batch.json" rows_this_run)
IN=$(python3 -c "print(max(1, round($(get "$WORK/batch.json" prompt_tokens) / $ROWS)))")
OUT=$(python3 -c "print(max(1, round($(get "$WORK/batch.json" completion_tokens) / $ROWS)))")
set -x
$RT bench offline --model "$MODEL" --num-prompts "$DOCS" --input-len "$IN" --output-len "$OUT" \
  --concurrency "$SEQS" -t "$THREADS" --json >"$WORK/offline.json"
{ set +x; } 2>/dev/null

echo
echo "batch:         $(cat "$WORK/batch.json")"
echo "bench offline: $(cat "$WORK/offline.json")"
echo
python3 - "$WORK/batch.json" "$WORK/offline.json" <<'EOF'
import json, sys
b, o = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
rows = b["rows_this_run"]
print(f"{rows} docs, avg {b['prompt_tokens'] / rows:.0f} prompt + {b['completion_tokens'] / rows:.0f} completion tokens, "
      f"max_num_seqs {b['max_num_seqs']}, {b['threads']} threads, {b['errors']} errors")
for key, what in [("total_tokens_per_s", "total (prompt + completion)"), ("output_tokens_per_s", "output")]:
    print(f"{what:28s} tok/s: batch {b[key]:8.1f}   bench offline {o[key]:8.1f}   batch/offline {b[key] / o[key]:.2f}")
EOF

LBB=$(ls "$KEEL_HOME"/llama.cpp-*/vendor/llama.cpp/build/bin/llama-batched-bench "$KEEL_HOME"/llama.cpp-*/build/bin/llama-batched-bench 2>/dev/null | head -n1 || true)
if [ -n "$LBB" ]; then
  echo
  echo "llama.cpp: $LBB -m $MODEL -t $THREADS -npp $IN -ntg $OUT -npl $SEQS"
  "$LBB" -m "$MODEL" -t "$THREADS" -npp "$IN" -ntg "$OUT" -npl "$SEQS" -c $(((IN + OUT) * SEQS + 64)) 2>/dev/null |
    awk -F'|' -v pp="$IN" '{v=$2; gsub(/ /,"",v)} v==pp {gsub(/ /,"",$11); gsub(/ /,"",$9); print "llama-batched-bench total tok/s " $11 "   decode tok/s " $9}'
fi
