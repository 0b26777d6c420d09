"""Constrained decoding over item IDs: a prefix trie of their token sequences → ``prefix_allowed_tokens_fn``.

Beam search under :meth:`ItemTrie.allowed` can only spell a complete item ID followed by end-of-sequence, so
every returned beam maps back to an item (:meth:`ItemTrie.lookup`); nothing is parsed from free text and no
fallback is ever invented (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class ItemTrie:
    def __init__(self, sequences: dict[int, Sequence[int]], eos_token_id: int, pad_token_id: int,
                 decoder_start_token_id: int | None = None):
        """``sequences``: item id → its token ids (without end-of-sequence)."""
        self.eos, self.pad = int(eos_token_id), int(pad_token_id)
        self.start = self.pad if decoder_start_token_id is None else int(decoder_start_token_id)
        self.root: dict = {}
        self._items: dict[tuple[int, ...], int] = {}
        for item, tokens in sequences.items():
            tokens = tuple(int(t) for t in tokens)
            if not tokens:
                raise ValueError(f"item {item} has an empty token sequence")
            if self.eos in tokens:
                raise ValueError(f"item {item}'s tokens contain end-of-sequence ({self.eos}): {tokens}")
            if tokens in self._items:
                raise ValueError(f"items {self._items[tokens]} and {item} tokenize identically: {tokens}")
            self._items[tokens] = int(item)
            node = self.root
            for t in tokens:
                node = node.setdefault(t, {})
            node[self.eos] = {}
        self.max_length = max(len(t) for t in self._items) + 1  # + end-of-sequence

    def __len__(self) -> int:
        return len(self._items)

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that may follow ``prefix`` (generated tokens only, no decoder start)."""
        node = self.root
        for t in prefix:
            if t == self.eos or t == self.pad:  # a finished beam is padded: keep it padded
                return [self.pad]
            node = node.get(int(t))
            if node is None:
                return [self.eos]  # unreachable under constraint; ends the beam, lookup() then rejects it
        return list(node) or [self.pad]

    def prefix_allowed_tokens_fn(self, batch_id: int, input_ids: Tensor) -> list[int]:
        ids = input_ids.tolist()
        if ids and ids[0] == self.start:
            ids = ids[1:]
        return self.allowed(ids)

    def lookup(self, generated: Sequence[int]) -> int | None:
        """The item a generated sequence spells (decoder start, end-of-sequence and padding stripped)."""
        ids = [int(t) for t in generated]
        if ids and ids[0] == self.start:
            ids = ids[1:]
        if self.eos in ids:
            ids = ids[: ids.index(self.eos)]
        else:
            return None  # unfinished
        return self._items.get(tuple(ids))

    def scores_from_beams(self, sequences: Tensor, beam_scores: Tensor, num_items: int) -> Tensor:
        """[B, K, T] beams and [B, K] scores → [B, num_items + 1] scores: an item's best beam score, -inf for
        items no beam reached (and for column 0, the padding item). A duplicate beam never counts twice."""
        out = torch.full((sequences.shape[0], num_items + 1), float("-inf"), device=beam_scores.device)
        for b, rows in enumerate(sequences.tolist()):
            for k, seq in enumerate(rows):
                item = self.lookup(seq)
                if item is not None and 1 <= item <= num_items:
                    out[b, item] = torch.maximum(out[b, item], beam_scores[b, k].float())
        return out
