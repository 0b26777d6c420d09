#!/bin/bash
# Cost of each DELRec stage on 2 CPU cores with the shipped SmolLM2-135M-Instruct on ml-100k, at the strategies'
# default (paper-like) settings: 100 soft tokens, K = 20 candidates, 10 history titles, batch 4; 4 optimizer
# steps per stage, 8 evaluated users. Seconds per step: the module's `train/seconds_per_step` (median) in
# <run>/csv/metrics.csv; peak memory: GNU time's maximum resident set size in <stage>.log.
# Needs the SASRec run of seed 1 (rdrec-train strategy=sr seed=1 hydra.run.dir=$SR).
set -e
cd "$(dirname "$0")/../.."
W=experiments/delrec/work/cost
SR=${SR:-experiments/delrec/work/sr/sasrec_seed1}
mkdir -p $W
COMMON="seed=1 data=ml100k delrec.sr_run=$SR data.examples_per_user=1 data.batch_size=4 data.eval_users=8 +trainer.limit_train_batches=4 trainer.enable_progress_bar=false"
/usr/bin/time -v nice -n 10 .venv/bin/rdrec-train strategy=delrec_stage1 $COMMON hydra.run.dir=$W/stage1 > $W/stage1.log 2>&1
/usr/bin/time -v nice -n 10 .venv/bin/rdrec-train strategy=delrec $COMMON delrec.stage1_run=$W/stage1 trainer.max_epochs=1 hydra.run.dir=$W/stage2 > $W/stage2.log 2>&1
grep -h -E "Elapsed|Maximum resident" $W/stage1.log $W/stage2.log
for stage in stage1 stage2; do   # the module logs train/seconds_per_step; its median over the logged values
  .venv/bin/python -c "import pandas as pd, sys; f = pd.read_csv(sys.argv[1]); print(sys.argv[2], 'median s/step:', f['train/seconds_per_step'].dropna().median())" $W/$stage/csv/metrics.csv $stage
done
