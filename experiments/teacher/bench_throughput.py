"""Teacher throughput on the same prompts: the batched transformers backend vs one-prompt-at-a-time
``model.generate`` vs the llama.cpp server (llama-cpp-python, the shipped Q4_1 GGUF), all on SmolLM2-135M-Instruct.

Every contender runs in its own process pinned to one CPU core (``taskset -c <core>``) with one thread
(torch.set_num_threads(1), OMP_NUM_THREADS=1, llama.cpp --n_threads 1), so the comparison is fair within itself
even when the other core is busy. Greedy decoding, the same ``max_new_tokens``, the same chat prompts (RDRec and
SLIM prompts of ml-100k users, built exactly as rdrec-generate builds them). Tokens/s = generated tokens / wall
time of the whole set, prefill included; model loading is excluded.

    python experiments/teacher/bench_throughput.py --prompts 32 --max-new-tokens 96 --core 0

writes experiments/teacher/results/throughput.json and prints the Markdown table for the README.

Against the ceiling (``--ceiling``): first the single-thread matrix-multiply rate at the model's own shapes
(every projection of a SmolLM2-135M layer and the LM head, for 1 … 256 rows at a time); then the batched backend
on a fixed set of full-coverage prompts (RDRec item + user level, SLIM), *before* (no prefill, decoding to
max_new_tokens unless the model ends) and *after* (the answer's opening prefilled, stopping once the format is
complete), per batch size, each in its own pinned process. Useful FLOP/s = (prompt + generated tokens) × 2 ×
parameters / seconds, reported per wall second and per CPU second of the process (the machine is shared: the
CPU-second figure is what the process got to use), as a fraction of the ceiling, beside prompts/s, tokens/s and
how many answers parsed:

    taskset -c 1 env OMP_NUM_THREADS=1 python experiments/teacher/bench_throughput.py --ceiling \
        --prompts 24 --batch-sizes 8,1,4 --core 1
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def build_prompts(n: int, data_dir: Path) -> list[list[dict]]:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rdrec.data.pipeline import prepare_dataset
    from rdrec.data.sources.movielens import MovieLens100K
    from rdrec.data.split import SplitConfig
    from rdrec.teacher.prompts import Subset

    prepared = prepare_dataset(MovieLens100K(str(data_dir / "raw")), SplitConfig(seed=42), data_dir / "cache", log=lambda s: None)
    view = prepared.train_view()
    fams = {f: instantiate(OmegaConf.load(ROOT / "conf" / "prompts" / f"{f}.yaml"), item_noun="movie") for f in ("rdrec", "slim")}
    rdrec = fams["rdrec"].build(view, Subset(users=n, interactions_per_user=1))[: n - n // 2]
    slim = fams["slim"].build(view, Subset(users=n // 2))
    return [i.chat() for i in rdrec + slim]


def build_coverage_prompts(n: int, data_dir: Path) -> list[dict]:
    """``n`` full-coverage prompts, a third each RDRec item level, RDRec user level and SLIM, as rdrec-generate
    +coverage=full builds them (items and users are the first ids: ids are a seeded permutation)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rdrec.data.pipeline import prepare_dataset
    from rdrec.data.sources.movielens import MovieLens100K
    from rdrec.data.split import SplitConfig
    from rdrec.teacher.prompts import Subset

    prepared = prepare_dataset(MovieLens100K(str(data_dir / "raw")), SplitConfig(seed=42), data_dir / "cache", log=lambda s: None)
    view = prepared.train_view()
    rdrec = instantiate(OmegaConf.load(ROOT / "conf" / "prompts" / "rdrec.yaml"), item_noun="movie", levels=["item", "user"])
    slim = instantiate(OmegaConf.load(ROOT / "conf" / "prompts" / "slim.yaml"), item_noun="movie")
    k = n // 3
    sub = Subset(users=k, items=n - 2 * k)
    items = rdrec.build(view, sub) + slim.build(view, sub)
    return [{"family": i.family, "kind": i.kind, "chat": i.chat()} for i in items]


