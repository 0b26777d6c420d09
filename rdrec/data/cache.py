"""Content-addressed caching of data stages: a fingerprint of the inputs names the cache entry.

A source's fingerprint covers its class, its config and, for each input file, name, size and mtime (ns).
Like ``make``, it does not read file contents: an edit that keeps both size and mtime goes unnoticed
(delete the cache entry to force a rebuild). Reading gigabytes of Amazon reviews on every run to hash
them would cost more than it protects.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rdrec.data.sources.base import Source

T = TypeVar("T")


def stable_hash(obj: object) -> str:
    """sha256 of a JSON rendering with sorted keys (non-JSON values by ``str``), so dict order is irrelevant."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def source_fingerprint(source: Source) -> str:
    cls = type(source)
    files = []
    for f in source.files():
        st = Path(f).stat()
        files.append([Path(f).name, st.st_size, st.st_mtime_ns])
    return stable_hash({"class": f"{cls.__module__}.{cls.__qualname__}", "config": source.config(), "files": files})


def build_cached(
    path: Path,
    build: Callable[[], T],
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
) -> T:
    """Load ``path`` if it exists; otherwise build, save and return the built object.

    ``save`` must be atomic (write a temp path, then rename), so a failing build or save leaves nothing
    at ``path`` and the next call simply builds again. The result is saved to a private staging name and
    renamed to ``path`` only if nobody else got there first: with several processes (DDP ranks each running
    the entry point) building the same entry at once, the first one wins and no reader ever sees an entry
    being replaced under it.
    """
    path = Path(path)
    if path.exists():
        return load(path)
    obj = build()
    staging = path.with_name(f".{path.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}")
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
