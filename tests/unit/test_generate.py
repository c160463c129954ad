"""The synthetic traffic: deterministic, realistic in shape, valid, and never ahead of ``now``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from streams import domain
from streams.dev import generate
from streams.pipeline import emit, validate
from streams.pipeline import recount as batch
from streams.settings import Settings

NOW = datetime(2026, 3, 15, 12, 34, 56, 789000, tzinfo=UTC)
ZONE = ZoneInfo("UTC")
SETTINGS = Settings()
REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"


@pytest.fixture(scope="module")
def dataset() -> generate.Dataset:
    return generate.generate(1500, 13, 11, NOW, ZONE)


@pytest.fixture(scope="module")
def recount(dataset: generate.Dataset) -> batch.Recount:
    return batch.recount(dataset.activity, dataset.tickets, dataset.profiles, NOW, SETTINGS)


def totals_by(recount: batch.Recount, dimension: str) -> dict[str, tuple[int, int]]:
    """Tickets and active user-months per segment, summed over all months."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (_month, dim, segment), (tickets, actives) in recount.figures.items():
        if dim == dimension:
            sums[segment][0] += tickets
            sums[segment][1] += actives
    return {segment: (t, a) for segment, (t, a) in sums.items()}


def cci_of(totals: dict[str, tuple[int, int]], segment: str) -> float:
    tickets, actives = totals[segment]
    return tickets / actives


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_same_bytes() -> None:
    first = generate.generate(200, 4, 3, NOW, ZONE)
    second = generate.generate(200, 4, 3, NOW, ZONE)
    assert first.activity == second.activity
    assert first.tickets == second.tickets
    assert first.profiles == second.profiles
    assert first.counts == second.counts


def test_another_seed_other_traffic() -> None:
    assert (
        generate.generate(200, 4, 3, NOW, ZONE).tickets
        != generate.generate(200, 4, 4, NOW, ZONE).tickets
    )


def digest(users: int, seed: int) -> str:
    data = generate.generate(users, 3, seed, NOW, ZONE)
    hasher = hashlib.sha256()
    for records in (data.activity, data.tickets, data.profiles):
        for record in records:
            hasher.update(record + b"\n")
    return hasher.hexdigest()


def test_output_does_not_depend_on_hash_randomisation() -> None:
    # Iterating a set of strings would change order between interpreter runs: pin it down.
    script = "import tests.unit.test_generate as t; print(t.digest(60, 5))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == digest(60, 5)


def test_progress_reports_every_user() -> None:
    steps: list[int] = []
    generate.generate(2345, 1, 1, NOW, ZONE, progress=steps.append)
    assert sum(steps) == 2345
    assert len(steps) == 3


def test_rejects_nonsense_arguments() -> None:
    with pytest.raises(ValueError):
        generate.generate(0, 3, 1, NOW, ZONE)
    with pytest.raises(ValueError):
        generate.generate(10, 0, 1, NOW, ZONE)
    with pytest.raises(ValueError):
        generate.generate(10, 3, 1, NOW.replace(tzinfo=None), ZONE)


# --- times ---------------------------------------------------------------------------------------


def event_times(data: generate.Dataset) -> list[datetime]:
    times = [validate.parse_timestamp(orjson.loads(r)["occurred_at"], "t") for r in data.activity]
    times += [validate.parse_timestamp(orjson.loads(r)["created_at"], "t") for r in data.tickets]
    return times


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
def test_event_times_lie_in_the_generated_months_and_never_after_now(zone: str) -> None:
    tz = ZoneInfo(zone)
    data = generate.generate(300, 13, 2, NOW, tz)
    times = event_times(data)
    assert max(times) <= NOW
    months = {domain.month_of(moment, tz) for moment in times}
    last = domain.month_of(NOW, tz)
    assert months == set(range(last - 12, last + 1))


def test_profile_times_never_after_now(dataset: generate.Dataset) -> None:
    for record in dataset.profiles:
        profile = validate.parse_profile(record, SETTINGS.max_event_bytes)
        assert profile.signup_at <= profile.updated_at <= NOW


def test_now_at_the_very_start_of_a_month() -> None:
    start = datetime(2026, 4, 1, 0, 0, 0, tzinfo=UTC)
    data = generate.generate(300, 2, 9, start, ZONE)
    assert max(event_times(data)) <= start


def test_timestamps_come_in_several_rfc3339_shapes(dataset: generate.Dataset) -> None:
    stamps = [orjson.loads(r)["occurred_at"] for r in dataset.activity[:3000]]
    assert any(s.endswith("Z") for s in stamps)
    assert any(s.endswith("+00:00") for s in stamps)
    assert any(s.endswith("+05:30") for s in stamps)


# --- realism -------------------------------------------------------------------------------------


def test_every_record_is_valid_and_counted(recount: batch.Recount) -> None:
    assert not recount.dead_letters
    assert not recount.invalid_profiles
    assert recount.inactive_activities == 0


