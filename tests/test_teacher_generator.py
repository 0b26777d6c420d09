"""Generation logic with a scripted backend: retries with new seeds, recorded failures, resumable runs."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl

from rdrec.teacher.backends.base import Backend, Generation, GenerationParams
from rdrec.teacher.export import load
from rdrec.teacher.generator import RationaleGenerator, RetryPolicy, attempt_seed, plan
from rdrec.teacher.prompts import Subset
from rdrec.teacher.runner import run_generation
from rdrec.teacher.store import RationaleStore
from tests.test_teacher_fixtures import families, synthetic_prepared

GOOD = {"rdrec": "1. The user prefers {u}.\n2. The item's attributes are {i}.",
        "slim": "1. The user likes {u}.\n2. Recommend the category {i}.\n3. Recommend item number {i}."}


def question(chat):
    return next(m["content"] for m in reversed(chat) if m["role"] == "user")


class Scripted(Backend):
    """Answers well when hash(seed) says so; fails transport for chats listed in `down`."""

    name, model_id = "scripted", "scripted-v1"

    def __init__(self, good_every: int = 3, down: set | None = None):
        self.good_every, self.down, self.calls = good_every, down or set(), []

    def generate(self, chats, seeds, params, stop=None):
        out = []
        for chat, seed in zip(chats, seeds):
            self.calls.append((question(chat), seed, params.do_sample))
            family = "slim" if "recommend" in chat[0]["content"].lower() else "rdrec"
            if question(chat) in self.down:
                out.append(Generation(error="HTTP 503 after 3 attempts"))
            elif seed % self.good_every == 0:
                out.append(Generation(GOOD[family].format(u=f"things {seed}", i=f"{seed} x"), 10, 12, "stop"))
            else:
                out.append(Generation(f"I think it is nice ({seed}).", 10, 5, "stop"))
        return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return synthetic_prepared(tmp_path_factory.mktemp("g"), with_reviews=True)


def _run(prepared, tmp_path, backend, seed=0, store="store", trainer_cls=pl.Trainer, **kw):
    trainer = lambda callbacks: trainer_cls(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                                            enable_checkpointing=False, callbacks=callbacks)
    params = kw.pop("params", GenerationParams(max_new_tokens=16, do_sample=False))
    return run_generation(prepared=prepared, families=kw.pop("families", None) or families(), backend=backend, params=params,
                          retry=kw.pop("retry", RetryPolicy(max_retries=2)), subset=kw.pop("subset", Subset(users=6, interactions_per_user=2)),
                          seed=seed, batch_size=4, store_dir=str(tmp_path / store), make_trainer=trainer,
                          output_dir=str(tmp_path / "run"), **kw)


def test_unparsable_answers_are_retried_with_new_seeds_then_recorded_as_failures(prepared, tmp_path):
    backend = Scripted(good_every=3)
    greedy = families()
    greedy["slim"].generation = {}  # the shipped SLIM config samples from the first try (tested below)
    summary = _run(prepared, tmp_path, backend, families=greedy)
    store = RationaleStore(tmp_path / "store").reload()
    assert summary["prompts"] == 18 and len(store) == 18 and summary["missing"] == 0
    for r in store.records():
        seeds = [attempt_seed(0, r["key"], a) for a in range(r["attempts"])]
        if r["status"] == "ok":
            assert r["provenance"]["seed"] == seeds[-1] and seeds[-1] % 3 == 0
            assert all(s % 3 for s in seeds[:-1]) and len(r["rejected"]) == r["attempts"] - 1
            assert str(seeds[-1]) in r["text"]
        else:  # three attempts, all rejected, and nothing made up
            assert r["attempts"] == 3 and r["output"] is None and len(r["rejected"]) == 3
            assert all(s % 3 for s in seeds)
    # greedy first; retries sample (a new seed changes nothing under arg max)
    per_prompt: dict = {}
    for content, _, do_sample in backend.calls:
        per_prompt.setdefault(content, []).append(do_sample)
    assert len(per_prompt) == 18 and all(d[0] is False and all(d[1:]) for d in per_prompt.values())
    failed = sum(r["status"] == "failed" for r in store.records())
    assert summary["failed"] == failed and summary["failure_rate"] == pytest.approx(failed / 18)
    tables = load(tmp_path / "run" / "rationales")
    assert len(tables["failures"]) == failed
    assert len(tables["rdrec_interactions"]) + len(tables["slim_users"]) == 18 - failed


def test_rerun_skips_stored_keys_and_changed_params_make_new_keys(prepared, tmp_path):
    _run(prepared, tmp_path, Scripted())
    again = Scripted()
    summary = _run(prepared, tmp_path, again)
    assert again.calls == [] and summary["run/generated"] == 0 and summary["stored"] == 18
    other = Scripted()
    _run(prepared, tmp_path, other, params=GenerationParams(max_new_tokens=17, do_sample=False))
    assert len(other.calls) >= 18 and len(RationaleStore(tmp_path / "store").reload()) == 36


def test_transport_failures_store_nothing_and_a_rerun_completes(prepared, tmp_path):
    items = families()["slim"].build(prepared.train_view(), Subset(users=6))
    down = {items[1].question, items[4].question}
    summary = _run(prepared, tmp_path, Scripted(down=down))
    assert summary["missing"] == 2 and summary["run/transport_errors"] == 2
    summary = _run(prepared, tmp_path, Scripted())
    assert summary["missing"] == 0 and summary["run/generated"] == 2 and summary["stored"] == 18


def test_plan_is_fixed_batches_over_length_sorted_prompts(prepared):
    items = [i for f in families().values() for i in f.build(prepared.train_view(), Subset(users=5, interactions_per_user=1))]
    kw = dict(dataset="d", fingerprint="f", model_id="m", params=GenerationParams(), retry=RetryPolicy(), seed=1, batch_size=3)
    batches = plan(items, **kw)
    assert [len(b) for b in batches] == [3, 2, 3, 2]  # a batch never mixes families (nor kinds)
    assert all(len({(j.item.family, j.item.kind) for j in b}) == 1 for b in batches)
    jobs = [j for b in batches for j in b]
    assert [j.item.family for j in jobs] == ["rdrec"] * 5 + ["slim"] * 5
    for fam in ("rdrec", "slim"):
        lengths = [j.item.length for j in jobs if j.item.family == fam]
        assert lengths == sorted(lengths, reverse=True)
    assert [[j.key for j in b] for b in plan(list(reversed(items)), **kw)] == [[j.key for j in b] for b in batches]
    with pytest.raises(ValueError, match="same store key"):
        plan(items + items[:1], **kw)


class Sizes(Scripted):
    """Also records the size of every ``generate`` call and whether it was a retry."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sizes = []

    def generate(self, chats, seeds, params, stop=None):
        self.sizes.append((len(chats), params.do_sample))
        return super().generate(chats, seeds, params, stop)


