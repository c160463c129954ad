"""The peers ``cci bench`` measures the pipeline against: the same CCI job written as each
framework intends, each run as a process of its own.

Quix Streams runs in the product's development environment (the ``dev`` extra). Bytewax and
Pathway each run in a virtual environment of their own (``environments.py``): Pathway needs older
pyarrow and python-dateutil than the product, and its licence (Business Source License) is fine
for a benchmark but never for the product, so neither is ever a dependency of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Peer:
    name: str  # the value of ``cci bench --peer``
    title: str  # framework and version, as the report names it
    script: Path
    # Pinned requirements of its own virtual environment; empty: the product's environment.
    requirements: tuple[str, ...] = ()

    @property
    def output_topic(self) -> str:
        return f"cci-bench-peer-{self.name}"

    @property
    def own_environment(self) -> bool:
        return bool(self.requirements)


# Both need orjson and msgspec (the pipeline's parsing) and tzdata (zones without the system's
# database).
_COMMON = ("orjson==3.13.0", "msgspec==0.23.0", "tzdata==2026.6")
PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer("quix", "Quix Streams 3.28", HERE / "quix_cci.py"),
        Peer(
            "bytewax",
            "Bytewax 0.21",
            HERE / "bytewax_cci.py",
            ("bytewax[kafka]==0.21.1", "confluent-kafka==2.12.2", *_COMMON),
        ),
        Peer(
            "pathway",
            "Pathway 0.33",
            HERE / "pathway_cci.py",
            # aiokafka and mode: the worker's own profile loader (ProfileBook, a mode.Service),
            # as the Quix peer uses it.
            (
                "pathway==0.33.0",
                "pyarrow==25.0.1",
                "python-dateutil==2.9.0.post0",
                "aiokafka==0.14.0",
                "mode-streaming==0.7.1",
                *_COMMON,
            ),
        ),
    )
}
ALL = "all"


def peers_of(choice: str) -> tuple[Peer, ...]:
    """The peers ``--peer CHOICE`` runs; ValueError for an unknown name."""
    if choice == ALL:
        return tuple(PEERS.values())
    if choice not in PEERS:
        raise ValueError(f"{choice!r} is not a peer; choose one of {', '.join([*PEERS, ALL])}")
    return (PEERS[choice],)
