"""Run the SASRec/GRU4Rec benchmark (rdrec vs RecBole 1.2.1) and the extra rdrec rows; skip runs already done.

Usually called by run.sh (which first builds .venv-recbole and exports the split). Standard library only.

    python3 run.py [--only recbole|rdrec|extra|rdrec_own] [--epochs 4] [--seeds 1 2 3] [--dry-run]

Every run is one process, pinned to one core (``taskset -c $BENCH_CORE``, default 1) with
``OMP_NUM_THREADS=1 MKL_NUM_THREADS=1``; its wall time and peak RSS (``ru_maxrss`` from ``wait4``) are measured
here, identically for both implementations. Each finished run is written atomically to
``results/<name>.json``; a run whose JSON exists is skipped. Logs and run directories go to ``work/``.
A lock file per core makes invocations for the same core queue behind each other, so measurements never share it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORK = HERE / "work"
RESULTS = HERE / "results"
EXPORT = WORK / "export"
RB_PY = HERE / ".venv-recbole" / "bin" / "python"
RDREC_TRAIN = REPO / ".venv" / "bin" / "rdrec-train"
CORE = os.environ.get("BENCH_CORE", "1")
RDREC_MODELS = {"SASRec": "sasrec", "GRU4Rec": "gru4rec"}


def pinned_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("OPENBLAS_NUM_THREADS", None)
    return env


def measure(cmd: list[str], log: Path, env: dict, cwd: Path) -> dict:
    """Run ``taskset -c CORE cmd``; return exit code, wall seconds and the process tree's peak RSS."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full = ["taskset", "-c", CORE, *cmd]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        fh.write("$ " + shlex.join(full) + "\n")
        fh.flush()
        proc = subprocess.Popen(full, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"returncode": proc.returncode, "wall_seconds": time.perf_counter() - t0,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024.0,  # kB on Linux; max over the process and its waited children
            "command": shlex.join(full), "log": str(log.relative_to(HERE))}


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


# ---- RecBole ---------------------------------------------------------------------------------------------
def run_recbole(model: str, seed: int, epochs: int, stopping_step: int) -> dict:
    name = f"recbole_{model.lower()}_cap{epochs}_seed{seed}"
    raw = WORK / "raw" / f"{name}.json"
    raw.unlink(missing_ok=True)
    cmd = [str(RB_PY), str(HERE / "recbole_runner.py"), "--model", model, "--seed", str(seed), "--export", str(EXPORT),
           "--out", str(raw), "--epochs", str(epochs), "--stopping-step", str(stopping_step),
           "--workdir", str(WORK / "recbole" / name)]
    m = measure(cmd, WORK / "logs" / f"{name}.log", pinned_env(), HERE)
    if m["returncode"] != 0 or not raw.exists():
        raise RuntimeError(f"{name} failed (exit {m['returncode']}); see {m['log']}")
    r = json.loads(raw.read_text())
    return {
        "name": name, "implementation": "recbole", "model": model, "seed": seed, "budget": f"cap{epochs}",
        "epochs_cap": epochs, "epochs_trained": r["epochs_trained"], "cap_reached": r["cap_reached"],
        "best_epoch": r["best_epoch"],
        "train_seconds_per_epoch": r["train_seconds_per_epoch"], "eval_seconds_per_pass": r["eval_seconds_per_pass"],
        "train_cpu_seconds_per_epoch": r["train_cpu_seconds_per_epoch"],
        "eval_cpu_seconds_per_pass": r["eval_cpu_seconds_per_pass"],
        "test": r["test_rdrec_eval"], "test_recbole_own": r["test_recbole"], "split_check": r["split_check"],
        "test_target_ties": r["test_target_ties"], **m, "runner": r,
    }


