"""The ``cci`` command: every entry point of the project.

Settings come from ``CCI_*`` environment variables (see ``cci settings``); flags override the ones
that matter per command. A bad flag or value exits with status 2 and a message naming it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import click

from streams import forecast
from streams.redaction import shown_setting
from streams.settings import Settings, SettingsError, describe_settings, load_settings

T = TypeVar("T")


def _settings(ctx: click.Context) -> Settings:
    """The environment's settings, read when a command runs (so --help works with a bad value)."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.UsageError(str(exc), ctx) from None


def _resolved(settings: Settings) -> Settings:
    """``settings`` with CCI_EMBEDDED_BROKER=auto decided by asking the broker."""
    from streams.kafka.embedded import DetectError, resolve

    try:
        return resolve(settings)
    except DetectError as exc:
        click.echo(f"cci: {exc}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cci-stream")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """cci-stream: exact, live Customer Contact Index per segment from Kafka events."""


@cli.command("settings")
@click.pass_context
def settings_command(ctx: click.Context) -> None:
    """List every CCI_* environment variable: its value now, default and meaning."""
    settings = _settings(ctx)
    click.echo(f"{'variable':<28} {'value':<24} {'default':<24} meaning")
    for (env, default, doc), spec in zip(describe_settings(), fields(Settings), strict=True):
        shown = shown_setting(settings, spec.name)
        click.echo(f"{env:<28} {shown:<24} {default!s:<24} {doc}")


# --- dev -----------------------------------------------------------------------------------------


@cli.group()
def dev() -> None:
    """Development helpers (embedded broker)."""


@dev.command("broker")
@click.option("--port", type=click.IntRange(1, 65535), default=9092, show_default=True)
def dev_broker(port: int) -> None:
    """Run the embedded Kafka-compatible broker (Tansu) on 127.0.0.1:PORT until stopped."""
    from streams.dev.broker import run_foreground

    sys.exit(run_foreground(port))


# --- topics --------------------------------------------------------------------------------------


@cli.group()
def topics() -> None:
    """Topic administration."""


@topics.command("create")
@click.option("--bootstrap", help="Kafka bootstrap servers (default: CCI_KAFKA_BOOTSTRAP).")
@click.option("--partitions", type=click.IntRange(1, 1024), help="Default: CCI_PARTITIONS.")
@click.pass_context
def topics_create(ctx: click.Context, bootstrap: str | None, partitions: int | None) -> None:
    """Create the input, output and internal topics (idempotent)."""
    from streams.kafka.admin import create_topics
    from streams.topics import topic_catalogue

    settings = _settings(ctx).with_overrides(kafka_bootstrap=bootstrap, partitions=partitions)
    report = asyncio.run(
        create_topics(
            settings.kafka_bootstrap,
            topic_catalogue(settings),
            client_kwargs=settings.kafka_client_kwargs(),
        )
    )
    for name in report.created:
        click.echo(f"created  {name}")
    for name in report.existing:
        click.echo(f"exists   {name}")


# --- worker --------------------------------------------------------------------------------------


@cli.command()
@click.option("--bootstrap", help="Kafka bootstrap servers (default: CCI_KAFKA_BOOTSTRAP).")
@click.option("--web-port", type=click.IntRange(1, 65535), help="Default: CCI_WEB_PORT.")
@click.option("--app-id", help="Faust app id / consumer group (default: CCI_APP_ID).")
@click.pass_context
def worker(
    ctx: click.Context, bootstrap: str | None, web_port: int | None, app_id: str | None
) -> None:
    """Run the Faust worker: all agents, the web server (/health, /metrics) and the sink."""
    from streams.worker.run import run_worker

    settings = _settings(ctx).with_overrides(
        kafka_bootstrap=bootstrap, web_port=web_port, app_id=app_id
    )
    run_worker(_resolved(settings))


# --- generate / produce --------------------------------------------------------------------------


