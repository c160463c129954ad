"""CCI_* settings: defaults, parsing, and start-up errors that name the variable."""

from __future__ import annotations

import re
from dataclasses import fields
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streams.domain import TargetRange
from streams.pipeline.alerts import AlertRules, load_rules
from streams.settings import Settings, SettingsError, describe_settings, load_settings

EVERY_VARIABLE = [spec.metadata["env"] for spec in fields(Settings)]
EXAMPLE_RULES = Path(__file__).resolve().parents[2] / "deploy" / "alert-rules.example.toml"


@pytest.fixture(autouse=True)
def no_cci_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's or CI's own CCI_* variables must not leak into these tests."""
    for name in EVERY_VARIABLE:
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = load_settings({})

    assert settings == Settings()
    assert settings.kafka_bootstrap == "localhost:9092"
    assert settings.app_id == "cci"
    assert settings.clickhouse_url == "chdb://.cci/clickhouse"
    assert settings.timezone == "UTC"
    assert settings.zone == ZoneInfo("UTC")
    assert settings.active_activities == ()
    assert settings.extra_dimensions == ()
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 6066)
    assert settings.data_dir == Path(".cci/data")
    assert (settings.partitions, settings.replication_factor) == (4, 1)
    assert settings.retain_months == 13
    assert settings.emit_interval == 0.1
    assert settings.alert_rules == AlertRules() and not settings.alert_rules.rules
    assert str(settings.target_range) == "20,30"
    assert settings.max_event_bytes == 65536
    assert settings.max_future_seconds == 86400.0
    assert settings.embedded_broker is None  # auto: asked of the broker at start-up
    assert settings.session_timeout == 10.0
    assert settings.log_level == "INFO"
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_without_an_argument_the_process_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CCI_PARTITIONS", "7")

    assert load_settings().partitions == 7


# (variable, raw value, attribute, parsed value)
VALID: list[tuple[str, str, str, Any]] = [
    ("CCI_KAFKA_BOOTSTRAP", "k1:9092,k2:9092", "kafka_bootstrap", "k1:9092,k2:9092"),
    ("CCI_KAFKA_BOOTSTRAP", "  broker:9093 ", "kafka_bootstrap", "broker:9093"),
    ("CCI_APP_ID", "cci-test", "app_id", "cci-test"),
    ("CCI_SINK_BATCH_ROWS", "200", "sink_batch_rows", 200),
    ("CCI_TARGET_RANGE_PCT", "20,30", "target_range", TargetRange(Fraction(20), Fraction(30))),
    (
        "CCI_TARGET_RANGE_PCT",
        " 2.5 , 7.75",
        "target_range",
        TargetRange(Fraction(5, 2), Fraction(31, 4)),
    ),
    ("CCI_TARGET_RANGE_PCT", "0,100", "target_range", TargetRange(Fraction(0), Fraction(100))),
    ("CCI_ALERT_RULES", str(EXAMPLE_RULES), "alert_rules", load_rules(EXAMPLE_RULES)),
    ("CCI_ALERT_RULES", " ", "alert_rules", AlertRules()),
    ("CCI_SINK_FLUSH_SECONDS", "2.5", "sink_flush_seconds", 2.5),
    ("CCI_CLICKHOUSE_URL", "chdb:///var/lib/cci", "clickhouse_url", "chdb:///var/lib/cci"),
    ("CCI_CLICKHOUSE_URL", "http://u:p@ch:8123/cci", "clickhouse_url", "http://u:p@ch:8123/cci"),
    ("CCI_CLICKHOUSE_URL", "https://ch:8443/db", "clickhouse_url", "https://ch:8443/db"),
    (
        "CCI_CLICKHOUSE_URL",
        "http://u:S3cret%2FP%40ss@[::1]:8123/db",
        "clickhouse_url",
        "http://u:S3cret%2FP%40ss@[::1]:8123/db",
    ),
    # Alone, only empty is valid: a cluster needs a server URL (tests/unit/test_store_cluster.py).
    ("CCI_CLICKHOUSE_CLUSTER", "", "clickhouse_cluster", ""),
    ("CCI_CLICKHOUSE_CLUSTER", "  ", "clickhouse_cluster", ""),
    ("CCI_TIMEZONE", "Europe/Berlin", "timezone", "Europe/Berlin"),
    ("CCI_TIMEZONE", "America/New_York", "timezone", "America/New_York"),
    ("CCI_ACTIVE_ACTIVITIES", "login, buy,,login ", "active_activities", ("login", "buy")),
    ("CCI_ACTIVE_ACTIVITIES", "", "active_activities", ()),
    ("CCI_EXTRA_DIMENSIONS", "company_size,team.x", "extra_dimensions", ("company_size", "team.x")),
    ("CCI_WEB_HOST", "0.0.0.0", "web_host", "0.0.0.0"),
    ("CCI_WEB_PORT", "8080", "web_port", 8080),
    (
        "CCI_WEB_ALLOWED_HOSTS",
        "cci.example.com:6066, [fd00::1]:6066",
        "web_allowed_hosts",
        ("cci.example.com:6066", "[fd00::1]:6066"),
    ),
    ("CCI_WEB_PORT", "1", "web_port", 1),
    ("CCI_WEB_PORT", "65535", "web_port", 65535),
    ("CCI_WEB_TOKEN", "", "web_token", ""),
    ("CCI_LIVE_STREAMS", "3", "live_streams", 3),
    ("CCI_LIVE_STREAMS_PER_CLIENT", "4", "live_streams_per_client", 4),
    ("CCI_WEB_TOKEN", " 0123456789abcdefXYZ ", "web_token", "0123456789abcdefXYZ"),
    ("CCI_DATA_DIR", "/var/lib/cci", "data_dir", Path("/var/lib/cci")),
    ("CCI_CLOCK_OFFSET_FILE", " /tmp/soak/clock ", "clock_offset_file", "/tmp/soak/clock"),
    ("CCI_PARTITIONS", "12", "partitions", 12),
    ("CCI_PARTITIONS", " 1 ", "partitions", 1),
    ("CCI_REPLICATION_FACTOR", "3", "replication_factor", 3),
    ("CCI_STANDBY_REPLICAS", "1", "standby_replicas", 1),
    ("CCI_INGEST_PROCESSES", "1", "ingest_processes", 1),
    ("CCI_INGEST_PROCESSES", "16", "ingest_processes", 16),
    ("CCI_STANDBY_REPLICAS", " 0 ", "standby_replicas", 0),
    ("CCI_RETAIN_MONTHS", "25", "retain_months", 25),
    ("CCI_EMIT_INTERVAL", "2.5", "emit_interval", 2.5),
    ("CCI_EMIT_INTERVAL", "0.01", "emit_interval", 0.01),
    ("CCI_MAX_EVENT_BYTES", "1024", "max_event_bytes", 1024),
    ("CCI_MAX_SEGMENT_CHARS", "64", "max_segment_chars", 64),
    ("CCI_MAX_SEGMENT_VALUES", "150", "max_segment_values", 150),
    ("CCI_MAX_FUTURE_SECONDS", "3600", "max_future_seconds", 3600.0),
    ("CCI_EMBEDDED_BROKER", "true", "embedded_broker", True),
    ("CCI_EMBEDDED_BROKER", "YES", "embedded_broker", True),
    ("CCI_EMBEDDED_BROKER", "1", "embedded_broker", True),
    ("CCI_EMBEDDED_BROKER", "On", "embedded_broker", True),
    ("CCI_EMBEDDED_BROKER", "false", "embedded_broker", False),
    ("CCI_EMBEDDED_BROKER", "0", "embedded_broker", False),
    ("CCI_EMBEDDED_BROKER", "no", "embedded_broker", False),
    ("CCI_EMBEDDED_BROKER", "", "embedded_broker", False),
    ("CCI_EMBEDDED_BROKER", "auto", "embedded_broker", None),
    ("CCI_EMBEDDED_BROKER", "AUTO", "embedded_broker", None),
    ("CCI_SESSION_TIMEOUT", "30", "session_timeout", 30.0),
    ("CCI_LOG_LEVEL", "debug", "log_level", "DEBUG"),
    ("CCI_LOG_FORMAT", "JSON", "log_format", "json"),
    ("CCI_KAFKA_SECURITY_PROTOCOL", "ssl", "kafka_security_protocol", "SSL"),
    ("CCI_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "kafka_sasl_mechanism", "SCRAM-SHA-512"),
    ("CCI_KAFKA_SASL_USERNAME", "cci", "kafka_sasl_username", "cci"),
    ("CCI_KAFKA_SASL_PASSWORD", "s3cret", "kafka_sasl_password", "s3cret"),
    ("CCI_KAFKA_SSL_CAFILE", "/etc/ssl/ca.pem", "kafka_ssl_cafile", "/etc/ssl/ca.pem"),
]


@pytest.mark.parametrize(("env", "raw", "attribute", "expected"), VALID)
def test_each_variable_is_parsed(env: str, raw: str, attribute: str, expected: Any) -> None:
    settings = load_settings({env: raw})

    assert getattr(settings, attribute) == expected
    others = {spec.name for spec in fields(Settings)} - {attribute}
    assert all(getattr(settings, name) == getattr(Settings(), name) for name in others)


def test_every_variable_has_a_parsing_case() -> None:
    assert {env for env, *_ in VALID} == set(EVERY_VARIABLE)


def test_the_time_zone_setting_gives_its_zone() -> None:
    assert load_settings({"CCI_TIMEZONE": "Asia/Kolkata"}).zone == ZoneInfo("Asia/Kolkata")


# (variable, raw value); each must stop start-up with a message naming the variable.
INVALID: list[tuple[str, str]] = [
    ("CCI_KAFKA_BOOTSTRAP", "   "),
    ("CCI_APP_ID", ""),
    ("CCI_CLICKHOUSE_URL", "ftp://x"),
    ("CCI_CLICKHOUSE_URL", "localhost:8123"),
    ("CCI_CLICKHOUSE_URL", "http://u:S3cret/Pass4@127.0.0.1:1/db"),  # '/' not percent-encoded
    ("CCI_CLICKHOUSE_URL", "http://u:S3cret#Pass4@ch/db"),
    ("CCI_CLICKHOUSE_URL", "http://ch:port/db"),
    ("CCI_CLICKHOUSE_CLUSTER", "prod"),  # with the embedded store (the default URL)
    ("CCI_CLICKHOUSE_CLUSTER", "a'b"),
    ("CCI_TIMEZONE", "Mars/Base"),
    ("CCI_TIMEZONE", ""),
    ("CCI_TIMEZONE", "../../etc/passwd"),
    ("CCI_ACTIVE_ACTIVITIES", "login,page view"),
    ("CCI_EXTRA_DIMENSIONS", "size;drop"),
    ("CCI_WEB_PORT", "70000"),
    ("CCI_WEB_PORT", "0"),
    ("CCI_WEB_ALLOWED_HOSTS", "evil.example"),
    ("CCI_WEB_ALLOWED_HOSTS", "http://evil.example:80"),
    ("CCI_WEB_PORT", "http"),
    ("CCI_WEB_TOKEN", "short"),
    ("CCI_LIVE_STREAMS", "0"),
    ("CCI_LIVE_STREAMS_PER_CLIENT", "0"),
    ("CCI_WEB_TOKEN", "sixteen chars with spaces"),
    ("CCI_DATA_DIR", " "),
    ("CCI_PARTITIONS", "zero"),
    ("CCI_PARTITIONS", "0"),
    ("CCI_PARTITIONS", "-3"),
    ("CCI_PARTITIONS", "2.5"),
    ("CCI_REPLICATION_FACTOR", "0"),
    ("CCI_STANDBY_REPLICAS", "-1"),
    ("CCI_INGEST_PROCESSES", "0"),
    ("CCI_INGEST_PROCESSES", "17"),
    ("CCI_INGEST_PROCESSES", "two"),
    ("CCI_STANDBY_REPLICAS", "4"),
    ("CCI_STANDBY_REPLICAS", "one"),
    ("CCI_RETAIN_MONTHS", "0"),
    ("CCI_EMIT_INTERVAL", "-1"),
    ("CCI_EMIT_INTERVAL", "0"),
    ("CCI_EMIT_INTERVAL", "soon"),
    ("CCI_EMIT_INTERVAL", "nan"),
    ("CCI_MAX_EVENT_BYTES", "64k"),
    ("CCI_MAX_SEGMENT_CHARS", "257"),
    ("CCI_MAX_SEGMENT_CHARS", "0"),
    ("CCI_MAX_SEGMENT_VALUES", "10001"),
    ("CCI_MAX_SEGMENT_VALUES", "many"),
    ("CCI_MAX_FUTURE_SECONDS", "-5"),
    ("CCI_EMBEDDED_BROKER", "maybe"),
    ("CCI_SESSION_TIMEOUT", "inf"),
    ("CCI_LOG_LEVEL", "loud"),
    ("CCI_LOG_FORMAT", "xml"),
    ("CCI_KAFKA_SECURITY_PROTOCOL", "TLS"),
    ("CCI_ALERT_RULES", "/no/such/rules.toml"),
    ("CCI_TARGET_RANGE_PCT", "30,20"),
    ("CCI_TARGET_RANGE_PCT", "25,25"),
    ("CCI_TARGET_RANGE_PCT", "20"),
    ("CCI_TARGET_RANGE_PCT", "20,30,40"),
    ("CCI_TARGET_RANGE_PCT", "-5,30"),
    ("CCI_TARGET_RANGE_PCT", "20%,30%"),
    ("CCI_TARGET_RANGE_PCT", "nan,inf"),
    ("CCI_TARGET_RANGE_PCT", ""),
]


@pytest.mark.parametrize(("env", "raw"), INVALID)
def test_an_invalid_value_names_its_variable(env: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{re.escape(env)}: ") as raised:
        load_settings({env: raw})

    assert isinstance(raised.value, ValueError)  # callers may catch the broader type


def test_segment_limits_that_could_overflow_a_partial_record_are_refused() -> None:
    # Each limit alone is in range; together they allow a partial-counts record over 1 MB.
    with pytest.raises(SettingsError, match=r"CCI_MAX_SEGMENT_VALUES: .*lower"):
        load_settings({"CCI_MAX_SEGMENT_VALUES": "1000", "CCI_MAX_SEGMENT_CHARS": "256"})
    assert load_settings({"CCI_MAX_SEGMENT_VALUES": "1000", "CCI_MAX_SEGMENT_CHARS": "16"})


def test_the_message_shows_the_bad_value() -> None:
    with pytest.raises(SettingsError, match="Mars/Base"):
        load_settings({"CCI_TIMEZONE": "Mars/Base"})


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "sasl_ssl"])
def test_a_sasl_protocol_without_a_user_names_the_user_variable(protocol: str) -> None:
    with pytest.raises(SettingsError, match="CCI_KAFKA_SASL_USERNAME"):
        load_settings({"CCI_KAFKA_SECURITY_PROTOCOL": protocol})


def test_a_sasl_protocol_with_a_user_gives_aiokafka_options() -> None:
    settings = load_settings(
        {
            "CCI_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "CCI_KAFKA_SASL_USERNAME": "cci",
            "CCI_KAFKA_SASL_PASSWORD": "pw",
        }
    )

    assert settings.kafka_client_kwargs() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "cci",
        "sasl_plain_password": "pw",
    }


def test_with_overrides_applies_given_values_and_ignores_none() -> None:
    settings = load_settings({"CCI_KAFKA_BOOTSTRAP": "from-env:9092", "CCI_WEB_PORT": "7000"})

    overridden = settings.with_overrides(kafka_bootstrap=None, web_port=7100, app_id=None)

    assert overridden.kafka_bootstrap == "from-env:9092"
    assert overridden.web_port == 7100
    assert overridden.app_id == "cci"
    assert settings.web_port == 7000  # settings are immutable: a copy was made


def test_describe_settings_lists_every_variable_once_with_its_default() -> None:
    rows = describe_settings()

    assert [env for env, _, _ in rows] == EVERY_VARIABLE
    assert len(set(EVERY_VARIABLE)) == len(EVERY_VARIABLE)
    assert all(env.startswith("CCI_") and doc.strip() for env, _, doc in rows)
    shown = {env: default for env, default, _ in rows}
    assert shown["CCI_PARTITIONS"] == "4"
    assert shown["CCI_ACTIVE_ACTIVITIES"] == ""
    assert shown["CCI_TIMEZONE"] == "UTC"
    assert shown["CCI_EMBEDDED_BROKER"] == "auto"


@pytest.mark.parametrize(
    ("env", "shown"),
    [(env, shown) for env, shown, _ in describe_settings()],
)
def test_setting_a_variable_to_its_shown_default_changes_nothing(env: str, shown: str) -> None:
    # `cci settings` prints these defaults; copying one into the environment must be accepted.
    assert load_settings({env: shown}) == Settings()


def test_a_bad_rules_file_names_the_variable_the_file_and_the_rule(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "busy"\ndimension = "plan"\nsegment = "x"\nabove = -1\n')

    with pytest.raises(SettingsError, match=rf"^CCI_ALERT_RULES: {re.escape(str(rules))}: ") as e:
        load_settings({"CCI_ALERT_RULES": str(rules)})

    assert "rule 1 ('busy'): field 'above'" in str(e.value)


def test_a_rule_on_an_extra_dimension_needs_that_dimension(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "big"\ndimension = "size"\nsegment = "*"\nabove = 1\n')

    with pytest.raises(SettingsError, match=r"^CCI_ALERT_RULES: .*'size' is not a dimension"):
        load_settings({"CCI_ALERT_RULES": str(rules)})
    settings = load_settings({"CCI_ALERT_RULES": str(rules), "CCI_EXTRA_DIMENSIONS": "size"})
    assert [rule.name for rule in settings.alert_rules.rules] == ["big"]
