"""SASRec vs POD vs RDRec on one split, several seeds: run what is missing, then write the comparison table.

Every run is `rdrec-train` with the split seed fixed (`data.split.seed=42`: the teacher's rationales belong to that
split, and every model ranks the same persisted candidate lists), the run seed varied. A finished run (its
`metrics.json` exists) is never re-run, and a killed one continues (`rdrec-train resume=<run dir>`: training from its
last checkpoint, evaluation from the users its journal has not ranked), so a killed comparison resumes where it
stopped. The table has mean ± std
over seeds of test HR@5/10 and NDCG@5/10 under full ranking (seen items excluded) and under 100 sampled negatives,
and a paired t-test (scipy.stats.ttest_rel, seeds paired) of RDRec against POD per column. Its first row is what
chance gives: the exact expected metrics of a random order on the same test users (rdrec.eval.reference).

    python experiments/rdrec/compare.py --seeds 1 2 3                      # run + table
    python experiments/rdrec/compare.py --seeds 1 2 3 --no-run             # table of what exists
    python experiments/rdrec/compare.py --methods pod rdrec --extra rdrec:data.ratios.preference=1.0 --tag pref1
    python experiments/rdrec/compare.py --tag ids --methods Pop LeakProbe POD-independent --pair POD-independent:Pop
    python experiments/rdrec/compare.py --tag ids_rdrec --methods POD-collaborative RDRec-collaborative \
        --from-results POD-collaborative:ids --pair RDRec-collaborative:POD-collaborative   # POD's seeds as committed

Methods named ``POD-<scheme>`` / ``RDRec-<scheme>`` are the students with learnable item identifiers
(``experiment=pod_ml100k_ids item_ids=<scheme>``: 16 epochs; the item-ID study in the README). ``--pair A:B``
(repeatable) adds a paired t-test row A − B; the default pairs RDRec with POD when both ran.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METHODS = {
    "SASRec": ["strategy=sr", "seqrec=sasrec", "data=ml100k", "data.split.seed=42", "trainer.max_epochs=20",
               "callbacks.early_stopping.patience=5"],
    "POD": ["experiment=pod_ml100k_cpu"],
    "RDRec": ["experiment=rdrec_ml100k_cpu"],
    "Pop": ["strategy=pop", "data=ml100k", "data.split.seed=42"],
    "LeakProbe": ["strategy=leak_probe", "data=ml100k", "data.split.seed=42"],
    **{f"POD-{scheme}": ["experiment=pod_ml100k_ids", f"item_ids={scheme}"]
       for scheme in ("random", "independent", "collaborative", "semantic")},
    **{f"RDRec-{scheme}": ["experiment=pod_ml100k_ids", "strategy=rdrec", f"item_ids={scheme}",
                           "data.ratios.preference=0.25", "data.ratios.attribute=0.25",
                           "data.rationales=${paths.data_dir}/rationales/ml100k-full-export"]  # experiments/teacher/run_coverage.sh
       for scheme in ("random", "independent", "collaborative", "semantic")},
}
COLUMNS = [("test/hr@5", "HR@5"), ("test/hr@10", "HR@10"), ("test/ndcg@5", "NDCG@5"), ("test/ndcg@10", "NDCG@10"),
           ("test/sampled/hr@5", "s-HR@5"), ("test/sampled/hr@10", "s-HR@10"), ("test/sampled/ndcg@5", "s-NDCG@5"),
           ("test/sampled/ndcg@10", "s-NDCG@10")]


def run_one(method: str, seed: int, run_dir: Path, extra: list[str], log_dir: Path) -> dict:
    metrics_file = run_dir / "metrics.json"
    if metrics_file.exists():
        return json.loads(metrics_file.read_text())
    args = [*METHODS[method], *extra, f"seed={seed}", f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"]
    resumed = (run_dir / "checkpoints" / "last.ckpt").is_file()  # a killed run: continue it (rdrec/cli/resume.py)
    if resumed:
        args = [f"resume={run_dir}", "trainer.enable_progress_bar=false"]
    venv = ROOT / ".venv" / "bin" / "rdrec-train"
    cmd = ["nice", "-n", "10", *([str(venv)] if venv.exists() else [sys.executable, "-m", "rdrec.cli.train"]), *args]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{method}_seed{seed}{'_resumed' if resumed else ''}.log"
    print(f"[{time.strftime('%H:%M:%S')}] {method} seed {seed}: {' '.join(cmd[3:])}  (log: {log})", flush=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        env = {**os.environ, "WANDB_MODE": "offline",
               "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or not metrics_file.exists():
        raise SystemExit(f"{method} seed {seed} failed ({proc.returncode}); see {log}")
    (run_dir / "wall_seconds.json").write_text(json.dumps({"seconds": seconds, "command": " ".join(cmd[3:]),
                                                           **({"resumed": True} if resumed else {})}) + "\n")
    print(f"[{time.strftime('%H:%M:%S')}] {method} seed {seed}: done in {seconds / 60:.1f} min", flush=True)
    return json.loads(metrics_file.read_text())


def from_results(path: Path, method: str) -> dict[int, dict]:
    """``{seed: {column: value}}`` of ``method`` from a written ``compare_<tag>.json`` (its per-seed values)."""
    saved = json.loads(path.read_text())
    if method not in saved["summary"]:
        raise SystemExit(f"{path}: no method {method!r} (it has {sorted(saved['summary'])})")
    columns = saved["summary"][method]
    seeds = saved["seeds"]
    out: dict[int, dict] = {}
    for key, _ in COLUMNS:
        values = columns[key]["values"]
        if len(values) != len(seeds):
            raise SystemExit(f"{path}: {method} {key} has {len(values)} values for seeds {seeds}; cannot pair them")
        for seed, value in zip(seeds, values):
            out.setdefault(seed, {})[key] = value
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return m, s


def random_row() -> dict[str, float]:
    """The exact expected metrics of a random order on this split's test users (rdrec.eval.reference)."""
    from rdrec.data.pipeline import prepare_from_config
    from rdrec.eval.reference import random_order_metrics

    return random_order_metrics(prepare_from_config(["data=ml100k", "data.split.seed=42"], log=lambda s: None),
                                "test", ks=(5, 10))


