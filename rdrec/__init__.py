"""rdrec: LLM-distilled sequential recommendation under one evaluation protocol."""

__version__ = "0.1.0"
