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
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import TypeVar

import click

from streams import forecast
from streams.settings import (
    Settings,
    SettingsError,
    describe_settings,
    load_settings,
    show_value,
)

T = TypeVar("T")


def _settings(ctx: click.Context) -> Settings:
    """The environment's settings, read when a command runs (so --help works with a bad value)."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.UsageError(str(exc), ctx) from None


def _resolved(settings: Settings) -> Settings:
    """``settings`` with CCI_EMBEDDED_BROKER=auto decided by asking the broker."""
    from streams.embedded import DetectError, resolve

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
        value = getattr(settings, spec.name)
        shown = show_value(value)
        if "PASSWORD" in env and shown:
            shown = "***"
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
    from streams.dev.topics import create_topics
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
    from streams.worker import run_worker

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
    from streams import generate as generator

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
    from streams.query import QueryError, format_result, run_query

    try:
        result = run_query(_settings(ctx), sql)
    except QueryError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(format_result(result, fmt))


@cli.command()
@click.option("--month", help="YYYY-MM (default: the latest month with figures).")
@click.option("--dimension", help="Only this dimension: plan, product, region, tenure, channel…")
@click.pass_context
def report(ctx: click.Context, month: str | None, dimension: str | None) -> None:
    """CCI per segment for a month, with the change from the month before."""
    from streams.query import REPORT_SQL, QueryError, render_report, report_parameters, run_query

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


def _parsed(flag: str, parse: Callable[[str], T], text: str) -> T:
    """``parse(text)``, its ValueError turned into a usage error naming ``flag`` (exit 2)."""
    try:
        return parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from None


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
    type=click.IntRange(1, forecast.MAX_PERIODS),
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
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people; json: one object per period.",
)
@click.pass_context
def forecast_command(
    ctx: click.Context,
    customers: str,
    growth: str | None,
    periods: int | None,
    labels: str | None,
    cci_text: str | None,
    dimension: str | None,
    segment: str | None,
    month: str | None,
    tickets_per_agent: str,
    fmt: str,
) -> None:
    """How many agents: customers × CCI = tickets a month, ÷ tickets per agent, rounded up.

    Every figure is monthly, at each period's number of customers. Without --cci, the CCI is the
    store's (segment all|all unless --dimension/--segment) for --month, by default the latest month
    before the current one (in CCI_TIMEZONE) that has active users.
    """
    names, counts = _forecast_periods(customers, growth, periods, labels)
    capacity = _parsed(
        "--tickets-per-agent",
        partial(forecast.parse_quantity, zero_allowed=False),
        tickets_per_agent,
    )
    if cci_text is not None:
        if dimension is not None or segment is not None or month is not None:
            raise click.UsageError(
                "--dimension, --segment and --month choose a measured CCI; leave them out with "
                "--cci",
                ctx,
            )
        cci = _parsed("--cci", partial(forecast.parse_quantity, zero_allowed=True), cci_text)
        source = f"CCI {forecast.decimal_text(cci, 4, trim=True)} (--cci)"
    else:
        cci, source = _measured_cci(ctx, dimension, segment, month)

    plans = forecast.plan(names, counts, cci, capacity)
    if fmt == "json":
        import orjson

        if cci_text is None:
            click.echo(f"Headcount plan: {source}", err=True)  # stdout stays pure JSON
        records = forecast.json_records(plans)
        click.echo(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode())
        return
    from streams.query import render_table

    headers, rows = forecast.table_cells(plans)
    numeric = [False, *(True for _ in plans)]
    click.echo(f"Headcount plan: {source}\n\n{render_table(headers, rows, numeric)}")


def _forecast_periods(
    customers: str, growth: str | None, periods: int | None, labels: str | None
) -> tuple[list[str], list[int]]:
    """The label and number of customers of every period, from ``cci forecast``'s flags."""
    counts = _parsed("--customers", forecast.parse_customers, customers)
    names = None if labels is None else _parsed("--labels", forecast.parse_labels, labels)
    unit = forecast.DEFAULT_UNIT
    if growth is not None:
        rule = _parsed("--growth", forecast.parse_growth, growth)
        if len(counts) != 1:
            raise click.BadParameter(
                f"--growth projects from one number of customers, got {len(counts)}",
                param_hint="--customers",
            )
        count = periods or (len(names) if names else forecast.DEFAULT_PERIODS)
        try:
            counts = rule.customers(counts[0], count)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--growth") from None
        unit = rule.unit
    elif periods is not None and periods != len(counts):
        raise click.BadParameter(
            f"{periods} periods but {len(counts)} --customers values", param_hint="--periods"
        )
    if names is not None and len(names) != len(counts):
        raise click.BadParameter(
            f"{len(names)} labels for {len(counts)} periods", param_hint="--labels"
        )
    return names or forecast.period_labels(unit, len(counts)), counts


def _measured_cci(
    ctx: click.Context, dimension: str | None, segment: str | None, month: str | None
) -> tuple[Fraction, str]:
    """The store's CCI for ``cci forecast`` and a line saying where it comes from; exits 1 when
    the store cannot answer or has no figure."""
    from streams.domain import ALL
    from streams.query import QueryError, measured_cci
    from streams.store import redact

    if (dimension is None) != (segment is None):
        missing = "--segment" if segment is None else "--dimension"
        raise click.BadParameter("--dimension and --segment go together", param_hint=missing)
    settings = _settings(ctx)
    dimension, segment = dimension or ALL, segment or ALL
    try:
        measured = measured_cci(settings, dimension, segment, month, datetime.now(UTC))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from None
    except QueryError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if measured is None:
        when = f"in {month}" if month else "in any month before this one"
        click.echo(
            f"no CCI for {dimension}|{segment} {when} in the store at "
            f"{redact(settings.clickhouse_url)} (a month needs active users); check the segment "
            "with `cci report`, or give --cci",
            err=True,
        )
        sys.exit(1)
    source = (
        f"CCI {forecast.decimal_text(measured.cci, 4)} measured for "
        f"{dimension}|{segment} in {measured.month} "
        f"({measured.tickets} tickets / {measured.active_users} active users)"
    )
    return measured.cci, source


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
    from streams.demo import run_demo

    sys.exit(run_demo(_settings(ctx), users=users, rate=rate, run_for=run_for))


def main() -> None:
    cli(prog_name="cci")


if __name__ == "__main__":
    main()