@cli.command()
@click.option("--users", type=click.IntRange(1, 10_000_000), default=1000, show_default=True)
@click.option("--months", type=click.IntRange(1, 120), default=3, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".cci/generated"),
    show_default=True,
    help="Directory for the JSON-lines files and expected.json.",
)
@click.option("--to-topics", is_flag=True, help="Also produce the events to the input topics.")
@click.option("--bootstrap", help="With --to-topics (default: CCI_KAFKA_BOOTSTRAP).")
@click.pass_context
def generate(
    ctx: click.Context,
    users: int,
    months: int,
    seed: int,
    out: Path,
    to_topics: bool,
    bootstrap: str | None,
) -> None:
    """Write realistic synthetic events for USERS over MONTHS, and the exact expected CCI."""
    from streams.dev import generate as generator

    settings = _settings(ctx).with_overrides(kafka_bootstrap=bootstrap)
    if months > settings.retain_months:
        raise click.BadParameter(
            f"{months} months is more than CCI_RETAIN_MONTHS={settings.retain_months}",
            param_hint="--months",
        )
    now = datetime.now(UTC)
    with click.progressbar(length=users, label="generating users", file=sys.stderr) as bar:
        dataset = generator.generate(users, months, seed, now, settings.zone, progress=bar.update)
    summary = generator.write_dataset(dataset, out, settings, now)
    click.echo(f"wrote {out}: {summary}")
    if to_topics:
        from streams.dev.produce import key_of, produce_records

        settings = _resolved(settings)
        from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS

        for topic, lines in (
            (TOPIC_PROFILES, dataset.profiles),
            (TOPIC_ACTIVITY, dataset.activity),
            (TOPIC_TICKETS, dataset.tickets),
        ):
            count = asyncio.run(
                produce_records(
                    settings.kafka_bootstrap,
                    topic,
                    ((key_of(line), line) for line in lines),
                    one_record_batches=settings.embedded_broker,
                    client_kwargs=settings.kafka_client_kwargs(),
                )
            )
            click.echo(f"produced {count} records to {topic}")


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", required=True, help="Topic to write to.")
@click.option("--bootstrap", help="Kafka bootstrap servers (default: CCI_KAFKA_BOOTSTRAP).")
@click.pass_context
def produce(ctx: click.Context, file: Path, topic: str, bootstrap: str | None) -> None:
    """Load JSON-lines events from FILE into TOPIC, keyed by user_id."""
    from streams.dev.produce import produce_jsonl

    settings = _resolved(_settings(ctx).with_overrides(kafka_bootstrap=bootstrap))
    count = asyncio.run(
        produce_jsonl(
            settings.kafka_bootstrap,
            topic,
            file,
            one_record_batches=settings.embedded_broker,
            client_kwargs=settings.kafka_client_kwargs(),
        )
    )
    click.echo(f"produced {count} records to {topic}")


# --- analysts ------------------------------------------------------------------------------------


@cli.command("query")
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
    from streams.store.query import QueryError, format_result, run_query

    try:
        result = run_query(_settings(ctx), sql)
    except QueryError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(format_result(result, fmt))


@cli.group()
def store() -> None:
    """The ClickHouse store's schema."""


@store.command("ddl")
@click.option(
    "--cluster",
    help="Print the statements for this ClickHouse cluster (default: CCI_CLICKHOUSE_CLUSTER; "
    "empty: one node).",
)
@click.pass_context
def store_ddl(ctx: click.Context, cluster: str | None) -> None:
    """Print the statements a worker applies to an empty store, in order, each ending with `;`.

    For review before a first start: the schema_migrations table, then every schema file of
    schemas/clickhouse/. On a cluster: replicated local tables, Distributed tables under the names
    analysts query, and views, all ON CLUSTER (docs/clickhouse-cluster.md).
    """
    from streams.store.clickhouse import StoreError, check_cluster_name, schema_ddl

    if cluster is None:
        cluster = _settings(ctx).clickhouse_cluster
    elif cluster:
        try:
            check_cluster_name(cluster)
        except StoreError as exc:
            raise click.BadParameter(str(exc), ctx, param_hint="--cluster") from None
    for what, statements in schema_ddl(cluster):
        click.echo(f"-- {what}")
        for statement in statements:
            click.echo(f"{statement};\n")


@cli.command()
@click.option("--month", help="YYYY-MM (default: the latest month with figures).")
@click.option("--dimension", help="Only this dimension: plan, product, region, tenure, channel…")
@click.pass_context
def report(ctx: click.Context, month: str | None, dimension: str | None) -> None:
    """CCI per segment for a month, with the change from the month before."""
    from streams.store.query import (
        REPORT_SQL,
        QueryError,
        render_report,
        report_parameters,
        run_query,
    )

    try:
        parameters = report_parameters(month, dimension)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from None
    try:
        result = run_query(_settings(ctx), REPORT_SQL, parameters)
    except QueryError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(render_report(result))


