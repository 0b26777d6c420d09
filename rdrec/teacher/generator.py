"""From prompts to stored records: keys, fixed batches, parsing with retries, provenance.

``plan`` gives every prompt its store key and cuts the whole (family-grouped, length-sorted) prompt list into fixed units
of work *before* anything already stored is dropped, so a resumed run decodes exactly the batches an
uninterrupted run would have decoded — same composition, same seeds, same text — and a run's result does not
depend on where it was killed. A unit is ``pool`` consecutive batches of ``batch_size`` prompts; its records are
stored together.

``RationaleGenerator.run_batch`` generates one unit, batch by batch, parses each answer with its family's parser,
and retries the unparsable ones (up to ``max_retries`` times) with a new seed (greedy decoding switches to
sampling at ``retry_temperature`` for retries, since a new seed changes nothing for arg max). The retries of a
whole unit are decoded together, in batches of ``batch_size``: one batch's one or two failures alone would
decode at batch size 1–2, where a CPU reads every weight per token for one row. A prompt still unparsable
is recorded with ``status: "failed"`` and all its raw answers; it is never given made-up text. A prompt the
backend could not answer at all (server unreachable after its retries) gets no record: a re-run does it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from rdrec.teacher.backends.base import Backend, GenerationParams
from rdrec.teacher.prompts import ParseError, PromptFamily, PromptItem
from rdrec.teacher.store import make_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    key: str
    item: PromptItem


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    retry_temperature: float = 0.7

    def as_dict(self) -> dict:
        return {"max_retries": self.max_retries, "retry_temperature": self.retry_temperature}


def attempt_seed(seed: int, key: str, attempt: int) -> int:
    """A 31-bit seed per (run seed, key, attempt): the same everywhere, whatever the batch or process."""
    return int(hashlib.sha256(f"{seed}:{key}:{attempt}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def family_params(params: GenerationParams, family: PromptFamily | None) -> GenerationParams:
    """The run's generation parameters with the family's own overrides (``generation:`` in its prompt config,
    e.g. SLIM's ``do_sample: true``) applied: what its prompts are decoded with and keyed by."""
    overrides = dict(getattr(family, "generation", None) or {})
    return replace(params, **overrides) if overrides else params


def plan(items: list[PromptItem], *, dataset: str, fingerprint: str, model_id: str, params: GenerationParams,
         retry: RetryPolicy, seed: int, batch_size: int,
         families: dict[str, PromptFamily] | None = None, pool: int = 1) -> list[list[Job]]:
    """Keys for every prompt; units of ``pool`` batches of ``batch_size`` over the prompts grouped by family and
    kind (a unit never mixes two: its prompts share their system message and few-shot example, and one stop
    rule) and sorted by length, longest first (so padding is small). A key holds the parameters the prompt is
    decoded with: the run's, with its family's overrides (``families``)."""
    if batch_size < 1 or pool < 1:
        raise ValueError(f"batch_size and pool must be >= 1, got {batch_size} and {pool}")
    unit = batch_size * pool
    jobs = []
    for item in items:
        used = family_params(params, (families or {}).get(item.family))
        key = make_key(dataset=dataset, fingerprint=fingerprint, family=item.family, kind=item.kind,
                       entity=item.entity, template=item.template_hash, model=model_id,
                       params=used.as_dict(), retry=retry.as_dict(), seed=seed)
        jobs.append(Job(key, item))
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("two prompts map to the same store key (an entity listed twice?)")
    jobs.sort(key=lambda j: (j.item.family, j.item.kind, -j.item.length, j.key))
    batches = []
    for group in itertools.groupby(jobs, key=lambda j: (j.item.family, j.item.kind)):
        same = list(group[1])
        batches += [same[i:i + unit] for i in range(0, len(same), unit)]
    return batches


class RationaleGenerator:
    def __init__(self, backend: Backend, families: dict[str, PromptFamily], params: GenerationParams,
                 retry: RetryPolicy, seed: int, dataset: str, fingerprint: str, stop: bool = True,
                 batch_size: int | None = None):
        self.backend, self.families, self.params = backend, families, params
        self.batch_size = batch_size  # rows decoded together (None: a whole unit at once)
        self.stop = stop  # stop each answer once its format is complete (the family's rule)
        self.retry, self.seed = retry, seed
        self.dataset, self.fingerprint = dataset, fingerprint

    def params_for(self, family: str, attempt: int = 0) -> GenerationParams:
        """The parameters of ``family``'s prompts at ``attempt`` (0: the first; retries sample, see ``for_retry``)."""
        params = family_params(self.params, self.families.get(family))
        return params if attempt == 0 else params.for_retry(self.retry.retry_temperature)

    def _generate(self, jobs: list[Job], seeds: list[int], attempt: int) -> list:
        """``backend.generate`` per (family, kind) among ``jobs`` (each has its own stop rule and its family's
        parameters), ``batch_size`` consecutive rows at a time, in order."""
        out = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, j in enumerate(jobs):
            groups.setdefault((j.item.family, j.item.kind), []).append(i)
        for (family, kind), idx in groups.items():
            stop = self.families[family].stop(kind) if self.stop else None
            step = self.batch_size or len(idx)
            for start in range(0, len(idx), step):
                part = idx[start:start + step]
                gens = self.backend.generate([jobs[i].item.chat() for i in part], [seeds[i] for i in part],
                                             self.params_for(family, attempt), stop=stop)
                for i, g in zip(part, gens):
                    out[i] = g
        return out

    def run_batch(self, jobs: list[Job], rank: int = 0) -> tuple[list[dict], dict]:
        """Generate, parse and retry one unit (its retries decoded together). Returns (records to store, counters)."""
        t0 = time.perf_counter()
        state = {j.key: {"texts": [], "errors": [], "tokens": [0, 0], "parsed": None, "transport": None} for j in jobs}
        pending = list(jobs)
        for attempt in range(self.retry.max_retries + 1):
            if not pending:
                break
            seeds = [attempt_seed(self.seed, j.key, attempt) for j in pending]
            outs = self._generate(pending, seeds, attempt)
            still = []
            for job, seed, gen in zip(pending, seeds, outs):
                st = state[job.key]
                if gen.error is not None:
                    st["transport"] = gen.error
                    continue
                st["texts"].append(gen.text)
                st["tokens"][0] += gen.prompt_tokens
                st["tokens"][1] += gen.completion_tokens
                st["seed"], st["params"], st["finish"] = seed, self.params_for(job.item.family, attempt), gen.finish_reason
                try:
                    st["parsed"] = self.families[job.item.family].parse(gen.text, job.item.kind)
                except ParseError as err:
                    st["errors"].append(str(err))
                    still.append(job)
            pending = still
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        records, stats = [], {"ok": 0, "failed": 0, "transport_errors": 0, "completion_tokens": 0, "prompt_tokens": 0,
                              "generations": 0, "seconds": 0.0}
        for job in jobs:
            st = state[job.key]
            stats["prompt_tokens"] += st["tokens"][0]
            stats["completion_tokens"] += st["tokens"][1]
            stats["generations"] += len(st["texts"])
            if st["parsed"] is None and st["transport"] is not None:
                stats["transport_errors"] += 1
                log.warning("no answer for %s %s after the backend's retries: %s", job.item.family, job.item.entity, st["transport"])
                continue
            ok = st["parsed"] is not None
            stats["ok" if ok else "failed"] += 1
            records.append({
                "key": job.key,
                "dataset": self.dataset,
                "fingerprint": self.fingerprint,
                "family": job.item.family,
                "kind": job.item.kind,
                "entity": job.item.entity,
                "status": "ok" if ok else "failed",
                "output": st["parsed"],
                "text": st["texts"][-1],
                "attempts": len(st["texts"]),
                "rejected": [{"text": t, "error": e} for t, e in zip(st["texts"], st["errors"])],
                "messages": job.item.chat(),
                "extra": job.item.extra,
                "provenance": {
                    **self.backend.describe(),
                    "template_hash": job.item.template_hash,
                    "params": self.params_for(job.item.family).as_dict(),
                    "final_params": st["params"].as_dict(),
                    "retry": self.retry.as_dict(),
                    "run_seed": self.seed,
                    "seed": st["seed"],
                    "finish_reason": st["finish"],
                    "prompt_tokens": st["tokens"][0],
                    "completion_tokens": st["tokens"][1],
                    "rank": rank,
                    "created_at": created,
                },
            })
        stats["seconds"] = time.perf_counter() - t0
        return records, stats
