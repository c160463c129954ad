"""The ``cci`` command: every entry point of the project.

Settings come from ``CCI_*`` environment variables (see ``cci settings``); flags override the ones
that matter per command. A bad flag or value exits with status 2 and a message naming it.
"""

from __future__ import annotations

import click

from streams.cli.analysts import query_command, report
from streams.cli.development import demo, dev, generate, produce
from streams.cli.forecasting import forecast_command
from streams.cli.measure import bench, soak
from streams.cli.operations import settings_command, topics, worker
from streams.cli.store import store


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cci-stream")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """cci-stream: exact, live Customer Contact Index per segment from Kafka events."""


for command in (
    settings_command,
    topics,
    worker,
    dev,
    generate,
    produce,
    demo,
    query_command,
    report,
    store,
    forecast_command,
    bench,
    soak,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="cci")
