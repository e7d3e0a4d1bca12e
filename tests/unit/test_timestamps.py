"""Write times: ``now_iso`` gives exactly the text ``datetime.now(UTC).isoformat()`` gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from ctx_memory.schema import now_iso, utc_iso

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST = datetime(1, 1, 1, tzinfo=UTC)
LAST = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
STEP = 2_000_001  # up to two seconds and a microsecond


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


@settings(max_examples=2_000, deadline=None)
@given(st.integers(min_value=micros(FIRST), max_value=micros(LAST)))
def test_utc_iso_is_isoformat(unix_micros: int) -> None:
    expected = (EPOCH + timedelta(microseconds=unix_micros)).isoformat()
    assert utc_iso(unix_micros) == expected


@settings(max_examples=500, deadline=None)
@given(st.integers(micros(EPOCH), micros(LAST) - STEP), st.integers(0, STEP))
def test_utc_iso_across_the_cached_second(start: int, step: int) -> None:
    # Consecutive times in the same, the next and an earlier second reuse or replace the
    # formatted second without mixing them up.
    for unix_micros in (start, start + step, start, max(start - step, 0)):
        assert utc_iso(unix_micros) == (EPOCH + timedelta(microseconds=unix_micros)).isoformat()


def test_a_whole_second_has_no_fraction_as_isoformat() -> None:
    assert utc_iso(0) == "1970-01-01T00:00:00+00:00"
    assert utc_iso(1) == "1970-01-01T00:00:00.000001+00:00"
    assert utc_iso(-1) == "1969-12-31T23:59:59.999999+00:00"
    assert utc_iso(1_767_323_045_000_006) == "2026-01-02T03:04:05.000006+00:00"


def test_now_iso_reads_the_clock_datetime_now_reads() -> None:
    for _ in range(1_000):
        before = datetime.now(UTC)
        text = now_iso()
        after = datetime.now(UTC)
        assert before <= datetime.fromisoformat(text) <= after
        assert text == datetime.fromisoformat(text).isoformat()
