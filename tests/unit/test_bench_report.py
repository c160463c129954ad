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
    peer_ratios,
    ranking,
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
            first_output_seconds=0.5,
            peak_rss_bytes=400 * MIB,
            user_months_gauge=96_000.0,
            dedup_state_bytes_gauge=None,
        ),
        peers=[
            PeerRun(
                name="Quix Streams",
                exact=True,
                seconds=20.0,
                events_per_s=10_000.0,
                first_output_seconds=1.0,
                peak_rss_bytes=150 * MIB,
            )
        ],
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
    assert rows["peer: Quix Streams"][-4:] == ["1.00", "yes", "150", "MiB"]
    assert rows["pipeline → cci-updates"][-4:] == ["0.50", "yes", "400", "MiB"]
    assert "900" in rows["broker (Tansu)"]
    assert "pipeline/ceiling 0.016" in table
    assert (
        "Quix Streams (#1 of the peers): events/s 0.400, first output 0.500, peak RSS 2.667"
        in table
    )
    assert "p50 512 ms, p95 1,800 ms, p99 2,345 ms" in table
    assert "sustained 4,400 events/s in the latency phase; p50 of the first tenth 400 ms" in table
    assert "200,000 events (171,000 activity, 29,000 tickets), 50,000 users" in table
    assert "preliminary" in table
    assert table.splitlines()[-1] == "exact: every result equals the batch recount"


def test_missing_measurements_show_as_dashes_and_skipped_phases_are_left_out() -> None:
    report = replace(a_report(), peers=[], latency=None)

    table = render_table(report)

    assert "peer:" not in table and "pipeline / peer" not in table and "latency at" not in table
    assert "cci_dedup_state_bytes - B" in table


def test_json_holds_every_figure_the_ratios_and_the_definitions() -> None:
    document = json.loads(report_json(a_report()))

    assert document["schema"] == 2 and document["exact"] is True
    assert document["pipeline"]["events_per_s"] == 4_000.0
    assert document["pipeline"]["dedup_state_bytes_gauge"] is None
    assert document["pipeline"]["state_bytes_per_user_month"] is None
    assert document["peers"][0]["peak_rss_bytes"] == 150 * MIB
    assert document["latency"]["p99_ms"] == 2_345.0
    assert document["ratios"] == {
        "pipeline_vs_ceiling": 0.016,
        "pipeline_vs_fastest_peer": 0.4,
        "fastest_peer": "Quix Streams",
        "peers": {
            "Quix Streams": {"events_per_s": 0.4, "first_output": 0.5, "peak_rss": 400 / 150}
        },
    }
    assert "first cci-updates record" in document["definitions"]["latency"]
    assert "earliest timestamp of its output records" in document["definitions"]["first_output"]
    assert document["run"]["commit"] == "abc1234"


def test_json_of_a_run_without_peer_and_latency_has_nulls() -> None:
    document = json.loads(report_json(replace(a_report(), peers=[], latency=None)))

    assert document["peers"] == [] and document["latency"] is None
    assert document["ratios"]["pipeline_vs_fastest_peer"] is None
    assert document["ratios"]["peers"] == {}


def test_any_result_that_differs_from_the_recount_fails_the_run() -> None:
    report = a_report()
    assert exit_status(report) == 0

    wrong_peer = replace(report, peers=[replace(report.peers[0], exact=False, difference=["x"])])
    wrong_store = replace(report, pipeline=replace(report.pipeline, clickhouse_exact=False))
    wrong_stream = replace(report, pipeline=replace(report.pipeline, exact=False))
    wrong_latency = replace(report, latency=replace(report.latency, exact=False))

    for wrong in (wrong_peer, wrong_store, wrong_stream, wrong_latency):
        assert exit_status(wrong) == 1
        assert render_table(wrong).splitlines()[-1] == "exact: NO"
    assert "peer Quix Streams differs from the recount:\n  x" in render_table(wrong_peer)


def test_latency_that_grows_over_the_phase_is_called_queueing() -> None:
    report = a_report()
    assert report.latency is not None
    assert "fell behind" in render_table(report)
    report.latency.last_tenth_p50_ms = 450.0
    assert report.latency.falling_behind is False
    assert "fell behind" not in render_table(report)