@cli.command("forecast")
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
        request = forecast.parse_request(
            {name: text for name, text in given.items() if text is not None}, name=_flag
        )
    except forecast.ParameterError as exc:
        raise click.BadParameter(str(exc), param_hint=_flag(exc.parameter)) from None
    plans, source = _forecast_plan(ctx, request)
    if fmt == "json":
        if request.cci is None:
            click.echo(f"Headcount plan: {source}", err=True)  # stdout stays pure JSON
        click.echo(forecast.json_text(plans), nl=False)
        return
    from streams.store.query import render_table

    headers, rows = forecast.table_cells(plans)
    numeric = [False, *(True for _ in plans)]
    click.echo(f"Headcount plan: {source}\n\n{render_table(headers, rows, numeric)}")


def _flag(parameter: str) -> str:
    """``tickets_per_agent`` → ``--tickets-per-agent``: the flag of a forecast parameter."""
    return "--" + parameter.replace("_", "-")


def _forecast_plan(
    ctx: click.Context, request: forecast.Request
) -> tuple[list[forecast.PeriodPlan], str]:
    """The plan and where its CCI comes from; exits 1 when the store cannot answer or has no
    figure."""
    from streams.redaction import redact_url
    from streams.store.query import NoFigure, QueryError, forecast_plan

    settings = _settings(ctx) if request.cci is None else Settings()
    try:
        return forecast_plan(settings, request, datetime.now(UTC), name=_flag)
    except QueryError as exc:
        click.echo(str(exc), err=True)
    except NoFigure as exc:
        click.echo(f"{exc} (store: {redact_url(settings.clickhouse_url)})", err=True)
    sys.exit(1)


