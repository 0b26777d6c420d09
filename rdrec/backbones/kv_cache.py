"""A KV cache that grows in place: decoding appends one position per step without re-copying the whole cache.

🤗 transformers' ``DynamicLayer`` appends with ``torch.cat`` at every step, so decoding ``n`` tokens copies the
cache ``n`` times (O(n²) bytes). On a CPU decoding a small model that copy is most of the step: SmolLM2-135M,
batch 8, 400 cached positions, one thread: ``aten::cat`` took 67 % of a 149 ms step (torch profiler,
experiments/teacher/README.md). ``GrowingLayer`` keeps each layer's keys and values in a buffer with spare room
(``chunk`` positions at a time), writes new positions into it, and hands attention a view of the filled part.
The numbers are the same as ``DynamicLayer``'s; only the copies go.

``growing_cache(config)`` is a ``DynamicCache`` whose full-attention layers grow in place (sliding-window and other
layer kinds stay as transformers builds them). Older transformers without per-layer caches get a plain
``DynamicCache``.
"""

from __future__ import annotations

import torch

try:  # transformers >= 4.56: caches are lists of layer objects
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - older transformers
    DynamicLayer = None


def growing_cache(config, chunk: int = 256):
    """A ``DynamicCache`` for ``config`` whose plain (full-attention) layers are ``GrowingLayer``s."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    if DynamicLayer is not None and getattr(cache, "layers", None):
        cache.layers = [GrowingLayer(chunk) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


if DynamicLayer is not None:

    class GrowingLayer(DynamicLayer):
        """``DynamicLayer`` with a preallocated buffer: ``keys``/``values`` are views of its first ``length`` positions."""

        def __init__(self, chunk: int = 256):
            super().__init__()
            self.chunk = chunk
            self._k = self._v = None
            self.length = 0

        def _view(self) -> None:
            self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:  # (lazy_initialization's signature differs between transformers versions)
                self.dtype, self.device = key_states.dtype, key_states.device
                self.is_initialized = True
            new = key_states.shape[-2]
            if self._k is None or self.length + new > self._k.shape[-2]:
                self._grow(key_states, value_states, self.length + new + self.chunk)
            self._k[:, :, self.length:self.length + new] = key_states
            self._v[:, :, self.length:self.length + new] = value_states
            self.length += new
            self._view()
            return self.keys, self.values

        def _grow(self, key_states, value_states, capacity: int) -> None:
            b, h, _, d = key_states.shape
            k = key_states.new_empty((b, h, capacity, d))
            v = value_states.new_empty((b, h, capacity, value_states.shape[-1]))
            if self.length:
                k[:, :, :self.length] = self._k[:, :, :self.length]
                v[:, :, :self.length] = self._v[:, :, :self.length]
            self._k, self._v = k, v

        def get_seq_length(self) -> int:
            return self.length

        def reset(self) -> None:
            self._k = self._v = None
            self.length = 0
            super().reset()

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError(f"crop: expected a negative number of tokens to remove, got {tokens_to_remove}")
            if tokens_to_remove and self.is_initialized:
                self.length = max(self.length + tokens_to_remove, 0)
                self._view()

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.length:
                self._k = self._k[:, :, :self.length + self.chunk].repeat_interleave(repeats, dim=0)
                self._v = self._v[:, :, :self.length + self.chunk].repeat_interleave(repeats, dim=0)
                self._view()

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.length:
                self._k, self._v = self._k[indices], self._v[indices]
                self._view()

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            if self.length:
                self.batch_select_indices(beam_idx.to(self._k.device))

        def __deepcopy__(self, memo):
            twin = GrowingLayer(self.chunk)
            twin.__dict__.update({k: v for k, v in self.__dict__.items() if k not in ("_k", "_v", "keys", "values")})
            if self._k is not None:
                twin._k, twin._v = self._k.clone(), self._v.clone()
                twin._view()
            else:
                twin.keys, twin.values = self.keys, self.values
            return twin
else:  # pragma: no cover
    GrowingLayer = None
