"""rdrec-data: statistics before/after filtering, export, and bad input reported without partial caches."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_ml100k_statistics_before_filtering(tmp_path, ml100k_root):
    out = run_cli("rdrec-data", ["data=ml100k", f"data.source.root={ml100k_root}",
                                 f"paths.data_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path).stdout
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| ")}
    assert (rows["users"], rows["items"], rows["interactions"]) == ("943", "1682", "100000")
    assert float(rows["density"]) == pytest.approx(100000 / (943 * 1682), abs=1e-6)


def test_export_writes_the_split_for_other_libraries(tmp_path):
    run_cli("rdrec-data", ["data=synthetic", "action=export", f"paths.data_dir={tmp_path}",
                           f"export.dir={tmp_path / 'export'}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    inter = pd.read_csv(next((tmp_path / "export").rglob("interactions.csv")))
    assert set(inter["split"]) == {"train", "valid", "test"}
    per_user = inter.groupby("user")["split"].value_counts().unstack(fill_value=0)
    assert (per_user["valid"] == 1).all() and (per_user["test"] == 1).all()
    assert list((tmp_path / "export").rglob("*.test.inter"))


def test_empty_after_filtering_is_one_clear_error_and_leaves_no_cache(tmp_path):
    with pytest.raises(AssertionError) as err:
        run_cli("rdrec-data", ["data=synthetic", "data.split.min_user_interactions=1000", f"paths.data_dir={tmp_path}",
                               f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert "min_user_interactions" in str(err.value) and "synthetic" in str(err.value)
    assert not list((tmp_path / "cache").rglob("prepared-*"))
