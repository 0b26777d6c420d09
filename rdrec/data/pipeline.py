"""Source → canonical → prepared, each stage cached under ``cache_dir/<name>/`` by a fingerprint of its inputs.

    cache_dir/<name>/canonical-<source fp[:16]>       CanonicalDataset
    cache_dir/<name>/prepared-<sha(source fp, split)[:16]>   PreparedDataset
    cache_dir/file-hashes.json                          remembered sha256 of the raw files (rdrec.data.cache)

The source fingerprint hashes the raw files' bytes, so the same data anywhere gives the same entries; each entry
carries a checksum manifest and one that fails it is moved aside and rebuilt (``rdrec.data.cache.build_cached``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from rdrec.data.cache import build_cached, source_fingerprint, stable_hash
from rdrec.data.canonical import CanonicalDataset
from rdrec.data.prepared import PreparedDataset
from rdrec.data.sources.base import Source
from rdrec.data.split import SplitConfig, prepare

#: bump when ``prepare`` changes what it produces, so old caches are not reused
PREPARE_VERSION = 1


def load_canonical(
    source: Source, cache_dir: str | Path, log: Callable[[str], None] = print, fingerprint: str | None = None
) -> CanonicalDataset:
    fingerprint = fingerprint or source_fingerprint(source, cache_dir)
    path = Path(cache_dir) / source.name / f"canonical-{fingerprint[:16]}"
    return _stage(
        "canonical", path, log,
        build=source.load,
        save=lambda ds, p: ds.save(p),
        load=lambda p: CanonicalDataset.load(p, name=source.name),
    )


def prepare_dataset(
    source: Source, split: SplitConfig, cache_dir: str | Path, log: Callable[[str], None] = print
) -> PreparedDataset:
    split.validate()  # fail on a bad config before reading any file
    source_fp = source_fingerprint(source, cache_dir)
    fingerprint = stable_hash({"source": source_fp, "split": asdict(split), "version": PREPARE_VERSION})
    path = Path(cache_dir) / source.name / f"prepared-{fingerprint[:16]}"

    def build() -> PreparedDataset:
        # The canonical stage is only needed (and only loaded) when the prepared one must be built.
        prepared = prepare(load_canonical(source, cache_dir, log, source_fp), split)
        prepared.fingerprint = fingerprint
        return prepared

    prepared = _stage("prepared", path, log, build=build, save=lambda ds, p: ds.save(p), load=PreparedDataset.load)
    prepared.fingerprint = fingerprint
    return prepared


def prepare_from_config(overrides: Sequence[str] = (), config: str = "train",
                        log: Callable[[str], None] = print) -> PreparedDataset:
    """The prepared dataset that ``rdrec-train`` (or the ``config`` entry point) builds under these Hydra
    ``overrides`` (e.g. ``["data=ml100k", "data.split.seed=42"]``): for scripts that read a split without
    training on it (reference rows, exports)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from rdrec.utils.resolvers import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config, overrides=list(overrides))
    return prepare_dataset(instantiate(cfg.data.source), instantiate(cfg.data.split), cfg.data.cache_dir, log=log)


def _stage(what: str, path: Path, log: Callable[[str], None], build, save, load):
    # One line per stage, before the work, so a long build shows what it is doing.
    log(f"{what}: {'loading' if path.exists() else 'building'} {path}")
    return build_cached(path, build, save, load)
