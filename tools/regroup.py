#!/usr/bin/env python3
"""Regroup the flat ``streams/`` package into concept folders (issue 14), once, on main.

Run from the repository root on a clean tree, then review, test and commit:

    .venv/bin/python tools/regroup.py            # moves with `git mv`, rewrites references
    .venv/bin/python tools/regroup.py --dry-run  # prints what it would do, changes nothing

What it does, in order:

1. creates the new packages (``__init__.py`` with a docstring) and ``git mv``s a fixed list of
   files and folders (MOVES); a move already done is skipped, so a second run changes nothing;
2. moves ``ONE_RECORD_BATCH_BYTES`` (an embedded-broker workaround the worker needs) from
   ``streams/dev/produce.py`` to ``streams/kafka/embedded.py``, so the worker imports no
   ``streams.dev`` module (skipped with a warning if that code has changed);
3. rewrites every reference to a moved module in every tracked text file (``tools/`` excepted):
   ``from streams import x`` statements, dotted names (``streams.x``, in imports, mock targets,
   ``resources.files`` and package-data strings, logger names, docs) and paths (``streams/x.py``,
   ``streams/dashboard/static``); references to modules it does not move stay as they are, so a
   module added meanwhile stays where it is and its imports of moved modules are rewritten;
4. applies a few path fixes that text rules cannot express (files located by ``__file__``);
5. sorts the imports (``ruff check --fix --select I``) and formats (``ruff format``) the Python
   files it changed, then lists any top-level module it did not place.

A module renamed by the move (``batch`` → ``recount``, ``collector`` → ``gc_policy``,
``worker`` → ``run``) imported as ``from streams import batch`` becomes
``from streams.pipeline import recount as batch``: code using it is left alone.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

# Old path → new path, files or folders (a folder moves whole, with files added to it meanwhile).
MOVES: list[tuple[str, str]] = [
    # pipeline/: the stages, pure (no Kafka, no Faust)
    ("streams/validate.py", "streams/pipeline/validate.py"),
    ("streams/enrich.py", "streams/pipeline/enrich.py"),
    ("streams/deduplicate.py", "streams/pipeline/deduplicate.py"),
    ("streams/aggregate.py", "streams/pipeline/aggregate.py"),
    ("streams/emit.py", "streams/pipeline/emit.py"),
    ("streams/alerts.py", "streams/pipeline/alerts.py"),
    ("streams/batch.py", "streams/pipeline/recount.py"),
    # worker/: what `cci worker` runs
    ("streams/app.py", "streams/worker/app.py"),
    ("streams/worker.py", "streams/worker/run.py"),
    ("streams/ingest.py", "streams/worker/ingest.py"),
    ("streams/ingest_process.py", "streams/worker/ingest_process.py"),
    ("streams/profiles.py", "streams/worker/profiles.py"),
    ("streams/alert_publisher.py", "streams/worker/alert_publisher.py"),
    ("streams/collector.py", "streams/worker/gc_policy.py"),
    # kafka/: followers, topic creation (production: `cci topics create`), broker workarounds
    ("streams/follow.py", "streams/kafka/follow.py"),
    ("streams/dev/topics.py", "streams/kafka/admin.py"),
    # sink/ and store/: the ClickHouse sink, and the one seam to ClickHouse
    ("streams/sink.py", "streams/sink/runner.py"),
    ("streams/store.py", "streams/store/clickhouse.py"),
    ("streams/query.py", "streams/store/query.py"),
    # web/
    ("streams/dashboard", "streams/web/dashboard"),
    # dev/: development tooling, never imported by the worker
    ("streams/demo.py", "streams/dev/demo.py"),
    ("streams/generate.py", "streams/dev/generate.py"),
    # bench/: the peer moves next to the benchmark that runs it (a script, not imported)
    ("bench/peers/quix_cci.py", "streams/bench/peers/quix_cci.py"),
    # modules added by this round's issues, placed by concept
    ("streams/embedded.py", "streams/kafka/embedded.py"),
    ("streams/broker_watch.py", "streams/kafka/broker_watch.py"),
    ("streams/records.py", "streams/pipeline/records.py"),
    ("streams/producer_watch.py", "streams/worker/producer_watch.py"),
    ("streams/recovery.py", "streams/worker/recovery.py"),
    ("streams/query_policy.py", "streams/store/query_policy.py"),
    ("streams/web_auth.py", "streams/web/auth.py"),
    ("streams/web_guard.py", "streams/web/guard.py"),
]

# Top-level modules that stay where they are on purpose.
STAY = {
    "__init__.py",
    "children.py",
    "redaction.py",
    "__main__.py",
    "cli.py",
    "domain.py",
    "forecast.py",
    "settings.py",
    "topics.py",
    "logs.py",
    "metrics.py",
}

NEW_PACKAGES: dict[str, str] = {
    "streams/pipeline": "The pipeline's stages as pure code (no Kafka, no Faust): validate,\n"
    "enrich, deduplicate, aggregate, emit, alerts, and the reference recount the tests compare\n"
    "against.",
    "streams/worker": "What `cci worker` runs: the Faust app and its tables, agents and timers,\n"
    "the ingest process, the profile table, the alert publisher and the garbage-collector\n"
    "policy. Nothing here imports `streams.dev` or `streams.bench`.",
    "streams/kafka": "Kafka plumbing shared by the worker and the tools: topic followers, topic\n"
    "creation (`cci topics create`) and the embedded-broker workarounds.",
    "streams/sink": "The ClickHouse sink: figures and deduplicated facts become rows, written in\n"
    "batches, with the input offsets committed only once ClickHouse has them.",
    "streams/store": "The one seam to ClickHouse (chDB embedded or a server): schema versions,\n"
    "inserts, read-only queries, and `cci query` / `cci report` on top.",
    "streams/web": "The worker's web pages beyond health and metrics: the dashboard.",
    "streams/bench/peers": "Peer implementations `cci bench` measures the pipeline against.",
}

# ONE_RECORD_BATCH_BYTES leaves streams/dev/produce.py for streams/kafka/embedded.py.
EMBEDDED_MODULE = "streams/kafka/embedded.py"
PRODUCE_MODULE = "streams/dev/produce.py"
ONE_RECORD_BLOCK = re.compile(
    r"(?m)^# The embedded broker \(Tansu[^\n]*\n(?:#[^\n]*\n)*ONE_RECORD_BATCH_BYTES = 16\n"
)
EMBEDDED_HEADER = '''"""Workarounds for the embedded development broker (Tansu).

