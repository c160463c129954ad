"""deploy/prometheus/: the alert rules and the scrape config, checked and unit-tested by promtool,
and every metric the rules name is one the worker serves."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from streams import metrics
from tests.integration.prometheus import PROMTOOL, binary_or_skip

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = binary_or_skip(PROMTOOL)
    return subprocess.run([binary, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_rules_and_the_config() -> None:
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 5 rules found" in rules.stdout
    for config_file in ("prometheus.yml", "prometheus-k8s.yml"):
        config = promtool("check", "config", config_file)
        assert config.returncode == 0, config.stdout + config.stderr
        job = yaml.safe_load((DEPLOY / config_file).read_text())["scrape_configs"][0]
        assert job["job_name"] == "cci-worker"  # the rules and the dashboards select on it


def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((DEPLOY / "alerts.test.yml").read_text())
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    assert alerts == tested


def served_metric_names() -> set[str]:
    """The series names the worker's registry serves (a counter's with ``_total``)."""
    return {
        family.name + ("_total" if family.type == "counter" else "")
        for family in metrics.registry.collect()
    }


def expressions(node: object) -> list[str]:
    """Every PromQL ``expr`` string in a parsed YAML or JSON document."""
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in expressions(value)]
    if isinstance(node, list):
        return [e for value in node for e in expressions(value)]
    return []


def test_the_rules_and_the_dashboards_name_only_metrics_the_worker_serves() -> None:
    served = served_metric_names()
    documents = {DEPLOY / "alerts.yml": yaml.safe_load((DEPLOY / "alerts.yml").read_text())}
    for path in sorted((DEPLOY.parent / "grafana").rglob("*.json")):
        documents[path] = json.loads(path.read_text())
    assert expressions(documents[DEPLOY.parent / "grafana" / "dashboards" / "cci-pipeline.json"])
    for path, document in documents.items():
        exprs = expressions(document)
        named = {name for expr in exprs for name in re.findall(r"\bcci_[a-z_]+", expr)}
        unknown = named - served
        assert not unknown, f"{path.name} names metrics the worker does not serve: {unknown}"
