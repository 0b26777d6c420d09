"""The one interface every generation backend implements.

``generate(chats, seeds, params)`` answers a list of chats (each a list of ``{"role", "content"}`` messages) with
one ``Generation`` per chat, in order. ``seeds[i]`` seeds chat ``i``'s sampling, so an answer depends on its
prompt, seed and parameters only, never on which other prompts share its batch or on how often the run was
interrupted. A transport failure that outlasted the backend's retries is reported in ``Generation.error``
(the entry is then not stored, and a re-run tries again); it is never turned into text.

*Prefill*: a chat whose last message is an ``assistant`` turn asks the backend to continue that turn (its text,
the *opening*, e.g. "1. The user prefers") instead of starting a new one; ``Generation.text`` is then the whole
answer, opening included. *Stop*: ``generate(…, stop=Stop(n))`` ends a row as soon as its answer holds ``n``
numbered parts and the last part's line is a finished sentence, instead of decoding to ``max_new_tokens``
(servers get the literal ``Stop.strings()``, which only cut at the next number).
"""

from __future__ import annotations

import re
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


@dataclass(frozen=True)
class Stop:
    """The answer is complete once it holds ``parts`` numbered parts ("1." … "N.", "Step N:") and a line of the
    last part has ended (a newline) on a sentence end (``.``, ``!``, ``?``, then perhaps a quote or bracket).
    Backends check it on each new line (and every 16 tokens when ``max_line_words`` or ``max_word_repeats`` is
    set)."""

    parts: int
    max_line_words: int | None = None  # a line running past this is hopeless (a looping list): stop it too
    max_word_repeats: int | None = None  # a line naming one word this often is a loop ("comedy, comedy, …"): stop

    @property
    def check_often(self) -> bool:
        """Whether a row must be checked within a line too (a loop never ends its line)."""
        return self.max_line_words is not None or self.max_word_repeats is not None

    def strings(self) -> list[str]:
        """Literal stop strings for servers: the start of part N+1."""
        return [f"\n{self.parts + 1}."]

    def complete(self, text: str) -> bool:
        if self.max_line_words is not None and len(text[text.rfind("\n") + 1:].split()) > self.max_line_words:
            return True  # not a complete answer, but no use going on: the parser rejects it, a retry follows
        if self.max_word_repeats is not None and looping(text[text.rfind("\n") + 1:], self.max_word_repeats):
            return True  # the same: the parser rejects a looping part
        if "\n" not in text:
            return False
        body, pos = text[:text.rindex("\n") + 1], 0  # finished lines only
        for n in range(1, self.parts + 1):
            m = re.compile(rf"(?:^|\n)[ \t*#_]*(?:step\s*)?\(?{n}\s*[.):]", re.I).search(body, pos)
            if m is None:
                return False
            pos = m.end()
        return re.search(r"[A-Za-z].*?[.!?][\"')\]*]*[ \t]*\n", body[pos:]) is not None


def looping(text: str, max_repeats: int) -> bool:
    """Whether one word of four letters or more occurs ``max_repeats`` times or more in ``text`` (a small model's
    looping list: "comedy, horror, comedy, comedy, …"). Shorter words ("and", "the") do not count."""
    counts: dict[str, int] = {}
    for w in re.findall(r"[a-z][a-z\-]{3,}", text.lower()):
        counts[w] = counts.get(w, 0) + 1
        if counts[w] >= max_repeats:
            return True
    return False


def split_opening(chat: list[dict]) -> tuple[list[dict], str]:
    """``(the conversation, the opening of the assistant's answer)``; the opening is "" without a prefill."""
    if chat and chat[-1]["role"] == "assistant":
        return chat[:-1], chat[-1]["content"]
    return chat, ""


def join_opening(opening: str, continuation: str) -> str:
    """The whole answer: the opening and what the model wrote after it (a space between when neither has one)."""
    if opening and continuation and not opening[-1].isspace() and not continuation[0].isspace() \
            and continuation[0].isalnum():
        continuation = " " + continuation
    return (opening + continuation).strip()


class Backend:
    """Subclasses set ``name`` and ``model_id`` and implement ``generate``."""

    name = "backend"
    model_id = ""

    def generate(self, chats: list[list[dict]], seeds: list[int], params: GenerationParams,
                 stop: Stop | None = None) -> list[Generation]:
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
