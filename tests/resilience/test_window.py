"""The rolling window: pre-aggregated buckets, eviction, and the fixed latency histogram."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from khronos_cli.resilience.breaker.window import RollingWindow, bin_middle_ms, latency_bin


def test_counts_calls_and_failures_in_the_window() -> None:
    """Successes and failures add up to calls; the error percentage is failures over calls."""
    window = RollingWindow(10.0, 10)
    for _ in range(3):
        window.success(100.0, 0.01)
    window.failure(100.5, 0.01)
    assert window.counts(101.0) == (4, 1)
    assert window.error_percentage(101.0) == 25.0


def test_an_empty_window_has_no_error_percentage() -> None:
    """No calls means 0 %, not a division by zero."""
    assert RollingWindow().error_percentage(5.0) == 0.0


def test_buckets_older_than_the_window_are_evicted() -> None:
    """A call leaves the window once the window's duration has passed over its bucket."""
    window = RollingWindow(10.0, 10)
    window.failure(100.0, 0.01)
    window.success(105.0, 0.01)
    assert window.counts(109.9) == (2, 1)
    assert window.counts(110.5) == (1, 0)  # the bucket of t=100 is gone, t=105 stays
    assert window.counts(115.5) == (0, 0)


def test_a_long_gap_clears_everything() -> None:
    """After an idle period longer than the window nothing old is left."""
    window = RollingWindow(1.0, 4)
    for t in range(40):
        window.failure(t / 10, 0.001)
    assert window.counts(1000.0) == (0, 0)
    assert window.latency_ms(1000.0)[0] is None


def test_reset_counts_keeps_latency() -> None:
    """Closing a breaker forgets successes and failures but not how slow the dependency is."""
    window = RollingWindow()
    window.failure(1.0, 0.200)
    window.reset_counts()
    assert window.counts(1.0) == (0, 0)
    mean, *_ = window.latency_ms(1.0)
    assert mean == pytest.approx(200.0)


def test_percentiles_come_from_the_histogram() -> None:
    """p50/p90/p99 of 1..1000 ms land within a bin's width (6.25 %) of the true values."""
    window = RollingWindow()
    for ms in range(1, 1001):
        window.success(3.0, ms / 1000)
    mean, p50, p90, p99 = window.latency_ms(3.5)
    assert mean == pytest.approx(500.5)
    assert p50 == pytest.approx(500, rel=0.07)
    assert p90 == pytest.approx(900, rel=0.07)
    assert p99 == pytest.approx(990, rel=0.07)


def test_latency_leaves_with_its_bucket() -> None:
    """Slow calls stop counting in the percentiles once their bucket is evicted."""
    window = RollingWindow(2.0, 2)
    window.success(10.0, 5.0)
    window.success(11.0, 0.001)
    assert window.latency_ms(11.5)[3] == pytest.approx(5000, rel=0.07)
    assert window.latency_ms(12.5)[3] == pytest.approx(1, rel=0.07)


def test_a_clock_going_backwards_still_records() -> None:
    """A clock that steps back writes into the current bucket instead of an evicted one."""
    window = RollingWindow(10.0, 10)
    window.success(50.0, 0.01)
    window.failure(42.0, 0.01)
    assert window.counts(50.0) == (2, 1)


@given(st.floats(min_value=1e-6, max_value=100.0))
def test_a_bin_holds_values_within_its_resolution(seconds: float) -> None:
    """Every latency from 1 µs to 100 s falls in a bin whose middle is within a sixteenth of it."""
    assert bin_middle_ms(latency_bin(seconds)) == pytest.approx(seconds * 1000, rel=0.063)


def test_bins_are_ordered_and_bounded() -> None:
    """Longer latencies never land in a lower bin, and the slowest share the last bin."""
    values = [10 ** (e / 10) * 1e-7 for e in range(100)]
    bins = [latency_bin(v) for v in values]
    assert bins == sorted(bins)
    assert latency_bin(10_000.0) == latency_bin(1_000_000.0)


def test_a_window_needs_a_duration_and_buckets() -> None:
    """A zero duration or no buckets is refused with a clear error."""
    with pytest.raises(ValueError, match="duration > 0"):
        RollingWindow(0.0, 10)
