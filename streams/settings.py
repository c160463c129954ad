"""Every ``CCI_*`` setting in one typed object.

Modelled on Faust's settings object: each option is named once, with its type, default and
documentation. Values come from the environment (CLI flags override some of them); an invalid value
stops start-up with a message naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.alerts import AlertRules, RulesError, check_dimensions, load_rules

# The embedded broker answers a fetch only when the consumer's fetch_max_wait_ms runs out, even
# when records arrive meanwhile (Kafka answers as soon as it has them). Faust's worker consumer
# waits 1,500 ms and aiokafka's default is 500 ms, so each hop of the pipeline added up to that.
# The pipeline's own consumers (ingest, Faust's, the sink) wait 100 ms on it instead. Not less:
# the broker also cuts a fetch short at the wait, and at 50 ms a backlog of one-record batches
# (271,000 profiles) came back nearly empty, fetch after fetch.
EMBEDDED_FETCH_MAX_WAIT_MS = 100

TOPIC_ACTIVITY = "user-activity"
TOPIC_TICKETS = "ticket-created"
TOPIC_PROFILES = "user-profile"
TOPIC_UPDATES = "cci-updates"
TOPIC_DEAD_LETTERS = "cci-dead-letters"
TOPIC_ALERTS = "cci-alerts"


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the variable."""


def _parse_str(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _parse_path(value: str) -> Path:
    return Path(_parse_str(value))


def _parse_positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise ValueError(f"must be at least 1, got {number}")
    return number


def _parse_port(value: str) -> int:
    port = _parse_positive_int(value)
    if port > 65535:
        raise ValueError(f"must be a TCP port (1-65535), got {port}")
    return port


def _parse_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not 0 < seconds <= 86400:
        raise ValueError(f"must be between 0 and 86400 seconds, got {seconds}")
    return seconds


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_auto_bool(value: str) -> bool | None:
    """``auto`` (None: decided at start-up) or a boolean."""
    if value.strip().lower() == "auto":
        return None
    try:
        return _parse_bool(value)
    except ValueError:
        raise ValueError(f"expected auto, true or false, got {value!r}") from None


def _parse_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r}") from None
    return value


