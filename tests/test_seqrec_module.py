"""The SR Lightning module: overfits through Lightning, ignores padding in the loss, reloads exactly."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from rdrec.cli.train import train
from rdrec.eval.protocols import FullRanking
from rdrec.eval.ranking import pessimistic_rank
from rdrec.models.bert4rec import BERT4Rec
from rdrec.models.caser import Caser
from rdrec.models.gru4rec import GRU4Rec
from rdrec.models.sasrec import SASRec
from rdrec.modules.seqrec import SeqRecModule
from tests.conftest import compose_cfg

NUM_ITEMS, NUM_USERS, LEN = 30, 24, 6
TINY = {
    "sasrec": partial(SASRec, hidden_size=32, num_layers=1, num_heads=2, inner_size=64, dropout=0.0, max_len=LEN),
    "gru4rec": partial(GRU4Rec, embedding_size=32, hidden_size=32, dropout=0.0),
    "caser": partial(Caser, embedding_size=32, window=3, num_horizontal=8, num_vertical=2, dropout=0.0),
    "bert4rec": partial(BERT4Rec, hidden_size=32, num_layers=1, num_heads=2, inner_size=64, dropout=0.0,
                        mask_ratio=0.3, max_len=LEN),
}


def _sequences() -> torch.Tensor:
    """User u walks the items with step u % 5 + 1 from u: each next item follows from the last two."""
    rows = [[(u + j * (u % 5 + 1)) % NUM_ITEMS + 1 for j in range(LEN + 1)] for u in range(NUM_USERS)]
    return torch.tensor(rows)


def _module(name: str, loss: str = "ce", lr: float = 0.01) -> SeqRecModule:
    return SeqRecModule(TINY[name], num_items=NUM_ITEMS, num_users=NUM_USERS + 1, loss=loss,
                        protocols={"full": FullRanking(exclude_seen=False)},
                        optimizer=partial(torch.optim.Adam, lr=lr))


# Every model's own overfit test is in test_seqrec_models.py; this one checks the module's loss and steps.
@pytest.mark.parametrize("name", ["sasrec"])
def test_model_overfits_through_lightning(name):
    pl.seed_everything(0)
    seqs = _sequences()
    batches = [{"user": torch.arange(1, NUM_USERS + 1), "items": seqs}]
    module = _module(name)
    trainer = pl.Trainer(max_epochs=400 if name == "bert4rec" else 150, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    module.eval()
    with torch.no_grad():
        scores = module.score_all({"user": torch.arange(1, NUM_USERS + 1), "history": seqs[:, :-1]})
    ranks = pessimistic_rank(scores[:, 1:], seqs[:, -1] - 1)
    assert (ranks == 1).float().mean() > 0.9


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_loss_ignores_positions_without_a_target(loss):
    torch.manual_seed(0)
    module = _module("sasrec", loss=loss)
    items = _sequences()[:4].clone()
    items[:2, :3] = 0  # two left-padded rows
    real = module.model.training_pairs

    noise = torch.Generator().manual_seed(2)  # its own generator: BCE's negatives must be drawn identically

    def noisy(items, users=None):  # garbage hidden states wherever there is no target
        hidden, targets = real(items, users)
        garbage = torch.randn(hidden.shape, generator=noise) * 1e3
        return torch.where((targets == 0)[..., None], garbage, hidden), targets

    batch = {"user": torch.arange(1, 5), "items": items}
    torch.manual_seed(1)
    clean = module.training_step(batch, 0)
    module.model.training_pairs = noisy
    torch.manual_seed(1)
    assert module.training_step(batch, 0).item() == pytest.approx(clean.item(), rel=1e-6)


@pytest.mark.slow
def test_checkpoint_reloads_to_identical_scores(tmp_path):
    cfg = compose_cfg("train", tmp_path, ["data=synthetic", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                                          "eval=full"])
    train(cfg)
    run = Path(cfg.paths.output_dir)
    best = next((run / "checkpoints").glob("epoch*.ckpt"))
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    module = instantiate(cfg.strategy, num_items=dm.num_items, num_users=dm.num_users,
                         protocols=instantiate(cfg.eval.protocols))
    module.load_state_dict(torch.load(best, weights_only=False)["state_dict"])
    module.eval()
    ranks = []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            scores, target, valid = module.protocols["full"](module, batch)
            ranks.append(pd.DataFrame({"user": batch["user"], "rank": pessimistic_rank(scores, target, valid)}))
    saved = pd.read_csv(run / "ranks" / "test.csv").sort_values("user").reset_index(drop=True)
    reloaded = pd.concat(ranks).sort_values("user").reset_index(drop=True)
    pd.testing.assert_frame_equal(saved, reloaded, check_dtype=False)
    topk = pd.read_parquet(run / "topk" / "test.parquet")
    assert len(topk) == len(saved) and all(len(items) == 50 for items in topk["items"])
