#!/usr/bin/env bash
# One command for the whole SASRec/GRU4Rec benchmark, rdrec vs RecBole 1.2.1 (see README.md):
#   experiments/sr_benchmark/run.sh            # everything not done yet, then the table
#   experiments/sr_benchmark/run.sh --only recbole   # extra arguments go to run.py
# Environment: BENCH_CORE (default 1) is the core every measured process is pinned to; BENCH_EPOCHS (default 3)
# the epoch cap both implementations share.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
cd "$HERE"

# 1. the project's venv (rdrec-train, rdrec-data)
[ -x "$REPO/.venv/bin/rdrec-train" ] || make -C "$REPO" install

# 2. RecBole's own venv, from PyPI, with the pins it needs (requirements-recbole.txt explains them)
RB="$HERE/.venv-recbole"
if [ ! -f "$RB/.installed" ] || [ requirements-recbole.txt -nt "$RB/.installed" ]; then
  [ -x "$RB/bin/python" ] || python3 -m venv "$RB"
  "$RB/bin/pip" install -q "torch==2.13.0"   # a CPU build; any other spec may pull a CUDA build
  "$RB/bin/pip" install -q --no-deps "recbole==1.2.1"
  "$RB/bin/pip" install -q -r requirements-recbole.txt
  touch "$RB/.installed"
fi

# 3. the split, exported once (default seed 42: the split itself does not depend on the seed)
if [ ! -f work/export/recbole/ml100k/ml100k.test.inter ]; then
  "$REPO/.venv/bin/rdrec-data" data=ml100k action=export export.dir="$HERE/work/export"
fi

# 4. the split is the same for every seed rdrec runs with (RecBole's side is checked inside each run)
"$REPO/.venv/bin/python" check_split.py --seeds 1 2 3 > work/check_split.log

# 5. every run not done yet (results/*.json), one at a time, pinned to one core
python3 run.py "$@"

# 6. the table
"$REPO/.venv/bin/python" make_table.py
