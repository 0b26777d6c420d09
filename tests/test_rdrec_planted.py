"""A planted signal the generative student must find, and the id-leak probe on a P5-style numbering.

``Chain``: 100 items and a fixed successor function (a seeded random cycle); every user walks the cycle from a random
start, so the next item is a fixed function of the last one. The POD student (slow tests) must reach HR@1 far above
chance (0.01) with learnable identifiers; the leak probe must read the successor off the ids under P5's numbering
(``data.split.id_mapping=sequential``) and be at chance under the default random numbering.
"""

from __future__ import annotations

import random

import pandas as pd
import pytest
from omegaconf import open_dict

from rdrec.cli.train import train
from rdrec.data.canonical import CanonicalDataset
from rdrec.data.sources.base import Source
from tests.conftest import compose_cfg


class Chain(Source):
    def __init__(self, num_users: int = 300, num_items: int = 100, min_len: int = 6, max_len: int = 10, seed: int = 0,
                 with_reviews: bool = False, name: str = "chain"):
        self.num_users, self.num_items, self.min_len, self.max_len = num_users, num_items, min_len, max_len
        self.seed, self.name = seed, name

    def files(self) -> list:
        return []

    def config(self) -> dict:
        return {"num_users": self.num_users, "num_items": self.num_items, "min_len": self.min_len,
                "max_len": self.max_len, "seed": self.seed}

    def load(self) -> CanonicalDataset:
        rng = random.Random(self.seed)
        ids = [f"i{i:03d}" for i in range(self.num_items)]
        order = ids[:]
        rng.shuffle(order)
        successor = {a: order[(k + 1) % len(order)] for k, a in enumerate(order)}
        rows = []
        for u in range(self.num_users):
            item = rng.choice(ids)
            for pos in range(rng.randint(self.min_len, self.max_len)):
                rows.append((f"u{u:04d}", item, float(1_000 * u + pos), 5.0, None))
                item = successor[item]
        inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating", "review"])
        items = pd.DataFrame({"item_id": ids, "title": [f"thing {i}" for i in ids]})
        users = pd.DataFrame({"user_id": [f"u{u:04d}" for u in range(self.num_users)]})
        return CanonicalDataset(self.name, users, items, inter)


CHAIN = ["data=synthetic", "data.source._target_=tests.test_rdrec_planted.Chain", "data.source.num_users=300",
         "data.source.num_items=100", "data.source.min_len=6", "data.source.max_len=10",
         "eval.candidate_lists.sampled.size=20", "logger=csv", "callbacks.save_topk=null",
         "trainer.enable_progress_bar=false"]


@pytest.mark.parametrize("mapping, low, high", [("sequential", 0.8, 1.0), ("random", 0.0, 0.05)])
def test_leak_probe_reads_the_successor_off_p5_numbering_and_is_at_chance_otherwise(tmp_path, mapping, low, high):
    cfg = compose_cfg("train", tmp_path, ["strategy=leak_probe", *CHAIN, f"data.split.id_mapping={mapping}"])
    metrics = train(cfg)
    assert low <= metrics["test/hr@1"] <= high, metrics["test/hr@1"]


STUDENT = ["strategy=pod", "data.tokenizer.vocab_size=200", "data.ratios.topn=0", "data.ratios.explanation=0",
           "data.max_history=3", "data.epoch_size=3200", "data.batch_size=64", "data.eval_batch_size=100",
           "strategy.num_beams=5", "trainer.check_val_every_n_epoch=100", "callbacks.early_stopping=null",
           "backbone.config.d_model=64", "backbone.config.d_ff=256", "backbone.config.d_kv=16",
           "backbone.config.num_layers=2", "backbone.config.num_decoder_layers=2", "backbone.config.dropout_rate=0.0"]


def student_hr1(tmp_path, scheme: str, epochs: int, extra=()) -> dict:
    cfg = compose_cfg("train", tmp_path, [*STUDENT, *CHAIN, f"item_ids={scheme}", f"trainer.max_epochs={epochs}",
                                          *extra])
    return train(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["independent", "collaborative"])
def test_pod_student_learns_a_planted_successor_with_learnable_ids(tmp_path, scheme):
    metrics = student_hr1(tmp_path, scheme, epochs=4)
    assert metrics["test/hr@1"] > 0.3, metrics["test/hr@1"]  # chance: 0.01
    assert metrics["train/rel_change/soft_prompt"] > 0.05
