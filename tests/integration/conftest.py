"""Fixtures for pipeline tests: a fresh broker per test (the topic names are the product's own)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streams.dev.broker import EmbeddedBroker
from streams.dev.generate import Dataset
from tests.integration.harness import (
    Figures,
    WorkerProcess,
    create_all_topics,
    exactness_dataset,
    worker_env,
)


@dataclass
class Pipeline:
    broker: EmbeddedBroker
    tmp_path: Path
    env: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def worker(self, name: str = "worker", **env: str) -> WorkerProcess:
        """A started, healthy worker (shares the data dir root; each has its own subdir)."""
        data_dir = self.tmp_path / name
        data_dir.mkdir(exist_ok=True)
        process = WorkerProcess(
            worker_env(self.bootstrap, data_dir, **{**self.env, **env}),
            self.tmp_path / f"{name}.log",
        )
        self.workers.append(process.start())
        process.wait_healthy()
        return process


@pytest.fixture
def pipeline(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pipeline]:
    """A fresh broker with every topic created; workers started from it are stopped at the end.

    Indirect parameters are settings for the topics and every worker, e.g.
    ``@pytest.mark.parametrize("pipeline", [{"CCI_PARTITIONS": "12"}], indirect=True)``.
    """
    env: dict[str, str] = dict(getattr(request, "param", {}))
    with EmbeddedBroker() as broker:
        create_all_topics(broker.bootstrap, **env)
        running = Pipeline(broker, tmp_path, env)
        try:
            yield running
        finally:
            for process in running.workers:
                process.stop()


@pytest.fixture(scope="module")
def dataset() -> tuple[Dataset, Figures]:
    """400 users over 3 months and the recount of their figures (the exactness tests)."""
    return exactness_dataset(seed=11)
