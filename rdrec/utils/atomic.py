"""Write a file or a directory so that readers see all of it or none of it.

Both writers stage beside the target under a name that says who is writing it::

    .<name>.staging.<pid>.<random>.<host>

and rename it into place when done (``os.replace``). A writer killed with ``kill -9`` leaves its staging entry
behind; the next writer into the same directory removes it (:func:`remove_dead_staging`): only entries of this
host whose process is gone, so a concurrent writer that is still alive keeps its staging entry.

``atomic_dir(final, seal=True)`` also writes ``CHECKSUMS.sha256`` last (the sha256 of every file it holds, in
``sha256sum`` format), which :func:`rdrec.utils.integrity.verify_dir` checks on load.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_STAGING = re.compile(r"\.staging\.(?P<pid>\d+)\.[0-9a-f]{8}\.(?P<host>[A-Za-z0-9_-]+)$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def staging_path(final: str | Path) -> Path:
    """A fresh staging name beside ``final`` that :func:`remove_dead_staging` can attribute to this process."""
    final = Path(final)
    return final.parent / f".{final.name}.staging.{os.getpid()}.{uuid.uuid4().hex[:8]}.{_host()}"


def remove_dead_staging(directory: str | Path) -> list[Path]:
    """Remove the staging files and directories in ``directory`` left by writers of this host that are gone."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    host = _host()
    for entry in directory.iterdir():
        m = _STAGING.search(entry.name)
        if m is None or not entry.name.startswith(".") or m["host"] != host or process_alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _staging_dir(beside: Path) -> Path:
    """A fresh staging directory beside ``beside``, after removing those that dead writers left there."""
    beside.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(beside.parent)
    tmp = staging_path(beside)
    tmp.mkdir(mode=0o755)
    return tmp


@contextmanager
def atomic_dir(final: str | Path, seal: bool = False) -> Iterator[Path]:
    """Yield a staging dir beside ``final``; on success it replaces ``final`` by a rename, on error it is removed.

    ``seal``: write ``CHECKSUMS.sha256`` (every file's sha256) last, for :func:`rdrec.utils.integrity.verify_dir`.
    """
    final = Path(final)
    tmp = _staging_dir(final)
    try:
        yield tmp
        if seal:
            from rdrec.utils.integrity import seal_dir

            seal_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def scratch_dir(beside: str | Path) -> Iterator[Path]:
    """A work dir named as staging beside ``beside`` (a download, an assembly), always removed afterwards; one
    left by a killed process is removed by the next writer into the same directory."""
    tmp = _staging_dir(Path(beside))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(final: str | Path, mode: str = "w", encoding: str | None = "utf-8", fsync: bool = True) -> Iterator[IO]:
    """Yield a file open on a staging name beside ``final``; on success it is flushed, fsynced and renamed onto
    ``final`` (then the directory is fsynced); on error it is removed and ``final`` is left as it was.

    ``mode``: ``"w"`` (text) or ``"wb"`` (bytes). The file gets the usual mode (0666 less the umask)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file(mode): expected 'w' or 'wb', got {mode!r}")
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(final.parent)
    tmp = staging_path(final)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **({"encoding": encoding} if mode == "w" else {})) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(final.parent)


def atomic_write_text(final: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with atomic_file(final, "w", encoding=encoding) as f:
        f.write(text)
    return Path(final)


def atomic_write_bytes(final: str | Path, data: bytes) -> Path:
    with atomic_file(final, "wb") as f:
        f.write(data)
    return Path(final)


def atomic_tar(final: str | Path, base: str | Path, files: list[Path], contents: dict[str, bytes] | None = None) -> Path:
    """Write the tar.gz ``final`` holding ``files`` (named relative to ``base``) and ``contents`` (name → bytes:
    members made in memory, dated 0), whole or not at all. Equal inputs give equal bytes (no time or temporary name
    in the gzip header, owners left out), so an archive rewritten from unchanged files is unchanged in git. A member
    whose bytes equal an earlier one's is stored as a hard link to it (a run's ``last.ckpt`` and the epoch checkpoint
    written at the same moment are stored once)."""
    import gzip
    import hashlib
    import io
    import tarfile

    def anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    seen: dict[bytes, str] = {}

    def add(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes) -> None:
        digest = hashlib.sha256(data).digest()
        if digest in seen:
            info.type, info.linkname, info.size = tarfile.LNKTYPE, seen[digest], 0
            tar.addfile(info)
        else:
            seen[digest] = info.name
            tar.addfile(info, io.BytesIO(data))

    with atomic_file(final, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for path in files:
            data = Path(path).read_bytes()
            info = anonymous(tar.gettarinfo(path, arcname=str(Path(path).relative_to(base))))
            info.size = len(data)  # what was read, should the file grow meanwhile (an evaluation journal)
            add(tar, info, data)
        for name, data in (contents or {}).items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            add(tar, info, data)
    return Path(final)


def extract_missing(archive: str | Path, into: str | Path) -> list[str]:
    """Unpack the tar ``archive`` into ``into``, keeping every file that is there already (what a run wrote since
    the archive was made is newer); returns the names unpacked. Names that would leave ``into`` are refused. A
    member stored as a hard link (``atomic_tar``) is unpacked as a copy of the bytes it names in the archive, never
    linked to a file on disk (which may be newer)."""
    import tarfile

    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if not (into / m.name).exists()]
        tar.extractall(into, members=[m for m in members if not m.islnk()], filter="data")
        for member in (m for m in members if m.islnk()):
            tarfile.data_filter(member, str(into))  # refuses a name or link that leaves ``into``
            with tar.extractfile(member) as src, atomic_file(into / member.name, "wb") as dst:
                dst.write(src.read())
    return [m.name for m in members]


def fsync_dir(path: str | Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a process we may not signal counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
