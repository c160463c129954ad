"""deploy/k8s/: every manifest validates against the Kubernetes schemas (offline, strict: no
unknown fields), and the pieces fit together: names, labels, ports, paths and settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streams.settings import load_settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) → manifest, over every file."""
    found = {}
    for path in MANIFESTS:
        for doc in documents(path):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_every_manifest_is_valid_kubernetes(path: Path) -> None:
    docs = documents(path)
    assert docs
    for doc in docs:
        # Raises ValidationError naming the field; strict refuses fields the schema lacks.
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_an_invalid_manifest_is_refused() -> None:
    (statefulset,) = documents(K8S / "statefulset.yaml")
    statefulset["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)
    statefulset["spec"]["replicas"] = 2
    statefulset["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {path.name for path in MANIFESTS} - {"secret.template.yaml"}
    assert {image["name"] for image in kustomization["images"]} == {"cci-stream"}


def test_the_settings_of_configmap_and_secret_load() -> None:
    found = resources()
    config = found[("ConfigMap", "cci-config")]["data"]
    secret = found[("Secret", "cci-secrets")]["stringData"]
    assert not set(config) & set(secret)
    settings = load_settings({**config, **secret})  # SettingsError names a bad one
    assert settings.clickhouse_url.startswith("https://")
    assert "CCI_CLICKHOUSE_URL" not in config and "CCI_KAFKA_SASL_PASSWORD" not in config


def test_the_statefulset_runs_workers_as_the_issue_asks() -> None:
    found = resources()
    config = found[("ConfigMap", "cci-config")]["data"]
    statefulset = found[("StatefulSet", "cci-worker")]
    spec = statefulset["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["cci", "worker"]
    assert container["image"] == "cci-stream"
    assert {
        ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]
    } == {
        "cci-config",
        "cci-secrets",
    }
    (port,) = container["ports"]
    assert port["containerPort"] == int(config["CCI_WEB_PORT"])
    assert config["CCI_WEB_HOST"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "web"}
    assert container["livenessProbe"]["httpGet"]["path"] != "/health"
    assert container["resources"]["requests"]["cpu"] == "2"
    assert container["resources"]["limits"]["cpu"] == "2"
    assert pod["terminationGracePeriodSeconds"] >= 30
    # The state volume: one claim per worker, mounted where CCI_DATA_DIR points.
    (claim,) = spec["volumeClaimTemplates"]
    (mount,) = container["volumeMounts"]
    assert mount == {"name": claim["metadata"]["name"], "mountPath": config["CCI_DATA_DIR"]}
    # Labels: the selector picks the pods, the Services and the budget pick the same ones.
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert found[("Service", spec["serviceName"])]["spec"]["clusterIP"] == "None"
    for kind, name in [("Service", "cci-worker-headless"), ("Service", "cci-web")]:
        assert found[(kind, name)]["spec"]["selector"].items() <= labels.items()
        (service_port,) = found[(kind, name)]["spec"]["ports"]
        assert service_port["targetPort"] == port["name"]
    budget = found[("PodDisruptionBudget", "cci-worker")]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert spec["replicas"] <= int(config["CCI_PARTITIONS"])


def test_the_job_creates_the_topics_with_the_same_settings() -> None:
    found = resources()
    job = found[("Job", "cci-topics-create")]["spec"]["template"]["spec"]
    (container,) = job["containers"]
    assert container["command"] == ["cci", "topics", "create"]
    assert {
        ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]
    } == {
        "cci-config",
        "cci-secrets",
    }
    assert job["restartPolicy"] in {"OnFailure", "Never"}


def test_the_in_cluster_prometheus_config_finds_the_workers_headless_service() -> None:
    found = resources()
    config = found[("ConfigMap", "cci-config")]["data"]
    prometheus = yaml.safe_load((K8S.parent / "prometheus" / "prometheus-k8s.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    (dns,) = job["dns_sd_configs"]
    (name,) = dns["names"]
    service, namespace = name.split(".")[:2]
    headless = found[("Service", service)]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert namespace == "cci"  # the namespace deploy/k8s/README.md deploys into
    assert dns["port"] == int(config["CCI_WEB_PORT"])
