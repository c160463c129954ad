"""The query policy on ClickHouse's EXPLAIN AST text (as chDB 26.9 prints it); the engine's side
is in tests/integration/test_clickhouse_store.py."""

from __future__ import annotations

import pytest

from streams.store.query_policy import refusal

SELECT_FROM = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      {table}
"""


def test_plain_selects_of_the_store_pass() -> None:
    assert refusal(SELECT_FROM.format(table="TableIdentifier cci_segment_monthly")) is None
    assert refusal(SELECT_FROM.format(table="TableIdentifier system.tables (alias t)")) is None
    assert refusal(SELECT_FROM.format(table="Function numbers (children 1)")) is None
    assert refusal("ShowTables", "SHOW TABLES") is None


@pytest.mark.parametrize(
    "text",
    [
        "SHOW TABLES",
        "SHOW TABLES FROM system LIKE 'x%'",
        "SHOW TABLES FROM `my db` NOT ILIKE 'it\\'s' LIMIT 3",
        "SHOW DATABASES",
        "SHOW DATABASES LIKE 'c%'",
    ],
)
def test_show_tables_and_databases_pass(text: str) -> None:
    assert refusal("ShowTables (children 1)\n Identifier system", text) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SHOW CLUSTERS",
        "SHOW CLUSTER x",
        "SHOW MERGES",
        "SHOW SETTINGS LIKE 'max%'",
        "SHOW DICTIONARIES",
        "SHOW FILESYSTEM CACHES",
        "SHOW FULL TABLES",
        "SHOW TABLES FROM system INTO OUTFILE 'x'",
        "SHOW TABLES LIKE 'a' INTO OUTFILE 'x'",
        "SHOW TABLES FORMAT JSON",
    ],
)
def test_other_shows_are_refused(text: str) -> None:
    assert "only SHOW TABLES" in str(refusal("ShowTables", text))


def test_table_functions_and_secret_tables_are_refused_whatever_their_casing() -> None:
    assert "table function" in str(refusal(SELECT_FROM.format(table="Function URL (children 1)")))
    assert "table function" in str(refusal(SELECT_FROM.format(table="Function view (children 1)")))
    assert "not open" in str(refusal(SELECT_FROM.format(table="TableIdentifier system.processes")))
    assert "not open" in str(refusal(SELECT_FROM.format(table="TableIdentifier SYSTEM.Users")))


def test_other_statements_and_output_clauses_are_refused() -> None:
    assert "KillQueryQuery" in str(refusal("KillQueryQuery Literal_UInt64_1 ASYNC (children 1)"))
    assert "SYSTEM" in str(refusal("SYSTEM query"))
    assert refusal("Set") == "only SELECT, SHOW TABLES, DESCRIBE and EXISTS may run (this is Set)"
    assert refusal("") == "empty statement"
    # INTO OUTFILE / FORMAT / SETTINGS hang off the root as further children.
    assert "INTO OUTFILE" in str(refusal("SelectWithUnionQuery (children 2)\n ExpressionList"))


def test_refused_functions_anywhere_in_the_tree() -> None:
    nested = SELECT_FROM.format(table="TableIdentifier t") + "   Function in (children 1)\n"
    for name in ("file", "FILE", "dictGetString", "url", "remoteSecure", "joinGet"):
        refused = refusal(nested + f"    Function {name} (children 1)\n")
        assert refused == f"function {name} is not allowed", name
    assert refusal(nested + "    Function toStartOfMonth (children 1)\n") is None
    # IN system.x
    assert refusal(nested + "    Identifier system.processes\n") == (
        "table system.processes is not open to analysts"
    )
