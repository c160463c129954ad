"""The embedded store (chDB, ``chdb://PATH``): its data directory, and why its engine would not
open, which chDB says only on the process's stderr."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from streams.store.errors import StoreError


def embedded_path(url: str) -> Path | None:
    """The data directory of a ``chdb://PATH`` URL (relative paths from the working directory);
    None for a server URL."""
    if not url.startswith("chdb://"):
        return None
    location = url.removeprefix("chdb://")
    if not location or location in {"memory", ":memory:"}:
        raise StoreError(
            f"{url}: the embedded store needs a directory, e.g. chdb://.cci/clickhouse"
        )
    return Path(location).expanduser().resolve()


@contextlib.contextmanager
def stderr_copied_to(output: list[str]) -> Iterator[None]:
    """Collect what is written to the process's stderr (fd 2) meanwhile, then pass it on.

    chDB says why its engine would not start only there; its exception says "Error initializing
    EmbeddedServer" whatever the reason.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read()
            if text:
                os.write(2, text)  # nothing written meanwhile is lost
            output.append(text.decode("utf-8", errors="replace"))


_DAMAGED_DEFINITION = re.compile(r"(?:metadata file|\(in file) (/\S+?\.sql)")


def embedded_failure(path: Path, error: str, engine_output: str) -> str:
    """Why the embedded engine at ``path`` would not open, from its own output."""
    reason = next(
        (line.strip() for line in engine_output.splitlines() if "DB::Exception" in line), error
    )
    if "Cannot lock file" in engine_output:
        return f"cannot open the embedded store at {path}: another process (a worker?) has it open"
    damaged = _DAMAGED_DEFINITION.search(engine_output)
    if damaged:
        return (
            f"cannot open the embedded store at {path}: the table definition {damaged.group(1)} "
            f"is damaged ({reason}). Restore the store from a backup, or move the directory {path} "
            "away: the worker then creates a new store and its sink rebuilds it from the topics"
        )
    return f"cannot open the embedded store at {path}: {reason}"
