"""deploy/grafana/: every SQL query of every ClickHouse panel and variable runs on the embedded
ClickHouse with the real schema (Grafana's macros and variables substituted, every value of a
query variable tried) and returns rows; every panel names a provisioned data source."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import product
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams import domain
from streams.store.clickhouse import Store, open_store
from tests.integration.harness import store_with_figures

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
CLICKHOUSE = "grafana-clickhouse-datasource"
# The dashboard's time range in the test: the twelve months up to February 2026.
FROM, TO = datetime(2025, 3, 1, tzinfo=UTC), datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC)
DIMENSIONS = ("plan", "product", "region", "tenure", "channel")


def figures() -> dict[tuple[int, str, str], tuple[int, int]]:
    """Two months; per dimension one segment inside the 20–30 % band, one above, one below."""
    rows: dict[tuple[int, str, str], tuple[int, int]] = {}
    for label in ("2026-01", "2026-02"):
        month = domain.month_from_label(label)
        rows[(month, "all", "all")] = (75, 300)
        for dimension in DIMENSIONS:
            rows[(month, dimension, "inside")] = (25, 100)
            rows[(month, dimension, "above")] = (40, 100)
            rows[(month, dimension, "below")] = (10, 100)
    return rows


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    env = store_with_figures(
        tmp_path_factory.mktemp("grafana"), figures(), datetime(2026, 2, 20, tzinfo=UTC)
    )
    with open_store(env["CCI_CLICKHOUSE_URL"], read_only=True) as opened:
        yield opened


def expand_macros(sql: str) -> str:
    """The plugin's macros, as grafana-clickhouse-datasource expands them."""
    start, end = int(FROM.timestamp()), int(TO.timestamp())
    interval = 86400
    replacements = [
        (
            r"\$__dateFilter\((\w+)\)",
            rf"\1 >= toDate('{FROM:%Y-%m-%d}') AND \1 <= toDate('{TO:%Y-%m-%d}')",
        ),
        (r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({start}) AND \1 <= toDateTime({end})"),
        (
            r"\$__timeInterval\((\w+)\)",
            rf"toStartOfInterval(toDateTime(\1), INTERVAL {interval} second)",
        ),
        (r"\$__fromTime\b", f"toDateTime({start})"),
        (r"\$__toTime\b", f"toDateTime({end})"),
        (r"\$__interval_s\b", str(interval)),
    ]
    for pattern, replacement in replacements:
        sql = re.sub(pattern, replacement, sql)
    return sql


def substitute(sql: str, values: dict[str, str]) -> str:
    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name not in values:
            raise AssertionError(f"unknown variable ${name} in {sql!r}")
        return values[name]

    sql = re.sub(r"\$\{(\w+)(:\w+)?\}|\$(?!__)(\w+)", variable, expand_macros(sql))
    assert "$" not in sql, f"an unexpanded macro or variable is left in {sql!r}"
    return sql


def variable_values(dashboard: dict[str, Any], store: Store) -> Iterator[dict[str, str]]:
    """Every combination of the dashboard's variables: each value a query variable's own query
    returns, a textbox's default."""
    choices: dict[str, list[str]] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["type"] == CLICKHOUSE
            result = store.query(substitute(variable["query"], {}))
            choices[variable["name"]] = [str(row[0]) for row in result.rows]
            assert choices[variable["name"]], f"variable {variable['name']} has no values"
        elif variable["type"] in {"textbox", "constant", "custom"}:
            choices[variable["name"]] = [str(variable["query"]).split(",")[0]]
        else:
            raise AssertionError(f"variable type {variable['type']} is not handled here")
    names = list(choices)
    for combination in product(*(choices[name] for name in names)):
        yield dict(zip(names, combination, strict=True))


def clickhouse_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["rawSql"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == CLICKHOUSE
    ]


def test_there_are_the_three_dashboards() -> None:
    uids = {json.loads(path.read_text())["uid"] for path in DASHBOARDS}
    assert uids == {"cci-segments", "cci-contact-rate", "cci-pipeline"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.stem)
def test_every_clickhouse_query_runs_on_the_real_schema(path: Path, store: Store) -> None:
    dashboard = json.loads(path.read_text())
    queries = clickhouse_queries(dashboard)
    if path.stem == "cci-pipeline":
        assert not queries  # Prometheus only
        return
    assert queries
    ran = 0
    for values in variable_values(dashboard, store):
        for title, sql in queries:
            result = store.query(substitute(sql, values))
            assert result.rows, f"{path.name} '{title}' with {values} returned no rows"
            ran += 1
    assert ran >= len(queries) * (len(DIMENSIONS) if dashboard["templating"]["list"] else 1)


def test_the_segment_panels_cover_every_dimension() -> None:
    dashboard = json.loads((GRAFANA / "dashboards" / "cci-segments.json").read_text())
    shown = {
        match
        for _, sql in clickhouse_queries(dashboard)
        for match in re.findall(r"dimension = '(\w+)'", sql)
    }
    assert shown >= {"all", *DIMENSIONS}


def test_every_panel_uses_a_provisioned_data_source() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "cci.yml").read_text()
    )["datasources"]
    kinds = {source["uid"]: source["type"] for source in provisioned}
    assert kinds == {"cci-clickhouse": CLICKHOUSE, "cci-prometheus": "prometheus"}
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for node in (panel, *panel["targets"]):
                source = node["datasource"]
                assert kinds.get(source["uid"]) == source["type"], f"{path.name}: {source}"


def test_the_provider_loads_the_folder_the_dashboards_are_mounted_in() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "cci.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"] == "/var/lib/grafana/dashboards"
