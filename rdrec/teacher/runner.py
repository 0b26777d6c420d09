"""``rdrec-generate`` end to end: prompts from the training view → plan → ``Trainer.predict`` → store → export.

Only ``PreparedDataset.train_view()`` is read (training sequences, training reviews, item text), so no
rationale can see a validation or test interaction. Keys already in the store are skipped; what a killed run
had committed is kept. Rank 0 writes the summary (``metrics.json``: counts, failure rates, tokens/s) and
exports the entries of this run's keys as 🤗 ``datasets`` tables.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from rdrec.data.prepared import PreparedDataset
from rdrec.errors import DataError
from rdrec.teacher.module import TeacherModule, first
from rdrec.teacher.backends.base import Backend, GenerationParams
from rdrec.teacher.callbacks import GenerationProgress, StoreWriter, stopped_message
from rdrec.teacher.export import export
from rdrec.teacher.generator import RationaleGenerator, RetryPolicy, plan
from rdrec.teacher.prompts import PromptFamily, Subset
from rdrec.teacher.store import RationaleStore
from rdrec.utils.report import write_metrics

log = logging.getLogger(__name__)


def run_generation(*, prepared: PreparedDataset, families: dict[str, PromptFamily], backend: Backend,
                   params: GenerationParams, retry: RetryPolicy, subset: Subset, seed: int, batch_size: int,
                   store_dir: str, make_trainer, output_dir: str, export_dir: str | None = None,
                   retry_pool: int = 1) -> dict | None:
    view = prepared.train_view()
    items = [item for family in families.values() for item in family.build(view, subset)]
    batches = plan(items, dataset=prepared.name, fingerprint=prepared.fingerprint, model_id=backend.model_id,
                   params=params, retry=retry, seed=seed, batch_size=batch_size, families=families,
                   pool=retry_pool)
    keys = [job.key for b in batches for job in b]
    store = RationaleStore(store_dir)
    _check_stored_prompts(store, batches, store_dir)
    todo = [[job for job in b if job.key not in store] for b in batches]
    todo = [b for b in todo if b]
    pending = sum(len(b) for b in todo)
    per_family = Counter(item.family for item in items)
    print(f"teacher: {len(items)} prompts ({', '.join(f'{k} {v}' for k, v in per_family.items())}); "
          f"{len(items) - pending} already in {store_dir}; {pending} to generate in {len(todo)} units of <= {retry_pool} "
          f"batch(es) of <= {batch_size} "
          f"with {backend.model_id} ({backend.name})", flush=True)

    generator = RationaleGenerator(backend, families, params, retry, seed, prepared.name, prepared.fingerprint,
                                   batch_size=batch_size)
    writer, progress = StoreWriter(store_dir), GenerationProgress(pending)
    trainer = make_trainer(callbacks=[writer, progress])
    start = time.perf_counter()
    if todo:
        module = TeacherModule(generator)
        try:
            trainer.predict(module, dataloaders=DataLoader(todo, batch_size=1, collate_fn=first),
                            return_predictions=False)
        except RuntimeError:  # under DDP, a rank that stopped on SIGTERM leaves its peers in a collective
            if getattr(trainer, "received_sigterm", False):
                raise SystemExit(stopped_message(store_dir)) from None
            raise
    elapsed = time.perf_counter() - start
    totals = _gather(trainer, writer.totals)
    backend.close()
    if not trainer.is_global_zero:
        return None

    store.reload()
    records = list(store.records(keys))
    summary = summarise(records, keys, totals, elapsed, trainer.world_size)
    meta = {"dataset": prepared.name, "fingerprint": prepared.fingerprint, **backend.describe(),
            "params": params.as_dict(), "retry": retry.as_dict(), "seed": seed, "store": str(store_dir),
            "families": {n: f.__class__.__name__ for n, f in families.items()}}
    export_dir = export_dir or str(Path(output_dir) / "rationales")
    counts = export(records, export_dir, meta={**meta, "summary": summary})
    write_metrics(Path(output_dir) / "metrics.json", {f"generate/{k}": v for k, v in summary.items()})
    print(report(summary, counts, export_dir), flush=True)
    return summary


def summarise(records: list[dict], keys: list[str], totals: dict, elapsed: float, world_size: int) -> dict:
    out: dict[str, float] = {"prompts": len(keys), "stored": len(records), "missing": len(keys) - len(records)}
    for fam in sorted({r["family"] for r in records}):
        rs = [r for r in records if r["family"] == fam]
        failed = sum(r["status"] != "ok" for r in rs)
        out[f"{fam}/entries"] = len(rs)
        out[f"{fam}/failed"] = failed
        out[f"{fam}/failure_rate"] = failed / len(rs) if rs else 0.0
        out[f"{fam}/first_try_rate"] = sum(r["status"] == "ok" and r["attempts"] == 1 for r in rs) / len(rs) if rs else 0.0
        for kind in sorted({r["kind"] for r in rs}):
            ks = [r for r in rs if r["kind"] == kind]
            out[f"{fam}/{kind}/entries"] = len(ks)
            out[f"{fam}/{kind}/failed"] = sum(r["status"] != "ok" for r in ks)
    failed = sum(r["status"] != "ok" for r in records)
    out["failed"] = failed
    out["failure_rate"] = failed / len(records) if records else 0.0
    # this run only (a resumed run counts what it generated itself)
    out["run/generated"] = totals["ok"] + totals["failed"]
    out["run/transport_errors"] = totals["transport_errors"]
    out["run/generations"] = totals["generations"]
    out["run/completion_tokens"] = totals["completion_tokens"]
    out["run/seconds"] = elapsed
    out["run/tokens_per_s"] = totals["completion_tokens"] / elapsed if elapsed > 0 and totals["completion_tokens"] else 0.0
    out["run/world_size"] = world_size
    return out


def _check_stored_prompts(store: RationaleStore, batches, store_dir: str) -> None:
    """A stored answer is reused only for the very prompt it answered. A key stands for (data fingerprint, family,
    entity, template, model, parameters); data that renders other prompts under the same fingerprint (e.g. a view
    of the training sequences cut short) would otherwise be "already stored" under another prompt's answer."""
    for job in (j for b in batches for j in b):
        stored = store.get(job.key)
        if stored is not None and "messages" in stored and stored["messages"] != job.item.chat():
            raise DataError(f"a stored answer was written for another prompt than this run's {job.item.family} "
                            f"{job.item.kind} prompt for {job.item.entity}: data that renders other prompts needs its "
                            "own fingerprint", path=store_dir, field=f"key {job.key}")


