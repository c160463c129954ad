"""Segment values are data, and some reach /metrics as label values (``cci_current``): hostile ones
(NUL, newlines, quotes, backslashes, line separators) give a page the real ``promtool check
metrics`` accepts, with no raw control character in it, each value its own series."""

from __future__ import annotations

import subprocess
import unicodedata

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams import metrics
from tests.integration.prometheus import PROMTOOL, binary_or_skip

HOSTILE = [
    "nul\x00byte",
    "new\nline",
    "carriage\rreturn",
    'quote" } evil{x="1',
    "back\\slash",
    "back\\x00slash",  # looks like an escaped NUL: must stay a series of its own
    "bell\x07 del\x7f c1\x85",
    "line\u2028separator",
    "plain région",
]


def test_hostile_segment_values_give_valid_metrics_without_raw_control_characters() -> None:
    month = "2031-07"
    for number, segment in enumerate(HOSTILE):
        metrics.set_current_cci(month, "region", segment, float(number))
    try:
        page = generate_latest(metrics.registry)
        checked = subprocess.run(
            [binary_or_skip(PROMTOOL), "check", "metrics"],
            input=page,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

        text = page.decode("utf-8")
        raw = [c for c in text if c != "\n" and unicodedata.category(c) in {"Cc", "Zl", "Zp"}]
        assert raw == [], raw

        shown = {
            sample.labels["segment"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "cci_current" and sample.labels.get("month") == month
        }
        # Each value its own series, with its own figure; a plain one as it is.
        assert sorted(shown.values()) == [float(n) for n in range(len(HOSTILE))]
        assert shown["plain région"] == float(HOSTILE.index("plain région"))
        assert shown[metrics.label_value("nul\x00byte")] == 0.0
    finally:
        for segment in HOSTILE:
            metrics.forget_current_cci(month, "region", segment)
    assert month not in generate_latest(metrics.registry).decode()
