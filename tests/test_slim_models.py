"""SLIM's fusion and matching models: zero text is exactly the backbone; text changes scores; bad tables fail."""

from __future__ import annotations

import pytest
import torch

from rdrec.models.gru4rec import GRU4Rec
from rdrec.models.sasrec import SASRec
from rdrec.methods.slim.fusion import UNKNOWN_END, RationaleTable, SlimFusion, SlimMatching, TextFusion, target_index
from rdrec.models.srgnn import SRGNN

N_ITEMS, N_USERS, E = 30, 12, 8


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(1, N_ITEMS + 1, (5, 9), generator=g)
    history[0, :6] = 0  # left padding
    history[1, :3] = 0
    users = torch.tensor([1, 2, 5, 7, N_USERS])
    windows = torch.randint(1, N_ITEMS + 1, (5, 10), generator=g)
    windows[2, :4] = 0
    return history, users, windows


@pytest.mark.parametrize("backbone_cls", [SASRec, GRU4Rec, SRGNN])
def test_zero_text_vectors_give_exactly_the_backbone_scores(backbone_cls):
    torch.manual_seed(0)
    backbone = backbone_cls(num_items=N_ITEMS).eval()
    fusion = SlimFusion(backbone, torch.zeros(N_USERS + 1, E), torch.zeros(N_ITEMS + 1, E)).eval()
    # the fusion layers are not at their identity init: the text path must vanish by construction, not by luck
    with torch.no_grad():
        for p in fusion.parameters():
            if not any(p is q for q in backbone.parameters()):
                p.normal_()
    history, users, windows = batch()
    cands = torch.randint(1, N_ITEMS + 1, (5, 7))
    assert torch.equal(fusion.score_all(history, users), backbone.score_all(history, users))
    assert torch.equal(fusion.score_candidates(history, cands, users), backbone.score_candidates(history, cands, users))
    hidden_f, targets_f = fusion.training_pairs(windows, users, ends=torch.full((5,), 10))
    hidden_b, targets_b = backbone.training_pairs(windows, users)
    assert torch.equal(hidden_f, hidden_b) and torch.equal(targets_f, targets_b)

    # real text changes the scores, on both sides
    fusion.set_text(user_text=torch.randn(N_USERS + 1, E))
    assert not torch.equal(fusion.score_all(history, users), backbone.score_all(history, users))
    fusion.set_text(user_text=torch.zeros(N_USERS + 1, E), item_text=torch.randn(N_ITEMS + 1, E))
    assert not torch.equal(fusion.score_all(history, users), backbone.score_all(history, users))


def test_a_user_without_rationale_is_scored_like_the_item_text_only_model():
    torch.manual_seed(0)
    backbone = SASRec(num_items=N_ITEMS).eval()
    user_text = torch.randn(N_USERS + 1, E)
    user_text[5] = 0.0  # user 5 has no rationale
    fusion = SlimFusion(backbone, user_text, torch.randn(N_ITEMS + 1, E)).eval()
    item_only = SlimFusion(backbone, None, fusion.item_text, text_dim=E, use_user_text=False).eval()
    item_only.item_fusion.load_state_dict(fusion.item_fusion.state_dict())
    history, users, _ = batch()
    full, ref = fusion.score_all(history, users), item_only.score_all(history, users)
    assert torch.equal(full[2], ref[2])  # users[2] == 5
    assert not torch.equal(full[0], ref[0])
    # a user id beyond the table (no rationale was generated for it) is treated the same way
    beyond = fusion.score_all(history[:1], torch.tensor([N_USERS + 50]))
    assert torch.equal(beyond, item_only.score_all(history[:1], torch.tensor([N_USERS + 50])))


def test_switches_off_mean_no_text_parameters_and_backbone_scores():
    backbone = GRU4Rec(num_items=N_ITEMS).eval()
    plain = SlimFusion(backbone, torch.randn(N_USERS + 1, E), torch.randn(N_ITEMS + 1, E),
                       use_user_text=False, use_item_text=False).eval()
    assert plain.user_fusion is None and plain.item_fusion is None
    history, users, _ = batch()
    assert torch.equal(plain.score_all(history, users), backbone.score_all(history, users))


