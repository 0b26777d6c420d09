"""vLLM's offline engine (``vllm.LLM``), for GPU machines: tensor parallelism, continuous batching.

vLLM is imported only when this backend is built (it is not a dependency of rdrec; ``pip install vllm`` on a
CUDA machine). One process drives all GPUs of the engine (``tensor_parallel_size``): run ``rdrec-generate``
with a single-device trainer (``trainer=gpu``), not DDP. Each prompt gets its own ``SamplingParams(seed=…)``,
so answers do not depend on batch composition. The chat template of the model's tokenizer is applied; a chat
ending in an assistant message is continued (the opening follows the generation prompt, and the returned text is
opening + continuation); ``stop`` becomes ``SamplingParams.stop`` (the start of the next numbered part).
"""

from __future__ import annotations

from rdrec.teacher.backends.base import Backend, Generation, GenerationParams, Stop, join_opening, split_opening


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model: str, model_id: str | None = None, tensor_parallel_size: int = 1, dtype: str = "auto",
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.9, trust_remote_code: bool = False,
                 **engine_kwargs):
        self.model = model
        self.model_id = model_id or str(model)
        self.engine_kwargs = {"tensor_parallel_size": tensor_parallel_size, "dtype": dtype,
                              "gpu_memory_utilization": gpu_memory_utilization, "trust_remote_code": trust_remote_code,
                              **({"max_model_len": max_model_len} if max_model_len else {}), **engine_kwargs}
        self._llm = None
        self._sampling_params = None

    def describe(self) -> dict:
        return {**super().describe(), "tensor_parallel_size": self.engine_kwargs["tensor_parallel_size"]}

    def setup(self, device=None) -> None:
        if self._llm is not None:
            return
        try:
            from vllm import LLM, SamplingParams
        except ImportError as err:
            raise ImportError("teacher backend 'vllm' needs vLLM on a CUDA machine: pip install vllm "
                              f"(or use teacher=transformers / teacher=openai): {err}") from err
        self._sampling_params = SamplingParams
        self._llm = LLM(model=self.model, **self.engine_kwargs)

    def generate(self, chats: list[list[dict]], seeds: list[int], params: GenerationParams,
                 stop: Stop | None = None) -> list[Generation]:
        self.setup()
        tokenizer = self._llm.get_tokenizer()
        split = [split_opening(c) for c in chats]
        texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) + o for c, o in split]
        sampling = [self._sampling_params(
            n=1, seed=int(s), max_tokens=params.max_new_tokens,
            temperature=params.temperature if params.do_sample else 0.0,
            top_p=params.top_p if params.do_sample else 1.0,
            repetition_penalty=params.repetition_penalty,
            **({"stop": stop.strings()} if stop is not None else {})) for s in seeds]
        outs = self._llm.generate(texts, sampling_params=sampling, use_tqdm=False)
        result = []
        for (_, opening), out in zip(split, outs):
            completion = out.outputs[0]
            result.append(Generation(text=join_opening(opening, completion.text), prompt_tokens=len(out.prompt_token_ids or []),
                                     completion_tokens=len(completion.token_ids or []),
                                     finish_reason=str(completion.finish_reason or "")))
        return result
