"""Every ``CCI_*`` setting in one typed object.

Modelled on Faust's settings object: each option is named once, with its type, default and
documentation. Values come from the environment (CLI flags override some of them); an invalid value
stops start-up with a message naming the variable. The parsers of the values are in
``streams/settings_values.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from streams.domain import DEFAULT_TARGET_RANGE, TargetRange, parse_target_range
from streams.pipeline.alerts import AlertRules, RulesError, check_dimensions
from streams.pipeline.validate import MAX_SEGMENT_CHARS
from streams.redaction import redact_text
from streams.settings_values import (
    parse_alert_rules,
    parse_auto_bool,
    parse_clickhouse_url,
    parse_cluster_name,
    parse_host_list,
    parse_ingest_processes,
    parse_log_format,
    parse_log_level,
    parse_name_list,
    parse_path,
    parse_port,
    parse_positive_int,
    parse_seconds,
    parse_security_protocol,
    parse_segment_chars,
    parse_segment_values,
    parse_standby_replicas,
    parse_str,
    parse_timezone,
    parse_web_token,
)

# The embedded broker answers a fetch only when the consumer's fetch_max_wait_ms runs out, even
# when records arrive meanwhile (Kafka answers as soon as it has them), so the pipeline's own
# consumers (ingest and the sink here, Faust's below) wait less on it. Not less than this: the
# broker also cuts a fetch short at the wait, and shorter waits returned nearly empty fetches from
# a backlog of one-record batches (measurements in docs/embedded-broker.md).
EMBEDDED_FETCH_MAX_WAIT_MS = 100
# The worker's Faust consumer reads only what the pipeline writes in batches (facts, partials,
# changelogs): no long backlog of one-record batches, and a fetch that finds nothing sleeps its
# whole wait, so records of these low-rate topics waited up to 100 ms a hop (docs/performance.md).
EMBEDDED_INTERNAL_FETCH_MAX_WAIT_MS = 50

TOPIC_ACTIVITY = "user-activity"
TOPIC_TICKETS = "ticket-created"
TOPIC_PROFILES = "user-profile"
TOPIC_UPDATES = "cci-updates"
TOPIC_DEAD_LETTERS = "cci-dead-letters"
TOPIC_ALERTS = "cci-alerts"


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the variable."""


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
        parse_str,
        "Kafka bootstrap servers, host:port[,…]",
    )
    app_id: str = _setting(
        "CCI_APP_ID", "cci", parse_str, "Faust app id: consumer group and internal topic prefix"
    )
    clickhouse_url: str = _setting(
        "CCI_CLICKHOUSE_URL",
        "chdb://.cci/clickhouse",
        parse_clickhouse_url,
        "chdb://PATH for the embedded store, http(s)://user:pass@host:port/db for a server",
    )
    clickhouse_cluster: str = _setting(
        "CCI_CLICKHOUSE_CLUSTER",
        "",
        parse_cluster_name,
        "ClickHouse cluster (remote_servers) for replicated, distributed tables; empty: one node",
    )
    timezone: str = _setting(
        "CCI_TIMEZONE", "UTC", parse_timezone, "IANA time zone that defines calendar months"
    )
    active_activities: tuple[str, ...] = _setting(
        "CCI_ACTIVE_ACTIVITIES",
        (),
        parse_name_list,
        "comma list of activity types that make a user active; empty means every activity",
    )
    extra_dimensions: tuple[str, ...] = _setting(
        "CCI_EXTRA_DIMENSIONS",
        (),
        parse_name_list,
        "comma list of further segment keys that become dimensions (beyond plan, product, region)",
    )
    web_host: str = _setting(
        "CCI_WEB_HOST", "127.0.0.1", parse_str, "address the worker's web server binds"
    )
    web_port: int = _setting("CCI_WEB_PORT", 6066, parse_port, "port of the worker's web server")
    web_allowed_hosts: tuple[str, ...] = _setting(
        "CCI_WEB_ALLOWED_HOSTS",
        (),
        parse_host_list,
        "comma list of further host:port names the query API answers to (besides loopback)",
    )
    web_token: str = _setting(
        "CCI_WEB_TOKEN",
        "",
        parse_web_token,
        "when set, every web page but /health and /metrics needs it (bearer header or /login)",
        secret=True,
    )
    live_streams: int = _setting(
        "CCI_LIVE_STREAMS",
        100,
        parse_positive_int,
        "dashboard live streams (/api/stream) one worker serves at once; more are answered 503",
    )
    live_streams_per_client: int = _setting(
        "CCI_LIVE_STREAMS_PER_CLIENT",
        10,
        parse_positive_int,
        "live streams one client address may hold at once (of CCI_LIVE_STREAMS); more are 429",
    )
    data_dir: Path = _setting(  # noqa: RUF009 - Path is immutable, safe as a shared default
        "CCI_DATA_DIR", Path(".cci/data"), parse_path, "worker state directory"
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
        parse_positive_int,
        "partitions of the topics `cci topics create` makes",
    )
    ingest_processes: int = _setting(
        "CCI_INGEST_PROCESSES",
        2,
        parse_ingest_processes,
        "child processes of a worker that validate and enrich input records, each reading a share "
        "of the input partitions and holding the whole profile table (1-16)",
    )
    standby_replicas: int = _setting(
        "CCI_STANDBY_REPLICAS",
        0,
        parse_standby_replicas,
        "workers that keep a warm copy of each partition's dedup state (Faust's"
        " table_standby_replicas): a fail-over reads only the changelog's tail (docs/scaling.md)",
    )
    replication_factor: int = _setting(
        "CCI_REPLICATION_FACTOR", 1, parse_positive_int, "replication factor of created topics"
    )
    retain_months: int = _setting(
        "CCI_RETAIN_MONTHS", 13, parse_positive_int, "calendar months of state kept (this one too)"
    )
    # 0.1 s: the wait for the next emit is a hop of its own in the latency, up to this long; an
    # emit sends one record per changed figure, tens a month (docs/performance.md).
    emit_interval: float = _setting(
        "CCI_EMIT_INTERVAL",
        0.1,
        parse_seconds,
        "seconds a changed figure may wait before it is published, coalescing bursts",
    )
    alert_rules: AlertRules = _setting(  # noqa: RUF009 - frozen, safe as a shared default
        "CCI_ALERT_RULES",
        AlertRules(),
        parse_alert_rules,
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
        50000,
        parse_positive_int,
        "rows the ClickHouse sink collects before it writes a batch",
    )
    sink_flush_seconds: float = _setting(
        "CCI_SINK_FLUSH_SECONDS",
        1.0,
        parse_seconds,
        "seconds a row may wait in the ClickHouse sink before its batch is written",
    )
    max_event_bytes: int = _setting(
        "CCI_MAX_EVENT_BYTES", 65536, parse_positive_int, "larger input records are dead letters"
    )
    max_segment_chars: int = _setting(
        "CCI_MAX_SEGMENT_CHARS",
        MAX_SEGMENT_CHARS,
        parse_segment_chars,
        "longest segment value or channel counted (at most 256); a longer one is a dead letter"
        " (segment_too_long)",
    )
    max_segment_values: int = _setting(
        "CCI_MAX_SEGMENT_VALUES",
        100,
        parse_segment_values,
        "distinct values counted by name per dimension, month and facts partition; the rest are"
        " counted as segment `other` (docs/limits.md)",
    )
    max_future_seconds: float = _setting(
        "CCI_MAX_FUTURE_SECONDS",
        86400.0,
        parse_seconds,
        "an event time further ahead of the wall clock than this is a dead letter",
    )
    embedded_broker: bool | None = _setting(
        "CCI_EMBEDDED_BROKER",
        None,
        parse_auto_bool,
        "auto, true or false: the broker is the embedded Tansu and its workarounds apply "
        "(docs/embedded-broker.md); auto asks the broker for its cluster id",
    )
    session_timeout: float = _setting(
        "CCI_SESSION_TIMEOUT", 10.0, parse_seconds, "consumer group session timeout, seconds"
    )
    log_level: str = _setting("CCI_LOG_LEVEL", "INFO", parse_log_level, "log level")
    log_format: str = _setting(
        "CCI_LOG_FORMAT",
        "text",
        parse_log_format,
        "text, or json: one JSON object per line for log collectors",
    )
    kafka_security_protocol: str = _setting(
        "CCI_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", parse_security_protocol, "Kafka security"
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