_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _parse_name_list(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a valid name (letters, digits, _ . -)")
    return names


def _parse_clickhouse_url(value: str) -> str:
    if not re.match(r"^(chdb://|https?://)", value):
        raise ValueError(f"expected chdb://PATH or http(s)://user:pass@host:port/db, got {value!r}")
    return value


def _parse_security_protocol(value: str) -> str:
    allowed = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
    if value.upper() not in allowed:
        raise ValueError(f"expected one of {', '.join(sorted(allowed))}, got {value!r}")
    return value.upper()


def _parse_log_level(value: str) -> str:
    allowed = {"DEBUG", "INFO", "WARNING", "ERROR"}
    if value.upper() not in allowed:
        raise ValueError(f"expected one of {', '.join(sorted(allowed))}, got {value!r}")
    return value.upper()


def _parse_log_format(value: str) -> str:
    allowed = {"text", "json"}
    if value.lower() not in allowed:
        raise ValueError(f"expected one of {', '.join(sorted(allowed))}, got {value!r}")
    return value.lower()


def _parse_alert_rules(value: str) -> AlertRules:
    # Empty is unset (what `cci settings` shows as the default): no alerts.
    return load_rules(Path(value.strip())) if value.strip() else AlertRules()


def _setting(env: str, default: Any, parse: Callable[[str], Any], doc: str) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """The worker's and the CLI's configuration."""

    kafka_bootstrap: str = _setting(
        "CCI_KAFKA_BOOTSTRAP",
        "localhost:9092",
        _parse_str,
        "Kafka bootstrap servers, host:port[,…]",
    )
    app_id: str = _setting(
        "CCI_APP_ID", "cci", _parse_str, "Faust app id: consumer group and internal topic prefix"
    )
    clickhouse_url: str = _setting(
        "CCI_CLICKHOUSE_URL",
        "chdb://.cci/clickhouse",
        _parse_clickhouse_url,
        "chdb://PATH for the embedded store, http(s)://user:pass@host:port/db for a server",
    )
    timezone: str = _setting(
        "CCI_TIMEZONE", "UTC", _parse_timezone, "IANA time zone that defines calendar months"
    )
    active_activities: tuple[str, ...] = _setting(
        "CCI_ACTIVE_ACTIVITIES",
        (),
        _parse_name_list,
        "comma list of activity types that make a user active; empty means every activity",
    )
    extra_dimensions: tuple[str, ...] = _setting(
        "CCI_EXTRA_DIMENSIONS",
        (),
        _parse_name_list,
        "comma list of further segment keys that become dimensions (beyond plan, product, region)",
    )
    web_host: str = _setting(
        "CCI_WEB_HOST", "127.0.0.1", _parse_str, "address the worker's web server binds"
    )
    web_port: int = _setting("CCI_WEB_PORT", 6066, _parse_port, "port of the worker's web server")
    data_dir: Path = _setting(  # noqa: RUF009 - Path is immutable, safe as a shared default
        "CCI_DATA_DIR", Path(".cci/data"), _parse_path, "worker state directory"
    )
    partitions: int = _setting(
        "CCI_PARTITIONS",
        4,
        _parse_positive_int,
        "partitions of the topics `cci topics create` makes",
    )
    replication_factor: int = _setting(
        "CCI_REPLICATION_FACTOR", 1, _parse_positive_int, "replication factor of created topics"
    )
    retain_months: int = _setting(
        "CCI_RETAIN_MONTHS", 13, _parse_positive_int, "calendar months of state kept (this one too)"
    )
    # 0.25 s: half of what a figure waits at worst at 10,000 events/s (README: Performance).
    emit_interval: float = _setting(
        "CCI_EMIT_INTERVAL",
        0.25,
        _parse_seconds,
        "seconds a changed figure may wait before it is published, coalescing bursts",
    )
    alert_rules: AlertRules = _setting(  # noqa: RUF009 - frozen, safe as a shared default
        "CCI_ALERT_RULES",
        AlertRules(),
        _parse_alert_rules,
        "TOML file of alert rules on the figures (README: Alerts); unset: no alerts",
    )
    sink_batch_rows: int = _setting(
        "CCI_SINK_BATCH_ROWS",
        5000,
        _parse_positive_int,
        "rows the ClickHouse sink collects before it writes a batch",
    )
    sink_flush_seconds: float = _setting(
        "CCI_SINK_FLUSH_SECONDS",
        1.0,
        _parse_seconds,
        "seconds a row may wait in the ClickHouse sink before its batch is written",
    )
    max_event_bytes: int = _setting(
        "CCI_MAX_EVENT_BYTES", 65536, _parse_positive_int, "larger input records are dead letters"
    )
    max_future_seconds: float = _setting(
        "CCI_MAX_FUTURE_SECONDS",
        86400.0,
        _parse_seconds,
        "an event time further ahead of the wall clock than this is a dead letter",
    )
    embedded_broker: bool | None = _setting(
        "CCI_EMBEDDED_BROKER",
        None,
        _parse_auto_bool,
        "auto, true or false: the broker is the embedded Tansu and its workarounds apply "
        "(docs/embedded-broker.md); auto asks the broker for its cluster id",
    )
    session_timeout: float = _setting(
        "CCI_SESSION_TIMEOUT", 10.0, _parse_seconds, "consumer group session timeout, seconds"
    )
    log_level: str = _setting("CCI_LOG_LEVEL", "INFO", _parse_log_level, "log level")
    log_format: str = _setting(
        "CCI_LOG_FORMAT",
        "text",
        _parse_log_format,
        "text, or json: one JSON object per line for log collectors",
    )
    kafka_security_protocol: str = _setting(
        "CCI_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", _parse_security_protocol, "Kafka security"
    )
    kafka_sasl_mechanism: str = _setting(
        "CCI_KAFKA_SASL_MECHANISM", "", str, "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with SASL_*"
    )
    kafka_sasl_username: str = _setting("CCI_KAFKA_SASL_USERNAME", "", str, "SASL user name")
    kafka_sasl_password: str = _setting("CCI_KAFKA_SASL_PASSWORD", "", str, "SASL password")
    kafka_ssl_cafile: str = _setting(
        "CCI_KAFKA_SSL_CAFILE", "", str, "CA bundle that signs the brokers' certificates"
    )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def with_overrides(self, **overrides: Any) -> Settings:
        """Settings with CLI flag values applied (None means: flag not given)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def consumer_kwargs(self) -> dict[str, Any]:
        """``kafka_client_kwargs`` plus what every consumer of the pipeline needs."""
        kwargs = self.kafka_client_kwargs()
        if self.embedded_broker:
            kwargs["fetch_max_wait_ms"] = EMBEDDED_FETCH_MAX_WAIT_MS
        return kwargs

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """TLS/SASL options in aiokafka's vocabulary, passed through for production clusters."""
        kwargs: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol in {"SSL", "SASL_SSL"}:
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(cafile=self.kafka_ssl_cafile or None)
        if self.kafka_security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.kafka_sasl_mechanism or "PLAIN"
            kwargs["sasl_plain_username"] = self.kafka_sasl_username
            kwargs["sasl_plain_password"] = self.kafka_sasl_password
        return kwargs


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every ``CCI_*`` variable; raise SettingsError naming the first bad one."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in fields(Settings):
        env = spec.metadata["env"]
        raw = environ.get(env)
        if raw is None:
            continue
        try:
            values[spec.name] = spec.metadata["parse"](raw)
        except ValueError as exc:
            raise SettingsError(f"{env}: {exc}") from None
    settings = Settings(**values)
    try:
        check_dimensions(settings.alert_rules, settings.extra_dimensions)
    except RulesError as exc:
        raise SettingsError(f"CCI_ALERT_RULES: {exc}") from None
    if settings.kafka_security_protocol.startswith("SASL") and not settings.kafka_sasl_username:
        raise SettingsError("CCI_KAFKA_SASL_USERNAME: required with a SASL security protocol")
    return settings


def show_value(value: Any) -> str:
    """A setting's value as the environment spells it (None is ``auto``)."""
    if value is None:
        return "auto"
    return ",".join(value) if isinstance(value, tuple) else str(value)


def describe_settings() -> list[tuple[str, str, str]]:
    """(variable, default, documentation) rows for --help texts and the README."""
    rows = []
    for spec in fields(Settings):
        rows.append((spec.metadata["env"], show_value(spec.default), spec.metadata["doc"]))
    return rows
