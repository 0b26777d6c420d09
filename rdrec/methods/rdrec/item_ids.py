"""Item identifiers of the generative students (``item_ids=…``): what the student reads and spells for an item.

Every scheme is built from the split's **training view** only (training interactions; item-level text, which is
catalogue data, not interaction data), is deterministic for a given seed, and gives every item a code of the
**same length**, so a summed log-likelihood over an ID never favours short IDs. A code is a row of integers;
:meth:`ItemIds.text` writes it into prompts and targets:

- ``random``        the digits of a seeded permutation of 1..M, zero-padded (``item_0345``): the POD/RDRec papers'
                    digit IDs without any order in them. The corpus tokenizer spells every digit.
- ``sequential``    the digits of P5's numbering (items numbered by first appearance along the users' training
                    sequences, users in id order). **Leaky by design**: consecutive ids sit on consecutive items of a
                    sequence, so "next id" predicts the next item; opt-in, to reproduce numbers measured that way.
- ``independent``   one new token per item (``<i0_345>``).
- ``collaborative`` a hierarchy of spectral clusterings (scikit-learn) of the training co-occurrence graph (items
                    within ``window`` positions of each other in a user's training sequence): one token per level,
                    then a token that tells the items of a leaf apart (Hua et al., 2023). Items without training
                    interactions form their own top-level branch, in id order.
- ``semantic``      residual k-means (scikit-learn) codes of item-text embeddings (the shipped all-MiniLM-L6-v2):
                    ``levels`` codebooks fitted on the items that have training interactions, every item assigned
                    to its nearest centroids, plus a token that tells items with equal codes apart (TIGER).

Tokens of the new-token schemes are added to the student's tokenizer (and its embedding grows with them); each
code position has its own tokens (``<c0_3>`` and ``<c1_3>`` differ). Built codes are cached under
``<cache_dir>/item_ids/<split fingerprint>/`` by scheme and parameters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rdrec.data.cache import stable_hash
from rdrec.data.prepared import TrainView
from rdrec.utils.atomic import atomic_file

log = logging.getLogger(__name__)

SCHEMES = ("random", "sequential", "independent", "collaborative", "semantic")
DIGIT_SCHEMES = ("random", "sequential")
_PREFIX = {"independent": "i", "collaborative": "c", "semantic": "s"}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ItemIds:
    scheme: str
    codes: np.ndarray  # [num_items + 1, length] int64; row 0 (padding) is unused

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"item_ids.scheme: expected one of {SCHEMES}, got {self.scheme!r}")
        rows = {tuple(r) for r in self.codes[1:].tolist()}
        if len(rows) != len(self.codes) - 1:
            raise ValueError(f"item_ids ({self.scheme}): two items share a code")

    @property
    def num_items(self) -> int:
        return len(self.codes) - 1

    @property
    def length(self) -> int:
        """Code positions per item (digits for the digit schemes, tokens otherwise)."""
        return self.codes.shape[1]

    @property
    def leaky(self) -> bool:
        return self.scheme == "sequential"

    def text(self, item: int) -> str:
        """How ``item`` is written in prompts and targets: ``item_0345`` or ``<c0_3><c1_12><c2_0>``."""
        code = self.codes[int(item)]
        if self.scheme in DIGIT_SCHEMES:
            return "item_" + "".join(str(int(d)) for d in code)
        p = _PREFIX[self.scheme]
        return "".join(f"<{p}{pos}_{int(v)}>" for pos, v in enumerate(code))

    def new_tokens(self) -> list[str]:
        """The tokens this scheme adds to the tokenizer (none for the digit schemes), in a fixed order."""
        if self.scheme in DIGIT_SCHEMES:
            return []
        p = _PREFIX[self.scheme]
        return [f"<{p}{pos}_{v}>" for pos in range(self.length) for v in np.unique(self.codes[1:, pos]).tolist()]


# ---- building ------------------------------------------------------------------------------------------------
def build_item_ids(view: TrainView, scheme: str, seed: int = 0, window: int = 5, branching: int = 16,
                   leaf_size: int | None = None, max_levels: int = 4, levels: int = 3, codebook: int = 16,
                   embed: Callable[[list[str]], np.ndarray] | None = None) -> ItemIds:
    """The ``scheme``'s codes for items 1..``view.num_items``, from ``view`` (training data) alone.

    ``window``, ``branching``, ``leaf_size``, ``max_levels``: collaborative; ``levels``, ``codebook``, ``embed``
    (texts → [N, D] vectors): semantic."""
    n = view.num_items
    if scheme == "random":
        numbers = np.random.default_rng(np.random.SeedSequence([int(seed), 7])).permutation(n) + 1
        return ItemIds(scheme, _digits(np.concatenate([[0], numbers])))
    if scheme == "sequential":
        log.warning("item_ids=sequential: P5's numbering puts consecutive ids on consecutive items of a sequence; "
                    "its numbers measure the id leak as much as the model (see the leak_probe strategy)")
        return ItemIds(scheme, _digits(sequential_numbers(view)))
    if scheme == "independent":
        return ItemIds(scheme, np.arange(n + 1, dtype=np.int64)[:, None])
    if scheme == "collaborative":
        return ItemIds(scheme, collaborative_codes(view, seed, window, branching, leaf_size or branching, max_levels))
    if scheme == "semantic":
        if embed is None:
            raise ValueError("item_ids=semantic needs a text encoder (embed=…)")
        return ItemIds(scheme, semantic_codes(view, embed, seed, levels, codebook))
    raise ValueError(f"item_ids.scheme: expected one of {SCHEMES}, got {scheme!r}")


def _digits(numbers: np.ndarray) -> np.ndarray:
    """[N] non-negative ints → [N, width] their zero-padded decimal digits (width of the largest)."""
    width = len(str(int(numbers.max())))
    out = np.zeros((len(numbers), width), dtype=np.int64)
    rest = numbers.astype(np.int64).copy()
    for pos in range(width - 1, -1, -1):
        out[:, pos], rest = rest % 10, rest // 10
    return out


def sequential_numbers(view: TrainView) -> np.ndarray:
    """[M + 1] P5's numbering from the training sequences: items by first appearance walking users 1, 2, … in time
    order; items without training interactions follow in id order."""
    number = np.zeros(view.num_items + 1, dtype=np.int64)
    nxt = 1
    for seq in view.sequences:
        for i in np.asarray(seq).tolist():
            if number[i] == 0:
                number[i], nxt = nxt, nxt + 1
    for i in range(1, view.num_items + 1):
        if number[i] == 0:
            number[i], nxt = nxt, nxt + 1
    return number


# ---- collaborative -------------------------------------------------------------------------------------------
def cooccurrence(view: TrainView, window: int):
    """Symmetric sparse [M + 1, M + 1] counts of item pairs within ``window`` positions in a training sequence."""
    from scipy.sparse import coo_matrix

    rows, cols = [], []
    for seq in view.sequences:
        seq = np.asarray(seq, dtype=np.int64)
        for d in range(1, max(int(window), 1) + 1):
            if len(seq) > d:
                rows.append(seq[:-d])
                cols.append(seq[d:])
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    size = view.num_items + 1
    upper = coo_matrix((np.ones(len(r)), (r, c)), shape=(size, size)).tocsr()
    graph = (upper + upper.T).tocsr()
    graph.setdiag(0)
    graph.eliminate_zeros()
    return graph


def collaborative_codes(view: TrainView, seed: int, window: int, branching: int, leaf_size: int,
                        max_levels: int) -> np.ndarray:
    """Paths of a recursive spectral clustering of the co-occurrence graph, padded with 0 to one depth, plus a
    sibling index: [M + 1, depth + 1]."""
    if branching < 2 or leaf_size < 1 or max_levels < 1:
        raise ValueError(f"item_ids (collaborative): branching >= 2, leaf_size >= 1, max_levels >= 1, got "
                         f"{branching}, {leaf_size}, {max_levels}")
    graph = cooccurrence(view, window)
    trained = np.flatnonzero(view.item_counts[1:] > 0) + 1
    cold = np.setdiff1d(np.arange(1, view.num_items + 1), trained)
    paths: dict[int, list[int]] = {}
    siblings: dict[int, int] = {}

    def leaf(items: np.ndarray, path: list[int]) -> None:
        for s, i in enumerate(sorted(items.tolist())):
            paths[i], siblings[i] = list(path), s

    def chunks(items: np.ndarray, path: list[int], depth: int) -> None:  # no graph: balanced chunks in id order
        if len(items) <= leaf_size or depth == max_levels:
            return leaf(items, path)
        for c, part in enumerate(np.array_split(np.sort(items), min(branching, len(items)))):
            chunks(part, path + [c], depth + 1)

    def split(items: np.ndarray, path: list[int], depth: int) -> None:
        if len(items) <= leaf_size or depth == max_levels:
            return leaf(items, path)
        labels = _spectral(graph[items][:, items], branching, seed + depth)
        if len(np.unique(labels)) < 2:  # nothing to separate on: fall back to chunks
            return chunks(items, path, depth)
        for c, label in enumerate(np.unique(labels)):
            split(items[labels == label], path + [c], depth + 1)

    top = [trained] + ([cold] if len(cold) else [])
    if len(trained) > leaf_size and len(cold):
        # the trained items' top-level clusters, then one branch more for the items without training data
        labels = _spectral(graph[trained][:, trained], branching, seed)
        groups = [trained[labels == lab] for lab in np.unique(labels)]
        for c, g in enumerate(groups):
            split(g, [c], 1)
        chunks(cold, [len(groups)], 1)
    elif len(cold):
        for c, g in enumerate(top):
            chunks(g, [c], 1)
    else:
        split(trained, [], 0)
    depth = max(len(p) for p in paths.values())
    codes = np.zeros((view.num_items + 1, depth + 1), dtype=np.int64)
    for i, p in paths.items():
        codes[i, : len(p)] = p
        codes[i, depth] = siblings[i]
    return codes


def _spectral(affinity, k: int, seed: int) -> np.ndarray:
    """Spectral clustering of a (sub)graph into at most ``k`` clusters; a tiny uniform affinity joins its
    components, so isolated items land somewhere instead of breaking the eigensolver."""
    from sklearn.cluster import SpectralClustering

    n = affinity.shape[0]
    k = min(k, n)
    if k < 2:
        return np.zeros(n, dtype=np.int64)
    dense = np.asarray(affinity.todense(), dtype=np.float64)
    positive = dense[dense > 0]
    dense += (positive.mean() if positive.size else 1.0) * 1e-3
    np.fill_diagonal(dense, 0.0)
    model = SpectralClustering(n_clusters=k, affinity="precomputed", assign_labels="cluster_qr",
                               random_state=int(seed))
    return model.fit_predict(dense).astype(np.int64)


# ---- semantic ------------------------------------------------------------------------------------------------
def item_texts(view: TrainView) -> list[str]:
    """``texts[item]`` for 0..M from the item table (title, categories, brand, year, description): item-level
    catalogue text only, never reviews or other interaction text."""
    out = [""] * (view.num_items + 1)
    for row in view.items.itertuples(index=False):
        parts = [str(getattr(row, "title", "") or "").strip()]
        cats = getattr(row, "categories", None)
        if isinstance(cats, (list, tuple, np.ndarray)) and len(cats):
            parts.append("Categories: " + ", ".join(str(c) for c in cats))
        brand = str(getattr(row, "brand", "") or "").strip()
        if brand and brand not in ("None", "nan"):
            parts.append(f"Brand: {brand}")
        year = getattr(row, "year", None)
        if year is not None and str(year) not in ("<NA>", "nan", "", "None"):
            parts.append(f"Year: {int(year)}")
        desc = str(getattr(row, "description", "") or "").strip()
        if desc and desc not in ("None", "nan"):
            parts.append(desc[:300])
        out[int(row.item)] = ". ".join(p for p in parts if p) or f"item {int(row.item)}"
    return out


def semantic_codes(view: TrainView, embed: Callable[[list[str]], np.ndarray], seed: int, levels: int,
                   codebook: int) -> np.ndarray:
    """Residual k-means: level l clusters the residual of level l - 1 (fitted on items with training
    interactions, applied to all), then a disambiguation index among items with equal codes: [M + 1, levels + 1]."""
    from sklearn.cluster import KMeans

    if levels < 1 or codebook < 2:
        raise ValueError(f"item_ids (semantic): levels >= 1 and codebook >= 2, got {levels}, {codebook}")
    texts = item_texts(view)[1:]
    vectors = np.asarray(embed(texts), dtype=np.float64)
    if vectors.shape[0] != view.num_items:
        raise ValueError(f"item_ids (semantic): the encoder gave {vectors.shape[0]} vectors for {view.num_items} items")
    fit = view.item_counts[1:] > 0
    if not fit.any():
        fit[:] = True
    residual = vectors.copy()
    codes = np.zeros((view.num_items + 1, levels + 1), dtype=np.int64)
    for level in range(levels):
        k = min(codebook, int(fit.sum()))
        model = KMeans(n_clusters=k, n_init=4, random_state=int(seed) + level).fit(residual[fit])
        labels = model.predict(residual)
        codes[1:, level] = labels
        residual = residual - model.cluster_centers_[labels]
    seen: dict[tuple[int, ...], int] = {}
    for i in range(1, view.num_items + 1):
        key = tuple(codes[i, :levels].tolist())
        codes[i, levels] = seen.get(key, 0)
        seen[key] = codes[i, levels] + 1
    return codes


def minilm_encoder(data_dir: str | Path, batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    """Texts → normalised all-MiniLM-L6-v2 vectors (the shipped weights: rdrec.backbones.shipped)."""

    def embed(texts: list[str]) -> np.ndarray:
        import torch
        from sentence_transformers import SentenceTransformer

        from rdrec.backbones.shipped import all_minilm_l6_v2

        with torch.random.fork_rng():
            model = SentenceTransformer(all_minilm_l6_v2(data_dir), device="cpu")
            return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)

    return embed


# ---- the cached entry point ----------------------------------------------------------------------------------
def load_or_build(view: TrainView, fingerprint: str, cache_dir: str | Path | None, scheme: str = "random",
                  seed: int = 0, data_dir: str | Path | None = None, **params) -> ItemIds:
    """``build_item_ids`` cached under ``cache_dir/item_ids/<fingerprint>/<scheme>-<hash of the parameters>.npy``
    (no cache when ``cache_dir`` or ``fingerprint`` is empty). ``data_dir`` locates the shipped text encoder."""
    if scheme not in SCHEMES:
        raise ValueError(f"item_ids.scheme: expected one of {SCHEMES}, got {scheme!r}")
    used = _used_params(scheme, params)
    embed = None
    if scheme == "semantic":
        embed = params.pop("embed", None) or minilm_encoder(data_dir or os.environ.get("RDREC_DATA_DIR", "data"))
    key = stable_hash({"v": FORMAT_VERSION, "scheme": scheme, "seed": int(seed), **used})[:16]
    path = Path(cache_dir) / "item_ids" / fingerprint / f"{scheme}-{key}.npy" if cache_dir and fingerprint else None
    if path is not None and path.is_file():
        try:
            codes = np.load(path)
        except (OSError, ValueError) as err:  # a damaged cache is rebuilt, not trusted
            log.warning("item_ids: %s is unreadable (%s); rebuilding it", path, err)
        else:
            if len(codes) == view.num_items + 1:
                return ItemIds(scheme, codes)
    ids = build_item_ids(view, scheme, seed=int(seed), embed=embed, **used)
    if path is not None:
        with atomic_file(path, "wb", encoding=None) as f:
            np.save(f, ids.codes)
    log.info("item_ids=%s: %d items, %d code positions, %d new tokens%s", scheme, ids.num_items, ids.length,
             len(ids.new_tokens()), " (LEAKY: P5 numbering)" if ids.leaky else "")
    return ids


_PARAMS = {"random": (), "sequential": (), "independent": (),
           "collaborative": ("window", "branching", "leaf_size", "max_levels"),
           "semantic": ("levels", "codebook")}


def _used_params(scheme: str, params: dict) -> dict:
    unknown = set(params) - {p for ps in _PARAMS.values() for p in ps} - {"embed"}
    if unknown:
        raise ValueError(f"item_ids: unknown parameter(s) {sorted(unknown)}")
    return {k: params[k] for k in _PARAMS[scheme] if k in params and params[k] is not None}

