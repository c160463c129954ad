"""The plan: each period's monthly workload at its customers and CCI, and the agents it needs,
exactly; a what-if plans each period again at a target CCI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from streams import domain


@dataclass(frozen=True)
class WhatIf:
    """``--target-cci``: the same plan at a lower (or any) CCI; with ``--minutes-per-ticket`` the
    support time the difference in tickets is worth."""

    target_cci: Fraction
    minutes_per_ticket: Fraction | None = None


@dataclass(frozen=True)
class AtTarget:
    """One period's workload at the target CCI, and what it saves against the plan."""

    cci: Fraction
    expected_tickets: Fraction
    agents_needed: Fraction
    headcount: int
    agents_not_needed: int  # plan headcount − headcount at target (negative: more are needed)
    hours_saved: Fraction | None  # support hours a month; None without minutes per ticket


@dataclass(frozen=True)
class PeriodPlan:
    """One period's monthly workload and the agents it needs, exactly."""

    period: str
    customers: int
    cci: Fraction
    expected_tickets: Fraction
    tickets_per_agent: Fraction
    agents_needed: Fraction
    headcount: int
    at_target: AtTarget | None = None


def plan(
    labels: Sequence[str],
    customers: Sequence[int],
    cci: Fraction | Sequence[Fraction],
    tickets_per_agent: Fraction,
    what_if: WhatIf | None = None,
) -> list[PeriodPlan]:
    """A plan per period; ``labels``, ``customers`` and (when a sequence, e.g. a trend) ``cci``
    pair up one to one."""
    if len(labels) != len(customers):
        raise ValueError(f"{len(labels)} period labels for {len(customers)} periods")
    ccis = [cci] * len(customers) if isinstance(cci, Fraction) else list(cci)
    if len(ccis) != len(customers):
        raise ValueError(f"{len(ccis)} CCI values for {len(customers)} periods")
    plans = []
    for label, count, ratio in zip(labels, customers, ccis, strict=True):
        expected = count * ratio
        agents = domain.agents_needed(expected, tickets_per_agent)
        people = domain.headcount(agents)
        plans.append(
            PeriodPlan(
                period=label,
                customers=count,
                cci=ratio,
                expected_tickets=expected,
                tickets_per_agent=tickets_per_agent,
                agents_needed=agents,
                headcount=people,
                at_target=None
                if what_if is None
                else _at_target(count, expected, people, tickets_per_agent, what_if),
            )
        )
    return plans


def _at_target(
    customers: int,
    expected: Fraction,
    headcount: int,
    tickets_per_agent: Fraction,
    what_if: WhatIf,
) -> AtTarget:
    tickets = customers * what_if.target_cci
    agents = domain.agents_needed(tickets, tickets_per_agent)
    people = domain.headcount(agents)
    minutes = what_if.minutes_per_ticket
    return AtTarget(
        cci=what_if.target_cci,
        expected_tickets=tickets,
        agents_needed=agents,
        headcount=people,
        agents_not_needed=headcount - people,
        hours_saved=None if minutes is None else (expected - tickets) * minutes / 60,
    )
