"""Constrained decoding over item IDs: a prefix trie of their token sequences → ``prefix_allowed_tokens_fn``.

Beam search under :meth:`ItemTrie.allowed` can only spell a complete item ID followed by end-of-sequence, so
every returned beam maps back to an item (:meth:`ItemTrie.lookup`); nothing is parsed from free text and no
fallback is ever invented (docs/protocol.md). :meth:`ItemTrie.banning` gives each batch row its own banned items
(the user's history): a prefix stays allowed only while some unbanned item lies under it, so every beam ends on an
item the row may receive and a row gets as many distinct items as there are beams.
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
        self._codes: dict[int, tuple[int, ...]] = {}
        self._count: dict[tuple[int, ...], int] = {}  # prefix (ending in eos for a whole item) → items under it
        for item, tokens in sequences.items():
            tokens = tuple(int(t) for t in tokens)
            if not tokens:
                raise ValueError(f"item {item} has an empty token sequence")
            if self.eos in tokens:
                raise ValueError(f"item {item}'s tokens contain end-of-sequence ({self.eos}): {tokens}")
            if tokens in self._items:
                raise ValueError(f"items {self._items[tokens]} and {item} tokenize identically: {tokens}")
            self._items[tokens] = int(item)
            self._codes[int(item)] = tokens
            for end in range(1, len(tokens) + 1):
                self._count[tokens[:end]] = self._count.get(tokens[:end], 0) + 1
            self._count[tokens + (self.eos,)] = 1
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

    def banning(self, banned: Sequence[Sequence[int]]):
        """A ``prefix_allowed_tokens_fn`` that never completes row ``b``'s items ``banned[b]`` (0 = padding and
        unknown ids are ignored): a token is allowed only while an unbanned item lies below it."""
        per_row: list[dict[tuple[int, ...], int]] = []
        for items in banned:
            counts: dict[tuple[int, ...], int] = {}
            for item in {int(i) for i in items}:
                code = self._codes.get(item)
                if code is None:
                    continue
                for key in [code[:end] for end in range(1, len(code) + 1)] + [code + (self.eos,)]:
                    counts[key] = counts.get(key, 0) + 1
            per_row.append(counts)

        def allowed(batch_id: int, input_ids: Tensor) -> list[int]:
            ids = input_ids.tolist()
            if ids and ids[0] == self.start:
                ids = ids[1:]
            options = self.allowed(ids)
            ban = per_row[batch_id]
            if not ban or options == [self.pad] or options == [self.eos] and tuple(ids) not in self._items:
                return options
            prefix = tuple(int(t) for t in ids)
            keep = [t for t in options if self._count[prefix + (t,)] > ban.get(prefix + (t,), 0)]
            return keep or [self.pad]  # every item below is banned (the row's user has seen them all)

        return allowed

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
