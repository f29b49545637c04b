"""The conversions the flows and the store share (`smartplex_sync.convert`): pure, so tested directly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from smartplex_sync.convert import blank_to_none, chunked, from_epoch


def test_blank_to_none_keeps_every_value_but_none_and_the_empty_string() -> None:
    assert [blank_to_none(v) for v in (None, "", " ", 0, 12, "x", 1.5)] == [
        None,
        None,
        " ",
        "0",
        "12",
        "x",
        "1.5",
    ]


def test_from_epoch_is_an_aware_utc_datetime() -> None:
    assert from_epoch(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert from_epoch(1_700_000_000).tzinfo is UTC
    assert from_epoch(1_700_000_000) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_chunked_cuts_lists_and_iterators_in_order_the_last_shorter() -> None:
    assert list(chunked([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]
    assert list(chunked(iter(range(4)), 2)) == [[0, 1], [2, 3]]
    assert list(chunked([], 3)) == []
    assert list(chunked("abc", 5)) == [["a", "b", "c"]]


def test_chunked_refuses_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(chunked([1], 0))
