"""``cci bench`` and ``cci soak``: measurements on a fresh loopback broker."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

import click

from streams.cli.common import settings_of
from streams.settings import SettingsError, load_settings

T = TypeVar("T")


@click.command()
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
@click.option(
    "--peer",
    "peer_choice",
    default="quix",
    show_default=True,
    help="The peer(s) run before the pipeline: quix, bytewax, pathway or all. Bytewax and "
    "Pathway run in environments of their own, made on first use (make bench-peers).",
)
@click.option("--skip-peer", is_flag=True, help="Run no peer.")
@click.option("--skip-latency", is_flag=True, help="Do not run the latency phase.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON only.")
@click.option(
    "--recovery",
    is_flag=True,
    help="Instead: time a fail-over (a worker killed -9) with standby replicas off and on; "
    "--users sets the state (default 20,000; docs/scaling.md).",
)
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
    peer_choice: str,
    skip_peer: bool,
    skip_latency: bool,
    as_json: bool,
    recovery: bool,
) -> None:
    """Measure the pipeline against a raw consumer and peer frameworks, on a fresh broker.

    Exits 1 when the pipeline's or a peer's figures differ from the batch recount.
    """
    import importlib.util

    from streams.bench.peers import peers_of
    from streams.bench.report import exit_status, render_table, report_json
    from streams.bench.run import BenchOptions, run_bench

    try:
        peers = () if skip_peer else peers_of(peer_choice)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--peer") from None

    settings = settings_of(ctx).with_overrides(partitions=partitions)
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
    if recovery:
        from streams.bench import recovery as failover

        users = users or failover.DEFAULT_USERS
        report = _run_measurement(
            "cci bench --recovery",
            lambda: failover.run_recovery_bench(settings, users, months, seed, say=_progress),
        )
        text, status = failover.output(report, as_json)
        click.echo(text)
        sys.exit(status)
    for peer in peers:
        if not peer.script.exists():
            raise click.BadParameter(f"{peer.script} is missing", param_hint="--peer")
        if not peer.own_environment and importlib.util.find_spec("quixstreams") is None:
            raise click.BadParameter(
                f"{peer.title} needs quixstreams (pip install -e '.[dev]'); or pass --skip-peer",
                param_hint="--peer",
            )
    options = BenchOptions(
        events=events,
        users=users,
        months=months,
        offered_rate=offered_rate,
        latency_seconds=latency_seconds,
        seed=seed,
        peers=tuple(peer.name for peer in peers),
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


@click.command()
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
    from streams.bench.soak import SoakOptions, run_soak
    from streams.bench.soak_report import render_table, report_json

    settings = settings_of(ctx).with_overrides(partitions=partitions)
    options = SoakOptions(
        months=months,
        retain_months=retain_months,
        users=users,
        tickets_per_user=tickets_per_user,
        seed=seed,
    )

    report = _run_measurement("cci soak", lambda: run_soak(settings, options, say=_progress))
    click.echo(report_json(report) if as_json else render_table(report))
