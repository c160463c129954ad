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
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.domain import DEFAULT_TARGET_RANGE, TargetRange, parse_target_range
from streams.pipeline.alerts import AlertRules, RulesError, check_dimensions, load_rules
from streams.pipeline.validate import MAX_ID_LENGTH, MAX_SEGMENT_CHARS
from streams.redaction import redact_text

# The embedded broker answers a fetch only when the consumer's fetch_max_wait_ms runs out, even
# when records arrive meanwhile (Kafka answers as soon as it has them), so the pipeline's own
# consumers (ingest, Faust's, the sink) wait less on it. Not less than this: the broker also cuts
# a fetch short at the wait, and shorter waits returned nearly empty fetches from a backlog
# (measurements in docs/embedded-broker.md).
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


def _parse_segment_chars(value: str) -> int:
    chars = _parse_positive_int(value)
    if chars > MAX_ID_LENGTH:
        raise ValueError(f"must be at most {MAX_ID_LENGTH}, got {chars}")
    return chars


def _parse_segment_values(value: str) -> int:
    values = _parse_positive_int(value)
    if values > 10_000:
        raise ValueError(f"must be at most 10000, got {values}")
    return values


MAX_STANDBY_REPLICAS = 3


def _parse_standby_replicas(value: str) -> int:
    try:
        replicas = int(value)
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if not 0 <= replicas <= MAX_STANDBY_REPLICAS:
        raise ValueError(f"must be 0 to {MAX_STANDBY_REPLICAS}, got {replicas}")
    return replicas


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


_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):\d{1,5}$")


def _parse_host_list(value: str) -> tuple[str, ...]:
    hosts = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    for host in hosts:
        if not _HOST_PORT.match(host):
            raise ValueError(f"{host!r} is not host:port (e.g. cci.example.com:6066)")
    return hosts


def _parse_clickhouse_url(value: str) -> str:
    if not re.match(r"^(chdb://|https?://)", value):
        raise ValueError(f"expected chdb://PATH or http(s)://user:pass@host:port/db, got {value!r}")
    if value.startswith("chdb://"):
        return value
    # An unencoded '/', '?' or '#' in the password ends the host part early: urlsplit then finds
    # no password (nothing would know to hide it) and a host "user" with port "pass…". The value
    # is not shown: the password is in it.
    rest = value.split("://", 1)[1]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    malformed = "@" in rest and "@" not in authority
    try:
        urlsplit(value).port  # noqa: B018 - raises for a port that is not a number
    except ValueError:  # e.g. "user:pass" read as host and port
        malformed = True
    if malformed:
        raise ValueError(
            "the user or password holds a character that ends the host part: percent-encode it"
            " ('/' as %2F, '?' as %3F, '#' as %23, '@' as %40); the value is not shown"
        )
    return value


def _parse_cluster_name(value: str) -> str:
    # Empty: one node. Braces allow a server macro such as {cluster}.
    name = value.strip()
    if name and not re.match(r"^[A-Za-z0-9_.{}-]+$", name):
        raise ValueError(f"{name!r} is not a cluster name (letters, digits, _ . - and {{macro}})")
    return name


WEB_TOKEN_MIN_LENGTH = 16


def _parse_web_token(value: str) -> str:
    # Empty is unset (no token asked). A short token is guessable: refuse it rather than offer
    # protection that is not there.
    token = value.strip()
    if token and len(token) < WEB_TOKEN_MIN_LENGTH:
        raise ValueError(f"must be at least {WEB_TOKEN_MIN_LENGTH} characters (got {len(token)})")
    if any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise ValueError("must be printable ASCII without spaces")
    return token


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