def test_free_contacts_more_than_paid_and_paid_more_than_vip(recount: batch.Recount) -> None:
    plans = totals_by(recount, "plan")
    assert cci_of(plans, "free") > 1.5 * cci_of(plans, "paid")
    assert cci_of(plans, "paid") > 1.5 * cci_of(plans, "vip")


def test_new_customers_contact_more_than_long_time_ones(recount: batch.Recount) -> None:
    tenure = totals_by(recount, "tenure")
    assert set(tenure) == {"new", "1-2m", "3-11m", "12m+", "unknown"}
    assert cci_of(tenure, "new") > cci_of(tenure, "3-11m") > cci_of(tenure, "12m+")


def test_every_month_has_every_segment(recount: batch.Recount) -> None:
    months = {month for month, _, _ in recount.figures}
    assert len(months) == 13
    for month in months:
        segments = {(d, s) for m, d, s in recount.figures if m == month}
        for plan in ("free", "paid", "vip"):
            assert ("plan", plan) in segments
        for product in ("boards", "docs", "chat"):
            assert ("product", product) in segments
        for region in ("eu", "us", "apac"):
            assert ("region", region) in segments
        for channel in ("email", "chat", "phone", "web"):
            assert ("channel", channel) in segments


def test_channel_mix_depends_on_the_plan(dataset: generate.Dataset) -> None:
    plan_of = {}
    for record in dataset.profiles:
        profile = orjson.loads(record)
        plan_of[profile["user_id"]] = profile["segments"]["plan"]
    mix: dict[str, Counter[str]] = defaultdict(Counter)
    for record in dataset.tickets:
        ticket = orjson.loads(record)
        mix[plan_of.get(ticket["user_id"], "?")][ticket.get("channel") or "unknown"] += 1
    assert mix["vip"]["phone"] / mix["vip"].total() > mix["free"]["phone"] / mix["free"].total()
    assert mix["free"]["web"] / mix["free"].total() > mix["vip"]["web"] / mix["vip"].total()
    assert sum(counts["unknown"] for counts in mix.values()) > 0


def test_some_tickets_are_resent_identically(dataset: generate.Dataset) -> None:
    copies = Counter(dataset.tickets)
    resent = [record for record, count in copies.items() if count > 1]
    assert resent
    ids = {orjson.loads(record)["ticket_id"] for record in dataset.tickets}
    assert len(ids) == dataset.counts["tickets"]
    assert len(ids) < len(dataset.tickets)
    share = dataset.counts["resent_tickets"] / dataset.counts["tickets"]
    assert 0.01 < share < 0.06


def test_some_ticket_versions_disagree(dataset: generate.Dataset) -> None:
    versions: dict[str, set[bytes]] = defaultdict(set)
    for record in dataset.tickets:
        versions[orjson.loads(record)["ticket_id"]].add(record)
    assert any(len(distinct) > 1 for distinct in versions.values())


def test_records_arrive_out_of_order(dataset: generate.Dataset) -> None:
    months = [
        domain.month_of(validate.parse_timestamp(orjson.loads(r)["occurred_at"], "t"), ZONE)
        for r in dataset.activity
    ]
    # Shuffled within a month, and some delivered after later months' records.
    assert months != sorted(months)
    newest_seen = months[0]
    late = 0
    for month in months:
        if month < newest_seen - 1:
            late += 1
        newest_seen = max(newest_seen, month)
    assert late > 0


def test_some_events_carry_segments_and_some_rely_on_the_profile(
    dataset: generate.Dataset,
) -> None:
    carrying = [orjson.loads(r).get("segments") is not None for r in dataset.activity]
    assert 0.1 < sum(carrying) / len(carrying) < 0.6


def test_plan_upgrades_show_in_event_segments(dataset: generate.Dataset) -> None:
    plans: dict[str, set[str]] = defaultdict(set)
    for record in dataset.activity:
        event = orjson.loads(record)
        if event.get("segments"):
            plans[event["user_id"]].add(event["segments"]["plan"])
    assert any(seen == {"free", "paid"} for seen in plans.values())


def test_profiles_some_missing_some_updated_in_any_order(dataset: generate.Dataset) -> None:
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in dataset.profiles:
        profile = orjson.loads(record)
        by_user[profile["user_id"]].append(profile)
    assert dataset.counts["users_without_profile"] > 0
    assert len(by_user) == 1500 - dataset.counts["users_without_profile"]
    updated = [versions for versions in by_user.values() if len(versions) == 2]
    assert len(updated) == dataset.counts["plan_upgrades"] + dataset.counts["profile_updates"]

    def updated_at(profile: dict[str, Any]) -> datetime:
        return validate.parse_timestamp(profile["updated_at"], "updated_at")

    # The newer version sometimes arrives first, so "newest wins" is really exercised.
    assert any(updated_at(first) > updated_at(second) for first, second in updated)
    assert any(updated_at(first) < updated_at(second) for first, second in updated)


