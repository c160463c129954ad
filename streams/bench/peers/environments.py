"""Each peer that needs one gets a virtual environment of its own, made on first use (by
``cci bench --peer`` or ``make bench-peers``) under ``.cci/peers/<name>/`` in the repository:

* ``venv/``: ``python -m venv`` with the peer's pinned requirements (``PEERS``), nothing of the
  product's dependencies;
* ``src/streams``: a link to this package, on the peer's ``PYTHONPATH``, so it imports the
  pipeline's pure rules (parsing, enrichment, months, segments; they need only orjson) and not
  the product's site-packages;
* ``requirements.txt``: what was installed; a changed pin makes the environment anew.

Run as ``python -m streams.bench.peers.environments [NAME …]`` (``make bench-peers``) it makes
every peer's environment, or the named ones, and says how long each took.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from streams.bench.peers import PEERS, Peer

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # streams/
ENVIRONMENTS_DIR = PACKAGE_DIR.parent / ".cci" / "peers"
INSTALL_TIMEOUT_S = 1800.0


class PeerEnvironmentError(RuntimeError):
    """A peer's environment could not be made (pip failed, no network, …)."""


def home_of(peer: Peer) -> Path:
    return ENVIRONMENTS_DIR / peer.name


def python_of(peer: Peer) -> Path:
    """The interpreter the peer runs with: its own environment's, or the product's."""
    if not peer.own_environment:
        return Path(sys.executable)
    return home_of(peer) / "venv" / "bin" / "python"


def _stamp(peer: Peer) -> str:
    return "\n".join(peer.requirements) + "\n"


def is_ready(peer: Peer) -> bool:
    if not peer.own_environment:
        return True
    stamp = home_of(peer) / "requirements.txt"
    try:
        return python_of(peer).exists() and stamp.read_text() == _stamp(peer)
    except OSError:
        return False


def ensure(peer: Peer, say: Callable[[str], None]) -> Path:
    """The peer's interpreter, its environment made first when missing or out of date."""
    if is_ready(peer):
        return python_of(peer)
    home = home_of(peer)
    pins = " ".join(peer.requirements)
    say(f"making {peer.title}'s environment in {home} (once): pip install {pins}")
    shutil.rmtree(home, ignore_errors=True)
    (home / "src").mkdir(parents=True)
    (home / "src" / "streams").symlink_to(PACKAGE_DIR, target_is_directory=True)
    commands = [
        [sys.executable, "-m", "venv", str(home / "venv")],
        [
            str(python_of(peer)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *peer.requirements,
        ],
    ]
    for command in commands:
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise PeerEnvironmentError(f"{' '.join(command[:4])}…: {exc}") from exc
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "WARNING" not in line]
            raise PeerEnvironmentError(
                f"{' '.join(command[:4])}… exited with {done.returncode}:\n"
                + "\n".join(errors[-20:])
            )
    # Written last: an interrupted install is made anew next time.
    (home / "requirements.txt").write_text(_stamp(peer))
    return python_of(peer)


def peer_environment(peer: Peer, env: dict[str, str]) -> dict[str, str]:
    """The peer's process environment: the bench's ``CCI_*`` settings, and for a peer in its own
    environment this package alone on ``PYTHONPATH``."""
    if not peer.own_environment:
        return env
    return {**env, "PYTHONPATH": str(home_of(peer) / "src"), "PYTHONNOUSERSITE": "1"}


def main(argv: list[str] | None = None) -> int:
    names = argv if argv is not None else sys.argv[1:]
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        print(f"unknown peer {', '.join(unknown)}; choose from {', '.join(PEERS)}", file=sys.stderr)
        return 2
    for peer in [PEERS[name] for name in names] or list(PEERS.values()):
        if not peer.own_environment:
            continue
        started = time.monotonic()
        try:
            python = ensure(peer, lambda line: print(line, flush=True))
        except PeerEnvironmentError as exc:
            print(f"{peer.title}: {exc}", file=sys.stderr)
            return 1
        print(f"{peer.title}: {python} ({time.monotonic() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
