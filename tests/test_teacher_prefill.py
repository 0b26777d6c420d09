"""Prefilled answers and the stop once the format is complete, per backend: transformers (a tiny model trained in
the fixture), an OpenAI-compatible server on loopback (vLLM-style `continue_final_message`, the completions
endpoint with the chat template rendered by the client, and servers that take neither), vLLM (a stand-in
module). In every case the text the backend returns, and the store keeps, is the whole answer: the given opening
and its continuation."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl

from rdrec.teacher.backends.base import GenerationParams, Stop, join_opening, looping, split_opening
from rdrec.teacher.backends.openai import OpenAIBackend
from rdrec.teacher.backends.transformers import TransformersBackend
from rdrec.teacher.backends.vllm import VLLMBackend
from rdrec.teacher.generator import RetryPolicy
from rdrec.teacher.prompts import ParseError, Subset
from rdrec.teacher.runner import run_generation
from rdrec.teacher.store import RationaleStore
from tests.test_teacher_fixtures import fake_vllm, families, synthetic_prepared, tiny_lm  # noqa: F401
from tests.test_teacher_openai import QuietHandler, _Server as LoopbackServer, send_json

OPENING = "1. The user prefers"
CHAT = [{"role": "system", "content": "You explain."}, {"role": "user", "content": "Movies: Heat (Action)"},
        {"role": "assistant", "content": OPENING}]


# ---- the rules themselves ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, parts, done", [
    ("1. The user prefers action.", 2, False),  # no line has ended yet
    ("1. The user prefers action.\n", 2, False),  # part 2 missing
    ("1. The user prefers action.\n2. The item's", 2, False),
    ("1. The user prefers action.\n2. The item's attributes are speed.\n", 2, True),
    ("1. The user prefers action.\n2. The item's attributes are \"speed.\"\n", 2, True),  # a closing quote
    ("1. a.\n2. Recommend:\n- Heat\n", 2, False),  # the last part's lines end on no sentence
    ("1. a.\n2. b.\n3. Recommend:\n- Heat (1995)\n- Alien.\n", 3, True),
    ("1. The item's attributes are speed.\n", 1, True),
    ("1. The item's attributes are:\n", 1, False),
    ("Step 1: a.\nStep 2: b.\nStep 3: c.\n", 3, True),
])
def test_stop_is_complete_after_the_last_numbered_part_ends_its_sentence(text, parts, done):
    assert Stop(parts).complete(text) is done


def test_stop_also_ends_a_line_that_runs_on_and_gives_servers_the_next_number():
    assert Stop(3, max_line_words=5).complete("1. a.\n2. Recommend a, b, c, d, e, f, g")
    assert not Stop(3, max_line_words=5).complete("1. a.\n2. Recommend a, b, c")
    assert Stop(2).strings() == ["\n3."]


def test_a_looping_list_stops_its_line_and_is_rejected_by_the_parser():
    loop = "1. The user prefers drama.\n2. Recommend action, sci-fi, comedy, drama, comedy, comedy, comedy"
    stop = Stop(3, max_line_words=50, max_word_repeats=4)
    assert stop.check_often and not Stop(3).check_often
    assert stop.complete(loop)  # four times "comedy", far below the 50-word cap
    assert not stop.complete(loop.rsplit(",", 1)[0])  # three times: not yet
    assert not stop.complete("1. The user prefers drama, drama and drama; drama.\n2. Rec")  # earlier lines do not count
    assert not looping("and the and the and the and the", 4)  # short words never count
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rdrec.utils.resolvers import CONFIG_DIR

    slim = instantiate(OmegaConf.load(CONFIG_DIR / "prompts" / "slim.yaml"), max_word_repeats=4)
    good = "1. The user prefers drama.\n2. Recommend comedy and drama.\n3. Recommend \"Star Wars\" and \"Star Trek\".\n"
    assert slim.parse(good)["categories"] == "Recommend comedy and drama."
    with pytest.raises(ParseError, match="looping"):
        slim.parse(loop + ".\n3. Recommend \"Heat\".\n")
    # the setting is part of the key where it is set, and only there (RDRec's stored keys stay valid)
    plain = instantiate(OmegaConf.load(CONFIG_DIR / "prompts" / "slim.yaml"), max_word_repeats=None)
    assert slim.template_hash() != plain.template_hash()
    assert slim.stop("user") == Stop(3, 50, 4)


def test_opening_and_continuation_are_joined_with_one_space():
    assert join_opening(OPENING, " action films.") == "1. The user prefers action films."
    assert join_opening(OPENING, "action films.") == "1. The user prefers action films."
    assert join_opening(OPENING, ", mostly action.") == "1. The user prefers, mostly action."
    assert join_opening("", "  text ") == "text"
    assert split_opening(CHAT) == (CHAT[:-1], OPENING) and split_opening(CHAT[:-1]) == (CHAT[:-1], "")


def test_families_prefill_their_format_and_reject_an_answer_that_is_only_the_opening(tmp_path):
    prepared = synthetic_prepared(tmp_path, with_reviews=False, num_users=12)
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rdrec.utils.resolvers import CONFIG_DIR

    rdrec = instantiate(OmegaConf.load(CONFIG_DIR / "prompts" / "rdrec.yaml"), levels=["item", "user", "interaction"])
    items = rdrec.build(prepared.train_view(), Subset(users=2, items=3, interactions_per_user=1))
    assert [i.kind for i in items] == ["item"] * 3 + ["user"] * 2 + ["interaction"] * 2
    openings = {i.kind: i.messages[-1] for i in items}
    assert openings == {"item": ("assistant", "1. The item's attributes are"),
                        "user": ("assistant", "1. The user prefers"), "interaction": ("assistant", "1. The user prefers")}
    assert [i.entity for i in items[:5]] == [{"item": 1}, {"item": 2}, {"item": 3}, {"user": 1}, {"user": 2}]
    # the item prompt holds the item's metadata and nothing about any user
    assert "user" not in items[0].question.lower()
    assert rdrec.parse("1. The item's attributes are speed and noise.", "item") == {"item_attribute": "The item's attributes are speed and noise."}
    assert rdrec.parse("1. The user prefers loud films.\n2. Nothing", "user") == {"user_preference": "The user prefers loud films."}
    with pytest.raises(ParseError, match="only the opening"):
        rdrec.parse("1. The item's attributes are:", "item")
    assert rdrec.stop("interaction") == Stop(2) and rdrec.stop("item") == Stop(1)
    assert families()["slim"].stop("user") == Stop(3, 50, 4)


# ---- transformers ------------------------------------------------------------------------------------------------
def test_transformers_continues_the_opening_and_stops_when_complete(tiny_lm):
    backend = TransformersBackend(str(tiny_lm))
    backend.setup()
    tok, model = backend.tokenizer, backend.model
    # the prompt is the chat template with the generation prompt, then the opening
    text = tok.apply_chat_template(CHAT[:-1], add_generation_prompt=True, tokenize=False) + OPENING
    assert backend.render(CHAT) == text
    enc = tok(text, add_special_tokens=False, return_tensors="pt")
    ref = model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id)
    continuation = tok.decode(ref[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    params = GenerationParams(max_new_tokens=40, do_sample=False)
    full = backend.generate([CHAT], [0], params)[0]
    assert full.text == join_opening(OPENING, continuation) and full.text.startswith(OPENING + " ")
    # with a stop rule the answer ends at the first line after which the rule says it is complete
    lines = full.text.split("\n")
    assert len(lines) >= 2, full.text  # the tiny model writes several lines (its ANSWER has three)
    cut = 0
    for parts in (1, 2, 3):
        ends = [k for k in range(1, len(lines)) if Stop(parts).complete("\n".join(lines[:k]) + "\n")]
        got = backend.generate([CHAT], [0], params, stop=Stop(parts))[0]
        if ends:
            cut += 1
            assert got.text == "\n".join(lines[:ends[0]]) and got.finish_reason == "stop"
            assert got.completion_tokens < full.completion_tokens
        else:
            assert got.text == full.text and got.completion_tokens == full.completion_tokens
    assert cut >= 1  # the rule really stopped a row


def test_transformers_stores_the_whole_answer_through_rdrec_generate(tiny_lm, tmp_path):
    prepared = synthetic_prepared(tmp_path, with_reviews=True, num_users=12)
    backend = TransformersBackend(str(tiny_lm))
    summary = _run(prepared, tmp_path, backend, families={"rdrec": families()["rdrec"]})
    records = list(RationaleStore(tmp_path / "store").reload().records())
    assert summary["stored"] == len(records) == 6
    for r in records:
        assert r["messages"][-1] == {"role": "assistant", "content": OPENING}
        assert r["text"].startswith(OPENING)  # stored whole: the opening and what the model wrote
        if r["status"] == "ok":
            assert r["output"]["user_preference"].startswith("The user prefers")
        # nothing after the line that completed the format (the tiny model would go on to a line "3.")
        lines = r["text"].split("\n")
        assert not Stop(2).complete("\n".join(lines[:-1]) + "\n")
    assert any(Stop(2).complete(r["text"] + "\n") for r in records)


def _run(prepared, tmp_path, backend, families, **kw):
    trainer = lambda callbacks: pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                                           enable_checkpointing=False, callbacks=callbacks)
    return run_generation(prepared=prepared, families=families, backend=backend,
                          params=GenerationParams(max_new_tokens=40, do_sample=False), retry=RetryPolicy(max_retries=1),
                          subset=kw.pop("subset", Subset(users=3, interactions_per_user=2)), seed=0, batch_size=4,
                          store_dir=str(tmp_path / "store"), make_trainer=trainer, output_dir=str(tmp_path / "run"))


# ---- OpenAI-compatible servers -------------------------------------------------------------------------------------
class PrefillServer(LoopbackServer):
    """An OpenAI-compatible server on loopback that continues like a real one: chat with
    `continue_final_message` (vLLM serve) answers only the continuation of the final assistant message; the
    completions endpoint continues the prompt string; a chat without it starts a fresh answer."""

    ANSWER = "1. The user prefers calm dramas.\n2. The item's attributes are a slow story.\n3. More"

    def __init__(self):
        seen = self.requests = []
        answer = self.ANSWER

        class Handler(QuietHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen.append({"path": self.path, "body": body})
                if self.path == "/v1/completions":
                    prompt = body["prompt"]
                    tail = next(o for o in (OPENING, "") if prompt.endswith(o))
                    choice = {"text": answer[len(tail):], "finish_reason": "stop"}
                elif self.path == "/v1/chat/completions":
                    last = body["messages"][-1]
                    cont = body.get("continue_final_message") and last["role"] == "assistant"
                    text = answer[len(last["content"]):] if cont else answer
                    choice = {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                else:
                    self.send_error(404)
                    return
                for s in body.get("stop") or []:  # as servers do: cut at the first stop string, not returned
                    key = "text" if "text" in choice else "message"
                    value = choice[key] if key == "text" else choice[key]["content"]
                    value = value.split(s)[0]
                    if key == "text":
                        choice["text"] = value
                    else:
                        choice["message"]["content"] = value
                send_json(self, {"choices": [choice], "usage": {"prompt_tokens": 5, "completion_tokens": 7}})

        super().__init__(Handler)
        self.url += "/v1"


def test_openai_continue_final_message_returns_the_whole_answer_and_sends_stop_strings():
    with PrefillServer() as server:
        backend = OpenAIBackend(server.url, "m", api_key_env=None, concurrency=2, max_retries=0)
        gens = backend.generate([CHAT, CHAT[:-1]], [1, 2], GenerationParams(max_new_tokens=9, do_sample=False), stop=Stop(2))
        backend.close()
    body = server.requests[0]["body"] if server.requests[0]["body"]["seed"] == 1 else server.requests[1]["body"]
    assert body["messages"] == CHAT and body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["stop"] == ["\n3."]
    whole = "1. The user prefers calm dramas.\n2. The item's attributes are a slow story."
    assert gens[0].text == whole  # opening + continuation, cut before "3."
    assert gens[1].text == whole  # no opening: the server's own answer, untouched


def test_openai_completions_endpoint_renders_the_chat_template_here(tiny_lm):
    with PrefillServer() as server:
        backend = OpenAIBackend(server.url, "m", api_key_env=None, concurrency=1, max_retries=0, prefill="completions",
                                template_tokenizer=str(tiny_lm))
        gen = backend.generate([CHAT], [3], GenerationParams(max_new_tokens=9, do_sample=False), stop=Stop(2))[0]
        backend.close()
    req = server.requests[0]
    assert req["path"] == "/v1/completions" and "messages" not in req["body"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_lm))
    assert req["body"]["prompt"] == tok.apply_chat_template(CHAT[:-1], add_generation_prompt=True, tokenize=False) + OPENING
    assert gen.text == "1. The user prefers calm dramas.\n2. The item's attributes are a slow story."


def test_openai_without_prefill_support_drops_the_opening():
    with PrefillServer() as server:
        backend = OpenAIBackend(server.url, "m", api_key_env=None, concurrency=1, max_retries=0, prefill="none")
        gen = backend.generate([CHAT], [3], GenerationParams(max_new_tokens=9, do_sample=False))[0]
        backend.close()
    body = server.requests[0]["body"]
    assert body["messages"] == CHAT[:-1] and "continue_final_message" not in body and "stop" not in body
    assert gen.text == PrefillServer.ANSWER
    with pytest.raises(ValueError, match="template_tokenizer"):
        OpenAIBackend("http://127.0.0.1:1/v1", "m", prefill="completions")


def test_openai_prefill_is_stored_whole_through_rdrec_generate(tmp_path):
    prepared = synthetic_prepared(tmp_path, with_reviews=True, num_users=12)
    with PrefillServer() as server:
        backend = OpenAIBackend(server.url, "m", api_key_env=None, concurrency=2, max_retries=0)
        summary = _run(prepared, tmp_path, backend, families={"rdrec": families()["rdrec"]})
    records = list(RationaleStore(tmp_path / "store").reload().records())
    assert summary["failed"] == 0 and len(records) == 6
    assert {r["text"] for r in records} == {"1. The user prefers calm dramas.\n2. The item's attributes are a slow story."}
    assert {r["output"]["user_preference"] for r in records} == {"The user prefers calm dramas."}


# ---- vLLM (stand-in module) -----------------------------------------------------------------------------------------
def test_vllm_appends_the_opening_after_the_generation_prompt_and_passes_stop_strings(monkeypatch):
    calls = {}

    fake_vllm(monkeypatch, calls, lambda t: " calm dramas.\n2. The item's attributes are slow.", token_ids=(1, 2))
    gens = VLLMBackend("m").generate([CHAT], [7], GenerationParams(max_new_tokens=9, do_sample=False), stop=Stop(2))
    texts, params = calls["generate"]
    assert texts == ["You explain.|Movies: Heat (Action)|assistant:" + OPENING]
    assert params[0]["stop"] == ["\n3."]
    assert gens[0].text == "1. The user prefers calm dramas.\n2. The item's attributes are slow."