def a_peer(name: str, events_per_s: float | None, exact: bool = True) -> PeerRun:
    return PeerRun(
        name=name,
        exact=exact,
        seconds=None if events_per_s is None else 200_000 / events_per_s,
        events_per_s=events_per_s,
        first_output_seconds=2.0,
        peak_rss_bytes=200 * MIB,
    )


def test_peers_are_ranked_fastest_first_and_an_inexact_one_is_reported_but_not_ranked() -> None:
    slow, fast = a_peer("Slow", 1_000.0), a_peer("Fast", 8_000.0)
    wrong = a_peer("Wrong", 50_000.0, exact=False)
    unmeasured = a_peer("Unmeasured", None)

    assert ranking([slow, wrong, fast, unmeasured]) == [fast, slow]
    assert peer_ratios(a_report().pipeline, wrong) is None
    ratios = peer_ratios(a_report().pipeline, fast)
    assert ratios is not None
    assert ratios.events_per_s == 0.5 and ratios.first_output == 0.25 and ratios.peak_rss == 2.0

    report = replace(a_report(), peers=[slow, wrong, fast, unmeasured])
    table = render_table(report)
    document = json.loads(report_json(report))

    assert "  Fast (#1 of the peers): events/s 0.500" in table
    assert "  Slow (#2 of the peers): events/s 4.000" in table
    assert "  Wrong: output differs from the recount, not ranked" in table
    assert "  Unmeasured: no speed measured, not ranked" in table
    # The fastest exact peer sets the headline ratio, not the faster one whose output is wrong.
    assert document["ratios"]["fastest_peer"] == "Fast"
    assert document["ratios"]["pipeline_vs_fastest_peer"] == 0.5
    assert document["ratios"]["peers"]["Wrong"] is None
    assert exit_status(report) == 1


def test_a_ratio_needs_both_figures() -> None:
    pipeline = replace(a_report().pipeline, first_output_seconds=None, peak_rss_bytes=None)
    ratios = peer_ratios(pipeline, replace(a_peer("P", 4_000.0), peak_rss_bytes=0))

    assert ratios is not None
    assert ratios.events_per_s == 1.0 and ratios.first_output is None and ratios.peak_rss is None


def test_the_whole_table_reads_exactly_so() -> None:
    """The complete text, so that regrouping the renderer cannot change a byte of it."""
    report = a_report()
    report = replace(
        report,
        peers=[replace(report.peers[0], exact=False, difference=["x"])],
        pipeline=replace(report.pipeline, difference=["d"]),
    )

    assert render_table(report).split("\n") == [
        "cci bench: 200,000 events (171,000 activity, 29,000 tickets), 50,000 users,"
        " 3 months, 4 partitions; 69 figures, 96,000 user-months",
        "machine: 2 CPUs, load 1.50 at start; commit abc1234; preliminary on a shared machine",
        "",
        "                        events/s  seconds  first output  exact  peak RSS",
        "consume ceiling          250,000     0.80             -      -         -",
        "pipeline → cci-updates     4,000     50.0          0.50    yes   400 MiB",
        "pipeline → ClickHouse      3,922     51.0                  yes",
        "peer: Quix Streams        10,000     20.0          1.00     NO   150 MiB",
        "broker (Tansu)                                                   900 MiB",
        "bench itself                                                     300 MiB",
        "",
        "pipeline/ceiling 0.016",
        "pipeline / peer (events/s: above 1 the pipeline is faster; first output, pe"
        "ak RSS: below 1 it is quicker, smaller):",
        "  Quix Streams: output differs from the recount, not ranked",
        "state per user-month: cci_dedup_state_bytes - B (gauges: 96,000 user-months"
        ", - bytes); RSS growth: worker - B, Quix Streams - B",
        "latency at 10,000 events/s offered (9,990 achieved), 200,000 events: p50 51"
        "2 ms, p95 1,800 ms, p99 2,345 ms, max 3,000 ms; 200,000 visible; exact yes",
        "  the pipeline sustained 4,400 events/s in the latency phase; p50 of the fi"
        "rst tenth 400 ms, of the last 1,900 ms (growing: the pipeline fell behind, "
        "queueing)",
        "pipeline differs from the recount:",
        "  d",
        "peer Quix Streams differs from the recount:",
        "  x",
        "exact: NO",
    ]
