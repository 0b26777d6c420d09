"""Generation backends behind one interface (``Backend.generate``): transformers, openai, vllm."""

from rdrec.teacher.backends.base import Backend, Generation, GenerationParams

__all__ = ["Backend", "Generation", "GenerationParams"]
