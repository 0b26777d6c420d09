"""Entry points report bad input as one line naming file, record and field, not as a traceback."""

from __future__ import annotations

import functools

from rdrec.errors import DataError


def report_data_errors(main):
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except DataError as err:
            raise SystemExit(f"rdrec: error: {err}") from None

    return wrapper
