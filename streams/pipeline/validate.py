"""Stage 1 of the dataflow: raw record bytes → a typed, checked event, or a dead-letter reason.

Every input topic's contract (see ``schemas/*.schema.json``) is enforced here and nowhere else.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NamedTuple

import orjson


class InvalidEvent(Exception):
    """The record is not a valid event; ``reason`` is a short code counted in metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# Dead-letter reason codes (also metric labels).
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
INVALID_TIMESTAMP = "invalid_timestamp"
OVERSIZED = "oversized"
TOO_LATE = "too_late"
FUTURE_TIMESTAMP = "future_timestamp"
SEGMENT_TOO_LONG = "segment_too_long"
MAX_ID_LENGTH = 256
# Default of CCI_MAX_SEGMENT_CHARS: the longest segment value (or channel) counted; a longer one
# makes its record a dead letter (segment_too_long) rather than a figure no one can read.
MAX_SEGMENT_CHARS = 128
MAX_SEGMENTS = 32
LAST_YEAR = 9998  # the last year a timestamp may have (see parse_timestamp)
QUOTED_CHARS = 100  # the most characters of an input value an error message quotes


# Named tuples, not frozen dataclasses: one is built per event, and a frozen dataclass's
# __init__ (object.__setattr__ per field) costs three times as much.


class ActivityEvent(NamedTuple):
    user_id: str
    occurred_at: datetime
    activity: str | None
    segments: dict[str, str] | None


class TicketEvent(NamedTuple):
    ticket_id: str
    user_id: str
    created_at: datetime
    channel: str | None
    segments: dict[str, str] | None


class UserProfile(NamedTuple):
    user_id: str
    signup_at: datetime
    segments: dict[str, str]
    updated_at: datetime


# RFC 3339 date-time: fromisoformat alone also takes dates, week dates and offset-less times.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"  # date and time
    r"(\.[0-9]+)?"  # any number of fractional digits
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"  # the offset is required
)


def parse_timestamp(value: Any, field: str) -> datetime:
    """An aware datetime from an RFC 3339 string with offset."""
    if not isinstance(value, str):
        raise InvalidEvent(WRONG_TYPE, f"{field} must be an RFC 3339 string")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise InvalidEvent(
            INVALID_TIMESTAMP, f"{field} is not RFC 3339 with offset: {_quoted(value)}"
        )
    text = value.upper()  # fromisoformat takes neither "t" nor "z"
    fraction = match.group(1)
    if text[17:19] == "60":
        # A leap second (RFC 3339 allows second 60; which minutes had one is not checked):
        # fromisoformat has no second 60, so it becomes the minute's last microsecond, which
        # keeps it in its minute, day and month.
        text = text[:17] + "59.999999" + text[19 + len(fraction or "") :]
    elif fraction is not None and len(fraction) > 7:
        # fromisoformat takes at most 6 fractional digits; RFC 3339 allows more. The fraction
        # always starts at index 19.
        text = text[:26] + text[19 + len(fraction) :]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidEvent(
            INVALID_TIMESTAMP, f"{field} is impossible: {_quoted(value)} ({exc})"
        ) from None
    if moment.year < 1970:
        raise InvalidEvent(INVALID_TIMESTAMP, f"{field} is before 1970: {_quoted(value)}")
    if moment.year > LAST_YEAR:
        # Year 9999 behind UTC, or in a zone ahead of it, is past datetime's last year: its month
        # cannot be computed. Below it, any offset or zone conversion stays in range.
        raise InvalidEvent(INVALID_TIMESTAMP, f"{field} is after {LAST_YEAR}: {_quoted(value)}")
    return moment


def _quoted(value: str) -> str:
    """``value`` for an error message: a bounded prefix (messages are logged and dead-lettered)."""
    if len(value) <= QUOTED_CHARS:
        return repr(value)
    return f"{value[:QUOTED_CHARS]!r}… ({len(value)} characters)"


def _load_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise InvalidEvent(OVERSIZED, f"{len(raw)} bytes is more than the {max_bytes} allowed")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent(INVALID_UTF8, "payload is not UTF-8") from None
        raise InvalidEvent(INVALID_JSON, str(exc)) from None
    if not isinstance(document, dict):
        raise InvalidEvent(NOT_AN_OBJECT, f"expected a JSON object, got {type(document).__name__}")
    return document


def _required_id(document: dict[str, Any], field: str) -> str:
    value = document.get(field)
    if value is None:
        raise InvalidEvent(MISSING_FIELD, f"{field} is required")
    if not isinstance(value, str):
        raise InvalidEvent(WRONG_TYPE, f"{field} must be a string")
    if not value or len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(WRONG_TYPE, f"{field} must be 1 to {MAX_ID_LENGTH} characters")
    return value


def _optional_label(
    document: dict[str, Any], field: str, max_chars: int | None = None
) -> str | None:
    value = document.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(WRONG_TYPE, f"{field} must be a string or null")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidEvent(SEGMENT_TOO_LONG, f"{field} is longer than {max_chars} characters")
    return value or None


def _segments(
    document: dict[str, Any], max_chars: int, *, required: bool = False
) -> dict[str, str] | None:
    value = document.get("segments")
    if value is None:
        if required:
            raise InvalidEvent(MISSING_FIELD, "segments is required")
        return None
    if not isinstance(value, dict):
        raise InvalidEvent(WRONG_TYPE, "segments must be an object of strings")
    if len(value) > MAX_SEGMENTS:
        raise InvalidEvent(WRONG_TYPE, f"segments holds more than {MAX_SEGMENTS} keys")
    for key, label in value.items():
        if not isinstance(label, str):
            raise InvalidEvent(WRONG_TYPE, f"segments.{key} must be a string")
        if len(label) > max_chars:
            raise InvalidEvent(
                SEGMENT_TOO_LONG, f"segments.{key} is longer than {max_chars} characters"
            )
    return value


def _required_timestamp(document: dict[str, Any], field: str) -> datetime:
    if field not in document or document[field] is None:
        raise InvalidEvent(MISSING_FIELD, f"{field} is required")
    return parse_timestamp(document[field], field)


def parse_activity(
    raw: bytes, max_bytes: int, max_segment_chars: int = MAX_SEGMENT_CHARS
) -> ActivityEvent:
    document = _load_object(raw, max_bytes)
    return ActivityEvent(
        user_id=_required_id(document, "user_id"),
        occurred_at=_required_timestamp(document, "occurred_at"),
        activity=_optional_label(document, "activity"),
        segments=_segments(document, max_segment_chars),
    )


def parse_ticket(
    raw: bytes, max_bytes: int, max_segment_chars: int = MAX_SEGMENT_CHARS
) -> TicketEvent:
    document = _load_object(raw, max_bytes)
    return TicketEvent(
        ticket_id=_required_id(document, "ticket_id"),
        user_id=_required_id(document, "user_id"),
        created_at=_required_timestamp(document, "created_at"),
        channel=_optional_label(document, "channel", max_segment_chars),
        segments=_segments(document, max_segment_chars),
    )


def parse_profile(
    raw: bytes, max_bytes: int, max_segment_chars: int = MAX_SEGMENT_CHARS
) -> UserProfile:
    document = _load_object(raw, max_bytes)
    return UserProfile(
        user_id=_required_id(document, "user_id"),
        signup_at=_required_timestamp(document, "signup_at"),
        segments=_segments(document, max_segment_chars, required=True) or {},
        updated_at=_required_timestamp(document, "updated_at"),
    )
