"""Shared by the teacher tests: a tiny chat LM (byte-level BPE tokenizer with a chat template, a 2-layer Llama)
built in code and briefly trained to answer the RDRec and SLIM prompts in their formats, so outputs are a mix
of parseable (greedy) and unparsable (sampled) text; and small helpers. No tests here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rdrec.utils.resolvers import CONFIG_DIR

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# one answer that parses for both families (RDRec reads steps 1-2, SLIM 1-3)
ANSWER = "1. The user prefers good items.\n2. The item's attributes are fine quality.\n3. Recommend the next items soon."


def families(item_noun: str = "item") -> dict:
    from hydra.utils import instantiate

    return {n: instantiate(OmegaConf.load(CONFIG_DIR / "prompts" / f"{n}.yaml"), item_noun=item_noun)
            for n in ("rdrec", "slim")}


def synthetic_prepared(tmp: Path, with_reviews: bool = True, num_users: int = 40):
    from rdrec.data.pipeline import prepare_dataset
    from rdrec.data.sources.synthetic import Synthetic
    from rdrec.data.split import SplitConfig

    source = Synthetic(num_users=num_users, num_items=60, min_len=5, max_len=12, seed=0, with_reviews=with_reviews)
    return prepare_dataset(source, SplitConfig(seed=42), tmp / "cache", log=lambda s: None)


def build_tiny_lm(out: Path, steps: int = 60, window: int = 48) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from rdrec.teacher.prompts import Subset

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    prepared = synthetic_prepared(out.parent / "tiny-data", with_reviews=True, num_users=30)
    view = prepared.train_view()
    fams = families()
    items = [i for f in fams.values() for i in f.build(view, Subset(users=30, interactions_per_user=2))]
    corpus = [c for i in items for _, c in i.messages] + [ANSWER] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    # a few steps of teacher forcing on (the tail of a prompt -> ANSWER): greedy answers mostly parse, sampled
    # ones often do not, which is the mix the pipeline must handle
    # the prompts end in the answer's opening (prefill: "1. The user prefers"); the model learns the rest
    opening = items[0].messages[-1][1]
    assert all(i.messages[-1] == ("assistant", opening) for i in items) and ANSWER.startswith(opening)
    a_ids = fast(ANSWER[len(opening):], add_special_tokens=False)["input_ids"] + [fast.eos_token_id]
    tails = []
    for item in items:
        prompt = fast.apply_chat_template(item.chat()[:-1], tokenize=False, add_generation_prompt=True) + opening
        tails.append(fast(prompt, add_special_tokens=False)["input_ids"][-window:])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        batch = [tails[(step * 8 + k) % len(tails)] + a_ids for k in range(8)]
        ids = torch.tensor(batch)
        labels = torch.tensor([[-100] * window + a_ids] * len(batch))
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    (out / "TRAINING.json").write_text(json.dumps({"steps": steps, "final_loss": float(loss.detach())}))
    return out


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm") / "model")


def real_smollm2_dir() -> Path | None:
    """The converted SmolLM2 copy if a previous run made it (tests never fetch 90 MB on their own)."""
    import os

    from rdrec.utils.resolvers import ROOT_DIR

    path = Path(os.environ.get("RDREC_DATA_DIR", ROOT_DIR / "data")) / "models" / "smollm2-135m-instruct"
    return path if (path / "SOURCE.json").is_file() else None


teacher_model = pytest.mark.teacher_model  # needs the shipped SmolLM2 (converted copy present)
llama_server = pytest.mark.llama_server  # needs llama-cpp-python[server] and the shipped GGUF


def fake_vllm(monkeypatch, calls: dict, answer, token_ids=(1, 2, 3)):
    """Install a stand-in ``vllm`` module (no GPU here): its engine records the engine arguments and each
    ``generate`` call in ``calls`` and answers every prompt text ``t`` with ``answer(t)``."""
    import sys
    import types

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class Tokenizer:
        def apply_chat_template(self, chat, tokenize, add_generation_prompt):
            return "|".join(m["content"] for m in chat) + "|assistant:"

    class LLM:
        def __init__(self, model, **kw):
            calls["engine"] = {"model": model, **kw}

        def get_tokenizer(self):
            return Tokenizer()

        def generate(self, texts, sampling_params, use_tqdm):
            calls["generate"] = (texts, [p.kw for p in sampling_params])
            out = lambda t: types.SimpleNamespace(text=answer(t), token_ids=list(token_ids), finish_reason="stop")  # noqa: E731
            return [types.SimpleNamespace(prompt_token_ids=[0] * 5, outputs=[out(t)]) for t in texts]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