# --- bench ---------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--events", type=click.IntRange(1000, 100_000_000), default=1_000_000, show_default=True
)
@click.option(
    "--users",
    type=click.IntRange(1, 10_000_000),
    help="Population generated (default: as many as make --events).",
)
@click.option("--months", type=click.IntRange(1, 120), default=3, show_default=True)
@click.option(
    "--partitions",
    type=click.IntRange(1, 1024),
    default=4,
    show_default=True,
    help="Partitions of every topic (CCI_PARTITIONS for the worker).",
)
@click.option(
    "--extra-dimensions",
    help="Further segment dimensions, e.g. company_size (default: CCI_EXTRA_DIMENSIONS).",
)
@click.option(
    "--offered-rate",
    type=click.IntRange(1, 1_000_000),
    default=10_000,
    show_default=True,
    help="Events per second offered in the latency phase.",
)
@click.option(
    "--latency-seconds",
    type=click.FloatRange(0, 3600, min_open=True),
    default=20.0,
    show_default=True,
    help="How long the latency phase offers events.",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--skip-peer", is_flag=True, help="Do not run the Quix Streams peer.")
@click.option("--skip-latency", is_flag=True, help="Do not run the latency phase.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON only.")
@click.pass_context
def bench(
    ctx: click.Context,
    events: int,
    users: int | None,
    months: int,
    partitions: int,
    extra_dimensions: str | None,
    offered_rate: int,
    latency_seconds: float,
    seed: int,
    skip_peer: bool,
    skip_latency: bool,
    as_json: bool,
) -> None:
    """Measure the pipeline against a raw consumer and a Quix Streams peer, on a fresh broker.

    Exits 1 when the pipeline's or the peer's figures differ from the batch recount.
    """
    import importlib.util

    from streams.bench.report import exit_status, render_table, report_json
    from streams.bench.run import PEER_SCRIPT, BenchOptions, run_bench

    settings = _settings(ctx).with_overrides(partitions=partitions)
    if extra_dimensions is not None:
        try:
            settings = load_settings({**os.environ, "CCI_EXTRA_DIMENSIONS": extra_dimensions})
        except SettingsError as exc:
            raise click.BadParameter(str(exc), param_hint="--extra-dimensions") from None
        settings = settings.with_overrides(partitions=partitions)
    if months > settings.retain_months:
        raise click.BadParameter(
            f"{months} months is more than CCI_RETAIN_MONTHS={settings.retain_months}",
            param_hint="--months",
        )
    if not skip_peer and (
        not PEER_SCRIPT.exists() or importlib.util.find_spec("quixstreams") is None
    ):
        raise click.BadParameter(
            f"the peer needs {PEER_SCRIPT} and quixstreams (pip install -e '.[dev]'); "
            "or pass --skip-peer",
            param_hint="--skip-peer",
        )
    options = BenchOptions(
        events=events,
        users=users,
        months=months,
        offered_rate=offered_rate,
        latency_seconds=latency_seconds,
        seed=seed,
        skip_peer=skip_peer,
        skip_latency=skip_latency,
    )

    report = _run_measurement("cci bench", lambda: run_bench(settings, options, say=_progress))
    click.echo(report_json(report) if as_json else render_table(report))
    sys.exit(exit_status(report))


def _progress(line: str) -> None:
    """Progress of a measurement: on stderr, so ``--json`` output stays clean."""
    click.echo(line, err=True)


def _run_measurement(command: str, run: Callable[[], T]) -> T:
    """Run ``cci bench`` or ``cci soak``: a flag found unworkable exits 2 naming it, a part that
    could not run 1, an interruption 130. SIGTERM and SIGHUP stop it the way Ctrl-C does, and
    every process it started is stopped either way."""
    import signal

    from streams.bench.run import BenchFailed, BenchUsageError

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    try:
        return run()
    except BenchUsageError as exc:
        raise click.BadParameter(str(exc), param_hint=exc.flag) from None
    except BenchFailed as exc:
        click.echo(f"{command} failed: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(f"{command} interrupted: everything it started is stopped", err=True)
        sys.exit(130)


# --- soak ----------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--months",
    type=click.IntRange(2, 240),
    default=12,
    show_default=True,
    help="Simulated calendar months the worker lives through (more than --retain-months).",
)
@click.option(
    "--retain-months",
    type=click.IntRange(1, 120),
    default=3,
    show_default=True,
    help="The worker's CCI_RETAIN_MONTHS.",
)
@click.option(
    "--users",
    type=click.IntRange(1, 10_000_000),
    default=20_000,
    show_default=True,
    help="Active users every month (the same population each month).",
)
@click.option(
    "--tickets-per-user",
    type=click.FloatRange(0, 100),
    default=0.2,
    show_default=True,
    help="Tickets a month per active user, on average.",
)
@click.option(
    "--partitions",
    type=click.IntRange(1, 1024),
    default=4,
    show_default=True,
    help="Partitions of every topic (CCI_PARTITIONS for the worker).",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON only.")
@click.pass_context
def soak(
    ctx: click.Context,
    months: int,
    retain_months: int,
    users: int,
    tickets_per_user: float,
    partitions: int,
    seed: int,
    as_json: bool,
) -> None:
    """Memory of one worker month by month while a simulated clock moves through the calendar.

    Each month gets its own traffic; RSS should stop growing once the state holds
    --retain-months months. Exits 1 when a month is not processed as expected.
    """
    from streams.bench.soak import SoakOptions, render_table, report_json, run_soak

    settings = _settings(ctx).with_overrides(partitions=partitions)
    options = SoakOptions(
        months=months,
        retain_months=retain_months,
        users=users,
        tickets_per_user=tickets_per_user,
        seed=seed,
    )

    report = _run_measurement("cci soak", lambda: run_soak(settings, options, say=_progress))
    click.echo(report_json(report) if as_json else render_table(report))


# --- demo ----------------------------------------------------------------------------------------


@cli.command()
@click.option("--users", type=click.IntRange(10, 1_000_000), default=2000, show_default=True)
@click.option(
    "--rate",
    type=click.IntRange(1, 100_000),
    default=200,
    show_default=True,
    help="Live events per second after the history is loaded.",
)
@click.option(
    "--run-for",
    type=click.FloatRange(min=0, min_open=True),
    hidden=True,
    help="Stop by itself after this many seconds (for tests).",
)
@click.pass_context
def demo(ctx: click.Context, users: int, rate: int, run_for: float | None) -> None:
    """Everything on loopback: broker, topics, worker, live traffic and a live CCI table."""
    from streams.dev.demo import run_demo

    sys.exit(run_demo(_settings(ctx), users=users, rate=rate, run_for=run_for))


def main() -> None:
    cli(prog_name="cci")


if __name__ == "__main__":
    main()
