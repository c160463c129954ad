"""What every ``cci`` command shares: the settings, read when a command runs."""

from __future__ import annotations

import sys

import click

from streams.settings import Settings, SettingsError, load_settings


def settings_of(ctx: click.Context) -> Settings:
    """The environment's settings, read when a command runs (so --help works with a bad value)."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.UsageError(str(exc), ctx) from None


def resolved(settings: Settings) -> Settings:
    """``settings`` with CCI_EMBEDDED_BROKER=auto decided by asking the broker."""
    from streams.kafka.embedded import DetectError, resolve

    try:
        return resolve(settings)
    except DetectError as exc:
        click.echo(f"cci: {exc}", err=True)
        sys.exit(1)
