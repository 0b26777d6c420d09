"""Train and test one RecBole 1.2.1 sequential model on rdrec's exported ml-100k split (runs in .venv-recbole).

    python recbole_runner.py --model SASRec --seed 1 --export work/export --out work/raw/x.json [--epochs N]

What it does, in order:
1. one intra-op thread (``torch.set_num_threads(1)``; the caller also pins the process to one core);
2. imports RecBole, which turns on ``torch.autograd.set_detect_anomaly(True)`` at import (in
   recbole/model/sequential_recommender/sine.py); we switch it OFF again before anything is built;
3. RecBole's own pipeline (``init_seed`` / ``create_dataset`` / ``data_preparation`` / model / ``Trainer.fit``
   with early stopping on NDCG@10 / ``Trainer.evaluate`` on the best checkpoint), RecBole's default
   hyper-parameters for the model, overridden only where the split/protocol must match;
4. checks that RecBole's train/valid/test (user, history, target) triples are exactly rdrec's split, by
   original MovieLens ids (from the export's csv, which carries original next to remapped ids);
5. scores every test user with RecBole's ``full_sort_predict`` and ranks the target with rdrec's own
   ``pessimistic_rank`` / ``metrics_from_ranks`` (rdrec/eval/ranking.py, loaded by file path), with the
   user's earlier items excluded and not excluded;
6. writes one JSON (atomically) with RecBole's metrics, rdrec-evaluator metrics, per-epoch timings parsed
   from RecBole's log lines, and the split check.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import get_model, init_logger, init_seed  # noqa: E402
import recbole.model.sequential_recommender  # noqa: E402,F401  (imports sine.py, which enables anomaly detection)

ANOMALY_AT_IMPORT = torch.is_anomaly_enabled()
_torch_load = torch.load


def _load_trusted(*args, **kwargs):
    # RecBole 1.2.1 checkpoints pickle its Config; torch>=2.6 defaults to weights_only=True and refuses them.
    # The file is the one this process just wrote, so loading it fully is safe.
    kwargs.setdefault("weights_only", False)
    return _torch_load(*args, **kwargs)


torch.load = _load_trusted
torch.autograd.set_detect_anomaly(False)  # RecBole switched it on at import: it slows training several-fold

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
_spec = importlib.util.spec_from_file_location("rdrec_ranking", REPO / "rdrec" / "eval" / "ranking.py")
ranking = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ranking)  # only torch + torchmetrics; the rdrec package itself is not imported

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TRAIN_RE = re.compile(r"epoch (\d+) training \[time: ([0-9.]+)s, train loss: ([0-9.naif-]+)\]")
VALID_RE = re.compile(r"epoch (\d+) evaluating \[time: ([0-9.]+)s, valid_score: ([0-9.naif-]+)\]")


class EpochLog(logging.Handler):
    """Collects RecBole's `epoch N training [time: Xs ...]` / `epoch N evaluating [time: Ys ...]` lines."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.train: list[dict] = []
        self.valid: list[dict] = []

    def emit(self, record):
        msg = ANSI.sub("", record.getMessage())
        if m := TRAIN_RE.search(msg):
            self.train.append({"epoch": int(m[1]), "seconds": float(m[2]), "loss": float(m[3])})
        elif m := VALID_RE.search(msg):
            self.valid.append({"epoch": int(m[1]), "seconds": float(m[2]), "valid_ndcg@10": float(m[3])})


def expected_triples(export: Path, max_len: int) -> dict[str, list[tuple]]:
    """rdrec's split from the export's csv: (user, last max_len items before the target, target), original ids."""
    inter = pd.read_csv(export / "csv" / "interactions.csv").sort_values(["user", "position"], kind="stable")
    out = {"train": [], "valid": [], "test": []}
    for user, frame in inter.groupby("user_id", sort=False):
        items = frame["item_id"].tolist()
        for p, split in enumerate(frame["split"].tolist()):
            if p > 0:
                out[split].append((int(user), tuple(items[max(0, p - max_len):p]), int(items[p])))
    return out


