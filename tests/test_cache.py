"""Fingerprints, build-once caching, and the source → canonical → prepared pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from rdrec.data.cache import build_cached, source_fingerprint
from rdrec.data.canonical import CanonicalDataset
from rdrec.errors import DataError
from rdrec.data.pipeline import load_canonical, prepare_dataset
from rdrec.data.prepared import PreparedDataset
from rdrec.data.sources.base import Source
from rdrec.data.split import SplitConfig


class CsvSource(Source):
    """A tiny file-backed source that counts how often it is parsed."""

    name = "tiny"

    def __init__(self, path: Path, fail: bool = False):
        self.path, self.fail, self.loads = Path(path), fail, 0

    def files(self):
        return [self.path]

    def config(self):
        return {"path": str(self.path)}

    def load(self):
        self.loads += 1
        if self.fail:
            raise RuntimeError("parse error")
        return CanonicalDataset(self.name, None, None, pd.read_csv(self.path, dtype={"user_id": str, "item_id": str}))


def write_csv(path: Path, n_users=5, length=4):
    rows = [(f"u{u}", f"i{(u + t) % 7}", t) for u in range(n_users) for t in range(length)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(path, index=False)


def test_fingerprint_tracks_files_config_and_class(tmp_path):
    f = tmp_path / "data.csv"
    write_csv(f)
    src = CsvSource(f)
    fp = source_fingerprint(src)
    assert fp == source_fingerprint(CsvSource(f)) and len(fp) == 64
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: mtime changes, content does not
    assert source_fingerprint(src) == fp
    write_csv(f, n_users=6)  # content and size change
    assert source_fingerprint(src) != fp

    class OtherSource(CsvSource):
        pass

    assert source_fingerprint(OtherSource(f)) != source_fingerprint(src)


def test_build_cached_builds_once_then_loads(tmp_path):
    calls = {"build": 0, "load": 0}

    def build():
        calls["build"] += 1
        return {"x": 1}

    def save(obj, path):
        path.mkdir()
        (path / "v").write_text(str(obj["x"]))

    def load(path):
        calls["load"] += 1
        return {"x": int((path / "v").read_text())}

    assert build_cached(tmp_path / "e", build, save, load) == {"x": 1}
    assert build_cached(tmp_path / "e", build, save, load) == {"x": 1}
    assert calls == {"build": 1, "load": 1}


def test_failing_build_leaves_nothing_and_retries(tmp_path):
    f = tmp_path / "data.csv"
    write_csv(f)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="parse error"):
        prepare_dataset(CsvSource(f, fail=True), SplitConfig(), cache, log=lambda m: None)
    leftovers = [p for p in cache.rglob("*") if p.is_dir() and p.name.startswith(("canonical", "prepared", "."))]
    assert leftovers == []
    # a failing prepare (filters empty the data) also leaves no prepared entry, but the canonical one stays
    with pytest.raises(DataError, match="left no interactions"):
        prepare_dataset(CsvSource(f), SplitConfig(user_core=50), cache, log=lambda m: None)
    names = sorted(p.name for p in (cache / "tiny").iterdir())
    assert len(names) == 1 and names[0].startswith("canonical-")


def test_pipeline_builds_once_and_keys_by_split(tmp_path):
    f = tmp_path / "data.csv"
    write_csv(f)
    cache = tmp_path / "cache"
    logs: list[str] = []
    src = CsvSource(f)
    a = prepare_dataset(src, SplitConfig(seed=0), cache, log=logs.append)
    assert src.loads == 1 and len(a.fingerprint) == 64
    assert [m.split(":")[0] for m in logs] == ["prepared", "canonical"] and all("building" in m for m in logs)
    assert str(cache / "tiny") in logs[0]

    logs.clear()
    b = prepare_dataset(src, SplitConfig(seed=0), cache, log=logs.append)
    assert src.loads == 1 and b.fingerprint == a.fingerprint
    assert len(logs) == 1 and logs[0].startswith("prepared: loading")
    pd.testing.assert_frame_equal(a.interactions, b.interactions)

    c = prepare_dataset(src, SplitConfig(seed=1), cache, log=logs.append)  # new split: canonical reused
    assert src.loads == 1 and c.fingerprint != a.fingerprint
    assert "canonical: loading" in logs[-1]
    dirs = sorted(p.name for p in (cache / "tiny").iterdir())
    assert [d.split("-")[0] for d in dirs] == ["canonical", "prepared", "prepared"]
    assert f"prepared-{a.fingerprint[:16]}" in dirs and PreparedDataset.load(cache / "tiny" / dirs[1]).fingerprint

    write_csv(f, n_users=8)  # the source file changes: everything is rebuilt
    d = prepare_dataset(src, SplitConfig(seed=0), cache, log=logs.append)
    assert src.loads == 2 and d.num_users == 8 and d.fingerprint != a.fingerprint


def test_load_canonical_keeps_the_source_name(tmp_path):
    f = tmp_path / "data.csv"
    write_csv(f)
    first = load_canonical(CsvSource(f), tmp_path, log=lambda m: None)
    again = load_canonical(CsvSource(f), tmp_path, log=lambda m: None)
    assert first.name == again.name == "tiny"
    assert again.stats() == first.stats()


def test_concurrent_builder_keeps_the_first_entry(tmp_path):
    """Two processes build the same key: the one that saves second keeps the first one's entry intact."""
    target = tmp_path / "entry"

    def save(obj, path):
        if not target.exists():  # simulate the other process finishing first, mid-way through our save
            target.mkdir()
            (target / "v").write_text("theirs")
        path.mkdir()
        (path / "v").write_text(obj)

    assert build_cached(target, lambda: "ours", save, lambda p: (p / "v").read_text()) == "ours"
    assert (target / "v").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]  # no staging leftovers
