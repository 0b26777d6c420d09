"""T5 backbones (encoder-decoder): tiny random configs for tests, small from-scratch configs for the CPU, and
pretrained t5-small / t5-base / Flan-T5 from a local directory or a hub id.

Every loader returns a :class:`rdrec.backbones.Backbone` (a ``T5ForConditionalGeneration`` and its tokenizer).
A from-scratch model takes the tokenizer it is built for (e.g. :func:`rdrec.backbones.tokenizer.corpus_tokenizer`)
and sizes its vocabulary from it; a pretrained one loads its own tokenizer unless one is given, and grows its
embeddings if the given tokenizer has more tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, T5Config, T5ForConditionalGeneration

from rdrec.backbones import Backbone

# T5 sizes that fit a test (tiny) and a 2-core CPU (small from scratch: ~1.5 M parameters + embeddings)
TINY = dict(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_decoder_layers=2, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0)
CPU_SMALL = dict(d_model=128, d_ff=512, d_kv=32, num_layers=3, num_decoder_layers=3, num_heads=4,
                 relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1)


def t5_from_config(tokenizer: PreTrainedTokenizerBase, config: dict | None = None, name: str = "t5-scratch",
                   seed: int | None = None, **overrides) -> Backbone:
    """A randomly initialised T5 whose vocabulary is ``tokenizer``'s (its pad token is the decoder start)."""
    spec = {**CPU_SMALL, **(dict(config) if config else {}), **overrides}
    cfg = T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                   decoder_start_token_id=tokenizer.pad_token_id, feed_forward_proj=spec.pop("feed_forward_proj", "relu"),
                   tie_word_embeddings=spec.pop("tie_word_embeddings", True), **spec)
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = T5ForConditionalGeneration(cfg)
    else:
        model = T5ForConditionalGeneration(cfg)
    return Backbone(model=model, tokenizer=tokenizer, kind="seq2seq", name=name)


def tiny_t5(tokenizer: PreTrainedTokenizerBase, seed: int | None = 0, **overrides) -> Backbone:
    """A few-thousand-parameter T5 for unit tests."""
    return t5_from_config(tokenizer, {**TINY, **overrides}, name="t5-tiny", seed=seed)


def pretrained_t5(path: str, tokenizer: PreTrainedTokenizerBase | None = None, name: str | None = None,
                  dtype: str = "float32", **kwargs) -> Backbone:
    """t5-small, t5-base, google/flan-t5-* …: ``path`` is a local directory or a hub id (downloaded by
    transformers when the machine has internet). Extra kwargs go to ``from_pretrained``."""
    local = Path(path).expanduser()
    source = str(local) if local.exists() else path
    try:
        model = T5ForConditionalGeneration.from_pretrained(source, dtype=getattr(torch, dtype), **kwargs)
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise OSError(f"cannot load pretrained T5 from {path!r} (no such directory, and the hub id could not be "
                      f"fetched: {err}). Put the weights in a local directory and pass its path, or use a "
                      f"from-scratch backbone (backbone=t5_cpu).") from err
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return Backbone(model=model, tokenizer=tokenizer, kind="seq2seq", name=name or Path(path).name)


def load_t5(tokenizer: PreTrainedTokenizerBase | None = None, pretrained: str | None = None,
            config: dict | None = None, name: str | None = None, seed: int | None = None, **kwargs) -> Backbone:
    """One entry point for configs: ``pretrained`` set → :func:`pretrained_t5`, else :func:`t5_from_config`."""
    if pretrained:
        return pretrained_t5(pretrained, tokenizer=tokenizer, name=name, **kwargs)
    if tokenizer is None:
        raise ValueError("a from-scratch T5 needs the tokenizer it is built for (tokenizer=…)")
    return t5_from_config(tokenizer, config, name=name or "t5-scratch", seed=seed, **kwargs)
