"""``cci query`` and ``cci report``: analysts reading the ClickHouse store."""

from __future__ import annotations

import sys

import click

from streams.cli.common import settings_of


@click.command("query")
@click.argument("sql")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "jsonl", "csv"]),
    default="table",
    show_default=True,
    help="table for people; jsonl and csv keep values exact.",
)
@click.pass_context
def query_command(ctx: click.Context, sql: str, fmt: str) -> None:
    """Run read-only SQL against the ClickHouse store (CCI_CLICKHOUSE_URL) and print the result.

    With the embedded store, a running worker (on CCI_WEB_PORT) answers; otherwise the store is
    opened directly. A failing query prints ClickHouse's error and exits with status 1.
    """
    from streams.store.query import QueryError, run_query
    from streams.store.report import format_result

    try:
        result = run_query(settings_of(ctx), sql)
    except QueryError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(format_result(result, fmt))


@click.command()
@click.option("--month", help="YYYY-MM (default: the latest month with figures).")
@click.option("--dimension", help="Only this dimension: plan, product, region, tenure, channel…")
@click.pass_context
def report(ctx: click.Context, month: str | None, dimension: str | None) -> None:
    """CCI per segment for a month, with the change from the month before."""
    from streams.store.query import QueryError, run_query
    from streams.store.report import REPORT_SQL, render_report, report_parameters

    try:
        parameters = report_parameters(month, dimension)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from None
    try:
        result = run_query(settings_of(ctx), REPORT_SQL, parameters)
    except QueryError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(render_report(result))
