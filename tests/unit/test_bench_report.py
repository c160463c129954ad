"""The figures of a bench run: the terminal table, the JSON for comparing runs, the exit status."""

from __future__ import annotations

import json
from dataclasses import replace

from streams.bench.report import (
    BenchReport,
    CeilingRun,
    LatencyRun,
    PeerRun,
    PipelineRun,
    RunInfo,
    exit_status,
    render_table,
    report_json,
)

MIB = 2**20


def a_report() -> BenchReport:
    return BenchReport(
        run=RunInfo(
            started_at="2026-11-23T12:00:00+00:00",
            commit="abc1234",
            events=200_000,
            activity_events=171_000,
            ticket_events=29_000,
            users=50_000,
            months=3,
            partitions=4,
            figures=69,
            user_months=96_000,
            emit_interval_s=0.5,
            cpus=2,
            load_average_1m=1.5,
        ),
        ceiling=CeilingRun(seconds=0.8, events_per_s=250_000.0),
        pipeline=PipelineRun(
            exact=True,
            seconds=50.0,
            events_per_s=4_000.0,
            clickhouse_exact=True,
            clickhouse_seconds=51.0,
            clickhouse_events_per_s=3_921.6,
            peak_rss_bytes=400 * MIB,
            user_months_gauge=96_000.0,
            dedup_state_bytes_gauge=None,
        ),
        peer=PeerRun(
            name="Quix Streams",
            exact=True,
            seconds=20.0,
            events_per_s=10_000.0,
            peak_rss_bytes=150 * MIB,
        ),
        latency=LatencyRun(
            offered_rate=10_000,
            achieved_rate=9_990.0,
            produce_seconds=20.0,
            events=200_000,
            visible=200_000,
            sustained_events_per_s=4_400.0,
            p50_ms=512.0,
            p95_ms=1_800.0,
            p99_ms=2_345.0,
            max_ms=3_000.0,
            exact=True,
            first_tenth_p50_ms=400.0,
            last_tenth_p50_ms=1_900.0,
        ),
        broker_peak_rss_bytes=900 * MIB,
        bench_peak_rss_bytes=300 * MIB,
    )


def test_the_table_shows_each_measurement_in_a_row() -> None:
    table = render_table(a_report())

    rows = {line.split("  ")[0].strip(): line.split() for line in table.splitlines()}
    assert "4,000" in rows["pipeline → cci-updates"] and "50.0" in rows["pipeline → cci-updates"]
    assert "250,000" in rows["consume ceiling"]
    assert "10,000" in rows["peer: Quix Streams"] and "150" in rows["peer: Quix Streams"]
    assert "900" in rows["broker (Tansu)"]
    assert "pipeline/ceiling 0.016, pipeline/peer 0.400" in table
    assert "p50 512 ms, p95 1,800 ms, p99 2,345 ms" in table
    assert "sustained 4,400 events/s in the latency phase; p50 of the first tenth 400 ms" in table
    assert "200,000 events (171,000 activity, 29,000 tickets), 50,000 users" in table
    assert "preliminary" in table
    assert table.splitlines()[-1] == "exact: every result equals the batch recount"


def test_missing_measurements_show_as_dashes_and_skipped_phases_are_left_out() -> None:
    report = replace(a_report(), peer=None, latency=None)

    table = render_table(report)

    assert "peer:" not in table and "latency at" not in table
    assert "pipeline/peer -" in table
    assert "cci_dedup_state_bytes - B" in table


def test_json_holds_every_figure_the_ratios_and_the_definitions() -> None:
    document = json.loads(report_json(a_report()))

    assert document["schema"] == 1 and document["exact"] is True
    assert document["pipeline"]["events_per_s"] == 4_000.0
    assert document["pipeline"]["dedup_state_bytes_gauge"] is None
    assert document["pipeline"]["state_bytes_per_user_month"] is None
    assert document["peer"]["peak_rss_bytes"] == 150 * MIB
    assert document["latency"]["p99_ms"] == 2_345.0
    assert document["ratios"] == {"pipeline_vs_ceiling": 0.016, "pipeline_vs_peer": 0.4}
    assert "first cci-updates record" in document["definitions"]["latency"]
    assert document["run"]["commit"] == "abc1234"


def test_json_of_a_run_without_peer_and_latency_has_nulls() -> None:
    document = json.loads(report_json(replace(a_report(), peer=None, latency=None)))

    assert document["peer"] is None and document["latency"] is None
    assert document["ratios"]["pipeline_vs_peer"] is None


def test_any_result_that_differs_from_the_recount_fails_the_run() -> None:
    report = a_report()
    assert exit_status(report) == 0

    wrong_peer = replace(report, peer=replace(report.peer, exact=False, difference=["x"]))
    wrong_store = replace(report, pipeline=replace(report.pipeline, clickhouse_exact=False))
    wrong_stream = replace(report, pipeline=replace(report.pipeline, exact=False))
    wrong_latency = replace(report, latency=replace(report.latency, exact=False))

    for wrong in (wrong_peer, wrong_store, wrong_stream, wrong_latency):
        assert exit_status(wrong) == 1
        assert render_table(wrong).splitlines()[-1] == "exact: NO"
    assert "peer differs from the recount:\n  x" in render_table(wrong_peer)


def test_latency_that_grows_over_the_phase_is_called_queueing() -> None:
    report = a_report()
    assert report.latency is not None
    assert "fell behind" in render_table(report)
    report.latency.last_tenth_p50_ms = 450.0
    assert report.latency.falling_behind is False
    assert "fell behind" not in render_table(report)
