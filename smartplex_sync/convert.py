"""The small conversions the flows and the store share, each once: blank → None, epoch seconds → an
aware UTC datetime, and cutting a list into batches. Pure: no I/O, no clock.

It imports nothing of the project, so `smartplex_sync.store` and `flows` both import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TypeVar

_T = TypeVar("_T")


def blank_to_none(value: Any) -> str | None:
    """`value` as text; None for None and for the empty string (how Plex and Tautulli say "unknown")."""
    return None if value is None or value == "" else str(value)


def from_epoch(seconds: float) -> datetime:
    """Unix seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


def chunked(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """`items` in lists of `size` (the last may be shorter), in order; nothing for no items."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, not {size}")
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
