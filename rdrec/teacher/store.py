"""The rationale store: append-only, crash-safe, one entry per key.

Layout::

    <dir>/STORE.json                      format version
    <dir>/segments/<ns>-r<rank>-<rand>.jsonl   one committed batch each; one JSON record per line

A batch of records is committed as one *segment*: written to a temp file in ``segments/``, flushed and
fsynced, renamed into place (``os.replace``, atomic on POSIX), then the directory is fsynced. A kill -9 at any
moment therefore leaves either the whole segment or none of it: the batch in flight is lost, nothing else, and
a staging file left behind is never read (and is removed by the next writer on the same host once its process
is gone; ``rdrec.utils.atomic``). Segments are never modified; ``compact`` merges them into one by the same
write-then-rename and only then deletes the merged ones.

Every record carries ``checksum`` = sha256 of its canonical JSON without that field; a record whose checksum
does not match (disk corruption, a hand edit), that is not valid UTF-8 or JSON, or a torn last line, is ignored
with a warning naming the segment and line, so its key counts as not done and is generated again. Two records with the same key (possible only transiently, between a compaction's rename
and its deletes, or when two writers raced) resolve to the earliest committed one: readers see each key once.

Keys (``make_key``) hash the dataset fingerprint, family, kind, entity, prompt-template hash, model id and
generation parameters (with the seed and the retry policy), so a changed template, model or parameter makes
new keys and never mixes with old entries; a re-run skips keys already present.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from rdrec.errors import DataError
from rdrec.utils.atomic import atomic_write_text, process_alive, remove_dead_staging

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SEGMENTS = "segments"


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def make_key(**parts) -> str:
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:32]


def record_checksum(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


class RationaleStore:
    def __init__(self, path: str | Path, rank: int = 0, create: bool = True):
        self.path = Path(path)
        self.rank = rank
        self.segments_dir = self.path / SEGMENTS
        meta = self.path / "STORE.json"
        if meta.is_file():
            try:
                version = json.loads(meta.read_text()).get("format_version")
            except json.JSONDecodeError:
                version = None
            if version != FORMAT_VERSION:
                raise DataError("rationale store written by another rdrec version", path=meta,
                                field="format_version", expected=str(FORMAT_VERSION), got=version)
        elif create:
            self.segments_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(meta, json.dumps({"format_version": FORMAT_VERSION}) + "\n")
        else:
            raise DataError("not a rationale store (no STORE.json)", path=self.path)
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps()
        self._index: dict[str, dict] | None = None
        self.corrupt: list[str] = []  # "<segment>:<line>" of records that failed their checksum
        self.duplicates = 0  # physical records shadowed by an earlier one with the same key

    # ---- reading -----------------------------------------------------------------------------------------
    def segment_files(self) -> list[Path]:
        return sorted(p for p in self.segments_dir.glob("*.jsonl") if not p.name.startswith("."))

    def reload(self) -> "RationaleStore":
        index: dict[str, dict] = {}
        self.corrupt, self.duplicates = [], 0
        for seg in self.segment_files():
            for n, record in _read_segment(seg, self.corrupt):
                if record["key"] in index:
                    self.duplicates += 1
                else:
                    index[record["key"]] = record
        if self.corrupt:
            log.warning("rationale store %s: %d record(s) are unreadable (not UTF-8, not JSON) or fail their checksum "
                        "and are ignored (first: %s); their keys will be generated again",
                        self.path, len(self.corrupt), self.corrupt[0])
        self._index = index
        return self

    @property
    def index(self) -> dict[str, dict]:
        if self._index is None:
            self.reload()
        return self._index

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def get(self, key: str) -> dict | None:
        return self.index.get(key)

    def records(self, keys: Iterable[str] | None = None) -> Iterator[dict]:
        if keys is None:
            yield from self.index.values()
        else:
            for key in keys:
                if key in self.index:
                    yield self.index[key]

    # ---- writing -----------------------------------------------------------------------------------------
    def append(self, records: list[dict]) -> Path | None:
        """Commit ``records`` as one segment (all or nothing); records whose key is already stored are dropped."""
        fresh, seen = [], set()
        for r in records:
            if r["key"] in self.index or r["key"] in seen:
                continue
            seen.add(r["key"])
            r = dict(r)
            r["checksum"] = record_checksum(r)
            fresh.append(r)
        if not fresh:
            return None
        name = f"{time.time_ns():020d}-r{self.rank:03d}-{uuid.uuid4().hex[:8]}.jsonl"
        target = self.segments_dir / name
        _atomic_write(target, "".join(canonical_json(r) + "\n" for r in fresh))
        for r in fresh:
            self.index[r["key"]] = r
        return target

    def compact(self) -> Path | None:
        """Merge all segments into one (the unique, valid records, in commit order)."""
        old = self.segment_files()
        if len(old) <= 1 and not self.duplicates and not self.corrupt:
            return old[0] if old else None
        self.reload()
        records = list(self.index.values())
        name = f"{time.time_ns():020d}-r{self.rank:03d}-compact-{uuid.uuid4().hex[:8]}.jsonl"
        # the merged segment sorts after the old ones: until they are deleted, readers still pick the old copies
        target = self.segments_dir / name
        _atomic_write(target, "".join(canonical_json(r) + "\n" for r in records))
        for seg in old:
            seg.unlink()
        _fsync_dir(self.segments_dir)
        self.reload()
        return target

    # ---- temp files ----------------------------------------------------------------------------------------
    def _remove_stale_temps(self) -> None:
        remove_dead_staging(self.segments_dir)  # staging files of killed writers (rdrec.utils.atomic)
        host = socket.gethostname()  # and the .tmp_<pid>_<rand>_<host> names older versions staged under
        for tmp in self.segments_dir.glob(".tmp_*"):
            try:
                _, pid, _rand, h = tmp.name.split("_", 3)
            except ValueError:
                continue
            if h == host and pid.isdigit() and not process_alive(int(pid)):
                tmp.unlink(missing_ok=True)


def _read_segment(path: Path, corrupt: list[str]) -> Iterator[tuple[int, dict]]:
    # bytes, decoded line by line: one undecodable record must not make the whole segment unreadable
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                record = json.loads(raw.decode("utf-8"))
                ok = isinstance(record, dict) and "key" in record and record.get("checksum") == record_checksum(record)
            except (UnicodeDecodeError, json.JSONDecodeError, TypeError):
                ok = False
            if ok:
                yield n, record
            else:
                corrupt.append(f"{path.name}:{n}")  # the warning names the store directory too


def _atomic_write(target: Path, text: str) -> None:
    atomic_write_text(target, text)  # staged, fsynced, renamed, directory fsynced


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

