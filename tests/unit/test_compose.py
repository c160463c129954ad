"""docker-compose.yml and deploy/Dockerfile, checked by reading: no Docker engine is needed.
(What a running stack does is not proved here: no Docker engine runs on the development machines.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
WORKERS = ("worker-1", "worker-2")


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


def test_the_stack_has_kafka_clickhouse_topics_workers_prometheus_and_grafana(
    services: dict[str, Any],
) -> None:
    assert set(services) == {"kafka", "clickhouse", "topics", *WORKERS, "prometheus", "grafana"}
    assert _image_name(services["kafka"]) == "apache/kafka"
    assert _image_name(services["clickhouse"]) == "clickhouse/clickhouse-server"


def test_kafka_runs_kraft_with_an_internal_and_a_host_listener(services: dict[str, Any]) -> None:
    environment = _environment(services["kafka"])
    assert set(environment["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    advertised = environment["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:" in advertised and "localhost:" in advertised
    assert "healthcheck" in services["kafka"]


@pytest.mark.parametrize("name", WORKERS)
def test_worker_names_the_kafka_and_clickhouse_services(
    services: dict[str, Any], name: str
) -> None:
    worker = services[name]
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


@pytest.mark.parametrize("name", WORKERS)
def test_worker_is_built_from_the_dockerfile_and_runs_cci_worker(
    services: dict[str, Any], name: str
) -> None:
    worker = services[name]
    assert Path(worker["build"]["dockerfile"]) == DOCKERFILE.relative_to(REPO_ROOT)
    assert _command(worker) == ["cci", "worker"]


@pytest.mark.parametrize("name", WORKERS)
def test_worker_healthcheck_asks_for_health_on_the_web_port(
    services: dict[str, Any], name: str
) -> None:
    test = services[name]["healthcheck"]["test"]
    probe = " ".join(test) if isinstance(test, list) else test
    assert ":6066/health" in probe


@pytest.mark.parametrize("name", WORKERS)
def test_startup_order_waits_for_healthy_dependencies(services: dict[str, Any], name: str) -> None:
    topics, worker = services["topics"], services[name]
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


def test_the_two_workers_share_a_group_and_keep_their_own_state(services: dict[str, Any]) -> None:
    first, second = (services[name] for name in WORKERS)
    # Same settings, so the same app id: one consumer group sharing the partitions.
    assert _environment(first) == _environment(second)
    data_dir = _environment(first)["CCI_DATA_DIR"]
    volumes = [service["volumes"] for service in (first, second)]
    assert volumes[0] != volumes[1]
    assert all(volume.split(":")[1] == data_dir for (volume,) in volumes)
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert {volume.split(":")[0] for (volume,) in volumes} <= set(compose["volumes"])
    host_ports = {service["ports"][0].split(":")[0] for service in (first, second)}
    assert len(host_ports) == 2


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → host path (relative to the repository) of the bind mounts."""
    mounts = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source.removeprefix("./")
    return mounts


def test_prometheus_scrapes_both_workers_with_the_repos_rules(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    mounts = _mounts(prometheus)
    config_path = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_file = config_path.split("=", 1)[1]
    assert mounts[config_file] == "deploy/prometheus/prometheus.yml"
    config = yaml.safe_load((REPO_ROOT / mounts[config_file]).read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "cci-worker"  # the rules and dashboards select on it
    (targets,) = [entry["targets"] for entry in job["static_configs"]]
    web_port = _environment(services[WORKERS[0]])["CCI_WEB_PORT"]
    assert sorted(targets) == [f"{name}:{web_port}" for name in WORKERS]
    # Every rule file the config names is mounted beside it from the repository.
    for rule_file in config["rule_files"]:
        target = str(Path(config_file).parent / rule_file)
        assert mounts[target] == "deploy/prometheus/alerts.yml"


def test_grafana_has_the_plugin_the_provisioning_and_its_variables(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    environment = _environment(grafana)
    assert "grafana-clickhouse-datasource" in environment["GF_INSTALL_PLUGINS"].split(",")
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == "deploy/grafana/provisioning"
    provider = yaml.safe_load(
        (REPO_ROOT / "deploy/grafana/provisioning/dashboards/cci.yml").read_text()
    )
    assert mounts[provider["providers"][0]["options"]["path"]] == "deploy/grafana/dashboards"
    # Every ${VAR} of the data-source file is set, and names the compose services.
    datasources = (REPO_ROOT / "deploy/grafana/provisioning/datasources/cci.yml").read_text()
    for name in re.findall(r"\$\{(\w+)\}", datasources):
        assert name in environment, f"grafana does not set {name}"
    assert environment["CLICKHOUSE_HOST"] in services
    assert re.match(r"http://prometheus:9090$", environment["PROMETHEUS_URL"])
    home = environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (REPO_ROOT / "deploy/grafana/dashboards" / Path(home).name).is_file()
