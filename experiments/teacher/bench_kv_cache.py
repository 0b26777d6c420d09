"""A decode step of SmolLM2-135M (8 rows, 400 cached positions, one thread): transformers DynamicCache vs the
in-place cache (rdrec/backbones/kv_cache.py), ms per step and the max logit difference; then a torch.profiler table
of the in-place step. experiments/teacher/README.md quotes it. Run from the repository root after the model is
converted:  taskset -c 0 env OMP_NUM_THREADS=1 python experiments/teacher/bench_kv_cache.py
(For the profile of the old step, swap growing_cache for DynamicCache in the profiled part.)"""
import time, torch, sys
from transformers import AutoModelForCausalLM, DynamicCache
from rdrec.backbones.kv_cache import growing_cache
torch.set_num_threads(1)
m = AutoModelForCausalLM.from_pretrained("data/models/smollm2-135m-instruct", dtype=torch.float32).eval()
B, L = 8, 400
res = {}
for name, make in (("dynamic", lambda: DynamicCache(config=m.config)), ("growing", lambda: growing_cache(m.config))):
    with torch.inference_mode():
        torch.manual_seed(0)
        cache = make()
        ids = torch.randint(0, 1000, (B, L))
        m(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        mask = torch.ones(B, L + 1, dtype=torch.long); nxt = torch.randint(0, 1000, (B, 1)); pos = torch.full((B, 1), L)
        outs = []
        t = time.perf_counter()
        for i in range(40):
            if i == 5: t = time.perf_counter()
            o = m(input_ids=nxt, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True).logits
            outs.append(o); mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1); pos = pos + 1
            if i == 20:
                keep = torch.tensor([0, 2, 3, 5, 7]); cache.batch_select_indices(keep); mask, nxt, pos = mask[keep], nxt[keep], pos[keep]; B2 = 5
        print(name, "ms/step", (time.perf_counter() - t) / 35 * 1000)
        res[name] = outs
print("max diff", max((a - b).abs().max().item() for a, b in zip(res["dynamic"], res["growing"])))

# ---- the profile
B, L = 8, 400
with torch.inference_mode():
    cache = growing_cache(m.config)
    ids = torch.randint(0, 1000, (B, L))
    m(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    mask = torch.ones(B, L + 1, dtype=torch.long)
    nxt = torch.randint(0, 1000, (B, 1))
    pos = torch.full((B, 1), L)
    def step():
        global mask, pos
        out = m(input_ids=nxt, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
        mask = torch.cat([mask, mask.new_ones(B, 1)], 1); pos = pos + 1
        return out
    for _ in range(3): step()
    t = time.perf_counter()
    for _ in range(20): step()
    print("step ms", (time.perf_counter() - t) / 20 * 1000)
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10): step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
