"""A quality check of teacher rationales that needs no human: genre mentions against ml-100k's real genres.

- RDRec item level ("1. The item's attributes are …", one per item): the genres the sentence names vs the item's
  own genres;
- SLIM step 2 ("2. Recommend …"): the genres it names vs the genres of the user's latest training items (the
  ones its prompt showed); RDRec's user level ("1. The user prefers …") likewise.

A genre is "named" when the text matches its pattern (``GENRES``: the genre word and a few plain synonyms, e.g.
"sci-fi"/"science fiction", "funny"/"comedic"). Precision = named genres that are right / named genres;
recall = right genres named / genres to name (item level: all of the item's genres; user level: the user's top
``--top`` genres among the shown items, by count), both micro-averaged over entries; at the user level precision
is given against all genres of the shown items and against their top ``--top``. *Shuffled* is the same
measure with each entry's text scored against another random entry's genres (seeded): what naming genres
without looking would get. Reads the rationale store (``data/rationales/ml100k``) directly, so a run that is
still going (or was stopped) can be checked; every ``status: ok`` entry counts, grouped by template hash and model.

    python experiments/teacher/quality.py --store data/rationales/ml100k [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# ml-100k's genres (as the source names them) -> what counts as naming them
GENRES = {
    "Action": r"\baction\b",
    "Adventure": r"\badventur(?:e|es|ous)\b",
    "Animation": r"\banimat(?:ed|ion)\b|\bcartoons?\b",
    "Children's": r"\bchildren(?:'s)?\b|\bkids?\b|\bfamily\b",
    "Comedy": r"\bcomed(?:y|ies)\b|\bcomedic\b|\bfunny\b|\bhumou?r(?:ous)?\b",
    "Crime": r"\bcrimes?\b|\bcriminals?\b|\bgangsters?\b|\bheists?\b",
    "Documentary": r"\bdocumentar(?:y|ies)\b",
    "Drama": r"\bdramas?\b|\bdramatic\b",
    "Fantasy": r"\bfantas(?:y|ies|tical)\b",
    "Film-Noir": r"\bnoir\b",
    "Horror": r"\bhorror\b|\bscary\b",
    "Musical": r"\bmusicals?\b",
    "Mystery": r"\bmyster(?:y|ies|ious)\b",
    "Romance": r"\broman(?:ce|ces|tic)\b|\blove stor(?:y|ies)\b",
    "Sci-Fi": r"\bsci[- ]?fi\b|\bscience[- ]fiction\b",
    "Thriller": r"\bthrillers?\b|\bsuspense(?:ful)?\b",
    "War": r"\bwar\b|\bwartime\b",
    "Western": r"\bwesterns?\b|\bcowboys?\b",
}
_PATTERNS = {g: re.compile(p, re.I) for g, p in GENRES.items()}


def named(text: str) -> set[str]:
    text = re.sub(r'"[^"]*"', " ", text)  # quoted titles ("Star Wars") are not genre mentions
    return {g for g, p in _PATTERNS.items() if p.search(text)}


def score(pairs: list[tuple[set[str], set[str]]]) -> dict:
    hit = sum(len(m & t) for m, t in pairs)
    mentioned = sum(len(m) for m, _ in pairs)
    wanted = sum(len(t) for _, t in pairs)
    return {"entries": len(pairs), "mentions": mentioned, "precision": hit / mentioned if mentioned else float("nan"),
            "recall": hit / wanted if wanted else float("nan"),
            "entries_naming_a_genre": sum(bool(m) for m, _ in pairs) / max(len(pairs), 1)}


def shuffled(pairs, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(pairs))
    return score([(pairs[i][0], pairs[j][1]) for i, j in enumerate(perm)])


def load_genres(data_dir: Path) -> dict[int, set[str]]:
    from rdrec.data.pipeline import prepare_dataset
    from rdrec.data.sources.movielens import MovieLens100K
    from rdrec.data.split import SplitConfig

    prepared = prepare_dataset(MovieLens100K(str(data_dir / "raw")), SplitConfig(seed=42), data_dir / "cache", log=lambda s: None)
    view = prepared.train_view()
    return {int(r.item): {str(c) for c in (r.categories if r.categories is not None else [])} & set(GENRES)
            for r in view.items.itertuples(index=False)}, prepared.fingerprint


def top_genres(items: list[int], genres: dict[int, set[str]], k: int) -> set[str]:
    counts = Counter(g for i in items for g in genres.get(i, ()))
    return {g for g, _ in sorted(counts.items(), key=lambda x: (-x[1], x[0]))[:k]}


def counts_table(store, fingerprint: str) -> str:
    """Per (family, kind, template): entries, failures after retries, first-try parses, tokens and attempts."""
    c: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for r in store.records():
        if r.get("fingerprint") != fingerprint:
            continue
        row = c[(r["family"], r["kind"], r["provenance"].get("template_hash", ""))]
        row[0] += 1
        row[1] += r["status"] != "ok"
        row[2] += r["status"] == "ok" and r["attempts"] == 1
        row[3] += r["provenance"].get("completion_tokens", 0)
        row[4] += r["attempts"]
    lines = ["| family | kind | template | entries | failed after retries | parsed on the 1st try | generated tokens per entry | attempts per entry |",
             "|---|---|---|---|---|---|---|---|"]
    for (fam, kind, th), (n, failed, first, toks, att) in sorted(c.items()):
        lines.append(f"| {fam} | {kind} | `{th[:8]}` | {n} | {failed} ({failed / n:.1%}) | {first} ({first / n:.1%}) | "
                     f"{toks / n:.1f} | {att / n:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_default = os.environ.get("RDREC_DATA_DIR", str(ROOT / "data"))
    ap.add_argument("--data-dir", default=data_default)
    ap.add_argument("--store", default=None, help="default: <data-dir>/rationales/ml100k")
    ap.add_argument("--top", type=int, default=3, help="user level: recall against the top genres of the shown items")
    ap.add_argument("--json", default=None)
    ap.add_argument("--counts", action="store_true", help="also: entries, failures, first-try parses per prompt kind")
    args = ap.parse_args()
    from rdrec.teacher.store import RationaleStore

    data_dir = Path(args.data_dir)
    genres, fingerprint = load_genres(data_dir)
    store = RationaleStore(args.store or data_dir / "rationales" / "ml100k", create=False).reload()
    if args.counts:
        print(counts_table(store, fingerprint) + "\n")
    groups: dict[tuple, list] = defaultdict(list)
    for r in store.records():
        if r["status"] != "ok" or r.get("fingerprint") != fingerprint:
            continue
        fam, kind, th = r["family"], r["kind"], (r["provenance"].get("template_hash", ""), r["provenance"].get("model_id", ""))
        if fam == "rdrec" and kind == "item":
            groups[("RDRec item attributes", "the item's genres", th)].append(
                (named(r["output"]["item_attribute"]), genres[r["entity"]["item"]]))
        elif kind == "user" and r["extra"].get("history_items"):
            shown = [int(i) for i in r["extra"]["history_items"]]
            union = {g for i in shown for g in genres.get(i, ())}
            top = top_genres(shown, genres, args.top)
            text = r["output"]["categories"] if fam == "slim" else r["output"]["user_preference"]
            name = "SLIM step 2 (categories)" if fam == "slim" else "RDRec user preference"
            m = named(text)
            groups[(name, f"precision: genres of the shown items; recall: their top {args.top}", th)].append((m, union, top))
    results = []
    for (name, against, th), rows in sorted(groups.items()):
        if len(rows[0]) == 2:
            s, base = score(rows), shuffled(rows)
        else:  # precision against the union of the shown items' genres, recall against their top genres
            sp, st = score([(m, u) for m, u, _ in rows]), score([(m, t) for m, _, t in rows])
            bp, bt = shuffled([(m, u) for m, u, _ in rows]), shuffled([(m, t) for m, _, t in rows])
            s = {**sp, "recall": st["recall"], "precision_top": st["precision"]}
            base = {**bp, "recall": bt["recall"], "precision_top": bt["precision"]}
        results.append({"what": name, "against": against, "template_hash": th[0], "model_id": th[1], **s,
                        "shuffled_precision": base["precision"], "shuffled_recall": base["recall"],
                        **({"shuffled_precision_top": base["precision_top"]} if "precision_top" in base else {})})
    lines = ["| rationale | model | against | template | entries | naming ≥1 genre | genre mentions | precision (shuffled) "
             f"| precision vs top {args.top} (shuffled) | recall (shuffled) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        top = f"{r['precision_top']:.2f} ({r['shuffled_precision_top']:.2f})" if "precision_top" in r else ""
        model = re.sub(r"^(slim-student:).*?([^/]+/[^/]+)$", r"\1\2", r["model_id"])  # a student: its run dir
        lines.append(f"| {r['what']} | {model} | {r['against']} | `{r['template_hash'][:8]}` | {r['entries']} | "
                     f"{r['entries_naming_a_genre']:.0%} | {r['mentions']} | {r['precision']:.2f} ({r['shuffled_precision']:.2f}) | "
                     f"{top} | {r['recall']:.2f} ({r['shuffled_recall']:.2f}) |")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
