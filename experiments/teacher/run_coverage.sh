#!/usr/bin/env bash
# Full teacher coverage of ml-100k (RDRec item + user sentences, SLIM per user), pinned to one core; resumable:
# re-running it skips everything already in the store. Extra arguments are passed on (e.g. families.slim=null).
#   bash experiments/teacher/run_coverage.sh [overrides…]
set -euo pipefail
cd "$(dirname "$0")/../.."
export RDREC_DATA_DIR="${RDREC_DATA_DIR:-$PWD/data}"
PY=.venv/bin/python; [ -x "$PY" ] || PY=python     # the project's venv (make install) if there is one
exec taskset -c "${CORE:-1}" env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
    "$PY" -m rdrec.cli.generate data=ml100k +coverage=full teacher.backend.torch_threads=1 \
    export_dir="$RDREC_DATA_DIR/rationales/ml100k-full-export" "$@"
