"""The input contracts' types: the schema files are what they generate, and the fast paths
(msgspec decoding, the positional timestamp check) decide exactly as the full checks do."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from streams.dev import generate
from streams.pipeline import contracts, validate
from streams.pipeline.validate import InvalidEvent

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
NOW = datetime(2026, 3, 15, tzinfo=UTC)
MAX_BYTES = 65536


@pytest.mark.parametrize("topic", sorted(contracts.INPUT_CONTRACTS))
def test_schema_files_are_what_the_types_generate(topic: str) -> None:
    path = SCHEMAS / f"{topic}.schema.json"
    assert path.read_text(encoding="utf-8") == contracts.schema_text(topic), (
        f"{path.name} differs from the types: run `make schemas`"
    )


def test_check_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert contracts.main(["--write", str(tmp_path)]) == 0
    assert contracts.main(["--check", str(tmp_path)]) == 0
    stale = tmp_path / "user-profile.schema.json"
    stale.write_text(stale.read_text().replace('"maxLength": 256', '"maxLength": 255', 1))
    assert contracts.main(["--check", str(tmp_path)]) == 1
    assert "user-profile.schema.json" in capsys.readouterr().err


def _outcome(parse: Any, *args: Any) -> object:
    try:
        return parse(*args)
    except InvalidEvent as error:
        return ("invalid", error.reason, str(error))


def test_fast_timestamps_decide_as_the_pattern_does() -> None:
    """Mutations of valid timestamps: the positional fast path and the full checks agree on
    every one (same moment, or same reason and message)."""
    valid = [
        "2026-03-04T10:11:12.123Z",
        "2026-03-04 10:11:12+01:00",
        "2026-12-31T23:59:60.5-05:30",
        "1970-01-01T00:00:00Z",
        "9998-12-31T23:59:59.999999+00:00",
        "2026-03-04T10:11:12.123456789Z",
    ]
    rng = random.Random(17)
    alphabet = "0123456789-:.TtZz +a\u0661"
    for _ in range(20_000):
        chars = list(rng.choice(valid))
        for _ in range(rng.randint(1, 2)):
            at, op = rng.randrange(len(chars)), rng.random()
            if op < 0.5:
                chars[at] = rng.choice(alphabet)
            elif op < 0.75:
                del chars[at]
            else:
                chars.insert(at, rng.choice(alphabet))
        text = "".join(chars)
        assert _outcome(validate.parse_timestamp, text, "t") == _outcome(
            validate._checked_timestamp, text, "t"
        ), text


# (parse, its full checks, a valid document)
KINDS = [
    (
        validate.parse_activity,
        validate._checked_activity,
        {"user_id": "u-1", "occurred_at": "2026-03-04T10:11:12Z", "segments": {"plan": "p"}},
    ),
    (
        validate.parse_ticket,
        validate._checked_ticket,
        {"ticket_id": "t", "user_id": "u", "created_at": "2026-03-04T10:11:12Z", "channel": "c"},
    ),
    (
        validate.parse_profile,
        validate._checked_profile,
        {
            "user_id": "u-1",
            "signup_at": "2025-01-01T00:00:00Z",
            "segments": {"plan": "free"},
            "updated_at": "2026-01-01T00:00:00Z",
        },
    ),
]
ODD_VALUES: list[object] = [
    None, "", "x", 7, 1.5, True, [], ["a"], {}, {"plan": 1}, {"plan": None}, {"plan": "x" * 129},
    {f"k{n}": "v" for n in range(33)}, "x" * 257, "2026-02-30T00:00:00Z", "2026-12-31T23:59:60Z",
    "1969-12-31T23:59:59Z", "2026-03-04T10:11:12",
]  # fmt: skip


@pytest.mark.parametrize(
    ("parse", "checked", "document"), KINDS, ids=["activity", "ticket", "profile"]
)
def test_decoding_decides_as_the_full_checks(
    parse: Any, checked: Any, document: dict[str, Any]
) -> None:
    """Every field given every odd value, or left out: the same event, or the same dead-letter
    reason and message, from the msgspec path as from the hand-written checks."""
    documents = [document]
    for field in [*document, "activity", "channel"]:
        documents.append({k: v for k, v in document.items() if k != field})
        documents += [{**document, field: value} for value in ODD_VALUES]
    raws = [orjson.dumps(d) for d in documents]
    raws += [b"[]", b"null", b"{", b'{"user_id": "u-\xff"}', orjson.dumps(document) + b" x"]
    raws.append(orjson.dumps({**document, "extra": "\u00e9"}).replace(b"\xc3\xa9", b"\xff"))
    for raw in raws:
        assert _outcome(parse, raw, MAX_BYTES) == _outcome(checked, raw, MAX_BYTES, 128), raw


def test_generated_traffic_decodes_as_the_full_checks() -> None:
    data = generate.generate(200, 3, 5, NOW, ZoneInfo("Europe/Berlin"))
    for parse, checked, records in (
        (validate.parse_activity, validate._checked_activity, data.activity),
        (validate.parse_ticket, validate._checked_ticket, data.tickets),
        (validate.parse_profile, validate._checked_profile, data.profiles),
    ):
        for raw in records:
            assert parse(raw, MAX_BYTES) == checked(raw, MAX_BYTES, 128)
