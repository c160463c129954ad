"""The input topics' contracts as types: one source for decoding and for ``schemas/*.schema.json``.

``msgspec`` decodes a record's JSON straight into these structs and checks their shape in C (the
hand-written checks cost ~28% of the ingest process). The same types generate the JSON Schemas
in ``schemas/`` (``python -m streams.pipeline.contracts --write schemas``; ``make schemas``), and
``tests/unit/test_contracts.py`` fails when the files differ from what the types generate.

What a type cannot say stays in ``streams/pipeline/validate.py``: that a date exists, a record's
size, the segment length setting, and the clear reason of every rejection.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE = "https://cci-stream.example/schemas/"
MAX_ID_LENGTH = 256
MAX_SEGMENTS = 32
# The most characters of a segment value the contract allows; CCI_MAX_SEGMENT_CHARS (at most this)
# is the limit in force, checked in validate.py.
MAX_SEGMENT_VALUE_CHARS = 256
# RFC 3339 date-time with a required offset: fromisoformat alone also takes dates, week dates and
# offset-less times.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"  # date and time
    r"(\.[0-9]+)?"  # any number of fractional digits
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"  # the offset is required
)

Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Timestamp = Annotated[
    str,
    Meta(
        description="RFC 3339 date-time with an offset (Z or ±hh:mm); T, t or a space between "
        "date and time; up to 9 fractional digits (kept to the microsecond); not before 1970.",
        # The pattern is checked by validate.parse_timestamp, which also parses: as a msgspec
        # constraint it would be checked twice, and it costs more than the rest of a decode.
        extra_json_schema={"format": "date-time", "pattern": RFC3339_PATTERN},
    ),
]
SegmentValue = Annotated[str, Meta(max_length=MAX_SEGMENT_VALUE_CHARS)]
_EVENT_SEGMENTS = (
    "The {thing}'s own segment values (plan, product, region and any CCI_EXTRA_DIMENSIONS); each "
    "one given here takes precedence over the user's profile. Null or absent: the profile "
    "decides. An empty string counts as absent."
)


def _segments(description: str) -> Any:
    return Annotated[
        dict[str, SegmentValue], Meta(max_length=MAX_SEGMENTS, description=description)
    ]


EventSegments = _segments(_EVENT_SEGMENTS.format(thing="event"))
TicketSegments = _segments(_EVENT_SEGMENTS.format(thing="ticket"))
ProfileSegments = _segments(
    "Segment values of the user: plan, product, region and any other keys (which become "
    "dimensions when named in CCI_EXTRA_DIMENSIONS)."
)


# gc=False: these hold only strings and dicts of strings, so they need no cycle tracking, and
# the collector does not walk the ~5,000 of a batch.
class ActivityRecord(msgspec.Struct, gc=False):
    """Value of a record on the user-activity topic: one thing a user did. Key: the user_id as
    UTF-8 bytes (any key is accepted; keying by user keeps a user's records in order). A user
    counts as active in the calendar month (CCI_TIMEZONE) of occurred_at when activity is one of
    CCI_ACTIVE_ACTIVITIES, or always when that list is empty. Unknown properties are ignored.
    Records that break this contract, are larger than CCI_MAX_EVENT_BYTES, fall in a month older
    than CCI_RETAIN_MONTHS or lie more than CCI_MAX_FUTURE_SECONDS ahead go to cci-dead-letters.
    Impossible dates such as 2026-02-30 match the pattern but are dead letters too."""

    user_id: Id
    occurred_at: Timestamp
    activity: Annotated[
        str | None,
        Meta(
            description="Activity type, e.g. login, page_view, api_call, purchase. Null or "
            "empty: no type."
        ),
    ] = None
    segments: EventSegments | None = None


class TicketRecord(msgspec.Struct, gc=False):
    """Value of a record on the ticket-created topic: a support ticket was opened. Key: the
    user_id as UTF-8 bytes (any key is accepted). A ticket counts once per ticket_id however
    often it is sent; when versions disagree, the one with the earliest created_at wins (ties:
    the smaller attributes), and it counts in the calendar month (CCI_TIMEZONE) of that
    created_at. Unknown properties are ignored. Records that break this contract, are larger
    than CCI_MAX_EVENT_BYTES, fall in a month older than CCI_RETAIN_MONTHS or lie more than
    CCI_MAX_FUTURE_SECONDS ahead go to cci-dead-letters."""

    ticket_id: Id
    user_id: Id
    created_at: Timestamp
    channel: Annotated[
        str | None,
        Meta(
            description="Where the ticket came in, e.g. email, chat, phone, web. Null, "
            "empty or absent: counted as unknown. Longer than CCI_MAX_SEGMENT_CHARS: a "
            "dead letter."
        ),
    ] = None
    segments: TicketSegments | None = None


class ProfileRecord(msgspec.Struct, gc=False):
    """Value of a record on the compacted user-profile topic: what is known about a user. Key:
    the user_id as UTF-8 bytes, so compaction keeps the latest record per user; a null value
    (tombstone) deletes the profile. Of several profiles of a user, the one with the latest
    updated_at wins, whatever order they arrive in. The segments fill in dimensions an event does
    not carry itself, and signup_at gives the tenure (calendar months from the signup month to the
    event's month, in CCI_TIMEZONE). Invalid profiles are logged and skipped, not dead-lettered.
    Unknown properties are ignored."""

    user_id: Id
    signup_at: Timestamp
    segments: ProfileSegments
    updated_at: Timestamp


ACTIVITY_DECODER = msgspec.json.Decoder(ActivityRecord)
TICKET_DECODER = msgspec.json.Decoder(TicketRecord)
PROFILE_DECODER = msgspec.json.Decoder(ProfileRecord)


# --- JSON Schemas ------------------------------------------------------------------------------

# topic → (type, examples): the schema file of each input topic.
INPUT_CONTRACTS: dict[str, tuple[type[msgspec.Struct], list[dict[str, Any]]]] = {
    "user-activity": (
        ActivityRecord,
        [
            {
                "user_id": "user-0000042",
                "occurred_at": "2026-03-04T10:11:12.123Z",
                "activity": "login",
                "segments": {"plan": "paid"},
            }
        ],
    ),
    "ticket-created": (
        TicketRecord,
        [
            {
                "ticket_id": "tkt-000000917",
                "user_id": "user-0000042",
                "created_at": "2026-03-04T11:12:13.456+01:00",
                "channel": "email",
            }
        ],
    ),
    "user-profile": (
        ProfileRecord,
        [
            {
                "user_id": "user-0000042",
                "signup_at": "2025-06-01T08:00:00Z",
                "segments": {"plan": "paid", "product": "boards", "region": "eu"},
                "updated_at": "2026-02-10T09:30:00.000Z",
            }
        ],
    ),
}


def input_schema(topic: str) -> dict[str, Any]:
    """The JSON Schema document of an input topic's record values, from its type."""
    record_type, examples = INPUT_CONTRACTS[topic]
    generated = msgspec.json.schema(record_type)
    body = generated["$defs"][record_type.__name__]
    body.pop("title", None)
    for field in body["properties"].values():
        field.pop("default", None)  # an absent optional field is "no value", said in the text
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"{SCHEMA_BASE}{topic}.schema.json",
        "title": topic,
        "description": " ".join(body.pop("description").split()),
        **body,
        "examples": examples,
    }


def schema_text(topic: str) -> str:
    """The schema file's text: stable key order, two-space indent, a final newline."""
    return json.dumps(input_schema(topic), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streams.pipeline.contracts",
        description="Write (or --check) the input topics' JSON Schemas generated from the types.",
    )
    parser.add_argument("--write", type=Path, metavar="DIR", help="folder of the schema files")
    parser.add_argument("--check", type=Path, metavar="DIR", help="exit 1 if a file differs")
    args = parser.parse_args(argv)
    folder = args.write or args.check
    if folder is None:
        parser.error("give --write DIR or --check DIR")
    stale = []
    for topic in INPUT_CONTRACTS:
        path = folder / f"{topic}.schema.json"
        text = schema_text(topic)
        if args.write:
            path.write_text(text, encoding="utf-8")
        elif not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(str(path))
    if stale:
        print("not what the types generate: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
