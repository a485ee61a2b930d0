#!/usr/bin/env bash
# Summarize a Parquet dataset on N Slurm nodes with `runtime batch --shard K/N`.
#
#   sbatch --array=1-8 examples/slurm_batch.sh /shared/docs/ /shared/summaries/
#
# Array task K of N writes /shared/summaries/part-K.parquet holding rows i of the input
# (counted over its *.parquet files in sorted order) with i % N == K - 1. The output
# directory is then one Parquet dataset: any reader reads the directory as a whole, e.g.
#   python3 -c "import pyarrow.parquet as pq; print(pq.read_table('/shared/summaries/').num_rows)"
#   spark.read.parquet("/shared/summaries/")   /   duckdb: SELECT * FROM '/shared/summaries/*.parquet'
# (rows come back grouped by shard; sort by your id column if order matters).
#
# A task that is preempted or killed and requeued (`#SBATCH --requeue`) resumes from its
# checkpoint parts (part-K.parquet.parts/); greedy decoding (the default) makes the text
# the same as an uninterrupted run. The output directory must be on storage every node
# sees and must not be the input directory.
#SBATCH --job-name=keel-batch
#SBATCH --cpus-per-task=16
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --output=keel-batch-%A_%a.log
set -euo pipefail

INPUT=${1:?usage: sbatch --array=1-N $0 INPUT(.parquet|dir) OUTPUT_DIR [extra runtime batch flags]}
OUTDIR=${2:?usage: sbatch --array=1-N $0 INPUT(.parquet|dir) OUTPUT_DIR [extra runtime batch flags]}
shift 2
K=$((${SLURM_ARRAY_TASK_ID:?run this with sbatch --array=1-N} - ${SLURM_ARRAY_TASK_MIN:-1} + 1))
N=${SLURM_ARRAY_TASK_COUNT:?run this with sbatch --array=1-N}
RUNTIME=${RUNTIME:-runtime}   # path to keel's binary on the nodes
MODEL=${MODEL:-smollm2}       # or models:/name@alias with a shared KEEL_HOME

mkdir -p "$OUTDIR"
exec "$RUNTIME" batch --input "$INPUT" --output "$OUTDIR/part-$K.parquet" --model "$MODEL" \
  --shard "$K/$N" --threads "${SLURM_CPUS_PER_TASK:-$(nproc)}" "$@"
