"""Corrupt cache files are named, moved aside and recomputed, never silently trusted.

A cache file that cannot be read back (a truncated Parquet file after a full disk, a `.pt` cut
short by a kill) would otherwise fail every later run until someone deletes it by hand.
`read_or_none` reads it, or moves it aside as `<name>.corrupt-<UTC time>` with a warning that
names both paths and returns None, so the caller recomputes what it held.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from helpers import io

T = TypeVar("T")


class CorruptCacheWarning(UserWarning):
    """A cache file could not be read and was moved aside; its content is recomputed."""


def quarantine(path: Path, reason: str) -> Path:
    """Move `path` aside as `<name>.corrupt-<UTC time>` and warn, naming both; returns the new path."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    io.replace(path, aside)
    warnings.warn(
        f"cache file {path} is unreadable ({reason}); moved it aside to {aside.name} and "
        "recomputing what it held",
        CorruptCacheWarning,
        stacklevel=3,
    )
    return aside


def read_or_none(path: Path, reader: Callable[[Path], T]) -> T | None:
    """`reader(path)`, or None after moving the file aside when reading it fails."""
    try:
        return reader(path)
    except Exception as err:  # noqa: BLE001 - any failure to read back means the file is bad
        quarantine(path, f"{type(err).__name__}: {str(err)[:200]}")
        return None
