"""The RDRec/POD student: T5 with per-task soft prompts and whole-word embeddings (POD, Li et al. 2023).

- **Soft prompts**: task ``t`` owns a block of ``prompt_length`` learned vectors, prepended to the encoder input
  of every example of task ``t`` (3 per task in the published code). A row only reads its own task's block, so
  a task's prompt is trained by that task's examples alone.
- **Whole-word embeddings**: a learned vector per word position (1, 2, …; 0 = special tokens) added to the token
  embeddings, so the sub-tokens of one ``item_345`` mention share an index and read as one unit.

Plain ``nn.Module``: no Lightning, no files. Scoring helpers: exact sequence log-likelihoods of given targets,
and beam search through ``transformers``' ``generate`` (constrain it with ``prefix_allowed_tokens_fn``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from transformers import T5ForConditionalGeneration
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput


class PODStudent(nn.Module):
    def __init__(self, t5: T5ForConditionalGeneration, num_tasks: int, prompt_length: int = 3,
                 max_whole_words: int = 512, init_std: float | None = None):
        super().__init__()
        if num_tasks < 1 or prompt_length < 0:
            raise ValueError(f"num_tasks must be >= 1 and prompt_length >= 0, got {num_tasks}, {prompt_length}")
        self.t5, self.num_tasks, self.prompt_length = t5, num_tasks, prompt_length
        d_model = t5.config.d_model
        std = init_std if init_std is not None else float(t5.get_input_embeddings().weight.detach().std())
        self.prompts = nn.Parameter(torch.randn(num_tasks, prompt_length, d_model) * std)
        self.whole_word = nn.Embedding(max_whole_words, d_model)
        nn.init.normal_(self.whole_word.weight, std=std)

    @property
    def pad_token_id(self) -> int:
        return self.t5.config.pad_token_id

    # ---- encoder ---------------------------------------------------------------------------------------------
    def encoder_inputs(self, input_ids: Tensor, attention_mask: Tensor, whole_word_ids: Tensor,
                       task: Tensor) -> tuple[Tensor, Tensor]:
        """Token + whole-word embeddings with the row's task prompt in front: ([B, P + L, D], [B, P + L])."""
        if task.shape != input_ids.shape[:1]:
            raise ValueError(f"task ids {tuple(task.shape)} must give one task per row of input_ids {tuple(input_ids.shape)}")
        if ((task < 0) | (task >= self.num_tasks)).any():
            raise ValueError(f"task ids must be in 0..{self.num_tasks - 1}, got {task.unique().tolist()}")
        words = whole_word_ids.clamp(0, self.whole_word.num_embeddings - 1)
        embeds = self.t5.get_input_embeddings()(input_ids) + self.whole_word(words)
        prompts = self.prompts[task]  # [B, P, D]: each row reads only its own task's block
        mask = torch.cat([attention_mask.new_ones(prompts.shape[:2]), attention_mask], dim=1)
        return torch.cat([prompts.to(embeds.dtype), embeds], dim=1), mask

    def encode(self, input_ids: Tensor, attention_mask: Tensor, whole_word_ids: Tensor,
               task: Tensor) -> tuple[BaseModelOutput, Tensor]:
        embeds, mask = self.encoder_inputs(input_ids, attention_mask, whole_word_ids, task)
        return self.t5.get_encoder()(inputs_embeds=embeds, attention_mask=mask, return_dict=True), mask

    # ---- training ----------------------------------------------------------------------------------------------
    def forward(self, input_ids: Tensor, attention_mask: Tensor, whole_word_ids: Tensor, task: Tensor,
                labels: Tensor) -> Tensor:
        """Per-token cross-entropy logits' loss, averaged over target tokens; label -100 (padding) never counts."""
        encoded, mask = self.encode(input_ids, attention_mask, whole_word_ids, task)
        return self.t5(encoder_outputs=encoded, attention_mask=mask, labels=labels, return_dict=True).loss

    # ---- scoring -----------------------------------------------------------------------------------------------
    def sequence_log_likelihood(self, encoded: BaseModelOutput, mask: Tensor, targets: Tensor,
                                rows: Tensor | None = None, chunk: int = 4096) -> Tensor:
        """Sum of log p(token) over each target sequence (teacher forcing): ``targets`` [N, T] token ids padded
        with -100, ``rows`` [N] the encoder row each target is scored against (default: row i for target i).

        Many targets per encoder row (candidate lists): the decoder's cross-attention keys and values are
        computed once per encoder row and shared by that row's targets instead of being recomputed per target;
        ``chunk`` targets go through the decoder at a time."""
        hidden = encoded.last_hidden_state
        if rows is None:
            rows = torch.arange(len(targets), device=targets.device)
        cross = self._cross_attention_states(hidden, mask)
        out = []
        for start in range(0, len(targets), chunk):
            r, t = rows[start:start + chunk], targets[start:start + chunk]
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            for layer, (k, v) in enumerate(cross):
                cache.cross_attention_cache.update(k[r], v[r], layer)
                cache.is_updated[layer] = True
            # the encoder states only say "cross-attend" here: their keys/values come from the cache
            stand_in = hidden[:1].expand(len(r), -1, -1)
            logits = self.t5(encoder_outputs=BaseModelOutput(last_hidden_state=stand_in), attention_mask=mask[r],
                             labels=t, past_key_values=cache, use_cache=True, return_dict=True).logits
            logp = logits.float().log_softmax(-1)
            token = logp.gather(-1, t.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            out.append((token * (t != -100)).sum(-1))
        return torch.cat(out) if out else hidden.new_zeros(0)

    def _cross_attention_states(self, hidden: Tensor, mask: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each decoder layer's cross-attention keys and values of the encoder states: [(K, V) [B, H, L, d]]."""
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        start = torch.full((hidden.shape[0], 1), self.t5.config.decoder_start_token_id, device=hidden.device)
        self.t5(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=mask,
                decoder_input_ids=start, past_key_values=cache, use_cache=True, return_dict=True)
        return [(layer.keys, layer.values) for layer in cache.cross_attention_cache.layers]

    @torch.no_grad()
    def beam_search(self, encoded: BaseModelOutput, mask: Tensor, num_beams: int, max_new_tokens: int,
                    prefix_allowed_tokens_fn: Callable[[int, Tensor], list[int]] | None = None,
                    length_penalty: float = 0.0) -> tuple[Tensor, Tensor]:
        """``num_beams`` distinct sequences per row and their log-likelihoods (summed over tokens when
        ``length_penalty`` is 0, as the candidate scorer does): ([B, K, T], [B, K])."""
        out = self.t5.generate(  # a fresh output object: generate expands it in place per beam
            encoder_outputs=BaseModelOutput(last_hidden_state=encoded.last_hidden_state), attention_mask=mask,
            num_beams=num_beams, num_return_sequences=num_beams,
            do_sample=False, max_new_tokens=max_new_tokens, prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
            length_penalty=length_penalty, early_stopping=True, output_scores=True, return_dict_in_generate=True,
        )
        batch = mask.shape[0]
        return out.sequences.view(batch, num_beams, -1), out.sequences_scores.view(batch, num_beams)

    @torch.no_grad()
    def generate_text(self, encoded: BaseModelOutput, mask: Tensor, max_new_tokens: int = 64,
                      num_beams: int = 1) -> Tensor:
        """Free text (explanations, rationales): greedy or beam decoding, [B, T] token ids."""
        return self.t5.generate(encoder_outputs=BaseModelOutput(last_hidden_state=encoded.last_hidden_state),
                                attention_mask=mask, max_new_tokens=max_new_tokens,
                                num_beams=num_beams, do_sample=False)
