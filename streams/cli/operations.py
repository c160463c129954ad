"""``cci settings``, ``cci topics create`` and ``cci worker``: what production runs."""

from __future__ import annotations

import asyncio
from dataclasses import fields

import click

from streams.cli.common import resolved, settings_of
from streams.redaction import shown_setting
from streams.settings import Settings, describe_settings


@click.command("settings")
@click.pass_context
def settings_command(ctx: click.Context) -> None:
    """List every CCI_* environment variable: its value now, default and meaning."""
    settings = settings_of(ctx)
    click.echo(f"{'variable':<28} {'value':<24} {'default':<24} meaning")
    for (env, default, doc), spec in zip(describe_settings(), fields(Settings), strict=True):
        shown = shown_setting(settings, spec.name)
        click.echo(f"{env:<28} {shown:<24} {default!s:<24} {doc}")


@click.group()
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

    settings = settings_of(ctx).with_overrides(kafka_bootstrap=bootstrap, partitions=partitions)
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


@click.command()
@click.option("--bootstrap", help="Kafka bootstrap servers (default: CCI_KAFKA_BOOTSTRAP).")
@click.option("--web-port", type=click.IntRange(1, 65535), help="Default: CCI_WEB_PORT.")
@click.option("--app-id", help="Faust app id / consumer group (default: CCI_APP_ID).")
@click.pass_context
def worker(
    ctx: click.Context, bootstrap: str | None, web_port: int | None, app_id: str | None
) -> None:
    """Run the Faust worker: all agents, the web server (/health, /metrics) and the sink."""
    from streams.worker.run import run_worker

    settings = settings_of(ctx).with_overrides(
        kafka_bootstrap=bootstrap, web_port=web_port, app_id=app_id
    )
    run_worker(resolved(settings))