def _setting(
    env: str, default: Any, parse: Callable[[str], Any], doc: str, *, secret: bool = False
) -> Any:
    """A setting; a ``secret`` one is shown as *** wherever settings are shown
    (streams/redaction.py)."""
    metadata = {"env": env, "parse": parse, "doc": doc, "secret": secret}
    return field(default=default, metadata=metadata)


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
    clickhouse_cluster: str = _setting(
        "CCI_CLICKHOUSE_CLUSTER",
        "",
        _parse_cluster_name,
        "ClickHouse cluster (remote_servers) for replicated, distributed tables; empty: one node",
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
    web_allowed_hosts: tuple[str, ...] = _setting(
        "CCI_WEB_ALLOWED_HOSTS",
        (),
        _parse_host_list,
        "comma list of further host:port names the query API answers to (besides loopback)",
    )
    web_token: str = _setting(
        "CCI_WEB_TOKEN",
        "",
        _parse_web_token,
        "when set, every web page but /health and /metrics needs it (bearer header or /login)",
        secret=True,
    )
    live_streams: int = _setting(
        "CCI_LIVE_STREAMS",
        100,
        _parse_positive_int,
        "dashboard live streams (/api/stream) one worker serves at once; more are answered 503",
    )
    live_streams_per_client: int = _setting(
        "CCI_LIVE_STREAMS_PER_CLIENT",
        10,
        _parse_positive_int,
        "live streams one client address may hold at once (of CCI_LIVE_STREAMS); more are 429",
    )
    data_dir: Path = _setting(  # noqa: RUF009 - Path is immutable, safe as a shared default
        "CCI_DATA_DIR", Path(".cci/data"), _parse_path, "worker state directory"
    )
    clock_offset_file: str = _setting(
        "CCI_CLOCK_OFFSET_FILE",
        "",
        str.strip,
        "testing only: a file holding seconds added to the wall clock the pipeline judges months "
        "and versions by (`cci soak` moves time with it); empty: the real clock",
    )
    partitions: int = _setting(
        "CCI_PARTITIONS",
        4,
        _parse_positive_int,
        "partitions of the topics `cci topics create` makes",
    )
    standby_replicas: int = _setting(
        "CCI_STANDBY_REPLICAS",
        0,
        _parse_standby_replicas,
        "workers that keep a warm copy of each partition's dedup state (Faust's"
        " table_standby_replicas): a fail-over reads only the changelog's tail (docs/scaling.md)",
    )
    replication_factor: int = _setting(
        "CCI_REPLICATION_FACTOR", 1, _parse_positive_int, "replication factor of created topics"
    )
    retain_months: int = _setting(
        "CCI_RETAIN_MONTHS", 13, _parse_positive_int, "calendar months of state kept (this one too)"
    )
    # 0.25 s: half of what a figure waits at worst at 10,000 events/s (docs/performance.md).
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
        "TOML file of alert rules on the figures (docs/alerts.md); unset: no alerts",
    )
    target_range: TargetRange = _setting(  # noqa: RUF009 - frozen, safe as a shared default
        "CCI_TARGET_RANGE_PCT",
        DEFAULT_TARGET_RANGE,
        parse_target_range,
        "healthy contact rate LOW,HIGH in % of active users: each figure's band is below, "
        "within or above it",
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
    max_segment_chars: int = _setting(
        "CCI_MAX_SEGMENT_CHARS",
        MAX_SEGMENT_CHARS,
        _parse_segment_chars,
        "longest segment value or channel counted (at most 256); a longer one is a dead letter"
        " (segment_too_long)",
    )
    max_segment_values: int = _setting(
        "CCI_MAX_SEGMENT_VALUES",
        100,
        _parse_segment_values,
        "distinct values counted by name per dimension, month and facts partition; the rest are"
        " counted as segment `other` (docs/limits.md)",
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
    kafka_sasl_password: str = _setting(
        "CCI_KAFKA_SASL_PASSWORD", "", str, "SASL password", secret=True
    )
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
            # The message may quote the value: never a secret one, nor a URL's password.
            secrets = [raw.strip()] if spec.metadata["secret"] and raw.strip() else []
            raise SettingsError(f"{env}: {redact_text(str(exc), secrets)}") from None
    settings = Settings(**values)
    try:
        check_dimensions(settings.alert_rules, settings.extra_dimensions)
    except RulesError as exc:
        raise SettingsError(f"CCI_ALERT_RULES: {exc}") from None
    if settings.clickhouse_cluster and settings.clickhouse_url.startswith("chdb://"):
        raise SettingsError(
            "CCI_CLICKHOUSE_CLUSTER: needs a ClickHouse server in CCI_CLICKHOUSE_URL "
            "(http(s)://); the embedded store is one node"
        )
    try:
        check_partial_size(settings)
    except ValueError as exc:
        raise SettingsError(f"CCI_MAX_SEGMENT_VALUES: {exc}") from None
    if settings.kafka_security_protocol.startswith("SASL") and not settings.kafka_sasl_username:
        raise SettingsError("CCI_KAFKA_SASL_USERNAME: required with a SASL security protocol")
    return settings


# Bytes of one segment's entry in a partial-counts record, beyond its value: the dimension name,
# quotes, separators and two counts. A value's character takes at most 6 bytes of JSON (\u0001).
_PARTIAL_ENTRY_BYTES, _JSON_CHAR_BYTES = 48, 6


def check_partial_size(settings: Settings) -> None:
    """The partial counts of one facts partition and month (the aggregate keeps them as one
    table record) must fit a Kafka record, whatever the input: ValueError if the segment limits
    allow more. ``dimensions`` counts the channel and the global ``all``."""
    from streams.domain import user_dimensions
    from streams.pipeline.records import MAX_RECORD_BYTES

    dimensions = len(user_dimensions(settings.extra_dimensions)) + 2
    worst = (
        dimensions
        * (settings.max_segment_values + 1)
        * (settings.max_segment_chars * _JSON_CHAR_BYTES + _PARTIAL_ENTRY_BYTES)
    )
    if worst > MAX_RECORD_BYTES:
        raise ValueError(
            f"{dimensions} dimensions x {settings.max_segment_values + 1} values x "
            f"{settings.max_segment_chars} characters could make a partial-counts record of "
            f"{worst} bytes, more than {MAX_RECORD_BYTES}: lower CCI_MAX_SEGMENT_VALUES or "
            "CCI_MAX_SEGMENT_CHARS, or use fewer CCI_EXTRA_DIMENSIONS"
        )


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
