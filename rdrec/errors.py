"""One error type for bad input: it always names the file, the record and what was expected."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """Bad or missing dataset input.

    The message reads ``<file>:<line>: field '<field>': expected <expected>, got <got>`` with the parts
    that are known, so a user can open the file at the right line.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        expected: str | None = None,
        got: object = None,
    ):
        self.path, self.line, self.field, self.expected, self.got = path, line, field, expected, got
        where = str(path) if path is not None else ""
        if line is not None:
            where += f":{line}"
        parts = [where] if where else []
        if field is not None:
            parts.append(f"field '{field}'")
        if expected is not None:
            text = f"expected {expected}"
            if got is not None:
                shown = repr(got)
                text += f", got {shown[:80] + '…' if len(shown) > 80 else shown}"
            parts.append(text)
        if message:
            parts.append(message)
        super().__init__(": ".join(parts))


class CorruptError(DataError):
    """A cache or converted file that fails its checksum (truncated, bit-flipped, half-copied): callers that can
    rebuild it move it aside and rebuild; the message names the file and the checksum that differs."""


class ConfigError(Exception):
    """A config key or value that cannot work: the message is one line naming the key, the config file it comes
    from where that is known, and what is accepted. Raised before the run does any work."""