def test_some_tickets_come_from_users_inactive_that_month(dataset: generate.Dataset) -> None:
    active = set()
    for record in dataset.activity:
        event = orjson.loads(record)
        moment = validate.parse_timestamp(event["occurred_at"], "t")
        active.add((event["user_id"], domain.month_of(moment, ZONE)))
    inactive = 0
    for record in dataset.tickets:
        ticket = orjson.loads(record)
        moment = validate.parse_timestamp(ticket["created_at"], "t")
        inactive += (ticket["user_id"], domain.month_of(moment, ZONE)) not in active
    assert 0 < inactive < len(dataset.tickets) * 0.2


# --- contracts -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validators() -> dict[str, Any]:
    import jsonschema

    found = {}
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        for example in schema.get("examples", []):
            validator.validate(example)
        found[path.name.removesuffix(".schema.json")] = validator
    return found


def test_there_is_a_schema_per_topic(validators: dict[str, Any]) -> None:
    assert set(validators) == {
        "user-activity",
        "ticket-created",
        "user-profile",
        "cci-updates",
        "cci-dead-letters",
        "cci-alerts",
    }


def test_generated_records_match_the_input_schemas(validators: dict[str, Any]) -> None:
    data = generate.generate(300, 13, 5, NOW, ZoneInfo("Europe/Berlin"))
    for topic, records in (
        ("user-activity", data.activity),
        ("ticket-created", data.tickets),
        ("user-profile", data.profiles),
    ):
        for record in records:
            validators[topic].validate(orjson.loads(record))


def test_expected_figures_match_the_updates_schema(
    validators: dict[str, Any], recount: batch.Recount
) -> None:
    for row in batch.expected_updates(recount.figures):
        emitted = emit.update_value(
            domain.month_from_label(row["month"]),
            row["dimension"],
            row["segment"],
            row["tickets"],
            row["active_users"],
            version=1,
            emitted_at=NOW,
        )
        assert {key: emitted[key] for key in row} == row
        validators["cci-updates"].validate(emitted)


def test_schemas_reject_what_validation_rejects(validators: dict[str, Any]) -> None:
    import jsonschema

    activity = validators["user-activity"]
    bad = [
        {"occurred_at": "2026-03-04T10:11:12Z"},
        {"user_id": "", "occurred_at": "2026-03-04T10:11:12Z"},
        {"user_id": 7, "occurred_at": "2026-03-04T10:11:12Z"},
        {"user_id": "u", "occurred_at": "2026-03-04T10:11:12"},
        {"user_id": "u", "occurred_at": "2026-03-04"},
        {"user_id": "u", "occurred_at": "2026-03-04T10:11:12Z", "segments": ["plan"]},
        {"user_id": "u", "occurred_at": "2026-03-04T10:11:12Z", "segments": {"plan": 1}},
    ]
    for document in bad:
        with pytest.raises(jsonschema.ValidationError):
            activity.validate(document)
    with pytest.raises(jsonschema.ValidationError):
        validators["cci-updates"].validate(
            {
                **emit.update_value(24314, "all", "all", 1, 0, 1, NOW),
                "cci": 0.0,  # cci must be null without active users
            }
        )


def test_dead_letter_record_matches_its_schema(validators: dict[str, Any]) -> None:
    import base64

    raw = b'{"user_id": "u-1", "occurred_at": "2026-02-30T00:00:00Z"}'
    with pytest.raises(validate.InvalidEvent) as caught:
        validate.parse_activity(raw, SETTINGS.max_event_bytes)
    record = {
        "topic": "user-activity",
        "partition": 0,
        "offset": 41,
        "error": str(caught.value),
        "reason": caught.value.reason,
        "raw": base64.b64encode(raw).decode("ascii"),
    }
    validators["cci-dead-letters"].validate(record)


# --- files ---------------------------------------------------------------------------------------


def test_write_dataset_and_load_expected(tmp_path: Path) -> None:
    data = generate.generate(250, 3, 8, NOW, ZONE)
    berlin = Settings(timezone="Europe/Berlin")
    summary = generate.write_dataset(data, tmp_path, berlin, NOW)
    assert summary["activity"] == len(data.activity)
    assert summary["tickets"] == len(data.tickets)
    assert summary["profiles"] == len(data.profiles)

    for name, records in (
        ("activity.jsonl", data.activity),
        ("tickets.jsonl", data.tickets),
        ("profiles.jsonl", data.profiles),
    ):
        assert (tmp_path / name).read_bytes().splitlines() == records

    document = json.loads((tmp_path / "expected.json").read_text())
    assert document["timezone"] == "Europe/Berlin"
    assert document["users"] == 250
    assert document["months"] == 3
    assert datetime.fromisoformat(document["now"]) == NOW
    assert document["counts"]["ticket_records"] == len(data.tickets)
    expected = batch.recount(data.activity, data.tickets, data.profiles, NOW, berlin)
    assert document["figures"] == batch.expected_updates(expected.figures)
    assert generate.load_expected(tmp_path / "expected.json") == expected.figures
