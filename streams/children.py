"""Child processes that die with their parent: every process the project starts goes through here.

The mechanism is Linux's ``PR_SET_PDEATHSIG``: set in the child between fork and exec, it makes the
kernel send the child SIGKILL when its parent goes, however it goes (a SIGKILL included, which
leaves the parent no chance to stop anything). It is kept across exec, so it works for binaries
that know nothing of us (the Tansu broker) as well as for our own processes.

The kernel's "parent" is the *thread* that forked: a child started from a short-lived thread
(``asyncio.to_thread``, a thread pool) would be killed when that thread ends. So children are
forked by one daemon thread that lives as long as the process (``popen``), whichever thread asks;
code that must fork in its own thread (asyncio's ``create_subprocess_exec``, run by the event
loop's thread) passes ``die_with_parent`` as ``preexec_fn`` from a thread that lives as long as
the child.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` tying the child to the calling thread: SIGKILL when it ends."""
    parent = os.getpid()

    def preexec() -> None:
        if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)  # untied, it could outlive us: better not to run at all
        if os.getppid() != parent:
            os._exit(1)  # the parent died between fork and prctl: nobody would signal us

    return preexec


_Request = tuple[Callable[[], subprocess.Popen[bytes]], "concurrent.futures.Future[Any]"]
_requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _serve() -> None:
    while True:
        start, result = _requests.get()
        try:
            result.set_result(start())
        except BaseException as exc:  # handed to the caller, whatever it is
            result.set_exception(exc)


def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **kwargs)`` forked by the spawner thread, tied to this process."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = threading.Thread(target=_serve, name="cci-spawner", daemon=True)
            _spawner.start()
    result: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(args, preexec_fn=die_with_parent(), **kwargs)

    _requests.put((start, result))
    return result.result()
