"""Whole listings read through the paged client calls the syncs use, for tests that want every item or
every play in one list (the flows page themselves, with their own bookkeeping between pages)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

from flows.clients.plex import PlexClient
from flows.clients.tautulli import HISTORY_PAGE_SIZE, TautulliClient


def iter_items(
    client: PlexClient,
    section_id: int,
    type_: str,
    *,
    added_since: int | None = None,
    updated_since: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Every item of one type in a section, one `items_page` at a time, until Plex's totalSize."""
    start = 0
    while True:
        page = client.items_page(
            section_id, type_, start, added_since=added_since, updated_since=updated_since
        )
        yield from page.items
        start += len(page.items)
        if not page.items or start >= page.total_size:
            return


def get_history(
    client: TautulliClient,
    *,
    after: date | None = None,
    rating_key: str | None = None,
    page_size: int = HISTORY_PAGE_SIZE,
) -> list[dict[str, Any]]:
    """Every row of `history_pages` in one list."""
    pages = client.history_pages(after=after, rating_key=rating_key, page_size=page_size)
    return [row for page in pages for row in page.rows]