def _families():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    return {f: instantiate(OmegaConf.load(ROOT / "conf" / "prompts" / f"{f}.yaml"), item_noun="movie", **kw)
            for f, kw in (("rdrec", {"levels": ["item", "user"]}), ("slim", {}))}




def run_ceiling(model_dir, rows=(1, 8, 32, 256), seconds=2.0) -> dict:
    """Single-thread fp32 matmul rate at the model's shapes: x[M, K] @ W[K, N] for every projection of one layer
    (q, k, v, o, gate, up, down) and the LM head, timed together, for M rows at a time."""
    import torch

    torch.set_num_threads(1)
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * cfg.get("head_dim", h // cfg["num_attention_heads"])
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h), (h, v)]
    weights = [torch.randn(k, n) for k, n in shapes]
    out = {}
    for m in rows:
        xs = {k: torch.randn(m, k) for k in {k for k, _ in shapes}}
        flops = sum(2 * m * k * n for k, n in shapes)
        for w, (k, _) in zip(weights, shapes):  # warm-up
            xs[k] @ w
        reps, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - wall0 < seconds:
            for w, (k, _) in zip(weights, shapes):
                xs[k] @ w
            reps += 1
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        out[str(m)] = {"gflops_wall": flops * reps / wall / 1e9, "gflops_cpu": flops * reps / cpu / 1e9, "reps": reps}
    return {"rows": out, "shapes": shapes}


def run_backend(prompts, max_new, batch_size, model_dir, mode) -> dict:
    """The batched backend through RationaleGenerator's grouping: ``before`` = no prefill, no stop; ``after`` =
    prefill + stop once complete. First attempts only (no retries), so both decode the same prompts once."""
    import torch

    from rdrec.teacher.backends.base import GenerationParams, split_opening
    from rdrec.teacher.backends.transformers import TransformersBackend
    from rdrec.teacher.prompts import ParseError

    fams = _families()
    backend = TransformersBackend(model_dir, torch_threads=1)
    backend.setup()
    n_params = sum(p.numel() for p in backend.model.parameters())  # tied embeddings counted once
    params = GenerationParams(max_new_tokens=max_new, do_sample=False, repetition_penalty=1.1)
    chats = [p["chat"] if mode == "after" else split_opening(p["chat"])[0] for p in prompts]
    backend.generate(chats[:2], [0, 1], GenerationParams(max_new_tokens=4, do_sample=False))  # warm-up
    # as rdrec-generate plans: grouped by (family, kind), longest first, fixed batches
    order = sorted(range(len(prompts)), key=lambda i: (prompts[i]["family"], prompts[i]["kind"],
                                                       -sum(len(m["content"]) for m in chats[i])))
    groups, cur = [], []
    for i in order:
        if cur and (len(cur) == batch_size or (prompts[cur[0]]["family"], prompts[cur[0]]["kind"]) != (prompts[i]["family"], prompts[i]["kind"])):
            groups.append(cur)
            cur = []
        cur.append(i)
    groups.append(cur)
    texts, ptoks, gtoks, parsed = {}, 0, 0, 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for idx in groups:
        fam, kind = prompts[idx[0]]["family"], prompts[idx[0]]["kind"]
        stop = fams[fam].stop(kind) if mode == "after" else None
        for i, g in zip(idx, backend.generate([chats[i] for i in idx], list(idx), params, stop=stop)):
            texts[i] = g.text
            ptoks += g.prompt_tokens
            gtoks += g.completion_tokens
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    for i, p in enumerate(prompts):
        try:
            fams[p["family"]].parse(texts[i], p["kind"])
            parsed += 1
        except ParseError:
            pass
    return {"seconds": wall, "cpu_seconds": cpu, "prompt_tokens": ptoks, "tokens": gtoks, "parsed": parsed,
            "params": n_params, "threads": torch.get_num_threads(), "texts": [texts[i] for i in range(len(prompts))]}


