"""Entry points report bad input (data or config) as one line naming file, record and field, not as a traceback."""

from __future__ import annotations

import functools

from rdrec.errors import ConfigError, DataError


def report_data_errors(main):
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (DataError, ConfigError) as err:
            raise SystemExit(f"rdrec: error: {err}") from None

    return wrapper