def table(results: dict[str, dict[int, dict]], seeds: list[int],
          pairs: list[tuple[str, str]] | None = None, reference: dict[str, float] | None = None) -> tuple[str, dict]:
    from scipy.stats import ttest_rel

    lines = ["| model | seeds | " + " | ".join(name for _, name in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    summary: dict = {}
    if reference is not None:
        summary["random order (expected)"] = {key: {"mean": reference[key], "std": 0.0} for key, _ in COLUMNS}
        lines.append("| random order (expected) | — | " + " | ".join(f"{reference[key]:.4f}" for key, _ in COLUMNS) + " |")
    for method, runs in results.items():
        have = [s for s in seeds if s in runs]
        if not have:
            continue
        cells = []
        for key, name in COLUMNS:
            m, s = mean_std([runs[k][key] for k in have])
            summary.setdefault(method, {})[key] = {"mean": m, "std": s, "values": [runs[k][key] for k in have]}
            cells.append(f"{m:.4f} ± {s:.4f}" if not math.isnan(s) else f"{m:.4f}")
        lines.append(f"| {method} | {len(have)} | " + " | ".join(cells) + " |")
    for first, second in pairs if pairs is not None else [("RDRec", "POD")]:
        if first not in results or second not in results:
            continue
        paired = [s for s in seeds if s in results[first] and s in results[second]]
        cells = []
        for key, _ in COLUMNS:
            a = [results[first][s][key] for s in paired]
            b = [results[second][s][key] for s in paired]
            if len(paired) >= 2 and any(x != y for x, y in zip(a, b)):
                test = ttest_rel(a, b)
                diff = sum(a) / len(a) - sum(b) / len(b)
                name = "ttest_rdrec_vs_pod" if (first, second) == ("RDRec", "POD") else f"ttest_{first}_vs_{second}"
                summary.setdefault(name, {})[key] = {"diff": diff, "t": float(test.statistic),
                                                     "p": float(test.pvalue), "n": len(paired)}
                cells.append(f"{diff:+.4f} (p={test.pvalue:.2g})")
            else:
                cells.append("n/a")
        lines.append(f"| {first} − {second} (paired t-test) | {len(paired)} | " + " | ".join(cells) + " |")
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--extra", action="append", default=[], help="METHOD:override (repeatable): extra Hydra overrides")
    ap.add_argument("--tag", default="main", help="name of this comparison (run dirs and result files)")
    ap.add_argument("--work", default=str(ROOT / "experiments" / "rdrec" / "work" / "compare"))
    ap.add_argument("--results", default=str(ROOT / "experiments" / "rdrec" / "results"))
    ap.add_argument("--no-run", action="store_true", help="only tabulate runs that exist")
    ap.add_argument("--no-random-row", action="store_true", help="leave out the random-order reference row")
    ap.add_argument("--pair", action="append", default=None, help="A:B (repeatable): a paired t-test row A − B")
    ap.add_argument("--link", action="append", default=[],
                    help="METHOD:TAG (repeatable): reuse METHOD's finished runs of comparison TAG (symlinked)")
    ap.add_argument("--from-results", action="append", default=[],
                    help="METHOD:TAG (repeatable): METHOD's per-seed numbers from the committed results/compare_TAG.json "
                         "(its run directories are gone, e.g. in a fresh clone); never re-run")
    args = ap.parse_args(argv)
    pairs = [tuple(p.split(":", 1)) for p in args.pair] if args.pair else None
    extra: dict[str, list[str]] = {}
    for item in args.extra:
        method, _, override = item.partition(":")
        extra.setdefault(method, []).append(override)
    work = Path(args.work) / args.tag
    for item in args.link:
        method, _, tag = item.partition(":")
        for seed in args.seeds:
            src, dst = Path(args.work) / tag / method.lower() / f"seed{seed}", work / method.lower() / f"seed{seed}"
            if (src / "metrics.json").exists() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(src.resolve())
    results: dict[str, dict[int, dict]] = {}
    recorded = dict(item.partition(":")[::2] for item in args.from_results)
    for method, tag in recorded.items():
        results[method] = from_results(Path(args.results) / f"compare_{tag}.json", method)
    for seed in args.seeds:  # seed-major: a partial comparison still pairs the methods
        for method in args.methods:
            if method in recorded:
                continue
            run_dir = work / method.lower() / f"seed{seed}"
            if args.no_run:
                if (run_dir / "metrics.json").exists():
                    results.setdefault(method, {})[seed] = json.loads((run_dir / "metrics.json").read_text())
                continue
            results.setdefault(method, {})[seed] = run_one(method, seed, run_dir, extra.get(method, []), work / "logs")
    text, summary = table(results, args.seeds, pairs, reference=None if args.no_random_row else random_row())
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    walls = {}
    for method, tag in recorded.items():  # the recorded runs' wall times travel with their numbers
        saved = json.loads((Path(args.results) / f"compare_{tag}.json").read_text()).get("wall_seconds", {})
        walls.update({k: v for k, v in saved.items() if k.split("/")[0] == method})
    for method in args.methods:
        for seed in args.seeds:
            f = work / method.lower() / f"seed{seed}" / "wall_seconds.json"
            if f.exists():
                walls[f"{method}/seed{seed}"] = json.loads(f.read_text())["seconds"]
    header = (f"ml-100k, split seed 42, run seeds {args.seeds}, tag {args.tag!r}; extra overrides {extra or 'none'}.\n"
              f"Command: python experiments/rdrec/compare.py {' '.join(argv if argv is not None else sys.argv[1:])}\n\n")
    (out / f"compare_{args.tag}.md").write_text(header + text + "\n")
    (out / f"compare_{args.tag}.json").write_text(json.dumps({"summary": summary, "wall_seconds": walls,
                                                              "extra": extra, "seeds": args.seeds}, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
