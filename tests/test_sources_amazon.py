"""Amazon sources: raw 2014/2018 dumps and P5's layout, on fixtures written in the published formats."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import pandas as pd
import pytest

from rdrec.data.canonical import CanonicalDataset
from rdrec.errors import DataError
from rdrec.data.sources.amazon_p5 import AmazonP5
from rdrec.data.sources.amazon_raw import AmazonReviews

SHARED_BEAUTY = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon-p5" / "beauty"


def write_lines(path: Path, lines: list[str], gz: bool) -> Path:
    text = "".join(line + "\n" for line in lines)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ---- raw dumps ----------------------------------------------------------------------------------------------
# 2014 5-core reviews are strict JSON; 2014 metadata is Python repr (single quotes).
REVIEWS_2014 = [
    json.dumps({"reviewerID": "A1YJEY40YUW4SE", "asin": "7806397051", "reviewerName": "Andrea", "helpful": [3, 4],
                "reviewText": "Very oily and creamy. Not at all what I expected.", "overall": 1.0,
                "summary": "Don't waste your money", "unixReviewTime": 1391040000, "reviewTime": "01 30, 2014"}),
    json.dumps({"reviewerID": "A60XNB876KYML", "asin": "7806397051", "reviewerName": "Jessica H.", "helpful": [1, 1],
                "reviewText": "This palette was a decent price.", "overall": 3.0, "summary": "Ok Palette!",
                "unixReviewTime": 1397779200, "reviewTime": "04 18, 2014"}),
    json.dumps({"reviewerID": "A1YJEY40YUW4SE", "asin": "9759091062", "helpful": [0, 0], "reviewText": "",
                "overall": 4.0, "summary": "Works", "unixReviewTime": 1391040000, "reviewTime": "01 30, 2014"}),
]
META_2014 = [
    repr({"asin": "7806397051", "title": "Oil Free Cleansing Cream", "price": 4.99,
          "imUrl": "http://ecx.images-amazon.com/images/I/41.jpg",
          "related": {"also_bought": ["B0015"], "also_viewed": ["B003"]}, "salesRank": {"Beauty": 402875},
          "categories": [["Beauty", "Skin Care", "Face"], ["Beauty", "Makeup"]], "brand": "Nivea",
          "description": "A cleansing cream that doesn't dry your skin."}),
    repr({"asin": "0000000000", "title": "Not in reviews", "categories": [["Beauty"]]}),
    repr({"asin": "9759091062", "categories": [["Beauty", "Skin Care"]], "salesRank": {"Beauty": 1}}),
]
REVIEWS_2018 = [
    json.dumps({"overall": 5.0, "verified": True, "reviewTime": "10 17, 2015", "reviewerID": "A1HP7NVNPFMA4N",
                "asin": "0700026657", "reviewerName": "Ambrosia075", "reviewText": "This game is a bit hard to get the hang of.",
                "summary": "but when you do it's great.", "unixReviewTime": 1445040000, "vote": "2",
                "style": {"Format:": " Video Game"}}),
    json.dumps({"overall": 4.0, "verified": False, "reviewTime": "07 27, 2015", "reviewerID": "A1JGAP0185YJI6",
                "asin": "0700026657", "reviewText": "I played it a while but it was alright.", "summary": "But in spite of that",
                "unixReviewTime": 1437955200}),
]
META_2018 = [
    json.dumps({"category": ["Video Games", "PC", "Games"], "tech1": "", "description": ["Anno 2070 is a city builder.", "Build the future."],
                "fit": "", "title": "Anno 2070", "also_buy": ["B00JVY2M0C"], "image": [], "tech2": "",
                "brand": "by\n    \n    Ubisoft", "feature": [], "rank": [">#1,234 in Video Games"], "also_view": [],
                "main_cat": "Video Games", "similar_item": "", "date": "November 1, 2011", "price": "$12.99",
                "asin": "0700026657"}),
]


@pytest.mark.parametrize("gz", [False, True])
def test_amazon_2014_reviews_and_literal_meta(tmp_path, gz):
    ext = ".json.gz" if gz else ".json"
    reviews = write_lines(tmp_path / f"reviews_Beauty_5{ext}", REVIEWS_2014, gz)
    meta = write_lines(tmp_path / f"meta_Beauty{ext}", META_2014, gz)
    ds = AmazonReviews(str(reviews), str(meta), name="beauty").load()
    inter = ds.interactions
    assert inter[["user_id", "item_id"]].values.tolist() == [
        ["A1YJEY40YUW4SE", "7806397051"], ["A60XNB876KYML", "7806397051"], ["A1YJEY40YUW4SE", "9759091062"]]
    assert inter["timestamp"].tolist() == [1391040000.0, 1397779200.0, 1391040000.0]
    assert inter["rating"].tolist() == [1.0, 3.0, 4.0]
    assert inter["review"].tolist() == ["Very oily and creamy. Not at all what I expected.",
                                        "This palette was a decent price.", None]
    items = ds.items.set_index("item_id")
    assert "0000000000" not in items.index  # metadata only for reviewed items
    cream = items.loc["7806397051"]
    assert (cream["title"], cream["brand"]) == ("Oil Free Cleansing Cream", "Nivea")
    assert cream["categories"] == ["Beauty", "Skin Care", "Face", "Makeup"]
    assert cream["description"] == "A cleansing cream that doesn't dry your skin."
    assert pd.isna(cream["year"])
    assert items.loc["9759091062", "title"] == ""


@pytest.mark.parametrize("gz", [False, True])
def test_amazon_2018_reviews_and_meta(tmp_path, gz):
    ext = ".json.gz" if gz else ".json"
    reviews = write_lines(tmp_path / f"Video_Games_5{ext}", REVIEWS_2018, gz)
    meta = write_lines(tmp_path / f"meta_Video_Games{ext}", META_2018, gz)
    ds = AmazonReviews(str(reviews), str(meta), name="games", summary=True).load()
    assert ds.interactions["review"].tolist() == [
        "but when you do it's great. This game is a bit hard to get the hang of.",
        "But in spite of that. I played it a while but it was alright.",
    ]
    anno = ds.items.set_index("item_id").loc["0700026657"]
    assert (anno["title"], anno["brand"], anno["year"]) == ("Anno 2070", "Ubisoft", 2011)
    assert anno["categories"] == ["Video Games", "PC", "Games"]
    assert anno["description"] == "Anno 2070 is a city builder. Build the future."


def test_amazon_broken_line_names_file_and_line(tmp_path):
    lines = REVIEWS_2014[:2] + ['{"reviewerID": "A2", "asin": ']
    path = write_lines(tmp_path / "reviews_Food_5.json", lines, gz=False)
    with pytest.raises(DataError) as err:
        AmazonReviews(str(path)).load()
    msg = str(err.value)
    assert "reviews_Food_5.json:3" in msg and "expected one JSON object or Python dict literal per line" in msg


def test_amazon_missing_required_field_names_it(tmp_path):
    bad = json.loads(REVIEWS_2014[1])
    del bad["unixReviewTime"]
    path = write_lines(tmp_path / "reviews_Home_5.json.gz", [REVIEWS_2014[0], json.dumps(bad)], gz=True)
    with pytest.raises(DataError) as err:
        AmazonReviews(str(path)).load()
    msg = str(err.value)
    assert "reviews_Home_5.json.gz:2" in msg and "field 'unixReviewTime'" in msg and "unix time" in msg


def test_amazon_meta_without_asin_names_it(tmp_path):
    reviews = write_lines(tmp_path / "r.json", REVIEWS_2014, gz=False)
    meta = write_lines(tmp_path / "meta.json", [META_2014[0], repr({"title": "no asin"})], gz=False)
    with pytest.raises(DataError) as err:
        AmazonReviews(str(reviews), str(meta)).load()
    assert "meta.json:2" in str(err.value) and "field 'asin'" in str(err.value)


def test_amazon_missing_file(tmp_path):
    with pytest.raises(DataError) as err:
        AmazonReviews(str(tmp_path / "reviews_Grocery_5.json.gz")).files()
    assert "reviews_Grocery_5.json.gz" in str(err.value) and "no such file" in str(err.value)


# ---- P5 layout ------------------------------------------------------------------------------------------------
USERS = {"1": "A1YJEY40YUW4SE", "2": "A60XNB876KYML", "3": "A3G6XNM240RMWA"}
ITEMS = {"1": "7806397051", "2": "9759091062", "3": "9788072216", "4": "B004756YJA", "5": "B0020YLEYK"}


def write_p5(root: Path, name: str = "beauty") -> Path:
    """P5's own layout (jeykigung/P5 preprocess): sequential_data.txt, negative_samples.txt, all four maps,
    attribute maps, review_splits.pkl and a 2014-style meta.json.gz."""
    d = root / name
    d.mkdir(parents=True)
    (d / "sequential_data.txt").write_text("1 1 2 3 4\n2 5 2 3\n3 4 5 2 1 3\n", encoding="utf-8")
    (d / "negative_samples.txt").write_text("1 5\n2 1 4\n", encoding="utf-8")
    maps = {
        "user2id": {v: k for k, v in USERS.items()}, "item2id": {v: k for k, v in ITEMS.items()},
        "id2user": USERS, "id2item": ITEMS,
        "attribute2id": {"Skin Care": 1, "Nivea": 2}, "id2attribute": {"1": "Skin Care", "2": "Nivea"},
        "attributeid2num": {"1": 3, "2": 1},
    }
    (d / "datamaps.json").write_text(json.dumps(maps), encoding="utf-8")
    review = {"reviewerID": "A60XNB876KYML", "asin": "9759091062", "reviewerName": "Jessica H.", "helpful": [0, 0],
              "reviewText": "Smells great and lasts.", "overall": 5.0, "summary": "Love it", "unixReviewTime": 1397779200,
              "reviewTime": "04 18, 2014", "explanation": "smells great", "feature": "smell"}
    review2 = {"reviewerID": "A1YJEY40YUW4SE", "asin": "B004756YJA", "reviewText": "Too oily.", "overall": 2.0,
               "summary": "meh", "unixReviewTime": 1391040000, "reviewTime": "01 30, 2014"}
    splits = {"train": [review], "val": [], "test": [review2], "train_indices": [0], "val_indices": [], "test_indices": [1]}
    with open(d / "review_splits.pkl", "wb") as f:
        pickle.dump(splits, f, protocol=pickle.HIGHEST_PROTOCOL)
    with gzip.open(d / "meta.json.gz", "wt", encoding="utf-8") as f:
        f.write(META_2014[0] + "\n")
    return d


def test_p5_original_layout(tmp_path):
    write_p5(tmp_path)
    ds = AmazonP5(str(tmp_path), "beauty", trust_pickles=True).load()
    assert ds.name == "beauty"
    inter = ds.interactions
    u1 = inter[inter["user_id"] == "A1YJEY40YUW4SE"]
    assert u1["item_id"].tolist() == ["7806397051", "9759091062", "9788072216", "B004756YJA"]
    assert u1["timestamp"].tolist() == [0.0, 1.0, 2.0, 3.0]  # position within the user's line
    assert len(inter) == 4 + 3 + 5
    # review_splits.pkl: reviewText and overall land on their (user, item) interaction, its split ignored
    row = inter[(inter["user_id"] == "A60XNB876KYML") & (inter["item_id"] == "9759091062")].iloc[0]
    assert (row["review"], row["rating"]) == ("Smells great and lasts.", 5.0)
    row = inter[(inter["user_id"] == "A1YJEY40YUW4SE") & (inter["item_id"] == "B004756YJA")].iloc[0]
    assert (row["review"], row["rating"]) == ("Too oily.", 2.0)
    assert inter["review"].notna().sum() == 2
    assert ds.extras["explanations"].to_dict("records") == [
        {"user_id": "A60XNB876KYML", "item_id": "9759091062", "explanation": "smells great", "feature": "smell"}]
    neg = ds.extras["negatives"].set_index("user_id")["item_ids"]
    assert neg["A60XNB876KYML"] == ["7806397051", "B004756YJA"] and neg["A1YJEY40YUW4SE"] == ["B0020YLEYK"]
    assert ds.items.set_index("item_id").loc["7806397051", "title"] == "Oil Free Cleansing Cream"
    # extras (with list columns) survive the Arrow cache round trip
    ds.save(tmp_path / "cache")
    back = CanonicalDataset.load(tmp_path / "cache", name="beauty")
    assert list(back.extras["negatives"].set_index("user_id").loc["A60XNB876KYML", "item_ids"]) == ["7806397051", "B004756YJA"]


def test_p5_rdrec_layout(tmp_path):
    """RDRec/POD: sequential.txt, negative.txt, only id2user/id2item, explanation.json with int indices."""
    d = tmp_path / "sports"
    d.mkdir()
    (d / "sequential.txt").write_text("1 1 2 3\n2 2 3 1 2\n", encoding="utf-8")
    (d / "negative.txt").write_text("1 4 5\n2 4\n", encoding="utf-8")
    (d / "datamaps.json").write_text(json.dumps({"id2user": USERS, "id2item": ITEMS}, indent=4), encoding="utf-8")
    exp = {
        "train": [{"user": 2, "item": 2, "explanation": "fits well", "feature": "fit"},
                  {"user": 2, "item": 2, "explanation": "still fits", "feature": "fit"}],
        "val": [{"user": 1, "item": 3, "explanation": "great grip", "feature": "grip"}],
        "test": [{"user": 1, "item": 1, "explanation": "too small", "feature": "size"}],
    }
    (d / "explanation.json").write_text(json.dumps(exp), encoding="utf-8")
    ds = AmazonP5(str(tmp_path), "sports").load()
    inter = ds.interactions
    assert inter[inter["user_id"] == "A60XNB876KYML"]["review"].tolist() == ["fits well", None, None, "still fits"]
    assert inter[inter["user_id"] == "A1YJEY40YUW4SE"]["review"].tolist() == ["too small", None, "great grip"]
    assert inter["rating"].isna().all()
    assert len(ds.extras["explanations"]) == 4
    assert ds.extras["negatives"].set_index("user_id").loc["A1YJEY40YUW4SE", "item_ids"] == ["B004756YJA", "B0020YLEYK"]


@pytest.mark.parametrize("maps", [
    {"user2id": USERS, "item2id": ITEMS},  # the RDRec README's spelling: 'user2id' holding index → original
    {"user2id": {v: k for k, v in USERS.items()}, "item2id": {v: k for k, v in ITEMS.items()}},  # P5's own
])
def test_p5_map_direction_read_from_contents(tmp_path, maps):
    d = tmp_path / "toys"
    d.mkdir()
    (d / "sequential.txt").write_text("1 1 2\n", encoding="utf-8")
    (d / "datamaps.json").write_text(json.dumps(maps), encoding="utf-8")
    ds = AmazonP5(str(tmp_path), "toys").load()
    assert ds.interactions[["user_id", "item_id"]].values.tolist() == [
        ["A1YJEY40YUW4SE", "7806397051"], ["A1YJEY40YUW4SE", "9759091062"]]


def test_p5_missing_sequence_file(tmp_path):
    (tmp_path / "beauty").mkdir()
    with pytest.raises(DataError) as err:
        AmazonP5(str(tmp_path), "beauty").files()
    msg = str(err.value)
    assert "sequential_data.txt" in msg and "sequential.txt" in msg and str(tmp_path / "beauty") in msg


def test_p5_line_without_items(tmp_path):
    d = write_p5(tmp_path)
    (d / "sequential_data.txt").write_text("1 1 2 3\n2\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        AmazonP5(str(tmp_path), "beauty").load()
    msg = str(err.value)
    assert "sequential_data.txt:2" in msg and "field 'items'" in msg and "at least one item index" in msg


def test_p5_non_numeric_index(tmp_path):
    d = write_p5(tmp_path)
    (d / "sequential_data.txt").write_text("1 1 2 3\n2 5 B0020YLEYK 3\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        AmazonP5(str(tmp_path), "beauty").load()
    msg = str(err.value)
    assert "sequential_data.txt:2" in msg and "field 'item 2'" in msg and "integer index" in msg and "'B0020YLEYK'" in msg


def test_p5_index_not_in_datamaps(tmp_path):
    d = write_p5(tmp_path)
    (d / "negative_samples.txt").write_text("1 5\n2 99\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        AmazonP5(str(tmp_path), "beauty").load()
    msg = str(err.value)
    assert "negative_samples.txt:2" in msg and "field 'item 1'" in msg and "id2item" in msg and "99" in msg


def test_p5_explanation_record_without_user(tmp_path):
    d = tmp_path / "beauty"
    d.mkdir()
    (d / "sequential.txt").write_text("1 1 2\n", encoding="utf-8")
    (d / "explanation.json").write_text(json.dumps({"train": [{"item": 1, "explanation": "x"}], "val": [], "test": []}))
    with pytest.raises(DataError) as err:
        AmazonP5(str(tmp_path), "beauty").load()
    assert "explanation.json[train][0]" in str(err.value) and "field 'user'" in str(err.value)


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_BEAUTY.is_dir(), reason="../shared/data/amazon-p5/beauty not present")
def test_p5_real_beauty():
    ds = AmazonP5(str(SHARED_BEAUTY.parent), "beauty", trust_pickles=True).load()
    stats = ds.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (22363, 12101, 198502)
    assert stats["seq_len_q0"] >= 5  # 5-core
    first = ds.interactions.iloc[:5]
    assert first["user_id"].unique().tolist() == ["A1YJEY40YUW4SE"]  # line 1: user 1 → its reviewerID
    assert first["timestamp"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert ds.items["item_id"].str.len().eq(10).all()  # ASINs