# ---- contenders (each in its own pinned process) -----------------------------------------------------------------
def run_batched(chats, max_new, batch_size, model_dir) -> dict:
    from rdrec.teacher.backends.base import GenerationParams
    from rdrec.teacher.backends.transformers import TransformersBackend

    backend = TransformersBackend(model_dir, torch_threads=1)
    backend.setup()
    params = GenerationParams(max_new_tokens=max_new, do_sample=False, repetition_penalty=1.0)
    backend.generate(chats[:2], [0, 1], GenerationParams(max_new_tokens=4, do_sample=False))  # warm-up
    order = sorted(range(len(chats)), key=lambda i: -sum(len(m["content"]) for m in chats[i]))  # as rdrec-generate
    start, tokens, texts = time.perf_counter(), 0, {}
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        for i, g in zip(idx, backend.generate([chats[i] for i in idx], list(idx), params)):
            tokens += g.completion_tokens
            texts[i] = g.text
    return {"seconds": time.perf_counter() - start, "tokens": tokens, "texts": [texts[i] for i in range(len(chats))]}


def run_single(chats, max_new, model_dir) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    def one(chat, n):
        enc = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[0, enc["input_ids"].shape[1]:]
        new = new[new != tok.eos_token_id]
        return len(new), tok.decode(new, skip_special_tokens=True).strip()
    one(chats[0], 4)  # warm-up
    start, tokens, texts = time.perf_counter(), 0, []
    for chat in chats:
        n, text = one(chat, max_new)
        tokens += n
        texts.append(text)
    return {"seconds": time.perf_counter() - start, "tokens": tokens, "texts": texts}


def run_llamacpp(chats, max_new, gguf, core) -> dict:
    from rdrec.teacher.backends.base import GenerationParams
    from rdrec.teacher.backends.openai import OpenAIBackend

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = ["taskset", "-c", str(core), sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
           "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
           "--n_threads", "1", "--n_threads_batch", "1"]
    (HERE / "work").mkdir(exist_ok=True)
    log = open(HERE / "work" / "llamacpp_server.log", "w")  # git-ignored; llama.cpp logs its timings here
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/v1/models")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "smollm2", api_key_env=None, concurrency=1,
                                timeout=600, max_retries=0, penalty_field="repeat_penalty",
                                extra_body={"repeat_penalty": 1.0})  # the server defaults to 1.1; HF generate uses none
        params = GenerationParams(max_new_tokens=max_new, do_sample=False, repetition_penalty=1.0)
        backend.generate(chats[:1], [0], GenerationParams(max_new_tokens=4, do_sample=False))  # warm-up
        start = time.perf_counter()
        gens = backend.generate(chats, list(range(len(chats))), params)
        seconds = time.perf_counter() - start
        errors = [g.error for g in gens if g.error]
        if errors:
            raise RuntimeError(f"llama.cpp server errors: {errors[:3]}")
        return {"seconds": seconds, "tokens": sum(g.completion_tokens for g in gens), "texts": [g.text for g in gens]}
    finally:
        server.kill()
        server.wait()


