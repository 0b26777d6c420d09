"""Checksums that prove a written directory or file is whole: what was written is hashed (sha256) and checked
on load, so a truncated, bit-flipped or half-copied cache is found before anything reads it.

- ``seal_dir(dir)`` writes ``CHECKSUMS.sha256`` (``sha256sum`` format: ``<hex>  <relative path>`` per file), last;
  :func:`rdrec.utils.atomic.atomic_dir` calls it with ``seal=True``. ``sha256sum -c CHECKSUMS.sha256`` checks it
  by hand.
- ``verify_dir(dir)`` raises :class:`rdrec.errors.CorruptError` naming the first file that is missing or differs
  (or the missing manifest).
- ``move_aside(path)`` renames a corrupt entry to ``<name>.corrupt-<time>-<pid>`` beside it (kept for inspection,
  never read again) and returns the new path.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from rdrec.errors import CorruptError

MANIFEST = "CHECKSUMS.sha256"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal_dir(directory: str | Path) -> Path:
    """Write the manifest of every file under ``directory`` (sorted by path), after all of them."""
    directory = Path(directory)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    lines = [f"{sha256_file(p)}  {p.relative_to(directory).as_posix()}\n" for p in files]
    out = directory / MANIFEST
    with open(out, "w", encoding="utf-8") as f:
        f.write("".join(lines))
        f.flush()
        os.fsync(f.fileno())
    return out


def verify_dir(directory: str | Path) -> None:
    """Check every file the manifest lists; raise ``CorruptError`` at the first that is missing or differs."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise CorruptError(path=directory, field=MANIFEST, expected="a checksum manifest written last",
                           got="none (an unfinished copy, or written by an older rdrec)")
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CorruptError(path=manifest, expected="a readable checksum manifest", got=str(err)) from None
    if not text.strip():
        raise CorruptError(path=manifest, expected="at least one checksum", got="an empty manifest")
    for n, line in enumerate(text.splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise CorruptError(path=manifest, line=n, expected="'<sha256>  <file>'", got=line)
        target = directory / name
        if not target.is_file():
            raise CorruptError(path=target, field="sha256", expected=digest[:16], got="missing file")
        got = sha256_file(target)
        if got != digest:
            raise CorruptError(path=target, field="sha256", expected=digest[:16], got=got[:16])


def move_aside(path: str | Path) -> Path:
    path = Path(path)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, aside)
    return aside