Used only with CCI_EMBEDDED_BROKER=true; against Apache Kafka none of this is switched on.
"""

from __future__ import annotations

'''

# Fixes text rules cannot express: (file after the moves, old text, new text).
PATCHES: list[tuple[str, str, str]] = [
    # The schema files are found from the module's own place, now one folder deeper.
    (
        "streams/store/clickhouse.py",
        'Path(__file__).resolve().parent.parent / "schemas"',
        'Path(__file__).resolve().parents[2] / "schemas"',
    ),
    # Topic creation left dev/ for kafka/admin.py; the demo and the generator came in.
    (
        "streams/dev/__init__.py",
        "an embedded Kafka-compatible broker, topic creation, a JSONL producer.\n\n"
        "Nothing here is used by the worker itself; these are the pieces behind `cci dev broker`,\n"
        "`cci topics create`, `cci produce` and the integration tests.",
        "an embedded Kafka broker, a JSONL producer, the generator, the demo.\n\n"
        "Nothing here is used by the worker itself; these are the pieces behind `cci dev broker`,\n"
        "`cci produce`, `cci generate`, `cci demo` and the integration tests.",
    ),
    (
        "streams/bench/run.py",
        'PEER_SCRIPT = REPO_ROOT / "bench" / "peers" / "quix_cci.py"',
        'PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "quix_cci.py"',
    ),
    (
        "tests/unit/test_quix_peer.py",
        'parents[2] / "bench" / "peers" / "quix_cci.py"',
        'parents[2] / "streams" / "bench" / "peers" / "quix_cci.py"',
    ),
]

TEXT_NAMES = {"Makefile", "Dockerfile", "run"}
TEXT_SUFFIXES = {
    ".py", ".toml", ".md", ".sh", ".yml", ".yaml", ".cfg", ".ini", ".txt", ".js", ".html", ".css",
}  # fmt: skip
SKIP_DIRS = {".git", ".venv", "tools", "node_modules", "__pycache__"}


def module_of(path: str) -> str | None:
    """Dotted name of a module or package path under streams/, else None."""
    if not path.startswith("streams/"):
        return None
    return path.removesuffix(".py").replace("/", ".")


class Regroup:
    def __init__(self, root: Path, dry_run: bool) -> None:
        self.root = root
        self.dry_run = dry_run
        self.moved: list[str] = []
        self.skipped: list[str] = []
        self.warnings: list[str] = []
        self.changed_py: set[Path] = set()
        self.changed_files: set[Path] = set()
        self.modules = {
            old: new for o, n in MOVES if (old := module_of(o)) and (new := module_of(n))
        }
        self.dotted = self._dotted_pattern()
        self.paths = [
            (re.compile(r"(?<![\w./-])" + re.escape(old) + r"(?![\w-])"), new) for old, new in MOVES
        ]

    # --- 1. moves ------------------------------------------------------------------------------

    def git(self, *args: str) -> None:
        print("  git", " ".join(args))
        if not self.dry_run:
            subprocess.run(["git", *args], cwd=self.root, check=True)

    def make_packages(self) -> None:
        for folder, doc in NEW_PACKAGES.items():
            init = self.root / folder / "__init__.py"
            if init.exists():
                continue
            print(f"  create {folder}/__init__.py")
            self.changed_py.add(init)
            if not self.dry_run:
                init.parent.mkdir(parents=True, exist_ok=True)
                init.write_text(f'"""{doc}\n"""\n' if "\n" in doc else f'"""{doc}"""\n')
                self.git("add", str(init.relative_to(self.root)))

    def move(self) -> None:
        for old, new in MOVES:
            source, target = self.root / old, self.root / new
            if not source.exists() and target.exists():
                self.skipped.append(f"{old} → {new} (already moved)")
                continue
            if not source.exists():
                self.warnings.append(f"{old}: not found, not moved")
                continue
            if target.exists():
                self.warnings.append(f"{old}: {new} exists already, not moved")
                continue
            if not self.dry_run:
                target.parent.mkdir(parents=True, exist_ok=True)
            self.git("mv", old, new)
            self.moved.append(f"{old} → {new}")
            # git leaves a folder emptied by the move behind (bench/peers/, bench/).
            parent = source.parent
            while not self.dry_run and parent != self.root and _only_caches(parent):
                shutil.rmtree(parent)
                parent = parent.parent

    # --- 2. the embedded-broker constant -------------------------------------------------------

    def move_one_record_batch_bytes(self) -> None:
        embedded, produce = self.root / EMBEDDED_MODULE, self.root / PRODUCE_MODULE
        if embedded.exists() and "ONE_RECORD_BATCH_BYTES" in embedded.read_text():
            self.skipped.append(f"ONE_RECORD_BATCH_BYTES → {EMBEDDED_MODULE} (already moved)")
            return
        text = produce.read_text() if produce.exists() else ""
        block = ONE_RECORD_BLOCK.search(text)
        if block is None:
            self.warnings.append(
                f"ONE_RECORD_BATCH_BYTES: its definition in {PRODUCE_MODULE} changed; not moved"
            )
            return
        print(f"  ONE_RECORD_BATCH_BYTES: {PRODUCE_MODULE} → {EMBEDDED_MODULE}")
        self.moved.append(f"ONE_RECORD_BATCH_BYTES: {PRODUCE_MODULE} → {EMBEDDED_MODULE}")
        if self.dry_run:
            return
        existing = embedded.read_text() if embedded.exists() else EMBEDDED_HEADER
        embedded.write_text(existing.rstrip("\n") + "\n\n" + block.group(0))
        rest = text[: block.start()] + text[block.end() :]
        # The producer keeps using the constant: import it from its new home.
        rest = _add_import(rest, "from streams.kafka.embedded import ONE_RECORD_BATCH_BYTES")
        produce.write_text(rest)
        self.git("add", EMBEDDED_MODULE)
        self.changed_py.update({embedded, produce})
        # Importers of the constant from dev.produce: split it out of their import.
        for path in self.text_files():
            if path.suffix != ".py":
                continue
            before = path.read_text()
            after = _split_name_out(
                before, "streams.dev.produce", "ONE_RECORD_BATCH_BYTES", "streams.kafka.embedded"
            )
            if after != before:
                path.write_text(after)
                self.changed_py.add(path)

    # --- 3. references -------------------------------------------------------------------------

    def _dotted_pattern(self) -> re.Pattern[str]:
        """One pattern for every old dotted name, longest first, so nothing is rewritten twice.

        An old module that becomes a package of the same name (streams.worker, streams.sink,
        streams.store) must not match the new package's own submodules: ``streams.worker.app``
        and ``from streams.worker import app`` are already new. Their names are excluded (those
        of MOVES and those on disk); ``from streams.store import open_store`` is old.
        """
        alternatives = []
        for old in sorted(self.modules, key=len, reverse=True):
            children = {
                new[len(old) + 1 :].split(".")[0]
                for new in self.modules.values()
                if new.startswith(old + ".")
            }
            folder = self.root / old.replace(".", "/")
            if children and folder.is_dir():  # the package the old module became, once moved
                children |= {p.stem for p in folder.iterdir() if p.suffix == ".py" or p.is_dir()}
            names = "|".join(map(re.escape, sorted(children)))
            # Neither ``streams.sink.runner`` nor ``from streams.sink import runner`` is old.
            guard = (
                rf"(?!\.(?:{names})(?!\w))(?!\s+import\s+\(?\s*(?:{names})\b)" if children else ""
            )
            alternatives.append(re.escape(old) + r"(?!\w)" + guard)
        return re.compile(r"(?<![\w.])(" + "|".join(alternatives) + ")")

    def rewrite_dotted(self, text: str) -> str:
        return self.dotted.sub(lambda match: self.modules[match.group(1)], text)

    def rewrite_from_streams_import(self, text: str) -> str:
        """``from streams import a, b as c`` → one import per new parent package."""

        def split(match: re.Match[str]) -> str:
            indent, names_text = match.group(1), match.group(2)
            names = [
                n.strip() for n in names_text.strip("()").replace("\n", " ").split(",") if n.strip()
            ]
            stay: list[str] = []
            moved: list[str] = []
            for entry in names:
                name, _, alias = (part.strip() for part in entry.partition(" as "))
                new = self.modules.get(f"streams.{name}")
                if new is None:
                    stay.append(entry)
                    continue
                parent, _, base = new.rpartition(".")
                bound = alias or name
                moved.append(
                    f"{indent}from {parent} import {base}"
                    + (f" as {bound}" if bound != base else "")
                )
            if not moved:
                return match.group(0)
            lines = [f"{indent}from streams import {', '.join(stay)}"] if stay else []
            return "\n".join(lines + moved)

        return re.sub(r"(?m)^([ \t]*)from streams import (\([^)]*\)|[^\n]*?)[ \t]*$", split, text)

    def rewrite_paths(self, text: str) -> str:
        for pattern, new in self.paths:
            text = pattern.sub(new, text)
        return text

    def text_files(self) -> list[Path]:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"],
            cwd=self.root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        files = []
        for name in listed:
            path = self.root / name
            if set(Path(name).parts[:-1]) & SKIP_DIRS or not path.is_file():
                continue
            if path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES:
                files.append(path)
        return files

    def rewrite_references(self) -> None:
        for path in self.text_files():
            try:
                before = path.read_text()
            except UnicodeDecodeError:
                continue
            after = before
            after = self.rewrite_paths(self.rewrite_dotted(after))
            if path.suffix == ".py":
                after = self.rewrite_from_streams_import(after)
            if path.suffix == ".py":
                after = reflow_long_prose(before, after)
            if after == before:
                continue
            print(f"  rewrite {path.relative_to(self.root)}")
            self.changed_files.add(path)
            if path.suffix == ".py":
                self.changed_py.add(path)
            if not self.dry_run:
                path.write_text(after)

    # --- 4. path fixes -------------------------------------------------------------------------

    def patch(self) -> None:
        for name, old, new in PATCHES:
            path = self.root / name
            text = path.read_text() if path.exists() else ""
            if new in text:
                continue
            if old not in text:
                self.warnings.append(f"{name}: expected text not found, not patched: {old}")
                continue
            print(f"  patch {name}")
            if not self.dry_run:
                path.write_text(text.replace(old, new))
                self.changed_py.add(path)

    # --- 5. tidy and report --------------------------------------------------------------------

    def tidy(self) -> None:
        files = sorted(str(p) for p in self.changed_py if p.exists())
        ruff = self.root / ".venv" / "bin" / "ruff"
        if self.dry_run or not files:
            return
        if not ruff.exists():
            self.warnings.append("no .venv/bin/ruff: imports not sorted, files not formatted")
            return
        subprocess.run([str(ruff), "check", "--quiet", "--fix", "--select", "I", *files])
        subprocess.run([str(ruff), "format", "--quiet", *files], check=True)
        lint = subprocess.run(
            [str(ruff), "check", "--quiet", "--output-format", "concise", *files],
            capture_output=True,
            text=True,
        )
        for line in lint.stdout.splitlines():
            self.warnings.append(f"ruff: {line}")

    def unplaced(self) -> list[str]:
        top = self.root / "streams"
        return sorted(p.name for p in top.iterdir() if p.suffix == ".py" and p.name not in STAY)

    def run(self, step: Callable[[], None], title: str) -> None:
        print(title)
        step()


LINE_LENGTH = 100


def reflow_long_prose(before: str, after: str) -> str:
    """Rewrap the comment and docstring lines a rewrite made longer than LINE_LENGTH.

    Longer names push words over the limit: they move to the start of the next line of the
    same comment or docstring paragraph, or onto a new line. Code lines are left to ruff.
    """
    old_lines = set(before.split("\n"))
    lines = after.split("\n")
    in_docstring = _docstring_lines(after)
    i = 0
    while i < len(lines):
        line = lines[i]
        if len(line) <= LINE_LENGTH or line in old_lines:
            i += 1
            continue
        stripped = line.lstrip()
        if stripped.startswith("# ---") and line.rstrip().endswith("-"):
            lines[i] = line[:LINE_LENGTH]  # a section rule: fewer dashes
            i += 1
            continue
        comment = stripped.startswith("# ")
        if not comment and i not in in_docstring:
            i += 1
            continue
        cut = line.rfind(" ", 0, LINE_LENGTH + 1)
        indent = line[: len(line) - len(stripped)]
        prefix = indent + ("# " if comment else "")
        if cut <= len(prefix):
            i += 1
            continue
        head, overflow = line[:cut].rstrip(), line[cut + 1 :].strip()
        lines[i] = head
        following = lines[i + 1] if i + 1 < len(lines) else ""
        following_text = following.strip()
        same_paragraph = (
            following_text.startswith("# ") and not following_text.startswith("# ---")
            if comment
            else i + 1 in in_docstring
            and following_text
            and not following_text.startswith(('"""', "* ", "- "))
            and not following_text.endswith('"""')
        )
        if same_paragraph:
            follow_indent = following[: len(following) - len(following.lstrip())]
            body = following_text[2:] if comment else following_text
            lines[i + 1] = follow_indent + ("# " if comment else "") + overflow + " " + body
        else:
            lines.insert(i + 1, prefix + overflow)
            in_docstring = {n + 1 if n > i else n for n in in_docstring}
            if i in in_docstring:
                in_docstring.add(i + 1)
        i += 1
    return "\n".join(lines)


