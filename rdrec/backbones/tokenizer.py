"""A tokenizer trained on the training corpus (no T5 tokenizer ships here), cached and deterministic.

Byte-pair encoding (🤗 ``tokenizers``) over SentencePiece-style pieces: spaces become ``▁``, punctuation is split
off and **every digit is its own token**, so an ID mention tokenizes the same way wherever it stands::

    "item_345"  -> ▁item  _  3  4  5        "user_12" -> ▁user  _  1  2

That makes the decoding trie over item IDs small (ten branches per digit) and whole-word indices exact.
Special tokens follow T5's layout (``<pad>`` = 0 is also the decoder start, ``</s>`` = 1, ``<unk>`` = 2), so a
T5 config built on top needs no remapping. The trained file is cached by a hash of the corpus and settings;
the same corpus always gives the same file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from rdrec.utils.atomic import atomic_dir

SPECIAL = ("<pad>", "</s>", "<unk>")
FORMAT_VERSION = 1


def _empty_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    return tok


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train BPE on ``corpus`` (an iterable of texts) and wrap it for transformers (appends ``</s>``)."""
    tok = _empty_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL), show_progress=False,
        initial_alphabet=list("0123456789_"),
    )
    tok.train_from_iterator(sorted(set(corpus)), trainer=trainer)  # sorted: the result does not depend on order
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", eos)])
    return wrap(tok)


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=100_000)


def corpus_tokenizer(corpus: Iterable[str], cache_dir: str | Path, vocab_size: int = 8000,
                     min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """The tokenizer trained on ``corpus``, loaded from ``cache_dir/tokenizers/<hash>`` when it exists."""
    texts = sorted(set(corpus))
    digest = hashlib.sha256()
    digest.update(f"v{FORMAT_VERSION}|{vocab_size}|{min_frequency}|".encode())
    for t in texts:
        digest.update(t.encode("utf-8") + b"\0")
    path = Path(cache_dir) / "tokenizers" / digest.hexdigest()[:16]
    file = path / "tokenizer.json"
    if file.is_file():
        return wrap(Tokenizer.from_file(str(file)))
    tokenizer = train_tokenizer(texts, vocab_size, min_frequency)
    if not file.is_file():  # another process (a DDP rank) may have written the identical file meanwhile
        with atomic_dir(path) as tmp:
            tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
    return tokenizer


def pretrained_tokenizer(path: str, corpus: Iterable[str] | None = None, cache_dir: str | Path | None = None):
    """The tokenizer that comes with pretrained weights (a local directory or a hub id); ``corpus`` is unused."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
