"""The stages' own arithmetic (the Faust glue is exercised by the integration tests)."""

from __future__ import annotations

from streams import metrics
from streams.pipeline.enrich import ActiveFact, TicketFact
from streams.worker.stages import _count_repeats


def repeats(kind: str) -> float:
    value = metrics.registry.get_sample_value("cci_repeat_facts_total", {"kind": kind})
    return value or 0.0


def test_repeats_are_the_facts_of_each_kind_that_did_not_win() -> None:
    active = [ActiveFact(f"u{n}", 24314, n, ("a",)) for n in range(5)]
    tickets = [TicketFact(f"t{n}", 24314, n, ("a", "chat"), "u") for n in range(3)]
    before = repeats("active"), repeats("ticket")
    changed = {24314: [active[0], tickets[0]], 24315: [active[1]]}
    _count_repeats([*tickets, *active], changed)
    assert (repeats("active") - before[0], repeats("ticket") - before[1]) == (3, 2)
