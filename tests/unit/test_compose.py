"""docker-compose.yml and deploy/Dockerfile, checked by reading: no Docker engine is needed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    return dict(compose["services"])


def _image_name(service: dict[str, Any]) -> str:
    return str(service["image"]).split(":", 1)[0]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    # Compose accepts a mapping or a list of NAME=value strings.
    if isinstance(environment, list):
        return dict(entry.split("=", 1) for entry in environment)
    return {name: str(value) for name, value in environment.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else list(command)


def test_the_stack_has_kafka_clickhouse_topics_and_worker(services: dict[str, Any]) -> None:
    assert set(services) >= {"kafka", "clickhouse", "topics", "worker"}
    assert _image_name(services["kafka"]) == "apache/kafka"
    assert _image_name(services["clickhouse"]) == "clickhouse/clickhouse-server"


def test_kafka_runs_kraft_with_an_internal_and_a_host_listener(services: dict[str, Any]) -> None:
    environment = _environment(services["kafka"])
    assert set(environment["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    advertised = environment["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:" in advertised and "localhost:" in advertised
    assert "healthcheck" in services["kafka"]


def test_worker_names_the_kafka_and_clickhouse_services(services: dict[str, Any]) -> None:
    worker = services["worker"]
    environment = _environment(worker)
    kafka_host = environment["CCI_KAFKA_BOOTSTRAP"].split(":")[0]
    clickhouse_host = re.match(r"https?://(?:[^@/]*@)?([^:/]+)", environment["CCI_CLICKHOUSE_URL"])

    assert kafka_host == "kafka"
    assert clickhouse_host is not None and clickhouse_host.group(1) == "clickhouse"
    assert environment["CCI_WEB_HOST"] == "0.0.0.0"
    assert environment["CCI_WEB_PORT"] == "6066"
    # The internal listener the worker uses must be one Kafka advertises on the compose network.
    kafka_advertised = _environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert f"//{environment['CCI_KAFKA_BOOTSTRAP']}" in kafka_advertised


def test_worker_is_built_from_the_dockerfile_and_runs_cci_worker(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert Path(worker["build"]["dockerfile"]) == DOCKERFILE.relative_to(REPO_ROOT)
    assert _command(worker) == ["cci", "worker"]


def test_worker_healthcheck_asks_for_health_on_the_web_port(services: dict[str, Any]) -> None:
    test = services["worker"]["healthcheck"]["test"]
    probe = " ".join(test) if isinstance(test, list) else test
    assert ":6066/health" in probe


def test_startup_order_waits_for_healthy_dependencies(services: dict[str, Any]) -> None:
    topics, worker = services["topics"], services["worker"]
    assert _command(topics) == ["cci", "topics", "create"]
    bootstrap = _environment(worker)["CCI_KAFKA_BOOTSTRAP"]
    assert _environment(topics)["CCI_KAFKA_BOOTSTRAP"] == bootstrap
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert worker["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "clickhouse": {"condition": "service_healthy"},
        "topics": {"condition": "service_completed_successfully"},
    }
    for name in worker["depends_on"]:
        if name != "topics":
            assert "healthcheck" in services[name], f"{name} has no healthcheck to wait for"


def test_dockerfile_installs_with_the_lock_and_runs_cci_worker_as_non_root() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0].startswith("FROM python:3.11-slim")
    assert any("-c constraints.txt" in line for line in instructions)
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert instructions[-1] == 'CMD ["cci", "worker"]'
