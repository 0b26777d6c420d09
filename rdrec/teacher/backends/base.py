"""The one interface every generation backend implements.

``generate(chats, seeds, params)`` answers a list of chats (each a list of ``{"role", "content"}`` messages) with
one ``Generation`` per chat, in order. ``seeds[i]`` seeds chat ``i``'s sampling, so an answer depends on its
prompt, seed and parameters only, never on which other prompts share its batch or on how often the run was
interrupted. A transport failure that outlasted the backend's retries is reported in ``Generation.error``
(the entry is then not stored, and a re-run tries again); it is never turned into text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 96
    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"sampling needs temperature > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def as_dict(self) -> dict:
        return asdict(self)

    def for_retry(self, temperature: float) -> "GenerationParams":
        """Greedy decoding gives the same answer for every seed: a retry samples instead."""
        if self.do_sample:
            return self
        return GenerationParams(self.max_new_tokens, True, temperature, self.top_p, self.repetition_penalty)


@dataclass
class Generation:
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""  # "stop" | "length" | "" (unknown)
    error: str | None = None  # transport failure after retries: nothing was generated


class Backend:
    """Subclasses set ``name`` and ``model_id`` and implement ``generate``."""

    name = "backend"
    model_id = ""

    def generate(self, chats: list[list[dict]], seeds: list[int], params: GenerationParams) -> list[Generation]:
        raise NotImplementedError

    def setup(self, device=None) -> None:
        """Load weights / open connections. Called once per process before the first ``generate``."""

    def torch_module(self):
        """The ``nn.Module`` a Lightning module should own (moved to its device), or None."""
        return None

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        """Provenance: what produced an entry (never secrets)."""
        return {"backend": self.name, "model_id": self.model_id}
