"""The training order, and every global random generator, as state a checkpoint carries, so that a resumed run
draws exactly what the uninterrupted run would have drawn.

``ResumableSampler`` is ``torch.utils.data.RandomSampler`` (same seed draw from the global torch generator at the
start of each epoch, same permutation: the same batches as ``shuffle=True``) that remembers its epoch's seed and
can start an epoch part-way through. ``SeqRecDataModule.state_dict`` saves that seed, the number of batches the
trainer has finished in the epoch and the random states (python, numpy, torch, CUDA); on resume the states are set
back at the point where the uninterrupted run stood when it saved:

- mid-epoch: when the resumed loader draws its first index (after the loader's own per-iterator seed draw, which
  the uninterrupted run had made at the start of the epoch, before the checkpoint), and the epoch continues from
  the first unfinished batch of the same permutation;
- at an epoch's end: before the next epoch's loader is iterated, which then draws its seed as it would have.

Everything is plain data (tensors, ints, tuples), so checkpoints stay loadable with ``weights_only=True``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import RandomSampler


def collect_rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumableSampler(RandomSampler):
    """``RandomSampler(data)`` whose epoch can be resumed: ``resume(seed, skip, rng)`` makes the next iteration
    set the random states ``rng``, replay the permutation of ``seed`` and skip its first ``skip`` indices.
    (A ``RandomSampler`` still, so Lightning shuffles under DDP when it puts its distributed sampler in place.)"""

    def __init__(self, data_source) -> None:
        super().__init__(data_source)
        self.seed: int | None = None  # of the epoch being (or last) iterated
        self._resume: tuple[int, int, dict | None] | None = None

    def resume(self, seed: int, skip: int, rng: dict | None) -> None:
        self._resume = (int(seed), int(skip), rng)

    def __iter__(self) -> Iterator[int]:
        n = len(self.data_source)
        if self._resume is not None:
            seed, skip, rng = self._resume
            self._resume = None
            if rng is not None:
                set_rng_states(rng)
        else:  # exactly RandomSampler's draw, so the order is the one shuffle=True gives
            seed, skip = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        self.seed = seed
        generator = torch.Generator()
        generator.manual_seed(seed)
        yield from torch.randperm(n, generator=generator).tolist()[skip:]


class ResumableOrder:
    """What a data module keeps for exact resume: the sampler of the current training loader and, after a
    checkpoint was loaded, the position to continue from. Used by ``SeqRecDataModule``."""

    def __init__(self) -> None:
        self.sampler: ResumableSampler | None = None
        self._pending: dict | None = None

    def sampler_for(self, data, batch_size: int) -> ResumableSampler:
        sampler = ResumableSampler(data)
        pending, self._pending = self._pending, None
        if pending is not None:
            skip = int(pending["batches"]) * int(batch_size)
            if pending.get("seed") is not None and skip < len(sampler):
                sampler.resume(pending["seed"], skip, pending["rng"])  # mid-epoch: states set at the first index
            else:
                set_rng_states(pending["rng"])  # the epoch was finished: the next one draws from here
        self.sampler = sampler
        return sampler

    def state_dict(self, trainer) -> dict:
        if trainer is None or self.sampler is None:
            return {}
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        return {"seed": self.sampler.seed, "batches": done, "rng": collect_rng_states()}

    def load_state_dict(self, state: dict) -> None:
        self._pending = dict(state) if state else None
