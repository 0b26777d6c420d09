#!/usr/bin/env bash
# SLIM teacher cost and parse rate on the same users under different generation settings, each into its own
# fresh store (so nothing is reused): one pinned core per run.
#   CORE=0 USERS=24 NAME=greedy bash experiments/teacher/bench_slim.sh                      # today's settings
#   CORE=1 USERS=24 NAME=loopstop bash experiments/teacher/bench_slim.sh families.slim.max_word_repeats=4
#   CORE=0 USERS=64 ITEMS=128 DROP=slim NAME=rdrec16 bash experiments/teacher/bench_slim.sh teacher.batch_size=16
#                                                           # the RDRec item + user prompts instead (DROP=slim)
# Prints the wall time; `python experiments/teacher/quality.py --counts --store <store>/..` gives the counts.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=python; [ -x .venv/bin/python ] && PY=.venv/bin/python
OUTDIR=${OUTDIR:-/tmp/rdrec-bench-slim}/${NAME:?NAME=<variant name>}
rm -rf "$OUTDIR"; mkdir -p "$OUTDIR"
start=$(date +%s)
RDREC_DATA_DIR=${RDREC_DATA_DIR:-$PWD/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
    taskset -c "${CORE:-0}" "$PY" -m rdrec.cli.generate data=ml100k +coverage=full "families.${DROP:-rdrec}=null" \
    subset.users="${USERS:-24}" subset.items="${ITEMS:-null}" teacher.backend.torch_threads=1 store_dir="$OUTDIR/store" \
    hydra.run.dir="$OUTDIR/run" "$@" > "$OUTDIR/log.txt" 2>&1
echo "$NAME: $(( $(date +%s) - start )) s for ${USERS:-24} users, ${ITEMS:-all} items, without ${DROP:-rdrec} (core ${CORE:-0}); store $OUTDIR/store"
