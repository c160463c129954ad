"""Internal records are split to fit a Kafka record, never dropped or reordered."""

from __future__ import annotations

import orjson
import pytest

from streams.pipeline import records


def test_a_list_that_fits_is_one_record() -> None:
    assert records.json_chunks([1, 2, 3]) == [b"[1,2,3]"]


def test_a_long_list_is_split_in_order_into_records_that_fit() -> None:
    items = [["t", f"ticket-{n}", 671, n, ["x" * 200]] for n in range(20_000)]
    chunks = records.json_chunks(items)
    assert len(chunks) > 4
    assert all(len(chunk) <= records.MAX_RECORD_BYTES for chunk in chunks)
    assert [item for chunk in chunks for item in orjson.loads(chunk)] == items


def test_one_item_too_large_is_an_error_not_a_silent_loss() -> None:
    with pytest.raises(records.RecordTooLarge):
        records.json_chunks(["x" * 100], limit=50)


def test_a_large_dict_is_split_into_dicts_that_fit_with_their_wrapping() -> None:
    counts = {f"region|{'r' * 250}{n}": [n, n] for n in range(20_000)}
    chunks = records.dict_chunks(counts, overhead=100)
    assert len(chunks) > 4
    assert all(len(orjson.dumps(c)) <= records.MAX_RECORD_BYTES - 100 for c in chunks)
    merged: dict[str, list[int]] = {}
    for chunk in chunks:
        merged.update(chunk)
    assert merged == counts