def recbole_triples(ds, user_tok2orig, item_tok2orig) -> list[tuple]:
    feat = ds.inter_feat
    utok = ds.field2id_token["user_id"]
    itok = ds.field2id_token["item_id"]
    users = [user_tok2orig[t] for t in utok[feat["user_id"].numpy()]]
    targets = [item_tok2orig[t] for t in itok[feat["item_id"].numpy()]]
    lists, lens = feat["item_id_list"].numpy(), feat["item_length"].numpy()
    return [(u, tuple(item_tok2orig[t] for t in itok[row[:n]]), i) for u, row, n, i in zip(users, lists, lens, targets)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=["SASRec", "GRU4Rec"])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--export", type=Path, required=True, help="rdrec-data export dir (has csv/ and recbole/ml100k/)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=300, help="RecBole default 300")
    ap.add_argument("--stopping-step", type=int, default=10, help="RecBole default 10")
    ap.add_argument("--workdir", type=Path, default=None, help="RecBole's log/ and checkpoints go here")
    args = ap.parse_args()

    export = args.export.resolve()
    workdir = (args.workdir or args.out.parent / f"recbole_{args.model}_seed{args.seed}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)  # RecBole writes ./log/ and ./log_tensorboard/ relative to the cwd

    overrides = {
        # protocol / split (must match rdrec's); the rest of ml100k.yaml comes from the export
        "MAX_ITEM_LIST_LENGTH": 50,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "train_neg_sample_args": None,  # CE loss over all items (RecBole's default loss_type for both models)
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [1, 5, 10, 20],
        "valid_metric": "NDCG@10",
        "eval_batch_size": 4096,  # all 943 users in one batch
        # environment
        "seed": args.seed,
        "reproducibility": True,
        "device": "cpu",
        "use_gpu": False,
        "worker": 0,
        "show_progress": False,
        "log_wandb": False,
        "checkpoint_dir": str(workdir / "saved"),
        # budget (see README): RecBole defaults are epochs 300, stopping_step 10
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
    }
    config = Config(model=args.model, dataset="ml100k",
                    config_file_list=[str(export / "recbole" / "ml100k" / "ml100k.yaml")], config_dict=overrides)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    epochs_log = EpochLog()
    logging.getLogger().addHandler(epochs_log)
    logger = logging.getLogger()
    logger.info(config)

    t0 = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    data_seconds = time.perf_counter() - t0

    # ---- split check: RecBole's triples == rdrec's, by original ids ----
    csv = pd.read_csv(export / "csv" / "interactions.csv")
    user_tok2orig = dict(zip(csv["user"].astype(str), csv["user_id"].astype(int)))
    item_tok2orig = dict(zip(csv["item"].astype(str), csv["item_id"].astype(int)))
    expected = expected_triples(export, config["MAX_ITEM_LIST_LENGTH"])
    split_check = {}
    for name, loader in (("train", train_data), ("valid", valid_data), ("test", test_data)):
        got = recbole_triples(loader.dataset, user_tok2orig, item_tok2orig)
        split_check[name] = {"rows": len(got), "expected_rows": len(expected[name]),
                             "identical": sorted(got) == sorted(expected[name])}
    if not all(v["identical"] for v in split_check.values()):
        raise SystemExit(f"RecBole's split differs from rdrec's: {split_check}")

    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model)
    trainer = Trainer(config, model)
    # CPU seconds (process_time) per epoch beside RecBole's logged wall seconds: robust to other load on the machine
    cpu = {"train": [], "valid": []}

    def cpu_timed(fn, key):
        def wrapped(*a, **k):
            c0, w0 = time.process_time(), time.perf_counter()
            out = fn(*a, **k)
            cpu[key].append({"cpu_seconds": time.process_time() - c0, "wall_seconds": time.perf_counter() - w0})
            return out
        return wrapped

    trainer._train_epoch = cpu_timed(trainer._train_epoch, "train")
    trainer._valid_epoch = cpu_timed(trainer._valid_epoch, "valid")
    torch.autograd.set_detect_anomaly(False)
    assert not torch.is_anomaly_enabled()

    t0 = time.perf_counter()
    best_valid_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)  # loads best checkpoint
    test_seconds = time.perf_counter() - t0

    # ---- the same best model through rdrec's evaluator ----
    model.eval()
    tds = test_data.dataset
    inter = tds.inter_feat
    t0 = time.perf_counter()
    with torch.no_grad():
        scores = model.full_sort_predict(inter.to(config["device"])).view(len(inter), -1)  # [U, n_items + pad]
    score_seconds = time.perf_counter() - t0
    if scores.shape[1] != tds.item_num:
        raise SystemExit(f"full_sort_predict gave {scores.shape[1]} columns, expected {tds.item_num}")
    target = inter["item_id"].long()
    itok = tds.field2id_token["item_id"]
    item_orig = np.array([item_tok2orig.get(t, -1) for t in itok])  # column -> original id; col 0 is [PAD]
    assert item_orig[0] == -1 and (item_orig[1:] > 0).all()
    orig2col = {o: c for c, o in enumerate(item_orig) if c > 0}
    # seen = every item the user interacted with before the test target (train + valid), not just the last 50
    before = csv[csv["split"] != "test"].groupby("user_id")["item_id"].apply(list).to_dict()
    users_orig = [user_tok2orig[t] for t in tds.field2id_token["user_id"][inter["user_id"].numpy()]]
    valid_all = torch.ones_like(scores, dtype=torch.bool)
    valid_all[:, 0] = False  # padding column is not an item
    valid_unseen = valid_all.clone()
    for row, u in enumerate(users_orig):
        valid_unseen[row, [orig2col[i] for i in before[u]]] = False
    ours = {}
    for key, valid in (("seen_excluded", valid_unseen), ("seen_included", valid_all)):
        ranks = ranking.pessimistic_rank(scores, target, valid)
        ours[key] = ranking.metrics_from_ranks(ranks, ks=(1, 5, 10, 20), mrr_k=10)
    ties = int(((scores == scores.gather(1, target[:, None])) & valid_all).sum() - len(target))

    train_secs = [e["seconds"] for e in epochs_log.train]
    valid_secs = [e["seconds"] for e in epochs_log.valid]
    best_epoch = max(epochs_log.valid, key=lambda e: e["valid_ndcg@10"])["epoch"] if epochs_log.valid else None
    result = {
        "implementation": "recbole", "model": args.model, "seed": args.seed,
        "recbole": {"version": __import__("recbole").__version__, "torch": torch.__version__,
                    "anomaly_detection_at_import": ANOMALY_AT_IMPORT, "anomaly_detection_during_run": False},
        "config": {k: config[k] for k in list(config.final_config_dict) if isinstance(
            config[k], (int, float, str, bool, list, dict, type(None)))},
        "split_check": split_check,
        "epochs_trained": len(train_secs),
        "epochs_cap": args.epochs,
        "stopping_step": args.stopping_step,
        "cap_reached": len(train_secs) >= args.epochs,
        "best_epoch": best_epoch,
        "train_seconds_per_epoch": float(np.mean(train_secs)),
        "eval_seconds_per_pass": float(np.mean(valid_secs)),
        "train_cpu_seconds_per_epoch": float(np.mean([c["cpu_seconds"] for c in cpu["train"]])),
        "eval_cpu_seconds_per_pass": float(np.mean([c["cpu_seconds"] for c in cpu["valid"]])),
        "cpu_timing": cpu,
        "test_eval_seconds": test_seconds,
        "rdrec_eval_score_seconds": score_seconds,
        "fit_seconds": fit_seconds,
        "data_seconds": data_seconds,
        "epochs": [{"epoch": t["epoch"], "train_seconds": t["seconds"], "loss": t["loss"],
                    "valid_seconds": va["seconds"], "valid_ndcg@10": va["valid_ndcg@10"]}
                   for t, va in zip(epochs_log.train, epochs_log.valid)],
        "best_valid": {k.lower(): float(v) for k, v in (best_valid or {}).items()},
        "test_recbole": {k.lower(): float(v) for k, v in test_result.items()},
        "test_rdrec_eval": ours,
        "test_target_ties": ties,
        "threads": torch.get_num_threads(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(args.out)
    print(json.dumps({k: result[k] for k in ("model", "seed", "epochs_trained", "train_seconds_per_epoch",
                                               "eval_seconds_per_pass", "test_recbole", "test_rdrec_eval")}))


if __name__ == "__main__":
    main()
