"""Every CCI_* name docker-compose.yml and deploy/ use is a real setting, and the values they set
load: a misspelt or invented variable would be ignored silently by the worker."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from streams.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_FILES = [
    REPO_ROOT / "docker-compose.yml",
    *sorted((REPO_ROOT / "deploy").rglob("*.yaml")),
    *sorted((REPO_ROOT / "deploy").rglob("*.yml")),
    *sorted((REPO_ROOT / "deploy").rglob("*.md")),
    REPO_ROOT / "docs" / "scaling.md",
    REPO_ROOT / "docs" / "clickhouse-cluster.md",
    REPO_ROOT / "deploy" / "Dockerfile",
]
SETTING_NAMES = {spec.metadata["env"] for spec in fields(Settings)}


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_every_cci_name_is_a_setting(path: Path) -> None:
    used = set(re.findall(r"\bCCI_[A-Z0-9_]+\b", path.read_text()))
    unknown = used - SETTING_NAMES
    assert not unknown, f"{path.name} uses {sorted(unknown)}, which are not in streams/settings.py"


def test_the_files_checked_use_settings_at_all() -> None:
    used = {
        name
        for path in DEPLOY_FILES
        for name in re.findall(r"\bCCI_[A-Z0-9_]+\b", path.read_text())
    }
    assert {"CCI_KAFKA_BOOTSTRAP", "CCI_CLICKHOUSE_URL", "CCI_DATA_DIR"} <= used


def test_the_compose_services_settings_load() -> None:
    services = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    loaded = 0
    for service in services.values():
        environment = service.get("environment", {})
        cci = {key: str(value) for key, value in environment.items() if key.startswith("CCI_")}
        if cci:
            load_settings(cci)  # SettingsError names a bad value
            loaded += 1
    assert loaded >= 3, "topics and two workers"
