"""``cci store ddl``: the ClickHouse store's schema, for review."""

from __future__ import annotations

import click

from streams.cli.common import settings_of


@click.group()
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
    from streams.store.errors import StoreError
    from streams.store.schema import check_cluster_name, schema_ddl

    if cluster is None:
        cluster = settings_of(ctx).clickhouse_cluster
    elif cluster:
        try:
            check_cluster_name(cluster)
        except StoreError as exc:
            raise click.BadParameter(str(exc), ctx, param_hint="--cluster") from None
    for what, statements in schema_ddl(cluster):
        click.echo(f"-- {what}")
        for statement in statements:
            click.echo(f"{statement};\n")
