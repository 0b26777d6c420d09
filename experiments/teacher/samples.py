"""Write real teacher samples from a rationale store as Markdown (experiments/teacher/samples.md).

    python experiments/teacher/samples.py --store data/rationales/ml100k --metrics logs/generate/runs/<time>/metrics.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rdrec.teacher.store import RationaleStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", required=True)
    ap.add_argument("--metrics", help="metrics.json of the run, for the header")
    ap.add_argument("--command", default="")
    ap.add_argument("--per-family", type=int, default=4)
    ap.add_argument("--out", default=str(Path(__file__).with_name("samples.md")))
    args = ap.parse_args()
    records = sorted(RationaleStore(args.store, create=False).reload().records(),
                     key=lambda r: (r["family"], r["entity"].get("user", 0), r["entity"].get("item", 0)))
    lines = ["# Real teacher samples: SmolLM2-135M-Instruct on MovieLens-100K", ""]
    if args.command:
        lines += ["Made by:", "", "```bash", args.command, "```", ""]
    if args.metrics:
        m = json.loads(Path(args.metrics).read_text())
        lines += ["| family | entries | failed | failure rate | ok on first try |", "|---|---|---|---|---|"]
        for fam in ("rdrec", "slim"):
            if f"generate/{fam}/entries" in m:
                lines.append(f"| {fam} | {m[f'generate/{fam}/entries']} | {m[f'generate/{fam}/failed']} | "
                             f"{m[f'generate/{fam}/failure_rate']:.1%} | {m[f'generate/{fam}/first_try_rate']:.1%} |")
        lines += [f"| all | {m['generate/stored']} | {m['generate/failed']} | {m['generate/failure_rate']:.1%} | |", ""]
    for fam in ("rdrec", "slim"):
        ok = [r for r in records if r["family"] == fam and r["status"] == "ok"][: args.per_family]
        lines += [f"## {fam}: parsed entries", ""]
        for r in ok:
            lines += _entry(r)
    failed = [r for r in records if r["status"] != "ok"][:2]
    if failed:
        lines += ["## failures (recorded with every raw answer, never filled in)", ""]
        for r in failed:
            lines += _entry(r)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def _entry(r: dict) -> list[str]:
    prov = r["provenance"]
    out = [f"### {r['family']} {r['kind']} {json.dumps(r['entity'])} — {r['status']} after {r['attempts']} attempt(s)", "",
           f"model `{prov['model_id']}`, template `{prov['template_hash']}`, seed {prov['seed']}, "
           f"{prov['completion_tokens']} generated tokens", "", "Prompt (last user turn; the few-shot example is in config):", "",
           "```", r["messages"][-1]["content"], "```", "", "Answer:", "", "```", r["text"], "```", ""]
    if r["output"]:
        out += ["Parsed:", "", "```json", json.dumps(r["output"], indent=1, ensure_ascii=False), "```", ""]
    if r.get("rejected"):
        out += [f"Rejected attempts: {len(r['rejected'])} (last error: {r['rejected'][-1]['error']})", ""]
    if r["extra"].get("student_prompt"):
        out += ["Student (simplified) prompt:", "", "```", r["extra"]["student_prompt"], "```", ""]
    return out


if __name__ == "__main__":
    main()
