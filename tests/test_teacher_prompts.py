"""Prompt families: built from the training view only, the documented variants, tolerant parsing."""

from __future__ import annotations

import numpy as np
import pytest

from rdrec.teacher.prompts import ParseError, Subset
from tests.test_teacher_fixtures import families, synthetic_prepared


@pytest.fixture(scope="module")
def prepared_reviews(tmp_path_factory):
    return synthetic_prepared(tmp_path_factory.mktemp("p"), with_reviews=True)


@pytest.fixture(scope="module")
def prepared_plain(tmp_path_factory):
    return synthetic_prepared(tmp_path_factory.mktemp("q"), with_reviews=False)


def _held_out(prepared):
    inter = prepared.interactions
    held = inter[inter["split"] != "train"]
    titles = prepared.items.set_index("item")["title"]
    return held, titles


def test_rdrec_review_variant_one_prompt_per_training_review_and_no_held_out_text(prepared_reviews):
    fam = families()["rdrec"]
    view = prepared_reviews.train_view()
    items = fam.build(view, Subset())
    assert fam.resolve_variant(view) == "review"
    assert len(items) == len(view.reviews) and {i.kind for i in items} == {"interaction"}
    train_pairs = set(zip(view.reviews["user"], view.reviews["item"]))
    assert {(i.entity["user"], i.entity["item"]) for i in items} == train_pairs
    held, _ = _held_out(prepared_reviews)
    assert not train_pairs & set(zip(held["user"], held["item"]))
    # each prompt quotes exactly the review of its own (training) interaction
    review_of = {(u, i): r for u, i, r in zip(view.reviews["user"], view.reviews["item"], view.reviews["review"])}
    for item in items:
        quoted = item.question.split('"')[-2]
        assert quoted == review_of[(item.entity["user"], item.entity["item"])]


def test_rdrec_metadata_variant_uses_only_earlier_training_items(prepared_plain):
    fam = families(item_noun="movie")["rdrec"]
    view = prepared_plain.train_view()
    assert fam.resolve_variant(view) == "metadata"
    items = fam.build(view, Subset(users=5, interactions_per_user=3))
    assert len(items) == 15 and len({i.entity["user"] for i in items}) == 5
    titles = prepared_plain.items.set_index("item")["title"]
    held, _ = _held_out(prepared_plain)
    for item in items:
        user, pos = item.entity["user"], item.extra["position"]
        seq = view.sequences[user]
        assert seq[pos] == item.entity["item"] and pos >= len(seq) - 3  # the latest 3 training interactions
        prompt = item.question
        assert f'"{titles[item.entity["item"]]}"' in prompt and "movie" in prompt
        later = [titles[i] for i in seq[pos + 1:]]
        held_titles = [titles[i] for i in held[held["user"] == user]["item"]]
        shown = prompt.split("Next movie:")[0]
        # the history holds exactly the (at most history_len) earlier items, nothing later or held out
        for t in [titles[i] for i in seq[max(pos - fam.history_len, 0):pos]]:
            assert t in shown
        for t in later + held_titles:
            assert t not in shown or t in [titles[i] for i in seq[:pos]]


def test_slim_prompts_per_user_with_student_prompt(prepared_plain):
    fam = families()["slim"]
    view = prepared_plain.train_view()
    items = fam.build(view, Subset(users=7))
    assert [i.entity["user"] for i in items] == Subset(users=7).pick_users(view)
    titles = prepared_plain.items.set_index("item")["title"]
    for item in items:
        seq = view.sequences[item.entity["user"]]
        assert item.extra["history_items"] == [int(i) for i in seq[-fam.history_len:]]
        student = item.extra["student_prompt"]
        assert titles[seq[-1]] in student and titles[seq[-1]] in item.question
        assert "1." not in student  # simplified: no step instructions
        # one made-up example, then the question, then the prefilled opening of the answer
        assert [r for r, _ in item.messages] == ["system", "user", "assistant", "user", "assistant"]
        assert item.messages[-1][1] == "1. The user prefers"


def test_template_hash_changes_with_the_template_and_keys_stay_stable():
    a, b = families()["rdrec"], families(item_noun="movie")["rdrec"]
    assert a.template_hash("metadata") == families()["rdrec"].template_hash("metadata")
    assert a.template_hash("metadata") != b.template_hash("metadata")
    assert a.template_hash("metadata") != a.template_hash("review")


@pytest.mark.parametrize("text", [
    "1. The user prefers action movies.\n2. The item's attributes are explosions and car chases.",
    "**1.** The user prefers action movies.\n**2.** The item's attributes are explosions and car chases.\nHope this helps!",
    "1) The user prefers action movies. 2) The item's attributes are explosions and car chases.",
    "3. The user prefers action movies.\n4. The item's attributes are explosions and car chases.",
    "The user prefers action movies. The item's attributes are explosions and car chases.",
])
def test_rdrec_parser_is_tolerant(text):
    out = families()["rdrec"].parse(text)
    assert out == {"user_preference": "The user prefers action movies.",
                   "item_attribute": "The item's attributes are explosions and car chases."}


@pytest.mark.parametrize("text", [
    "",
    "I cannot help with that.",
    "1. The user prefers action movies.",  # one sentence
    "1. Yes.\n2. The item's attributes are explosions.",  # too short
    "1. The user likes it a lot.\n2. The user likes it a lot.",  # identical
])
def test_rdrec_parser_rejects_what_is_not_two_rationales(text):
    with pytest.raises(ParseError):
        families()["rdrec"].parse(text)


def test_slim_parser():
    fam = families()["slim"]
    out = fam.parse("Step 1: The user enjoys dramas and thrillers.\nStep 2: Recommend thrillers and crime.\n"
                    "Step 3: Recommend Heat and Se7en to the user.\n\nEnjoy!")
    assert out["preferences"] == "The user enjoys dramas and thrillers."
    assert out["items"] == "Recommend Heat and Se7en to the user."
    assert out["rationale"].splitlines()[1] == "2. Recommend thrillers and crime."
    with pytest.raises(ParseError):
        fam.parse("1. The user enjoys dramas.\n2. Recommend thrillers and crime.")
