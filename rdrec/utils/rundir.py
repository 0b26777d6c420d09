"""Who owns a run directory: a marker written when a run starts, checked before its results are written.

Run directories are named by the microsecond and the process id (conf/hydra/default.yaml), so two runs never get
the same one by accident; the marker guards the rest (two runs pointed at one ``hydra.run.dir``, a rerun into a
finished run). ``claim`` writes ``<run dir>/.rdrec-run.json`` with this job's id; ``check_owner`` (called by
``rdrec.utils.report.write_metrics``) refuses to write results into a directory whose marker names another job.
A resumed run continues the run it resumes, so it takes the marker over (``claim(..., resume=True)``).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

from rdrec.errors import DataError
from rdrec.utils.atomic import atomic_write_text, process_alive

MARKER = ".rdrec-run.json"

_OWN: dict[str, str] = {}  # resolved run dir -> id of the job of this process that claimed it


class RunDirError(DataError):
    """The run directory belongs to another run (one line: the entry points print it as they print bad input)."""



def read_marker(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / MARKER).read_text())
    except (FileNotFoundError, ValueError):
        return None


def claim(run_dir: str | Path, resume: bool = False) -> str:
    """Make this job the owner of ``run_dir`` and return its id.

    Refused when another live process owns it, or (unless resuming) when it already holds another run's
    results (``metrics.json``) or checkpoints to resume. A dead run's directory without results is taken over."""
    run_dir = Path(run_dir)
    own = _OWN.get(str(run_dir.resolve()))
    if own is not None and (read_marker(run_dir) or {}).get("id") == own:
        return own  # claimed already by this job (before Hydra wrote its config, see rdrec/cli/resume.py)
    run_dir.mkdir(parents=True, exist_ok=True)
    job = {"id": uuid.uuid4().hex, "pid": os.getpid(), "host": socket.gethostname(),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = run_dir / MARKER
    try:  # the common case: a fresh directory; two simultaneous claims race safely (see _create_whole)
        _create_whole(path, json.dumps(job) + "\n")
    except FileExistsError:
        other = read_marker(run_dir) or {}
        if (other.get("host") == job["host"] and isinstance(other.get("pid"), int) and other["pid"] != job["pid"]
                and process_alive(other["pid"]) and other.get("id") not in _OWN.values()):
            raise RunDirError(f"run directory {run_dir} is in use by another run (pid {other['pid']}, started "
                              f"{other.get('started', '?')}); give this run its own hydra.run.dir") from None
        if not resume and (run_dir / "metrics.json").exists():
            raise RunDirError(f"run directory {run_dir} already holds the results of another run (metrics.json); "
                              "give this run its own hydra.run.dir, or delete that directory") from None
        if not resume and (run_dir / "checkpoints" / "last.ckpt").exists():
            raise RunDirError(f"run directory {run_dir} holds an unfinished run; continue it with resume={run_dir} "
                              "(or delete the directory to start over)") from None
        if resume:
            job["resumes"] = other.get("id")
        atomic_write_text(path, json.dumps(job) + "\n")
    _OWN[str(run_dir.resolve())] = job["id"]
    return job["id"]


def _create_whole(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``, or raise ``FileExistsError``; no reader ever sees it empty or half
    written. (Creating it with O_EXCL and writing after left a moment in which a second claim read an empty
    marker, took it for a dead run's and took the directory over.) The text goes to a private file first, which
    is then hard-linked to ``path``: a link, like O_EXCL, fails when ``path`` exists."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    atomic_write_text(tmp, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: O_EXCL, then the write (the old, narrower race)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    finally:
        tmp.unlink(missing_ok=True)


def check_owner(run_dir: str | Path) -> None:
    """Raise ``RunDirError`` unless ``run_dir`` has no marker or its marker names a job of this process that
    claimed it. Directories no run claimed (e.g. ``rdrec-generate``'s) pass."""
    run_dir = Path(run_dir)
    marker = read_marker(run_dir)
    if marker is None and not (run_dir / MARKER).exists():
        return
    own = _OWN.get(str(run_dir.resolve()))
    if marker is None or marker.get("id") != own:
        who = f"pid {marker.get('pid')}, started {marker.get('started')}" if marker else "an unreadable marker"
        raise RunDirError(f"refusing to write results into {run_dir}: it now belongs to another run ({who}); "
                          "this run's results are not written")
