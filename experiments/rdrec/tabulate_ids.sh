#!/usr/bin/env bash
# Every item-ID scheme, POD and RDRec, in one table from the committed per-seed results (no run): experiments/rdrec/README.md
set -euo pipefail
cd "$(dirname "$0")/../.."
python experiments/rdrec/compare.py --no-run --tag ids_rdrec_all --seeds 1 2 3 \
  --methods Pop LeakProbe SASRec POD-random RDRec-random POD-independent RDRec-independent POD-semantic RDRec-semantic POD-collaborative RDRec-collaborative \
  --from-results Pop:ids --from-results LeakProbe:ids --from-results SASRec:main --from-results POD-random:ids_rand --from-results RDRec-random:ids_rdrec_rand \
  --from-results POD-independent:ids --from-results RDRec-independent:ids_rdrec_ind --from-results POD-semantic:ids_sem \
  --from-results RDRec-semantic:ids_rdrec_sem --from-results POD-collaborative:ids --from-results RDRec-collaborative:ids_rdrec \
  --pair RDRec-random:POD-random --pair RDRec-independent:POD-independent --pair RDRec-semantic:POD-semantic --pair RDRec-collaborative:POD-collaborative \
  --pair RDRec-independent:Pop --pair RDRec-semantic:Pop
