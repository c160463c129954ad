"""The clock the pipeline asks for "now": the real one, or real time plus an offset read from a
file (``CCI_CLOCK_OFFSET_FILE``, how ``cci soak`` moves a worker through simulated months)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from streams.clock import Clock, OffsetClock, clock_for
from streams.settings import load_settings


def test_the_offset_is_read_from_the_file_and_kept_when_it_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    clock = OffsetClock(path, reread_s=0)

    assert clock.offset() == 0  # no file yet
    path.write_text("86400.5\n")
    assert clock.offset() == 86400.5
    path.write_text("")  # between truncation and write
    assert clock.offset() == 86400.5
    path.write_text("soon")
    assert clock.offset() == 86400.5
    path.write_text("-60")
    assert clock.offset() == -60


def test_the_offset_file_is_reread_only_after_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    path.write_text("10")
    clock = OffsetClock(path, reread_s=3600)

    assert clock.offset() == 10
    path.write_text("20")
    assert clock.offset() == 10


def test_now_is_real_time_plus_the_offset_as_a_plain_utc_datetime(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    path.write_text(str(40 * 86400))

    moment = OffsetClock(path).now()

    assert abs((moment - datetime.now(UTC)) - timedelta(days=40)) < timedelta(seconds=5)
    assert type(moment) is datetime and moment.tzinfo is UTC
    assert abs(time.time() + 40 * 86400 - moment.timestamp()) < 5
    assert orjson.dumps(moment + timedelta(hours=1))


def test_the_settings_choose_the_clock(tmp_path: Path) -> None:
    real = clock_for(load_settings({}))
    moved = clock_for(load_settings({"CCI_CLOCK_OFFSET_FILE": str(tmp_path / "clock")}))

    assert type(real) is Clock
    assert abs(real.now() - datetime.now(UTC)) < timedelta(seconds=5)
    assert isinstance(moved, OffsetClock) and moved.path == tmp_path / "clock"
