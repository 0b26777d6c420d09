"""DELRec comparison on MovieLens-100K: reference rows, DELRec and its ablations, over seeds.

Every row ranks the same persisted K-candidate lists (the SASRec run's top items + random items, seeded order)
for the same users, through the shared evaluator; numbers are HR@1, HR@5, NDCG@5 (mean ± std over seeds), and
each LLM stage's median seconds per optimizer step and peak resident memory (the run's process, from wait4).

Reference rows, in every table: ``random (expected)`` (a uniform random order: HR@k = k/K exactly),
``random (seeded draw)`` (one uniform random rank per evaluated user, seed = the run's seed), ``popularity``
(candidates by training count, ``experiment=delrec_pop_eval``), ``sr_alone (SASRec)`` (the SR model ranking the
shown candidates) and ``SASRec full ranking`` (the same model's HR@k over all items, for the same users). The lists
hold SASRec's own top-10 as negatives, so SASRec alone ranks the positive first only when its full-ranking rank is 1:
its HR@1 on the lists equals its full-ranking HR@1, below a random order's 1/K.

    python experiments/delrec/run.py                       # CPU settings (conf/experiment/delrec_ml100k_cpu.yaml)
    python experiments/delrec/run.py --seeds 1 --variants delrec no_stage1 --eval-users 50 --train-batches 20
    python experiments/delrec/run.py --experiment delrec_ml100k_gpu  # the paper's setting on a GPU
    python experiments/delrec/run.py --seeds 1 2 3 --variants --eval-users 0   # the reference rows alone, all users

Runs are plain ``rdrec-train`` calls (printed before they start) into ``--work``; a finished run is skipped when
the script is started again, so a killed comparison resumes. A study longer than one machine's lifetime travels in
git: ``--archive`` packs what the runs under ``--work``'s parent hold (every file but the run markers and files over
``--archive-max-mb``: the LLM stages keep only their trained parts, so checkpoints are small) into
``results/study_runs/<run>.tar.gz``, one reproducible archive per run (a run that did not change gives the same
bytes, so git stores only what moved), and ``--restore`` unpacks them in a fresh checkout (keeping newer files); the same
command then continues with the first unfinished run, a half-trained one from its ``last.ckpt``, a half-evaluated
one from its evaluation journal. SR teachers that are missing are trained first
(``rdrec-train strategy=sr``, training data only). Results: ``<work>/results.csv`` (one row per run) and
``<work>/results.md`` (the table), written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
METRICS = ("hr@1", "hr@5", "ndcg@5")
REFERENCES = ("random (expected)", "random (seeded draw)", "popularity", "sr_alone (SASRec)", "SASRec full ranking")

# variant -> (stage-1 options, or the variant whose stage 1 it reuses, or None: no stage 1; stage-2 options)
VARIANTS = {
    "delrec": ({"tasks": "[ta,rps]"}, {}),
    "no_ta": ({"tasks": "[rps]"}, {}),
    "no_rps": ({"tasks": "[ta]"}, {}),
    "no_stage1": (None, {"strategy.soft_prompt": "null"}),
    "no_adalora": ("delrec", {"strategy.adalora": "null", "train": "false"}),
    # neither stage: the frozen LLM under a random frozen soft prompt (what the LLM brings by itself)
    "frozen_llm": (None, {"strategy.soft_prompt": "null", "strategy.adalora": "null", "train": "false"}),
    "teacher_gru4rec": ({"tasks": "[ta,rps]", "teacher": "gru4rec"}, {}),
    "teacher_caser": ({"tasks": "[ta,rps]", "teacher": "caser"}, {}),
    "soft100": ({"tasks": "[ta,rps]", "delrec.num_soft_tokens": "100"}, {"delrec.num_soft_tokens": "100"}),
}


def run(args: list[str], log: Path, skip_if: Path) -> dict:
    """One rdrec-train process; returns its wall time and peak RSS, also kept in the run's ``cost.json`` so a later
    invocation that skips the run still tabulates them. Skipped when ``skip_if`` (the run's
    ``metrics.json``, written when it finished) exists; a run that was killed part-way (its directory holds
    ``checkpoints/last.ckpt``, saved during epochs too) is continued with ``rdrec-train resume=<run dir>``
    (rdrec/cli/resume.py), not started again; its log gets the continuation appended.
    (Start the script itself with ``nice`` on a shared machine: its runs inherit the priority.)"""
    run_dir, cost_file = skip_if.parent, skip_if.parent / "cost.json"
    if skip_if.exists():
        print(f"  done already: {run_dir}", flush=True)
        return json.loads(cost_file.read_text()) if cost_file.is_file() else {}
    if TABLE_ONLY:
        print(f"  not finished, left out of the table: {run_dir}", flush=True)
        return None
    resumed = (run_dir / "checkpoints" / "last.ckpt").is_file()
    if resumed:
        args = [f"resume={run_dir}"]
    cmd = [str(BIN / "rdrec-train"), *args]
    print("  $ rdrec-train " + " ".join(args), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a" if resumed else "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "WANDB_MODE": "offline"})
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"failed ({status}); see {log}")
    cost = {"wall_seconds": time.perf_counter() - start, "peak_rss_mb": usage.ru_maxrss / 1024,
            **({"resumed": True} if resumed else {})}  # a resumed run's wall time and peak are its last part's
    if skip_if.exists():  # (a run that failed without an exit status has no result to keep it beside)
        from rdrec.utils.atomic import atomic_file

        with atomic_file(cost_file, "w") as f:
            json.dump(cost, f)
    return cost


def sr_run(work: Path, model: str, seed: int, epochs: int) -> Path:
    out = work / "sr" / f"{model}_seed{seed}"
    run([f"seqrec={model}", "strategy=sr", f"seed={seed}", "data=ml100k", f"trainer.max_epochs={epochs}",
         "trainer.enable_progress_bar=false", f"hydra.run.dir={out}"], out.with_suffix(".log"), out / "metrics.json")
    return out


def best_ckpt(run_dir: Path) -> Path:
    ckpts = sorted((run_dir / "checkpoints").glob("epoch*.ckpt"), key=lambda p: p.stat().st_mtime)
    return ckpts[-1]


def step_seconds(run_dir: Path) -> float | None:
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    col = "train/seconds_per_step"
    return float(frame[col].dropna().iloc[-1]) if col in frame and frame[col].notna().any() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--variants", nargs="*", default=["delrec", "no_ta", "no_rps", "no_stage1", "no_adalora"],
                        choices=sorted(VARIANTS), help="none: the reference rows only")
    parser.add_argument("--experiment", default="delrec_ml100k_cpu")
    parser.add_argument("--eval-users", type=int, default=None, help="override data.eval_users (0: every user)")
    parser.add_argument("--train-batches", type=int, default=None,
                        help="override trainer.limit_train_batches (0: the whole epoch, e.g. every training user once "
                             "with data.examples_per_user=1)")
    parser.add_argument("--sr-epochs", type=int, default=100, help="max epochs of SR teachers trained here")
    parser.add_argument("--work", type=Path, default=ROOT / "experiments" / "delrec" / "work" / "cmp")
    parser.add_argument("--sr-dir", type=Path, default=None, help="where SR runs live (default: <work>/..)")
    parser.add_argument("--archive", action="store_true", help=f"pack the runs into {ARCHIVE.relative_to(ROOT)}; run nothing")
    parser.add_argument("--archive-max-mb", type=float, default=4.0, help="leave larger files out of the archive (git holds no file over 5 MB: a stage 2 stopped mid-training keeps its ~9 MB last.ckpt out and restarts; one stopped while testing is packed without Adam moments)")
    parser.add_argument("--restore", action="store_true", help=f"unpack {ARCHIVE.relative_to(ROOT)}; run nothing")
    parser.add_argument("--table", action="store_true",
                        help="write results.md from the finished runs among --seeds x --variants; run nothing")
    parser.add_argument("extra", nargs="*", help="more rdrec-train overrides for every LLM run")
    args = parser.parse_args()
    work, sr_root = args.work.resolve(), (args.sr_dir or args.work.parent).resolve()
    if args.archive or args.restore:
        return archive(sr_root, args.archive_max_mb) if args.archive else restore(sr_root)
    global TABLE_ONLY
    TABLE_ONLY = args.table
    eval_users = args.eval_users if args.eval_users is not None else _eval_users(args.experiment)
    subset = [f"data.eval_users={eval_users or 'null'}"]
    list_opts = [e for e in args.extra if e.startswith(("delrec.num_candidates=", "delrec.n_sr="))]
    common = [f"experiment={args.experiment}", "trainer.enable_progress_bar=false", *subset, *args.extra]
    if args.train_batches is not None:
        common.append(f"trainer.limit_train_batches={args.train_batches or 1.0}")

    rows = []
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        sasrec = sr_run(sr_root, "sasrec", seed, args.sr_epochs)
        lists = [f"seed={seed}", f"delrec.candidate_sr_run={sasrec}"]  # every row ranks the SASRec-built lists

        out = work / f"seed{seed}" / "sr_alone"
        cost = run(["experiment=delrec_sr_eval", "seqrec=sasrec", *lists, *subset, *list_opts,
                    f"delrec.sr_run={sasrec}", f"ckpt_path={best_ckpt(sasrec)}", "trainer.enable_progress_bar=false",
                    f"hydra.run.dir={out}"], out.with_suffix(".log"), out / "metrics.json")
        pop = work / f"seed{seed}" / "popularity"
        pop_cost = run(["experiment=delrec_pop_eval", *lists, *subset, *list_opts, f"delrec.sr_run={sasrec}",
                        "trainer.enable_progress_bar=false", f"hydra.run.dir={pop}"], pop.with_suffix(".log"),
                       pop / "metrics.json")
        if cost is not None and pop_cost is not None:
            rows.append(_row("sr_alone (SASRec)", seed, out, None, cost))
            rows.append(_row("popularity", seed, pop, None, {}))
            rows += reference_rows(seed, out, sasrec, _list_size(list_opts))
        _write(work, rows)

        stage1_runs: dict[str, Path] = {}
        for variant in args.variants:
            s1_opts, s2_opts = VARIANTS[variant]
            owner = variant  # the variant whose stage-1 run this is: stage1_<owner>, shared across invocations
            if isinstance(s1_opts, str):  # reuses the stage 1 of another variant
                owner, s1_opts = s1_opts, VARIANTS[s1_opts][0]
            s1_opts = dict(s1_opts) if s1_opts is not None else None
            teacher = sasrec
            if s1_opts and "teacher" in s1_opts:
                teacher = sr_run(sr_root, s1_opts.pop("teacher"), seed, args.sr_epochs)
            s1, s1_cost = None, {}
            if s1_opts is not None:
                key = json.dumps({**s1_opts, "teacher": str(teacher)}, sort_keys=True)
                if key in stage1_runs:
                    s1 = stage1_runs[key]
                else:
                    s1 = work / f"seed{seed}" / f"stage1_{owner}"
                    opts = [f"strategy.tasks={v}" if k == "tasks" else f"{k}={v}" for k, v in s1_opts.items()]
                    s1_cost = run([*common, "strategy=delrec_stage1", *lists, f"delrec.sr_run={teacher}", *opts,
                                   f"hydra.run.dir={s1}"], s1.with_suffix(".log"), s1 / "metrics.json") or {}
                    stage1_runs[key] = s1
            out = work / f"seed{seed}" / variant
            s2_args = [*common, "strategy=delrec", *lists, f"delrec.sr_run={teacher}"]
            if s1 is not None:
                s2_args.append(f"delrec.stage1_run={s1}")
            s2_args += [f"{k}={v}" for k, v in s2_opts.items()] + [f"hydra.run.dir={out}"]
            cost = run(s2_args, out.with_suffix(".log"), out / "metrics.json")
            if cost is not None:
                rows.append(_row(variant, seed, out, s1, cost, s1_cost))
            _write(work, rows)
    _write(work, rows)
    print((work / "results.md").read_text())


ARCHIVE = ROOT / "experiments" / "delrec" / "results" / "study_runs"
TABLE_ONLY = False  # --table: run() starts nothing and reports a run without metrics.json as not finished


def _units(root: Path) -> dict[str, list[Path]]:
    """The archive's parts: each run directory (one holding ``.hydra/``) with its sibling ``<name>.log`` is one,
    named by its path (``study__seed1__delrec``); the files outside run directories (the tables) are ``tables``."""
    runs = sorted(p.parent for p in root.rglob(".hydra") if p.is_dir())
    units: dict[str, list[Path]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        owner = next((r for r in runs if r in path.parents or path == r.parent / f"{r.name}.log"), None)
        units.setdefault("__".join(owner.relative_to(root).parts) if owner else "tables", []).append(path)
    return units


def archive(root: Path, max_mb: float) -> None:
    """Pack the runs under ``root`` into ``ARCHIVE/<run>.tar.gz``, one archive per run: every file but run markers
    (``.rdrec-run.json``: the next machine's runs claim their directories afresh), staging files and files over
    ``max_mb`` MB. A finished run (it has ``metrics.json``) needs its weights, not its optimiser: its checkpoints
    are packed without optimiser state, and its ``last.ckpt`` is left out where an ``epoch*.ckpt`` holds the weights
    it is read by (the SR teachers). An unfinished run keeps its ``last.ckpt`` whole, to resume exactly, except
    one trained through and stopped while testing (``training_done``): its checkpoints are packed without Adam's
    moments (a finished stage 2 then fits the cap, ~3 MB instead of ~9) and it resumes to test only. The
    archives are byte-for-byte reproducible, so a run that did not change since the last ``--archive`` gives the
    same file and git stores nothing new for it. Runs may go on while this packs: checkpoints and results are
    replaced whole (renamed into place) and the evaluation journal only grows, so what is packed is always a state
    a run can resume from."""
    import io

    import torch

    from rdrec.utils.atomic import atomic_tar
    from rdrec.utils.checkpoints import load_checkpoint, training_done, without_optimizer_moments
    from rdrec.utils.rundir import MARKER

    left_out, sizes = [], []
    for unit, paths in _units(root).items():
        files, slim = [], {}
        for path in paths:
            if path.name == MARKER or ".staging." in path.name or path.name.endswith(".tmp"):
                continue
            run_dir = path.parent.parent
            if path.suffix == ".ckpt" and path.parent.name == "checkpoints":
                state = None
                if (run_dir / "metrics.json").is_file():
                    if path.name == "last.ckpt" and any(path.parent.glob("epoch*.ckpt")):
                        continue
                    state = {k: v for k, v in load_checkpoint(path).items()
                             if k not in ("optimizer_states", "lr_schedulers")}
                else:  # trained through, not yet tested: it resumes to test only, so Adam's moments are not needed
                    limits = _trainer_limits(run_dir)
                    if limits is not None:
                        state = load_checkpoint(path)
                        state = without_optimizer_moments(state) if training_done(state, *limits) else None
                if state is not None:
                    buffer = io.BytesIO()
                    torch.save(state, buffer)
                    slim[str(path.relative_to(root))] = buffer.getvalue()
                    continue
            (left_out if path.stat().st_size > max_mb * 1e6 else files).append(path)
        sizes.append(atomic_tar(ARCHIVE / f"{unit}.tar.gz", root, files, slim).stat().st_size)
    print(f"{len(sizes)} runs of {root} -> {ARCHIVE}/ ({sum(sizes) / 1e6:.1f} MB)")
    for path in left_out:
        print(f"  left out ({path.stat().st_size / 1e6:.0f} MB): {path.relative_to(root)}")


def _trainer_limits(run_dir: Path) -> tuple[int, int] | None:
    """``(trainer.max_epochs, trainer.max_steps)`` from a run's saved config; None where they are not plain numbers."""
    from omegaconf import OmegaConf

    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        return None
    trainer = OmegaConf.to_container(OmegaConf.load(saved), resolve=False).get("trainer") or {}
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    return (epochs, steps) if isinstance(epochs, int) and isinstance(steps, int) else None


def restore(root: Path) -> None:
    from rdrec.utils.atomic import extract_missing

    parts = sorted(ARCHIVE.glob("*.tar.gz"))
    if not parts:
        raise SystemExit(f"run.py --restore: no archives in {ARCHIVE}")
    print(f"restored {sum(len(extract_missing(p, root)) for p in parts)} files of {len(parts)} archives in "
          f"{ARCHIVE} into {root}")


def _list_size(list_opts: list[str]) -> int:
    for opt in list_opts:
        if opt.startswith("delrec.num_candidates="):
            return int(opt.split("=", 1)[1])
    return 20


def ranks_file(run_dir: Path) -> Path | None:
    """The per-user ranks the evaluator saved for DELRec's lists (rdrec.callbacks.SaveRanks), if any."""
    found = sorted((run_dir / "ranks").glob("test*delrec*.csv"))
    return found[0] if found else None


def rank_metrics(ranks) -> dict:
    import numpy as np

    ranks = np.asarray(ranks, dtype=float)
    return {"hr@1": float((ranks <= 1).mean()), "hr@5": float((ranks <= 5).mean()),
            "ndcg@5": float(np.where(ranks <= 5, 1 / np.log2(ranks + 1), 0).mean())}


def reference_rows(seed: int, sr_alone: Path, sasrec: Path, k: int) -> list[dict]:
    """Random order (exact expectation and a seeded draw) and SASRec's full-ranking HR@k, for the users the
    SR-alone run evaluated."""
    import numpy as np

    from rdrec.eval.reference import random_order_expectation

    ranks = pd.read_csv(ranks_file(sr_alone))
    users = ranks["user"].to_numpy()
    exact = random_order_expectation([k], ks=(1, 5))
    expected = {m: exact[m] for m in METRICS}
    draw = np.random.default_rng([seed, 20]).integers(1, k + 1, size=len(users))
    full = pd.read_csv(sasrec / "ranks" / "test.csv").set_index("user").loc[users, "rank"].to_numpy()
    rows = []
    for name, values in (("random (expected)", expected), ("random (seeded draw)", rank_metrics(draw)),
                         ("SASRec full ranking", rank_metrics(full))):
        rows.append({"variant": name, "seed": seed, "run": str(sr_alone), "users": len(users), **values})
    return rows


def _eval_users(experiment: str) -> int | None:
    """The experiment config's user subset, passed on explicitly so the SR-alone run ranks the same users."""
    from hydra import compose, initialize_config_dir

    from rdrec.utils.resolvers import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", "strategy=delrec"])
    return cfg.data.eval_users


def _row(variant: str, seed: int, out: Path, stage1: Path | None, cost: dict, s1_cost: dict | None = None) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    row = {"variant": variant, "seed": seed, "run": str(out)}
    found = ranks_file(out)
    row["users"] = len(pd.read_csv(found)) if found else None
    row.update({m: metrics.get(f"test/delrec/{m}") for m in METRICS})
    if variant not in REFERENCES:  # (the reference rows train no LLM: no stage-2 cost)
        row["stage2_seconds_per_step"] = step_seconds(out)
        row["stage2_peak_rss_mb"], row["stage2_wall_seconds"] = _whole_run(cost)
    if stage1 is not None:
        row["stage1_run"] = str(stage1)
        row["stage1_seconds_per_step"] = step_seconds(stage1)
        row["stage1_peak_rss_mb"], row["stage1_wall_seconds"] = _whole_run(s1_cost)
    return row


def _whole_run(cost: dict | None) -> tuple[float | None, float | None]:
    """Peak RSS and wall time of a run made by one process; a resumed run's ``cost.json`` holds only its last
    part's (e.g. the evaluation of a run trained before a stop), which is left out of the table's means."""
    if not cost or cost.get("resumed"):
        return None, None
    return cost.get("peak_rss_mb"), cost.get("wall_seconds")


def _write(work: Path, rows: list[dict]) -> None:
    """Merge these rows into results.csv (a row per variant and seed; later runs of the script add rows)."""
    work.mkdir(parents=True, exist_ok=True)
    if not rows and not (work / "results.csv").is_file():
        return
    frame = pd.DataFrame(rows, columns=None if rows else ["variant", "seed"])
    if (work / "results.csv").is_file():
        old = pd.read_csv(work / "results.csv")
        keys = set(zip(frame["variant"], frame["seed"]))
        old = old[[(v, s) not in keys for v, s in zip(old["variant"], old["seed"])]]
        frame = pd.concat([old, frame], ignore_index=True)
    tmp = work / "results.csv.tmp"
    frame.to_csv(tmp, index=False)
    os.replace(tmp, work / "results.csv")
    costs = [c for c in ("stage1_seconds_per_step", "stage1_peak_rss_mb", "stage2_seconds_per_step", "stage2_peak_rss_mb")
             if c in frame]
    lines = ["| variant | seeds | users per seed | " + " | ".join(f"test {m}" for m in METRICS) + " | "
             + " | ".join(costs) + " |", "|---" * (len(METRICS) + len(costs) + 3) + "|"]
    order = [v for v in REFERENCES if v in set(frame["variant"])]
    order += [v for v in dict.fromkeys(frame["variant"]) if v not in order]
    for variant in order:
        group = frame[frame["variant"] == variant]
        cells = [f"{group[m].mean():.4f} ± {group[m].std(ddof=1) if len(group) > 1 else 0:.4f}" for m in METRICS]
        cells += [f"{group[c].mean():.0f}" if group[c].notna().any() and variant not in REFERENCES else ""
                  for c in costs]  # means over seeds; reference rows (also older results.csv rows) train no LLM
        users = "/".join(str(int(u)) for u in sorted(set(group["users"].dropna()))) if "users" in group else ""
        lines.append(f"| {variant} | {len(group)} | {users} | " + " | ".join(cells) + " |")
    lines += paired_lines(frame)
    tmp = work / "results.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, work / "results.md")


PAIRED_AGAINST = ("random (expected)", "popularity", "sr_alone (SASRec)", "no_stage1", "no_adalora", "frozen_llm")


def paired_lines(frame: pd.DataFrame) -> list[str]:
    """Paired differences over the same users (per seed): each LLM row minus each comparison row, in per-user
    NDCG@5 and HR@1, with the paired standard error and a two-sided normal-approximation p-value. Against
    "random (expected)" the comparison is each user's expectation under a random order (a one-sample test). Each
    pair of LLM rows once. Where a pair has several seeds, a last row pools them with the user as the unit: each
    user's difference averaged over the seeds, then the same test over the users (the seeds share the users, so
    their differences are not independent draws)."""
    import math

    import numpy as np

    def per_user(run: str):
        found = ranks_file(Path(run))
        return pd.read_csv(found).set_index("user")["rank"] if found else None

    def cell(d) -> str:
        se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        p = math.erfc(abs(d.mean() / se) / math.sqrt(2)) if se and se > 0 else float("nan")
        return f"{d.mean():+.4f} ± {se:.4f} (p {p:.3g})"

    out = []
    llm = [v for v in dict.fromkeys(frame["variant"]) if v not in REFERENCES]
    for variant in llm:
        for other in PAIRED_AGAINST:
            if other == variant or (other in llm and llm.index(other) < llm.index(variant)):
                continue  # each pair of LLM rows once
            per_seed = []
            for seed in sorted(set(frame["seed"])):
                a = frame[(frame["variant"] == variant) & (frame["seed"] == seed)]
                b = frame[(frame["variant"] == other) & (frame["seed"] == seed)]
                if a.empty or b.empty:
                    continue
                ra = per_user(a["run"].iloc[0])
                fixed = None  # random order: every user's expected value, a constant (a one-sample test)
                if other == "random (expected)":
                    fixed = {m: float(b[m].iloc[0]) for m in ("ndcg@5", "hr@1")}
                    rb = ra
                else:
                    rb = per_user(b["run"].iloc[0])
                if ra is None or rb is None:
                    continue
                users = ra.index.intersection(rb.index)
                xa, xb = ra.loc[users].to_numpy(float), rb.loc[users].to_numpy(float)
                diffs = pd.DataFrame({name: f(xa) - (fixed[name] if fixed else f(xb)) for name, f in (
                    ("ndcg@5", lambda r: np.where(r <= 5, 1 / np.log2(r + 1), 0.0)),
                    ("hr@1", lambda r: (r <= 1).astype(float)))}, index=users)
                per_seed.append((seed, diffs))
                out.append(f"| {variant} − {other} | {seed} | {len(users)} | "
                           + " | ".join(cell(diffs[m].to_numpy()) for m in diffs) + " |")
            if len(per_seed) > 1:
                pooled = pd.concat([d for _, d in per_seed]).groupby(level=0).mean()
                seeds = ", ".join(str(seed) for seed, _ in per_seed)
                out.append(f"| {variant} − {other} | {seeds} (per-user mean) | {len(pooled)} | "
                           + " | ".join(cell(pooled[m].to_numpy()) for m in pooled) + " |")
    if not out:
        return []
    return ["", "Paired differences over the same users (mean ± paired standard error, two-sided normal p):", "",
            "| rows | seed | users | Δ ndcg@5 | Δ hr@1 |", "|---|---|---|---|---|", *out]


if __name__ == "__main__":
    main()