# ---- rdrec ------------------------------------------------------------------------------------------------
def run_rdrec(seqrec: str, seed: int, epochs: int | None, label: str, overrides: tuple[str, ...] = ()) -> dict:
    name = f"rdrec_{seqrec}_{label}_seed{seed}"
    rundir = WORK / "rdrec" / name
    if rundir.exists():
        import shutil
        shutil.rmtree(rundir)
    cmd = [str(RDREC_TRAIN), "strategy=sr", f"seqrec={seqrec}", "data=ml100k", f"seed={seed}", "eval=benchmark",
           f"hydra.run.dir={rundir}", "+callbacks.bench_timer._target_=bench_timer.BenchTimer"]
    if epochs is not None:
        cmd.append(f"trainer.max_epochs={epochs}")
    cmd.extend(overrides)
    env = pinned_env()
    env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("WANDB_MODE", "offline")
    m = measure(cmd, WORK / "logs" / f"{name}.log", env, REPO)
    metrics_path = rundir / "metrics.json"
    if m["returncode"] != 0 or not metrics_path.exists():
        raise RuntimeError(f"{name} failed (exit {m['returncode']}); see {m['log']}")
    metrics = json.loads(metrics_path.read_text())
    timing = json.loads((rundir / "bench_timing.json").read_text())
    fit_vals = [v["seconds"] for v in timing["val_passes"] if v["stage"] == "fit"]
    fit_cpu = [v["cpu_seconds"] for v in timing["val_passes"] if v["stage"] == "fit"]
    epochs_trained = len(timing["train_epochs"])

    def group(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix) and "/" not in k[len(prefix):]}

    best_epoch = None
    csv_epoch_seconds = []
    csv_path = rundir / "csv" / "metrics.csv"
    if csv_path.exists():  # the module's own per-epoch timing and the validation curve
        import csv
        rows = list(csv.DictReader(csv_path.open()))
        csv_epoch_seconds = [float(r["train/epoch_seconds"]) for r in rows if r.get("train/epoch_seconds")]
        vals = [(float(r["val/ndcg@10"]), int(r["epoch"])) for r in rows if r.get("val/ndcg@10") and r.get("step")]
        vals = vals[:epochs_trained]  # fit-time validations come first; the post-fit validate() is logged last
        if vals:
            best_epoch = max(vals, key=lambda v: (v[0], -v[1]))[1]
    return {
        "name": name, "implementation": "rdrec", "model": seqrec, "seed": seed, "budget": label,
        "epochs_cap": epochs, "epochs_trained": epochs_trained,
        "cap_reached": epochs is not None and epochs_trained >= epochs, "best_epoch": best_epoch,
        "train_seconds_per_epoch": sum(e["seconds"] for e in timing["train_epochs"]) / max(1, epochs_trained),
        "eval_seconds_per_pass": sum(fit_vals) / max(1, len(fit_vals)),
        "train_cpu_seconds_per_epoch": sum(e["cpu_seconds"] for e in timing["train_epochs"]) / max(1, epochs_trained),
        "eval_cpu_seconds_per_pass": sum(fit_cpu) / max(1, len(fit_cpu)),
        "module_epoch_seconds": csv_epoch_seconds,
        "test": {"seen_excluded": group("test/"), "seen_included": group("test/full_seen/")},
        "val": {"seen_excluded": group("val/"), "seen_included": group("val/full_seen/")},
        "timing": timing, **m,
        # the resolved config of the run (batch size, model hyper-parameters, …) as Hydra saved it
        "hydra_config": (rundir / ".hydra" / "config.yaml").read_text(),
        "hydra_overrides": (rundir / ".hydra" / "overrides.yaml").read_text(),
    }


def plan(args) -> list[tuple[str, callable]]:
    jobs = []
    cap = args.epochs
    if args.only in (None, "recbole"):
        for seed in args.seeds:
            for model in ("SASRec", "GRU4Rec"):
                jobs.append((f"recbole_{model.lower()}_cap{cap}_seed{seed}",
                             lambda m=model, s=seed: run_recbole(m, s, cap, args.stopping_step)))
    if args.only in (None, "rdrec"):
        for seed in args.seeds:
            for model in ("sasrec", "gru4rec"):
                jobs.append((f"rdrec_{model}_cap{cap}_seed{seed}", lambda m=model, s=seed: run_rdrec(m, s, cap, f"cap{cap}")))
    if args.only in (None, "extra"):
        for model in ("caser", "bert4rec"):
            jobs.append((f"rdrec_{model}_own_seed1", lambda m=model: run_rdrec(m, 1, args.own_epochs, "own")))
    if args.only in (None, "rdrec_own"):
        for seed in args.seeds:
            for model in ("sasrec", "gru4rec"):
                jobs.append((f"rdrec_{model}_own_seed{seed}", lambda m=model, s=seed: run_rdrec(m, s, args.own_epochs, "own")))
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["recbole", "rdrec", "extra", "rdrec_own"])
    ap.add_argument("--epochs", type=int, default=int(os.environ.get("BENCH_EPOCHS", 3)),
                    help="same epoch cap for both implementations (see README)")
    ap.add_argument("--stopping-step", type=int, default=10, help="RecBole's early-stopping patience (default 10)")
    ap.add_argument("--own-epochs", type=int, default=100,
                    help="max_epochs for the rdrec runs on their own early stopping (patience: the strategy's, 20)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / f"run.core{CORE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # queue behind another invocation on this core: one process per core
        for name, job in plan(args):
            out = RESULTS / f"{name}.json"
            if out.exists():
                print(f"skip {name} (done)", flush=True)
                continue
            print(f"run  {name}", flush=True)
            if args.dry_run:
                continue
            t0 = time.time()
            try:
                result = job()
            except Exception as exc:  # keep going: one failure should not cost the other runs
                print(f"FAIL {name}: {exc}", flush=True)
                continue
            result["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
            result["core"] = CORE
            write_json(out, result)
            print(f"done {name} in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
