"""The rules every peer of ``cci bench`` shares (streams/bench/peers/rules.py) beyond the
winners and deltas tests/unit/test_quix_peer.py pins: profiles as the worker folds them, and a
table engine's sortable versions and month rows."""

from __future__ import annotations

import itertools

import orjson

from streams.bench.peers.rules import fold_profile, month_figures, parse_order, version_order
from streams.pipeline.enrich import Profile
from streams.settings import load_settings


def profile(user: str, updated_at: str, plan: str) -> bytes:
    return orjson.dumps(
        {
            "user_id": user,
            "signup_at": "2026-01-05T10:00:00Z",
            "updated_at": updated_at,
            "segments": {"plan": plan},
        }
    )


def test_the_newest_profile_wins_whatever_the_order_and_a_tombstone_deletes() -> None:
    settings = load_settings({})
    older, newer = (
        profile("u1", "2026-02-01T00:00:00Z", "free"),
        profile("u1", "2026-03-01T00:00:00Z", "pro"),
    )
    for records in ([older, newer], [newer, older]):
        profiles: dict[str, Profile] = {}
        for value in records:
            fold_profile(profiles, b"u1", value, settings)
        assert profiles["u1"].segments == {"plan": "pro"}

    fold_profile(profiles, b"u1", b"not json", settings)
    assert profiles["u1"].segments == {"plan": "pro"}
    fold_profile(profiles, b"u1", None, settings)
    assert profiles == {}


def test_versions_sort_as_time_then_attributes_do() -> None:
    versions = [
        (5, ("pro", "eu")),
        (5, ("free", "us")),
        (5, ("free", "eu-west")),
        (5, ("free", "eu")),
        (40, ("a", "a")),
        (1_000_000_000_000_000, ("a", "a")),
        (7, ("", "z")),
        (7, ("a", "")),
    ]
    for first, second in itertools.permutations(versions, 2):
        as_strings = version_order(first[0], "m", first[1]) < version_order(
            second[0], "m", second[1]
        )
        assert as_strings == (first < second), (first, second)
    assert parse_order(version_order(5, "2026-10", ("free", "eu"))) == ("2026-10", ("free", "eu"))


def test_a_months_rows_become_its_figures_with_channel_users_from_the_month() -> None:
    rows = (
        ("plan", "pro", 1, 3),
        ("all", "all", 2, 5),
        ("channel", "chat", 2, 0),
        ("channel", "email", 0, 0),
        ("plan", "free", 1, 2),
    )

    assert month_figures(rows) == [
        ["all", "all", 2, 5],
        ["channel", "chat", 2, 5],
        ["plan", "free", 1, 2],
        ["plan", "pro", 1, 3],
    ]
    assert month_figures((("channel", "chat", 1, 0),)) == [["channel", "chat", 1, 0]]
