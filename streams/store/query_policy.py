"""What an analyst's SQL may do, judged on ClickHouse's own parse of it (``EXPLAIN AST``).

This is the last line of defence, behind the engine's own controls (``readonly = 1`` and the
limits in ``streams/store/analyst_query.py``): readonly already refuses writes, DDL, ``SET``,
setting changes and external table functions, but not everything, e.g. the scalar ``file()``
function or chDB's ``INTO OUTFILE``. So a statement must be one ``SELECT`` (with ``WITH``,
``UNION``, subqueries), ``SHOW TABLES``, ``SHOW DATABASES``, ``DESCRIBE`` or ``EXISTS``, and
inside it:

- no ``INTO OUTFILE``, ``FORMAT`` or ``SETTINGS`` clause;
- table functions only from ``TABLE_FUNCTIONS`` (generators, no I/O);
- no function in ``REFUSED_FUNCTIONS`` or starting with a ``REFUSED_FUNCTION_PREFIXES`` entry
  (file and model readers, dictionaries, which may be backed by files or other servers);
- of the ``system`` database only the catalogue tables in ``SYSTEM_TABLES``: the others hold
  other queries' text, logs, users, server paths and named collections.

Names are compared case-insensitively, after ClickHouse itself removed comments, quoting and
spacing; pure (no engine) so every rule is unit-tested.
"""

from __future__ import annotations

import re

STATEMENTS = frozenset({"SelectWithUnionQuery", "ShowTables", "DescribeQuery", "ExistsTableQuery"})
TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "values", "generate_series", "generateseries"}
)
REFUSED_FUNCTIONS = frozenset(
    {
        "file",
        "catboostevaluate",
        "modelevaluate",
        "joinget",
        "joingetornull",
        "getclienthttpheader",
        "getserversetting",
        "filesystemavailable",
        "filesystemcapacity",
        "filesystemunreserved",
        # Table functions that reach files, URLs, other servers or programs, refused wherever
        # they appear (not only after FROM).
        *("url", "urlcluster", "filecluster", "s3", "s3cluster", "gcs", "hdfs", "hdfscluster"),
        *("azureblobstorage", "azureblobstoragecluster", "remote", "remotesecure", "cluster"),
        *("clusterallreplicas", "mysql", "postgresql", "sqlite", "mongodb", "redis", "jdbc"),
        *("odbc", "executable", "input", "dictionary", "merge", "loop", "deltalake", "iceberg"),
        *("hudi", "ytsaurus", "arrowflight", "prometheusquery", "timeseriesdata"),
    }
)
REFUSED_FUNCTION_PREFIXES = ("dict",)  # dictGet*, dictHas, dictIsIn, …
SYSTEM_TABLES = frozenset(
    {
        "one",
        "numbers",
        "numbers_mt",
        "zeros",
        "zeros_mt",
        "tables",
        "columns",
        "databases",
        "parts",
        "functions",
        "table_functions",
        "data_type_families",
        "settings",
        "metrics",  # engine counters (cci soak reads MemoryTracking); no names or hosts
    }
)

# One line of EXPLAIN AST: indentation, node type, then its name (and alias, children count).
_NODE = re.compile(r"^(?P<indent> *)(?P<kind>\w+)(?: (?P<name>[^ ]+))?")


# Every SHOW but SHOW CREATE has the AST "ShowTables" (SHOW CLUSTERS, MERGES, SETTINGS,
# DICTIONARIES, FILESYSTEM CACHES… read system tables analysts may not), so a SHOW is judged on
# ClickHouse's canonical text of it: only SHOW TABLES / DATABASES [FROM db] [[NOT] [I]LIKE 's']
# [LIMIT n], with no INTO OUTFILE or FORMAT after it.
_IDENTIFIER = r"(?:[A-Za-z_][A-Za-z0-9_]*|`(?:[^`\\]|\\.)*`)"
_STRING = r"'(?:[^'\\]|\\.)*'"
_SHOW = re.compile(
    rf"SHOW (?:TABLES(?: FROM {_IDENTIFIER})?|DATABASES)"
    rf"(?: (?:NOT )?I?LIKE {_STRING})?(?: LIMIT [0-9]+)?"
)


def refusal(ast: str, text: str = "") -> str | None:
    """Why the statement whose ``EXPLAIN AST`` text this is may not run, or None if it may.

    ``text`` is ClickHouse's canonical text of it (``formatQuerySingleLine``), needed for SHOW.
    """
    lines = [line for line in ast.splitlines() if line.strip()]
    if not lines:
        return "empty statement"
    root = _NODE.match(lines[0])
    if root is None or root.group("kind") not in STATEMENTS:
        kind = root.group("kind") if root else lines[0]
        return f"only SELECT, SHOW TABLES, DESCRIBE and EXISTS may run (this is {kind})"
    if root.group("kind") == "ShowTables":
        if _SHOW.fullmatch(text.strip()):
            return None
        return "only SHOW TABLES [FROM db] [LIKE 'pattern'] and SHOW DATABASES may run"
    if root.group("kind") == "SelectWithUnionQuery" and "(children 1)" not in lines[0]:
        # The root's further children are INTO OUTFILE, FORMAT and SETTINGS.
        return "INTO OUTFILE, FORMAT and SETTINGS clauses are not allowed"
    table_expression_depth: int | None = None
    for line in lines[1:]:
        node = _NODE.match(line)
        if node is None:
            continue
        depth, kind = len(node.group("indent")), node.group("kind")
        name = (node.group("name") or "").lower()
        if table_expression_depth is not None and depth <= table_expression_depth:
            table_expression_depth = None
        if kind == "Set":
            return "SETTINGS clauses are not allowed"
        if kind == "TableExpression":
            table_expression_depth = depth
        elif kind == "Function":
            if table_expression_depth == depth - 1 and name not in TABLE_FUNCTIONS:
                return f"table function {node.group('name')} is not allowed"
            if name in REFUSED_FUNCTIONS or name.startswith(REFUSED_FUNCTION_PREFIXES):
                return f"function {node.group('name')} is not allowed"
        elif kind in {"TableIdentifier", "Identifier"}:
            database, _, table = name.partition(".")
            if database == "system" and table.split(".")[0] not in SYSTEM_TABLES:
                return f"table {node.group('name')} is not open to analysts"
    return None
