"""The one report a sync run publishes (`flows._runs.RunReport`), and the Plex run's line about its removal
checks: pure, so tested directly."""

from __future__ import annotations

from flows._runs import RunReport
from flows.library_sync import removal_summary


def test_a_report_gives_every_row_every_column_in_the_order_first_seen() -> None:
    report = RunReport(
        "plex-library-sync",
        [
            {"server": "Den", "outcome": "completed", "section": "Movies (1)", "added": 2},
            {"server": "Den", "outcome": "completed", "section": "removal checks", "rating_key": "7"},
        ],
        "plex-library-sync (webhook): Den: completed.",
    )
    assert report.table() == [
        {"server": "Den", "outcome": "completed", "section": "Movies (1)", "added": 2, "rating_key": ""},
        {
            "server": "Den",
            "outcome": "completed",
            "section": "removal checks",
            "added": "",
            "rating_key": "7",
        },
    ]


def test_a_report_without_servers_says_so_in_its_one_row() -> None:
    assert RunReport("tautulli-sync", [], "").table() == [{"server": "none", "outcome": "no server"}]


def test_the_removal_summary_adds_up_every_server_s_checks() -> None:
    def checks(
        removed: int, unavailable: int, still: int, unanswered: int, skipped: int
    ) -> dict[str, object]:
        return {
            "removal_checks": {
                "removed": ["r"] * removed, "unavailable": ["u"] * unavailable, "still_in_plex": ["s"] * still,
                "unanswered": ["a"] * unanswered, "skipped": ["k"] * skipped, "errors": [], "requests": 3,
            }
        }  # fmt: skip

    assert removal_summary([checks(1, 1, 0, 2, 0), {"mode": "full"}, checks(0, 1, 1, 0, 1)]) == (
        "Removal checks: 3 rows removed or marked unavailable, 1 still in Plex, 2 unanswered, 1 skipped."
    )
    assert removal_summary([{"mode": "full"}]) == ""
