"""Seconds per DELRec training step and per evaluated user, before and after the cheaper step, in one process on the
same inputs (old and new interleaved, so load changes hit both alike).

    RDREC_DATA_DIR=data taskset -c 1 env OMP_NUM_THREADS=1 python experiments/delrec/bench_step.py

Before: the model's own loss (``lm(**inputs).loss``: full-vocabulary logits at every position) and the scorer that
encodes the prompt, keeps its logits at every position, and repeats the key/value cache per candidate. After:
``rdrec.methods.delrec.scoring.lm_loss`` (logits only where a label is) and the packed candidate pass.
Inputs: SmolLM2-135M-Instruct (the converted copy under <data_dir>/models; a random Llama of the same shapes when
it is absent), prompts of the CPU experiment (``conf/experiment/delrec_ml100k_cpu.yaml``: 20 soft tokens, the last
5 history titles, K = 20 candidates) over ml-100k titles, batch 4 for training, 2 users per evaluation batch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rdrec.methods.delrec.prompts import DelRecPrompts
from rdrec.methods.delrec.scoring import PromptCodec, candidate_log_likelihood, lm_loss
from rdrec.methods.delrec.soft_prompt import SoftPromptLM
from tests.test_delrec_cheap_step import _old_causal_scores  # run from the repository root


def old_loss(lm, inputs):
    return lm(**inputs).loss


def old_scores(lm, prompts, ids, mask):
    """The scorer before the packed pass (the reference the exactness test compares against)."""
    with torch.no_grad():
        return _old_causal_scores(lm, prompts, ids, mask)


def backbone(data_dir: Path):
    path = data_dir / "models" / "smollm2-135m-instruct"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if (path / "model.safetensors").is_file():
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32), tok, "SmolLM2-135M-Instruct"
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
    return LlamaForCausalLM(config), tok, "random Llama with SmolLM2-135M's shapes"


def titles(data_dir: Path) -> list[str]:
    import pandas as pd

    frame = pd.read_csv(data_dir / "raw" / "ml-100k" / "ml-100k.item", sep="\t")
    out = [""] * (int(frame.iloc[:, 0].max()) + 1)
    for item, title, year in zip(frame.iloc[:, 0], frame.iloc[:, 1], frame.iloc[:, 2]):
        out[int(item)] = f"{title} ({year})" if str(year).isdigit() else str(title)
    return out


def timed(fn, reps):
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("RDREC_DATA_DIR", "data")))
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tok, name = backbone(args.data_dir)
    names = titles(args.data_dir)
    prompts = DelRecPrompts(names, "SASRec", max_history=5)
    rng = np.random.default_rng(0)
    lm = SoftPromptLM(model, "causal", num_tokens=20)
    codec = PromptCodec(tok, "causal", 20)
    n = len(names) - 1
    batch = [(rng.integers(1, n + 1, 5), rng.integers(1, n + 1, 20)) for _ in range(4)]
    texts = [prompts.rec(h, c) for h, c in batch]
    inputs = codec.training_inputs(texts, [codec.target_ids(names[int(c[3])]) for _, c in batch])
    print(f"model: {name}; torch threads: {torch.get_num_threads()}; training batch 4, "
          f"{inputs['input_ids'].shape[1]} columns, {int((inputs['labels'] != -100).sum())} labelled tokens")

    def step(loss_fn, trainable):
        loss = loss_fn(lm, inputs)
        loss.backward()
        for p in trainable:
            p.grad = None

    # stage 1: the soft prompt alone trains (two prompts per example: TA and RPS, so twice this)
    lm.model.requires_grad_(False)
    lm.soft_prompt.requires_grad_(True)
    s1 = {"old": [], "new": []}
    for _ in range(args.reps):
        s1["old"] += timed(lambda: step(old_loss, [lm.soft_prompt]), 1)
        s1["new"] += timed(lambda: step(lm_loss, [lm.soft_prompt]), 1)
    # stage 2: AdaLoRA on the LLM (peft's defaults for Llama: q_proj, v_proj), soft prompt frozen
    from peft import AdaLoraConfig, TaskType, get_peft_model

    lm.soft_prompt.requires_grad_(False)
    lm.model = get_peft_model(lm.model, AdaLoraConfig(task_type=TaskType.CAUSAL_LM, init_r=12, target_r=8, total_step=100))
    trainable = [p for p in lm.parameters() if p.requires_grad]
    with torch.no_grad():
        for key, p in lm.named_parameters():
            if "lora_E" in key:
                p.normal_(0, 0.1)
    s2 = {"old": [], "new": []}
    for _ in range(args.reps):
        s2["old"] += timed(lambda: step(old_loss, trainable), 1)
        s2["new"] += timed(lambda: step(lm_loss, trainable), 1)
    # evaluation: 2 users per batch, 20 candidates each
    lm.eval()
    enc = codec.encode_prompts(texts[:2], "left")
    ids, mask = codec.title_table(names)
    cands = torch.as_tensor(np.stack([c for _, c in batch[:2]]))
    width = int(mask[cands].sum(-1).max())
    cid, cmask = ids[cands][..., :width], mask[cands][..., :width]
    ev = {"old": [], "new": []}
    with torch.no_grad():
        a, b = old_scores(lm, enc, cid, cmask), candidate_log_likelihood(lm, enc, cid, cmask)
        diff = float((a - b).abs().max())
        for _ in range(args.reps):
            ev["old"] += timed(lambda: old_scores(lm, enc, cid, cmask), 1)
            ev["new"] += timed(lambda: candidate_log_likelihood(lm, enc, cid, cmask), 1)
    print(f"max |old - new| candidate score: {diff:.2e}")
    print("| what | before (s) | after (s) | after / before |")
    print("|---|---|---|---|")
    for label, d, per in (("stage-1 loss + backward, one prompt set of batch 4 (a step runs two: TA, RPS)", s1, 1),
                          ("stage-2 step (AdaLoRA), batch 4", s2, 1), ("evaluation, per user (batches of 2)", ev, 2)):
        old, new = statistics.median(d["old"]) / per, statistics.median(d["new"]) / per
        print(f"| {label} | {old:.2f} | {new:.2f} | {new / old:.2f} |")
    print(f"(medians of {args.reps} interleaved repetitions)")


if __name__ == "__main__":
    main()
