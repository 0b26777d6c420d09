"""Evaluation that resumes after a kill: the ranks of every evaluated batch, journaled as they are computed.

Ranking every test user is the longest part of some runs (a generative student's beam search over 22k Amazon users,
an LLM scoring 20 titles per user: hours on a CPU). ``ScoreJournal`` keeps what such a pass has computed, so that a
killed run, started again (``rdrec-train resume=<run dir>``, or the same command for a run that does not train),
scores only the users it had not reached:

- one journal per evaluation stage (``val``, ``test``) under the run directory; each process appends one JSON line
  per batch and protocol (``{"protocol", "users", "ranks"}``) to its own file and flushes it to disk, so a kill
  loses at most the batch being scored; a torn last line is ignored on reading;
- a batch is looked up by its protocol and its users, in order: the batches a resumed pass makes may come in
  another order or from another number of processes;
- the journal belongs to one set of weights: ``meta.json`` holds a fingerprint of the module's parameters and
  buffers (their float64 sums and sums of squares, rounded, per tensor), the global step and the protocols; a pass
  over different weights (the next validation of a fit, a resumed fit that trained on) starts the journal afresh.

Only ranks are kept (what ``rdrec.eval.ranking.RankingMetrics`` accumulates), so the journal is small: a few bytes
per user and protocol. ``rdrec.callbacks.EvalJournal`` opens it for each validation and test pass and removes the
run's journals once testing has finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from rdrec.utils.atomic import atomic_write_text


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A digest of ``module``'s parameters and buffers: per tensor its name, shape and the float64 sum and sum of
    squares rounded to 10 significant digits (stable across thread counts, changed by any training step)."""
    parts = []
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            t = tensor.detach().to(torch.float64)
            parts.append(f"{name}:{tuple(tensor.shape)}:{float(t.sum()):.10g}:{float(t.square().sum()):.10g}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class ScoreJournal:
    """The ranks one evaluation pass computed, per protocol and batch of users (see the module docstring)."""

    def __init__(self, dirpath: str | Path, meta: dict, rank: int = 0):
        self.dirpath, self.meta, self.rank = Path(dirpath), dict(meta), int(rank)
        self._entries: dict[tuple[str, tuple[int, ...]], list[int]] = {}
        self._file = None
        meta_file = self.dirpath / "meta.json"
        try:
            saved = json.loads(meta_file.read_text())
        except (FileNotFoundError, ValueError):
            saved = None
        if saved != self.meta:
            if rank == 0:  # another pass's journal (other weights) or none: start afresh
                shutil.rmtree(self.dirpath, ignore_errors=True)
                self.dirpath.mkdir(parents=True, exist_ok=True)
                atomic_write_text(meta_file, json.dumps(self.meta, sort_keys=True) + "\n")
            return  # (under DDP rank 0 clears it; the other ranks just read nothing)
        for path in sorted(self.dirpath.glob("rank*.jsonl")):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                        key = (str(row["protocol"]), tuple(int(u) for u in row["users"]))
                        ranks = [int(r) for r in row["ranks"]]
                    except (ValueError, KeyError, TypeError):
                        continue  # the line a kill cut short
                    if len(ranks) == len(key[1]):
                        self._entries[key] = ranks

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def num_users(self) -> int:
        """How many distinct users have journaled ranks (under any protocol)."""
        return len({u for _, users in self._entries for u in users})

    def get(self, protocol: str, users: torch.Tensor) -> torch.Tensor | None:
        """The journaled ranks of this batch (a long tensor on ``users``' device), or None."""
        found = self._entries.get((protocol, tuple(users.flatten().tolist())))
        if found is None:
            return None
        return torch.tensor(found, dtype=torch.long, device=users.device)

    def put(self, protocol: str, users: torch.Tensor, ranks: torch.Tensor) -> None:
        users, ranks = users.flatten().tolist(), ranks.flatten().tolist()
        self._entries[(protocol, tuple(users))] = ranks
        if self._file is None:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            self._file = open(self.dirpath / f"rank{self.rank}.jsonl", "a", encoding="utf-8")
        self._file.write(json.dumps({"protocol": protocol, "users": users, "ranks": ranks}) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
