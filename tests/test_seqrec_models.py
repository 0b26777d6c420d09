"""Behaviour of the conventional sequential recommenders as plain nn.Modules: shapes, scoring paths agree,
causal masking, left-padding invariance, no NaN on padding, training targets, checkpoint round trip, and
that each model can memorise a tiny dataset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rdrec.models import SRGNN, BERT4Rec, Caser, GRU4Rec, SASRec
from rdrec.models.layers import attention_mask

N_ITEMS, N_USERS, L = 40, 20, 8


@pytest.fixture(autouse=True)
def one_thread():
    """Tensors here are tiny: intra-op threads only add synchronisation (10x slower on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MODELS = {"sasrec": SASRec, "gru4rec": GRU4Rec, "caser": Caser, "bert4rec": BERT4Rec, "srgnn": SRGNN}
SIZES = {  # tiny, dropout off unless a test turns it on
    "sasrec": dict(hidden_size=16, num_layers=2, num_heads=2, inner_size=32, dropout=0.0, max_len=L),
    "gru4rec": dict(embedding_size=16, hidden_size=24, dropout=0.0),
    "caser": dict(embedding_size=16, window=3, num_horizontal=4, num_vertical=2, dropout=0.0),
    "bert4rec": dict(hidden_size=16, num_layers=2, num_heads=2, inner_size=32, dropout=0.0, max_len=L),
    "srgnn": dict(embedding_size=16, step=1),
}


def make(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return MODELS[name](num_items=N_ITEMS, num_users=N_USERS, **{**SIZES[name], **overrides})


ALL = ["sasrec", "gru4rec", "caser", "bert4rec", "srgnn"]
CAUSAL = ["sasrec", "gru4rec", "caser", "srgnn"]


def left_pad(seqs: list[list[int]], width: int) -> torch.Tensor:
    out = torch.zeros(len(seqs), width, dtype=torch.long)
    for row, seq in enumerate(seqs):
        seq = seq[-width:]
        if seq:
            out[row, width - len(seq):] = torch.tensor(seq)
    return out


def windows(seed: int = 1, batch: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Training windows [B, L+1] with varied amounts of left padding (row 0 full, last row empty)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [L + 1, 5, 3, 2, 1, 0][:batch]
    seqs = [torch.randint(1, N_ITEMS + 1, (n,), generator=g).tolist() for n in lengths]
    return left_pad(seqs, L + 1), torch.arange(len(seqs))


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_scoring_paths_agree(name):
    model = make(name).eval()
    items, users = windows()
    hidden, targets = model.training_pairs(items, users)
    assert hidden.shape == (items.size(0), L, model.hidden_size) and targets.shape == (items.size(0), L)
    assert model.item_embeddings().shape == (N_ITEMS + 1, model.hidden_size)
    bias = model.item_bias()
    assert bias is None or bias.shape == (N_ITEMS + 1,)

    history = items[:, 1:]
    assert model.user_embedding(history, users).shape == (items.size(0), model.hidden_size)
    full = model.score_all(history, users)
    assert full.shape == (items.size(0), N_ITEMS + 1)
    candidates = torch.randint(1, N_ITEMS + 1, (items.size(0), 7), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model.score_candidates(history, candidates, users), full.gather(1, candidates))
    flat_hidden, flat_targets = hidden.flatten(0, 1), targets.flatten()
    torch.testing.assert_close(model.score_pairs(flat_hidden, flat_targets),
                               model.scores(flat_hidden).gather(1, flat_targets[:, None])[:, 0])


@pytest.mark.parametrize("name", CAUSAL)
def test_training_hidden_at_last_position_is_the_user_embedding(name):
    """For next-item models the last training position predicts the item after the whole input history."""
    model = make(name).eval()
    items, users = windows()
    hidden, targets = model.training_pairs(items, users)
    labelled = targets[:, -1] > 0  # unlabelled positions may hold anything (SR-GNN skips them)
    assert labelled.sum() >= 3
    torch.testing.assert_close(hidden[labelled, -1], model.user_embedding(items[:, :-1], users)[labelled],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_mask_never_leaves_a_row_empty_nor_lets_padding_reach_real_items(causal):
    items = torch.tensor([[0, 0, 0, 0], [0, 0, 5, 6], [1, 2, 3, 4]])
    allowed = attention_mask(items, causal)[:, 0]  # [B, query, key]
    assert allowed.any(-1).all()  # every query attends to something: no all -inf row, no NaN on any kernel
    real = items > 0
    assert not (allowed & real[:, :, None] & ~real[:, None, :]).any()  # real queries see real keys only
    if causal:
        assert not allowed.triu(1).any()
    assert torch.equal(allowed[1, 3], torch.tensor([False, False, True, True]))


@pytest.mark.parametrize("name", CAUSAL)
def test_later_items_do_not_change_earlier_positions(name):
    model = make(name).eval()
    items, users = windows()
    hidden, _ = model.training_pairs(items, users)
    for t in (2, 5, L - 1):  # input column t
        changed = items.clone()
        changed[:, t] = changed[:, t] % N_ITEMS + 1  # a different real item (padding rows become real)
        hidden2, _ = model.training_pairs(changed, users)
        torch.testing.assert_close(hidden2[:, :t], hidden[:, :t], atol=1e-6, rtol=0)
        scores = model.scores(hidden)[:, :t]
        torch.testing.assert_close(model.scores(hidden2)[:, :t], scores, atol=1e-6, rtol=0)
        assert not torch.allclose(hidden2[0, t], hidden[0, t])  # the change is seen from position t on


def test_bert4rec_is_bidirectional_but_ignores_padding():
    model = make("bert4rec").eval()
    seq = torch.tensor([[0, 0, 0, 7, 8, 9, 10, 11]])
    base = model(seq)
    later = seq.clone()
    later[0, -1] = 12
    assert not torch.allclose(model(later)[0, 3], base[0, 3])  # a later item does inform an earlier position
    short = model(seq[:, 3:])  # the same items without padding
    torch.testing.assert_close(short, base[:, 3:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_left_padding_does_not_change_user_embeddings(name):
    model = make(name).eval()
    seq = [5, 17, 3, 29]  # shorter than every window here except Caser's (window 3)
    widths = [len(seq), len(seq) + 1, L - 1, L]
    per_width = [model.user_embedding(left_pad([seq], w), torch.tensor([4])) for w in widths]
    for emb in per_width[1:]:
        torch.testing.assert_close(emb, per_width[0], atol=1e-5, rtol=1e-5)
    # and inside one fixed-width batch: rows differ only by how much padding precedes their sequence
    batch = torch.stack([left_pad([seq], L)[0], left_pad([[0, 0] + seq], L)[0]])
    both = model.user_embedding(batch, torch.tensor([4, 4]))
    torch.testing.assert_close(both[1], both[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CAUSAL)
def test_left_padding_does_not_change_training_hidden_states(name):
    model = make(name).eval()
    seq = [5, 17, 3, 29, 11]
    narrow, _ = model.training_pairs(left_pad([seq], len(seq)), torch.tensor([2]))
    wide, targets = model.training_pairs(left_pad([seq], L + 1), torch.tensor([2]))
    torch.testing.assert_close(wide[:, -(len(seq) - 1):], narrow, atol=1e-5, rtol=1e-5)
    assert targets[0, -(len(seq) - 1):].tolist() == seq[1:]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("train", [True, False])
def test_no_nan_for_rows_that_are_mostly_or_entirely_padding(name, train):
    model = make(name, **({"dropout": 0.3} if "dropout" in SIZES[name] else {})).train(train)
    items = left_pad([[], [3], [4, 5], list(range(1, L + 2))], L + 1)
    users = torch.arange(4)
    hidden, _ = model.training_pairs(items, users)
    user = model.user_embedding(items[:, 1:], users)
    assert torch.isfinite(hidden).all() and torch.isfinite(user).all()
    assert torch.isfinite(model.score_all(items[:, 1:], users)).all()
    (model.scores(hidden).logsumexp(-1).sum() + user.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", CAUSAL)
def test_next_item_targets_are_zero_exactly_at_padding(name):
    model = make(name)
    items, users = windows()
    _, targets = model.training_pairs(items, users)
    inputs, nxt = items[:, :-1], items[:, 1:]
    expected = torch.where((inputs > 0) & (nxt > 0), nxt, torch.zeros_like(nxt))
    assert torch.equal(targets, expected)
    assert targets[-1].eq(0).all() and targets[0].gt(0).all()  # empty row: nothing; full row: every position


def test_bert4rec_cloze_masks_only_real_items_and_targets_only_masked_positions():
    model = make("bert4rec", mask_ratio=0.2, last_item_ratio=0.0)
    g = torch.Generator().manual_seed(5)
    lengths = torch.randint(0, L + 1, (500,), generator=g)
    items = left_pad([torch.randint(1, N_ITEMS + 1, (int(n),), generator=g).tolist() for n in lengths], L)
    torch.manual_seed(0)
    inputs, targets = model.cloze(items)
    masked = inputs == model.mask_token
    assert torch.equal(masked, targets > 0)  # a target exactly where the input was masked
    assert torch.equal(targets[masked], items[masked])  # …and it is the original item
    assert torch.equal(inputs[~masked], items[~masked])  # everything else untouched
    assert not masked[items == 0].any()  # padding is never masked
    has_items = (items > 0).any(1)
    assert masked[has_items].any(1).all() and not masked[~has_items].any()  # ≥ 1 mask per non-empty row
    ratio = masked.sum() / (items > 0).sum()
    assert 0.18 < ratio.item() < 0.30  # mask_ratio, plus the forced last-item masks of short rows

    torch.manual_seed(0)
    only_last, _ = make("bert4rec", last_item_ratio=1.0).cloze(items)
    assert torch.equal(only_last == model.mask_token, has_items[:, None] & (torch.arange(L) == L - 1))

    # training_pairs drops the window's oldest column and uses the cloze targets
    window = left_pad([list(range(1, L + 2))], L + 1)
    torch.manual_seed(0)
    hidden, targets = model.training_pairs(window)
    assert hidden.shape == (1, L, model.hidden_size)
    assert torch.equal(targets[targets > 0], window[:, 1:][targets > 0])


def test_bert4rec_never_ranks_the_mask_token():
    model = make("bert4rec").eval()
    assert model.mask_token == N_ITEMS + 1
    assert model.encoder.item_embedding.num_embeddings == N_ITEMS + 2
    assert model.score_all(left_pad([[1, 2, 3]], L)).shape == (1, N_ITEMS + 1)


def test_gru4rec_state_is_exactly_zero_through_left_padding():
    model = make("gru4rec").eval()
    hidden = model(left_pad([[7, 8]], L))
    # every padding position gives dense(0) = the dense bias, i.e. the GRU state stayed exactly 0
    torch.testing.assert_close(hidden[0, : L - 2], model.dense.bias.expand(L - 2, -1), atol=0, rtol=0)


def test_srgnn_graph_merges_repeated_items_and_normalises_by_degree():
    """The session 1, 2, 3, 2, 4 (SR-GNN paper / RecBole docstring): out-edges 1→2, 2→{3, 4} (½ each), 3→2."""
    rep, a_in, a_out = SRGNN.graph(torch.tensor([[0, 0, 1, 2, 3, 2, 4]]))
    assert rep.tolist() == [[0, 1, 2, 3, 4, 3, 6]]  # the second 2 reads the first 2's node
    nodes = [2, 3, 4, 6]  # items 1, 2, 3, 4
    out = a_out[0][nodes][:, nodes]
    inc = a_in[0][nodes][:, nodes]
    assert out.tolist() == [[0, 1, 0, 0], [0, 0, 0.5, 0.5], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert inc.tolist() == [[0, 0, 0, 0], [0.5, 0, 0.5, 0], [0, 1, 0, 0], [0, 1, 0, 0]]
    assert a_out[0, [0, 1, 5]].abs().sum() == 0 and a_in[0, :, [0, 1, 5]].abs().sum() == 0  # isolated


def test_caser_requires_users():
    with pytest.raises(ValueError, match="users"):
        make("caser").user_embedding(left_pad([[1, 2]], L))


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_gives_identical_scores(name):
    model = make(name).eval()
    history, users = windows()[0][:, 1:], torch.arange(6)
    fresh = make(name, seed=123).eval()
    assert not torch.equal(fresh.score_all(history, users), model.score_all(history, users))
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.score_all(history, users), model.score_all(history, users))


# ---- memorisation: each model learns 20 users' distinct next items ---------------------------------------------
def tiny_dataset() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """20 users, each with a random history of 3..6 items and a distinct final item."""
    g = torch.Generator().manual_seed(7)
    finals = torch.randperm(N_ITEMS, generator=g)[:N_USERS] + 1
    seqs = []
    for user in range(N_USERS):
        others = torch.tensor([i for i in range(1, N_ITEMS + 1) if i != finals[user]])
        n = int(torch.randint(3, 7, (1,), generator=g))
        seqs.append(others[torch.randperm(len(others), generator=g)[:n]].tolist() + [int(finals[user])])
    return left_pad(seqs, L + 1), torch.arange(N_USERS), finals


def hit_rate_at_1(model, items, users, finals) -> float:
    model.eval()
    with torch.no_grad():
        scores = model.score_all(items[:, :-1], users)
    model.train()
    scores[:, 0] = float("-inf")
    return (scores.argmax(1) == finals).float().mean().item()


@pytest.mark.parametrize("name", ALL)
def test_overfits_a_tiny_dataset(name):
    model = make(name)  # BERT4Rec with its default cloze (mask ratio 0.2, half the rows last-item only)
    items, users, finals = tiny_dataset()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    hr = 0.0
    for step in range(1, 301):
        hidden, targets = model.training_pairs(items, users)
        loss = F.cross_entropy(model.scores(hidden).flatten(0, 1), targets.flatten(), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 and (hr := hit_rate_at_1(model, items, users, finals)) > 0.9:
            break
    assert hr > 0.9, f"{name}: HR@1 {hr:.2f} after {step} steps (loss {loss.item():.3f})"
