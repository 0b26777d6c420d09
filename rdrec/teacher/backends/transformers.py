"""Local generation with 🤗 transformers: any HF model directory (or a GGUF file, dequantised on load).

Batched decoding with its own loop instead of ``model.generate``:

- the batch is tokenised left-padded (position ids count real tokens only), so all rows decode in lock-step;
  the caller sorts prompts by length so padding is small;
- the prefill computes logits for the last position only (``logits_to_keep=1``);
- the prefix the rows share (everything before the last turn: the system message and few-shot example of a
  prompt family; batches are grouped by family) is encoded once, kept for later batches, and shared by all
  rows; each row's rest follows it after a masked gap: ``[prefix][pad…][suffix]``, positions counting real
  tokens only;
- the KV cache grows in place (``rdrec.backbones.kv_cache``) instead of being re-copied at every step;
- rows that finished (end of sequence or ``max_new_tokens``) leave the batch and the KV cache at once
  (``Cache.batch_select_indices``), so a long answer does not keep short ones computing;
- each row samples with its own ``torch.Generator`` seeded by the caller, so a row's text does not depend on
  the other rows' random draws (greedy: arg max).

- a chat ending in an ``assistant`` message (the *opening*) is rendered with the generation prompt and the
  opening after it, so the model continues the opening; the returned text is opening + continuation;
- with ``stop=Stop(n)`` a row leaves the batch once its decoded answer is complete (checked on the rows that
  just produced a newline), instead of decoding to ``max_new_tokens``; its finish reason is then "stop".

``torch_threads`` pins intra-op threads (benchmarks use 1). The chat template of the tokenizer is applied when
there is one; otherwise the messages are joined with blank lines.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from rdrec.backbones.kv_cache import growing_cache
from rdrec.teacher.backends.base import Backend, Generation, GenerationParams, Stop, join_opening, split_opening

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model: str, gguf_file: str | None = None, model_id: str | None = None, dtype: str = "float32",
                 max_input_tokens: int = 2048, torch_threads: int | None = None, share_prefix: bool = True,
                 min_shared_prefix: int = 16, kv_cache: str = "growing"):
        self.path = str(model)
        self.gguf_file = gguf_file
        self.model_id = model_id or (Path(self.path).name + (f"/{gguf_file}" if gguf_file else ""))
        if dtype not in _DTYPES:
            raise ValueError(f"dtype: expected one of {sorted(_DTYPES)}, got {dtype!r}")
        self.dtype = dtype
        self.max_input_tokens = max_input_tokens
        self.torch_threads = torch_threads
        self.share_prefix, self.min_shared_prefix = share_prefix, min_shared_prefix
        if kv_cache not in ("growing", "dynamic"):
            raise ValueError(f"kv_cache: expected 'growing' (in place) or 'dynamic' (transformers' own), got {kv_cache!r}")
        self.kv_cache = kv_cache
        self._prefixes: dict = {}
        self._newline: dict[int, bool] = {}
        self.model = None
        self.tokenizer = None

    @classmethod
    def around(cls, model, tokenizer, model_id: str = "in-memory", **kwargs) -> "TransformersBackend":
        """A backend that decodes with a model already in memory (e.g. SLIM's student under test, its LoRA
        adapters unmerged): the same loop, repetition penalty and stop rule as a backend that loads one."""
        backend = cls(model="<in memory>", model_id=model_id, **kwargs)
        backend.model, backend.tokenizer = model, tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return backend

    # ---- loading -----------------------------------------------------------------------------------------
    def setup(self, device=None) -> None:
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        if self.model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=_DTYPES[self.dtype], **kwargs)
            self.model.eval().requires_grad_(False)
        if device is not None and torch.device(device) != self.model.device:
            self.model.to(device)
            self._prefixes.clear()  # encoded on the old device
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def torch_module(self):
        if self.model is None:
            self.setup()
        return self.model

    def describe(self) -> dict:
        return {**super().describe(), "dtype": self.dtype}

    # ---- prompts -----------------------------------------------------------------------------------------
    def render(self, chat: list[dict]) -> str:
        """The prompt text: the conversation with the generation prompt, then the opening of the answer, if any."""
        chat, opening = split_opening(chat)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + opening
        return "\n\n".join(m["content"] for m in chat) + "\n\n" + opening

    def encode(self, chats: list[list[dict]]) -> list[list[int]]:
        texts = [self.render(c) for c in chats]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        too_long = [i for i, x in enumerate(ids) if len(x) > self.max_input_tokens]
        if too_long:
            raise ValueError(f"prompt {too_long[0]} has {len(ids[too_long[0]])} tokens > max_input_tokens="
                             f"{self.max_input_tokens}; shorten the template's history_len or raise the limit")
        return ids

    def encode_prefix(self, chat: list[dict]) -> list[int]:
        """Token ids of everything before the last user turn (system message, few-shot examples), or []."""
        chat, _ = split_opening(chat)
        if len(chat) < 2:
            return []
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(chat[:-1], tokenize=False, add_generation_prompt=False)
        else:
            text = "\n\n".join(m["content"] for m in chat[:-1]) + "\n\n"
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ---- generation --------------------------------------------------------------------------------------
    def generate(self, chats: list[list[dict]], seeds: list[int], params: GenerationParams,
                 stop: Stop | None = None) -> list[Generation]:
        if self.model is None:
            self.setup()
        prompts = self.encode(chats)
        prefixes = {tuple(self.encode_prefix(c)) for c in chats}
        prefix = list(next(iter(prefixes))) if len(prefixes) == 1 else None
        openings = [split_opening(c)[1] for c in chats]
        done = None
        if stop is not None:
            done = lambda row, toks: stop.complete(openings[row] + self.tokenizer.decode(toks, skip_special_tokens=True))
        out = self.generate_ids(prompts, seeds, params, prefix, done,
                                check_often=stop is not None and stop.check_often)
        return [Generation(text=join_opening(o, self._decode(toks)), prompt_tokens=len(p), completion_tokens=len(toks),
                           finish_reason=reason)
                for o, p, (toks, reason) in zip(openings, prompts, out)]

    def _decode(self, toks: list[int]) -> str:
        return self.tokenizer.decode(toks, skip_special_tokens=True).rstrip()

    def _has_newline(self, token: int) -> bool:
        if token not in self._newline:
            self._newline[token] = "\n" in self.tokenizer.decode([token])
        return self._newline[token]

    @torch.inference_mode()
    def generate_ids(self, prompts: list[list[int]], seeds: list[int], params: GenerationParams,
                     prefix: list[int] | None = None, done_fn=None, check_often: bool = False):
        """Decode ``prompts`` (token ids) together; return ``[(new token ids, finish reason)]`` in order.
        ``done_fn(row, token ids so far)`` is asked, when the row's new token holds a newline, whether the row's
        answer is complete (``check_often``: also every 16 tokens); a complete row stops there (finish reason
        "stop")."""
        model, dev = self.model, self.model.device
        n = len(prompts)
        if n == 0:
            return []
        eos = _eos_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        # the rows' shared prefix (system message and few-shot example) is encoded once and shared; it is
        # defined by the prompts alone (never by what was decoded before), so a row's numbers do not depend on
        # the history of the process: a resumed or sharded run computes exactly what an uninterrupted one does
        plen = len(prefix) if prefix is not None else 0
        if not self.share_prefix or plen < self.min_shared_prefix or plen >= min(len(p) for p in prompts) \
                or any(p[:plen] != prefix for p in prompts):
            plen = 0
        suffixes = [p[plen:] for p in prompts]
        width = max(len(p) for p in suffixes)
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, plen + width), dtype=torch.long)
        mask[:, :plen] = 1
        for i, p in enumerate(suffixes):  # [prefix][pad … pad][suffix]: padding sits between, masked out
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, plen + width - len(p):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        positions = ((mask.cumsum(-1) - 1).clamp(min=0))[:, plen:]
        gens = [torch.Generator(device=dev).manual_seed(int(s)) for s in seeds]
        seen = None
        if params.repetition_penalty != 1.0:
            seen = torch.zeros((n, model.config.vocab_size), dtype=torch.bool, device=dev)
            seen.scatter_(1, ids * mask[:, plen:], mask[:, plen:].bool())
            if plen:
                seen[:, torch.tensor(prompts[0][:plen], device=dev)] = True
        cache = self._prefix_cache(prompts[0][:plen], n) if plen else self._new_cache()
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1, :]
        rows = torch.arange(n, device=dev)  # original index of each row still in the batch
        last_pos = positions[:, -1]
        out: list[list[int]] = [[] for _ in range(n)]
        reasons = ["length"] * n
        for step in range(params.max_new_tokens):
            nxt = self._choose(logits.float(), rows, gens, seen, params)
            done = torch.zeros(len(rows), dtype=torch.bool)
            for j, (r, t) in enumerate(zip(rows.tolist(), nxt.tolist())):
                if t in eos:
                    reasons[r], done[j] = "stop", True
                else:
                    out[r].append(t)
                    if seen is not None:
                        seen[j, t] = True
                    if done_fn is not None and (self._has_newline(t) or (check_often and len(out[r]) % 16 == 0)) \
                            and done_fn(r, out[r]):
                        reasons[r], done[j] = "stop", True  # the format is complete
            if step + 1 == params.max_new_tokens or bool(done.all()):
                break
            if done.any():
                keep = (~done).nonzero().squeeze(1).to(dev)
                cache.batch_select_indices(keep)
                rows, nxt, mask, last_pos = rows[keep], nxt[keep], mask[keep], last_pos[keep]
                gens = [gens[k] for k in keep.tolist()]
                seen = seen[keep] if seen is not None else None
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            last_pos = last_pos + 1
            logits = model(input_ids=nxt.unsqueeze(1), attention_mask=mask, position_ids=last_pos.unsqueeze(1),
                           past_key_values=cache, use_cache=True).logits[:, -1, :]
        return list(zip(out, reasons))

    def _prefix_cache(self, prefix: list[int], n: int):
        """The KV cache of ``prefix`` (computed once per distinct prefix, kept for the next batches), repeated
        for ``n`` rows."""
        import copy

        key = tuple(prefix)
        if key not in self._prefixes:
            cache = self._new_cache()
            ids = torch.tensor([prefix], dtype=torch.long, device=self.model.device)
            self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            self._prefixes[key] = cache
            while len(self._prefixes) > 8:
                self._prefixes.pop(next(iter(self._prefixes)))
        cache = copy.deepcopy(self._prefixes[key])
        if n > 1:
            cache.batch_repeat_interleave(n)
        return cache

    def _new_cache(self):
        from transformers import DynamicCache

        return growing_cache(self.model.config) if self.kv_cache == "growing" else DynamicCache(config=self.model.config)

    @staticmethod
    def _choose(logits, rows, gens, seen, params: GenerationParams) -> torch.Tensor:
        if seen is not None:
            pen = params.repetition_penalty
            penalised = torch.where(logits > 0, logits / pen, logits * pen)
            logits = torch.where(seen, penalised, logits)
        if not params.do_sample:
            return logits.argmax(-1)
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            cum = sorted_p.cumsum(-1)
            drop = (cum - sorted_p) > params.top_p  # keep the smallest prefix whose mass reaches top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter_(1, order, sorted_p)
        return torch.stack([torch.multinomial(probs[j], 1, generator=g)[0] for j, g in enumerate(gens)])


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if value is not None:
            ids.update(value if isinstance(value, (list, tuple)) else [value])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return {int(i) for i in ids}
