"""The parsers of ``CCI_*`` values: text from the environment → a typed value, or ValueError.

Each ``parse_*`` takes the variable's raw text and returns the value ``Settings`` holds; its
ValueError message says what was expected (``load_settings`` prefixes the variable's name).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.pipeline.alerts import AlertRules, load_rules
from streams.pipeline.validate import MAX_ID_LENGTH


def parse_str(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def parse_path(value: str) -> Path:
    return Path(parse_str(value))


def parse_positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise ValueError(f"must be at least 1, got {number}")
    return number


def parse_port(value: str) -> int:
    port = parse_positive_int(value)
    if port > 65535:
        raise ValueError(f"must be a TCP port (1-65535), got {port}")
    return port


def parse_segment_chars(value: str) -> int:
    chars = parse_positive_int(value)
    if chars > MAX_ID_LENGTH:
        raise ValueError(f"must be at most {MAX_ID_LENGTH}, got {chars}")
    return chars


def parse_segment_values(value: str) -> int:
    values = parse_positive_int(value)
    if values > 10_000:
        raise ValueError(f"must be at most 10000, got {values}")
    return values


MAX_INGEST_PROCESSES = 16


def parse_ingest_processes(value: str) -> int:
    processes = parse_positive_int(value)
    if processes > MAX_INGEST_PROCESSES:
        raise ValueError(f"must be 1 to {MAX_INGEST_PROCESSES}, got {processes}")
    return processes


MAX_STANDBY_REPLICAS = 3


def parse_standby_replicas(value: str) -> int:
    try:
        replicas = int(value)
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if not 0 <= replicas <= MAX_STANDBY_REPLICAS:
        raise ValueError(f"must be 0 to {MAX_STANDBY_REPLICAS}, got {replicas}")
    return replicas


def parse_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not 0 < seconds <= 86400:
        raise ValueError(f"must be between 0 and 86400 seconds, got {seconds}")
    return seconds


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_auto_bool(value: str) -> bool | None:
    """``auto`` (None: decided at start-up) or a boolean."""
    if value.strip().lower() == "auto":
        return None
    try:
        return parse_bool(value)
    except ValueError:
        raise ValueError(f"expected auto, true or false, got {value!r}") from None


def parse_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r}") from None
    return value


_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def parse_name_list(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a valid name (letters, digits, _ . -)")
    return names


_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):\d{1,5}$")


def parse_host_list(value: str) -> tuple[str, ...]:
    hosts = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    for host in hosts:
        if not _HOST_PORT.match(host):
            raise ValueError(f"{host!r} is not host:port (e.g. cci.example.com:6066)")
    return hosts


def parse_clickhouse_url(value: str) -> str:
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


def parse_cluster_name(value: str) -> str:
    # Empty: one node. Braces allow a server macro such as {cluster}.
    name = value.strip()
    if name and not re.match(r"^[A-Za-z0-9_.{}-]+$", name):
        raise ValueError(f"{name!r} is not a cluster name (letters, digits, _ . - and {{macro}})")
    return name


WEB_TOKEN_MIN_LENGTH = 16


def parse_web_token(value: str) -> str:
    # Empty is unset (no token asked). A short token is guessable: refuse it rather than offer
    # protection that is not there.
    token = value.strip()
    if token and len(token) < WEB_TOKEN_MIN_LENGTH:
        raise ValueError(f"must be at least {WEB_TOKEN_MIN_LENGTH} characters (got {len(token)})")
    if any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise ValueError("must be printable ASCII without spaces")
    return token


def parse_security_protocol(value: str) -> str:
    allowed = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
    if value.upper() not in allowed:
        raise ValueError(f"expected one of {', '.join(sorted(allowed))}, got {value!r}")
    return value.upper()


def parse_log_level(value: str) -> str:
    allowed = {"DEBUG", "INFO", "WARNING", "ERROR"}
    if value.upper() not in allowed:
        raise ValueError(f"expected one of {', '.join(sorted(allowed))}, got {value!r}")
    return value.upper()


def parse_log_format(value: str) -> str:
    allowed = {"text", "json"}
    if value.lower() not in allowed:
        raise ValueError(f"expected one of {', '.join(sorted(allowed))}, got {value!r}")
    return value.lower()


def parse_alert_rules(value: str) -> AlertRules:
    # Empty is unset (what `cci settings` shows as the default): no alerts.
    return load_rules(Path(value.strip())) if value.strip() else AlertRules()