# ---- driver ------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-sizes", default="8,16,32")
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--contenders", default="batched,single,llamacpp")
    ap.add_argument("--data-dir", default=os.environ.get("RDREC_DATA_DIR", str(ROOT / "data")))
    ap.add_argument("--out", default=str(HERE / "results" / "throughput.json"))
    ap.add_argument("--merge", action="store_true", help="keep the other contenders' runs already in --out")
    ap.add_argument("--ceiling", action="store_true", help="the matmul ceiling, then before/after per batch size")
    ap.add_argument("--modes", default="before,after", help="with --ceiling: which backend modes to run")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=16, help=argparse.SUPPRESS)
    args = ap.parse_args()
    data_dir = Path(args.data_dir)
    chats_file = HERE / "results" / "bench_prompts.json"

    if args.worker in ("ceiling", "before", "after"):
        from rdrec.backbones.shipped import smollm2

        if args.worker == "ceiling":
            res = run_ceiling(smollm2(data_dir))
        else:
            prompts = json.loads((HERE / "results" / "ceiling_prompts.json").read_text())
            res = run_backend(prompts, args.max_new_tokens, args.batch_size, smollm2(data_dir), args.worker)
        print("RESULT " + json.dumps(res))
        return
    if args.ceiling:
        return ceiling_main(args, data_dir)
    if args.worker:
        chats = json.loads(chats_file.read_text())
        from rdrec.backbones.shipped import smollm2, smollm2_gguf

        if args.worker == "batched":
            res = run_batched(chats, args.max_new_tokens, args.batch_size, smollm2(data_dir))
        elif args.worker == "single":
            res = run_single(chats, args.max_new_tokens, smollm2(data_dir))
        else:
            res = run_llamacpp(chats, args.max_new_tokens, smollm2_gguf(data_dir), args.core)
        print("RESULT " + json.dumps(res))
        return

    (HERE / "results").mkdir(exist_ok=True)
    chats = build_prompts(args.prompts, data_dir)
    if args.merge and chats_file.exists() and json.loads(chats_file.read_text()) != chats:
        raise SystemExit("--merge needs the same prompts as the runs already in --out")
    chats_file.write_text(json.dumps(chats))
    runs = []
    plan = []
    for c in args.contenders.split(","):
        if c == "batched":
            plan += [("batched", bs) for bs in map(int, args.batch_sizes.split(","))]
        else:
            plan.append((c, 1))
    for name, bs in plan:
        res = _worker(args, data_dir, name, bs)
        if "error" not in res:
            res["tokens_per_s"] = res["tokens"] / res["seconds"]
            print(f"  {res['tokens']} tokens in {res['seconds']:.1f} s = {res['tokens_per_s']:.1f} tokens/s", flush=True)
        runs.append(res)
    if args.merge and Path(args.out).exists():
        old = json.loads(Path(args.out).read_text())["runs"]
        mine = {r["contender"] for r in runs}
        runs = [r for r in old if r["contender"] not in mine] + runs
        runs.sort(key=lambda r: (["batched", "single", "llamacpp"].index(r["contender"]), r["batch_size"]))
    base = next((r for r in runs if r["contender"] == "single" and "error" not in r), None)
    for r in runs:
        if base and "error" not in r:
            r["speedup_vs_single"] = r["tokens_per_s"] / base["tokens_per_s"]
    meta = {"prompts": len(chats), "max_new_tokens": args.max_new_tokens, "core": args.core, "threads": 1,
            "cpu": _cpu(), "python": platform.python_version(), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.executable).name, "experiments/teacher/bench_throughput.py"] + sys.argv[1:])}
    Path(args.out).write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
    print(table(meta, runs))


def _worker(args, data_dir, name, bs=1) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = ["taskset", "-c", str(args.core), sys.executable, __file__, "--worker", name, "--batch-size", str(bs),
           "--max-new-tokens", str(args.max_new_tokens), "--data-dir", str(data_dir), "--core", str(args.core)]
    print(f"running {name} (batch {bs}) pinned to core {args.core} …", flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        print(f"  {name} failed: {proc.stderr[-1500:]}", flush=True)
        return {"contender": name, "batch_size": bs, "error": proc.stderr[-500:]}
    res = json.loads(line[7:])
    res.update(contender=name, batch_size=bs, finished_at=time.strftime("%H:%M:%S"), load_average_1min=os.getloadavg()[0])
    return res


def ceiling_main(args, data_dir: Path) -> None:
    (HERE / "results").mkdir(exist_ok=True)
    prompts = build_coverage_prompts(args.prompts, data_dir)
    (HERE / "results" / "ceiling_prompts.json").write_text(json.dumps(prompts))
    ceiling = _worker(args, data_dir, "ceiling")
    best = max(r["gflops_cpu"] for r in ceiling["rows"].values())
    meta = {"prompts": len(prompts), "mix": dict(Counter(f"{p['family']}/{p['kind']}" for p in prompts)),
            "max_new_tokens": args.max_new_tokens, "core": args.core, "threads": 1, "cpu": _cpu(),
            "ceiling_gflops": best, "python": platform.python_version(), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.executable).name, "experiments/teacher/bench_throughput.py"] + sys.argv[1:])}
    out = HERE / "results" / "ceiling.json"
    runs = []
    for bs in map(int, args.batch_sizes.split(",")):
        for mode in args.modes.split(","):
            r = _worker(args, data_dir, mode, bs)
            if "error" not in r:
                flops = (r["prompt_tokens"] + r["tokens"]) * 2 * r["params"]
                r.update(useful_gflops_wall=flops / r["seconds"] / 1e9, useful_gflops_cpu=flops / r["cpu_seconds"] / 1e9)
                r.update(fraction_cpu=r["useful_gflops_cpu"] / best, prompts_per_s=len(prompts) / r["seconds"],
                         prompts_per_cpu_s=len(prompts) / r["cpu_seconds"], tokens_per_s=r["tokens"] / r["seconds"])
                print(f"  {mode} batch {bs}: {r['prompts_per_cpu_s']:.2f} prompts per CPU-s, "
                      f"{r['useful_gflops_cpu']:.1f} useful GFLOP per CPU-s = {r['fraction_cpu']:.2f} of the ceiling; "
                      f"{r['parsed']}/{len(prompts)} parsed", flush=True)
            runs.append(r)
            out.write_text(json.dumps({"meta": meta, "ceiling": ceiling, "runs": runs}, indent=1) + "\n")  # so far
    print(ceiling_table(meta, ceiling, runs))