def test_a_unit_decodes_its_batches_as_planned_and_its_retries_together(prepared, tmp_path):
    items = families()["slim"].build(prepared.train_view(), Subset(users=12))
    kw = dict(dataset="d", fingerprint="f", model_id="m", params=GenerationParams(), retry=RetryPolicy(), seed=1)
    units = plan(items, batch_size=3, pool=2, **kw)
    assert [len(u) for u in units] == [6, 6]  # a unit = 2 consecutive batches of the length-sorted prompts
    assert [j.key for u in units for j in u] == [j.key for b in plan(items, batch_size=3, **kw) for j in b]
    greedy = families()["slim"]
    greedy.generation = {}
    backend = Sizes(good_every=3)
    gen = RationaleGenerator(backend, {"slim": greedy}, GenerationParams(max_new_tokens=16, do_sample=False),
                             RetryPolicy(max_retries=2), 0, "d", "f", batch_size=3)
    records, stats = gen.run_batch(units[0])
    first = [n for n, sampled in backend.sizes if not sampled]
    assert first == [3, 3]  # the first attempt: the planned batches, as they were
    failed_first = sum(r["attempts"] > 1 for r in records)
    retries = [n for n, sampled in backend.sizes if sampled]
    assert failed_first > 1 and retries[0] == min(failed_first, 3)  # one batch's failures do not decode alone
    assert sum(retries) == sum(r["attempts"] - 1 for r in records) and stats["generations"] == 6 + sum(retries)
    # the same unit, one batch per retry pass (the old behaviour): the same records
    old = Sizes(good_every=3)
    records_old = [r for b in plan(items, batch_size=3, **kw)[:2] for r in RationaleGenerator(
        old, {"slim": greedy}, GenerationParams(max_new_tokens=16, do_sample=False), RetryPolicy(max_retries=2),
        0, "d", "f").run_batch(b)[0]]
    strip = lambda rs: sorted((r["key"], r["text"], r["attempts"]) for r in rs)
    assert strip(records) == strip(records_old)
    with pytest.raises(ValueError, match="pool"):
        plan(items, batch_size=3, pool=0, **kw)


