"""How tables read on a page: floats at 3 significant digits (the CSVs keep full precision)."""

from __future__ import annotations

import pandas as pd

SIGNIFICANT_DIGITS = 3


def reading_number(value: float) -> str:
    """A float as a reader wants it in a table: 3 significant digits, no trailing noise."""
    return f"{value:.{SIGNIFICANT_DIGITS}g}"


def use_reading_format() -> None:
    """Show every DataFrame float at 3 significant digits (display only; data and files unchanged)."""
    pd.set_option("display.float_format", reading_number)
