"""``cci forecast``: agents needed from customers and the CCI (docs/forecast.md)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from streams.cli.common import settings_of
from streams.forecast.output import json_text, table_cells
from streams.forecast.parameters import ParameterError, Request, parse_request
from streams.forecast.staffing import PeriodPlan
from streams.settings import Settings


@click.command("forecast")
@click.option(
    "--customers",
    required=True,
    metavar="N[,N…]",
    help="Customers in each period (100,150,200,250), or in the first period with --growth.",
)
@click.option(
    "--growth",
    metavar="N/UNIT|P%/UNIT",
    help="Project from one --customers value: 50/quarter adds 50 customers a quarter, 10%/month "
    "compounds 10% a month. UNIT (month, quarter, year) is the length of a period.",
)
@click.option(
    "--periods",
    metavar="N",
    help="Periods to project with --growth (default: as many as --labels, else 4).",
)
@click.option(
    "--labels",
    metavar="L[,L…]",
    help="Period names (default Q1, Q2, …; M1… or Y1… with a monthly or yearly --growth).",
)
@click.option(
    "--cci",
    "cci_text",
    metavar="X",
    help="Contacts per customer per month (default: the CCI measured in the store).",
)
@click.option("--dimension", help="Measured CCI of this dimension, with --segment (default: all).")
@click.option("--segment", help="Measured CCI of this segment, with --dimension (default: all).")
@click.option(
    "--month", help="YYYY-MM of the measured CCI (default: the latest month before this one)."
)
@click.option(
    "--tickets-per-agent", required=True, metavar="X", help="Tickets one agent handles a month."
)
@click.option(
    "--target-cci",
    metavar="X",
    help="What if the CCI were X: adds the headcount at X and the agents not needed.",
)
@click.option(
    "--minutes-per-ticket",
    metavar="M",
    help="With --target-cci: minutes a ticket takes, to add the support hours a month saved.",
)
@click.option(
    "--trend-months",
    metavar="N",
    help="Project the CCI with a least-squares line through the segment's N (2 or more) latest "
    "complete months, instead of one flat measured CCI.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people; json: one object per period (what GET /api/forecast answers).",
)
@click.pass_context
def forecast_command(
    ctx: click.Context,
    customers: str,
    growth: str | None,
    periods: str | None,
    labels: str | None,
    cci_text: str | None,
    dimension: str | None,
    segment: str | None,
    month: str | None,
    tickets_per_agent: str,
    target_cci: str | None,
    minutes_per_ticket: str | None,
    trend_months: str | None,
    fmt: str,
) -> None:
    """How many agents: customers × CCI = tickets a month, ÷ tickets per agent, rounded up.

    Every figure is monthly, at each period's number of customers. Without --cci, the CCI is the
    store's (segment all|all unless --dimension/--segment) for --month, by default the latest month
    before the current one (in CCI_TIMEZONE) that has active users; with --trend-months N, a
    least-squares line through the N latest such months, projected to each period
    (docs/forecast.md).
    """
    given = {
        "customers": customers,
        "growth": growth,
        "periods": periods,
        "labels": labels,
        "cci": cci_text,
        "dimension": dimension,
        "segment": segment,
        "month": month,
        "tickets_per_agent": tickets_per_agent,
        "target_cci": target_cci,
        "minutes_per_ticket": minutes_per_ticket,
        "trend_months": trend_months,
    }
    try:
        request = parse_request(
            {name: text for name, text in given.items() if text is not None}, name=_flag
        )
    except ParameterError as exc:
        raise click.BadParameter(str(exc), param_hint=_flag(exc.parameter)) from None
    plans, source = _forecast_plan(ctx, request)
    if fmt == "json":
        if request.cci is None:
            click.echo(f"Headcount plan: {source}", err=True)  # stdout stays pure JSON
        click.echo(json_text(plans), nl=False)
        return
    from streams.store.report import render_table

    headers, rows = table_cells(plans)
    numeric = [False, *(True for _ in plans)]
    click.echo(f"Headcount plan: {source}\n\n{render_table(headers, rows, numeric)}")


def _flag(parameter: str) -> str:
    """``tickets_per_agent`` → ``--tickets-per-agent``: the flag of a forecast parameter."""
    return "--" + parameter.replace("_", "-")


def _forecast_plan(ctx: click.Context, request: Request) -> tuple[list[PeriodPlan], str]:
    """The plan and where its CCI comes from; exits 1 when the store cannot answer or has no
    figure."""
    from streams.redaction import redact_url
    from streams.store.query import NoFigure, QueryError, forecast_plan

    settings = settings_of(ctx) if request.cci is None else Settings()
    try:
        return forecast_plan(settings, request, datetime.now(UTC), name=_flag)
    except QueryError as exc:
        click.echo(str(exc), err=True)
    except NoFigure as exc:
        click.echo(f"{exc} (store: {redact_url(settings.clickhouse_url)})", err=True)
    sys.exit(1)