def test_a_family_decodes_and_is_keyed_with_its_own_parameter_overrides(prepared, tmp_path):
    plain = families()
    plain["slim"].generation = {}
    _run(prepared, tmp_path, Scripted(good_every=1), store="plain", families=plain)
    own = families()
    own["slim"].generation = {"do_sample": True}  # as conf/prompts/slim.yaml may set it
    backend = Scripted(good_every=1)
    _run(prepared, tmp_path, backend, store="own", families=own)
    sampled = {q: s for q, _, s in backend.calls}
    slim_questions = {question(i.chat()) for i in own["slim"].build(prepared.train_view(), Subset(users=6))}
    assert all(sampled[q] for q in slim_questions)  # SLIM's first attempts sample
    assert not any(s for q, s in sampled.items() if q not in slim_questions)  # RDRec's stay greedy
    by_family = lambda store: {r["family"]: r for r in RationaleStore(tmp_path / store).reload().records()}
    keys = lambda store, fam: {r["key"] for r in RationaleStore(tmp_path / store).reload().records() if r["family"] == fam}
    assert keys("plain", "rdrec") == keys("own", "rdrec")  # other families' stored entries stay valid
    assert keys("plain", "slim").isdisjoint(keys("own", "slim"))  # the override is part of SLIM's keys
    assert by_family("own")["slim"]["provenance"]["params"]["do_sample"] is True
    assert by_family("own")["rdrec"]["provenance"]["params"]["do_sample"] is False
    with pytest.raises(ValueError, match="unknown parameter"):
        families()["slim"].__class__(own["slim"].templates, generation={"temprature": 0.5})


def test_a_stored_answer_is_never_reused_for_another_prompt(prepared, tmp_path):
    import dataclasses

    from rdrec.errors import DataError

    _run(prepared, tmp_path, Scripted(good_every=1))

    class CutShort:  # other training sequences under the same fingerprint: other prompts, the same keys
        name, fingerprint = prepared.name, prepared.fingerprint

        def train_view(self):
            view = prepared.train_view()
            return dataclasses.replace(view, sequences=[s[:-1] for s in view.sequences])

    backend = Scripted(good_every=1)
    with pytest.raises(DataError, match="another prompt") as err:
        _run(CutShort(), tmp_path, backend)
    assert "\n" not in str(err.value) and backend.calls == []  # one line, before any generation
    assert _run(prepared, tmp_path, Scripted(good_every=1))["run/generated"] == 0  # the same data: all reused


def test_generation_params_validate():
    with pytest.raises(ValueError):
        GenerationParams(do_sample=True, temperature=0)
    assert GenerationParams(do_sample=False).for_retry(0.5).do_sample is True


def test_a_rank_left_in_a_collective_by_a_sigterm_stopped_peer_ends_with_the_one_line(prepared, tmp_path):
    """Under DDP, the rank that stops first on SIGTERM closes its connection; its peer's pending collective raises
    gloo's RuntimeError. That rank ends with the same one resume line, not a traceback."""

    class PeerLeft(pl.Trainer):
        def predict(self, *args, **kwargs):
            self._received_sigterm = True
            raise RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:37804")

        @property
        def received_sigterm(self):
            return getattr(self, "_received_sigterm", False)

    with pytest.raises(SystemExit, match=r"^rdrec-generate: SIGTERM received; stopped after its last stored batch\. "
                                         r"Rerun the same command to resume"):
        _run(prepared, tmp_path, Scripted(good_every=1), trainer_cls=PeerLeft)


def test_a_runtime_error_without_sigterm_is_not_hidden(prepared, tmp_path):
    class Broken(pl.Trainer):
        def predict(self, *args, **kwargs):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _run(prepared, tmp_path, Scripted(good_every=1), trainer_cls=Broken)
