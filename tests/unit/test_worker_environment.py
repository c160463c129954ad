"""``worker_environment``: the one builder of a loopback worker's environment."""

from __future__ import annotations

from pathlib import Path

from streams.dev.worker_process import worker_environment
from streams.settings import load_settings


def test_the_callers_settings_pass_on_but_not_its_kafka_or_credentials(tmp_path: Path) -> None:
    base = {
        "PATH": "/bin",
        "CCI_KAFKA_BOOTSTRAP": "prod:9092",
        "CCI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CCI_KAFKA_SASL_MECHANISM": "PLAIN",
        "CCI_KAFKA_SASL_USERNAME": "svc",
        "CCI_KAFKA_SASL_PASSWORD": "pw-never-passed",
        "CCI_WEB_HOST": "0.0.0.0",
        "CCI_TIMEZONE": "Europe/Berlin",
    }
    env = worker_environment(
        "127.0.0.1:40000",
        data_dir=tmp_path / "data",
        clickhouse_url=f"chdb://{tmp_path / 'ch'}",
        settings=load_settings(base),
        base=base,
        web_port=6070,
    )
    assert env["PATH"] == "/bin"
    assert env["CCI_TIMEZONE"] == "Europe/Berlin"
    assert env["CCI_KAFKA_BOOTSTRAP"] == "127.0.0.1:40000"
    assert env["CCI_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert env["CCI_WEB_HOST"] == "127.0.0.1"
    assert env["CCI_WEB_PORT"] == "6070"
    assert env["CCI_EMBEDDED_BROKER"] == "true"
    assert env["CCI_DATA_DIR"] == str(tmp_path / "data")
    assert not {k for k in env if k.startswith("CCI_KAFKA_SASL")}
    assert "pw-never-passed" not in env.values()
    # What it builds is a valid configuration.
    assert load_settings(env).kafka_bootstrap == "127.0.0.1:40000"


def test_without_settings_only_what_it_decides_and_the_overrides_last(tmp_path: Path) -> None:
    base = {"HOME": "/home/x", "CCI_TIMEZONE": "Europe/Berlin"}
    env = worker_environment(
        "127.0.0.1:40001",
        data_dir=tmp_path,
        clickhouse_url="chdb://x",
        base=base,
        CCI_EMIT_INTERVAL="0.3",
        CCI_WEB_HOST="::1",
    )
    assert env["HOME"] == "/home/x"
    assert "CCI_TIMEZONE" not in env and "CCI_WEB_PORT" not in env and "CCI_ALERT_RULES" not in env
    assert (env["CCI_EMIT_INTERVAL"], env["CCI_WEB_HOST"]) == ("0.3", "::1")


def test_default_alert_rules_only_when_the_caller_names_none(tmp_path: Path) -> None:
    example = tmp_path / "example.toml"
    common = {"data_dir": tmp_path, "clickhouse_url": "chdb://x", "default_alert_rules": example}
    env = worker_environment("b:1", settings=load_settings({}), base={}, **common)
    assert env["CCI_ALERT_RULES"] == str(example)
    own = tmp_path / "own.toml"
    own.write_text('[[rule]]\nname = "mine"\ndimension = "all"\nsegment = "all"\nabove = 1\n')
    settings = load_settings({"CCI_ALERT_RULES": str(own)})
    env = worker_environment("b:1", settings=settings, base={}, **common)
    assert env["CCI_ALERT_RULES"] == str(own)
