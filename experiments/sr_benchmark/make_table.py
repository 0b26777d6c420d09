"""Write the benchmark tables into README.md (between the `<!-- tables:start -->` / `<!-- tables:end -->` markers)
from results/*.json. Standard library only; the prose around the markers is kept as it is.

    python experiments/sr_benchmark/make_table.py [--print]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
START, END = "<!-- tables:start -->", "<!-- tables:end -->"
MODEL_NAMES = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "caser": "Caser", "bert4rec": "BERT4Rec"}
ORDER = ["sasrec", "gru4rec", "caser", "bert4rec"]


def load() -> list[dict]:
    runs = []
    for path in sorted(RESULTS.glob("*.json")):
        if path.name == "split_check.json":
            continue
        runs.append(json.loads(path.read_text()))
    return runs


def mean_std(values: list[float], digits: int = 4) -> str:
    if not values:
        return "–"
    m = statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def num(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    m = statistics.fmean(values)
    return f"{m:.{digits}f}" if len(values) == 1 or max(values) == min(values) else f"{m:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def core_of(run: dict) -> str:
    if run.get("core") is not None:
        return str(run["core"])
    parts = run.get("command", "").split()
    return parts[2] if parts[:2] == ["taskset", "-c"] else "?"


def impl_label(run: dict) -> str:
    if run["implementation"] == "recbole":
        return "RecBole 1.2.1"
    return "rdrec †" if run.get("note") else "rdrec"


def budget_label(run: dict) -> str:
    if run["budget"].startswith("cap"):
        return f"{run['epochs_cap']} epochs (cap)"
    cap = run.get("epochs_cap") or 200  # None: the strategy's own max_epochs (200)
    return f"early stopping, ≤ {cap} epochs"


def main_table(runs: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["model"].lower(), r["budget"], r["implementation"])].append(r)

    def key(k):
        model, budget, impl = k
        return (ORDER.index(model) if model in ORDER else 99, 0 if budget.startswith("cap") else 1, impl != "recbole")

    head = ("| model | implementation | budget | seeds | HR@10 | NDCG@10 | MRR@10 | HR@10 | NDCG@10 | MRR@10 "
            "| s / train epoch (wall) | CPU s / train epoch | epochs trained (best) | s / eval pass (wall) | CPU s / eval pass "
            "| peak RSS MB | wall s / run | core |")
    lines = [
        "|  |  |  |  | seen items **excluded** | | | seen items **included** (RecBole's setting) | | | | | | | | | | |",
        head,
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for k in sorted(groups, key=key):
        model, budget, impl = k
        rs = sorted(groups[k], key=lambda r: r["seed"])
        ex = [r["test"]["seen_excluded"] for r in rs]
        inc = [r["test"]["seen_included"] for r in rs]
        trained = sorted({r["epochs_trained"] for r in rs})
        best = [r.get("best_epoch") for r in rs]
        cap_hit = any(r.get("cap_reached") for r in rs)
        ep = "/".join(str(t) for t in trained) + (" (cap)" if cap_hit else "")
        if all(b is not None for b in best):
            ep += " (best " + ",".join(str(b + 1) for b in best) + ")"
        lines.append(
            f"| {MODEL_NAMES.get(model, model)} | {impl_label(rs[0])} | {budget_label(rs[0])} "
            f"| {','.join(str(r['seed']) for r in rs)} "
            f"| {mean_std([m['hr@10'] for m in ex])} | {mean_std([m['ndcg@10'] for m in ex])} | {mean_std([m['mrr@10'] for m in ex])} "
            f"| {mean_std([m['hr@10'] for m in inc])} | {mean_std([m['ndcg@10'] for m in inc])} | {mean_std([m['mrr@10'] for m in inc])} "
            f"| {num([r['train_seconds_per_epoch'] for r in rs], 1)} | {num([r['train_cpu_seconds_per_epoch'] for r in rs], 1)} "
            f"| {ep} | {num([r['eval_seconds_per_pass'] for r in rs], 2)} | {num([r['eval_cpu_seconds_per_pass'] for r in rs], 2)} "
            f"| {num([r['peak_rss_mb'] for r in rs], 0)} | {num([r['wall_seconds'] for r in rs], 0)} "
            f"| {','.join(sorted({core_of(r) for r in rs}))} |"
        )
    notes = sorted({r["note"] for r in runs if r.get("note")})
    if notes:
        lines.append("")
        lines.extend(f"† {n}" for n in notes)
    return "\n".join(lines)


def crosscheck_table(runs: list[dict]) -> str:
    rb = sorted((r for r in runs if r["implementation"] == "recbole"), key=lambda r: (r["model"], r["seed"]))
    if not rb:
        return "(no RecBole run yet)"
    lines = ["| model | seed | split identical (train/valid/test rows) | RecBole NDCG@10 | rdrec evaluator, seen included | "
             "RecBole MRR@10 | rdrec evaluator | RecBole Hit@10 | rdrec evaluator | items tied with the target |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rb:
        own, ours = r["test_recbole_own"], r["test"]["seen_included"]
        sc = r["split_check"]
        ident = "yes" if all(v["identical"] for v in sc.values()) else "NO"
        rows = "/".join(str(sc[s]["rows"]) for s in ("train", "valid", "test"))
        lines.append(f"| {r['model']} | {r['seed']} | {ident} ({rows}) | {own['ndcg@10']:.4f} | {ours['ndcg@10']:.4f} | "
                     f"{own['mrr@10']:.4f} | {ours['mrr@10']:.4f} | {own['hit@10']:.4f} | {ours['hr@10']:.4f} | "
                     f"{r['test_target_ties']} |")
    return "\n".join(lines)


def per_run_table(runs: list[dict]) -> str:
    lines = ["| run | epochs | best epoch | test NDCG@10 (excl.) | test NDCG@10 (incl.) | s / epoch | s / eval | peak RSS MB | wall s | finished |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in sorted(runs, key=lambda r: r["name"]):
        be = "–" if r.get("best_epoch") is None else str(r["best_epoch"] + 1)
        lines.append(f"| [{r['name']}](results/{r['name']}.json) | {r['epochs_trained']} | {be} | "
                     f"{r['test']['seen_excluded']['ndcg@10']:.4f} | {r['test']['seen_included']['ndcg@10']:.4f} | "
                     f"{r['train_seconds_per_epoch']:.1f} | {r['eval_seconds_per_pass']:.2f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['wall_seconds']:.0f} | {r.get('finished_at', '')} |")
    return "\n".join(lines)


def side_totals(runs: list[dict]) -> str:
    tot = defaultdict(float)
    for r in runs:
        tot[(r["implementation"], r["budget"])] += r["wall_seconds"]
    return "\n".join(f"- {'RecBole' if impl == 'recbole' else 'rdrec'}, {budget}: {secs / 60:.1f} min wall in total"
                     for (impl, budget), secs in sorted(tot.items()))


def render(runs: list[dict]) -> str:
    split = RESULTS / "split_check.json"
    split_line = ""
    if split.exists():
        s = json.loads(split.read_text())
        split_line = (f"Split check (`results/split_check.json`): rdrec's split for seeds "
                      f"{', '.join(s['seeds'])} identical to the exported one by original ids: "
                      f"**{'yes' if s['all_identical'] else 'NO'}** ({s['interactions']} interactions, {s['users']} users, "
                      f"{s['items']} items; train/valid/test {s['split_sizes'].get('train')}/{s['split_sizes'].get('valid')}/"
                      f"{s['split_sizes'].get('test')}).\n\n")
    return "\n\n".join([
        "### Main table (test set, mean ± sample std over seeds)",
        main_table(runs),
        "### Cross-check: RecBole's own evaluator vs rdrec's on the same RecBole model (seen items included)",
        split_line + crosscheck_table(runs),
        "### Time per side",
        side_totals(runs),
        "### Per run",
        per_run_table(runs),
    ])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--print", action="store_true", help="print the tables instead of writing README.md")
    args = ap.parse_args()
    tables = render(load())
    if args.print:
        print(tables)
        return
    text = README.read_text() if README.exists() else f"# SR benchmark\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    tmp = README.with_suffix(".tmp")
    tmp.write_text(f"{before}{START}\n\n{tables}\n\n{END}{after}")
    tmp.replace(README)
    print(f"wrote {README}")


if __name__ == "__main__":
    main()
