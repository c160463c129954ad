"""Raw record bytes → typed events, or InvalidEvent with the dead-letter reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.pipeline import validate
from streams.pipeline.validate import InvalidEvent, parse_activity, parse_profile, parse_ticket

MAX_BYTES = 65536
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

Parser = Callable[[bytes, int], object]

ACTIVITY: dict[str, Any] = {
    "user_id": "u-1",
    "occurred_at": "2026-03-04T10:11:12.123Z",
    "activity": "login",
    "segments": {"plan": "paid"},
}
TICKET: dict[str, Any] = {
    "ticket_id": "t-1",
    "user_id": "u-1",
    "created_at": "2026-03-04T10:11:12Z",
    "channel": "email",
    "segments": {"region": "eu"},
}
PROFILE: dict[str, Any] = {
    "user_id": "u-1",
    "signup_at": "2025-01-01T00:00:00Z",
    "segments": {"plan": "free"},
    "updated_at": "2026-01-01T00:00:00Z",
}
# (parser, a valid document, the name of its timestamp field)
KINDS: list[tuple[Parser, dict[str, Any], str]] = [
    (parse_activity, ACTIVITY, "occurred_at"),
    (parse_ticket, TICKET, "created_at"),
    (parse_profile, PROFILE, "signup_at"),
]
KIND_IDS = ["activity", "ticket", "profile"]


def encode(document: object) -> bytes:
    return orjson.dumps(document)


def reason_of(parse: Parser, raw: bytes, max_bytes: int = MAX_BYTES) -> str:
    with pytest.raises(InvalidEvent) as caught:
        parse(raw, max_bytes)
    return caught.value.reason


def with_field(document: dict[str, Any], field: str, value: object) -> dict[str, Any]:
    return {**document, field: value}


def without(document: dict[str, Any], field: str) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != field}


# --- undecodable payloads ------------------------------------------------------------------------


@pytest.mark.parametrize(("parse", "document", "_ts"), KINDS, ids=KIND_IDS)
def test_invalid_utf8(parse: Parser, document: dict[str, Any], _ts: str) -> None:
    raw = encode(document).replace(b'"u-1"', b'"u-\xff"')
    assert reason_of(parse, raw) == validate.INVALID_UTF8


@pytest.mark.parametrize(
    "raw", [b"", b"{", b'{"user_id": "u-1",}', b"not json", b"{'user_id': 'u-1'}", b"NaN"]
)
def test_invalid_json(raw: bytes) -> None:
    assert reason_of(parse_activity, raw) == validate.INVALID_JSON


@pytest.mark.parametrize("raw", [b"[]", b'["u-1"]', b'"u-1"', b"42", b"null", b"true"])
def test_not_an_object(raw: bytes) -> None:
    assert reason_of(parse_ticket, raw) == validate.NOT_AN_OBJECT


@pytest.mark.parametrize(("parse", "document", "_ts"), KINDS, ids=KIND_IDS)
def test_oversized_payload(parse: Parser, document: dict[str, Any], _ts: str) -> None:
    raw = encode(document)
    assert reason_of(parse, raw, max_bytes=len(raw) - 1) == validate.OVERSIZED
    parse(raw, len(raw))  # exactly the limit is allowed


def test_oversized_is_checked_before_decoding() -> None:
    # Garbage that is also too large is reported as too large: the cheap check comes first.
    assert reason_of(parse_activity, b"\xff" * 100, max_bytes=10) == validate.OVERSIZED


# --- missing and mistyped fields -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "document", "field"),
    [
        (parse_activity, ACTIVITY, "user_id"),
        (parse_activity, ACTIVITY, "occurred_at"),
        (parse_ticket, TICKET, "ticket_id"),
        (parse_ticket, TICKET, "user_id"),
        (parse_ticket, TICKET, "created_at"),
        (parse_profile, PROFILE, "user_id"),
        (parse_profile, PROFILE, "signup_at"),
        (parse_profile, PROFILE, "segments"),
        (parse_profile, PROFILE, "updated_at"),
    ],
)
def test_missing_required_field(parse: Parser, document: dict[str, Any], field: str) -> None:
    assert reason_of(parse, encode(without(document, field))) == validate.MISSING_FIELD
    # An explicit null is as missing as an absent key.
    assert reason_of(parse, encode(with_field(document, field, None))) == validate.MISSING_FIELD


@pytest.mark.parametrize(
    ("parse", "document", "field", "value"),
    [
        (parse_activity, ACTIVITY, "user_id", 42),
        (parse_activity, ACTIVITY, "user_id", ""),
        (parse_activity, ACTIVITY, "user_id", "u" * (validate.MAX_ID_LENGTH + 1)),
        (parse_activity, ACTIVITY, "user_id", ["u-1"]),
        (parse_activity, ACTIVITY, "occurred_at", 1772619072),
        (parse_activity, ACTIVITY, "activity", 3),
        (parse_activity, ACTIVITY, "activity", {"type": "login"}),
        (parse_ticket, TICKET, "ticket_id", 17),
        (parse_ticket, TICKET, "channel", ["email"]),
        (parse_ticket, TICKET, "channel", True),
        (parse_ticket, TICKET, "created_at", {"seconds": 1}),
        (parse_profile, PROFILE, "updated_at", 1.5),
    ],
)
def test_mistyped_field(parse: Parser, document: dict[str, Any], field: str, value: object) -> None:
    assert reason_of(parse, encode(with_field(document, field, value))) == validate.WRONG_TYPE


@pytest.mark.parametrize(
    "segments",
    [
        ["plan", "free"],
        "plan=free",
        7,
        {"plan": 1},
        {"plan": None},
        {"plan": ["free"]},
        {"plan": {"name": "free"}},
        {f"key{i}": "v" for i in range(validate.MAX_SEGMENTS + 1)},
    ],
)
@pytest.mark.parametrize(("parse", "document", "_ts"), KINDS, ids=KIND_IDS)
def test_wrong_segments(
    parse: Parser, document: dict[str, Any], _ts: str, segments: object
) -> None:
    raw = encode(with_field(document, "segments", segments))
    assert reason_of(parse, raw) == validate.WRONG_TYPE


# --- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2026-02-30T10:00:00Z",  # no February 30th
        "2025-02-29T10:00:00Z",  # not a leap year
        "2026-03-04T25:00:00Z",  # hour 25
        "2026-03-04T24:00:00Z",
        "2026-03-04T10:60:00Z",
        "2016-12-31T23:59:61Z",
        "2026-13-01T10:00:00Z",
        "2026-03-04T10:11:12",  # no offset
        "2026-03-04T10:11:12.123",
        "2026-03-04",  # a date only
        "2026-03-04Z",
        "2026-W10-3T10:11:12Z",  # ISO week date
        "20260304T101112Z",  # ISO basic format
        "2026-03-04T10:11Z",  # no seconds
        "2026-03-04T10:11:12+0200",  # offset without colon
        "2026-03-04T10:11:12 +02:00",
        "2026-03-04T10:11:12.Z",
        "2026-03-04T10:11:12+25:00",
        "1969-12-31T23:59:59Z",  # before the epoch
        # Year 9999: an offset or a zone ahead of UTC takes it past datetime's last year, so its
        # month cannot be computed (it once stopped profile loading for good).
        "9999-12-31T23:59:59-00:01",
        "9999-12-31T23:59:59Z",
        "9999-01-01T00:00:00+14:00",
        "yesterday",
        "",
    ],
)
@pytest.mark.parametrize(("parse", "document", "field"), KINDS, ids=KIND_IDS)
def test_invalid_timestamp(parse: Parser, document: dict[str, Any], field: str, value: str) -> None:
    raw = encode(with_field(document, field, value))
    assert reason_of(parse, raw) == validate.INVALID_TIMESTAMP


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-04T10:11:12Z", datetime(2026, 3, 4, 10, 11, 12, tzinfo=UTC)),
        ("2026-03-04t10:11:12z", datetime(2026, 3, 4, 10, 11, 12, tzinfo=UTC)),
        ("2026-03-04 10:11:12Z", datetime(2026, 3, 4, 10, 11, 12, tzinfo=UTC)),
        ("2026-03-04T12:11:12+02:00", datetime(2026, 3, 4, 10, 11, 12, tzinfo=UTC)),
        ("2026-03-04T05:11:12-05:00", datetime(2026, 3, 4, 10, 11, 12, tzinfo=UTC)),
        ("2026-03-04T10:11:12.5Z", datetime(2026, 3, 4, 10, 11, 12, 500000, tzinfo=UTC)),
        ("2026-03-04T10:11:12.123456Z", datetime(2026, 3, 4, 10, 11, 12, 123456, tzinfo=UTC)),
        # More than 6 fractional digits: cut to the microsecond, never rounded into the next one.
        ("2026-03-04T10:11:12.1234567Z", datetime(2026, 3, 4, 10, 11, 12, 123456, tzinfo=UTC)),
        ("2026-03-04T10:11:12.999999999Z", datetime(2026, 3, 4, 10, 11, 12, 999999, tzinfo=UTC)),
        ("2028-02-29T00:00:00Z", datetime(2028, 2, 29, tzinfo=UTC)),  # a leap day
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
        # A leap second (RFC 3339 allows second 60) is the minute's last microsecond.
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2016-12-31T23:59:60.5Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2017-01-01T00:59:60+01:00", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ],
)
def test_valid_timestamps(value: str, expected: datetime) -> None:
    parsed = validate.parse_timestamp(value, "occurred_at")
    assert parsed == expected
    assert parsed.utcoffset() is not None


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Etc/GMT+12", "UTC"])
@pytest.mark.parametrize(
    "value", ["9998-12-31T23:59:59-23:59", "9998-12-31T23:59:59+23:59", "1970-01-01T00:00:00+23:59"]
)
def test_an_accepted_timestamp_has_a_month_in_every_zone(value: str, zone: str) -> None:
    from zoneinfo import ZoneInfo

    from streams import domain

    domain.month_of(validate.parse_timestamp(value, "signup_at"), ZoneInfo(zone))


def test_offset_is_kept() -> None:
    parsed = validate.parse_timestamp("2026-03-04T12:11:12+02:00", "occurred_at")
    assert parsed.utcoffset() == timedelta(hours=2)
    assert parsed.tzinfo == timezone(timedelta(hours=2))


# --- valid events --------------------------------------------------------------------------------


def test_valid_activity() -> None:
    event = parse_activity(encode(ACTIVITY), MAX_BYTES)
    assert event == validate.ActivityEvent(
        user_id="u-1",
        occurred_at=datetime(2026, 3, 4, 10, 11, 12, 123000, tzinfo=UTC),
        activity="login",
        segments={"plan": "paid"},
    )


def test_valid_ticket() -> None:
    event = parse_ticket(encode(TICKET), MAX_BYTES)
    assert event == validate.TicketEvent(
        ticket_id="t-1",
        user_id="u-1",
        created_at=datetime(2026, 3, 4, 10, 11, 12, tzinfo=UTC),
        channel="email",
        segments={"region": "eu"},
    )


def test_valid_profile() -> None:
    event = parse_profile(encode(PROFILE), MAX_BYTES)
    assert event.user_id == "u-1"
    assert event.signup_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert event.segments == {"plan": "free"}
    assert event.updated_at == datetime(2026, 1, 1, tzinfo=UTC)


def test_null_and_absent_optional_fields() -> None:
    nulls = parse_ticket(encode({**TICKET, "channel": None, "segments": None}), MAX_BYTES)
    assert nulls.channel is None
    assert nulls.segments is None
    absent = parse_ticket(encode(without(without(TICKET, "channel"), "segments")), MAX_BYTES)
    assert absent.channel is None
    assert absent.segments is None
    activity = parse_activity(encode({**ACTIVITY, "activity": None, "segments": None}), MAX_BYTES)
    assert activity.activity is None
    assert activity.segments is None


def test_empty_labels_count_as_absent() -> None:
    assert parse_ticket(encode({**TICKET, "channel": ""}), MAX_BYTES).channel is None
    assert parse_activity(encode({**ACTIVITY, "activity": ""}), MAX_BYTES).activity is None


def test_profile_may_have_empty_segments() -> None:
    assert parse_profile(encode({**PROFILE, "segments": {}}), MAX_BYTES).segments == {}


def test_unknown_fields_and_whitespace_are_accepted() -> None:
    raw = b'  {"user_id": "u-1", "occurred_at": "2026-03-04T10:11:12Z", "extra": [1, 2]}\n'
    assert parse_activity(raw, MAX_BYTES).user_id == "u-1"


def test_non_ascii_text_is_fine() -> None:
    raw = encode({**ACTIVITY, "user_id": "ユーザー-1", "segments": {"region": "süd"}})
    event = parse_activity(raw, MAX_BYTES)
    assert event.user_id == "ユーザー-1"
    assert event.segments == {"region": "süd"}


def test_invalid_event_carries_reason_and_detail() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_ticket(encode(without(TICKET, "ticket_id")), MAX_BYTES)
    assert caught.value.reason == validate.MISSING_FIELD
    assert "ticket_id" in caught.value.detail
    assert str(caught.value).startswith("missing_field: ")


@pytest.mark.parametrize(("parse", "document", "_ts"), KINDS, ids=KIND_IDS)
def test_a_segment_value_longer_than_the_limit_is_its_own_reason(
    parse: Parser, document: dict[str, Any], _ts: str
) -> None:
    longest = "x" * validate.MAX_SEGMENT_CHARS
    assert parse(encode(with_field(document, "segments", {"plan": longest})), MAX_BYTES)
    raw = encode(with_field(document, "segments", {"plan": longest + "x"}))
    assert reason_of(parse, raw) == validate.SEGMENT_TOO_LONG
    raw = encode(with_field(document, "segments", {"plan": "xyz"}))
    with pytest.raises(InvalidEvent) as caught:
        parse(raw, MAX_BYTES, 2)
    assert caught.value.reason == validate.SEGMENT_TOO_LONG


def test_a_channel_longer_than_the_limit_is_a_dead_letter() -> None:
    long_channel = "c" * (60 * 1024)
    raw = encode(with_field(TICKET, "channel", long_channel))
    assert reason_of(parse_ticket, raw, 128 * 1024) == validate.SEGMENT_TOO_LONG
    assert parse_ticket(encode(with_field(TICKET, "channel", "c" * 128)), MAX_BYTES)


def test_dead_letter_schema_lists_every_reason() -> None:
    schema = json.loads((SCHEMAS / "cci-dead-letters.schema.json").read_text())
    reasons = {
        validate.INVALID_UTF8,
        validate.INVALID_JSON,
        validate.NOT_AN_OBJECT,
        validate.MISSING_FIELD,
        validate.WRONG_TYPE,
        validate.INVALID_TIMESTAMP,
        validate.OVERSIZED,
        validate.TOO_LATE,
        validate.FUTURE_TIMESTAMP,
        validate.SEGMENT_TOO_LONG,
    }
    assert set(schema["properties"]["reason"]["enum"]) == reasons


@pytest.mark.parametrize(("parse", "document", "field"), KINDS, ids=KIND_IDS)
def test_an_error_quotes_a_bounded_prefix_of_the_value(
    parse: Parser, document: dict[str, Any], field: str
) -> None:
    """Errors are logged and dead-lettered: a 64 KB value is not quoted (nor redacted) whole."""
    with pytest.raises(InvalidEvent) as caught:
        parse(encode(with_field(document, field, "a." * 32000)), MAX_BYTES * 2)
    assert len(str(caught.value)) < 300
    assert "64000 characters" in str(caught.value)
