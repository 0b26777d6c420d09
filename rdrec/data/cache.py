"""Content-addressed caching of data stages: a fingerprint of the inputs names the cache entry.

A source's fingerprint covers its class, its config and, for each input file, its name and the sha256 of its
bytes: the same data fetched into another directory, copied or ``touch``-ed gives the same fingerprint (so the
same split, candidate lists and rationale-store keys); one changed byte gives another. Hashing gigabytes of
Amazon reviews on every run would be slow, so the hashes are remembered in ``<cache_dir>/file-hashes.json`` by
(absolute path, size, mtime, ctime, inode) and a file is hashed again only when one of these changed. Like
``make``, that shortcut cannot see an edit that keeps all of them (delete the file to force re-hashing).

Cache entries are written sealed (``atomic_dir(seal=True)``: a sha256 manifest written last) and checked on
load: an entry that fails (:class:`rdrec.errors.CorruptError`) is moved aside with one warning and rebuilt.
Staging entries of builds killed midway are removed by the next build into the same directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rdrec.data.sources.base import Source
from rdrec.errors import CorruptError
from rdrec.utils.atomic import atomic_write_text, remove_dead_staging, staging_path
from rdrec.utils.integrity import move_aside, sha256_file

log = logging.getLogger(__name__)
HASHES = "file-hashes.json"

T = TypeVar("T")


def stable_hash(obj: object) -> str:
    """sha256 of a JSON rendering with sorted keys (non-JSON values by ``str``), so dict order is irrelevant."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def source_fingerprint(source: Source, cache_dir: str | Path | None = None) -> str:
    """sha256 of the source's class, config and (name, content sha256) of each input file. With ``cache_dir``,
    file hashes are remembered there (``file-hashes.json``) and reused while a file's stat is unchanged."""
    cls = type(source)
    paths = [Path(f) for f in source.files()]
    files = [[p.name, h] for p, h in zip(paths, file_hashes(paths, cache_dir))]
    return stable_hash({"class": f"{cls.__module__}.{cls.__qualname__}", "config": source.config(), "files": files})


def file_hashes(paths: list[Path], cache_dir: str | Path | None = None) -> list[str]:
    """The sha256 of each file; re-hashed only when its (size, mtime, ctime, inode) differs from the remembered one."""
    memo_path = Path(cache_dir) / HASHES if cache_dir is not None else None
    memo: dict = {}
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            memo = {}  # only a shortcut: a broken memo is re-hashed and rewritten
        if not isinstance(memo, dict):
            memo = {}
    out, changed = [], False
    for p in paths:
        st = p.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        key = str(p.resolve())
        entry = memo.get(key)
        if isinstance(entry, dict) and entry.get("stat") == stamp and isinstance(entry.get("sha256"), str):
            out.append(entry["sha256"])
            continue
        digest = sha256_file(p)
        memo[key] = {"stat": stamp, "sha256": digest}
        out.append(digest)
        changed = True
    if changed and memo_path is not None:
        atomic_write_text(memo_path, json.dumps(memo, indent=0, sort_keys=True) + "\n")
    return out


def build_cached(
    path: Path,
    build: Callable[[], T],
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
) -> T:
    """Load ``path`` if it exists; otherwise build, save and return the built object.

    A ``load`` that raises :class:`CorruptError` (the entry fails its checksum) moves the entry aside
    (``<name>.corrupt-<time>-<pid>``) with one warning, and the entry is built again. Staging entries of dead
    builders (killed midway) in the same directory are removed first.

    ``save`` must be atomic (write a temp path, then rename), so a failing build or save leaves nothing
    at ``path`` and the next call simply builds again. The result is saved to a private staging name and
    renamed to ``path`` only if nobody else got there first: with several processes (DDP ranks each running
    the entry point) building the same entry at once, the first one wins and no reader ever sees an entry
    being replaced under it.
    """
    path = Path(path)
    if path.exists():
        try:
            return load(path)
        except CorruptError as err:
            try:
                aside = move_aside(path)
            except FileNotFoundError:  # another process moved it aside first
                aside = None
            log.warning("cache entry %s is corrupt (%s); %s, rebuilding", path, err,
                        f"moved aside to {aside.name}" if aside else "already moved aside")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(path.parent)
    obj = build()
    staging = staging_path(path)
    try:
        save(obj, staging)
        try:
            os.rename(staging, path)  # a directory is never renamed onto an existing non-empty one
        except OSError:
            if not path.exists():
                raise
            # Another process saved the same key meanwhile: keep theirs (same inputs, same content).
    finally:
        _remove(staging)
    return obj


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink(missing_ok=True)
