"""The layering (docs/architecture.md) is a contract: import-linter checks it, and a planted forbidden import
makes the check fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(root: Path) -> subprocess.CompletedProcess:
    """Run import-linter on the package found in ``root`` (a copy of the project, or the project itself)."""
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=300)


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "project"
    dst.mkdir()
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    shutil.copytree(ROOT / "rdrec", dst / "rdrec", ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_the_layering_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("where, line, broken", [
    ("rdrec/data/planted.py", "import rdrec.methods.delrec.module\n", "Layers"),            # shared layer -> method
    ("rdrec/methods/slim/planted.py", "import rdrec.methods.rdrec.tasks\n", "Methods never"),  # method -> method
    ("rdrec/models/planted.py", "import pytorch_lightning\n", "Models know nothing"),        # model -> Lightning
    ("rdrec/teacher/planted.py", "import rdrec.cli.train\n", "Layers"),                     # layer -> entry point
])
def test_a_planted_forbidden_import_breaks_the_contract(tmp_path, where, line, broken):
    project = _copy(tmp_path)
    (project / where).write_text(line)
    result = _lint(project)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and broken in result.stdout, result.stdout
