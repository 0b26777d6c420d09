"""Pickle-based source files (P5's ``review_splits.pkl``, LLaRA's ``*_data.df`` frames) can run code when read:
they are read only when the data config says ``source.trust_pickles: true`` (default false)."""

from __future__ import annotations

from pathlib import Path

from rdrec.errors import DataError


def refuse_untrusted_pickle(path: Path, trusted: bool) -> None:
    if not trusted:
        raise DataError(path=path, expected="files that cannot run code",
                        got="a pickle (reading one can run any code it carries)",
                        message="set data.source.trust_pickles=true only if you trust this file")
