"""``cci dev broker``, ``cci generate``, ``cci produce`` and ``cci demo``: development on
loopback."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from streams.cli.common import resolved, settings_of


@click.group()
def dev() -> None:
    """Development helpers (embedded broker)."""


@dev.command("broker")
@click.option("--port", type=click.IntRange(1, 65535), default=9092, show_default=True)
def dev_broker(port: int) -> None:
    """Run the embedded Kafka-compatible broker (Tansu) on 127.0.0.1:PORT until stopped."""
    from streams.dev.broker import run_foreground

    sys.exit(run_foreground(port))


@click.command()
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

    settings = settings_of(ctx).with_overrides(kafka_bootstrap=bootstrap)
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
        from streams.dev.produce import key_of, load_records

        settings = resolved(settings)
        from streams.settings import TOPIC_ACTIVITY, TOPIC_PROFILES, TOPIC_TICKETS

        for topic, lines in (
            (TOPIC_PROFILES, dataset.profiles),
            (TOPIC_ACTIVITY, dataset.activity),
            (TOPIC_TICKETS, dataset.tickets),
        ):
            count = _loading(
                topic,
                load_records(
                    settings.kafka_bootstrap,
                    topic,
                    ((key_of(line), line) for line in lines),
                    embedded_broker=bool(settings.embedded_broker),
                    client_kwargs=settings.kafka_client_kwargs(),
                ),
            )
            click.echo(f"produced {count} records to {topic}")


def _loading(topic: str, load: Coroutine[Any, Any, int]) -> int:
    """Run a load; a broker's refusal or loss ends the command with one line, not a traceback."""
    from aiokafka.errors import KafkaError

    try:
        return asyncio.run(load)
    except KafkaError as exc:
        raise click.ClickException(
            f"loading {topic} failed: {exc}; records read before the failure may have been produced"
        ) from None


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", required=True, help="Topic to write to.")
@click.option("--bootstrap", help="Kafka bootstrap servers (default: CCI_KAFKA_BOOTSTRAP).")
@click.pass_context
def produce(ctx: click.Context, file: Path, topic: str, bootstrap: str | None) -> None:
    """Load JSON-lines events from FILE into TOPIC, keyed by user_id."""
    from streams.dev.produce import MAX_REQUEST_BYTES, oversized_lines, produce_jsonl

    # A pipe can be read only once: its lines are checked as they are sent instead.
    if file.is_file() and (oversized := oversized_lines(file)):
        (number, size), more = oversized[0], len(oversized) - 1
        raise click.ClickException(
            f"{file}: line {number} makes a record of {size:,} bytes, over the "
            f"{MAX_REQUEST_BYTES:,} a produce request may carry"
            f"{f' ({more} more such lines)' if more else ''}; nothing was produced"
        )
    settings = resolved(settings_of(ctx).with_overrides(kafka_bootstrap=bootstrap))
    count = _loading(
        topic,
        produce_jsonl(
            settings.kafka_bootstrap,
            topic,
            file,
            embedded_broker=bool(settings.embedded_broker),
            client_kwargs=settings.kafka_client_kwargs(),
        ),
    )
    click.echo(f"produced {count} records to {topic}")


@click.command()
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

    sys.exit(run_demo(settings_of(ctx), users=users, rate=rate, run_for=run_for))
