"""Shared by the SLIM tests: a synthetic prepared dataset and a rationale export made the way rdrec-generate
makes one (SlimFamily prompts from the training view; made-up three-step answers), and a tiny hashing encoder
with the TextEncoder interface. No tests here."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from omegaconf import OmegaConf

from rdrec.utils.resolvers import CONFIG_DIR

GENRE_WORDS = ("action", "drama", "comedy", "horror", "romance")


def synthetic_source(num_users: int = 40):
    from rdrec.data.sources.synthetic import Synthetic

    return Synthetic(num_users=num_users, num_items=60, min_len=5, max_len=12, seed=0, with_reviews=False)


def synthetic_prepared(cache: Path, num_users: int = 40, split_seed: int = 42):
    from rdrec.data.pipeline import prepare_dataset
    from rdrec.data.split import SplitConfig

    return prepare_dataset(synthetic_source(num_users), SplitConfig(seed=split_seed), cache, log=lambda s: None)


def slim_family(name: str = "slim"):
    from hydra.utils import instantiate

    return instantiate(OmegaConf.load(CONFIG_DIR / "prompts" / f"{name}.yaml"))


def answer(user: int) -> dict:
    word = GENRE_WORDS[user % len(GENRE_WORDS)]
    out = {"preferences": f"The user enjoys {word} titles a lot.",
           "categories": f"Recommend more {word} and similar genres.",
           "items": f"Recommend the newest {word} releases for user {user}."}
    out["rationale"] = "\n".join(f"{i + 1}. {out[k]}" for i, k in enumerate(("preferences", "categories", "items")))
    return out


def write_export(prepared, out_dir: Path, users: int | None = None, model_id: str = "fake-teacher") -> Path:
    """A rationale export of ``prepared`` with one made-up SLIM answer per user (the first ``users`` users)."""
    from rdrec.teacher.export import export
    from rdrec.teacher.prompts import Subset

    items = slim_family().build(prepared.train_view(), Subset(users=users))
    records = [{
        "key": f"k{it.entity['user']}", "family": "slim", "kind": "user", "entity": it.entity, "status": "ok",
        "output": answer(it.entity["user"]), "text": answer(it.entity["user"])["rationale"], "attempts": 1,
        "rejected": [], "extra": it.extra, "provenance": {"model_id": model_id, "template_hash": it.template_hash},
    } for it in items]
    export(records, out_dir, meta={"dataset": prepared.name, "fingerprint": prepared.fingerprint})
    return out_dir


class HashEncoder:
    """Deterministic bag-of-words vectors (the TextEncoder interface, no model): equal texts, equal vectors."""

    def __init__(self, dim: int = 16):
        self.dim = dim
        self.calls = 0

    def describe(self) -> str:
        return f"hash|{self.dim}"

    def encode(self, texts, progress=False, desc=""):
        self.calls += 1
        out = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            for word in (text or "").lower().split():
                h = int(hashlib.md5(word.encode()).hexdigest(), 16)
                out[i, h % self.dim] += 1.0 if (h >> 8) % 2 else -1.0
        return out


class TinyTrainableEncoder(torch.nn.Module):
    """A differentiable bag-of-hashed-words encoder with the TextEncoder interface (for train_encoder tests)."""

    def __init__(self, dim: int = 16, buckets: int = 257):
        super().__init__()
        torch.manual_seed(0)
        self.dim, self.buckets, self.trainable = dim, buckets, False
        self.bag = torch.nn.EmbeddingBag(buckets, dim, mode="mean")

    def describe(self) -> str:
        return f"tiny-trainable|{self.dim}"

    def forward(self, texts):
        out = torch.zeros(len(texts), self.dim)
        rows = [i for i, t in enumerate(texts) if t]
        if rows:
            ids = [torch.tensor([int(hashlib.md5(w.encode()).hexdigest(), 16) % self.buckets for w in texts[i].split()])
                   for i in rows]
            offsets = torch.tensor([0, *torch.cumsum(torch.tensor([len(x) for x in ids]), 0)[:-1].tolist()])
            out = out.index_put((torch.tensor(rows),), self.bag(torch.cat(ids), offsets))
        return out

    def encode(self, texts, progress=False, desc=""):
        with torch.no_grad():
            return self.forward(texts)