def _docstring_lines(text: str) -> set[int]:
    """0-based numbers of the lines inside multi-line string literals."""
    import io
    import tokenize

    inside: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.STRING and token.end[0] > token.start[0]:
                inside.update(range(token.start[0] - 1, token.end[0]))
    except (tokenize.TokenError, SyntaxError):
        pass
    return inside


def _only_caches(folder: Path) -> bool:
    return folder.is_dir() and all(p.name == "__pycache__" for p in folder.iterdir())


def _add_import(text: str, line: str) -> str:
    """Put an import line after the module's last top-level ``from``/``import`` line."""
    lines = text.split("\n")
    last = max(
        (i for i, x in enumerate(lines) if x.startswith(("from ", "import "))),
        default=0,
    )
    if "(" in lines[last]:  # a parenthesised import: insert after its closing line
        while ")" not in lines[last]:
            last += 1
    lines.insert(last + 1, line)
    return "\n".join(lines)


def _split_name_out(text: str, module: str, name: str, new_module: str) -> str:
    """Split `name` out of ``from module import …`` into ``from new_module import name``."""

    def split(match: re.Match[str]) -> str:
        indent, names_text = match.group(1), match.group(2)
        names = [n.strip() for n in names_text.strip("()").replace("\n", " ").split(",")]
        names = [n for n in names if n]
        if name not in names:
            return match.group(0)
        rest = [n for n in names if n != name]
        lines = [f"{indent}from {module} import {', '.join(rest)}"] if rest else []
        return "\n".join([*lines, f"{indent}from {new_module} import {name}"])

    pattern = r"(?m)^([ \t]*)from " + re.escape(module) + r" import (\([^)]*\)|[^\n]*?)[ \t]*$"
    return re.sub(pattern, split, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print, change nothing")
    args = parser.parse_args()
    root = Path(
        subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    if not (root / "streams" / "__init__.py").exists():
        print(f"{root}: no streams/ package here", file=sys.stderr)
        return 2
    regroup = Regroup(root, args.dry_run)
    regroup.run(regroup.make_packages, "packages:")
    regroup.run(regroup.move, "moves:")
    regroup.run(regroup.move_one_record_batch_bytes, "embedded-broker constant:")
    regroup.run(regroup.rewrite_references, "references:")
    regroup.run(regroup.patch, "path fixes:")
    regroup.run(regroup.tidy, "ruff (imports sorted, changed files formatted):")
    print(f"\nmoved {len(regroup.moved)}, already done {len(regroup.skipped)}")
    for line in regroup.skipped:
        print(f"  skipped: {line}")
    unplaced = [] if args.dry_run else regroup.unplaced()
    if unplaced:
        print("left in streams/ (not in the plan; place by hand):", ", ".join(unplaced))
    for warning in regroup.warnings:
        print(f"WARNING: {warning}")
    return 1 if regroup.warnings else 0


if __name__ == "__main__":
    sys.exit(main())
