"""docs/benchmarks.md: a run of some benchmarks replaces their sections and keeps the others."""

from __future__ import annotations

from bench.__main__ import BENCHMARKS, header, render, sections_of, wrap


def test_a_named_run_replaces_only_its_own_section() -> None:
    before = render("", {name: wrap(name, f"## {name}\n\nold {name} figures") for name in BENCHMARKS})
    after = render(before, {"memory": wrap("memory", "## memory\n\nnew figures")})
    old, new = sections_of(before), sections_of(after)
    assert list(new) == list(BENCHMARKS)
    assert "new figures" in new["memory"] and "old memory figures" not in after
    assert all(new[name] == old[name] for name in BENCHMARKS if name != "memory")
    assert after.startswith(header())


def test_a_section_never_measured_is_added_in_order() -> None:
    only_gateway = render("", {"gateway": wrap("gateway", "## gateway")})
    both = render(only_gateway, {"memory": wrap("memory", "## memory")})
    assert list(sections_of(both)) == ["gateway", "memory"]
    assert render(both, {}) == both  # nothing measured: the file stays as it is


def test_a_marked_section_of_an_unlisted_benchmark_is_kept() -> None:
    previous = render("", {}) + "\n" + wrap("retired", "## retired\n\nfigures")
    after = render(previous, {"memory": wrap("memory", "## memory")})
    assert list(sections_of(after)) == ["memory", "retired"]
