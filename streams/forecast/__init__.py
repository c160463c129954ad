"""Headcount planning (``cci forecast``): customers per period × CCI → tickets → agents.

The question of the first article, "if we add customers, how many agents do we need?". CCI counts
contacts per customer per month and an agent handles so many tickets per month, so every row of a
plan is a monthly workload at that period's number of customers:

    expected tickets = customers × CCI
    agents needed    = expected tickets / tickets per agent      (domain.agents_needed)
    headcount        = agents needed rounded up                  (domain.headcount)

Every quantity is an exact ``Fraction`` (flags are parsed from their decimal text, a measured CCI is
tickets / active users), so 150 × 1.5 / 75 is exactly 3 people, never 3.0000000001 → 4. Floats
appear only in the JSON output. Pure: no click, no store, no web (docs/forecast.md).

- ``parameters``: the flags of ``cci forecast`` and parameters of ``GET /api/forecast``, the
  growth grammar, ``parse_request``;
- ``staffing``: the exact per-period plan, and a what-if (``WhatIf``) at a target CCI;
- ``trend``: a least-squares line through the monthly CCI (``fit_trend``), one CCI per period;
- ``output``: exact numbers as text, the article's table, the JSON.

``streams/store/query.py`` fetches the measured figures.
"""
