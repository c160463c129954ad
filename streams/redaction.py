"""The one redaction of secrets: passwords and tokens never reach an output, log line, error or
metric (docs/security.md: Redaction).

Two layers. ``redact_url`` hides the secret parts of a URL (the password of its userinfo, and
``password``/``token``-like query parameters) wherever one is shown. ``redact_text`` also replaces
every secret value the settings hold (``secret_values``) anywhere in a text, so a library's error
message or traceback that quotes one is caught too; the worker's and the ingest process's log
records all pass through it (``install_log_redaction``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:
    from streams.settings import Settings

MASK = "***"
MIN_SECRET_LENGTH = 4

# Query parameters that carry a secret (compared in lower case).
_SECRET_PARAMETERS = frozenset(
    {"password", "passwd", "pass", "pwd", "secret", "token", "access_token", "api_key", "apikey"}
)
# scheme://user:password@ — the password is whatever runs up to the last '@' before the host,
# '/' included (an unencoded one hides the password from urlsplit, not from this). Every repeat
# is bounded so that a text is scanned in linear time: an unbounded scheme once restarted at
# every letter of "a.a.a…" (quadratic; a 100 KB error message froze the worker for seconds).
# Possessive repeats ('+') never give back what they took: no backtracking within them.
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]{0,30}+://[^:/@\s]{0,256}+:)"
    r"(?P<secret>(?:[^\s@]{0,128}+@)++)"
)
_PARAMETER = re.compile(r"(?P<head>[?&;](?P<name>[A-Za-z_]{1,32}+)=)(?P<secret>[^&#\s'\"]*+)")


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo and any secret query parameter as ``***``;
    everything else (scheme, user, host, port, path) as it was."""
    return _redact_patterns(url)


def _redact_patterns(text: str) -> str:
    # The secret ends with the last '@' before the host; an empty one ("user:@host") is kept.
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@" if m["secret"] != "@" else m[0], text)

    def parameter(match: re.Match[str]) -> str:
        if match["name"].lower() in _SECRET_PARAMETERS and match["secret"]:
            return f"{match['head']}{MASK}"
        return match[0]

    return _PARAMETER.sub(parameter, text)


def secret_values(settings: Settings) -> tuple[str, ...]:
    """Every secret the settings hold, as it may appear in text (raw and URL-decoded)."""
    from dataclasses import fields

    values: set[str] = set()
    for spec in fields(settings):
        value = getattr(settings, spec.name)
        if not isinstance(value, str) or not value:
            continue
        if spec.metadata.get("secret"):
            values.add(value)
        values.update(url_secrets(value))
    # Longest first, so a secret that contains another is replaced whole. A value shorter than
    # MIN_SECRET_LENGTH is not replaced in free text (every "a" in every log line would go); in
    # URLs and as a setting it is hidden like any other.
    found = (v for v in values if len(v) >= MIN_SECRET_LENGTH)
    return tuple(sorted(found, key=len, reverse=True))


def url_secrets(value: str) -> list[str]:
    """The password and secret query parameters of a URL, raw and URL-decoded."""
    if "://" not in value:
        return []
    try:
        parts = urlsplit(value)
        found = [parts.password] if parts.password else []
        found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMETERS]
    except ValueError:
        return []
    return [secret for raw in found if raw for secret in {raw, unquote(raw)}]


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL secrets and every one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return _redact_patterns(text)


def shown_setting(settings: Settings, name: str) -> str:
    """A setting's value as ``cci settings`` and logs may show it."""
    from dataclasses import fields

    from streams.settings import show_value

    spec = next(spec for spec in fields(settings) if spec.name == name)
    value = getattr(settings, name)
    shown = show_value(value)
    if spec.metadata.get("secret") and shown:
        return MASK
    return redact_text(shown, secret_values(settings))


class RedactingFilter(logging.Filter):
    """Rewrites a record's message, string fields and traceback without secrets."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, self.secrets)
        for name, value in list(vars(record).items()):
            if isinstance(value, str) and name not in _RECORD_NAMES:
                setattr(record, name, redact_text(value, self.secrets))
        return True


_RECORD_NAMES = {"msg", "name", "levelname", "pathname", "filename", "module", "funcName"}


class _RedactedRecord(logging.LogRecord):
    """Formats its message as usual, then without secrets (set per record; the leading
    underscore keeps them out of the JSON log's fields)."""

    _secrets: tuple[str, ...] = ()

    def getMessage(self) -> str:
        return redact_text(super().getMessage(), self._secrets)


def redact_record(record: logging.LogRecord, secrets: tuple[str, ...]) -> None:
    """Make ``record`` show no secret: its message when formatted, and its traceback."""
    if type(record) is logging.LogRecord:
        record.__class__ = _RedactedRecord
    if isinstance(record, _RedactedRecord):
        record._secrets = secrets
    if record.exc_info and not record.exc_text:
        # Formatters use a set exc_text rather than formatting exc_info themselves.
        record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info), secrets)


def install_log_redaction(settings: Settings) -> None:
    """Redact every log record this process creates, whichever handler later formats it."""
    secrets = secret_values(settings)
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "cci_redacting", False):
        return

    def redacting_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        redact_record(record, secrets)
        return record

    redacting_record.cci_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_record)
