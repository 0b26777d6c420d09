"""The SR model DELRec distils: read a finished ``strategy=sr`` run and predict top-k lists.

The run directory of ``rdrec-train strategy=sr`` holds the composed config (``.hydra/config.yaml``), the best
checkpoint (``checkpoints/epochNNN.ckpt``) and the top-k artifact of ``rdrec.callbacks.SaveTopK``
(``topk/{valid,test}.parquet``: each evaluated user's top items from the training history, resp. training +
validation history). The SR model was trained on training interactions only (validation picked its epoch), so
its predictions on training prefixes and on the evaluation histories are legitimate inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rdrec.data.batches import left_pad
from rdrec.errors import DataError
from rdrec.models.base import SequentialRecommender
from rdrec.utils.checkpoints import load_checkpoint

MODEL_NAMES = {"SASRec": "SASRec", "GRU4Rec": "GRU4Rec", "Caser": "Caser", "BERT4Rec": "BERT4Rec", "SRGNN": "SR-GNN"}


def sr_run_config(run_dir: str | Path):
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise DataError("not an rdrec-train run directory (no .hydra/config.yaml); train one with strategy=sr", path=path)
    cfg = OmegaConf.load(path)
    if "seqrec" not in cfg or "_target_" not in cfg.get("strategy", {}) or "SeqRec" not in cfg.strategy._target_:
        raise DataError("the run is not a strategy=sr run", path=path, field="strategy._target_",
                        expected="rdrec.modules.seqrec.SeqRecModule", got=cfg.get("strategy", {}).get("_target_"))
    return cfg


def sr_model_name(run_dir: str | Path) -> str:
    """Display name of the run's SR model ("SASRec", "GRU4Rec", …) for the prompts."""
    cls = sr_run_config(run_dir).seqrec._target_.rsplit(".", 1)[-1]
    return MODEL_NAMES.get(cls, cls)


def check_same_split(run_dir: str | Path, seed: int, source_target: str) -> None:
    """The SR run must have been trained on the same dataset and split (same source, same seed)."""
    cfg = sr_run_config(run_dir)
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if int(cfg.seed) != int(seed):
        raise DataError("the SR run used another seed, hence another split; train one per seed", path=path,
                        field="seed", expected=str(seed), got=cfg.seed)
    if cfg.data.source._target_ != source_target:
        raise DataError("the SR run used another dataset", path=path, field="data.source._target_",
                        expected=source_target, got=cfg.data.source._target_)


def best_checkpoint(run_dir: str | Path) -> Path:
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("epoch*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        last = Path(run_dir) / "checkpoints" / "last.ckpt"
        if last.is_file():
            return last
        raise DataError("the SR run has no checkpoint", path=Path(run_dir) / "checkpoints")
    return ckpts[-1]


def load_sr_model(run_dir: str | Path, num_items: int, num_users: int) -> SequentialRecommender:
    """The run's SR model with its best weights, in eval mode, on the CPU."""
    cfg = sr_run_config(run_dir)
    model = instantiate(_resolved_seqrec(cfg))(num_items=num_items, num_users=num_users)
    ckpt = best_checkpoint(run_dir)
    saved = load_checkpoint(ckpt)  # plain data only: a checkpoint in a directory the user names cannot run code
    state = saved.get("state_dict") if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise DataError(path=ckpt, field="state_dict", expected="a Lightning checkpoint with a state_dict",
                        got=type(saved).__name__ if state is None else type(state).__name__)
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise DataError(f"checkpoint does not fit this dataset ({num_items} items, {num_users} users): "
                        f"{str(err).splitlines()[0]}", path=ckpt) from err
    return model.eval()


def _resolved_seqrec(cfg) -> dict:
    # only the model node is resolved (${data.max_len}); run-time resolvers such as ${hydra:…} stay untouched
    container = OmegaConf.to_container(cfg.seqrec, resolve=False)
    node = OmegaConf.create({"data": {"max_len": cfg.data.max_len}, "seqrec": container})
    return OmegaConf.to_container(node.seqrec, resolve=True)


@torch.no_grad()
def predict_topk(model: SequentialRecommender, histories: Sequence[np.ndarray], k: int, max_len: int,
                 exclude: Sequence[np.ndarray] | None = None, batch_size: int = 512,
                 users: Sequence[int] | None = None) -> np.ndarray:
    """[N, k] top items for each history (best first), never an item of the history (nor of ``exclude[i]``).
    ``users[i]`` owns ``histories[i]``: personalised models (Caser) need it."""
    out = np.zeros((len(histories), k), dtype=np.int64)
    for start in range(0, len(histories), batch_size):
        chunk = histories[start : start + batch_size]
        ids = None if users is None else torch.as_tensor(np.asarray(users[start : start + batch_size], dtype=np.int64))
        scores = model.score_all(left_pad(chunk, max_len), ids).float()
        scores[:, 0] = float("-inf")
        for row, hist in enumerate(chunk):
            banned = hist if exclude is None else np.concatenate([hist, exclude[start + row]])
            scores[row, torch.as_tensor(np.asarray(banned, dtype=np.int64))] = float("-inf")
        out[start : start + len(chunk)] = scores.topk(k, dim=1).indices.numpy()
    return out


def read_topk(run_dir: str | Path, stage: str, users: np.ndarray) -> np.ndarray:
    """The run's saved top-k items [U, k] for ``users`` (rows in that order)."""
    path = Path(run_dir) / "topk" / f"{stage}.parquet"
    if not path.is_file():
        raise DataError("the SR run has no top-k artifact (rdrec.callbacks.SaveTopK writes it after testing)", path=path)
    frame = pd.read_parquet(path)
    by_user = dict(zip(frame["user"].to_numpy(), frame["items"]))
    missing = [int(u) for u in users if u not in by_user]
    if missing:
        raise DataError(f"{len(missing)} evaluated users have no top-k row (first: user {missing[0]}); was the run "
                        "made on this dataset and seed?", path=path, field="user")
    return np.stack([np.asarray(by_user[u], dtype=np.int64) for u in users])
