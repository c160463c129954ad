"""Stage 1 of the dataflow: raw record bytes → a typed, checked event, or a dead-letter reason.

Every input topic's contract (see ``schemas/*.schema.json``) is enforced here and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

import msgspec
import orjson

from streams.pipeline.contracts import (
    ACTIVITY_DECODER,
    MAX_ID_LENGTH,
    MAX_SEGMENTS,
    PROFILE_DECODER,
    RFC3339_PATTERN,
    TICKET_DECODER,
)


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
# Default of CCI_MAX_SEGMENT_CHARS: the longest segment value (or channel) counted; a longer one
# makes its record a dead letter (segment_too_long) rather than a figure no one can read.
MAX_SEGMENT_CHARS = 128
LAST_YEAR = 9998  # the last year a timestamp may have (see parse_timestamp)
QUOTED_CHARS = 100  # the most characters of an input value an error message quotes


# Named tuples, not frozen dataclasses: one is built per event, and a frozen dataclass's
# __init__ (object.__setattr__ per field) costs three times as much. The hot paths build them
# with ``new_tuple(Type, (fields…))``: a named tuple's own __new__ is a Python function, which
# costs twice as much again.
new_tuple = tuple.__new__


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
_RFC3339 = re.compile(RFC3339_PATTERN.removeprefix("^").removesuffix("$"))


# The characters at 4, 7, 10, 13 and 16 of a usual timestamp (``value[4:17:3]``).
_SEPARATORS = frozenset({"--T::", "-- ::"})


def parse_timestamp(value: Any, field: str) -> datetime:
    """An aware datetime from an RFC 3339 string with offset."""
    # The usual form (upper-case T or a space, Z or ±hh:mm, at most 6 fractional digits) is
    # checked by position and left to fromisoformat, which checks the digits: a third of the
    # cost of the pattern. Anything else takes the full checks below.
    if type(value) is str and 20 <= len(value) <= 32 and value[4:17:3] in _SEPARATORS:
        tail = value[19:]
        if tail[-1] == "Z":
            fraction = tail[:-1]
        elif tail[-6:-5] in ("+", "-") and tail[-3] == ":":
            fraction = tail[:-6]
        else:
            fraction = "?"
        if not fraction or (fraction[0] == "." and 2 <= len(fraction) <= 7):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                if 1970 <= moment.year <= LAST_YEAR:
                    return moment
    return _checked_timestamp(value, field)


def _checked_timestamp(value: Any, field: str) -> datetime:
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


# --- decoding ---------------------------------------------------------------------------------
# The contract types (streams/pipeline/contracts.py) decode and check a record in C. When they
# reject one, the hand-written checks of the same contract (``_checked_*``) say which rule it
# broke, with the reason and message a dead letter carries; they run only for invalid records.

Record = TypeVar("Record", bound=msgspec.Struct)


def _decode(
    decoder: msgspec.json.Decoder[Record],
    raw: bytes,
    max_bytes: int,
    explain: Callable[[bytes, int, int], object],
    max_segment_chars: int,
) -> Record:
    if len(raw) > max_bytes:
        raise InvalidEvent(OVERSIZED, f"{len(raw)} bytes is more than the {max_bytes} allowed")
    try:
        record = decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        explain(raw, max_bytes, max_segment_chars)  # raises the reason
        # The checks accept what the contract rejects: say what the contract said.
        reason = WRONG_TYPE if isinstance(exc, msgspec.ValidationError) else INVALID_JSON
        raise InvalidEvent(reason, str(exc)) from None
    if not raw.isascii():
        # msgspec skips unknown properties without decoding them: JSON is UTF-8 throughout.
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent(INVALID_UTF8, "payload is not UTF-8") from None
    return record


def parse_activity(
    raw: bytes, max_bytes: int, max_segment_chars: int = MAX_SEGMENT_CHARS
) -> ActivityEvent:
    record = _decode(ACTIVITY_DECODER, raw, max_bytes, _checked_activity, max_segment_chars)
    segments = record.segments
    if segments and max(map(len, segments.values())) > max_segment_chars:
        _checked_activity(raw, max_bytes, max_segment_chars)
    return new_tuple(
        ActivityEvent,
        (
            record.user_id,
            parse_timestamp(record.occurred_at, "occurred_at"),
            record.activity or None,
            segments,
        ),
    )


def parse_ticket(
    raw: bytes, max_bytes: int, max_segment_chars: int = MAX_SEGMENT_CHARS
) -> TicketEvent:
    record = _decode(TICKET_DECODER, raw, max_bytes, _checked_ticket, max_segment_chars)
    channel, segments = record.channel, record.segments
    if (segments and max(map(len, segments.values())) > max_segment_chars) or (
        channel is not None and len(channel) > max_segment_chars
    ):
        _checked_ticket(raw, max_bytes, max_segment_chars)
    return new_tuple(
        TicketEvent,
        (
            record.ticket_id,
            record.user_id,
            parse_timestamp(record.created_at, "created_at"),
            channel or None,
            segments,
        ),
    )


def parse_profile(
    raw: bytes, max_bytes: int, max_segment_chars: int = MAX_SEGMENT_CHARS
) -> UserProfile:
    record = _decode(PROFILE_DECODER, raw, max_bytes, _checked_profile, max_segment_chars)
    if max(map(len, record.segments.values()), default=0) > max_segment_chars:
        _checked_profile(raw, max_bytes, max_segment_chars)
    return UserProfile(
        record.user_id,
        parse_timestamp(record.signup_at, "signup_at"),
        record.segments,
        parse_timestamp(record.updated_at, "updated_at"),
    )


def _checked_activity(raw: bytes, max_bytes: int, max_segment_chars: int) -> ActivityEvent:
    document = _load_object(raw, max_bytes)
    return ActivityEvent(
        user_id=_required_id(document, "user_id"),
        occurred_at=_required_timestamp(document, "occurred_at"),
        activity=_optional_label(document, "activity"),
        segments=_segments(document, max_segment_chars),
    )


def _checked_ticket(raw: bytes, max_bytes: int, max_segment_chars: int) -> TicketEvent:
    document = _load_object(raw, max_bytes)
    return TicketEvent(
        ticket_id=_required_id(document, "ticket_id"),
        user_id=_required_id(document, "user_id"),
        created_at=_required_timestamp(document, "created_at"),
        channel=_optional_label(document, "channel", max_segment_chars),
        segments=_segments(document, max_segment_chars),
    )


def _checked_profile(raw: bytes, max_bytes: int, max_segment_chars: int) -> UserProfile:
    document = _load_object(raw, max_bytes)
    return UserProfile(
        user_id=_required_id(document, "user_id"),
        signup_at=_required_timestamp(document, "signup_at"),
        segments=_segments(document, max_segment_chars, required=True) or {},
        updated_at=_required_timestamp(document, "updated_at"),
    )
