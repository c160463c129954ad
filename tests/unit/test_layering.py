"""Which way the imports of ``streams`` run, once the package is regrouped by concept (issue 14).

Written against the layout ``tools/regroup.py`` makes; after that script has run, this file moves
to ``tests/unit/test_layering.py``. Two kinds of check: what a module's source imports (every
``import`` statement, functions' lazy ones included), and what importing a module really loads
(in a fresh interpreter, so nothing an earlier test imported hides a dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import streams

STREAMS = Path(streams.__file__).resolve().parent

# The packages and modules a production worker or `cci topics create` needs.
PRODUCTION = ("pipeline", "worker", "kafka", "sink", "store", "web")
PRODUCTION_MODULES = (
    "domain",
    "settings",
    "settings_values",
    "topics",
    "logs",
    "metrics",
    "forecast",
)
# Below the worker: what the worker composes must not reach back up into it.
BELOW_WORKER = ("pipeline", "kafka", "sink", "store", "web")
PURE = ("streams.domain", "streams.forecast", "streams.pipeline")
CLIENT_LIBRARIES = ("faust", "mode", "aiokafka", "clickhouse_connect", "chdb", "aiohttp")


def module_name(path: Path) -> str:
    parts = path.relative_to(STREAMS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(*names: str) -> list[Path]:
    """The .py files of the named subpackages and top-level modules of streams."""
    files: list[Path] = []
    for name in names:
        package, module = STREAMS / name, STREAMS / f"{name}.py"
        assert package.is_dir() or module.is_file(), f"streams/{name} is missing"
        files += sorted(package.rglob("*.py")) if package.is_dir() else [module]
    return files


def streams_imports(path: Path) -> set[str]:
    """Every streams module a file's import statements name, lazy imports included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("streams.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "streams":
                names |= {f"streams.{alias.name}" for alias in node.names}
            elif node.module.startswith("streams."):
                names.add(node.module)
    return names


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def loaded_by(*modules: str) -> set[str]:
    """The modules a fresh interpreter holds after importing `modules`."""
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += "print('\\n'.join(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_production_code_names_no_development_or_benchmark_module() -> None:
    offending = {
        module_name(path): sorted(
            name
            for name in streams_imports(path)
            if within(name, "streams.dev", "streams.bench", "streams.cli")
        )
        for path in source_files(*PRODUCTION, *PRODUCTION_MODULES)
    }
    assert {module: names for module, names in offending.items() if names} == {}


def test_what_the_worker_composes_does_not_import_the_worker() -> None:
    offending = {
        module_name(path): sorted(
            name for name in streams_imports(path) if within(name, "streams.worker")
        )
        for path in source_files(
            *BELOW_WORKER, "domain", "settings", "settings_values", "logs", "metrics"
        )
    }
    assert {module: names for module, names in offending.items() if names} == {}


def test_the_dashboard_reads_no_store() -> None:
    offending = {
        module_name(path): sorted(
            name for name in streams_imports(path) if within(name, "streams.store", "streams.sink")
        )
        for path in source_files("web/dashboard")
    }
    assert {module: names for module, names in offending.items() if names} == {}


def test_cci_worker_loads_no_development_or_benchmark_code() -> None:
    # The worker's entry point (`cci worker`) and its ingest child process.
    loaded = loaded_by("streams.worker.run", "streams.worker.ingest_process")

    assert "streams.worker.app" in loaded  # the worker really was imported
    assert sorted(m for m in loaded if within(m, "streams.dev", "streams.bench")) == []


def test_the_pure_rules_load_no_client_library() -> None:
    pure = [module_name(path) for path in source_files("domain", "forecast", "pipeline")]
    loaded = loaded_by(*pure)

    assert {"streams.domain", "streams.pipeline.deduplicate"} <= loaded
    assert all(within(m, *PURE) for m in pure)
    assert sorted({m.split(".")[0] for m in loaded} & set(CLIENT_LIBRARIES)) == []


def test_the_cli_imports_its_commands_only_when_they_run() -> None:
    # `cci --help` and `cci settings` stay fast: no Kafka, Faust or ClickHouse client at import.
    loaded = loaded_by("streams.cli")

    assert "streams.cli" in loaded
    assert sorted({m.split(".")[0] for m in loaded} & set(CLIENT_LIBRARIES)) == []
    assert sorted(m for m in loaded if within(m, "streams.worker", "streams.dev")) == []


def test_the_topic_catalogue_does_not_load_the_faust_app() -> None:
    loaded = loaded_by("streams.topics")

    assert "streams.topics" in loaded
    assert sorted(m for m in loaded if within(m, "streams.worker") or m == "faust") == []
