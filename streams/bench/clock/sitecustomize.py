"""A simulated wall clock for ``cci soak``'s worker: real time plus an offset read from a file.

``cci soak`` alone puts this directory on the worker's ``PYTHONPATH``, so Python imports this
module at interpreter start, before anything imports ``streams``. With ``CCI_SOAK_CLOCK_FILE``
set, every ``streams`` module that did ``from datetime import datetime`` gets ``SoakDatetime`` in
that name right after it is loaded: its ``now()`` is the real time plus the seconds the file
holds (as text). The pipeline reads the wall clock only through ``datetime.now(UTC)``, so
retention, too-late and future checks and versions follow the simulated calendar, and no
production code knows.

Only our modules see it: replacing ``datetime.datetime`` itself would also hand the subclass to
Cython extensions that import the type at start (clickhouse-connect's ``dataconv`` warned of a
size change and type-checks against it). ``time.time()`` is left alone: Kafka record timestamps,
timeouts and timers keep real time.
"""

from __future__ import annotations

import datetime as _datetime_module
import importlib.abc
import importlib.machinery
import os
import sys
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

CLOCK_FILE_ENV = "CCI_SOAK_CLOCK_FILE"
PATCHED_PACKAGE = "streams"
REREAD_S = 0.2  # the file is read at most this often: now() is called per batch, not per event

_RealDatetime = _datetime_module.datetime


class ClockOffset:
    """Seconds to add to the real time, from a file re-read at most every ``reread_s``.

    A missing, empty or unreadable file keeps the last value (0 at first): the soak rewrites the
    file while the worker runs, and a read may fall between its truncation and its write.
    """

    def __init__(self, path: str, reread_s: float = REREAD_S) -> None:
        self.path = path
        self.reread_s = reread_s
        self.seconds = 0.0
        self._read_at: float | None = None

    def get(self) -> float:
        moment = time.monotonic()
        if self._read_at is None or moment - self._read_at >= self.reread_s:
            self._read_at = moment
            try:
                with open(self.path, encoding="ascii") as clock:
                    text = clock.read().strip()
                if text:
                    self.seconds = float(text)
            except (OSError, ValueError):
                pass
        return self.seconds


class _SoakDatetimeType(type):
    """``isinstance(x, datetime)`` in a patched module stays true for every datetime, all of
    them being of the real class (see ``SoakDatetime``)."""

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, _RealDatetime)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, _RealDatetime)


class SoakDatetime(_RealDatetime, metaclass=_SoakDatetimeType):
    """``datetime.datetime`` whose ``now``, ``utcnow`` and ``today`` add ``offset``.

    It never makes an instance of itself: the constructor, and so every alternative constructor
    (``fromisoformat``, ``fromtimestamp``, ``combine`` … call ``cls(...)`` for a subclass),
    returns the real class, which is what orjson (it refuses subclasses) and the rest expect.
    """

    offset: ClockOffset | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> _RealDatetime:  # type: ignore[misc]
        return _RealDatetime(*args, **kwargs)

    @classmethod
    def _timestamp(cls) -> float:
        return time.time() + (cls.offset.get() if cls.offset is not None else 0.0)

    @classmethod
    def now(cls, tz: _datetime_module.tzinfo | None = None) -> _RealDatetime:
        return _RealDatetime.fromtimestamp(cls._timestamp(), tz)

    @classmethod
    def today(cls) -> _RealDatetime:
        return _RealDatetime.fromtimestamp(cls._timestamp())

    @classmethod
    def utcnow(cls) -> _RealDatetime:
        moment = _RealDatetime.fromtimestamp(cls._timestamp(), _datetime_module.UTC)
        return moment.replace(tzinfo=None)


def patch_module(module: ModuleType) -> None:
    """Point a module's ``datetime`` name (``from datetime import datetime``) at the clock."""
    if getattr(module, "datetime", None) is _RealDatetime:
        module.datetime = SoakDatetime  # type: ignore[attr-defined]


class _PatchingLoader(importlib.abc.Loader):
    """Delegates to the real loader, then patches the module it executed."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        patch_module(module)

    def __getattr__(self, name: str) -> Any:  # resource readers, get_source, …
        return getattr(self._loader, name)


class _PatchingFinder(importlib.abc.MetaPathFinder):
    """Finds ``streams`` modules through the other finders and wraps their loaders."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != PATCHED_PACKAGE and not name.startswith(PATCHED_PACKAGE + "."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def install(path: str) -> None:
    """Give every ``streams`` module imported from now on the clock offset by ``path``."""
    SoakDatetime.offset = ClockOffset(path)
    sys.meta_path.insert(0, _PatchingFinder())


if os.environ.get(CLOCK_FILE_ENV):
    install(os.environ[CLOCK_FILE_ENV])