def report(summary: dict, counts: dict, export_dir: str) -> str:
    lines = ["", "| family | entries | failed | failure rate | ok on first try |", "|---|---|---|---|---|"]
    for fam in ("rdrec", "slim"):
        if f"{fam}/entries" in summary:
            lines.append(f"| {fam} | {summary[f'{fam}/entries']} | {summary[f'{fam}/failed']} | "
                         f"{summary[f'{fam}/failure_rate']:.1%} | {summary[f'{fam}/first_try_rate']:.1%} |")
    lines.append(f"| all | {summary['stored']} | {summary['failed']} | {summary['failure_rate']:.1%} | |")
    lines.append(f"\nthis run: {summary['run/generated']} prompts, {summary['run/generations']} generations, "
                 f"{summary['run/completion_tokens']} tokens in {summary['run/seconds']:.1f} s "
                 f"({summary['run/tokens_per_s']:.1f} tokens/s, {summary['run/world_size']} process(es))")
    if summary["missing"]:
        lines.append(f"NOT DONE: {summary['missing']} prompt(s) got no answer (backend errors); re-run to resume")
    lines.append(f"exported {json.dumps(counts)} to {export_dir}")
    return "\n".join(lines)


def _gather(trainer, totals: dict) -> dict:
    """Sum the per-rank counters (a barrier too, so rank 0 reads the store after every rank committed)."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        parts: list = [None] * trainer.world_size
        torch.distributed.all_gather_object(parts, totals)
        return {k: sum(p[k] for p in parts) for k in totals}
    return dict(totals)
