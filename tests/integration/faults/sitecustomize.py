"""A fault for tests/integration/test_stuck_partition.py, loaded by the worker's interpreter when
this folder is on its PYTHONPATH: the records of the next fetch of the facts topic after the file
named by ``FAULT_DROP_FACTS_FLAG`` appears are thrown away once, after the consumer has moved past
them, as the race of Faust's fetcher with a rebalance did (streams/worker/positions.py, rule 3).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

_flag = os.environ.get("FAULT_DROP_FACTS_FLAG")
if _flag:
    from streams.worker import positions

    _keep_fresh = positions.drop_records_fetched_before_a_seek

    def _drop_a_facts_fetch(records: Any, ledger: Any) -> Any:
        records = _keep_fresh(records, ledger)
        facts = [tp for tp, batch in records.items() if tp.topic.endswith("-facts") and batch]
        if not facts or not Path(_flag).exists():
            return records
        Path(_flag).unlink()
        dropped = {f"{tp.topic}/{tp.partition}": len(records[tp]) for tp in facts}
        print(f"FAULT: dropped the records of a facts fetch {dropped}", file=sys.stderr, flush=True)
        return {tp: batch for tp, batch in records.items() if tp not in facts}

    positions.drop_records_fetched_before_a_seek = _drop_a_facts_fetch