def test_text_fusion_is_projection_plus_linear_fusion_and_identity_at_zero():
    layer = TextFusion(E, 4)
    v = torch.randn(3, 4)
    assert torch.equal(layer(v, torch.zeros(3, E)), v)
    t = torch.randn(3, E)
    p = t @ layer.project.weight.T
    expected = v + torch.cat([p, v * p], -1) @ layer.fuse.weight.T
    torch.testing.assert_close(layer.eval()(v, t), expected)


def test_bad_text_tables_fail_clearly():
    backbone = SASRec(num_items=N_ITEMS)
    with pytest.raises(ValueError, match="expected 31 rows"):
        SlimFusion(backbone, None, torch.zeros(N_ITEMS, E))
    fusion = SlimFusion(backbone, None, torch.zeros(N_ITEMS + 1, E))
    with pytest.raises(ValueError, match="expected 31 rows"):
        fusion.set_text(item_text=torch.zeros(5, E))
    with pytest.raises(ValueError, match="needs the users"):
        fusion.user_embedding(torch.ones(2, 3, dtype=torch.long))


def test_id_agnostic_matching_scores_by_text_only_and_gives_no_credit_without_rationale():
    torch.manual_seed(0)
    model = SlimMatching(N_ITEMS, E, hidden_size=6, num_users=N_USERS).eval()
    item_text = torch.randn(N_ITEMS + 1, E)
    user_text = torch.randn(N_USERS + 1, E)
    user_text[5] = 0.0
    model.set_text(user_text, item_text)
    history, users, windows = batch()
    scores = model.score_all(history, users)
    # no ID embeddings: the history does not matter without history_text, only the rationale does
    assert torch.equal(scores, model.score_all(torch.zeros_like(history), users))
    expected = torch.nn.functional.cosine_similarity(
        model.user_proj(user_text[users]).unsqueeze(1), model.item_proj(item_text).unsqueeze(0), dim=-1) * 10.0
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)
    assert torch.all(scores[2] == 0)  # user 5: every item ties (the evaluator ranks ties pessimistically)
    hidden, targets = model.training_pairs(windows, users, ends=torch.full((5,), 10))
    assert hidden.shape == (5, 9, 6) and torch.equal(targets[2, :4], torch.zeros(4, dtype=torch.long))

    with_history = SlimMatching(N_ITEMS, E, hidden_size=6, num_users=N_USERS, history_text=True).eval()
    with_history.set_text(user_text, item_text)
    assert not torch.equal(with_history.score_all(history, users), with_history.score_all(history.flip(0), users))


def test_rationale_table_picks_the_latest_window_ending_at_or_before_each_target():
    table = RationaleTable(text_dim=2, num_users=3)
    text = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    # user 1: rows 2 (window ends at 5) and 1 (ends at 2), given out of order; user 2: row 3, window unknown
    rows = torch.tensor([[0, 0], [2, 1], [3, 0], [0, 0]])
    ends = torch.tensor([[UNKNOWN_END] * 2, [5, 2], [UNKNOWN_END] * 2, [UNKNOWN_END] * 2])
    table.set(text, rows, ends)
    index = target_index(torch.tensor([7, 7, 7]), 6)  # targets at 1..6 of windows ending at 7
    assert index.tolist() == [[1, 2, 3, 4, 5, 6]] * 3
    picked = table.at(torch.tensor([1, 2, 3]), index, text)[..., 0]
    assert picked.tolist() == [[0, 1, 1, 1, 2, 2], [0] * 6, [0] * 6]
    assert table.latest(torch.tensor([1, 2, 3, 9]), text)[:, 0].tolist() == [2.0, 3.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="windows' ends"):
        SlimFusion(SASRec(num_items=N_ITEMS), torch.zeros(N_USERS + 1, E)).training_pairs(batch()[2], batch()[1])