def ceiling_table(meta, ceiling, runs) -> str:
    lines = [f"Ceiling: single-thread fp32 matmul at SmolLM2-135M's shapes, GFLOP per CPU-second (per wall second)", "",
             "| rows at a time | " + " | ".join(ceiling["rows"]) + " |", "|---|" + "---|" * len(ceiling["rows"]),
             "| GFLOP/s | " + " | ".join(f"{r['gflops_cpu']:.1f} ({r['gflops_wall']:.1f})" for r in ceiling["rows"].values()) + " |",
             "", f"{meta['prompts']} prompts ({', '.join(f'{k} {v}' for k, v in meta['mix'].items())}), greedy, "
             f"max_new_tokens={meta['max_new_tokens']}, 1 thread pinned to core {meta['core']} ({meta['cpu']}); "
             f"ceiling = {meta['ceiling_gflops']:.1f} GFLOP/s", "",
             "| mode | batch | prompt + generated tokens | parsed (1st try) | CPU s (wall s) | prompts per CPU-s (per wall s) "
             "| generated tokens per CPU-s | useful GFLOP per CPU-s | fraction of ceiling | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['contender']} | {r['batch_size']} | failed | | | | | | | |")
            continue
        lines.append(f"| {r['contender']} | {r['batch_size']} | {r['prompt_tokens']} + {r['tokens']} | "
                     f"{r['parsed']}/{meta['prompts']} | {r['cpu_seconds']:.1f} ({r['seconds']:.1f}) | "
                     f"{r['prompts_per_cpu_s']:.3f} ({r['prompts_per_s']:.3f}) | {r['tokens'] / r['cpu_seconds']:.1f} | "
                     f"{r['useful_gflops_cpu']:.1f} | {r['fraction_cpu']:.2f} | {r['load_average_1min']:.1f} |")
    return "\n".join(lines)


def table(meta, runs) -> str:
    labels = {"batched": "transformers backend, batched (rdrec)", "single": "`model.generate`, one prompt at a time",
              "llamacpp": "llama.cpp server (llama-cpp-python, Q4_1 GGUF)"}
    lines = [f"{meta['prompts']} prompts, greedy, max_new_tokens={meta['max_new_tokens']}, 1 thread pinned to core "
             f"{meta['core']} ({meta['cpu']})", "",
             "| contender | batch | generated tokens | seconds | tokens/s | vs one-at-a-time | load avg (2 cores) |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        if "error" in r:
            lines.append(f"| {labels[r['contender']]} | {r['batch_size']} | failed | | | |")
            continue
        sp = f"{r['speedup_vs_single']:.2f}×" if "speedup_vs_single" in r else ""
        load = f"{r['load_average_1min']:.1f}" if r.get("load_average_1min") is not None else ""
        lines.append(f"| {labels[r['contender']]} | {r['batch_size']} | {r['tokens']} | {r['seconds']:.1f} | "
                     f"{r['tokens_per_s']:.1f} | {sp} | {load} |")
    return "\n".join(lines)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
